//! ES256 and the Python reference (`kest==0.3.0.post1`): our ES256 entries
//! are valid ES256 for an independent implementation (`cryptography`, i.e.
//! OpenSSL), but the reference's `PassportVerifier` cannot verify them — it
//! never reads `alg` and calls `public_key.verify(sig_bytes, signing_input)`
//! with the two arguments of Ed25519 (`kest/core/models/passport.py`, line
//! 211), which an EC key refuses. This test pins that exact failure (so a
//! future reference that fixes it is noticed), and that the reference
//! "accepts" the passport when it has no key for the ES256 signer (it skips
//! unknown signers). Needs `KEST_REF_PYTHON` like `tests/interop.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn python() -> PathBuf {
    match std::env::var_os("KEST_REF_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => panic!(
            "KEST_REF_PYTHON is not set: run ./scripts/test, which installs kest==0.3.0.post1 into a venv \
             and points KEST_REF_PYTHON at its python"
        ),
    }
}

fn kest_in(dir: &Path, args: &[&str]) -> String {
    let out: Output =
        Command::new(env!("CARGO_BIN_EXE_kest")).current_dir(dir).args(args).output().expect("run kest");
    assert!(out.status.success(), "kest {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn reference_verifier_cannot_verify_es256_entries() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    kest_in(d, &["keygen", "--principal", "spiffe://t/ec", "--alg", "ES256", "--out", "ec.jwk"]);
    kest_in(d, &["keygen", "--principal", "spiffe://t/ed", "--out", "ed.jwk"]);
    std::fs::write(d.join("jwks.json"), kest_in(d, &["jwks", "ec.jwk", "ed.jwk"])).unwrap();
    kest_in(
        d,
        &[
            "append",
            "--key",
            "ed.jwk",
            "--passport",
            "p.json",
            "--operation",
            "ingest",
            "--source-type",
            "internal",
        ],
    );
    kest_in(
        d,
        &["append", "--key", "ec.jwk", "--keys", "jwks.json", "--passport", "p.json", "--operation", "score"],
    );
    kest_in(
        d,
        &[
            "append",
            "--key",
            "ec.jwk",
            "--keys",
            "jwks.json",
            "--passport",
            "p.json",
            "--operation",
            "report",
        ],
    );
    kest_in(d, &["verify", "--semantic", "--keys", "jwks.json", "p.json"]);

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/interop/reference_verify_es256.py");
    let out =
        Command::new(python()).arg(&script).arg(d.join("jwks.json")).arg(d.join("p.json")).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();

    // Valid ES256 for OpenSSL (RFC 7518 §3.4: r||s, P-256, SHA-256).
    assert_eq!(report["independent"]["ok"], true, "{report}");
    assert_eq!(report["independent"]["es256_entries"], 2, "{report}");
    // The reference's verifier fails on the first ES256 entry, with the
    // TypeError of its two-argument call wrapped in a ValueError.
    let reference = &report["reference"];
    assert_eq!(reference["ok"], false, "{report}");
    assert_eq!(reference["error_type"], "ValueError", "{report}");
    let message = reference["error"].as_str().unwrap();
    assert!(message.starts_with("Signature verification failed for spiffe://t/ec:"), "{message}");
    assert!(message.contains("missing 1 required positional argument: 'signature_algorithm'"), "{message}");
    // Without a key for the ES256 signer it skips those entries and says
    // yes (fail open; our verifier says unknown_signer).
    assert_eq!(report["reference_unknown_signer"]["ok"], true, "{report}");
}
