//! SPEC §3 (revised): who may raise trust (`Verifier::sanitizers`) and
//! roots with unknown origins (`Verifier::strict_origins`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use kest_core::{ErrorKind, OriginMap, UnverifiedPassport, Verifier, VerifyError};
use serde_json::{Value, json};

fn run(v: &Verifier, list: &[String]) -> Result<(), VerifyError> {
    v.verify(&UnverifiedPassport::from_entries(list.to_vec())).map(|_| ())
}

#[track_caller]
fn rejected(v: &Verifier, list: &[String], kind: ErrorKind, index: usize) {
    let err = run(v, list).unwrap_err();
    assert_eq!((err.kind(), err.index()), (kind, Some(index)), "{err}");
}

/// A child of the fixture root (Alice, `user_input`, trust 40) signed by
/// `principal` after `change`.
fn child(fx: &Fixture, principal: &str, change: impl FnOnce(&mut Value)) -> Vec<String> {
    let mut v = fx.child_value();
    v["labels"]["principal"] = json!(principal);
    change(&mut v);
    let seed = if principal == BOB { BOB_SEED } else { ALICE_SEED };
    fx.with(sign_value(&v, principal, seed))
}

fn override_to(score: u8) -> impl FnOnce(&mut Value) {
    move |v| {
        v["labels"]["kest.trust_override"] = json!(score.to_string());
        v["trust_score"] = json!(score);
    }
}

/// A root without any label but its principal (as other implementations
/// write it), scored `score`.
fn foreign_root(principal: &str, score: u8, origin: Option<&str>) -> Vec<String> {
    let mut v = template_payload();
    let labels = v["labels"].as_object_mut().unwrap();
    labels.retain(|k, _| k == "principal");
    labels.insert("principal".into(), json!(principal));
    if let Some(o) = origin {
        labels.insert("kest.source_type".into(), json!(o));
    }
    v["trust_score"] = json!(score);
    let seed = if principal == BOB { BOB_SEED } else { ALICE_SEED };
    vec![sign_value(&v, principal, seed)]
}

#[test]
fn override_escalation_needs_an_allowed_sanitizer() {
    let fx = Fixture::new();
    let list = child(&fx, BOB, override_to(90));
    // Without a sanitizer set a marked escalation is accepted (as before).
    run(&verifier().semantic(true), &list).unwrap();
    // With one, only its members may raise trust.
    rejected(&verifier().semantic(true).sanitizers([ALICE]), &list, ErrorKind::TrustEscalation, 1);
    rejected(
        &verifier().semantic(true).sanitizers(Vec::<String>::new()),
        &list,
        ErrorKind::TrustEscalation,
        1,
    );
    run(&verifier().semantic(true).sanitizers([BOB]), &list).unwrap();
    run(&verifier().semantic(true).sanitizers([ALICE, BOB]), &list).unwrap();
    // The rule is semantic: off without `semantic`.
    run(&verifier().sanitizers([ALICE]), &list).unwrap();
}

#[test]
fn sanitizer_classification_escalation_needs_an_allowed_sanitizer() {
    let fx = Fixture::new();
    let list = child(&fx, BOB, |v| {
        let labels = v["labels"].as_object_mut().unwrap();
        labels.remove("kest.trust_evaluator");
        v["classification"] = json!("sanitizer");
        v["trust_score"] = json!(95);
    });
    run(&verifier().semantic(true), &list).unwrap();
    rejected(&verifier().semantic(true).sanitizers([ALICE]), &list, ErrorKind::TrustEscalation, 1);
    run(&verifier().semantic(true).sanitizers([BOB]), &list).unwrap();
}

#[test]
fn lowering_or_keeping_trust_is_always_allowed() {
    let fx = Fixture::new();
    let strict = verifier().semantic(true).sanitizers([ALICE]);
    for score in [0, 10, 40] {
        run(&strict, &child(&fx, BOB, override_to(score))).unwrap();
    }
    run(&strict, &child(&fx, BOB, override_to(41))).unwrap_err();
    // Plain weakest-link children by anyone.
    run(&strict, &child(&fx, BOB, |_| {})).unwrap();
}

#[test]
fn root_escalation_is_measured_against_its_origin() {
    let strict = verifier().semantic(true).sanitizers([ALICE]);
    // No origin: baseline 10.
    let root = foreign_root(BOB, 100, None);
    run(&verifier().semantic(true), &root).unwrap();
    rejected(&strict, &root, ErrorKind::TrustEscalation, 0);
    run(&strict, &foreign_root(BOB, 10, None)).unwrap();
    run(&strict, &foreign_root(ALICE, 100, None)).unwrap();
    // A default origin: recomputed, never an escalation.
    run(&strict, &foreign_root(BOB, 100, Some("internal"))).unwrap();
    // An unknown origin: baseline 10 until the deployment configures it.
    let partner = foreign_root(BOB, 70, Some("partner_feed"));
    run(&verifier().semantic(true), &partner).unwrap();
    rejected(&strict, &partner, ErrorKind::TrustEscalation, 0);
    let mut origins = OriginMap::default();
    origins.register("partner_feed", 70).unwrap();
    run(&strict.clone().origins(origins), &partner).unwrap();
}

#[test]
fn strict_origins_rejects_unknown_root_origins() {
    let partner = foreign_root(BOB, 70, Some("partner_feed"));
    // Off by default.
    run(&verifier().semantic(true), &partner).unwrap();
    let strict = verifier().semantic(true).strict_origins(true);
    rejected(&strict, &partner, ErrorKind::UnknownOrigin, 0);
    let err = run(&strict, &partner).unwrap_err();
    assert!(err.to_string().contains("partner_feed"), "{err}");
    // A configured origin is known; an unlabelled root stays unconstrained.
    let mut origins = OriginMap::default();
    origins.register("partner_feed", 70).unwrap();
    run(&strict.clone().origins(origins), &partner).unwrap();
    run(&strict, &foreign_root(BOB, 100, None)).unwrap();
    run(&strict, &foreign_root(BOB, 40, Some("user_input"))).unwrap();
    // A non-string origin label is unknown too.
    let mut v = template_payload();
    v["labels"]["kest.source_type"] = json!(7);
    v["labels"].as_object_mut().unwrap().remove("kest.trust_evaluator");
    rejected(&strict, &[sign_value(&v, ALICE, ALICE_SEED)], ErrorKind::UnknownOrigin, 0);
    // Only a root is concerned; and the rule is semantic.
    run(&verifier().strict_origins(true), &partner).unwrap();
    assert_eq!(ErrorKind::UnknownOrigin.as_str(), "unknown_origin");
    assert!(ErrorKind::UnknownOrigin.is_semantic());
}
