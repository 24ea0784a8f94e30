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

// ---------------------------------------------------------------------------
// Early `return` in every form: the body keeps its own control flow.

#[kest::verified(policy = "allow", runtime = rt())]
fn early_sync(n: u32) -> u32 {
    if n == 0 {
        return 100;
    }
    n
}

#[kest::verified(policy = "allow", runtime = rt())]
fn early_sync_result(n: u32) -> Result<u32, AppError> {
    if n == 0 {
        return Ok(100);
    }
    if n == 1 {
        return Err(AppError::NotFound("one".into()));
    }
    Ok(n)
}

#[kest::verified(policy = "allow", runtime = rt())]
async fn early_async(n: u32) -> u32 {
    tokio::task::yield_now().await;
    if n == 0 {
        return 100;
    }
    n
}

#[kest::verified(policy = "allow", runtime = rt())]
async fn early_async_result(n: u32) -> Result<u32, AppError> {
    tokio::task::yield_now().await;
    if n == 0 {
        return Ok(100);
    }
    Ok(n)
}

#[kest::verified(policy = "allow", runtime = rt())]
fn early_generic<T: AsRef<str>>(value: T) -> usize {
    if value.as_ref().is_empty() {
        return 100;
    }
    value.as_ref().len()
}

#[kest::verified(policy = "allow", runtime = rt())]
async fn early_generic_async<T: AsRef<str> + Send>(value: T) -> Result<usize, AppError> {
    if value.as_ref().is_empty() {
        return Ok(100);
    }
    Ok(value.as_ref().len())
}

struct Counter {
    n: u32,
}

impl Counter {
    #[kest::verified(policy = "allow", runtime = rt())]
    fn peek(&self) -> u32 {
        if self.n == 0 {
            return 100;
        }
        self.n
    }

    #[kest::verified(policy = "allow", runtime = rt())]
    fn bump(&mut self) -> Result<u32, AppError> {
        self.n += 1;
        if self.n > 1 {
            return Ok(100);
        }
        Ok(self.n)
    }

    #[kest::verified(policy = "allow", runtime = rt())]
    fn into_n(self) -> u32 {
        if self.n == 0 {
            return 100;
        }
        self.n
    }

    #[kest::verified(policy = "allow", runtime = rt())]
    async fn peek_async(&self) -> u32 {
        tokio::task::yield_now().await;
        if self.n == 0 {
            return 100;
        }
        self.n
    }

    #[kest::verified(policy = "allow", runtime = rt())]
    async fn bump_async(&mut self) -> u32 {
        tokio::task::yield_now().await;
        self.n += 1;
        if self.n > 1 {
            return 100;
        }
        self.n
    }

    #[kest::verified(policy = "allow", runtime = rt())]
    async fn into_n_async(self) -> Result<u32, AppError> {
        tokio::task::yield_now().await;
        if self.n == 0 {
            return Ok(100);
        }
        Ok(self.n)
    }

    #[kest::verified(policy = "allow", runtime = rt())]
    fn scaled<T: Into<u32>>(&self, by: T) -> u32 {
        let by = by.into();
        if by == 0 {
            return 100;
        }
        self.n * by
    }
}

/// The passport of `flow` holds exactly `ops`, in order, each signed by the
/// workload, and none failed.
fn assert_recorded(flow: &Lineage, ops: &[&str]) {
    let p = verify(flow);
    let got: Vec<&str> = p.entries().iter().map(|e| e.payload().operation.as_str()).collect();
    assert_eq!(got, ops);
    for e in p.entries() {
        assert!(
            !e.payload().added_taints.iter().any(|t| t == "failed_execution"),
            "{}",
            e.payload().operation
        );
    }
}

#[test]
fn early_return_sync() {
    let flow = Lineage::new();
    flow.enter(|| {
        assert_eq!(early_sync(0).unwrap(), 100);
        assert_eq!(early_sync(7).unwrap(), 7);
        assert_eq!(early_sync_result(0).unwrap(), 100);
        assert_eq!(early_sync_result(7).unwrap(), 7);
        assert_eq!(early_generic("").unwrap(), 100);
        assert_eq!(early_generic(String::from("abc")).unwrap(), 3);
        let mut c = Counter { n: 0 };
        assert_eq!(c.peek().unwrap(), 100);
        assert_eq!(c.bump().unwrap(), 1);
        assert_eq!(c.bump().unwrap(), 100);
        assert_eq!(c.scaled(0u8).unwrap(), 100);
        assert_eq!(c.scaled(3u16).unwrap(), 6);
        assert_eq!(Counter { n: 0 }.into_n().unwrap(), 100);
        assert_eq!(c.into_n().unwrap(), 2);
    });
    assert_recorded(
        &flow,
        &[
            "early_sync",
            "early_sync",
            "early_sync_result",
            "early_sync_result",
            "early_generic",
            "early_generic",
            "peek",
            "bump",
            "bump",
            "scaled",
            "scaled",
            "into_n",
            "into_n",
        ],
    );
}

