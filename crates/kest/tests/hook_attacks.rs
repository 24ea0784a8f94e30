//! The hook holes of the security review (issue: close the lineage holes),
//! one named test each: shared decisions between same-named engines, a
//! plan emptied by deviations, a bare-name deviation, cancelled futures,
//! a signer failing after the operation ran, an unsignable failure entry.
//! Each of these passed (i.e. the hole was open) before the fix.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use kest::hook::{CANCELLED, FAILED_EXECUTION};
use kest::identity::{IdentityProvider, StaticIdentity};
use kest::policy::{BoxFuture, Decision, MockPolicyEngine, PolicyEngine, PolicyError, PolicyInput, Tier};
use kest::runtime::DeviationRule;
use kest::{CallContext, HookError, Kest, KestError, Lineage, Verified};
use kest_core::{KeySet, PublicKey, SignError, Signer, Verifier};

const WORKLOAD: &str = "spiffe://test/attacks";

fn identity() -> Arc<StaticIdentity> {
    Arc::new(StaticIdentity::from_seed(WORKLOAD, [21u8; 32]))
}

fn verify(flow: &Lineage) -> kest_core::Passport {
    let mut keys = KeySet::new();
    keys.insert(WORKLOAD, identity().public_key().unwrap()).unwrap();
    Verifier::new(keys).semantic(true).verify_json(&flow.passport().to_json()).expect("passport verifies")
}

fn runtime_with(engine: Arc<dyn PolicyEngine>) -> Arc<Kest> {
    Arc::new(Kest::builder().identity(identity()).engine(engine).build().unwrap())
}

fn run_counted(
    hook: &Verified,
    call: CallContext,
    ran: &AtomicUsize,
) -> Result<u32, HookError<std::io::Error>> {
    hook.call(call, || {
        ran.fetch_add(1, Ordering::SeqCst);
        Ok(7)
    })
}

#[test]
fn two_same_named_engines_never_share_decisions() {
    // Both report the name "mock"; the cache used to key by that name.
    let allow: Arc<dyn PolicyEngine> = Arc::new(MockPolicyEngine::allow_all());
    let deny: Arc<dyn PolicyEngine> = Arc::new(MockPolicyEngine::deny_all());
    assert_eq!(allow.name(), deny.name());
    let kest = runtime_with(allow);
    let hook = Verified::builder("op").policy("p").build().unwrap();
    let ran = AtomicUsize::new(0);
    run_counted(&hook, CallContext::new().runtime(&kest), &ran).unwrap();
    assert!(!kest.cache().is_empty(), "the allow was cached");
    let r = run_counted(&hook, CallContext::new().runtime(&kest).engine(deny), &ran);
    assert!(matches!(r, Err(HookError::Kest(KestError::Denied { .. }))), "{r:?}");
    assert_eq!(ran.load(Ordering::SeqCst), 1, "the denied call never ran");
}

/// Denies whenever any deviation is active: a decision that depends on the
/// plan, so the plan must be part of the cache key.
#[derive(Debug)]
struct DenyWhenDeviated;

impl PolicyEngine for DenyWhenDeviated {
    fn name(&self) -> &str {
        "deny-when-deviated"
    }
    fn evaluate(&self, _policy: &str, input: &PolicyInput) -> Result<Decision, PolicyError> {
        Ok(Decision::from_bool(input.context().environment.active_deviations.is_empty()))
    }
    fn evaluate_async<'a>(
        &'a self,
        policy: &'a str,
        input: &'a PolicyInput,
    ) -> BoxFuture<'a, Result<Decision, PolicyError>> {
        Box::pin(async move { self.evaluate(policy, input) })
    }
}

#[test]
fn active_deviations_and_policy_names_are_in_the_cache_key() {
    let deviation = DeviationRule {
        scope: "billing::send".into(),
        policy: "skip_me".into(),
        tier: Tier::Function,
        reason: None,
        approver: Some("ciso".into()),
    };
    let kest = Arc::new(
        Kest::builder()
            .identity(identity())
            .engine(Arc::new(DenyWhenDeviated))
            .deviation(deviation)
            .build()
            .unwrap(),
    );
    let ran = AtomicUsize::new(0);
    // Same operation name, same context, no deviation: allowed and cached.
    let plain =
        Verified::builder("send").scope_name("other::send").policies(["p", "skip_me"]).build().unwrap();
    run_counted(&plain, CallContext::new().runtime(&kest), &ran).unwrap();
    // With a deviation active the plan differs: the cached allow must not apply.
    let deviated =
        Verified::builder("send").scope_name("billing::send").policies(["p", "skip_me"]).build().unwrap();
    let r = run_counted(&deviated, CallContext::new().runtime(&kest), &ran);
    assert!(matches!(r, Err(HookError::Kest(KestError::Denied { .. }))), "{r:?}");
    assert_eq!(ran.load(Ordering::SeqCst), 1);
}

