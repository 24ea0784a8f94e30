//! SPIFFE X509-SVIDs (feature `spiffe`): SVIDs and bundles minted with
//! `rcgen` at test time. `SpiffeIdentity` signs ES256 (P-256) or EdDSA
//! (Ed25519) entries as its SPIFFE ID, refuses RSA, rotates, and is not
//! ready (so the hook never runs the handler) without a valid SVID;
//! `SpiffeBundleResolver` checks chains against the bundle before mapping
//! SPIFFE IDs to leaf keys.
//!
//! The Workload API client runs against a Workload API server on a Unix
//! socket inside the test (the `FetchX509SVID` server stream of the
//! official `workload.proto`), which streams SVIDs the test mints.
#![cfg(feature = "spiffe")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use kest::identity::{IdentityProvider, SpiffeBundleResolver, SpiffeError, SpiffeIdentity, X509Svid};
use kest::policy::MockPolicyEngine;
use kest::{CallContext, HookError, Kest, Lineage, Verified};
use kest_core::{ErrorKind, Signer as _, Verifier};

const TD: &str = "example.org";

#[path = "support/spiffe_server.rs"]
mod support;
use support::{FUTURE, new_ca, response, server, svid};

#[test]
fn p256_and_ed25519_svids_sign_verifiable_entries_through_the_hook() {
    let ca = new_ca("spire-ca");
    let resolver = Arc::new(SpiffeBundleResolver::new(TD, &ca.der).unwrap());
    for (alg, expected, id) in [
        (&rcgen::PKCS_ECDSA_P256_SHA256, "ES256", "spiffe://example.org/ns/a/sa/ec"),
        (&rcgen::PKCS_ED25519, "EdDSA", "spiffe://example.org/ns/a/sa/ed"),
    ] {
        let (chain, key) = svid(&ca, id, alg, FUTURE);
        let identity = Arc::new(SpiffeIdentity::new(X509Svid::from_der(&chain, &key).unwrap()));
        assert_eq!(identity.workload_id(), id);
        assert_eq!(identity.algorithm(), expected);
        assert_eq!(identity.kind(), "spiffe");
        identity.ready().unwrap();
        assert_eq!(resolver.add_svid(&chain, SystemTime::now()).unwrap(), id);

        let kest = Arc::new(
            Kest::builder()
                .identity(identity.clone())
                .engine(Arc::new(MockPolicyEngine::allow_all()))
                .build()
                .unwrap(),
        );
        let flow = Lineage::new();
        flow.enter(|| -> Result<(), HookError<std::io::Error>> {
            Verified::builder("step")
                .policy("allow")
                .build()
                .unwrap()
                .call(CallContext::new().runtime(&kest), || Ok(()))
        })
        .unwrap();
        let verified =
            Verifier::with_resolver(resolver.clone()).verify_json(&flow.passport().to_json()).unwrap();
        assert_eq!(verified.entries()[0].principal(), id);
        assert!(!format!("{identity:?}").contains(&format!("{:?}", &key[key.len() - 8..])));
    }
}

#[test]
fn rsa_svids_and_foreign_chains_are_refused() {
    let ca = new_ca("spire-ca");
    let (chain, key) = svid(&ca, "spiffe://example.org/rsa", &rcgen::PKCS_RSA_SHA256, FUTURE);
    assert_eq!(X509Svid::from_der(&chain, &key).unwrap_err(), SpiffeError::UnsupportedKey("RSA"));
    let resolver = SpiffeBundleResolver::new(TD, &ca.der).unwrap();
    assert_eq!(resolver.add_svid(&chain, SystemTime::now()).unwrap_err(), SpiffeError::UnsupportedKey("RSA"));

    // Signed by another CA, or in another trust domain: refused, no key recorded.
    let other = new_ca("other-ca");
    let (foreign, _) = svid(&other, "spiffe://example.org/x", &rcgen::PKCS_ECDSA_P256_SHA256, FUTURE);
    assert!(matches!(resolver.add_svid(&foreign, SystemTime::now()), Err(SpiffeError::Chain { .. })));
    let (elsewhere, _) = svid(&ca, "spiffe://evil.org/x", &rcgen::PKCS_ECDSA_P256_SHA256, FUTURE);
    assert!(matches!(resolver.add_svid(&elsewhere, SystemTime::now()), Err(SpiffeError::Chain { .. })));
    use kest_core::KeyResolver as _;
    assert_eq!(resolver.resolve("spiffe://example.org/x").unwrap(), None);

    // A key that is not the leaf's.
    let (chain_a, _) = svid(&ca, "spiffe://example.org/a", &rcgen::PKCS_ECDSA_P256_SHA256, FUTURE);
    let (_, key_b) = svid(&ca, "spiffe://example.org/a", &rcgen::PKCS_ECDSA_P256_SHA256, FUTURE);
    assert_eq!(X509Svid::from_der(&chain_a, &key_b).unwrap_err(), SpiffeError::KeyMismatch);
    // A chain at a time after its expiry.
    let (short, _) = svid(&ca, "spiffe://example.org/s", &rcgen::PKCS_ECDSA_P256_SHA256, (2030, 1, 1));
    let later = SystemTime::UNIX_EPOCH + Duration::from_secs(2_000_000_000); // 2033
    assert!(matches!(resolver.add_svid(&short, later), Err(SpiffeError::Expired { .. })));
}

