//! The passport DAG API (tips, roots, parents/children, merge), draft
//! preparation errors, and trust/taint computation per SPEC §4.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;

use common::*;
use kest_core::{
    Classification, DraftError, EntryDraft, EntryHash, OriginError, OriginMap, Parents, Passport,
    RecordError, TrustEvaluator, TrustRules, WeakestLink, WeightedTrust,
};
use kest_core::{LABEL_SOURCE_TYPE, LABEL_TRUST_EVALUATOR, LABEL_TRUST_OVERRIDE};
use std::sync::Arc;

fn draft(op: &str, origin: Option<&str>) -> EntryDraft {
    let mut d = EntryDraft::new(op);
    d.source_type = origin.map(str::to_owned);
    d
}

fn with_parents(mut d: EntryDraft, parents: Parents) -> EntryDraft {
    d.parents = parents;
    d
}

fn rec(p: &mut Passport, d: &EntryDraft) -> EntryHash {
    p.record(d, &alice(), &TrustRules::default()).unwrap()
}

fn score(p: &Passport, h: &EntryHash) -> u8 {
    p.get(h).unwrap().payload().trust_score
}

fn hashes<'a>(entries: impl IntoIterator<Item = &'a Arc<kest_core::Entry>>) -> Vec<EntryHash> {
    entries.into_iter().map(|e| e.hash()).collect()
}

/// Every passport built here must also pass the strict verifier with the
/// semantic checks on.
fn verifies(p: &Passport) {
    let v = verifier().semantic(true).verify_json(&p.to_json()).unwrap();
    assert_eq!(jws_list(&v), jws_list(p));
    assert_eq!(v.tips(), p.tips());
}

#[test]
fn empty_passport() {
    let p = Passport::new();
    assert!(p.is_empty());
    assert!(p.tips().is_empty());
    assert_eq!(p.roots().count(), 0);
    assert_eq!(p.to_json(), "[]");
    verifies(&p);
}

#[test]
fn linear_flow_has_one_tip() {
    let mut p = Passport::new();
    let a = rec(&mut p, &draft("a", Some("internal")));
    assert_eq!(p.tips(), [a]);
    let b = rec(&mut p, &draft("b", None));
    let c = rec(&mut p, &draft("c", None));
    assert_eq!(p.tips(), [c]);
    assert_eq!(hashes(p.roots()), [a]);
    assert_eq!(hashes(p.parents_of(&c)), [b]);
    assert_eq!(hashes(p.children_of(&a)), [b]);
    assert!(p.children_of(&c).is_empty());
    assert!(p.parents_of(&a).is_empty());
    assert_eq!(p.get(&b).unwrap().payload().parent_ids, vec![a.to_string()]);
    assert_eq!(p.get(&a).unwrap().payload().parent_ids, vec!["0".to_string()]);
    verifies(&p);
}

#[test]
fn fan_out_then_fan_in() {
    let mut p = Passport::new();
    let r = rec(&mut p, &draft("root", Some("internal")));
    let a = rec(&mut p, &with_parents(draft("a", Some("user_input")), Parents::Explicit(vec![r])));
    let b = rec(&mut p, &with_parents(draft("b", Some("verified_rag")), Parents::Explicit(vec![r])));
    // Fan-out: two tips, in order of appearance.
    assert_eq!(p.tips(), [a, b]);
    assert_eq!(hashes(p.children_of(&r)), [a, b]);
    assert_eq!(hashes(p.parents_of(&a)), [r]);
    // Fan-in: the next entry names all tips.
    let c = rec(&mut p, &draft("join", None));
    assert_eq!(p.tips(), [c]);
    assert_eq!(hashes(p.parents_of(&c)), [a, b]);
    assert_eq!(p.get(&c).unwrap().payload().parent_ids, vec![a.to_string(), b.to_string()]);
    // Weakest link over the *parents*: min(40, 90) * 100 / 100.
    assert_eq!(score(&p, &a), 40);
    assert_eq!(score(&p, &b), 90);
    assert_eq!(score(&p, &c), 40);
    assert_eq!(hashes(p.roots()), [r]);
    verifies(&p);
}