fn deviation(scope: &str, policy: &str, tier: Tier) -> DeviationRule {
    DeviationRule {
        scope: scope.into(),
        policy: policy.into(),
        tier,
        reason: Some("r".into()),
        approver: None,
    }
}

#[test]
fn deviations_that_empty_the_plan_refuse_the_call() {
    let build = |allow_all_deviated: bool| {
        Arc::new(
            Kest::builder()
                .identity(identity())
                .engine(Arc::new(MockPolicyEngine::deny_all()))
                .enterprise_policies(["ent"])
                .deviation(deviation("export", "ent", Tier::Enterprise))
                .deviation(deviation("export", "fun", Tier::Function))
                .allow_fully_deviated(allow_all_deviated)
                .build()
                .unwrap(),
        )
    };
    let hook = Verified::builder("export").policy("fun").build().unwrap();
    let ran = AtomicUsize::new(0);
    let r = run_counted(&hook, CallContext::new().runtime(&build(false)), &ran);
    let Err(HookError::Kest(e @ KestError::NoPolicyEvaluated { .. })) = r else { panic!("{r:?}") };
    assert_eq!(e.kind(), "no_policy_evaluated");
    assert_eq!(ran.load(Ordering::SeqCst), 0, "zero checks never means allowed");

    // Explicitly allowed: it runs, and the entry records every deviation.
    let flow = Lineage::new();
    flow.enter(|| run_counted(&hook, CallContext::new().runtime(&build(true)), &ran)).unwrap();
    let p = verify(&flow);
    assert_eq!(p.entries()[0].payload().policy_context.deviations.len(), 2);
}

#[test]
fn a_bare_name_deviation_does_not_cover_a_qualified_function() {
    let kest = |scope: &str| {
        Arc::new(
            Kest::builder()
                .identity(identity())
                .engine(Arc::new(MockPolicyEngine::allow_all().with("ent", Decision::Deny)))
                .enterprise_policies(["ent"])
                .deviation(deviation(scope, "ent", Tier::Enterprise))
                .build()
                .unwrap(),
        )
    };
    // `#[kest::verified]` gives the qualified scope `module::path::fn`.
    let hook = Verified::builder("send").scope_name("billing::mail::send").policy("fun").build().unwrap();
    let ran = AtomicUsize::new(0);
    let r = run_counted(&hook, CallContext::new().runtime(&kest("send")), &ran);
    assert!(matches!(r, Err(HookError::Kest(KestError::Denied { .. }))), "bare `send` covers nothing: {r:?}");
    assert_eq!(ran.load(Ordering::SeqCst), 0);
    run_counted(&hook, CallContext::new().runtime(&kest("billing::mail::send")), &ran).unwrap();
    assert_eq!(ran.load(Ordering::SeqCst), 1);
}

/// A signer that can be made to fail after the operation started (an OIDC
/// token expiring during the call), while `ready()` said yes.
#[derive(Debug)]
struct ExpiringIdentity {
    inner: StaticIdentity,
    expired: AtomicBool,
    check_ready: bool,
}

impl Signer for ExpiringIdentity {
    fn principal(&self) -> &str {
        self.inner.principal()
    }
    fn algorithm(&self) -> &'static str {
        self.inner.algorithm()
    }
    fn sign(&self, input: &[u8]) -> Result<Vec<u8>, SignError> {
        if self.expired.load(Ordering::SeqCst) {
            return Err(SignError("the token expired".into()));
        }
        self.inner.sign(input)
    }
    fn public_key(&self) -> Option<PublicKey> {
        self.inner.public_key()
    }
}

impl IdentityProvider for ExpiringIdentity {
    fn kind(&self) -> &'static str {
        "expiring"
    }
    fn ready(&self) -> Result<(), SignError> {
        if self.check_ready && self.expired.load(Ordering::SeqCst) {
            return Err(SignError("the token expired".into()));
        }
        Ok(())
    }
}

fn expiring(check_ready: bool) -> Arc<ExpiringIdentity> {
    Arc::new(ExpiringIdentity {
        inner: StaticIdentity::from_seed(WORKLOAD, [21u8; 32]),
        expired: AtomicBool::new(false),
        check_ready,
    })
}

