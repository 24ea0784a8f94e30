//! The policy library (SPEC §12): the data test cases of every model on both
//! engines, Rego/Cedar parity on generated contexts, per-model invariants,
//! and Rego's own history rules against the derivation.
#![cfg(all(feature = "rego", feature = "cedar"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

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

// ------------------------------------------------------------ generated contexts

mod generated {
    use proptest::prelude::*;
    use proptest::sample::{select, subsequence};
    use serde_json::{Map, Value, json};

    /// Inserts `value` under `key` unless it is `None` (absent).
    fn put(map: &mut Map<String, Value>, key: &str, value: Option<Value>) {
        if let Some(value) = value {
            map.insert(key.to_owned(), value);
        }
    }

    /// Absent, null, or one of `values`.
    fn maybe(values: Vec<Value>) -> BoxedStrategy<Option<Value>> {
        prop_oneof![
            1 => Just(None),
            1 => Just(Some(Value::Null)),
            8 => select(values).prop_map(Some),
        ]
        .boxed()
    }

    fn level() -> BoxedStrategy<Option<Value>> {
        maybe(vec![
            json!(0),
            json!(1),
            json!(2),
            json!(3),
            json!("unclassified"),
            json!("confidential"),
            json!("secret"),
            json!("top_secret"),
            json!(0),
            json!(2),
            json!("secret"),
            json!(4),
            json!(-1),
            json!("SECRET"),
            json!(true),
        ])
    }

