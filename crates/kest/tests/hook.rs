//! The verification hook end to end: SPEC §13.3 test cases (TC-…), tiers,
//! deviations, failures, async, concurrency and the decision cache.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use kest::hook::FAILED_EXECUTION;
use kest::identity::StaticIdentity;
use kest::policy::{Decision, MockPolicyEngine, PolicyError, Tier};
use kest::runtime::DeviationRule;
use kest::{CallContext, HookError, Kest, KestError, Lineage, Verified};
use kest_core::{KeySet, Signer as _, Verifier};

const WORKLOAD: &str = "spiffe://test/agent";

fn identity() -> Arc<StaticIdentity> {
    Arc::new(StaticIdentity::from_seed(WORKLOAD, [11u8; 32]))
}

fn keys() -> KeySet {
    let mut keys = KeySet::new();
    keys.insert(WORKLOAD, identity().public_key().unwrap()).unwrap();
    keys
}

fn runtime(engine: MockPolicyEngine) -> (Arc<Kest>, Arc<MockPolicyEngine>) {
    let engine = Arc::new(engine);
    let kest = Kest::builder().identity(identity()).engine(engine.clone()).build().unwrap();
    (Arc::new(kest), engine)
}

fn hook(op: &str) -> kest::hook::VerifiedBuilder {
    Verified::builder(op).policy("allow")
}

fn ok_call(kest: &Arc<Kest>, h: &Verified) -> Result<u32, HookError<std::io::Error>> {
    h.call(CallContext::new().runtime(kest), || Ok(1))
}

fn verify(flow: &Lineage) -> kest_core::Passport {
    Verifier::new(keys()).semantic(true).verify_json(&flow.passport().to_json()).expect("passport verifies")
}

#[test]
fn tc01_root_entry_verifies() {
    let (kest, _) = runtime(MockPolicyEngine::allow_all());
    let flow = Lineage::new();
    flow.enter(|| ok_call(&kest, &hook("root").source_type("system").build().unwrap())).unwrap();
    let p = verify(&flow);
    assert_eq!(p.len(), 1);
    assert_eq!(p.entries()[0].payload().parent_ids, vec!["0".to_string()]);
    assert_eq!(p.entries()[0].payload().trust_score, 100);
}

#[test]
fn tc02_tc03_tampering_breaks_the_chain() {
    let (kest, _) = runtime(MockPolicyEngine::allow_all());
    let flow = Lineage::new();
    flow.enter(|| {
        for op in ["a", "b", "c"] {
            ok_call(&kest, &hook(op).build().unwrap()).unwrap();
        }
    });
    let json = flow.passport().to_json();
    let mut entries: Vec<String> = serde_json::from_str(&json).unwrap();
    // TC-02: edit the 2nd payload after signing.
    let parts: Vec<&str> = entries[1].split('.').collect();
    let mut payload: serde_json::Value =
        serde_json::from_slice(&kest_core::encoding::b64url_decode(parts[1]).unwrap()).unwrap();
    payload["operation"] = "forged".into();
    let forged = kest_core::encoding::b64url_encode(&kest_core::json::canonicalize(&payload).unwrap());
    let tampered = [parts[0], &forged, parts[2]].join(".");
    let mut t2 = entries.clone();
    t2[1] = tampered;
    assert!(Verifier::new(keys()).verify_json(&serde_json::to_string(&t2).unwrap()).is_err());
    // TC-03: change the 1st entry's signature.
    let last = entries[0].pop().unwrap();
    entries[0].push(if last == 'A' { 'Q' } else { 'A' });
    let err = Verifier::new(keys()).verify_json(&serde_json::to_string(&entries).unwrap()).unwrap_err();
    assert_eq!(err.index(), Some(0));
}

#[test]
fn tc04_weakest_link_floor() {
    let (kest, _) = runtime(MockPolicyEngine::allow_all());
    let flow = Lineage::new();
    flow.enter(|| {
        ok_call(&kest, &hook("fetch").source_type("internet").build().unwrap()).unwrap();
        ok_call(&kest, &hook("process").source_type("internal").build().unwrap()).unwrap();
        ok_call(&kest, &hook("rag").source_type("verified_rag").build().unwrap()).unwrap();
    });
    let p = verify(&flow);
    let scores: Vec<u8> = p.entries().iter().map(|e| e.payload().trust_score).collect();
    assert_eq!(scores, vec![10, 10, 9], "10*100/100 = 10, 10*90/100 = 9");
}

