//! The in-process Rego and Cedar engines (SPEC §6.2) and the bundled
//! policies in `policies/`.
#![cfg(all(feature = "rego", feature = "cedar"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kest::policy::cedar::{CedarEngine, bundled_cedar};
use kest::policy::rego::{RegoEngine, bundled_rego};
use kest::policy::{
    Decision, Environment, EvaluationContext, Object, PolicyEngine, PolicyError, PolicyInput, Subject, Tier,
};
use serde_json::Map;

const ALLOW: Result<Decision, PolicyError> = Ok(Decision::Allow);
const DENY: Result<Decision, PolicyError> = Ok(Decision::Deny);

/// A context for `operation` by `spiffe://demo/agent` with `trust` and `taints`.
fn ctx(operation: &str, trust: u8, taints: &[&str], is_root: bool) -> EvaluationContext {
    let tips = if is_root { vec![] } else { vec!["a".repeat(64)] };
    EvaluationContext {
        subject: Subject {
            workload: "spiffe://demo/agent".into(),
            user: Some("alice".into()),
            agent: None,
            task: None,
            trust_score: trust,
            taints: taints.iter().map(|t| (*t).to_owned()).collect(),
            attributes: Map::new(),
        },
        object: Object { id: None, attributes: Map::new() },
        environment: Environment {
            is_root,
            source_type: if is_root { Some("user_input".into()) } else { None },
            parent_hash: tips.first().cloned().unwrap_or_else(|| "0".into()),
            policy_names: vec![],
            policy_tier: Tier::Function,
            active_deviations: vec![],
            operation: operation.into(),
            entry_id: "01900000-0000-7000-8000-000000000001".into(),
        },
        tips,
        action: operation.into(),
        attributes: Default::default(),
        ancestors: Default::default(),
    }
}

fn input(c: EvaluationContext) -> PolicyInput {
    PolicyInput::new(c)
}

fn repo_policies(sub: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../policies").join(sub)
}

// ---------------------------------------------------------------- Rego

fn bundled_rego_engine() -> RegoEngine {
    RegoEngine::new(bundled_rego()).unwrap()
}

#[test]
fn rego_kest_allow() {
    let e = bundled_rego_engine();
    assert_eq!(e.evaluate("kest/allow", &input(ctx("ask", 80, &[], false))), ALLOW);
    assert_eq!(e.evaluate("kest/allow", &input(ctx("ask", 70, &[], false))), ALLOW);
    assert_eq!(e.evaluate("kest/allow", &input(ctx("ask", 69, &[], false))), DENY);
    assert_eq!(e.evaluate("kest/allow", &input(ctx("ask", 100, &[], true))), DENY, "a root is denied");
}

#[test]
fn rego_send_email() {
    let e = bundled_rego_engine();
    assert_eq!(e.evaluate("kest/send_email", &input(ctx("send_email", 50, &[], false))), ALLOW);
    assert_eq!(e.evaluate("kest/send_email", &input(ctx("send_email", 50, &["web"], true))), ALLOW);
    assert_eq!(e.evaluate("kest/send_email", &input(ctx("send_email", 49, &[], false))), DENY);
    assert_eq!(e.evaluate("kest/send_email", &input(ctx("send_email", 90, &["confidential"], false))), DENY);
}

#[test]
fn rego_no_pii_egress() {
    let e = bundled_rego_engine();
    assert_eq!(e.evaluate("kest/no_pii_egress", &input(ctx("send_email", 90, &["pii"], false))), DENY);
    assert_eq!(e.evaluate("kest/no_pii_egress", &input(ctx("send_sms", 90, &["other", "pii"], false))), DENY);
    assert_eq!(e.evaluate("kest/no_pii_egress", &input(ctx("summarize", 10, &["pii"], false))), ALLOW);
    assert_eq!(e.evaluate("kest/no_pii_egress", &input(ctx("send_email", 10, &["web"], false))), ALLOW);
}

