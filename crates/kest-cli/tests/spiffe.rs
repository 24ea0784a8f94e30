//! The CLI's SPIFFE paths (feature `spiffe`) against a SPIFFE Workload API
//! server on a Unix socket inside the test (SVIDs minted with `rcgen`, the
//! server shared with `kest`'s own SPIFFE tests): `kest jwks --from-spiffe`
//! prints the SVID's key under its SPIFFE ID, `kest whoami` reports the
//! SPIFFE identity, and an entry signed with that SVID verifies with the
//! printed key set.
#![cfg(feature = "spiffe")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../kest/tests/support/spiffe_server.rs"]
mod support;

use std::process::Command;

use support::{FUTURE, new_ca, response, server, svid};

fn kest(args: &[&str], socket: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_kest"))
        .args(args)
        .env("SPIFFE_ENDPOINT_SOCKET", socket)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_from_spiffe_and_whoami() {
    let dir = tempfile::tempdir().unwrap();
    let ca = new_ca("spire-ca");
    let id = "spiffe://example.org/ns/prod/sa/cli";
    let (chain, key) = svid(&ca, id, &rcgen::PKCS_ECDSA_P256_SHA256, FUTURE);
    // One stream per connection: a socket for each CLI run.
    let mut sockets = Vec::new();
    for name in ["jwks", "whoami"] {
        let path = dir.path().join(format!("{name}.sock"));
        let tx = server::start(&path);
        tx.send(Ok(response(&chain, &key, &ca.der, id))).await.unwrap();
        sockets.push((format!("unix://{}", path.display()), tx));
    }
    let (jwks_socket, whoami_socket) = (sockets[0].0.clone(), sockets[1].0.clone());
    let (jwks, whoami) = tokio::task::spawn_blocking(move || {
        let jwks = kest(&["jwks", "--from-spiffe", &jwks_socket], &jwks_socket);
        let whoami = kest(&["whoami", "--format", "json"], &whoami_socket);
        (jwks, whoami)
    })
    .await
    .unwrap();
    assert!(jwks.status.success(), "{}", String::from_utf8_lossy(&jwks.stderr));
    let set: serde_json::Value = serde_json::from_slice(&jwks.stdout).unwrap();
    let jwk = &set["keys"][0];
    assert_eq!(jwk["kid"], id);
    assert_eq!(jwk["kty"], "EC");
    assert_eq!(jwk["crv"], "P-256");
    // The key is the SVID's: the leaf certificate's public key.
    let keys = kest_core::KeySet::from_jwks_json(&set.to_string()).unwrap();
    let svid = kest::identity::X509Svid::from_der(&chain, &key).unwrap();
    let identity = kest::identity::SpiffeIdentity::new(svid);
    use kest_core::Signer as _;
    assert_eq!(keys.get(id), identity.public_key().as_ref());

    assert!(whoami.status.success(), "{}", String::from_utf8_lossy(&whoami.stderr));
    let report: serde_json::Value = serde_json::from_slice(&whoami.stdout).unwrap();
    assert_eq!(report["provider"], "spiffe");
    assert_eq!(report["workload_id"], id);
    assert_eq!(report["algorithm"], "ES256");
    assert!(report["reason"].as_str().unwrap().contains("SPIFFE_ENDPOINT_SOCKET"));
}

#[test]
fn no_workload_api_is_an_error() {
    let out =
        kest(&["jwks", "--from-spiffe", "unix:///nonexistent/agent.sock"], "unix:///nonexistent/agent.sock");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--from-spiffe"));
    let out = kest(&["whoami"], "unix:///nonexistent/agent.sock");
    assert_eq!(out.status.code(), Some(2), "no fallback to a local key");
}