#[test]
fn explicit_parent_that_is_not_a_tip() {
    let mut p = Passport::new();
    let r = rec(&mut p, &draft("root", Some("internal")));
    let a = rec(&mut p, &draft("a", None));
    // Fan out from the root although `a` is the tip: both become tips.
    let b = rec(&mut p, &with_parents(draft("b", None), Parents::Explicit(vec![r])));
    assert_eq!(p.tips(), [a, b]);
    assert_eq!(hashes(p.children_of(&r)), [a, b]);
    verifies(&p);
}

#[test]
fn second_root_and_roots() {
    let mut p = Passport::new();
    let r1 = rec(&mut p, &draft("r1", Some("internal")));
    let r2 = rec(&mut p, &with_parents(draft("r2", Some("internet")), Parents::Root));
    assert_eq!(hashes(p.roots()), [r1, r2]);
    assert_eq!(p.tips(), [r1, r2]);
    assert_eq!(score(&p, &r2), 10);
    // Fan-in across roots.
    let j = rec(&mut p, &draft("join", Some("internal")));
    assert_eq!(score(&p, &j), 10);
    assert_eq!(p.tips(), [j]);
    verifies(&p);
}

#[test]
fn merge_two_branches() {
    let mut base = Passport::new();
    let r = rec(&mut base, &draft("root", Some("internal")));
    let mut left = base.clone();
    let mut right = base.clone();
    let a = rec(&mut left, &draft("left", Some("third_party_api")));
    let a2 = rec(&mut left, &draft("left2", None));
    let b = rec(&mut right, &draft("right", Some("user_input")));
    let merged = left.merge(&right);
    assert_eq!(hashes(merged.entries()), [r, a, a2, b]);
    assert_eq!(merged.tips(), [a2, b]);
    verifies(&merged);
    // The other way round keeps the other order.
    let merged_rl = right.merge(&left);
    assert_eq!(hashes(merged_rl.entries()), [r, b, a, a2]);
    assert_eq!(merged_rl.tips(), [b, a2]);
    // Idempotent, and the empty passport is neutral.
    assert_eq!(hashes(merged.merge(&merged).entries()), hashes(merged.entries()));
    assert_eq!(hashes(merged.merge(&left).entries()), hashes(merged.entries()));
    assert_eq!(hashes(Passport::new().merge(&left).entries()), hashes(left.entries()));
    assert_eq!(hashes(left.merge(&Passport::new()).entries()), hashes(left.entries()));
    // Joining the merged branches fans in with trust min(60, 40).
    let mut merged = merged;
    let j = rec(&mut merged, &draft("join", None));
    assert_eq!(hashes(merged.parents_of(&j)), [a2, b]);
    assert_eq!(score(&merged, &j), 40);
    verifies(&merged);
}

#[test]
fn append_refuses_duplicates_and_unknown_parents() {
    let mut p = Passport::new();
    let rules = TrustRules::default();
    let entry = p.prepare(&draft("root", None), ALICE, &rules).unwrap();
    let signed = kest_core::sign_entry(entry, &alice()).unwrap();
    p.append(signed.clone()).unwrap();
    assert!(matches!(p.append(signed), Err(kest_core::AppendError::Duplicate(_))));
    // A child prepared elsewhere, whose parent this passport lacks.
    let mut other = Passport::new();
    rec(&mut other, &draft("elsewhere", None));
    let child = other.prepare(&draft("child", None), ALICE, &rules).unwrap();
    let signed = kest_core::sign_entry(child, &alice()).unwrap();
    assert!(matches!(p.append(signed), Err(kest_core::AppendError::UnknownParent(_))));
    assert_eq!(p.len(), 1);
    // Signing as someone else is refused.
    let entry = p.prepare(&draft("x", None), BOB, &rules).unwrap();
    assert!(kest_core::sign_entry(entry, &alice()).is_err());
}

// ----------------------------------------------------------------- prepare

fn prepare_err(p: &Passport, d: &EntryDraft) -> DraftError {
    p.prepare(d, ALICE, &TrustRules::default()).unwrap_err()
}

