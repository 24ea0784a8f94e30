//! ES256 through the `kest` binary: `keygen --alg ES256` (JWK and PEM, 0600),
//! `jwks`, `append`, `verify`, `inspect`, `viz` and `workload-token` with
//! P-256 keys, and a mixed Ed25519 + ES256 passport.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::{Command, Output};

use kest_core::encoding::b64url_decode;
use serde_json::Value;

fn kest_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kest")).current_dir(dir).args(args).output().expect("run kest")
}

#[track_caller]
fn ok(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(0), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn header(jws: &str) -> Value {
    serde_json::from_slice(&b64url_decode(jws.split('.').next().unwrap()).unwrap()).unwrap()
}

#[test]
fn keygen_es256_writes_a_p256_key_usable_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let public: Value = serde_json::from_str(&ok(&kest_in(
        d,
        &["keygen", "--principal", "spiffe://t/ec", "--alg", "ES256", "--out", "ec.key"],
    )))
    .unwrap();
    assert_eq!(
        (public["kty"].as_str(), public["crv"].as_str(), public["alg"].as_str()),
        (Some("EC"), Some("P-256"), Some("ES256"))
    );
    assert_eq!(b64url_decode(public["x"].as_str().unwrap()).unwrap().len(), 32);
    assert_eq!(b64url_decode(public["y"].as_str().unwrap()).unwrap().len(), 32);
    assert!(public.get("d").is_none(), "public JWK only on stdout");
    let private: Value = serde_json::from_str(&std::fs::read_to_string(d.join("ec.key")).unwrap()).unwrap();
    assert_eq!(private["kid"], "spiffe://t/ec");
    assert_eq!(b64url_decode(private["d"].as_str().unwrap()).unwrap().len(), 32);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(std::fs::metadata(d.join("ec.key")).unwrap().permissions().mode() & 0o777, 0o600);
    }
    // Case-insensitive, and Ed25519 stays the default.
    ok(&kest_in(d, &["keygen", "--principal", "spiffe://t/ed", "--out", "ed.jwk"]));
    let ed: Value = serde_json::from_str(&std::fs::read_to_string(d.join("ed.jwk")).unwrap()).unwrap();
    assert_eq!(ed["crv"], "Ed25519");
    ok(&kest_in(
        d,
        &["keygen", "--principal", "spiffe://t/ec2", "--alg", "es256", "--format", "pem", "--out", "ec2.pem"],
    ));
    assert!(std::fs::read_to_string(d.join("ec2.pem")).unwrap().starts_with("-----BEGIN PRIVATE KEY-----"));
    assert_eq!(
        kest_in(d, &["keygen", "--principal", "p", "--alg", "RS256", "--out", "r.jwk"]).status.code(),
        Some(2)
    );

    // A mixed passport: EC root, Ed25519 child, EC (PEM key) grandchild.
    let jwks = ok(&kest_in(d, &["jwks", "ec.key", "ed.jwk", "--pem", "spiffe://t/ec2=ec2.pem"]));
    std::fs::write(d.join("jwks.json"), &jwks).unwrap();
    let doc: Value = serde_json::from_str(&jwks).unwrap();
    assert_eq!(doc["keys"].as_array().unwrap().len(), 3);
    ok(&kest_in(
        d,
        &[
            "append",
            "--key",
            "ec.key",
            "--passport",
            "p.json",
            "--operation",
            "ingest",
            "--source-type",
            "internal",
        ],
    ));
    ok(&kest_in(
        d,
        &[
            "append",
            "--key",
            "ed.jwk",
            "--keys",
            "jwks.json",
            "--passport",
            "p.json",
            "--operation",
            "summarise",
        ],
    ));
    ok(&kest_in(
        d,
        &[
            "append",
            "--key",
            "ec2.pem",
            "--principal",
            "spiffe://t/ec2",
            "--keys",
            "jwks.json",
            "--passport",
            "p.json",
            "--operation",
            "report",
        ],
    ));
    let entries: Vec<String> =
        serde_json::from_str(&std::fs::read_to_string(d.join("p.json")).unwrap()).unwrap();
    let algs: Vec<Value> = entries.iter().map(|e| header(e)["alg"].clone()).collect();
    assert_eq!(algs, ["ES256", "EdDSA", "ES256"]);

    let report: Value = serde_json::from_str(&ok(&kest_in(
        d,
        &["verify", "--keys", "jwks.json", "--semantic", "--format", "json", "p.json"],
    )))
    .unwrap();
    assert_eq!(report["valid"], true);
    // The private key file alone verifies its own entries... and refuses the others' (unknown signer).
    let out = kest_in(d, &["verify", "--keys", "ec.key", "--format", "json", "p.json"]);
    assert_eq!(out.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((report["kind"].as_str(), report["index"].as_u64()), (Some("unknown_signer"), Some(1)));

    let inspected: Value =
        serde_json::from_str(&ok(&kest_in(d, &["inspect", "--format", "json", "p.json"]))).unwrap();
    assert!(inspected.to_string().contains("spiffe://t/ec2"));
    let svg = ok(&kest_in(d, &["viz", "--format", "svg", "--keys", "jwks.json", "p.json"]));
    assert_eq!(svg.matches("data-entry-hash=").count(), 3);
    let tree = ok(&kest_in(d, &["viz", "--keys", "jwks.json", "p.json"]));
    assert!(tree.contains("report"), "{tree}");

    // An EC key published under the Ed25519 signer's name: alg_not_allowed.
    let mut swapped: Value = serde_json::from_str(&jwks).unwrap();
    for key in swapped["keys"].as_array_mut().unwrap() {
        if key["kid"] == "spiffe://t/ed" {
            key["kid"] = "unused".into();
        } else if key["kid"] == "spiffe://t/ec2" {
            key["kid"] = "spiffe://t/ed".into();
        }
    }
    std::fs::write(d.join("swapped.json"), swapped.to_string()).unwrap();
    let out = kest_in(d, &["verify", "--keys", "swapped.json", "--format", "json", "p.json"]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (report["kind"].as_str(), report["index"].as_u64()),
        (Some("alg_not_allowed"), Some(1)),
        "{report}"
    );

    // Workload tokens with a P-256 key carry alg ES256.
    let token = ok(&kest_in(d, &["workload-token", "--key", "ec.key", "--audience", "http://svc:80"]));
    assert_eq!(header(token.trim())["alg"], "ES256");
}