    fn string_set(items: &'static [&'static str]) -> BoxedStrategy<Value> {
        subsequence(items.to_vec(), 0..=items.len()).prop_map(|s| json!(s)).boxed()
    }

    /// A set of strings, sometimes malformed or absent.
    fn set_or_junk(items: &'static [&'static str]) -> BoxedStrategy<Option<Value>> {
        prop_oneof![
            1 => Just(None),
            1 => Just(Some(json!("a"))),
            1 => Just(Some(json!(["a", 1]))),
            10 => string_set(items).prop_map(Some),
        ]
        .boxed()
    }

    const CATEGORIES: &[&str] = &["a", "b", "c"];
    const OPERATIONS: &[&str] = &["post", "create", "review", "approve"];

    fn user() -> BoxedStrategy<Option<Value>> {
        maybe(vec![json!("alice"), json!("bob"), json!(""), json!("alice")])
    }

    fn ancestor() -> BoxedStrategy<Value> {
        let resource = (
            level(),
            set_or_junk(CATEGORIES),
            maybe(vec![json!("d1"), json!("d2"), json!(7)]),
            maybe(vec![json!("c1"), json!("c2")]),
        )
            .prop_map(|(classification, categories, dataset, class)| {
                let mut r = Map::new();
                put(&mut r, "classification", classification);
                put(&mut r, "categories", categories);
                put(&mut r, "dataset", dataset);
                put(&mut r, "conflict_class", class);
                Value::Object(r)
            });
        let entry = (
            user(),
            maybe(vec![json!("read"), json!("write"), json!("approve"), json!("list"), json!("read")]),
            select(OPERATIONS.to_vec()),
            maybe(vec![json!("r1"), json!("r2")]),
            resource,
        )
            .prop_map(|(user, action, operation, rid, resource)| {
                let mut a = Map::new();
                a.insert("user".into(), user.unwrap_or(Value::Null));
                a.insert("action".into(), action.unwrap_or(Value::Null));
                a.insert("operation".into(), json!(operation));
                a.insert("principal".into(), json!("spiffe://demo/app"));
                a.insert("resource_id".into(), rid.unwrap_or(Value::Null));
                a.insert("resource_attributes".into(), resource);
                a.insert("taints".into(), json!([]));
                Value::Object(a)
            });
        prop_oneof![20 => entry, 1 => Just(json!("not an entry"))].boxed()
    }

    fn subject() -> BoxedStrategy<Value> {
        (
            user(),
            prop_oneof![9 => (0i64..=100).prop_map(|t| Some(json!(t))), 1 => Just(None)],
            subsequence(vec!["web", "domain:hr", "domain:fin", "domain:ops", "domain:", "Domain:ops"], 0..=3),
            (level(), set_or_junk(CATEGORIES), level()),
            (
                set_or_junk(OPERATIONS),
                maybe(vec![json!(0), json!(500), json!(1000), json!(1500), json!("1000")]),
                maybe(vec![json!(true), json!(false), json!(false), json!("no")]),
            ),
        )
            .prop_map(|(user, trust, taints, (clearance, categories, integrity), (tps, limit, suspended))| {
                let mut attributes = Map::new();
                put(&mut attributes, "clearance", clearance);
                put(&mut attributes, "categories", categories);
                put(&mut attributes, "integrity", integrity);
                put(&mut attributes, "authorized_tps", tps);
                put(&mut attributes, "limit", limit);
                put(&mut attributes, "suspended", suspended);
                let mut s = Map::new();
                s.insert("workload".into(), json!("spiffe://demo/app"));
                s.insert("user".into(), user.unwrap_or(Value::Null));
                put(&mut s, "trust_score", trust);
                s.insert("taints".into(), json!(taints));
                s.insert("attributes".into(), Value::Object(attributes));
                Value::Object(s)
            })
            .boxed()
    }

    fn object() -> BoxedStrategy<Value> {
        (
            maybe(vec![json!("r1"), json!("r2")]),
            (level(), set_or_junk(CATEGORIES), level()),
            (
                maybe(vec![json!("d1"), json!("d2"), json!(7)]),
                maybe(vec![json!("c1"), json!("c2")]),
                maybe(vec![json!("ledger"), json!("payroll")]),
            ),
            (
                maybe(vec![json!("hr"), json!("fin"), json!(3)]),
                prop_oneof![
                    3 => string_set(&["hr", "fin", "ops"]).prop_map(Some),
                    1 => Just(None),
                    1 => Just(Some(json!("fin"))),
                ],
                maybe(vec![json!(0), json!(40), json!(50), json!(90), json!("x")]),
            ),
        )
            .prop_map(
                |(
                    id,
                    (classification, categories, integrity),
                    (dataset, class, cdi),
                    (domain, mbib, min_trust),
                )| {
                    let mut attributes = Map::new();
                    put(&mut attributes, "classification", classification);
                    put(&mut attributes, "categories", categories);
                    put(&mut attributes, "integrity", integrity);
                    put(&mut attributes, "dataset", dataset);
                    put(&mut attributes, "conflict_class", class);
                    put(&mut attributes, "cdi", cdi);
                    put(&mut attributes, "domain", domain);
                    put(&mut attributes, "may_be_influenced_by", mbib);
                    put(&mut attributes, "min_trust", min_trust);
                    json!({"id": id.unwrap_or(Value::Null), "attributes": attributes})
                },
            )
            .boxed()
    }

    fn call_attributes() -> BoxedStrategy<Value> {
        (
            set_or_junk(&["ledger", "payroll"]),
            set_or_junk(OPERATIONS),
            maybe(vec![json!(0), json!(500), json!(1000), json!(1001), json!(5000), json!("10")]),
            maybe(vec![json!(true), json!(false), json!("true")]),
            maybe(vec![json!("low"), json!("high"), json!("medium"), json!(3)]),
        )
            .prop_map(|(cdis, separate, amount, mfa, risk)| {
                let mut a = Map::new();
                put(&mut a, "certified_cdis", cdis);
                put(&mut a, "separate_from", separate);
                put(&mut a, "amount", amount);
                put(&mut a, "mfa_present", mfa);
                put(&mut a, "risk_score", risk);
                Value::Object(a)
            })
            .boxed()
    }

    /// A §6.1 context carrying the attributes of every model, drawn from
    /// small domains so that the rules' cases collide often.
    pub fn context() -> BoxedStrategy<Value> {
        (
            maybe(vec![
                json!("read"),
                json!("write"),
                json!("append"),
                json!("invoke"),
                json!("transfer"),
                json!("withdrawal"),
                json!("delete"),
            ]),
            subject(),
            object(),
            select(OPERATIONS.to_vec()),
            call_attributes(),
            prop::collection::vec(ancestor(), 0..5),
        )
            .prop_map(|(action, subject, object, operation, attributes, ancestors)| {
                let mut c = Map::new();
                put(&mut c, "action", action);
                c.insert("user".into(), json!(subject["user"].as_str().unwrap_or("")));
                c.insert("subject".into(), subject);
                c.insert("object".into(), object);
                c.insert(
                    "environment".into(),
                    json!({"operation": operation, "is_root": ancestors.is_empty(),
                           "entry_id": "01900000-0000-7000-8000-000000000001"}),
                );
                c.insert("attributes".into(), attributes);
                c.insert("lineage".into(), json!({"ancestors": ancestors}));
                Value::Object(c)
            })
            .boxed()
    }
}

