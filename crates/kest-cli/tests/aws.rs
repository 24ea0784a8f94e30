//! The CLI's AWS paths against `moto` (an AWS protocol server from PyPI,
//! `$KEST_MOTO_SERVER`, installed by `./scripts/test`): a passport signed
//! by a local key and by a KMS key (ES256) verifies with `kest verify`
//! given `kest jwks --from-kms`; `kest whoami` reports the AWS identity;
//! a disabled KMS key refuses to sign.
#![cfg(feature = "aws")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

#[path = "support/moto.rs"]
mod moto;
use moto::{Moto, kest, ok};

#[test]
fn a_local_and_a_kms_signed_passport_verifies_with_the_kms_jwks() {
    let moto = Moto::start();
    let key = moto.signing_key();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(&kest(d, &moto, &["keygen", "--principal", "spiffe://demo/ingest", "--out", "local.jwk"]));
    ok(&kest(
        d,
        &moto,
        &[
            "append",
            "--key",
            "local.jwk",
            "--passport",
            "p.json",
            "--operation",
            "ingest",
            "--source-type",
            "system",
        ],
    ));
    std::fs::write(d.join("local.json"), ok(&kest(d, &moto, &["jwks", "local.jwk"]))).unwrap();
    let appended = ok(&kest(
        d,
        &moto,
        &["append", "--kms", &key, "--keys", "local.json", "--passport", "p.json", "--operation", "approve"],
    ));
    assert!(appended.contains("approve by arn:aws:sts::123456789012:"), "{appended}");
    let jwks = ok(&kest(d, &moto, &["jwks", "--from-kms", &key]));
    let parsed: serde_json::Value = serde_json::from_str(&jwks).unwrap();
    let jwk = &parsed["keys"][0];
    assert_eq!(jwk["crv"], "P-256");
    assert!(jwk["kid"].as_str().unwrap().starts_with("arn:aws:sts::123456789012:"));
    std::fs::write(d.join("kms.json"), &jwks).unwrap();
    let out = ok(&kest(
        d,
        &moto,
        &["verify", "--semantic", "--keys", "local.json", "--keys", "kms.json", "p.json"],
    ));
    assert!(out.contains("valid"), "{out}");
    // Without the KMS key the same passport does not verify.
    let out = kest(d, &moto, &["verify", "--keys", "local.json", "p.json"]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn whoami_reports_the_aws_identity_and_why() {
    let moto = Moto::start();
    let key = moto.signing_key();
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kest"));
    cmd.current_dir(dir.path()).args(["whoami", "--format", "json"]).env_remove("SPIFFE_ENDPOINT_SOCKET");
    for (k, v) in moto.env() {
        cmd.env(k, v);
    }
    let out = cmd.env("KEST_AWS_KMS_KEY_ID", &key).output().unwrap();
    let report: serde_json::Value = serde_json::from_str(&ok(&out)).unwrap();
    assert_eq!(report["provider"], "aws");
    assert_eq!(report["algorithm"], "ES256");
    assert!(report["workload_id"].as_str().unwrap().starts_with("arn:aws:"));
    assert!(report["reason"].as_str().unwrap().contains("KEST_AWS_KMS_KEY_ID"));
    assert_eq!(report["details"]["account"], "123456789012");
}

#[test]
fn a_disabled_kms_key_does_not_sign() {
    let moto = Moto::start();
    let key = moto.signing_key();
    moto.boto(&format!("kms.disable_key(KeyId='{key}')"));
    let dir = tempfile::tempdir().unwrap();
    let out = kest(
        dir.path(),
        &moto,
        &["append", "--kms", &key, "--passport", "p.json", "--operation", "x", "--root"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Disabled"));
    assert!(!dir.path().join("p.json").exists(), "nothing was written");
    let out = kest(dir.path(), &moto, &["jwks", "--from-kms", "alias/missing"]);
    assert_eq!(out.status.code(), Some(2));
}