#[test]
fn a_signer_expiring_mid_call_withholds_the_output() {
    let id = expiring(false);
    let kest = Arc::new(
        Kest::builder().identity(id.clone()).engine(Arc::new(MockPolicyEngine::allow_all())).build().unwrap(),
    );
    let hook = Verified::builder("transfer").policy("p").build().unwrap();
    let flow = Lineage::new();
    let r = flow.enter(|| {
        hook.call(CallContext::new().runtime(&kest), || {
            id.expired.store(true, Ordering::SeqCst);
            Ok::<_, std::io::Error>("the money moved")
        })
    });
    let Err(HookError::Kest(e @ KestError::Unrecorded { .. })) = r else { panic!("output returned: {r:?}") };
    assert_eq!(e.kind(), "unrecorded");
    assert!(flow.passport().is_empty());
}

#[test]
fn an_identity_that_cannot_sign_now_fails_before_the_operation_runs() {
    let id = expiring(true);
    id.expired.store(true, Ordering::SeqCst);
    let kest = Arc::new(
        Kest::builder().identity(id.clone()).engine(Arc::new(MockPolicyEngine::allow_all())).build().unwrap(),
    );
    let ran = AtomicUsize::new(0);
    let r = run_counted(
        &Verified::builder("op").policy("p").build().unwrap(),
        CallContext::new().runtime(&kest),
        &ran,
    );
    assert!(matches!(r, Err(HookError::Kest(KestError::NotReady { .. }))), "{r:?}");
    assert_eq!(ran.load(Ordering::SeqCst), 0);
}

#[test]
fn an_unsignable_failure_entry_is_reported_as_unrecorded() {
    let id = expiring(false);
    let kest = Arc::new(
        Kest::builder().identity(id.clone()).engine(Arc::new(MockPolicyEngine::allow_all())).build().unwrap(),
    );
    let hook = Verified::builder("op").policy("p").build().unwrap();
    let r: Result<(), HookError<std::io::Error>> = hook.call(CallContext::new().runtime(&kest), || {
        id.expired.store(true, Ordering::SeqCst);
        Err(std::io::Error::other("disk full"))
    });
    let Err(HookError::Unrecorded { error, source }) = r else { panic!("{r:?}") };
    assert_eq!(error.to_string(), "disk full", "the operation's error is kept");
    assert_eq!(source.kind(), "unrecorded");
}

#[test]
fn output_that_cannot_be_hashed_is_recorded_as_failed_and_withheld() {
    struct Unserializable;
    impl serde::Serialize for Unserializable {
        fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(serde::ser::Error::custom("no"))
        }
    }
    let kest = runtime_with(Arc::new(MockPolicyEngine::allow_all()));
    let hook = Verified::builder("op").policy("p").hash_output(true).build().unwrap();
    let flow = Lineage::new();
    let r = flow.enter(|| {
        hook.call_hashed(CallContext::new().runtime(&kest), || Ok::<_, std::io::Error>(Unserializable))
    });
    assert!(matches!(r, Err(HookError::Kest(KestError::Hash { .. }))));
    let p = verify(&flow);
    assert_eq!(p.len(), 1, "it ran, so it is recorded");
    assert!(p.entries()[0].payload().taints.contains(&FAILED_EXECUTION.to_string()));
}

#[tokio::test]
async fn a_cancelled_future_records_a_cancelled_failure() {
    let kest = runtime_with(Arc::new(MockPolicyEngine::allow_all()));
    let hook = Verified::builder("long_job").policy("p").build().unwrap();
    let flow = Lineage::new();
    let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
    let call = flow.scope(hook.call_async(CallContext::new().runtime(&kest), async move {
        let _ = started_tx.send(());
        std::future::pending::<Result<(), std::io::Error>>().await
    }));
    tokio::select! {
        _ = call => panic!("a pending future cannot finish"),
        _ = started_rx => {} // started: dropping `call` now cancels it
    }
    let p = verify(&flow);
    assert_eq!(p.len(), 1, "the cancelled call left its entry");
    let entry = p.entries()[0].payload();
    assert!(entry.taints.contains(&CANCELLED.to_string()), "{:?}", entry.taints);
    assert!(entry.taints.contains(&FAILED_EXECUTION.to_string()));
    assert_eq!(entry.trust_score, 0);
}

#[tokio::test]
async fn a_call_cancelled_before_authorization_finished_records_nothing() {
    let kest = runtime_with(Arc::new(MockPolicyEngine::allow_all()));
    let hook = Verified::builder("job").policy("p").build().unwrap();
    let flow = Lineage::new();
    let call =
        flow.scope(hook.call_async(CallContext::new().runtime(&kest), async { Ok::<_, std::io::Error>(()) }));
    drop(call); // never polled: nothing ran
    assert!(flow.passport().is_empty());
}
