//! SPEC §12 policy library benchmarks: the overhead of one hooked call
//! decided by each formal model, in Rego and in Cedar, on a 20-entry
//! lineage (the model reads `lineage.ancestors`), with a warm and a cold
//! decision cache, next to one raw Ed25519 signature of the payload the
//! hook signs.
//!
//! Run with `cargo bench -p kest-benches --bench models -- --noplot`;
//! `scripts/bench-ratios --bench models` prints the ratios.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use ed25519_dalek::Signer as _;
use kest::policy::PolicyEngine;
use kest::policy::cedar::CedarEngine;
use kest::policy::library::{self, Model};
use kest::policy::rego::RegoEngine;
use kest::{CallContext, Kest, Lineage, Verified};
use kest_benches::hook::{flow_identity, identity};
use kest_benches::{signer, signing_input};
use kest_core::{EntryDraft, Passport, TrustRules};
use serde_json::{Map, Value, json};

/// Entries in the lineage every measured call continues.
const LINEAGE: usize = 20;

fn attrs(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

/// Action, subject attributes, resource attributes, call attributes.
type CallShape = (&'static str, Map<String, Value>, Map<String, Value>, Map<String, Value>);

/// The per-call values of a case.
type MakeCall = Box<dyn Fn(&Arc<Kest>) -> CallContext>;

/// A call each model allows.
fn call_for(model: Model) -> CallShape {
    match model {
        Model::BellLapadula => (
            "read",
            attrs(json!({"clearance": "secret", "categories": ["nato"]})),
            attrs(json!({"classification": "confidential", "categories": ["nato"]})),
            Map::new(),
        ),
        Model::Biba => ("read", attrs(json!({"integrity": 1})), attrs(json!({"integrity": 2})), Map::new()),
        Model::BrewerNash => {
            ("read", Map::new(), attrs(json!({"dataset": "bank_a", "conflict_class": "banks"})), Map::new())
        }
        Model::ClarkWilson => (
            "post",
            attrs(json!({"authorized_tps": ["bench_step"]})),
            attrs(json!({"cdi": "ledger"})),
            attrs(json!({"certified_cdis": ["ledger"], "separate_from": ["approve"]})),
        ),
        Model::GoguenMeseguer => ("read", Map::new(), attrs(json!({"domain": "research"})), Map::new()),
        Model::Financial => (
            "transfer",
            attrs(json!({"limit": 1000})),
            Map::new(),
            attrs(json!({"amount": 100, "risk_score": "low", "mfa_present": true})),
        ),
        Model::Security => {
            ("read", attrs(json!({"clearance": 3})), attrs(json!({"classification": 1})), Map::new())
        }
    }
}

/// Twenty internal steps of alice's, each recording an action and a
/// resource the history rules read.
fn lineage() -> Passport {
    let signer = signer();
    let mut p = Passport::new();
    for i in 0..LINEAGE {
        let mut d = EntryDraft::new(format!("step_{i}"));
        d.source_type = (i == 0).then(|| "internal".to_owned());
        d.labels.insert("kest.action".into(), "read".into());
        d.labels.insert("kest.resource".into(), format!("doc-{i}"));
        d.labels.insert(
            "kest.identity".into(),
            json!({"user": "alice", "agent": "research", "task": null}).to_string(),
        );
        d.labels.insert(
            "kest.resource_attr".into(),
            json!({"dataset": "bank_a", "conflict_class": "banks"}).to_string(),
        );
        p.record(&d, &signer, &TrustRules::default()).unwrap();
    }
    p
}

fn flow(base: &Passport) -> Lineage {
    Lineage::from_passport(base.clone()).with_identity(flow_identity())
}

struct Case {
    label: String,
    hook: Verified,
    call: MakeCall,
    warm: Arc<Kest>,
    cold: Arc<Kest>,
}

fn runtime(engine: Arc<dyn PolicyEngine>, ttl: Duration) -> Arc<Kest> {
    Arc::new(Kest::builder().identity(identity()).engine(engine).cache_ttl(ttl).build().unwrap())
}

fn cases() -> Vec<Case> {
    let rego: Arc<dyn PolicyEngine> = Arc::new(RegoEngine::new(library::rego_policies()).unwrap());
    let cedar: Arc<dyn PolicyEngine> = Arc::new(CedarEngine::new(library::cedar_policies()).unwrap());
    let mut out = Vec::new();
    for model in Model::ALL {
        for (engine_name, engine) in [("rego", &rego), ("cedar", &cedar)] {
            let (action, subject, object, attributes) = call_for(model);
            let hook =
                Verified::builder("bench_step").policy(model.policy_name()).action(action).build().unwrap();
            let call = move |kest: &Arc<Kest>| {
                let mut c = CallContext::new()
                    .runtime(kest)
                    .resource_id("obj-1")
                    .resource_attr(object.clone())
                    .subject_attributes(subject.clone());
                for (k, v) in &attributes {
                    c = c.attribute(k.clone(), v.clone());
                }
                c
            };
            out.push(Case {
                label: format!("{}_{engine_name}", model.name()),
                hook,
                call: Box::new(call),
                warm: runtime(Arc::clone(engine), Duration::from_secs(3600)),
                cold: runtime(Arc::clone(engine), Duration::ZERO),
            });
        }
    }
    out
}

fn bench(c: &mut Criterion) {
    let base = lineage();
    let cases = cases();
    // Each case allows (checked once), and gives the signing input size.
    let mut message = Vec::new();
    for case in &cases {
        let f = flow(&base);
        f.enter(|| case.hook.call((case.call)(&case.warm), || Ok::<_, std::io::Error>(())))
            .unwrap_or_else(|e| panic!("{}: the model refused the bench call: {e}", case.label));
        message = signing_input(f.passport().entries().last().unwrap().jws()).as_bytes().to_vec();
    }
    let sk = signer().signing_key().clone();
    let mut g = c.benchmark_group("models");
    g.bench_function("raw_ed25519_sign", |b| b.iter(|| sk.sign(black_box(&message))));
    for (temperature, pick) in [("warm", true), ("cold", false)] {
        for case in &cases {
            let kest = if pick { &case.warm } else { &case.cold };
            g.bench_function(format!("{temperature}_{}", case.label), |b| {
                b.iter_batched(
                    || flow(&base),
                    |f| {
                        f.enter(|| case.hook.call((case.call)(kest), || Ok::<_, std::io::Error>(())))
                            .unwrap();
                        f
                    },
                    BatchSize::SmallInput,
                )
            });
        }
    }
    g.finish();
}

criterion_group! {
    name = models;
    config = Criterion::default().sample_size(20).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_millis(900));
    targets = bench
}
criterion_main!(models);
