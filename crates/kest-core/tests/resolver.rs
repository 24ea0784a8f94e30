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

/// A resolver that answers with a fixed list of keys for [`ALICE`] (a
/// rotation overlap: several keys under one principal).
struct Overlap(std::sync::Mutex<Vec<PublicKey>>);

impl Overlap {
    fn new(keys: Vec<PublicKey>) -> Arc<Overlap> {
        Arc::new(Overlap(std::sync::Mutex::new(keys)))
    }
    fn set(&self, keys: Vec<PublicKey>) {
        *self.0.lock().unwrap() = keys;
    }
}

impl KeyResolver for Overlap {
    fn resolve(&self, principal: &str) -> Result<Option<PublicKey>, ResolveError> {
        Ok(self.resolve_all(principal)?.into_iter().next())
    }
    fn resolve_all(&self, principal: &str) -> Result<Vec<PublicKey>, ResolveError> {
        Ok(if principal == ALICE { self.0.lock().unwrap().clone() } else { Vec::new() })
    }
}

/// Two entries by ALICE: the root signed with `old`, the child with `new`
/// (her key rotated between the two).
fn rotated_passport(old: &kest_core::Ed25519Signer, new: &kest_core::Ed25519Signer) -> String {
    use kest_core::{EntryDraft, Passport, TrustRules};
    let mut p = Passport::new();
    p.record(&EntryDraft::new("before rotation"), old, &TrustRules::default()).unwrap();
    p.record(&EntryDraft::new("after rotation"), new, &TrustRules::default()).unwrap();
    p.to_json()
}

#[test]
fn any_resolved_key_of_the_principal_verifies_during_a_rotation_overlap() {
    let old = kest_core::Ed25519Signer::from_seed(ALICE, [0x01; 32]);
    let new = kest_core::Ed25519Signer::from_seed(ALICE, [0x02; 32]);
    let text = rotated_passport(&old, &new);
    let (old_key, new_key) = (old.public_key().unwrap(), new.public_key().unwrap());

    let overlap = Overlap::new(vec![new_key.clone(), old_key.clone()]);
    let verifier = Verifier::with_resolver(overlap.clone());
    verifier.verify_json(&text).expect("both keys are valid: each entry verifies under one of them");
    // Order does not matter.
    overlap.set(vec![old_key.clone(), new_key.clone()]);
    verifier.verify_json(&text).unwrap();

    // The old key removed from the source: its entry (index 0) stops verifying.
    overlap.set(vec![new_key.clone()]);
    let err = verifier.verify_json(&text).unwrap_err();
    assert_eq!((err.kind(), err.index()), (ErrorKind::BadSignature, Some(0)), "{err}");
    assert!(err.to_string().contains(ALICE), "{err}");
    // Only the old key: the new entry (index 1) is refused.
    overlap.set(vec![old_key.clone()]);
    let err = verifier.verify_json(&text).unwrap_err();
    assert_eq!((err.kind(), err.index()), (ErrorKind::BadSignature, Some(1)), "{err}");
    // A resolver knowing only `resolve` (the default `resolve_all`) gives one key.
    let one = move |p: &str| -> Result<Option<PublicKey>, ResolveError> {
        Ok((p == ALICE).then(|| new_key.clone()))
    };
    let err = Verifier::with_resolver(Arc::new(one)).verify_json(&text).unwrap_err();
    assert_eq!((err.kind(), err.index()), (ErrorKind::BadSignature, Some(0)), "{err}");
    // Empty: unknown signer.
    overlap.set(Vec::new());
    let err = verifier.verify_json(&text).unwrap_err();
    assert_eq!((err.kind(), err.index()), (ErrorKind::UnknownSigner, Some(0)), "{err}");
}

#[test]
fn keys_of_another_type_never_verify_in_an_overlap() {
    let old = kest_core::Ed25519Signer::from_seed(ALICE, [0x01; 32]);
    let new = kest_core::Ed25519Signer::from_seed(ALICE, [0x02; 32]);
    let text = rotated_passport(&old, &new);
    let p256 = kest_core::Es256Signer::from_scalar(ALICE, [0x07; 32]).unwrap().public_key().unwrap();
    let stranger = kest_core::Ed25519Signer::from_seed(ALICE, [0x03; 32]).public_key().unwrap();

    // Only a P-256 key: the EdDSA entry's algorithm is not allowed.
    let overlap = Overlap::new(vec![p256.clone()]);
    let verifier = Verifier::with_resolver(overlap.clone());
    let err = verifier.verify_json(&text).unwrap_err();
    assert_eq!((err.kind(), err.index()), (ErrorKind::AlgNotAllowed, Some(0)), "{err}");
    // A P-256 key and a wrong Ed25519 key: the signature is bad.
    overlap.set(vec![p256.clone(), stranger.clone()]);
    let err = verifier.verify_json(&text).unwrap_err();
    assert_eq!((err.kind(), err.index()), (ErrorKind::BadSignature, Some(0)), "{err}");
    // With the right Ed25519 keys beside the P-256 one, it verifies.
    overlap.set(vec![p256, stranger, old.public_key().unwrap(), new.public_key().unwrap()]);
    verifier.verify_json(&text).unwrap();
}

#[test]
fn a_failing_multi_key_source_is_key_unavailable() {
    struct Down;
    impl KeyResolver for Down {
        fn resolve(&self, _: &str) -> Result<Option<PublicKey>, ResolveError> {
            Ok(Some(alice().public_key().unwrap()))
        }
        fn resolve_all(&self, _: &str) -> Result<Vec<PublicKey>, ResolveError> {
            Err(ResolveError::Stale { age_secs: 10, max_secs: 5 })
        }
    }
    let p = linear_passport(2);
    let err = Verifier::with_resolver(Arc::new(Down)).verify_json(&p.to_json()).unwrap_err();
    assert_eq!((err.kind(), err.index()), (ErrorKind::KeyUnavailable, Some(0)), "{err}");
}

#[test]
fn the_entry_cache_does_not_keep_a_key_rotated_out() {
    let old = kest_core::Ed25519Signer::from_seed(ALICE, [0x01; 32]);
    let new = kest_core::Ed25519Signer::from_seed(ALICE, [0x02; 32]);
    let text = rotated_passport(&old, &new);
    let overlap = Overlap::new(vec![new.public_key().unwrap(), old.public_key().unwrap()]);
    let cache = Arc::new(kest_core::VerifiedEntryCache::new(64));
    let verifier = Verifier::with_resolver(overlap.clone()).entry_cache(cache);
    verifier.verify_json(&text).unwrap();
    verifier.verify_json(&text).expect("cached under the key each entry verified with");
    overlap.set(vec![new.public_key().unwrap()]);
    let err = verifier.verify_json(&text).unwrap_err();
    assert_eq!((err.kind(), err.index()), (ErrorKind::BadSignature, Some(0)), "{err}");
}
