//! The formal models decided through the hook, from the lineage alone:
//! Brewer-Nash (Chinese Wall) and four-eyes approval, in Rego and in Cedar,
//! with the same decisions (SPEC §6.1, §12).
#![cfg(all(feature = "rego", feature = "cedar"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use kest::identity::StaticIdentity;
use kest::policy::PolicyEngine;
use kest::policy::cedar::CedarEngine;
use kest::policy::library;
use kest::policy::rego::RegoEngine;
use kest::{CallContext, HookError, Kest, KestError, Lineage, Verified};
use serde_json::{Map, Value, json};

fn engines() -> Vec<(&'static str, Arc<dyn PolicyEngine>)> {
    vec![
        ("rego", Arc::new(RegoEngine::new(library::rego_policies()).unwrap()) as Arc<dyn PolicyEngine>),
        ("cedar", Arc::new(CedarEngine::new(library::cedar_policies()).unwrap())),
    ]
}

fn runtime(engine: Arc<dyn PolicyEngine>) -> Arc<Kest> {
    let identity = Arc::new(StaticIdentity::from_seed("spiffe://test/analyst", [61u8; 32]));
    Arc::new(Kest::builder().identity(identity).engine(engine).build().unwrap())
}

fn attrs(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

fn denied<T: std::fmt::Debug>(r: &Result<T, HookError<std::io::Error>>) -> bool {
    matches!(r, Err(HookError::Kest(KestError::Denied { .. })))
}

#[test]
fn brewer_nash_chinese_wall_from_the_lineage() {
    for (name, engine) in engines() {
        let kest = runtime(engine);
        let access =
            Verified::builder("open_file").policy("kest/brewer_nash").action("read").build().unwrap();
        let file = |dataset: &str| {
            CallContext::new()
                .runtime(&kest)
                .resource_id(format!("{dataset}/q3.xlsx"))
                .resource_attr(attrs(json!({"dataset": dataset, "conflict_class": "banks"})))
        };
        let flow = Lineage::new().with_user("alice");
        let first = flow.enter(|| access.call(file("bank_a"), || Ok::<_, std::io::Error>(())));
        assert!(first.is_ok(), "{name}: {first:?}");
        let same = flow.enter(|| access.call(file("bank_a"), || Ok::<_, std::io::Error>(())));
        assert!(same.is_ok(), "{name}: the same dataset again: {same:?}");
        let wall = flow.enter(|| access.call(file("bank_b"), || Ok::<_, std::io::Error>(())));
        assert!(denied(&wall), "{name}: a competitor of bank_a in this flow: {wall:?}");
        // Another user's flow is not walled off.
        let bob = Lineage::new().with_user("bob");
        assert!(bob.enter(|| access.call(file("bank_b"), || Ok::<_, std::io::Error>(()))).is_ok(), "{name}");
    }
}

#[test]
fn four_eyes_transfer_needs_another_users_approval_in_the_lineage() {
    for (name, engine) in engines() {
        let kest = runtime(engine);
        let approve =
            Verified::builder("approve_transfer").policy("kest/financial").action("approve").build();
        // `approve` itself is not a financial action the model allows: it
        // is recorded by an open step instead.
        drop(approve);
        let approve =
            Verified::builder("approve_transfer").policy("kest/allow").action("approve").build().unwrap();
        let transfer =
            Verified::builder("transfer").policy("kest/financial").action("transfer").build().unwrap();
        let call = |user: &str, amount: u64| {
            CallContext::new()
                .runtime(&kest)
                .user(user)
                .resource_id("payment-17")
                .subject_attributes(attrs(json!({"limit": 1000})))
                .attribute("amount", amount)
                .attribute("risk_score", "low")
        };
        // Under the limit: alone.
        let flow = Lineage::new();
        assert!(
            flow.enter(|| transfer.call(call("alice", 500), || Ok::<_, std::io::Error>(()))).is_ok(),
            "{name}"
        );
        // Above the limit: denied without approval…
        let flow = Lineage::new();
        let r = flow.enter(|| transfer.call(call("alice", 5000), || Ok::<_, std::io::Error>(())));
        assert!(denied(&r), "{name}: {r:?}");
        // … and with alice approving her own transfer.
        let flow = Lineage::new();
        let own = flow.enter(|| {
            approve_with(&kest, &approve, "alice");
            transfer.call(call("alice", 5000), || Ok::<_, std::io::Error>(()))
        });
        assert!(denied(&own), "{name}: self-approval: {own:?}");
        // Allowed once bob approved the same payment earlier in the flow.
        let flow = Lineage::new();
        let ok = flow.enter(|| {
            approve_with(&kest, &approve, "bob");
            transfer.call(call("alice", 5000), || Ok::<_, std::io::Error>(()))
        });
        assert!(ok.is_ok(), "{name}: {ok:?}");
    }
}

fn approve_with(kest: &Arc<Kest>, approve: &Verified, user: &str) {
    // `kest/allow` is not in the model engines: the approval step runs on a
    // permissive engine of its own, and is recorded in the same flow.
    let open = Arc::new(kest::policy::MockPolicyEngine::allow_all());
    approve
        .call(CallContext::new().runtime(kest).engine(open).user(user).resource_id("payment-17"), || {
            Ok::<_, std::io::Error>(())
        })
        .unwrap();
}