// ------------------------------------------------------------ parity and invariants

/// A level as the test reads it (independently of the library).
fn lvl(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().filter(|l| (0..=3).contains(l)),
        Value::String(s) => library::LEVEL_NAMES.iter().position(|n| n == s).map(|p| p as i64),
        _ => None,
    }
}

fn cats(v: &Value) -> Vec<&str> {
    v.as_array().map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default()
}

fn ancestors(c: &Value) -> Vec<&Value> {
    c["lineage"]["ancestors"]
        .as_array()
        .map(|a| a.iter().filter(|x| x.is_object()).collect())
        .unwrap_or_default()
}

/// The invariant of `model` for an allowed `c` (SPEC §12), stated on the
/// plain context; `Err` names the violation.
fn invariant(model: Model, c: &Value) -> Result<(), String> {
    let s = &c["subject"]["attributes"];
    let o = &c["object"]["attributes"];
    let action = c["action"].as_str().unwrap_or("");
    let user = c["subject"]["user"].as_str().unwrap_or("");
    let check = |ok: bool, what: &str| if ok { Ok(()) } else { Err(what.to_owned()) };
    match model {
        Model::BellLapadula => {
            let (sl, ol) =
                (lvl(&s["clearance"]).ok_or("no clearance")?, lvl(&o["classification"]).ok_or("no level")?);
            let (sc, oc) = (cats(&s["categories"]), cats(&o["categories"]));
            match action {
                "read" => check(sl >= ol && oc.iter().all(|x| sc.contains(x)), "read up"),
                "write" | "append" => {
                    check(ol >= sl && sc.iter().all(|x| oc.contains(x)), "write down")?;
                    for a in ancestors(c) {
                        let r = &a["resource_attributes"];
                        if a["action"] == "read" && !r["classification"].is_null() {
                            let l = lvl(&r["classification"]).ok_or("bad upstream level")?;
                            check(ol >= l, "write down through the flow (level)")?;
                            check(
                                cats(&r["categories"]).iter().all(|x| oc.contains(x)),
                                "flow (categories)",
                            )?;
                        }
                    }
                    Ok(())
                }
                _ => Err(format!("action `{action}` allowed")),
            }
        }
        Model::Biba => {
            let (si, oi) =
                (lvl(&s["integrity"]).ok_or("no integrity")?, lvl(&o["integrity"]).ok_or("no integrity")?);
            match action {
                "read" => check(oi >= si, "read down"),
                "write" | "append" | "invoke" => check(si >= oi, "write up"),
                _ => Err(format!("action `{action}` allowed")),
            }
        }
        Model::BrewerNash => {
            // After this access, the user has touched at most one dataset
            // of the object's conflict class.
            let class = o["conflict_class"].as_str().ok_or("no class")?;
            let mut datasets: Vec<&Value> = vec![&o["dataset"]];
            for a in ancestors(c) {
                let r = &a["resource_attributes"];
                if a["user"] == user && r["conflict_class"] == class && !r["dataset"].is_null() {
                    datasets.push(&r["dataset"]);
                }
            }
            datasets.dedup();
            check(!user.is_empty() && datasets.len() == 1, "two datasets of one conflict class")
        }
        Model::ClarkWilson => {
            let listed = |list: &Value, x: &Value| list.as_array().is_some_and(|l| l.contains(x));
            check(listed(&c["attributes"]["certified_cdis"], &o["cdi"]), "uncertified cdi")?;
            check(listed(&s["authorized_tps"], &c["environment"]["operation"]), "unauthorized tp")?;
            check(!user.is_empty(), "no user")?;
            let separate = &c["attributes"]["separate_from"];
            check(separate.is_array(), "no separate_from")?;
            check(
                !ancestors(c).iter().any(|a| a["user"] == user && listed(separate, &a["operation"])),
                "separation of duty",
            )
        }
        Model::GoguenMeseguer => {
            let domain = o["domain"].as_str().ok_or("no domain")?;
            for t in cats(&c["subject"]["taints"]) {
                if let Some(d) = t.strip_prefix("domain:") {
                    check(d == domain || cats(&o["may_be_influenced_by"]).contains(&d), "interference")?;
                }
            }
            Ok(())
        }
        Model::Financial => {
            let a = &c["attributes"];
            check(a["risk_score"].is_string() && a["risk_score"] != "high", "risk")?;
            match action {
                "withdrawal" => check(a["mfa_present"] == true, "withdrawal without mfa"),
                "transfer" => {
                    let (amount, limit) =
                        (a["amount"].as_i64().ok_or("amount")?, s["limit"].as_i64().ok_or("limit")?);
                    if amount > limit {
                        let approved = ancestors(c).iter().any(|x| {
                            x["action"] == "approve"
                                && x["resource_id"] == c["object"]["id"]
                                && x["user"].as_str().is_some_and(|u| !u.is_empty() && u != user)
                        });
                        check(
                            approved && !user.is_empty(),
                            "above the limit without a second user's approval",
                        )?;
                    }
                    Ok(())
                }
                _ => Err(format!("action `{action}` allowed")),
            }
        }
        Model::Security => {
            let (sl, ol) =
                (lvl(&s["clearance"]).ok_or("no clearance")?, lvl(&o["classification"]).ok_or("no level")?);
            check(sl >= ol, "clearance")?;
            check(s["suspended"].is_null() || s["suspended"] == false, "suspended")?;
            let min =
                if o["min_trust"].is_null() { 50 } else { o["min_trust"].as_i64().ok_or("min_trust")? };
            check(c["subject"]["trust_score"].as_i64().ok_or("trust")? >= min, "trust")
        }
    }
}