#[test]
fn prepare_errors() {
    let mut p = Passport::new();
    let r = rec(&mut p, &draft("root", Some("internal")));

    assert_eq!(prepare_err(&p, &EntryDraft::new("")), DraftError::EmptyOperation);

    let mut d = draft("x", None);
    d.removed_taints = vec!["pii".into()];
    assert_eq!(prepare_err(&p, &d), DraftError::RemovalNotAllowed);
    // Allowed with a sanitizer or an override.
    d.classification = Classification::Sanitizer;
    assert!(p.prepare(&d, ALICE, &TrustRules::default()).is_ok());
    d.classification = Classification::Critic;
    d.trust_override = Some(50);
    assert!(p.prepare(&d, ALICE, &TrustRules::default()).is_ok());

    assert_eq!(prepare_err(&p, &draft("x", Some("darknet"))), DraftError::UnknownOrigin("darknet".into()));
    assert_eq!(
        prepare_err(&p, &with_parents(draft("x", Some("nope")), Parents::Root)),
        DraftError::UnknownOrigin("nope".into())
    );

    for reserved in ["principal", LABEL_SOURCE_TYPE, LABEL_TRUST_EVALUATOR, LABEL_TRUST_OVERRIDE] {
        let mut d = draft("x", None);
        d.labels = BTreeMap::from([(reserved.to_owned(), "v".to_owned())]);
        assert_eq!(prepare_err(&p, &d), DraftError::ReservedLabel(reserved.into()), "{reserved}");
    }
    let mut d = draft("x", None);
    d.labels = BTreeMap::from([("team".to_owned(), "blue".to_owned())]);
    let entry = p.prepare(&d, ALICE, &TrustRules::default()).unwrap();
    assert_eq!(entry.label("team"), Some("blue"));

    assert_eq!(
        prepare_err(&p, &with_parents(draft("x", None), Parents::Explicit(vec![]))),
        DraftError::BadParentList
    );
    assert_eq!(
        prepare_err(&p, &with_parents(draft("x", None), Parents::Explicit(vec![r, r]))),
        DraftError::BadParentList
    );
    let ghost = EntryHash::of("ghost");
    assert_eq!(
        prepare_err(&p, &with_parents(draft("x", None), Parents::Explicit(vec![r, ghost]))),
        DraftError::UnknownParent(ghost)
    );
    // Errors reach `record` as draft errors and leave the passport unchanged.
    let err = p.record(&EntryDraft::new(""), &alice(), &TrustRules::default()).unwrap_err();
    assert_eq!(err, RecordError::Draft(DraftError::EmptyOperation));
    assert_eq!(p.len(), 1);
}

#[test]
fn prepared_entry_shape() {
    let p = Passport::new();
    let e = p.prepare(&draft("op", Some("internal")), ALICE, &TrustRules::default()).unwrap();
    let id = uuid::Uuid::parse_str(&e.entry_id).unwrap();
    assert_eq!(id.get_version_num(), 7);
    assert_eq!(id.hyphenated().to_string(), e.entry_id);
    assert_eq!(e.schema_version, "0.3.0");
    assert_eq!(e.runtime.name, "kest-rs");
    assert_eq!(e.principal(), ALICE);
    assert_eq!(e.parent_ids, vec!["0".to_string()]);
    assert_eq!(e.label(LABEL_SOURCE_TYPE), Some("internal"));
    assert_eq!(e.label(LABEL_TRUST_EVALUATOR), Some("weakest_link"));
    assert_eq!(e.label(LABEL_TRUST_OVERRIDE), None);
    assert!(e.timestamp_ms > 1_600_000_000_000);
    let json = serde_json::to_value(&e).unwrap();
    assert_eq!(json.as_object().unwrap().len(), 18);
    assert_eq!(json["metadata"], serde_json::Value::Null);
    assert_eq!(
        json["policy_context"],
        serde_json::json!({"enterprise_policies": [], "platform_policies": [], "app_policies": [],
                           "function_policies": [], "deviations": []})
    );
    // Fresh ids.
    let e2 = p.prepare(&draft("op", Some("internal")), ALICE, &TrustRules::default()).unwrap();
    assert_ne!(e.entry_id, e2.entry_id);
}

// ------------------------------------------------------------------- trust

