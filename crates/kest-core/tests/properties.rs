//! Property tests: round trips, tamper evidence, robustness on arbitrary
//! input, and DAG bookkeeping on random shapes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashSet;

use common::*;
use kest_core::encoding::b64url_encode;
use kest_core::jws::header_json;
use kest_core::{
    Classification, Ed25519Signer, EntryDraft, EntryHash, KestEntry, Parents, Passport, TrustRules,
};
use proptest::prelude::*;
use serde_json::Value;

const ORIGINS: [&str; 7] =
    ["system", "internal", "verified_rag", "third_party_api", "user_input", "internet", "llm"];

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        "\\PC{0,10}".prop_map(Value::String),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(any::<String>(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A draft with random content; `parents` is decided by the caller.
fn arb_draft() -> impl Strategy<Value = EntryDraft> {
    (
        "[a-z_][a-z0-9_.]{0,11}",
        prop::option::of(prop::sample::select(ORIGINS.to_vec())),
        prop::collection::vec("[a-z]{1,4}", 0..3),
        prop::collection::vec("[a-z]{1,4}", 0..2),
        prop::sample::select(vec![
            Classification::System,
            Classification::Data,
            Classification::Sanitizer,
            Classification::Critic,
            Classification::Snapshot,
        ]),
        prop::option::of(-20i64..130),
        prop::collection::btree_map("[a-z][a-z_]{0,5}", any::<String>(), 0..3),
        arb_json(),
        prop::collection::btree_map("\\PC{1,6}", "\\PC{0,6}", 0..2),
    )
        .prop_map(|(op, origin, added, removed, class, over, labels, metadata, env)| {
            let mut d = EntryDraft::new(op);
            d.source_type = origin.map(str::to_owned);
            d.added_taints = added;
            d.classification = class;
            d.trust_override = over;
            // Removal needs a sanitizer or an override.
            if class == Classification::Sanitizer || over.is_some() {
                d.removed_taints = removed;
            }
            d.labels = labels.into_iter().filter(|(k, _)| k != "principal").collect();
            d.metadata = metadata;
            d.environment = env;
            d
        })
}

/// How each entry of a random DAG picks its parents: `None` = root,
/// `Some(indices)` = these earlier entries (modulo the count so far),
/// `Some([])` = current tips.
type Shape = Vec<Option<Vec<usize>>>;

fn arb_shape(len: std::ops::Range<usize>) -> impl Strategy<Value = Shape> {
    prop::collection::vec(
        prop_oneof![
            1 => Just(None),
            2 => Just(Some(vec![])),
            4 => prop::collection::vec(any::<usize>(), 1..4).prop_map(Some),
        ],
        len,
    )
}

fn parents_for(choice: &Option<Vec<usize>>, existing: &[EntryHash]) -> Parents {
    match choice {
        _ if existing.is_empty() => Parents::Root,
        None => Parents::Root,
        Some(ix) if ix.is_empty() => Parents::Tips,
        Some(ix) => {
            let mut list: Vec<EntryHash> = Vec::new();
            for i in ix {
                let h = existing[i % existing.len()];
                if !list.contains(&h) {
                    list.push(h);
                }
            }
            Parents::Explicit(list)
        }
    }
}

/// Builds a passport with the given shape, alternating two signers.
fn build(shape: &Shape, drafts: &[EntryDraft], signers: &[Ed25519Signer]) -> Passport {
    let rules = TrustRules::default();
    let mut p = Passport::new();
    let mut hashes = Vec::new();
    for (i, choice) in shape.iter().enumerate() {
        let mut d = drafts.get(i).cloned().unwrap_or_else(|| EntryDraft::new(format!("op{i}")));
        d.parents = parents_for(choice, &hashes);
        let h = p.record(&d, &signers[i % signers.len()], &rules).unwrap();
        hashes.push(h);
    }
    p
}

/// The model: tips are entries nobody names as parent, in order.
fn model_tips(p: &Passport) -> Vec<EntryHash> {
    let named: HashSet<EntryHash> = p.entries().iter().flat_map(|e| e.parents().iter().copied()).collect();
    p.entries().iter().map(|e| e.hash()).filter(|h| !named.contains(h)).collect()
}

fn check_dag(p: &Passport) -> Result<(), TestCaseError> {
    prop_assert_eq!(p.tips().to_vec(), model_tips(p));
    let roots: Vec<EntryHash> = p.roots().map(|e| e.hash()).collect();
    let model_roots: Vec<EntryHash> =
        p.entries().iter().filter(|e| e.payload().parent_ids == ["0"]).map(|e| e.hash()).collect();
    prop_assert_eq!(roots, model_roots);
    for (i, e) in p.entries().iter().enumerate() {
        let parents: Vec<EntryHash> = p.parents_of(&e.hash()).iter().map(|x| x.hash()).collect();
        prop_assert_eq!(&parents, &e.parents().to_vec());
        // Topological: every parent is earlier.
        for ph in e.parents() {
            let at = p.entries().iter().position(|x| x.hash() == *ph).unwrap();
            prop_assert!(at < i);
        }
        let children: Vec<EntryHash> = p.children_of(&e.hash()).iter().map(|x| x.hash()).collect();
        let model_children: Vec<EntryHash> =
            p.entries().iter().filter(|x| x.parents().contains(&e.hash())).map(|x| x.hash()).collect();
        prop_assert_eq!(children, model_children);
    }
    Ok(())
}

fn signers() -> Vec<Ed25519Signer> {
    vec![alice(), bob()]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Passport::to_json → Verifier::verify_json gives identical entries.
    #[test]
    fn passport_round_trip(shape in arb_shape(1..7), drafts in prop::collection::vec(arb_draft(), 6)) {
        let p = build(&shape, &drafts, &signers());
        let json = p.to_json();
        let v = verifier().semantic(true).verify_json(&json).unwrap();
        prop_assert_eq!(v.len(), p.len());
        for (a, b) in p.entries().iter().zip(v.entries()) {
            prop_assert_eq!(a.jws(), b.jws());
            prop_assert_eq!(a.hash(), b.hash());
            prop_assert_eq!(a.parents(), b.parents());
            prop_assert_eq!(a.header(), b.header());
            prop_assert_eq!(a.payload(), b.payload());
        }
        prop_assert_eq!(v.tips(), p.tips());
        prop_assert_eq!(v.to_json(), json);
        // Reserialized with the reference's whitespace: same passport.
        let spaced = serde_json::to_string_pretty(&jws_list(&p)).unwrap();
        prop_assert_eq!(jws_list(&verifier().verify_json(&spaced).unwrap()), jws_list(&p));
    }

    /// KestEntry → canonical bytes → strict parse → from_json is the same
    /// entry, and canonicalization is a fixed point.
    #[test]
    fn entry_json_round_trip(draft in arb_draft()) {
        let p = linear_passport(1);
        let entry = p.prepare(&draft, ALICE, &TrustRules::default()).unwrap();
        let signed = kest_core::sign_entry(entry, &alice()).unwrap();
        let entry = signed.entry().payload().clone();
        let bytes = kest_core::json::canonicalize(&entry).unwrap();
        let value = kest_core::json::parse_strict(&bytes, 64).unwrap();
        prop_assert_eq!(kest_core::json::canonicalize(&value).unwrap(), bytes.clone());
        let back = KestEntry::from_json(value).unwrap();
        prop_assert_eq!(&back, &entry);
        // And the signed JWS carries exactly these bytes.
        let payload64 = signed.entry().jws().split('.').nth(1).unwrap();
        prop_assert_eq!(payload64, b64url_encode(&bytes));
    }

    /// EntryHash Display / FromStr round trip; only lowercase hex parses.
    #[test]
    fn entry_hash_text_round_trip(s in any::<String>(), bytes in any::<[u8; 32]>()) {
        let h = EntryHash::of(&s);
        let text = h.to_string();
        prop_assert_eq!(text.len(), 64);
        prop_assert_eq!(text.parse::<EntryHash>().unwrap(), h);
        let hex = kest_core::encoding::hex_lower(&bytes);
        let parsed: EntryHash = hex.parse().unwrap();
        prop_assert_eq!(parsed.as_bytes(), &bytes);
        prop_assert_eq!(parsed.to_string(), hex.clone());
        if hex.bytes().any(|c| c.is_ascii_alphabetic()) {
            prop_assert!(hex.to_uppercase().parse::<EntryHash>().is_err());
        }
        prop_assert!(hex[1..].parse::<EntryHash>().is_err());
        let longer = format!("{hex}0");
        prop_assert!(longer.parse::<EntryHash>().is_err());
        prop_assert!(s.parse::<EntryHash>().is_err() || s.len() == 64);
    }

    /// Any single-byte change of a serialized 3–6 entry passport is refused,
    /// unless the changed text still denotes the very same list of JWS
    /// strings — in which case it verifies to the same entries.
    #[test]
    fn single_byte_flip_is_detected(
        shape in arb_shape(3..7),
        pos in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let p = build(&shape, &[], &signers());
        let json = p.to_json();
        let original = jws_list(&p);
        let mut bytes = json.into_bytes();
        let at = pos.index(bytes.len());
        prop_assume!(bytes[at] != byte);
        bytes[at] = byte;
        // Not UTF-8: cannot even be handed to the verifier as text.
        let Ok(text) = String::from_utf8(bytes) else { return Ok(()) };
        let same_list = serde_json::from_str::<Vec<String>>(&text).ok() == Some(original.clone());
        match verifier().semantic(true).verify_json(&text) {
            Ok(v) => {
                prop_assert!(same_list, "tampered passport accepted: byte {} at {}", byte, at);
                prop_assert_eq!(jws_list(&v), original);
            }
            Err(_) => prop_assert!(!same_list, "semantically identical text refused"),
        }
    }

    /// Merge keeps the first occurrence of each entry in order; tips, roots,
    /// parents and children match a model on random DAGs.
    #[test]
    fn merge_and_tips_on_random_dags(
        shape_a in arb_shape(1..7),
        prefix in any::<prop::sample::Index>(),
        shape_b in arb_shape(0..4),
    ) {
        let signers = signers();
        let a = build(&shape_a, &[], &signers);
        check_dag(&a)?;
        // B shares a prefix of A, then grows its own entries.
        let k = prefix.index(a.len() + 1);
        let prefix_json = serde_json::to_string(&jws_list(&a)[..k]).unwrap();
        let mut b = Passport::new().merge(&verifier().verify_json(&prefix_json).unwrap());
        let rules = TrustRules::default();
        let mut hashes: Vec<EntryHash> = b.entries().iter().map(|e| e.hash()).collect();
        for (i, choice) in shape_b.iter().enumerate() {
            let mut d = EntryDraft::new(format!("b{i}"));
            d.parents = parents_for(choice, &hashes);
            hashes.push(b.record(&d, &signers[i % 2], &rules).unwrap());
        }
        check_dag(&b)?;

        for (x, y) in [(&a, &b), (&b, &a)] {
            let m = x.merge(y);
            let mut expected: Vec<EntryHash> = x.entries().iter().map(|e| e.hash()).collect();
            for e in y.entries() {
                if !expected.contains(&e.hash()) {
                    expected.push(e.hash());
                }
            }
            let got: Vec<EntryHash> = m.entries().iter().map(|e| e.hash()).collect();
            prop_assert_eq!(got, expected);
            check_dag(&m)?;
            // The merged passport is itself valid.
            let v = verifier().semantic(true).verify_json(&m.to_json()).unwrap();
            prop_assert_eq!(v.tips(), m.tips());
            // Idempotent.
            prop_assert_eq!(jws_list(&m.merge(y)), jws_list(&m));
            prop_assert_eq!(jws_list(&m.merge(x)), jws_list(&m));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// The verifier never panics on arbitrary text.
    #[test]
    fn never_panics_on_arbitrary_text(s in any::<String>()) {
        let _ = verifier().semantic(true).verify_json(&s);
    }

    /// Nor on arbitrary JSON shaped like a passport: arrays of random strings
    /// and of random JSON values.
    #[test]
    fn never_panics_on_passport_shaped_json(
        strings in prop::collection::vec(any::<String>(), 0..4),
        values in prop::collection::vec(arb_json(), 0..4),
    ) {
        let r = verifier().semantic(true).verify_json(&serde_json::to_string(&strings).unwrap());
        prop_assert!(strings.is_empty() || r.is_err());
        let r = verifier().semantic(true).verify_json(&Value::Array(values.clone()).to_string());
        prop_assert!(values.is_empty() || r.is_err());
    }

    /// Nor on JWS-like strings 'a.b.c' made of base64url of random JSON (and
    /// of a real header), with random signatures.
    #[test]
    fn never_panics_on_jws_like_strings(
        parts in prop::collection::vec((prop::option::of(arb_json()), arb_json(), prop::collection::vec(any::<u8>(), 0..70)), 1..4),
    ) {
        let list: Vec<String> = parts
            .iter()
            .map(|(h, p, s)| {
                let header = match h {
                    Some(h) => h.to_string(),
                    None => header_json("EdDSA", ALICE),
                };
                format!("{}.{}.{}", b64url_encode(header.as_bytes()), b64url_encode(p.to_string().as_bytes()), b64url_encode(s))
            })
            .collect();
        let r = verifier().semantic(true).verify_json(&serde_json::to_string(&list).unwrap());
        prop_assert!(r.is_err());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Nor on validly signed payloads with one member replaced by a random
    /// value (reaching the payload checks behind the signature).
    #[test]
    fn never_panics_on_signed_random_members(member in 0usize..32, value in arb_json(), label in any::<bool>()) {
        let fx = Fixture::new();
        let mut v = fx.child_value();
        let keys: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        if label {
            let labels: Vec<String> = v["labels"].as_object().unwrap().keys().cloned().collect();
            let name = labels[member % labels.len()].clone();
            v["labels"][name] = value;
        } else {
            let name = keys[member % keys.len()].clone();
            v[name] = value;
        }
        let list = fx.with_value(&v);
        for semantic in [false, true] {
            if let Ok(p) = verify_list(&list, semantic) {
                // Whatever was accepted decodes back to the signed payload.
                prop_assert_eq!(p.len(), 2);
                let bytes = kest_core::json::canonicalize(p.entries()[1].payload()).unwrap();
                prop_assert_eq!(bytes, kest_core::json::canonicalize(&v).unwrap());
            }
        }
    }
}
