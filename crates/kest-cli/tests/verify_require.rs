//! `kest verify --require`: chain-level rules over the whole verified
//! passport (SPEC §10), with the bundled `sanitized_email` requirement.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Command, Output};

use kest_core::{Classification, Ed25519Signer, EntryDraft, KeySet, Passport, Signer, TrustRules};
use serde_json::Value;

const AGENT: &str = "spiffe://kest.demo/agent";
const SANITIZER: &str = "spiffe://kest.demo/sanitizer";
const IMPOSTOR: &str = "spiffe://kest.demo/impostor";
const REQUIREMENT: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/../../policies/requirements/sanitized_email.rego");

fn signer(p: &str) -> Ed25519Signer {
    let seed = match p {
        AGENT => 1,
        SANITIZER => 2,
        _ => 3,
    };
    Ed25519Signer::from_seed(p, [seed; 32])
}

/// fetch (internet, tainted) → sanitize by `sanitizer_by` (if any) → send_email.
fn pipeline(sanitizer_by: Option<&str>) -> Passport {
    let rules = TrustRules::default();
    let mut p = Passport::new();
    let mut fetch = EntryDraft::new("fetch_page");
    fetch.source_type = Some("internet".into());
    fetch.added_taints = vec!["unverified".into()];
    p.record(&fetch, &signer(AGENT), &rules).unwrap();
    if let Some(who) = sanitizer_by {
        let mut clean = EntryDraft::new("sanitize");
        clean.classification = Classification::Sanitizer;
        clean.removed_taints = vec!["unverified".into()];
        clean.trust_override = Some(80);
        p.record(&clean, &signer(who), &rules).unwrap();
    }
    p.record(&EntryDraft::new("send_email"), &signer(AGENT), &rules).unwrap();
    p
}

fn verify(passport: &Passport) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let mut keys = KeySet::new();
    for p in [AGENT, SANITIZER, IMPOSTOR] {
        keys.insert(p, signer(p).public_key().unwrap()).unwrap();
    }
    std::fs::write(dir.path().join("jwks.json"), keys.to_jwks().to_string()).unwrap();
    std::fs::write(dir.path().join("p.json"), passport.to_json()).unwrap();
    Command::new(env!("CARGO_BIN_EXE_kest"))
        .current_dir(dir.path())
        .args(["verify", "--keys", "jwks.json", "--format", "json", "--require", REQUIREMENT, "p.json"])
        .output()
        .unwrap()
}

fn report(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

#[test]
fn send_email_after_the_sanitizer_satisfies_the_requirement() {
    let out = verify(&pipeline(Some(SANITIZER)));
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(report(&out)["valid"], true);
}

#[test]
fn send_email_without_a_sanitizer_ancestor_is_rejected_naming_the_rule() {
    for passport in [pipeline(None), pipeline(Some(IMPOSTOR))] {
        let out = verify(&passport);
        assert_eq!(out.status.code(), Some(1));
        let r = report(&out);
        assert_eq!(r["valid"], false);
        assert_eq!(r["kind"], "requirement_failed");
        let message = r["message"].as_str().unwrap();
        assert!(message.contains("data.kest.require.sanitized_email.allow"), "{message}");
        assert!(message.contains("send_email (entry"), "{message}");
        assert!(message.contains(SANITIZER), "{message}");
    }
}

#[test]
fn a_requirement_that_does_not_compile_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.rego"), "package x\nallow if {").unwrap();
    std::fs::write(dir.path().join("p.json"), pipeline(Some(SANITIZER)).to_json()).unwrap();
    let mut keys = KeySet::new();
    keys.insert(AGENT, signer(AGENT).public_key().unwrap()).unwrap();
    keys.insert(SANITIZER, signer(SANITIZER).public_key().unwrap()).unwrap();
    std::fs::write(dir.path().join("jwks.json"), keys.to_jwks().to_string()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kest"))
        .current_dir(dir.path())
        .args(["verify", "--keys", "jwks.json", "--require", "bad.rego", "p.json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
}