#[test]
fn rego_only_exact_true_allows() {
    let e = RegoEngine::new([
        ("string", "package t.string\nallow := \"true\""),
        ("number", "package t.number\nallow := 1"),
        ("object", "package t.object\nallow := {\"allow\": true}"),
        ("set", "package t.set\nallow contains true"),
        ("false", "package t.false\nallow := false"),
        ("undefined", "package t.undefined\nallow if input.no_such_key == 1"),
        ("true", "package t.true\nallow if input.subject.workload == \"spiffe://demo/agent\""),
    ])
    .unwrap();
    let i = input(ctx("ask", 50, &[], false));
    for name in ["string", "number", "object", "set", "false", "undefined"] {
        assert_eq!(e.evaluate(name, &i), DENY, "{name}");
    }
    assert_eq!(e.evaluate("true", &i), ALLOW);
}

#[test]
fn rego_syntax_error_is_a_construction_error() {
    let err = RegoEngine::builder()
        .policy("kest/allow", bundled_rego()[0].1)
        .policy("broken", "package broken\nallow if {")
        .build()
        .unwrap_err();
    assert!(matches!(&err, PolicyError::Compile { policy, .. } if policy == "broken"), "{err:?}");

    let err = RegoEngine::new([("nopkg", "allow := true")]).unwrap_err();
    assert!(matches!(&err, PolicyError::Compile { policy, .. } if policy == "nopkg"), "{err:?}");
}

#[test]
fn rego_missing_rule_or_shared_package_is_a_construction_error() {
    let err = RegoEngine::new([("p", "package p\nok := true")]).unwrap_err();
    assert!(
        matches!(&err, PolicyError::Compile { policy, message } if policy == "p" && message.contains("allow"))
    );

    let err = RegoEngine::new([("a", "package shared\nallow := true"), ("b", "package shared\nx := 1")])
        .unwrap_err();
    assert!(matches!(err, PolicyError::Compile { .. }), "{err:?}");

    let err =
        RegoEngine::builder().policy("p", "package p\nallow := true").rule("q", "allow").build().unwrap_err();
    assert!(matches!(err, PolicyError::Config(_)), "{err:?}");
}

#[test]
fn rego_unknown_policy() {
    let e = bundled_rego_engine();
    let i = input(ctx("ask", 100, &[], false));
    assert_eq!(e.evaluate("kest/other", &i), Err(PolicyError::UnknownPolicy("kest/other".into())));
    // Map names are exact: the package path is not an alias.
    assert_eq!(e.evaluate("kest.allow", &i), Err(PolicyError::UnknownPolicy("kest.allow".into())));
}

#[test]
fn rego_custom_rule_and_data() {
    let e = RegoEngine::builder()
        .policy(
            "ops",
            "package kest.ops\ndecision := {\"ok\": input.environment.operation in data.allowed}\nok if decision.ok",
        )
        .rule("ops", "ok")
        .data(serde_json::json!({"allowed": ["ask"]}))
        .build()
        .unwrap();
    assert_eq!(e.decision_path("ops"), Some("data.kest.ops.ok"));
    assert_eq!(e.evaluate("ops", &input(ctx("ask", 0, &[], true))), ALLOW);
    assert_eq!(e.evaluate("ops", &input(ctx("delete", 0, &[], true))), DENY);
}

#[test]
fn rego_enabled_builtins() {
    let e = RegoEngine::new([(
        "b",
        r#"package b
allow if {
    net.cidr_contains("10.0.0.0/8", input.object.attributes.ip)
    regex.match(`^spiffe://demo/`, input.subject.workload)
    glob.match("send_*", [], input.environment.operation)
    semver.compare("1.2.0", "1.10.0") < 0
    base64.encode("kest") == "a2VzdA=="
}"#,
    )])
    .unwrap();
    let mut c = ctx("send_email", 0, &[], false);
    c.object.attributes.insert("ip".into(), serde_json::json!("10.1.2.3"));
    assert_eq!(e.evaluate("b", &input(c.clone())), ALLOW);
    c.object.attributes.insert("ip".into(), serde_json::json!("192.168.0.1"));
    assert_eq!(e.evaluate("b", &input(c)), DENY);
}