#[test]
fn early_return_of_an_error_is_recorded_as_failed() {
    let flow = Lineage::new();
    flow.enter(|| assert!(matches!(early_sync_result(1), Err(AppError::NotFound(_)))));
    let p = verify(&flow);
    assert_eq!(p.len(), 1);
    assert!(p.entries()[0].payload().added_taints.contains(&"failed_execution".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_return_async() {
    let flow = Lineage::new();
    flow.scope(async {
        assert_eq!(early_async(0).await.unwrap(), 100);
        assert_eq!(early_async(7).await.unwrap(), 7);
        assert_eq!(early_async_result(0).await.unwrap(), 100);
        assert_eq!(early_async_result(7).await.unwrap(), 7);
        assert_eq!(early_generic_async("").await.unwrap(), 100);
        assert_eq!(early_generic_async("ab").await.unwrap(), 2);
        let mut c = Counter { n: 0 };
        assert_eq!(c.peek_async().await.unwrap(), 100);
        assert_eq!(c.bump_async().await.unwrap(), 1);
        assert_eq!(c.bump_async().await.unwrap(), 100);
        assert_eq!(Counter { n: 0 }.into_n_async().await.unwrap(), 100);
        assert_eq!(c.into_n_async().await.unwrap(), 2);
    })
    .await;
    assert_recorded(
        &flow,
        &[
            "early_async",
            "early_async",
            "early_async_result",
            "early_async_result",
            "early_generic_async",
            "early_generic_async",
            "peek_async",
            "bump_async",
            "bump_async",
            "into_n_async",
            "into_n_async",
        ],
    );
}

// ---------------------------------------------------------------------------
// Trait-impl methods: the signature must already be `Result<T, E>` with
// `E: From<KestError>`; it is kept as it is.

trait Tool {
    fn run(&self, input: &str) -> Result<usize, AppError>;
    async fn run_async(&mut self, input: &str) -> Result<usize, AppError>;
}

struct Upper {
    calls: u32,
}

impl Tool for Upper {
    #[kest::verified(policy = "allow", runtime = rt(), agent = "upper")]
    fn run(&self, input: &str) -> Result<usize, AppError> {
        if input.is_empty() {
            return Ok(100);
        }
        Ok(input.len() + self.calls as usize)
    }

    #[kest::verified(policy = "allow", runtime = rt(), operation = "tool.run_async")]
    async fn run_async(&mut self, input: &str) -> Result<usize, AppError> {
        tokio::task::yield_now().await;
        self.calls += 1;
        if input.is_empty() {
            return Ok(100);
        }
        Ok(input.len())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trait_impl_methods_sync_and_async() {
    let flow = Lineage::new();
    let mut tool = Upper { calls: 0 };
    flow.scope(async {
        assert_eq!(tool.run("").unwrap(), 100);
        assert_eq!(tool.run("abc").unwrap(), 3);
        assert_eq!(tool.run_async("").await.unwrap(), 100);
        assert_eq!(tool.run_async("ab").await.unwrap(), 2);
        assert_eq!(tool.run("abc").unwrap(), 5);
    })
    .await;
    assert_recorded(&flow, &["run", "run", "tool.run_async", "tool.run_async", "run"]);
}

trait Named {
    type Error: From<KestError>;
    fn name(&self) -> Result<&str, Self::Error>;
}

impl Named for Upper {
    type Error = AppError;
    #[kest::verified(policy = "allow", runtime = rt())]
    fn name(&self) -> Result<&str, Self::Error> {
        Ok("upper")
    }
}

impl Upper {
    #[kest::verified(policy = "allow", runtime = rt())]
    fn label(&self) -> &str {
        if self.calls == 0 {
            return "none";
        }
        "some"
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trait_async_future_is_send() {
    let h = tokio::spawn(async {
        let mut tool = Upper { calls: 0 };
        tool.run_async("abc").await.unwrap() + tool.name().unwrap().len() + tool.label().unwrap().len()
    });
    assert_eq!(h.await.unwrap(), 12);
}

// ---------------------------------------------------------------------------
// Deviation scope names. The generated `Verified` lives in a static inside
// the function; these bodies read it through the expansion's local
// `__kest_hook` (an internal name, read here only to test the expansion).

mod scoped {
    use super::rt;

    #[kest::verified(policy = "allow", runtime = rt())]
    pub fn lookup() -> String {
        __kest_hook.scope_name().to_owned()
    }

    #[kest::verified(policy = "allow", runtime = rt(), operation = "billing.lookup")]
    pub fn lookup_named() -> String {
        __kest_hook.scope_name().to_owned()
    }

    pub struct Store;

    impl Store {
        #[kest::verified(policy = "allow", runtime = rt())]
        pub async fn lookup_async(&self) -> String {
            __kest_hook.scope_name().to_owned()
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scope_name_is_the_qualified_path_or_the_explicit_operation() {
    let flow = Lineage::new();
    let names = flow
        .scope(async {
            (
                scoped::lookup().unwrap(),
                scoped::lookup_named().unwrap(),
                scoped::Store.lookup_async().await.unwrap(),
            )
        })
        .await;
    assert_eq!(names.0, "macros::scoped::lookup");
    assert_eq!(names.1, "billing.lookup");
    assert_eq!(names.2, "macros::scoped::lookup_async");
    assert_recorded(&flow, &["lookup", "billing.lookup", "lookup_async"]);
}

#[test]
fn scope_name_defaults_to_the_operation() {
    let hook = kest::hook::Verified::builder("op").policy("allow").build().unwrap();
    assert_eq!(hook.scope_name(), "op");
    let hook = kest::hook::Verified::builder("op").policy("allow").scope_name("a::b::op").build().unwrap();
    assert_eq!((hook.operation(), hook.scope_name()), ("op", "a::b::op"));
}
