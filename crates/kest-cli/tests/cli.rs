//! End-to-end tests of the `kest` binary: exit codes, formats, baggage
//! input, key handling and `append` rules.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::{Command, Output};

use kest_core::baggage::{Baggage, PackOptions, Packed, pack};
use serde_json::Value;

fn kest_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kest")).current_dir(dir).args(args).output().expect("run kest")
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A directory with a key, its JWKS and a 3-step passport.
fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    assert_eq!(code(&kest_in(d, &["keygen", "--principal", "spiffe://t/a", "--out", "a.jwk"])), 0);
    let jwks = kest_in(d, &["jwks", "a.jwk"]);
    std::fs::write(d.join("jwks.json"), &jwks.stdout).unwrap();
    for (op, extra) in
        [("ask", vec!["--source-type", "user_input"]), ("browse", vec!["--taint", "web"]), ("answer", vec![])]
    {
        let mut args = vec!["append", "--key", "a.jwk", "--passport", "p.json", "--operation", op];
        args.extend(extra);
        let out = kest_in(d, &args);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
    }
    dir
}

#[test]
fn verify_exit_codes_are_0_1_2() {
    let dir = setup();
    let d = dir.path();
    assert_eq!(code(&kest_in(d, &["verify", "--keys", "jwks.json", "p.json"])), 0);
    std::fs::write(d.join("bad.json"), "[\"a.b.c\"]").unwrap();
    let out = kest_in(d, &["verify", "--keys", "jwks.json", "--format", "json", "bad.json"]);
    assert_eq!(code(&out), 1);
    let report: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(report["error"]["index"], 0);
    assert_eq!(code(&kest_in(d, &["verify", "--keys", "jwks.json", "missing.json"])), 2);
    assert_eq!(code(&kest_in(d, &["verify", "p.json"])), 2, "--keys is required");
    assert_eq!(code(&kest_in(d, &["verify", "--keys", "p.json", "p.json"])), 2, "not a key set");
    std::fs::write(d.join("notjson.json"), "hello").unwrap();
    let out = kest_in(d, &["verify", "--keys", "jwks.json", "--format", "json", "notjson.json"]);
    assert_eq!(code(&out), 1);
    assert!(stdout(&out).contains("malformed_passport"));
}