#[test]
fn tc05_trust_override_bypasses_the_evaluator() {
    let (kest, _) = runtime(MockPolicyEngine::allow_all());
    let flow = Lineage::new();
    flow.enter(|| {
        ok_call(&kest, &hook("fetch").source_type("internet").build().unwrap()).unwrap();
        ok_call(&kest, &hook("sanitize").trust_override(100).build().unwrap()).unwrap();
    });
    let p = verify(&flow);
    assert_eq!(p.entries()[1].payload().trust_score, 100);
    assert_eq!(p.entries()[1].payload().label("kest.trust_override"), Some("100"));
    assert!(Verified::builder("x").policy("p").trust_override(101).build().is_err());
}

#[test]
fn tc06_taint_accumulation() {
    let (kest, _) = runtime(MockPolicyEngine::allow_all());
    let flow = Lineage::new();
    flow.enter(|| {
        ok_call(&kest, &hook("load").added_taint("b").added_taint("a").build().unwrap()).unwrap();
        ok_call(
            &kest,
            &hook("clean")
                .added_taint("c")
                .removed_taint("b")
                .classification(kest_core::Classification::Sanitizer)
                .build()
                .unwrap(),
        )
        .unwrap();
    });
    let p = verify(&flow);
    assert_eq!(p.entries()[0].payload().taints, vec!["a", "b"]);
    assert_eq!(p.entries()[1].payload().taints, vec!["a", "c"]);
}

#[test]
fn tc07_denial_halts_execution() {
    let (kest, engine) = runtime(MockPolicyEngine::deny_all());
    let ran = AtomicUsize::new(0);
    let flow = Lineage::new();
    let r = flow.enter(|| {
        hook("guarded").build().unwrap().call(CallContext::new().runtime(&kest), || {
            ran.fetch_add(1, Ordering::SeqCst);
            Ok::<_, std::io::Error>(())
        })
    });
    assert_eq!(ran.load(Ordering::SeqCst), 0, "the operation never ran");
    match r {
        Err(HookError::Kest(KestError::Denied { policy, tier, .. })) => {
            assert_eq!(policy, "allow");
            assert_eq!(tier, Tier::Function);
        }
        other => panic!("expected a denial, got {other:?}"),
    }
    assert!(flow.passport().is_empty(), "a denied call records nothing");
    assert_eq!(engine.calls().len(), 1);
}

#[test]
fn tc08_policies_are_anded() {
    let (kest, _) = runtime(
        MockPolicyEngine::strict().with("allow_all", Decision::Allow).with("deny_all", Decision::Deny),
    );
    let ran = AtomicUsize::new(0);
    let h = Verified::builder("op").policies(["allow_all", "deny_all"]).build().unwrap();
    let r = h.call(CallContext::new().runtime(&kest), || {
        ran.fetch_add(1, Ordering::SeqCst);
        Ok::<_, std::io::Error>(())
    });
    assert_eq!(ran.load(Ordering::SeqCst), 0);
    let err = r.unwrap_err();
    let HookError::Kest(k) = err else { panic!("expected a Kest error") };
    assert_eq!(k.policy(), Some(("deny_all", Tier::Function)));
    assert!(k.to_string().contains("deny_all"));
}

