//! The policy library (SPEC §12): the data test cases of every model on both
//! engines, Rego/Cedar parity on generated contexts, per-model invariants,
//! and Rego's own history rules against the derivation.
#![cfg(all(feature = "rego", feature = "cedar"))]

use std::path::PathBuf;

use kest::policy::library::{self, EngineKind, Model};
use kest::policy::{Decision, PolicyEngine, PolicyInput};
use serde::Deserialize;
use serde_json::{Value, json};

const ENGINES: [EngineKind; 2] = [EngineKind::Rego, EngineKind::Cedar];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    input: Value,
    expect: String,
}

fn models_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../policies/models")
}

fn cases(model: Model) -> Vec<Case> {
    let path = models_dir().join("tests").join(format!("{}.json", model.name()));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// The decision, an error counting as deny.
fn decide(model: Model, engine: EngineKind, context: &Value) -> Decision {
    library::evaluate(model, engine, context).unwrap_or(Decision::Deny)
}

#[test]
fn data_cases_on_both_engines() {
    let mut failures = Vec::new();
    for model in Model::ALL {
        let cases = cases(model);
        assert!(cases.len() >= 8, "{model}: only {} cases", cases.len());
        for case in cases {
            let expect = match case.expect.as_str() {
                "allow" => Decision::Allow,
                "deny" => Decision::Deny,
                other => panic!("{model} / {}: bad expectation `{other}`", case.name),
            };
            for engine in ENGINES {
                // No engine errors on the data cases: a deny is a decision.
                match library::evaluate(model, engine, &case.input) {
                    Ok(d) if d == expect => {}
                    got => failures
                        .push(format!("{model} / {} / {engine}: {got:?}, expected {expect:?}", case.name)),
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn bundled_texts_are_the_files() {
    for model in Model::ALL {
        let rego = std::fs::read_to_string(models_dir().join(format!("rego/{}.rego", model.name()))).unwrap();
        assert_eq!(model.rego(), rego, "{model}");
        let cedar =
            std::fs::read_to_string(models_dir().join(format!("cedar/{}.cedar", model.name()))).unwrap();
        assert_eq!(model.cedar(), cedar, "{model}");
    }
}

#[test]
fn models_by_name_and_in_the_bundled_lists() {
    for model in Model::ALL {
        assert_eq!(model.name().parse::<Model>().unwrap(), model);
        assert_eq!(model.policy_name().parse::<Model>().unwrap(), model);
        assert!(kest::policy::rego::bundled_rego().iter().any(|(n, _)| *n == model.policy_name()));
        assert!(kest::policy::cedar::bundled_cedar().iter().any(|(n, _)| *n == model.policy_name()));
        assert!(!model.contract().is_empty() && !model.rule().is_empty());
    }
    assert!("chinese_wall".parse::<Model>().is_err());
    assert_eq!("cedar".parse::<EngineKind>().unwrap(), EngineKind::Cedar);
    assert!("opa".parse::<EngineKind>().is_err());
}

/// Loaded as files and through the `PolicyEngine` trait (the hook's path),
/// the models decide as through the library once the context is prepared.
#[test]
fn loadable_as_files_and_through_the_trait() {
    let rego = kest::policy::RegoEngine::from_directory(models_dir().join("rego")).unwrap();
    let cedar = kest::policy::CedarEngine::builder().directory(models_dir().join("cedar")).build().unwrap();
    for model in Model::ALL {
        for case in cases(model) {
            let prepared = library::prepare(model, &case.input);
            let expect = decide(model, EngineKind::Rego, &case.input);
            let r =
                rego.evaluate_json(&format!("kest.{}", model.name()), &prepared).unwrap_or(Decision::Deny);
            let c = cedar.evaluate_json(model.name(), &prepared).unwrap_or(Decision::Deny);
            assert_eq!((r, c), (expect, expect), "{model} / {}", case.name);
        }
    }
    // Through the trait with a typed context: no `derived`, so Cedar denies
    // (fail closed) and Rego decides from the plain context.
    let input = PolicyInput::new(kest::policy::context::example_context());
    let engine = library::cedar_engine().unwrap();
    assert_eq!(engine.evaluate("kest/security", &input).unwrap(), Decision::Deny);
    assert_eq!(library::rego_engine().unwrap().evaluate("kest/security", &input).unwrap(), Decision::Deny);
}

#[test]
fn caller_supplied_derived_is_replaced() {
    let context = json!({
        "action": "read",
        "subject": {"attributes": {"clearance": 0, "categories": []}},
        "object": {"attributes": {"classification": 3, "categories": []}},
        "derived": {"subject_level": 3, "object_level": 0, "subject_categories": [], "object_categories": []},
    });
    for engine in ENGINES {
        assert_eq!(decide(Model::BellLapadula, engine, &context), Decision::Deny, "{engine}");
    }
    assert_eq!(library::prepare(Model::BellLapadula, &context)["derived"]["subject_level"], 0);
    assert!(library::evaluate(Model::Biba, EngineKind::Rego, &json!([1])).is_err());
}