#[test]
fn rego_time_limit_denies() {
    let e = RegoEngine::builder()
        .policy(
            "slow",
            "package slow\nallow if {\n some i in numbers.range(1, 5000)\n some j in numbers.range(1, 5000)\n i * j < 0\n}",
        )
        .time_limit(Duration::from_millis(20))
        .build()
        .unwrap();
    let r = e.evaluate("slow", &input(ctx("ask", 0, &[], true)));
    assert!(matches!(r, Err(PolicyError::Evaluation { .. })), "{r:?}");
}

#[test]
fn rego_directory_names_by_package() {
    let e = RegoEngine::from_directory(repo_policies("rego")).unwrap();
    let names = e.policy_names();
    for name in ["kest/allow", "kest.allow", "kest/send_email", "kest.send_email", "kest/no_pii_egress"] {
        assert!(names.contains(&name), "{name} in {names:?}");
    }
    assert_eq!(e.evaluate("kest.allow", &input(ctx("ask", 80, &[], false))), ALLOW);
    assert_eq!(e.evaluate("kest/allow", &input(ctx("ask", 80, &[], true))), DENY);

    // Several files of one package form one policy; `*_test.rego` is skipped.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    std::fs::write(dir.path().join("a.rego"), "package team.gate\ndefault allow := false\nallow if ok")
        .unwrap();
    std::fs::write(dir.path().join("sub/b.rego"), "package team.gate\nok if input.trust_score > 10").unwrap();
    std::fs::write(dir.path().join("a_test.rego"), "package team.gate_test\nthis is not rego").unwrap();
    std::fs::write(dir.path().join("notes.txt"), "ignored").unwrap();
    let e = RegoEngine::builder().directory(dir.path()).rule("team.gate", "allow").build().unwrap();
    assert_eq!(e.policy_names(), vec!["team.gate", "team/gate"]);
    assert_eq!(e.evaluate("team/gate", &input(ctx("ask", 11, &[], true))), ALLOW);
    assert_eq!(e.evaluate("team.gate", &input(ctx("ask", 10, &[], true))), DENY);

    let err = RegoEngine::from_directory(dir.path().join("missing")).unwrap_err();
    assert!(matches!(err, PolicyError::Config(_)), "{err:?}");
}

#[test]
fn bundled_texts_are_the_files() {
    // The library's models (`kest/<model>`) are checked in tests/policy_library.rs.
    let is_model = |name: &str| kest::policy::library::Model::from_policy_name(name).is_some();
    for (name, text) in bundled_rego().into_iter().filter(|(n, _)| !is_model(n)) {
        let file = name.strip_prefix("kest/").unwrap().replace("allow", "kest_allow");
        let on_disk = std::fs::read_to_string(repo_policies("rego").join(format!("{file}.rego"))).unwrap();
        assert_eq!(text, on_disk, "{name}");
    }
    for (name, text) in bundled_cedar().into_iter().filter(|(n, _)| !is_model(n)) {
        let on_disk = std::fs::read_to_string(repo_policies("cedar").join(format!("{name}.cedar"))).unwrap();
        assert_eq!(text, on_disk, "{name}");
    }
}

// ---------------------------------------------------------------- Cedar

fn bundled_cedar_engine() -> CedarEngine {
    CedarEngine::new(bundled_cedar()).unwrap()
}

#[test]
fn cedar_invoke() {
    let e = bundled_cedar_engine();
    assert_eq!(e.evaluate("invoke", &input(ctx("anything", 0, &["pii"], true))), ALLOW);
    assert_eq!(e.evaluate("invoke", &input(ctx("anything", 100, &[], false))), ALLOW);
}

#[test]
fn cedar_send_email() {
    let e = bundled_cedar_engine();
    assert_eq!(e.evaluate("send_email", &input(ctx("send_email", 50, &[], false))), ALLOW);
    assert_eq!(e.evaluate("send_email", &input(ctx("send_email", 49, &[], false))), DENY);
    assert_eq!(
        e.evaluate("send_email", &input(ctx("send_email", 99, &["confidential", "web"], false))),
        DENY
    );
}

