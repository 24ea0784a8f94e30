//! `#[kest::verified]` on sync and async functions, methods and generic
//! functions; resolvers that see the arguments; input/output hashing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, OnceLock};

use kest::identity::StaticIdentity;
use kest::policy::{Decision, MockPolicyEngine};
use kest::{Kest, KestError, Lineage};
use kest_core::{KeySet, Signer as _, Verifier};
use serde::Serialize;

const WORKLOAD: &str = "spiffe://test/macro";

fn rt() -> &'static Arc<Kest> {
    static RT: OnceLock<Arc<Kest>> = OnceLock::new();
    RT.get_or_init(|| {
        let engine = MockPolicyEngine::allow_all().with("never", Decision::Deny);
        Arc::new(
            Kest::builder()
                .identity(Arc::new(StaticIdentity::from_seed(WORKLOAD, [21u8; 32])))
                .engine(Arc::new(engine))
                .build()
                .unwrap(),
        )
    })
}

fn verify(flow: &Lineage) -> kest_core::Passport {
    let mut keys = KeySet::new();
    keys.insert(WORKLOAD, StaticIdentity::from_seed(WORKLOAD, [21u8; 32]).public_key().unwrap()).unwrap();
    Verifier::new(keys).semantic(true).verify_json(&flow.passport().to_json()).unwrap()
}

#[derive(Debug, thiserror::Error)]
enum AppError {
    #[error(transparent)]
    Kest(#[from] KestError),
    #[error("not found: {0}")]
    NotFound(String),
}

#[kest::verified(policy = "allow", source_type = "user_input", runtime = rt(), user = |request| request.user.clone())]
fn ingest(request: &Request) -> Result<String, AppError> {
    if request.text.is_empty() {
        return Err(AppError::NotFound("text".into()));
    }
    Ok(request.text.to_uppercase())
}

#[derive(Debug, Clone, Serialize)]
struct Request {
    user: String,
    text: String,
}

#[kest::verified(policy = ["allow", "also_allow"], added_taints = ["unverified"], source_type = "internet", runtime = rt())]
fn fetch(url: &str) -> usize {
    url.len()
}

#[kest::verified(policy = "never", runtime = rt())]
fn forbidden() -> u8 {
    unreachable!("a denied function never runs")
}

#[kest::verified(policy = "allow", classification = "sanitizer", removed_taints = ["unverified"], trust_override = 80, runtime = rt(), hash_inputs, hash_output)]
fn scrub(text: String, max: usize) -> Result<String, AppError> {
    Ok(text.chars().take(max).collect())
}

#[kest::verified(policy = "allow", runtime = rt(), operation = "generic_len")]
fn generic_len<T: AsRef<[u8]>>(value: T) -> usize {
    value.as_ref().len()
}

struct Agent {
    name: String,
}

impl Agent {
    #[kest::verified(policy = "allow", runtime = rt(), agent = self.name.clone(), task = "answer")]
    fn answer(&self, question: &str) -> String {
        format!("{}: {question}", self.name)
    }