#[test]
fn expired_or_missing_svid_means_the_handler_never_runs_and_rotation_recovers() {
    let ca = new_ca("spire-ca");
    let id = "spiffe://example.org/rotating";
    let (chain, key) = svid(&ca, id, &rcgen::PKCS_ECDSA_P256_SHA256, FUTURE);
    let identity = Arc::new(SpiffeIdentity::new(X509Svid::from_der(&chain, &key).unwrap()));
    let kest = Arc::new(
        Kest::builder()
            .identity(identity.clone())
            .engine(Arc::new(MockPolicyEngine::allow_all()))
            .build()
            .unwrap(),
    );
    let runs = AtomicUsize::new(0);
    let call = || {
        let flow = Lineage::new();
        let out = flow.enter(|| -> Result<(), HookError<std::io::Error>> {
            Verified::builder("step").policy("allow").build().unwrap().call(
                CallContext::new().runtime(&kest),
                || {
                    runs.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                },
            )
        });
        (out, flow)
    };
    assert!(call().0.is_ok());
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    let first_key = identity.public_key().unwrap();

    // Rotated to an SVID that has expired: not ready, the handler never runs.
    let (old, old_key) = svid(&ca, id, &rcgen::PKCS_ECDSA_P256_SHA256, (2021, 1, 1));
    identity.rotate(X509Svid::from_der(&old, &old_key).unwrap()).unwrap();
    assert!(identity.ready().is_err());
    assert!(call().0.is_err());
    assert_eq!(runs.load(Ordering::SeqCst), 1, "handler ran without a valid SVID");
    // No SVID at all: same.
    identity.clear();
    assert!(identity.ready().unwrap_err().0.contains("no X509-SVID"));
    assert!(call().0.is_err());
    assert_eq!(runs.load(Ordering::SeqCst), 1);

    // A fresh SVID (new key) restores signing; the resolver follows the rotation.
    let (fresh, fresh_key) = svid(&ca, id, &rcgen::PKCS_ECDSA_P256_SHA256, FUTURE);
    identity.rotate(X509Svid::from_der(&fresh, &fresh_key).unwrap()).unwrap();
    assert_ne!(identity.public_key().unwrap(), first_key);
    let (out, flow) = call();
    out.unwrap();
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    let resolver = Arc::new(SpiffeBundleResolver::new(TD, &ca.der).unwrap());
    resolver.add_svid(&chain, SystemTime::now()).unwrap();
    let err = Verifier::with_resolver(resolver.clone()).verify_json(&flow.passport().to_json()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BadSignature, "old key does not verify the new SVID's entry");
    resolver.add_svid(&fresh, SystemTime::now()).unwrap();
    Verifier::with_resolver(resolver.clone()).verify_json(&flow.passport().to_json()).unwrap();
    // Removed from the source: unknown signer.
    resolver.remove(id);
    let err = Verifier::with_resolver(resolver).verify_json(&flow.passport().to_json()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::UnknownSigner);

    // Rotation cannot change the workload.
    let (other, other_key) = svid(&ca, "spiffe://example.org/other", &rcgen::PKCS_ECDSA_P256_SHA256, FUTURE);
    assert!(matches!(
        identity.rotate(X509Svid::from_der(&other, &other_key).unwrap()),
        Err(SpiffeError::IdChanged { .. })
    ));
}

// ------------------------------------------------------------ Workload API