/// Rego's own facts (the module's rules of the same names) against the
/// derivation: `(rule, derived key)`; an undefined rule is an absent fact.
fn rego_facts(model: Model) -> &'static [&'static str] {
    match model {
        Model::BellLapadula => &[
            "subject_level",
            "object_level",
            "subject_categories",
            "object_categories",
            "max_read_level",
            "read_categories",
            "read_history_valid",
        ],
        Model::Biba => &["subject_integrity", "object_integrity"],
        Model::BrewerNash => &["user", "dataset", "conflict_class", "other_dataset_in_class"],
        Model::ClarkWilson => &["user"],
        Model::GoguenMeseguer => &["domain", "taint_domains"],
        Model::Financial => &["user", "approved_by_other_user"],
        Model::Security => &["subject_level", "object_level", "suspended"],
    }
}

fn rego_rule(engine: &mut regorus::Engine, model: Model, rule: &str) -> Option<Value> {
    let value = engine.eval_rule(format!("data.kest.{}.{rule}", model.name())).unwrap();
    if value == regorus::Value::Undefined {
        return None;
    }
    Some(serde_json::to_value(&value).unwrap())
}

fn check_rego_facts(model: Model, context: &Value) -> Result<(), String> {
    let derived = library::derive(model, context);
    let mut engine = regorus::Engine::new();
    engine.add_policy(format!("{}.rego", model.name()), model.rego().to_owned()).unwrap();
    engine.set_input(regorus::Value::from_json_str(&context.to_string()).unwrap());
    let mut compare = |rule: &str, expected: Option<Value>| {
        let got = rego_rule(&mut engine, model, rule);
        if got == expected {
            Ok(())
        } else {
            Err(format!("{model}.{rule}: Rego {got:?}, derived {expected:?}"))
        }
    };
    for fact in rego_facts(model) {
        compare(fact, derived.get(*fact).cloned())?;
    }
    let d = |k: &str| derived.get(k).cloned();
    match model {
        Model::ClarkWilson => {
            compare("separation_violated", Some(d("separation_violated").unwrap_or(json!(false))))?;
            let member = |set: &str, item: &str| match (d(set), d(item)) {
                (Some(Value::Array(s)), Some(i)) => s.contains(&i),
                _ => false,
            };
            compare("cdi_certified", Some(json!(member("certified_cdis", "cdi"))))?;
            compare("tp_authorized", Some(json!(member("authorized_tps", "operation"))))?;
        }
        Model::GoguenMeseguer => {
            let valid = rego_rule(&mut engine, model, "influences_valid") == Some(json!(true));
            let rego_allowed = rego_rule(&mut engine, model, "allowed_domains").filter(|_| valid);
            if rego_allowed != d("allowed_domains") {
                return Err(format!(
                    "allowed_domains: Rego {rego_allowed:?}, derived {:?}",
                    d("allowed_domains")
                ));
            }
        }
        Model::Financial => {
            let acceptable = d("risk_score").is_some_and(|r| r != "high");
            compare("risk_acceptable", Some(json!(acceptable)))?;
        }
        Model::Security => {
            if let Some(min) = d("min_trust") {
                compare("min_trust", Some(min))?;
            }
        }
        _ => {}
    }
    Ok(())
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 384, ..ProptestConfig::default() })]

        /// Rego and Cedar agree on every generated context, for every
        /// model, and never fail to evaluate one (integers only).
        #[test]
        fn rego_and_cedar_agree(context in generated::context()) {
            for model in Model::ALL {
                let rego = library::evaluate(model, EngineKind::Rego, &context);
                let cedar = library::evaluate(model, EngineKind::Cedar, &context);
                prop_assert!(rego.is_ok() && cedar.is_ok(), "{model}: {rego:?} {cedar:?}\n{context:#}");
                prop_assert_eq!(rego, cedar, "{}: {:#}", model, context);
            }
        }

        /// Every allowed context satisfies its model's invariant.
        #[test]
        fn invariants_hold(context in generated::context()) {
            for model in Model::ALL {
                for engine in ENGINES {
                    if decide(model, engine, &context).is_allow() {
                        let held = invariant(model, &context);
                        prop_assert!(held.is_ok(), "{model} / {engine}: {held:?}\n{context:#}");
                    }
                }
            }
        }

        /// Rego's own rules compute the derived facts.
        #[test]
        fn rego_rules_agree_with_the_derivation(context in generated::context()) {
            for model in Model::ALL {
                let agreed = check_rego_facts(model, &context);
                prop_assert!(agreed.is_ok(), "{agreed:?}\n{context:#}");
            }
        }
    }
}

/// The generator reaches both decisions for every model (so parity is not
/// vacuous).
#[test]
fn generated_contexts_reach_both_decisions() {
    use proptest::strategy::{Strategy, ValueTree};
    use proptest::test_runner::{Config, TestRunner};
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        proptest::test_runner::TestRng::deterministic_rng(proptest::test_runner::RngAlgorithm::ChaCha),
    );
    let strategy = generated::context();
    let mut seen = std::collections::HashSet::new();
    for _ in 0..3000 {
        let context = strategy.new_tree(&mut runner).unwrap().current();
        for model in Model::ALL {
            seen.insert((model, decide(model, EngineKind::Rego, &context)));
        }
    }
    for model in Model::ALL {
        assert!(seen.contains(&(model, Decision::Allow)), "{model} never allowed");
        assert!(seen.contains(&(model, Decision::Deny)), "{model} never denied");
    }
}
