//! SPEC §8: verifiers take a `KeyResolver` (key set, `Arc`, closure).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use kest_core::{ErrorKind, KeyResolver, KeySet, PublicKey, ResolveError, Signer, Verifier};

#[test]
fn closure_resolver_is_asked_once_per_principal() {
    let p = linear_passport(6);
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let key = alice().public_key().unwrap();
    let resolver = move |principal: &str| -> Result<Option<PublicKey>, ResolveError> {
        counter.fetch_add(1, Ordering::SeqCst);
        Ok((principal == ALICE).then(|| key.clone()))
    };
    let verifier = Verifier::with_resolver(Arc::new(resolver));
    assert!(verifier.key_set().is_none());
    verifier.verify_json(&p.to_json()).unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 1, "six entries by one signer: one resolution");
    verifier.verify_json(&p.to_json()).unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 2, "once per verify call, not cached across calls");
}

#[test]
fn missing_key_is_unknown_signer_and_failing_source_is_key_unavailable() {
    let p = linear_passport(2);
    let none = |_: &str| -> Result<Option<PublicKey>, ResolveError> { Ok(None) };
    let err = Verifier::with_resolver(Arc::new(none)).verify_json(&p.to_json()).unwrap_err();
    assert_eq!((err.kind(), err.index()), (ErrorKind::UnknownSigner, Some(0)));

    for failure in [
        ResolveError::Stale { age_secs: 901, max_secs: 900 },
        ResolveError::Unavailable {
            source_name: "https://idp.example/jwks".into(),
            message: "timeout".into(),
        },
    ] {
        let f = failure.clone();
        let down = move |_: &str| -> Result<Option<PublicKey>, ResolveError> { Err(f.clone()) };
        let err = Verifier::with_resolver(Arc::new(down)).verify_json(&p.to_json()).unwrap_err();
        assert_eq!((err.kind(), err.index()), (ErrorKind::KeyUnavailable, Some(0)), "{err}");
        assert!(err.to_string().contains(&failure.to_string()), "{err}");
    }
    assert_eq!(ErrorKind::KeyUnavailable.as_str(), "key_unavailable");
}

#[test]
fn key_set_and_shared_resolvers_verify_alike() {
    let p = linear_passport(3);
    let keys: KeySet = keys();
    let via_new = Verifier::new(keys.clone());
    assert_eq!(via_new.key_set().map(KeySet::len), Some(2));
    via_new.verify_json(&p.to_json()).unwrap();
    let shared: Arc<dyn KeyResolver> = Arc::new(keys);
    Verifier::with_resolver(shared.clone()).verify_json(&p.to_json()).unwrap();
    Verifier::with_resolver(Arc::new(shared)).verify_json(&p.to_json()).unwrap();
    // A resolver answering for the wrong key fails on the signature.
    let bob_key = bob().public_key().unwrap();
    let wrong = move |_: &str| -> Result<Option<PublicKey>, ResolveError> { Ok(Some(bob_key.clone())) };
    let err = Verifier::with_resolver(Arc::new(wrong)).verify_json(&p.to_json()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BadSignature);
}