#[test]
fn verify_reads_stdin_and_reports_json() {
    let dir = setup();
    let d = dir.path();
    let passport = std::fs::read(d.join("p.json")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_kest"))
        .current_dir(d)
        .args(["verify", "--keys", "jwks.json", "--semantic", "--format", "json", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child.stdin.take().unwrap().write_all(&passport).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(code(&out), 0);
    let report: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(report["entries"].as_array().unwrap().len(), 3);
    assert_eq!(report["entries"][1]["taints"], serde_json::json!(["web"]));
    assert_eq!(report["entries"][1]["trust_score"], 40, "non-root without origin keeps its parent's score");
    assert_eq!(report["tips"].as_array().unwrap().len(), 1);
}

#[test]
fn verify_accepts_baggage_inline_compressed_and_reference_raw_json() {
    let dir = setup();
    let d = dir.path();
    let json = std::fs::read_to_string(d.join("p.json")).unwrap();
    let json = json.trim();

    let mut inline = Baggage::new();
    inline.set("other", "kept").unwrap();
    inline.set("kest.passport", json).unwrap();
    std::fs::write(d.join("inline.txt"), inline.to_header().unwrap()).unwrap();
    assert!(!std::fs::read_to_string(d.join("inline.txt")).unwrap().contains('"'), "percent-encoded");

    let packed = pack(json, &PackOptions { threshold: json.len() - 1, ..PackOptions::default() });
    let Packed::Compressed(z) = packed else { panic!("expected compressed, got {packed:?}") };
    std::fs::write(d.join("z.txt"), format!("kest.passport_z={z}")).unwrap();

    let entries: Vec<String> = serde_json::from_str(json).unwrap();
    let raw =
        format!("kest.passport={}", serde_json::to_string(&entries).unwrap().replace("\",\"", "\", \""));
    std::fs::write(d.join("raw.txt"), raw).unwrap();

    for file in ["inline.txt", "z.txt", "raw.txt"] {
        let out = kest_in(d, &["verify", "--keys", "jwks.json", "--baggage", file]);
        assert_eq!(code(&out), 0, "{file}: {}{}", stdout(&out), stderr(&out));
        assert!(stdout(&out).starts_with("valid: 3 entries"));
    }
    std::fs::write(d.join("claim.txt"), "kest.claim_check=0190a3c2-4a1e-7cc4-9a7b-5d8e2f1a3b4c").unwrap();
    let out = kest_in(d, &["verify", "--keys", "jwks.json", "--baggage", "claim.txt"]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("claim check"), "{}", stderr(&out));
    std::fs::write(d.join("broken.txt"), "kest.passport_z=AAAA").unwrap();
    // Not baggage carrying a passport: invalid input, exit 1 (like a malformed passport).
    assert_eq!(code(&kest_in(d, &["verify", "--keys", "jwks.json", "--baggage", "broken.txt"])), 1);
}

#[test]
fn inspect_decodes_without_verifying() {
    let dir = setup();
    let out = kest_in(dir.path(), &["inspect", "--format", "json", "p.json"]);
    assert_eq!(code(&out), 0);
    let entries: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(entries[0]["header"]["alg"], "EdDSA");
    assert_eq!(entries[0]["header"]["kid"], "spiffe://t/a");
    assert_eq!(entries[2]["payload"]["operation"], "answer");
    assert_eq!(entries[0]["payload"]["runtime"]["name"], "kest-rs");
    assert_eq!(entries[0]["payload"]["labels"]["kest.source_type"], "user_input");
    let text = stdout(&kest_in(dir.path(), &["inspect", "p.json"]));
    assert!(text.contains("NOT verified"));
}

#[test]
fn keygen_never_overwrites_and_pem_needs_a_principal() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = kest_in(d, &["keygen", "--principal", "spiffe://t/p", "--format", "pem", "--out", "k.pem"]);
    assert_eq!(code(&out), 0);
    let jwk: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(jwk["kid"], "spiffe://t/p");
    assert!(jwk.get("d").is_none(), "public JWK only on stdout");
    assert!(std::fs::read_to_string(d.join("k.pem")).unwrap().starts_with("-----BEGIN PRIVATE KEY-----"));
    assert_eq!(code(&kest_in(d, &["keygen", "--principal", "spiffe://t/p", "--out", "k.pem"])), 2);

    let out = kest_in(d, &["append", "--key", "k.pem", "--passport", "p.json", "--operation", "x"]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("--principal"));
    let out = kest_in(
        d,
        &[
            "append",
            "--key",
            "k.pem",
            "--principal",
            "spiffe://t/p",
            "--passport",
            "p.json",
            "--operation",
            "x",
        ],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let jwks = kest_in(d, &["jwks", "--pem", "spiffe://t/p=k.pem"]);
    assert_eq!(code(&jwks), 0);
    std::fs::write(d.join("jwks.json"), &jwks.stdout).unwrap();
    assert_eq!(code(&kest_in(d, &["verify", "--keys", "jwks.json", "p.json"])), 0);
}

/// SPEC §10: a key file written by `keygen` works in every other command
/// without `--principal`, whatever its extension.
#[test]
fn keygen_file_is_usable_everywhere_whatever_its_extension() {
    for name in ["k.pem", "k.key", "k", "k.jwk", "k.json"] {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let out = kest_in(d, &["keygen", "--principal", "spiffe://t/x", "--out", name]);
        assert_eq!(code(&out), 0, "{name}: {}", stderr(&out));
        let jwks = kest_in(d, &["jwks", name]);
        assert_eq!(code(&jwks), 0, "{name}: {}", stderr(&jwks));
        let doc: Value = serde_json::from_slice(&jwks.stdout).unwrap();
        assert_eq!(doc["keys"][0]["kid"], "spiffe://t/x", "{name}");
        std::fs::write(d.join("jwks.json"), &jwks.stdout).unwrap();
        let out = kest_in(d, &["append", "--key", name, "--passport", "p.json", "--operation", "x"]);
        assert_eq!(code(&out), 0, "{name}: {}", stderr(&out));
        assert_eq!(code(&kest_in(d, &["verify", "--keys", "jwks.json", "p.json"])), 0, "{name}");
        assert_eq!(code(&kest_in(d, &["verify", "--keys", name, "p.json"])), 0, "{name}");
    }
}

#[test]
fn append_refuses_invalid_history_and_bad_drafts() {
    let dir = setup();
    let d = dir.path();
    // A second signer cannot extend a passport whose signers it cannot check.
    assert_eq!(code(&kest_in(d, &["keygen", "--principal", "spiffe://t/b", "--out", "b.jwk"])), 0);
    let out = kest_in(d, &["append", "--key", "b.jwk", "--passport", "p.json", "--operation", "x"]);
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("unknown_signer"), "{}", stderr(&out));
    let out = kest_in(
        d,
        &["append", "--key", "b.jwk", "--keys", "jwks.json", "--passport", "p.json", "--operation", "x"],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));

    let before = std::fs::read(d.join("p.json")).unwrap();
    let out = kest_in(
        d,
        &[
            "append",
            "--key",
            "a.jwk",
            "--keys",
            "b.jwk",
            "--passport",
            "p.json",
            "--operation",
            "y",
            "--remove-taint",
            "web",
        ],
    );
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("sanitizer"), "{}", stderr(&out));
    let out = kest_in(
        d,
        &[
            "append",
            "--key",
            "a.jwk",
            "--keys",
            "b.jwk",
            "--passport",
            "p.json",
            "--operation",
            "y",
            "--source-type",
            "nowhere",
        ],
    );
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("unknown origin"));
    let out = kest_in(
        d,
        &[
            "append",
            "--key",
            "a.jwk",
            "--keys",
            "b.jwk",
            "--passport",
            "p.json",
            "--operation",
            "y",
            "--parent",
            &"ab".repeat(32),
        ],
    );
    assert_eq!(code(&out), 2);
    assert_eq!(std::fs::read(d.join("p.json")).unwrap(), before, "failed appends leave the file untouched");

    // Fan out from the root, then an ordinary append joins both branches.
    let root = {
        let v: Value =
            serde_json::from_str(&stdout(&kest_in(d, &["inspect", "--format", "json", "p.json"]))).unwrap();
        v[0]["hash"].as_str().unwrap().to_owned()
    };
    let out = kest_in(
        d,
        &[
            "append",
            "--key",
            "a.jwk",
            "--keys",
            "b.jwk",
            "--passport",
            "p.json",
            "--operation",
            "side",
            "--parent",
            &root,
        ],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = kest_in(
        d,
        &["append", "--key", "a.jwk", "--keys", "b.jwk", "--passport", "p.json", "--operation", "join"],
    );
    assert_eq!(code(&out), 0);
    let out = kest_in(
        d,
        &["verify", "--keys", "jwks.json", "--keys", "b.jwk", "--semantic", "--format", "json", "p.json"],
    );
    let report: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(report["entries"][5]["parents"].as_array().unwrap().len(), 2);
    assert_eq!(report["tips"].as_array().unwrap().len(), 1);
}
