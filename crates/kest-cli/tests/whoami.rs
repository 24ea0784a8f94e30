//! `kest whoami`: runs the binary with identity variables set.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

use std::process::{Command, Output};

use serde_json::Value;

/// Every variable the auto-detector reads.
const IDENTITY_VARS: [&str; 7] = [
    "SPIFFE_ENDPOINT_SOCKET",
    "AWS_BEDROCK_AGENT_ID",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "KEST_AWS_KMS_KEY_ID",
    "KEST_OIDC_TOKEN_PATH",
    "KEST_OIDC_SIGNING_KEY",
];

/// Runs `kest whoami ARGS` with exactly `vars` among the identity variables.
fn whoami(vars: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kest"));
    cmd.arg("whoami").args(args);
    for var in IDENTITY_VARS {
        cmd.env_remove(var);
    }
    cmd.envs(vars.iter().copied());
    cmd.output().expect("run kest")
}

fn json_of(out: &Output) -> Value {
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("JSON output")
}

fn b64url(bytes: &[u8]) -> String {
    kest::core::encoding::b64url_encode(bytes)
}

#[test]
fn whoami_reports_an_oidc_identity() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    let jwt = format!(
        "{}.{}.{}",
        b64url(br#"{"alg":"RS256"}"#),
        b64url(br#"{"iss":"https://oidc.example","sub":"system:serviceaccount:ns:agent"}"#),
        b64url(b"platform-signature")
    );
    std::fs::write(&token, &jwt).unwrap();
    let vars = [("KEST_OIDC_TOKEN_PATH", token.to_str().unwrap())];

    let report = json_of(&whoami(&vars, &["--format", "json"]));
    assert_eq!(report["provider"], "oidc");
    assert_eq!(report["workload_id"], "system:serviceaccount:ns:agent");
    assert_eq!(report["details"]["iss"], "https://oidc.example");
    assert_eq!(report["public_jwk"]["kid"], "system:serviceaccount:ns:agent");
    assert_eq!(report["public_jwk"]["kty"], "OKP");
    assert!(report["reason"].as_str().unwrap().contains("KEST_OIDC_TOKEN_PATH"));

    let text = whoami(&vars, &[]);
    assert_eq!(text.status.code(), Some(0));
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(text.contains("provider:    oidc") && text.contains("system:serviceaccount:ns:agent"), "{text}");
    assert!(!text.contains(&b64url(b"platform-signature")), "the token never shows: {text}");
}

#[test]
fn whoami_exits_2_naming_the_missing_feature() {
    // A SPIFFE socket with no agent behind it: exit 2 naming the missing
    // feature (or, with the `spiffe` feature, the unreachable Workload
    // API) — never a fallback to a local key.
    let out = whoami(&[("SPIFFE_ENDPOINT_SOCKET", "unix:///nonexistent/spire/agent.sock")], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    if cfg!(feature = "spiffe") {
        assert!(
            err.contains("SPIFFE Workload API") && err.contains("/nonexistent/spire/agent.sock"),
            "{err}"
        );
    } else {
        assert!(err.contains("SPIFFE") && err.contains("`spiffe` feature"), "{err}");
    }
    assert!(out.stdout.is_empty());

    let out = whoami(&[("KEST_OIDC_TOKEN_PATH", "/no/such/token")], &["--format", "json"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/no/such/token"));
}

#[test]
fn whoami_falls_back_to_a_local_identity() {
    let report = json_of(&whoami(&[], &["--format", "json"]));
    assert_eq!(report["provider"], "local");
    assert_eq!(report["workload_id"], "spiffe://kest.internal/local-workload");
    assert_eq!(report["algorithm"], "EdDSA");
    assert_eq!(report["public_jwk"]["crv"], "Ed25519");
    assert!(report["reason"].as_str().unwrap().contains("ephemeral"));
}