#[test]
fn root_origin_scores() {
    let expected = [
        ("system", 100),
        ("internal", 100),
        ("verified_rag", 90),
        ("third_party_api", 60),
        ("user_input", 40),
        ("internet", 10),
        ("llm", 0),
    ];
    let mut p = Passport::new();
    for (origin, want) in expected {
        let h = rec(&mut p, &with_parents(draft(origin, Some(origin)), Parents::Root));
        assert_eq!(score(&p, &h), want, "{origin}");
        assert_eq!(OriginMap::default().score(origin), Some(want));
    }
    // Missing origin at a root: pessimistic 10, no source label.
    let h = rec(&mut p, &with_parents(draft("none", None), Parents::Root));
    assert_eq!(score(&p, &h), 10);
    assert_eq!(p.get(&h).unwrap().payload().label(LABEL_SOURCE_TYPE), None);
    verifies(&p);
}

#[test]
fn configured_default_root_origin() {
    let rules = TrustRules { default_root_origin: Some("verified_rag".into()), ..TrustRules::default() };
    let mut p = Passport::new();
    let r = p.record(&draft("root", None), &alice(), &rules).unwrap();
    assert_eq!(score(&p, &r), 90);
    assert_eq!(p.get(&r).unwrap().payload().label(LABEL_SOURCE_TYPE), Some("verified_rag"));
    // Only at a root: a child without origin has self score 100.
    let c = p.record(&draft("child", None), &alice(), &rules).unwrap();
    assert_eq!(score(&p, &c), 90);
    assert_eq!(p.get(&c).unwrap().payload().label(LABEL_SOURCE_TYPE), None);
    verifies(&p);
}

#[test]
fn non_root_missing_origin_is_self_100() {
    let mut p = Passport::new();
    rec(&mut p, &draft("root", Some("third_party_api")));
    let c = rec(&mut p, &draft("child", None));
    assert_eq!(score(&p, &c), 60);
    verifies(&p);
}

#[test]
fn weakest_link_floor() {
    let mut p = Passport::new();
    rec(&mut p, &draft("r", Some("verified_rag"))); // 90
    let a = rec(&mut p, &draft("a", Some("verified_rag"))); // 90*90/100 = 81
    let b = rec(&mut p, &draft("b", Some("verified_rag"))); // 81*90/100 = 72.9 -> 72
    let c = rec(&mut p, &draft("c", Some("user_input"))); // 72*40/100 = 28.8 -> 28
    let d = rec(&mut p, &draft("d", Some("llm"))); // 0
    let e = rec(&mut p, &draft("e", Some("internal"))); // stays 0
    assert_eq!([a, b, c, d, e].map(|h| score(&p, &h)), [81, 72, 28, 0, 0]);
    verifies(&p);

    let mut origins = OriginMap::default();
    origins.register("partner_feed", 33).unwrap();
    let rules = TrustRules { origins: origins.clone(), ..TrustRules::default() };
    let mut p = Passport::new();
    p.record(&draft("r", Some("partner_feed")), &alice(), &rules).unwrap();
    let c = p.record(&draft("c", Some("third_party_api")), &alice(), &rules).unwrap(); // 33*60/100 = 19.8
    assert_eq!(score(&p, &c), 19);
    verifier().semantic(true).origins(origins).verify_json(&p.to_json()).unwrap();

    assert_eq!(WeakestLink.calculate(90, &[40, 100]), 36);
    assert_eq!(WeakestLink.calculate(99, &[99]), 98);
    assert_eq!(WeakestLink.calculate(100, &[100, 100]), 100);
    assert_eq!(WeakestLink.calculate(0, &[100]), 0);
}

#[test]
fn origin_map_rules() {
    let mut m = OriginMap::default();
    for (name, _) in kest_core::DEFAULT_ORIGINS {
        assert_eq!(m.register(name, 50), Err(OriginError::Protected(name.into())));
    }
    assert!(matches!(m.register("x", 101), Err(OriginError::OutOfRange { .. })));
    assert!(matches!(m.register("x", -1), Err(OriginError::OutOfRange { .. })));
    assert_eq!(m.register("", 5), Err(OriginError::EmptyName));
    m.register("x", 0).unwrap();
    m.register("y", 100).unwrap();
    assert_eq!(m.score("x"), Some(0));
    assert_eq!(m.score("internet"), Some(10));
}