    #[kest::verified(policy = "allow", runtime = rt(), agent = self.name.as_str())]
    async fn think(&self, depth: u32) -> Result<u32, AppError> {
        tokio::task::yield_now().await;
        Ok(depth * 2)
    }
}

#[kest::verified(policy = "allow", runtime = rt())]
async fn fetch_async(n: u32) -> u32 {
    tokio::task::yield_now().await;
    n + 1
}

#[test]
fn sync_functions_methods_and_generics_record_entries() {
    let flow = Lineage::new();
    flow.enter(|| {
        let req = Request { user: "alice".into(), text: "hi".into() };
        assert_eq!(ingest(&req).unwrap(), "HI");
        assert_eq!(fetch("https://example.org").unwrap(), 19);
        assert_eq!(scrub("abcdef".into(), 3).unwrap(), "abc");
        assert_eq!(generic_len(vec![1u8, 2, 3]).unwrap(), 3);
        assert_eq!(generic_len("four").unwrap(), 4);
        let agent = Agent { name: "planner".into() };
        assert_eq!(agent.answer("why").unwrap(), "planner: why");
    });
    let p = verify(&flow);
    let ops: Vec<&str> = p.entries().iter().map(|e| e.payload().operation.as_str()).collect();
    assert_eq!(ops, ["ingest", "fetch", "scrub", "generic_len", "generic_len", "answer"]);
    let e = |i: usize| p.entries()[i].payload();
    assert!(e(0).label("kest.identity").unwrap().contains("alice"), "resolver saw the argument");
    assert_eq!(e(1).taints, ["unverified"]);
    assert_eq!(e(1).trust_score, 4, "40 × 10 / 100");
    assert_eq!(e(1).policy_context.function_policies, ["allow", "also_allow"]);
    assert_eq!(e(2).trust_score, 80);
    assert!(e(2).taints.is_empty());
    assert_eq!(e(2).input_hash, kest::hook::hash_json(&(&"abcdef".to_string(), &3usize), "inputs").unwrap());
    assert_eq!(e(2).content_hash, kest::hook::hash_json(&"abc", "output").unwrap());
    assert!(e(5).label("kest.identity").unwrap().contains("planner"));
    assert!(e(5).label("kest.identity").unwrap().contains("answer"));
}

#[test]
fn denied_and_failing_functions() {
    let flow = Lineage::new();
    flow.enter(|| {
        match forbidden() {
            Err(KestError::Denied { policy, .. }) => assert_eq!(policy, "never"),
            other => panic!("expected a denial, got {other:?}"),
        }
        let empty = Request { user: "bob".into(), text: String::new() };
        assert!(matches!(ingest(&empty), Err(AppError::NotFound(_))));
    });
    let p = verify(&flow);
    assert_eq!(p.len(), 1, "the denial records nothing; the failure is recorded");
    assert!(p.entries()[0].payload().added_taints.contains(&"failed_execution".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_functions_keep_their_flow_across_awaits() {
    let flow = Lineage::new();
    let agent = Agent { name: "async-agent".into() };
    let out = flow
        .scope(async {
            let a = fetch_async(1).await.unwrap();
            let b = agent.think(a).await.unwrap();
            let c = fetch_async(b).await.unwrap();
            (a, b, c)
        })
        .await;
    assert_eq!(out, (2, 4, 5));
    let p = verify(&flow);
    assert_eq!(p.len(), 3);
    assert_eq!(p.roots().count(), 1, "one chain across awaits");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_tokio_tasks_build_independent_chains() {
    let mut handles = Vec::new();
    for t in 0..16u32 {
        handles.push(tokio::spawn(async move {
            let flow = Lineage::new().with_user(format!("u{t}"));
            flow.scope(async {
                for i in 0..10 {
                    fetch_async(t * 100 + i).await.unwrap();
                }
            })
            .await;
            flow
        }));
    }
    for h in handles {
        let flow = h.await.unwrap();
        let p = verify(&flow);
        assert_eq!(p.len(), 10);
        assert_eq!(p.roots().count(), 1);
        let user = flow.identity().user.unwrap();
        assert!(p.entries().iter().all(|e| e.payload().label("kest.identity").unwrap().contains(&user)));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawn_forks_and_join_fans_in() {
    let flow = Lineage::new();
    flow.scope(async {
        fetch_async(0).await.unwrap();
        let a = kest::lineage::spawn(async { fetch_async(1).await.unwrap() });
        let b = kest::lineage::spawn(async { fetch_async(2).await.unwrap() });
        let (a, b) = (a.await.unwrap(), b.await.unwrap());
        assert_eq!((a.value, b.value), (2, 3));
        assert!(kest::lineage::join([&a.lineage, &b.lineage]));
        fetch_async(9).await.unwrap();
    })
    .await;
    let p = verify(&flow);
    assert_eq!(p.len(), 4);
    assert_eq!(p.entries()[3].parents().len(), 2);
}

#[test]
fn compile_time_argument_checks() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
