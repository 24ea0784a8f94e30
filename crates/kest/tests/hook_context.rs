//! The evaluation context of SPEC §6.1 as the hook builds it: `action`,
//! subject attributes, call attributes (nested and, for reference
//! policies, at the top level), and `lineage.ancestors` from the verified
//! passport; entries record `kest.action` and `kest.resource`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use kest::identity::StaticIdentity;
use kest::policy::MockPolicyEngine;
use kest::{CallContext, HookError, Kest, KestError, Lineage, Verified};
use serde_json::{Map, Value, json};

fn runtime() -> (Arc<Kest>, Arc<MockPolicyEngine>) {
    let engine = Arc::new(MockPolicyEngine::allow_all());
    let identity = Arc::new(StaticIdentity::from_seed("spiffe://test/ctx", [31u8; 32]));
    (Arc::new(Kest::builder().identity(identity).engine(engine.clone()).build().unwrap()), engine)
}

fn object(value: Value) -> Map<String, Value> {
    value.as_object().unwrap().clone()
}

#[test]
fn action_attributes_and_lineage_reach_the_policy() {
    let (kest, engine) = runtime();
    let flow = Lineage::new().with_user("alice");
    let read = Verified::builder("read_report").policy("p").action("read").build().unwrap();
    let write = Verified::builder("publish").policy("p").action("write").build().unwrap();
    flow.enter(|| {
        read.call(
            CallContext::new()
                .runtime(&kest)
                .resource_id("report-7")
                .resource_attr(object(json!({"classification": "secret", "categories": ["nato"]}))),
            || Ok::<_, std::io::Error>(()),
        )
        .unwrap();
        write
            .call(
                CallContext::new()
                    .runtime(&kest)
                    .subject_attributes(object(json!({"clearance": "top_secret", "categories": ["nato"]})))
                    .attribute("amount", 250)
                    .attribute("trust_score", 100) // a contract key: never overrides
                    .persisted_attribute("ticket", "T-42"),
                || Ok::<_, std::io::Error>(()),
            )
            .unwrap();
    });
    let calls = engine.calls();
    let (_, first) = &calls[0];
    assert_eq!(first["action"], "read");
    assert_eq!(first["lineage"]["ancestors"], json!([]), "a root has no history");
    let (_, second) = &calls[1];
    assert_eq!(second["action"], "write");
    assert_eq!(second["subject"]["attributes"]["clearance"], "top_secret");
    assert_eq!(second["attributes"]["amount"], 250);
    assert_eq!(second["amount"], 250, "reference policies read input.amount");
    assert_ne!(second["trust_score"], 100, "contract keys are Kest's own");
    let ancestors = second["lineage"]["ancestors"].as_array().unwrap();
    assert_eq!(ancestors.len(), 1);
    assert_eq!(ancestors[0]["operation"], "read_report");
    assert_eq!(ancestors[0]["action"], "read");
    assert_eq!(ancestors[0]["user"], "alice");
    assert_eq!(ancestors[0]["resource_id"], "report-7");
    assert_eq!(ancestors[0]["resource_attributes"]["classification"], "secret");
    assert_eq!(ancestors[0]["principal"], "spiffe://test/ctx");

    // The entries record what later policies read back.
    let passport = flow.passport();
    let labels = &passport.entries()[0].payload().labels;
    assert_eq!(labels["kest.action"], "read");
    assert_eq!(labels["kest.resource"], "report-7");
    assert_eq!(passport.entries()[1].payload().labels["ticket"], "T-42");
}

#[test]
fn kest_labels_cannot_be_forged_through_persisted_attributes() {
    let (kest, _) = runtime();
    let hook = Verified::builder("op").policy("p").build().unwrap();
    for name in ["kest.identity", "kest.trust_override", "principal", "trace_id"] {
        let r = hook.call(CallContext::new().runtime(&kest).persisted_attribute(name, "x"), || {
            Ok::<_, std::io::Error>(())
        });
        assert!(matches!(r, Err(HookError::Kest(KestError::Config(_)))), "{name}: {r:?}");
    }
}