#[test]
fn trust_override_clamp_and_label() {
    let mut p = Passport::new();
    rec(&mut p, &draft("root", Some("llm"))); // 0
    for (given, want) in
        [(150i64, 100u8), (-5, 0), (70, 70), (100, 100), (0, 0), (i64::MAX, 100), (i64::MIN, 0)]
    {
        let mut d = draft("sanitize", None);
        d.classification = Classification::Sanitizer;
        d.trust_override = Some(given);
        d.parents = Parents::Tips;
        let h = rec(&mut p, &d);
        let entry = p.get(&h).unwrap();
        assert_eq!(entry.payload().trust_score, want, "override {given}");
        assert_eq!(entry.payload().label(LABEL_TRUST_OVERRIDE), Some(want.to_string().as_str()));
    }
    verifies(&p);
    // A non-sanitizer override is also recorded and verifies.
    let mut d = draft("force", Some("internal"));
    d.trust_override = Some(5);
    let h = rec(&mut p, &d);
    assert_eq!(score(&p, &h), 5);
    verifies(&p);
}

#[test]
fn taints_sorted_deduped_accumulated() {
    let mut p = Passport::new();
    let mut d = draft("root", Some("internet"));
    d.added_taints = vec!["web".into(), "b".into(), "web".into(), "a".into()];
    let r = rec(&mut p, &d);
    let root = p.get(&r).unwrap().payload().clone();
    assert_eq!(root.taints, ["a", "b", "web"]);
    // As declared (not deduped) in added_taints.
    assert_eq!(root.added_taints, ["web", "b", "web", "a"]);

    let mut d = with_parents(draft("left", None), Parents::Explicit(vec![r]));
    d.added_taints = vec!["pii".into()];
    let a = rec(&mut p, &d);
    let mut d = with_parents(draft("right", None), Parents::Explicit(vec![r]));
    d.added_taints = vec!["0day".into(), "pii".into()];
    let b = rec(&mut p, &d);
    let j = rec(&mut p, &draft("join", None));
    assert_eq!(p.parents_of(&j).len(), 2);
    assert_eq!(p.get(&j).unwrap().payload().taints, ["0day", "a", "b", "pii", "web"]);
    assert_eq!(p.get(&a).unwrap().payload().taints, ["a", "b", "pii", "web"]);
    assert_eq!(p.get(&b).unwrap().payload().taints, ["0day", "a", "b", "pii", "web"]);

    // A sanitizer removes; removing an absent taint is harmless; a taint
    // both added and removed here is removed.
    let mut d = draft("clean", None);
    d.classification = Classification::Sanitizer;
    d.removed_taints = vec!["pii".into(), "web".into(), "absent".into(), "new".into()];
    d.added_taints = vec!["new".into(), "sanitized".into()];
    let s = rec(&mut p, &d);
    assert_eq!(p.get(&s).unwrap().payload().taints, ["0day", "a", "b", "sanitized"]);
    // Sanitizer without override: still weakest link (internet root: 10).
    assert_eq!(score(&p, &s), 10);
    verifies(&p);
}

#[test]
fn weighted_evaluator() {
    let rules =
        TrustRules { evaluator: Arc::new(WeightedTrust { parent_weight: 75 }), ..TrustRules::default() };
    let mut p = Passport::new();
    p.record(&draft("a", Some("verified_rag")), &alice(), &rules).unwrap(); // 90
    let b = p.record(&draft("b", Some("user_input")), &alice(), &rules).unwrap(); // (90*75 + 40*25)/100 = 77
    assert_eq!(score(&p, &b), 77);
    assert_eq!(p.get(&b).unwrap().payload().label(LABEL_TRUST_EVALUATOR), Some("weighted"));
    // The verifier cannot recompute a custom evaluator; it checks the score
    // does not exceed the parents' (77 <= 90).
    verifies(&p);
}

#[test]
fn failed_execution_shape_verifies() {
    // What the hook records when an operation fails: failed_execution taint
    // and an override of 0.
    let mut p = Passport::new();
    rec(&mut p, &draft("root", Some("internal")));
    let mut d = draft("tool", None);
    d.added_taints = vec!["failed_execution".into()];
    d.trust_override = Some(0);
    let h = rec(&mut p, &d);
    let e = p.get(&h).unwrap().payload();
    assert_eq!((e.trust_score, e.label(LABEL_TRUST_OVERRIDE)), (0, Some("0")));
    assert_eq!(e.taints, ["failed_execution"]);
    verifies(&p);
}
