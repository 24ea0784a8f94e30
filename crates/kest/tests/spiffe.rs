//! SPIFFE X509-SVIDs (feature `spiffe`): SVIDs and bundles minted with
//! `rcgen` at test time. `SpiffeIdentity` signs ES256 (P-256) or EdDSA
//! (Ed25519) entries as its SPIFFE ID, refuses RSA, rotates, and is not
//! ready (so the hook never runs the handler) without a valid SVID;
//! `SpiffeBundleResolver` checks chains against the bundle before mapping
//! SPIFFE IDs to leaf keys.
//!
//! Not covered yet: the Workload API (gRPC over `SPIFFE_ENDPOINT_SOCKET`).
#![cfg(feature = "spiffe")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use kest::identity::{IdentityProvider, SpiffeBundleResolver, SpiffeError, SpiffeIdentity, X509Svid};
use kest::policy::MockPolicyEngine;
use kest::{CallContext, HookError, Kest, Lineage, Verified};
use kest_core::{ErrorKind, Signer as _, Verifier};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType, SignatureAlgorithm,
    date_time_ymd,
};

const TD: &str = "example.org";

struct Ca {
    issuer: Issuer<'static, KeyPair>,
    der: Vec<u8>,
}

fn new_ca(name: &str) -> Ca {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).unwrap();
    Ca { der: cert.der().to_vec(), issuer: Issuer::new(params, key) }
}

/// An SVID for `id` signed by `ca`: (chain DER, PKCS#8 key DER).
fn svid(ca: &Ca, id: &str, alg: &'static SignatureAlgorithm, not_after: (i32, u8, u8)) -> (Vec<u8>, Vec<u8>) {
    let key = KeyPair::generate_for(alg).unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, "workload");
    params.subject_alt_names = vec![SanType::URI(id.try_into().unwrap())];
    params.not_before = date_time_ymd(2020, 1, 1);
    params.not_after = date_time_ymd(not_after.0, not_after.1, not_after.2);
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    (cert.der().to_vec(), key.serialize_der())
}

const FUTURE: (i32, u8, u8) = (2090, 1, 1);

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