#[test]
fn the_action_defaults_to_the_operation_name() {
    let (kest, engine) = runtime();
    let hook = Verified::builder("send_email").policy("p").build().unwrap();
    assert_eq!(hook.action(), "send_email");
    hook.call(CallContext::new().runtime(&kest), || Ok::<_, std::io::Error>(())).unwrap();
    assert_eq!(engine.calls()[0].1["action"], "send_email");
}

mod with_the_macro {
    use super::*;
    use std::sync::OnceLock;

    static RUNTIME: OnceLock<(Arc<Kest>, Arc<MockPolicyEngine>)> = OnceLock::new();

    fn rt() -> Arc<Kest> {
        RUNTIME.get_or_init(runtime).0.clone()
    }

    #[kest::verified(
        policy = "transfer",
        action = "transfer",
        runtime = rt(),
        context = ["amount"],
        persist = ["ticket"],
        subject_attributes = object(json!({"limit": 1000})),
        resource_id = |account: &String| account.clone()
    )]
    fn transfer(account: String, amount: u64, ticket: String) -> u64 {
        amount
    }

    #[test]
    fn action_context_and_persisted_arguments() {
        let flow = Lineage::new();
        assert_eq!(flow.enter(|| transfer("acc-1".into(), 250, "T-9".into())).unwrap(), 250);
        let (_, engine) = RUNTIME.get().unwrap();
        let (policy, input) = engine.calls().pop().unwrap();
        assert_eq!(policy, "transfer");
        assert_eq!(input["action"], "transfer");
        assert_eq!(input["attributes"], json!({"amount": 250, "ticket": "T-9"}));
        assert_eq!(input["amount"], 250);
        assert_eq!(input["subject"]["attributes"]["limit"], 1000);
        assert_eq!(input["object"]["id"], "acc-1");
        let passport = flow.passport();
        let labels = &passport.entries()[0].payload().labels;
        assert_eq!(labels["ticket"], "T-9");
        assert_eq!(labels["kest.action"], "transfer");
        assert_eq!(labels["kest.resource"], "acc-1");
        assert!(!labels.contains_key("amount"), "only persisted arguments become labels");
    }
}

#[cfg(feature = "rego")]
#[test]
fn history_free_policies_get_no_lineage_and_others_always_do() {
    use kest::policy::rego::RegoEngine;
    let engine = RegoEngine::builder()
        .policy("reads", "package t.reads\nallow if input.lineage.ancestors")
        .policy("free", "package t.free\nallow if not input.lineage")
        .history_free("free")
        .build()
        .unwrap();
    let identity = Arc::new(StaticIdentity::from_seed("spiffe://test/ctx", [31u8; 32]));
    let kest = Arc::new(Kest::builder().identity(identity).engine(Arc::new(engine)).build().unwrap());
    let flow = Lineage::new();
    for policy in ["reads", "free", "reads"] {
        let hook = Verified::builder("step").policy(policy).build().unwrap();
        let r = flow.enter(|| hook.call(CallContext::new().runtime(&kest), || Ok::<_, std::io::Error>(())));
        assert!(r.is_ok(), "{policy}: {r:?}");
    }
    // The bundled policies are declared history-free with their own text only.
    let bundled = RegoEngine::new(kest::policy::rego::bundled_rego()).unwrap();
    use kest::policy::PolicyEngine as _;
    assert!(!bundled.reads_lineage("kest/allow"));
    assert!(bundled.reads_lineage("kest/brewer_nash"));
    let edited = RegoEngine::new([("kest/allow", "package kest.allow\nallow if input.lineage")]).unwrap();
    assert!(edited.reads_lineage("kest/allow"), "another text under a bundled name is not trusted");
}