async fn wait_for(mut done: impl FnMut() -> bool) {
    for _ in 0..200 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition not reached");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workload_api_stream_gives_the_identity_and_rotates_it() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("agent.sock");
    let tx = server::start(&socket);
    let ca = new_ca("spire-ca");
    let id = "spiffe://example.org/ns/prod/sa/agent";
    let (chain, key) = svid(&ca, id, &rcgen::PKCS_ECDSA_P256_SHA256, FUTURE);
    tx.send(Ok(response(&chain, &key, &ca.der, id))).await.unwrap();

    let uri = format!("unix://{}", socket.display());
    let identity = SpiffeIdentity::from_workload_api(&uri, Duration::from_secs(5)).await.unwrap();
    assert_eq!(identity.workload_id(), id);
    assert_eq!(identity.algorithm(), "ES256");
    identity.ready().unwrap();
    let first = identity.public_key().unwrap();

    // Rotation from the stream, without restarting.
    let (chain2, key2) = svid(&ca, id, &rcgen::PKCS_ECDSA_P256_SHA256, FUTURE);
    tx.send(Ok(response(&chain2, &key2, &ca.der, id))).await.unwrap();
    wait_for(|| identity.public_key().unwrap() != first).await;
    let second = identity.public_key().unwrap();
    // An RSA SVID on the stream is ignored (the current one stays).
    let (rsa, rsa_key) = svid(&ca, id, &rcgen::PKCS_RSA_SHA256, FUTURE);
    tx.send(Ok(response(&rsa, &rsa_key, &ca.der, id))).await.unwrap();
    // Then an expired one replaces it: not ready any more.
    let (old, old_key) = svid(&ca, id, &rcgen::PKCS_ECDSA_P256_SHA256, (2021, 1, 1));
    tx.send(Ok(response(&old, &old_key, &ca.der, id))).await.unwrap();
    wait_for(|| identity.ready().is_err()).await;
    assert_ne!(identity.public_key().unwrap(), second);
    assert!(identity.sign(b"x").is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workload_api_without_a_valid_svid_fails_before_any_identity_exists() {
    let ca = new_ca("spire-ca");
    let id = "spiffe://example.org/w";
    // Nothing listening.
    let dir = tempfile::tempdir().unwrap();
    let missing = format!("unix://{}", dir.path().join("none.sock").display());
    assert!(SpiffeIdentity::from_workload_api(&missing, Duration::from_secs(1)).await.is_err());
    // An expired SVID, an RSA SVID, no SVID before the timeout.
    for case in ["expired", "rsa", "silent", "empty"] {
        let socket = dir.path().join(format!("{case}.sock"));
        let tx = server::start(&socket);
        match case {
            "expired" => {
                let (c, k) = svid(&ca, id, &rcgen::PKCS_ECDSA_P256_SHA256, (2021, 1, 1));
                tx.send(Ok(response(&c, &k, &ca.der, id))).await.unwrap();
            }
            "rsa" => {
                let (c, k) = svid(&ca, id, &rcgen::PKCS_RSA_SHA256, FUTURE);
                tx.send(Ok(response(&c, &k, &ca.der, id))).await.unwrap();
            }
            "empty" => {
                tx.send(Ok(Default::default())).await.unwrap();
            }
            _ => {}
        }
        let uri = format!("unix://{}", socket.display());
        let err = SpiffeIdentity::from_workload_api(&uri, Duration::from_millis(300)).await.unwrap_err();
        assert!(!err.to_string().is_empty(), "{case}");
        drop(tx);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_detector_takes_the_workload_api_first_and_the_hook_signs_with_the_svid() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("agent.sock");
    let tx = server::start(&socket);
    let ca = new_ca("spire-ca");
    let id = "spiffe://example.org/ns/prod/sa/auto";
    let (chain, key) = svid(&ca, id, &rcgen::PKCS_ECDSA_P256_SHA256, FUTURE);
    tx.send(Ok(response(&chain, &key, &ca.der, id))).await.unwrap();
    let uri = format!("unix://{}", socket.display());
    // SPIFFE wins over AWS and OIDC variables set at the same time.
    let detection = tokio::task::spawn_blocking(move || {
        let env = |name: &str| match name {
            "SPIFFE_ENDPOINT_SOCKET" => Some(uri.clone()),
            "AWS_BEDROCK_AGENT_ID" => Some("AGENT123".to_owned()),
            "AWS_REGION" => Some("eu-west-1".to_owned()),
            "KEST_AWS_KMS_KEY_ID" => Some("alias/kest".to_owned()),
            _ => None,
        };
        kest::identity::AutoDetector::with_lookup(env).detect()
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(detection.provider.kind(), "spiffe");
    assert_eq!(detection.provider.workload_id(), id);
    assert_eq!(detection.provider.algorithm(), "ES256");
    assert!(detection.reason.contains("SPIFFE_ENDPOINT_SOCKET"), "{}", detection.reason);
    let facts: Vec<String> = detection.provider.describe().into_iter().map(|(k, _)| k).collect();
    assert!(facts.contains(&"workload_api".to_owned()), "{facts:?}");
    // The detected identity signs a hooked call; the passport verifies with
    // the SVID's key.
    let provider: Arc<dyn IdentityProvider> = Arc::from(detection.provider);
    let public = provider.public_key().unwrap();
    let hooked = tokio::task::spawn_blocking(move || {
        let kest = Arc::new(
            Kest::builder()
                .identity(provider)
                .engine(Arc::new(MockPolicyEngine::allow_all()))
                .build()
                .unwrap(),
        );
        let hook = Verified::builder("auto_step").policy("allow").source_type("system").build().unwrap();
        let flow = Lineage::new();
        flow.enter(|| hook.call(CallContext::new().runtime(&kest), || Ok::<_, std::io::Error>(()))).unwrap();
        flow.passport().to_json()
    })
    .await
    .unwrap();
    let mut keys = kest_core::KeySet::new();
    keys.insert(id, public).unwrap();
    Verifier::new(keys).semantic(true).verify_json(&hooked).unwrap();
}
