//! SPEC §11: the verified-entry cache skips only signatures it has seen
//! verified under the same key; every other rule still runs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;

use common::*;
use kest_core::{
    EntryDraft, ErrorKind, KeySet, Parents, Passport, Signer, TrustRules, UnverifiedPassport,
    VerifiedEntryCache, Verifier,
};
use serde_json::json;

fn cached(keys: KeySet, cache: &Arc<VerifiedEntryCache>) -> Verifier {
    Verifier::new(keys).entry_cache(cache.clone())
}

fn extend(p: &mut Passport, n: usize) {
    for i in 0..n {
        let mut d = EntryDraft::new(format!("more{i}"));
        d.parents = Parents::Tips;
        p.record(&d, &alice(), &TrustRules::default()).unwrap();
    }
}

/// Replaces the first character of entry `i`'s signature segment, keeping
/// it valid base64url: the entry gets a different hash.
fn flip_signature(list: &mut [String], i: usize) {
    let (input, sig) = list[i].rsplit_once('.').unwrap();
    let first = if sig.starts_with('A') { 'B' } else { 'A' };
    list[i] = format!("{input}.{first}{}", &sig[1..]);
}

#[test]
fn only_new_entries_are_strictly_verified() {
    let cache = Arc::new(VerifiedEntryCache::new(1024));
    let v = cached(keys(), &cache);
    let mut p = linear_passport(5);
    v.verify_json(&p.to_json()).unwrap();
    assert_eq!((cache.misses(), cache.hits(), cache.len()), (5, 0, 5));
    // The next hop sees three more entries: only those are checked.
    extend(&mut p, 3);
    v.verify_json(&p.to_json()).unwrap();
    assert_eq!((cache.misses(), cache.hits(), cache.len()), (8, 5, 8));
    // Again: nothing new.
    v.verify_json(&p.to_json()).unwrap();
    assert_eq!((cache.misses(), cache.hits()), (8, 13));
    // A verifier without a cache is unaffected by it.
    Verifier::new(keys()).verify_json(&p.to_json()).unwrap();
    assert_eq!((cache.misses(), cache.hits()), (8, 13));
}

#[test]
fn flipped_signature_fails_even_when_the_passport_was_cached() {
    let cache = Arc::new(VerifiedEntryCache::new(1024));
    let v = cached(keys(), &cache);
    let p = linear_passport(4);
    v.verify_json(&p.to_json()).unwrap();
    for i in [1, 3] {
        let mut list = jws_list(&p);
        flip_signature(&mut list, i);
        let err = v.verify(&UnverifiedPassport::from_entries(list)).unwrap_err();
        assert!(
            matches!(err.kind(), ErrorKind::BadSignature | ErrorKind::MalformedSignature),
            "entry {i}: {err}"
        );
        assert_eq!(err.index(), Some(i), "{err}");
    }
}

#[test]
fn a_key_rotated_out_fails_even_when_cached() {
    let cache = Arc::new(VerifiedEntryCache::new(1024));
    let p = linear_passport(3);
    cached(keys(), &cache).verify_json(&p.to_json()).unwrap();
    // Alice's key removed from the key source.
    let err = cached(keys_for(&[&bob()]), &cache).verify_json(&p.to_json()).unwrap_err();
    assert_eq!((err.kind(), err.index()), (ErrorKind::UnknownSigner, Some(0)));
    // Alice's principal now bound to another key: the cached pair does not
    // match, the signature is checked and fails.
    let mut rotated = KeySet::new();
    rotated.insert(ALICE, bob().public_key().unwrap()).unwrap();
    let err = cached(rotated, &cache).verify_json(&p.to_json()).unwrap_err();
    assert_eq!((err.kind(), err.index()), (ErrorKind::BadSignature, Some(0)));
}

#[test]
fn a_failed_verification_caches_nothing() {
    let cache = Arc::new(VerifiedEntryCache::new(1024));
    let v = cached(keys(), &cache);
    // A bad signature at the end.
    let mut list = jws_list(&linear_passport(4));
    flip_signature(&mut list, 3);
    v.verify(&UnverifiedPassport::from_entries(list.clone())).unwrap_err();
    assert!(cache.is_empty());
    // A structural defect after valid entries.
    list[3] = "a.b.c".into();
    v.verify(&UnverifiedPassport::from_entries(list)).unwrap_err();
    assert!(cache.is_empty());
    // A semantic defect.
    let fx = Fixture::new();
    let mut c = fx.child_value();
    c["trust_score"] = json!(41);
    c["labels"].as_object_mut().unwrap().remove("kest.trust_evaluator");
    let bad = fx.with_value(&c);
    v.clone().semantic(true).verify(&UnverifiedPassport::from_entries(bad)).unwrap_err();
    assert!(cache.is_empty());
}

#[test]
fn cached_entries_still_get_every_other_rule() {
    let cache = Arc::new(VerifiedEntryCache::new(1024));
    let fx = Fixture::new();
    let mut c = fx.child_value();
    c["trust_score"] = json!(41); // an escalation only the semantic rules see
    c["labels"].as_object_mut().unwrap().remove("kest.trust_evaluator");
    let list = fx.with_value(&c);
    let plain = cached(keys(), &cache);
    plain.verify(&UnverifiedPassport::from_entries(list.clone())).unwrap();
    assert_eq!(cache.len(), 2);
    let err =
        plain.clone().semantic(true).verify(&UnverifiedPassport::from_entries(list.clone())).unwrap_err();
    assert_eq!((err.kind(), err.index()), (ErrorKind::TrustEscalation, Some(1)));
    // Linkage too: the same cached entries in the wrong order.
    let reversed: Vec<String> = list.iter().rev().cloned().collect();
    let err = plain.verify(&UnverifiedPassport::from_entries(reversed)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ParentOutOfOrder);
    // And a duplicate.
    let dup = vec![list[0].clone(), list[0].clone()];
    let err = plain.verify(&UnverifiedPassport::from_entries(dup)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DuplicateEntry);
}

#[test]
fn capacity_is_bounded() {
    let none = Arc::new(VerifiedEntryCache::new(0));
    let p = linear_passport(20);
    let v = cached(keys(), &none);
    v.verify_json(&p.to_json()).unwrap();
    v.verify_json(&p.to_json()).unwrap();
    assert!(none.is_empty());
    assert_eq!((none.hits(), none.misses()), (0, 40));

    let small = Arc::new(VerifiedEntryCache::new(16));
    assert_eq!(small.capacity(), 16);
    let p = linear_passport(60);
    cached(keys(), &small).verify_json(&p.to_json()).unwrap();
    assert!(small.len() <= 16, "{}", small.len());
    small.clear();
    assert!(small.is_empty());
    fn shared<T: Send + Sync>() {}
    shared::<VerifiedEntryCache>();
    shared::<Verifier>();
}