#[test]
fn tc10_canonicalization_is_deterministic() {
    let v: serde_json::Value = serde_json::from_str(r#"{"z":3,"a":1,"m":2}"#).unwrap();
    assert_eq!(kest_core::json::canonicalize(&v).unwrap(), br#"{"a":1,"m":2,"z":3}"#);
}

#[test]
fn tc12_context_accessors_fall_back_to_baggage() {
    let (kest, engine) = runtime(MockPolicyEngine::allow_all());
    let flow = Lineage::new().with_user("alice");
    let seen = flow.enter(|| {
        hook("who")
            .build()
            .unwrap()
            .call(CallContext::new().runtime(&kest), || Ok::<_, std::io::Error>(kest::current_user()))
    });
    assert_eq!(seen.unwrap(), Some("alice".to_string()));
    assert_eq!(engine.calls()[0].1["subject"]["user"], "alice");
    assert_eq!(engine.calls()[0].1["user"], "alice");
    let p = verify(&flow);
    assert!(p.entries()[0].payload().label("kest.identity").unwrap().contains("alice"));
}

#[test]
fn no_identity_or_engine_is_an_error_not_a_default() {
    kest::runtime::reset_global();
    let kest = Arc::new(Kest::builder().engine(Arc::new(MockPolicyEngine::allow_all())).build().unwrap());
    let r =
        hook("x").build().unwrap().call(CallContext::new().runtime(&kest), || Ok::<_, std::io::Error>(()));
    assert!(matches!(r, Err(HookError::Kest(KestError::NoIdentity))));
    assert_eq!(KestError::NoIdentity.to_string(), "no IdentityProvider configured");
    let kest = Arc::new(Kest::builder().identity(identity()).build().unwrap());
    let r =
        hook("x").build().unwrap().call(CallContext::new().runtime(&kest), || Ok::<_, std::io::Error>(()));
    assert!(matches!(r, Err(HookError::Kest(KestError::NoEngine))));
}

#[test]
fn empty_policy_list_is_a_build_error() {
    let err = Verified::builder("x").build().unwrap_err();
    assert!(err.to_string().contains("empty"), "{err}");
    assert!(Verified::builder("x").policy("").build().is_err());
    assert!(Verified::builder("x").policy("p").removed_taint("t").build().is_err());
}

fn tiered_runtime(engine: MockPolicyEngine, deviations: Vec<DeviationRule>) -> Arc<Kest> {
    let mut b = Kest::builder()
        .identity(identity())
        .engine(Arc::new(engine))
        .enterprise_policies(["ent"])
        .platform_policies(["plat"])
        .app_policies(["app"]);
    for d in deviations {
        b = b.deviation(d);
    }
    Arc::new(b.build().unwrap())
}

#[test]
fn every_tier_can_deny_and_none_runs_the_function() {
    for (denier, tier) in [
        ("ent", Tier::Enterprise),
        ("plat", Tier::Platform),
        ("app", Tier::Application),
        ("fun", Tier::Function),
    ] {
        let engine = MockPolicyEngine::allow_all().with(denier, Decision::Deny);
        let kest = tiered_runtime(engine, vec![]);
        let ran = AtomicUsize::new(0);
        let r = Verified::builder("op").policy("fun").build().unwrap().call(
            CallContext::new().runtime(&kest),
            || {
                ran.fetch_add(1, Ordering::SeqCst);
                Ok::<_, std::io::Error>(())
            },
        );
        assert_eq!(ran.load(Ordering::SeqCst), 0, "{tier}");
        let HookError::Kest(k) = r.unwrap_err() else { panic!() };
        assert_eq!(k.policy(), Some((denier, tier)));
    }
}

#[test]
fn tiers_are_evaluated_in_order_and_recorded() {
    let engine = Arc::new(MockPolicyEngine::allow_all());
    let kest = Arc::new(
        Kest::builder()
            .identity(identity())
            .engine(engine.clone())
            .enterprise_policies(["ent"])
            .platform_policies(["plat"])
            .app_policies(["app"])
            .build()
            .unwrap(),
    );
    let flow = Lineage::new();
    flow.enter(|| ok_call(&kest, &Verified::builder("op").policy("fun").build().unwrap())).unwrap();
    let order: Vec<String> = engine.calls().into_iter().map(|(p, _)| p).collect();
    assert_eq!(order, ["ent", "plat", "app", "fun"]);
    let tiers: Vec<String> = engine
        .calls()
        .iter()
        .map(|(_, c)| c["environment"]["policy_tier"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(tiers, ["enterprise", "platform", "application", "function"]);
    let p = verify(&flow);
    let pc = &p.entries()[0].payload().policy_context;
    assert_eq!(pc.enterprise_policies, ["ent"]);
    assert_eq!(pc.platform_policies, ["plat"]);
    assert_eq!(pc.app_policies, ["app"]);
    assert_eq!(pc.function_policies, ["fun"]);
}

#[test]
fn engine_errors_deny() {
    for error in [
        PolicyError::UnknownPolicy("fun".into()),
        PolicyError::Unavailable { engine: "opa".into(), message: "timeout".into() },
        PolicyError::Evaluation { policy: "fun".into(), message: "boom".into() },
    ] {
        let (kest, _) = runtime(MockPolicyEngine::allow_all().failing("fun", error));
        let ran = AtomicUsize::new(0);
        let r = Verified::builder("op").policy("fun").build().unwrap().call(
            CallContext::new().runtime(&kest),
            || {
                ran.fetch_add(1, Ordering::SeqCst);
                Ok::<_, std::io::Error>(())
            },
        );
        assert_eq!(ran.load(Ordering::SeqCst), 0);
        assert!(matches!(r, Err(HookError::Kest(KestError::PolicyFailed { .. }))));
    }
    // A strict engine that does not know the policy denies too.
    let (kest, _) = runtime(MockPolicyEngine::strict());
    assert!(ok_call(&kest, &hook("op").build().unwrap()).is_err());
}

#[test]
fn a_deviation_skips_exactly_one_policy_and_is_recorded() {
    let engine = MockPolicyEngine::allow_all().with("ent", Decision::Deny).with("plat", Decision::Deny);
    let deviation = DeviationRule {
        scope: "export".into(),
        policy: "ent".into(),
        tier: Tier::Enterprise,
        reason: Some("legal hold".into()),
        approver: Some("ciso".into()),
    };
    let kest = tiered_runtime(engine, vec![deviation.clone()]);
    // Skipping `ent` still leaves `plat`, which denies.
    let r = ok_call(&kest, &Verified::builder("export").policy("fun").build().unwrap());
    let HookError::Kest(k) = r.unwrap_err() else { panic!() };
    assert_eq!(k.policy(), Some(("plat", Tier::Platform)));

    let engine = MockPolicyEngine::allow_all().with("ent", Decision::Deny);
    let kest = tiered_runtime(engine, vec![deviation]);
    let flow = Lineage::new();
    flow.enter(|| ok_call(&kest, &Verified::builder("export").policy("fun").build().unwrap())).unwrap();
    let p = verify(&flow);
    let pc = &p.entries()[0].payload().policy_context;
    assert!(pc.enterprise_policies.is_empty());
    assert_eq!(pc.deviations.len(), 1);
    assert_eq!(pc.deviations[0].policy, "ent");
    assert_eq!(pc.deviations[0].approver.as_deref(), Some("ciso"));
    // Other operations are not covered.
    let r = ok_call(&kest, &Verified::builder("other").policy("fun").build().unwrap());
    assert!(r.is_err());
}

#[test]
fn failures_and_panics_are_recorded_then_returned() {
    let (kest, _) = runtime(MockPolicyEngine::allow_all());
    let flow = Lineage::new();
    let r = flow.enter(|| {
        hook("fails")
            .build()
            .unwrap()
            .call(CallContext::new().runtime(&kest), || Err::<(), _>(std::io::Error::other("disk full")))
    });
    match r {
        Err(HookError::Operation(e)) => assert_eq!(e.to_string(), "disk full"),
        other => panic!("expected the operation's error, got {other:?}"),
    }
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        flow.enter(|| {
            let _ = hook("panics")
                .build()
                .unwrap()
                .call(CallContext::new().runtime(&kest), || -> Result<(), std::io::Error> { panic!("bug") });
        })
    }));
    assert!(panicked.is_err(), "the panic is resumed");
    let p = verify(&flow);
    assert_eq!(p.len(), 2);
    for e in p.entries() {
        assert!(e.payload().added_taints.contains(&FAILED_EXECUTION.to_string()));
        assert_eq!(e.payload().trust_score, 0);
        assert_eq!(e.payload().label("kest.trust_override"), Some("0"));
    }
}

#[test]
fn decision_cache_isolates_users_agents_tasks_and_workloads() {
    let engine = Arc::new(MockPolicyEngine::allow_all());
    let kest = Arc::new(
        Kest::builder()
            .identity(identity())
            .engine(engine.clone())
            .cache_ttl(Duration::from_secs(60))
            .build()
            .unwrap(),
    );
    let h = hook("op").build().unwrap();
    let call = |c: CallContext| h.call(c.runtime(&kest), || Ok::<_, std::io::Error>(()));
    call(CallContext::new().user("alice")).unwrap();
    call(CallContext::new().user("alice")).unwrap();
    assert_eq!(engine.calls().len(), 1, "same identity tuple → cached");
    call(CallContext::new().user("bob")).unwrap();
    call(CallContext::new().user("alice").agent("a1")).unwrap();
    call(CallContext::new().user("alice").agent("a2")).unwrap();
    call(CallContext::new().user("alice").task("t1")).unwrap();
    call(CallContext::new().user("alice").task("t2")).unwrap();
    assert_eq!(engine.calls().len(), 6);
    let other = Arc::new(StaticIdentity::from_seed("spiffe://test/other", [12u8; 32]));
    call(CallContext::new().user("alice").identity(other)).unwrap();
    assert_eq!(engine.calls().len(), 7, "another workload");
    kest.invalidate();
    call(CallContext::new().user("alice")).unwrap();
    assert_eq!(engine.calls().len(), 8, "invalidate() forgets");

    let engine = Arc::new(MockPolicyEngine::allow_all());
    let kest = Arc::new(
        Kest::builder()
            .identity(identity())
            .engine(engine.clone())
            .cache_ttl(Duration::ZERO)
            .build()
            .unwrap(),
    );
    for _ in 0..3 {
        h.call(CallContext::new().runtime(&kest), || Ok::<_, std::io::Error>(())).unwrap();
    }
    assert_eq!(engine.calls().len(), 3, "TTL 0 disables the cache");
}

#[test]
fn cache_ttl_comes_from_the_environment_variable_format() {
    use kest::policy::cache::parse_ttl;
    assert_eq!(parse_ttl("0").unwrap(), Duration::ZERO);
    assert_eq!(parse_ttl("2.5").unwrap(), Duration::from_millis(2500));
    assert!(parse_ttl("-1").is_err());
    assert!(parse_ttl("soon").is_err());
}

#[test]
fn threads_build_their_own_chains_without_cross_talk() {
    let (kest, _) = runtime(MockPolicyEngine::allow_all());
    let handles: Vec<_> = (0..8)
        .map(|t| {
            let kest = kest.clone();
            std::thread::spawn(move || {
                let flow = Lineage::new().with_user(format!("user{t}"));
                flow.enter(|| {
                    for i in 0..25 {
                        ok_call(&kest, &hook(&format!("t{t}_{i}")).build().unwrap()).unwrap();
                    }
                });
                flow
            })
        })
        .collect();
    for (t, h) in handles.into_iter().enumerate() {
        let flow = h.join().unwrap();
        let p = verify(&flow);
        assert_eq!(p.len(), 25);
        assert_eq!(p.roots().count(), 1);
        for (i, e) in p.entries().iter().enumerate() {
            assert_eq!(e.payload().operation, format!("t{t}_{i}"));
            assert!(e.payload().label("kest.identity").unwrap().contains(&format!("user{t}")));
        }
    }
}

#[test]
fn fan_out_on_threads_and_fan_in_on_join() {
    let (kest, _) = runtime(MockPolicyEngine::allow_all());
    let flow = Lineage::new();
    flow.enter(|| {
        ok_call(&kest, &hook("plan").build().unwrap()).unwrap();
        let branches: Vec<_> = ["left", "right"]
            .into_iter()
            .map(|op| {
                let kest = kest.clone();
                kest::lineage::spawn_thread(move || ok_call(&kest, &hook(op).build().unwrap()).unwrap())
            })
            .collect();
        let done: Vec<_> = branches.into_iter().map(|b| b.join().unwrap()).collect();
        assert!(kest::lineage::join(done.iter().map(|b| &b.lineage)));
        ok_call(&kest, &hook("merge").build().unwrap()).unwrap();
    });
    let p = verify(&flow);
    assert_eq!(p.len(), 4);
    let root = p.entries()[0].hash();
    assert_eq!(p.children_of(&root).len(), 2, "fan-out");
    assert_eq!(p.entries()[3].parents().len(), 2, "fan-in");
    assert_eq!(p.tips().len(), 1);
}

#[test]
fn a_call_outside_any_flow_is_its_own_root_and_nested_calls_chain() {
    let (kest, _) = runtime(MockPolicyEngine::allow_all());
    let inner_parent = hook("outer").build().unwrap().call(CallContext::new().runtime(&kest), || {
        ok_call(&kest, &hook("inner").build().unwrap()).unwrap();
        Ok::<_, std::io::Error>(kest::current_passport().map(|p| p.len()))
    });
    assert_eq!(inner_parent.unwrap(), Some(1), "the inner call joined the outer call's flow");
}