#[test]
fn cedar_directory_matches_bundle() {
    let e = CedarEngine::builder().directory(repo_policies("cedar")).build().unwrap();
    assert_eq!(e.policy_names(), vec!["invoke", "send_email"]);
    assert_eq!(e.evaluate("send_email", &input(ctx("send_email", 50, &[], false))), ALLOW);
}

#[test]
fn cedar_nested_and_flat_keys() {
    let e = CedarEngine::new([
        ("nested", "permit(principal, action, resource) when { context.subject.trust_score >= 70 };"),
        ("flat", "permit(principal, action, resource) when { context.trust_score >= 70 };"),
        ("nested_taint", r#"permit(principal, action, resource) unless { context.subject.taints.contains("web") };"#),
        ("flat_taint", r#"permit(principal, action, resource) unless { context.taints.contains("web") };"#),
        ("env", r#"permit(principal, action, resource) when { context.environment.operation == "ask" && !context.is_root };"#),
    ])
    .unwrap();
    for name in ["nested", "flat"] {
        assert_eq!(e.evaluate(name, &input(ctx("ask", 70, &[], false))), ALLOW, "{name}");
        assert_eq!(e.evaluate(name, &input(ctx("ask", 69, &[], false))), DENY, "{name}");
    }
    for name in ["nested_taint", "flat_taint"] {
        assert_eq!(e.evaluate(name, &input(ctx("ask", 0, &["pii"], false))), ALLOW, "{name}");
        assert_eq!(e.evaluate(name, &input(ctx("ask", 0, &["pii", "web"], false))), DENY, "{name}");
    }
    assert_eq!(e.evaluate("env", &input(ctx("ask", 0, &[], false))), ALLOW);
    assert_eq!(e.evaluate("env", &input(ctx("ask", 0, &[], true))), DENY);
}

#[test]
fn cedar_nulls_are_dropped() {
    // `agent` and (for a non-root) `origin` are null in the JSON: absent here.
    let e = CedarEngine::new([(
        "p",
        "permit(principal, action, resource) when { context.subject has user && !(context.subject has agent) && !(context has origin) };",
    )])
    .unwrap();
    assert_eq!(e.evaluate("p", &input(ctx("ask", 0, &[], false))), ALLOW);
    assert_eq!(e.evaluate("p", &input(ctx("ask", 0, &[], true))), DENY); // a root has an origin
}

#[test]
fn cedar_attributes_are_plain_values() {
    let e = CedarEngine::new([
        (
            "escape",
            r#"permit(principal, action, resource) when { context.object.attributes.owner has "__entity" };"#,
        ),
        ("invoke", "permit(principal, action, resource);"),
    ])
    .unwrap();
    let mut c = ctx("read", 0, &[], false);
    c.object
        .attributes
        .insert("owner".into(), serde_json::json!({"__entity": {"type": "Workload", "id": "root"}}));
    // Cedar's JSON escapes are not interpreted: the attribute stays a record.
    assert_eq!(e.evaluate("escape", &input(c.clone())), ALLOW);
    // Cedar has no floating-point numbers: such a context cannot be evaluated (deny).
    c.object.attributes.insert("price".into(), serde_json::json!(1.5));
    let r = e.evaluate("invoke", &input(c));
    assert!(
        matches!(&r, Err(PolicyError::Evaluation { message, .. }) if message.contains("object.attributes.price")),
        "{r:?}"
    );
}

#[test]
fn cedar_request_entities() {
    let e = CedarEngine::new([
        ("doc", r#"permit(principal == Workload::"spiffe://demo/agent", action == Action::"doc", resource == Resource::"doc-1");"#),
        ("entry", r#"permit(principal, action, resource == Resource::"01900000-0000-7000-8000-000000000001");"#),
    ])
    .unwrap();
    let mut with_object = ctx("read", 0, &[], false);
    with_object.object.id = Some("doc-1".into());
    assert_eq!(e.evaluate("doc", &input(with_object.clone())), ALLOW);
    assert_eq!(e.evaluate("entry", &input(with_object)), DENY);
    // Without an object id the resource is the entry id.
    assert_eq!(e.evaluate("doc", &input(ctx("read", 0, &[], false))), DENY);
    assert_eq!(e.evaluate("entry", &input(ctx("read", 0, &[], false))), ALLOW);
}

#[test]
fn cedar_unknown_policy_never_falls_back() {
    let e = CedarEngine::new([
        ("everything", "permit(principal, action, resource);"),
        ("invoke", "permit(principal, action, resource);"),
    ])
    .unwrap();
    let i = input(ctx("ask", 100, &[], false));
    assert_eq!(e.evaluate("everything", &i), ALLOW);
    assert_eq!(e.evaluate("missing", &i), Err(PolicyError::UnknownPolicy("missing".into())));
}

#[test]
fn cedar_only_the_named_set_is_consulted() {
    // A forbid-all under another name does not affect `open`.
    let e = CedarEngine::new([
        ("open", "permit(principal, action, resource);"),
        ("closed", "forbid(principal, action, resource);"),
    ])
    .unwrap();
    let i = input(ctx("ask", 0, &[], false));
    assert_eq!(e.evaluate("open", &i), ALLOW);
    assert_eq!(e.evaluate("closed", &i), DENY);
}

#[test]
fn cedar_erroring_forbid_denies() {
    let permit = "permit(principal, action, resource);";
    let e = CedarEngine::new([
        ("permit", permit.to_owned()),
        (
            "guarded",
            format!(
                "{permit}\nforbid(principal, action, resource) when {{ context.no_such_attribute == 1 }};"
            ),
        ),
        (
            "erroring_permit",
            "permit(principal, action, resource) when { context.subject.no_such_attribute };".to_owned(),
        ),
    ])
    .unwrap();
    let i = input(ctx("ask", 100, &[], false));
    assert_eq!(e.evaluate("permit", &i), ALLOW);
    // Cedar alone would answer Allow here (the erroring forbid is skipped).
    let r = e.evaluate("guarded", &i);
    assert!(matches!(&r, Err(PolicyError::Evaluation { policy, .. }) if policy == "guarded"), "{r:?}");
    let r = e.evaluate("erroring_permit", &i);
    assert!(matches!(r, Err(PolicyError::Evaluation { .. })), "{r:?}");
}

#[test]
fn cedar_syntax_error_is_a_construction_error() {
    let err =
        CedarEngine::new([("invoke", bundled_cedar()[0].1), ("bad", "permit(principal, action resource);")])
            .unwrap_err();
    assert!(matches!(&err, PolicyError::Compile { policy, .. } if policy == "bad"), "{err:?}");
    let err = CedarEngine::new([("bad", "allow everything")]).unwrap_err();
    assert!(matches!(&err, PolicyError::Compile { policy, .. } if policy == "bad"), "{err:?}");
    let err = CedarEngine::new([
        ("a", "permit(principal, action, resource);"),
        ("a", "forbid(principal, action, resource);"),
    ])
    .unwrap_err();
    assert!(matches!(err, PolicyError::Config(_)), "{err:?}");
}

const SCHEMA: &str = r#"
entity Workload;
entity Resource;
type Subject = {
  workload: String, user?: String, agent?: String, task?: String,
  trust_score: Long, taints: Set<String>, attributes: {},
};
type Ancestor = {
  operation: String, "principal": String, user?: String, "action"?: String, resource_id?: String,
  resource_attributes: {}, classification: String, trust_score: Long, taints: Set<String>, entry_hash: String,
};
type Obj = { id?: String, attributes: {} };
type Env = {
  is_root: Bool, source_type?: String, parent_hash: String, policy_names: Set<String>,
  policy_tier: String, active_deviations: Set<String>, operation: String, entry_id: String,
};
type KestContext = {
  subject: Subject, "object": Obj, environment: Env, identity: String, trust_score: Long,
  "principal": String, is_root: Bool, origin?: String, chain_tip: String,
  user: String, agent: String, task: String, taints: Set<String>,
  "action": String, attributes: {}, lineage?: { ancestors: Set<Ancestor> },
};
action send_email, invoke appliesTo { principal: Workload, resource: Resource, context: KestContext };
"#;

#[test]
fn cedar_with_schema() {
    let e = CedarEngine::builder()
        .schema_cedar(SCHEMA)
        .policy("send_email", bundled_cedar()[1].1)
        .policy("invoke", bundled_cedar()[0].1)
        .policy("unlisted", "permit(principal, action, resource);")
        .build()
        .unwrap();
    assert_eq!(e.evaluate("send_email", &input(ctx("send_email", 50, &[], false))), ALLOW);
    assert_eq!(e.evaluate("send_email", &input(ctx("send_email", 50, &["confidential"], true))), DENY);
    assert_eq!(e.evaluate("invoke", &input(ctx("x", 0, &[], true))), ALLOW);
    // An action the schema does not declare fails request validation.
    let r = e.evaluate("unlisted", &input(ctx("x", 0, &[], true)));
    assert!(matches!(r, Err(PolicyError::Evaluation { .. })), "{r:?}");

    // A policy that does not type-check against the schema is rejected.
    let err = CedarEngine::builder()
        .schema_cedar(SCHEMA)
        .policy(
            "typo",
            r#"permit(principal, action == Action::"invoke", resource) when { context.trust_scor > 1 };"#,
        )
        .build()
        .unwrap_err();
    assert!(matches!(&err, PolicyError::Compile { policy, .. } if policy == "typo"), "{err:?}");

    let err = CedarEngine::builder()
        .schema_cedar("entity ;")
        .policy("p", "permit(principal, action, resource);")
        .build();
    assert!(matches!(err, Err(PolicyError::Config(_))), "{err:?}");
}

// ---------------------------------------------------------------- concurrency

fn hammer(engine: Arc<dyn PolicyEngine>, cases: Vec<(&'static str, PolicyInput, Decision)>) {
    let cases = Arc::new(cases);
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let engine = engine.clone();
            let cases = cases.clone();
            std::thread::spawn(move || {
                for n in 0..200 {
                    let (policy, input, expected) = &cases[(t + n) % cases.len()];
                    assert_eq!(engine.evaluate(policy, input), Ok(*expected), "thread {t} call {n} {policy}");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn rego_concurrent_evaluations() {
    hammer(
        Arc::new(bundled_rego_engine()),
        vec![
            ("kest/allow", input(ctx("ask", 80, &[], false)), Decision::Allow),
            ("kest/allow", input(ctx("ask", 40, &[], false)), Decision::Deny),
            ("kest/send_email", input(ctx("send_email", 60, &[], false)), Decision::Allow),
            ("kest/send_email", input(ctx("send_email", 60, &["confidential"], false)), Decision::Deny),
            ("kest/no_pii_egress", input(ctx("send_email", 60, &["pii"], false)), Decision::Deny),
            ("kest/no_pii_egress", input(ctx("read", 60, &["pii"], false)), Decision::Allow),
        ],
    );
}

#[test]
fn rego_concurrent_evaluations_without_pool() {
    let engine =
        RegoEngine::builder().policy("kest/allow", bundled_rego()[0].1).pool_capacity(0).build().unwrap();
    hammer(
        Arc::new(engine),
        vec![
            ("kest/allow", input(ctx("ask", 80, &[], false)), Decision::Allow),
            ("kest/allow", input(ctx("ask", 40, &[], false)), Decision::Deny),
        ],
    );
}

#[test]
fn cedar_concurrent_evaluations() {
    hammer(
        Arc::new(bundled_cedar_engine()),
        vec![
            ("send_email", input(ctx("send_email", 80, &[], false)), Decision::Allow),
            ("send_email", input(ctx("send_email", 40, &[], false)), Decision::Deny),
            ("send_email", input(ctx("send_email", 80, &["confidential"], false)), Decision::Deny),
            ("invoke", input(ctx("invoke", 0, &[], true)), Decision::Allow),
        ],
    );
}
