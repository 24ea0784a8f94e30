//! Verification decodes and checks entries out of order (spread over the
//! cores, some from the verified-entry cache); the error reported must stay
//! the one a one-by-one verifier reports first (same kind, same index),
//! whichever path — static key set, key resolver, warm cache — is taken.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;

use common::*;
use kest_core::{ErrorKind, Limits, UnverifiedPassport, VerifiedEntryCache, Verifier};
use serde_json::json;

/// The verifiers whose answers must agree: static key set, resolver, and
/// both with a cache warmed on the untampered chain.
fn verifiers(warm: &[String]) -> Vec<(&'static str, Verifier)> {
    let cache = Arc::new(VerifiedEntryCache::new(1024));
    let cached = Verifier::new(keys()).entry_cache(cache.clone());
    cached.verify(&UnverifiedPassport::from_entries(warm.to_vec())).unwrap();
    let resolver_cached = Verifier::with_resolver(Arc::new(keys())).entry_cache(cache);
    vec![
        ("key set", Verifier::new(keys())),
        ("resolver", Verifier::with_resolver(Arc::new(keys()))),
        ("key set, warm cache", cached),
        ("resolver, warm cache", resolver_cached),
    ]
}

/// A 100-entry chain with bad signatures at `bad_sigs` (a flipped bit, or
/// an unreduced `s` for indices in `malformed`) and, optionally, a
/// structural or linkage defect at one index.
fn chain(bad_sigs: &[usize], malformed: &[usize], defect: Option<(usize, &'static str)>) -> Vec<String> {
    craft_chain(
        100,
        |i, v| match defect {
            Some((at, "trust")) if at == i => v["trust_score"] = json!(101),
            Some((at, "dangling")) if at == i => v["parent_ids"] = json!(["ab".repeat(32)]),
            Some((at, "kid")) if at == i => v["labels"]["principal"] = json!(BOB),
            _ => {}
        },
        |i, sig| {
            if bad_sigs.contains(&i) {
                sig[40] ^= 0x10;
            }
            if malformed.contains(&i) {
                sig[63] |= 0xf0;
            }
        },
    )
}

#[track_caller]
fn assert_all_reject(list: &[String], warm: &[String], kind: ErrorKind, index: usize) {
    for (name, v) in verifiers(warm) {
        let err = v.verify(&UnverifiedPassport::from_entries(list.to_vec())).unwrap_err();
        assert_eq!((err.kind(), err.index()), (kind, Some(index)), "{name}: {err}");
        // Semantic checks on do not change which error comes first here.
        let err = v.semantic(true).verify(&UnverifiedPassport::from_entries(list.to_vec())).unwrap_err();
        assert_eq!((err.kind(), err.index()), (kind, Some(index)), "{name}, semantic: {err}");
    }
}

#[test]
fn first_error_is_the_one_by_one_verifiers_in_a_long_passport() {
    let warm = chain(&[], &[], None);
    for (name, v) in verifiers(&warm) {
        v.verify(&UnverifiedPassport::from_entries(warm.clone())).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    // A structural defect before a bad signature wins, and vice versa.
    assert_all_reject(&chain(&[80], &[], Some((70, "trust"))), &warm, ErrorKind::InvalidValue, 70);
    assert_all_reject(&chain(&[40, 60], &[], Some((70, "trust"))), &warm, ErrorKind::BadSignature, 40);
    assert_all_reject(&chain(&[99], &[], None), &warm, ErrorKind::BadSignature, 99);
    assert_all_reject(&chain(&[3, 97], &[], None), &warm, ErrorKind::BadSignature, 3);
    // The lowest bad signature, whatever its defect.
    assert_all_reject(&chain(&[20], &[30], None), &warm, ErrorKind::BadSignature, 20);
    assert_all_reject(&chain(&[50], &[30], None), &warm, ErrorKind::MalformedSignature, 30);
    // Linkage and key binding after decoding.
    assert_all_reject(&chain(&[60], &[], Some((50, "dangling"))), &warm, ErrorKind::DanglingParent, 50);
    assert_all_reject(&chain(&[60], &[], Some((10, "kid"))), &warm, ErrorKind::KidMismatch, 10);
    assert_all_reject(&chain(&[5], &[], Some((10, "kid"))), &warm, ErrorKind::BadSignature, 5);
}

#[test]
fn a_cached_entry_is_decoded_again_under_other_limits() {
    let list = jws_list(&linear_passport(40));
    let cache = Arc::new(VerifiedEntryCache::new(1024));
    Verifier::new(keys())
        .entry_cache(cache.clone())
        .verify(&UnverifiedPassport::from_entries(list.clone()))
        .unwrap();
    assert_eq!(cache.len(), 40);
    for limits in [
        Limits { max_json_depth: 1, ..Limits::default() },
        Limits { max_entry_bytes: 200, ..Limits::default() },
    ] {
        let fresh =
            Verifier::new(keys()).limits(limits).verify(&UnverifiedPassport::from_entries(list.clone()));
        let cached = Verifier::new(keys())
            .limits(limits)
            .entry_cache(cache.clone())
            .verify(&UnverifiedPassport::from_entries(list.clone()));
        let (fresh, cached) = (fresh.unwrap_err(), cached.unwrap_err());
        assert_eq!((cached.kind(), cached.index()), (fresh.kind(), fresh.index()), "{limits:?}: {cached}");
        assert_eq!(cached.index(), Some(0));
    }
    // Under the original limits the cache still serves every entry.
    let hits = cache.hits();
    Verifier::new(keys()).entry_cache(cache.clone()).verify(&UnverifiedPassport::from_entries(list)).unwrap();
    assert_eq!(cache.hits(), hits + 40);
}

#[test]
fn a_cache_hit_gives_the_same_passport() {
    let list = jws_list(&linear_passport(10));
    let cache = Arc::new(VerifiedEntryCache::new(1024));
    let v = Verifier::new(keys()).semantic(true).entry_cache(cache.clone());
    let first = v.verify(&UnverifiedPassport::from_entries(list.clone())).unwrap();
    let second = v.verify(&UnverifiedPassport::from_entries(list)).unwrap();
    assert_eq!(cache.hits(), 10);
    assert_eq!(first.len(), second.len());
    for (a, b) in first.entries().iter().zip(second.entries()) {
        assert_eq!(**a, **b);
    }
    assert_eq!(first.tips(), second.tips());
}

#[test]
fn first_error_across_waves() {
    // Longer than the first wave of pass 1 (128 entries), so later entries
    // are decoded in further waves and positions are found lazily.
    let warm = craft_chain(300, |_, _| {}, |_, _| {});
    let long = |bad: usize, defect: Option<(usize, &'static str)>| {
        craft_chain(
            300,
            |i, v| match defect {
                Some((at, "trust")) if at == i => v["trust_score"] = json!(101),
                Some((at, "dangling")) if at == i => v["parent_ids"] = json!(["cd".repeat(32)]),
                _ => {}
            },
            |i, sig| {
                if i == bad {
                    sig[40] ^= 0x10;
                }
            },
        )
    };
    assert_all_reject(&long(200, Some((250, "trust"))), &warm, ErrorKind::BadSignature, 200);
    assert_all_reject(&long(280, Some((250, "trust"))), &warm, ErrorKind::InvalidValue, 250);
    assert_all_reject(&long(299, Some((260, "dangling"))), &warm, ErrorKind::DanglingParent, 260);
    assert_all_reject(&long(290, None), &warm, ErrorKind::BadSignature, 290);
    // A parent in a later wave is out of order, not dangling.
    for (a, b) in [(127, 128), (150, 151), (254, 255), (0, 299)] {
        let mut swapped = warm.clone();
        swapped.swap(a, b);
        // Entry `a` now names a parent found only at `b`.
        assert_all_reject(&swapped, &warm, ErrorKind::ParentOutOfOrder, a);
    }
    // A duplicate in a later wave.
    let mut dup = warm.clone();
    dup[200] = dup[10].clone();
    assert_all_reject(&dup, &warm, ErrorKind::DuplicateEntry, 200);
    for (name, v) in verifiers(&warm) {
        v.verify(&UnverifiedPassport::from_entries(warm.clone())).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}
