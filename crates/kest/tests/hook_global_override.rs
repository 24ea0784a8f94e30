//! No self-exemption (SPEC §5): with a process configuration installed, a
//! per-call runtime or engine cannot replace the upper tiers or bring its
//! own deviations. One test in its own binary: it installs the global
//! runtime.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use kest::identity::StaticIdentity;
use kest::policy::{Decision, MockPolicyEngine, Tier};
use kest::runtime::DeviationRule;
use kest::{CallContext, HookError, Kest, KestError, Verified, configure};

#[test]
fn a_per_call_runtime_or_engine_cannot_replace_tiers_or_deviations() {
    let identity = Arc::new(StaticIdentity::from_seed("spiffe://test/global", [5u8; 32]));
    let enterprise_engine = Arc::new(MockPolicyEngine::allow_all().with("no_egress", Decision::Deny));
    configure(
        Kest::builder()
            .identity(identity.clone())
            .engine(enterprise_engine.clone())
            .enterprise_policies(["no_egress"])
            .build()
            .unwrap(),
    );
    // A call site brings its own runtime: permissive engine, no tiers, and a
    // deviation exempting itself from the enterprise policy.
    let own = Arc::new(
        Kest::builder()
            .identity(identity)
            .engine(Arc::new(MockPolicyEngine::allow_all()))
            .deviation(DeviationRule {
                scope: "exfiltrate".into(),
                policy: "no_egress".into(),
                tier: Tier::Enterprise,
                reason: Some("trust me".into()),
                approver: None,
            })
            .build()
            .unwrap(),
    );
    let hook = Verified::builder("exfiltrate").policy("fun").build().unwrap();
    let ran = AtomicUsize::new(0);
    let run = |call: CallContext| {
        hook.call(call, || {
            ran.fetch_add(1, Ordering::SeqCst);
            Ok::<_, std::io::Error>(())
        })
    };
    for call in [
        CallContext::new().runtime(&own),
        CallContext::new().engine(Arc::new(MockPolicyEngine::allow_all())),
        CallContext::new().runtime(&own).engine(Arc::new(MockPolicyEngine::allow_all())),
    ] {
        let r = run(call);
        let Err(HookError::Kest(e @ KestError::Denied { .. })) = &r else { panic!("{r:?}") };
        assert_eq!(e.policy(), Some(("no_egress", Tier::Enterprise)));
    }
    assert_eq!(ran.load(Ordering::SeqCst), 0);
    // The enterprise policy was decided by the configured engine each time.
    assert!(enterprise_engine.calls().iter().any(|(p, _)| p == "no_egress"));

    // A per-call runtime's own tier policies are evaluated in addition.
    let stricter = Arc::new(
        Kest::builder()
            .engine(Arc::new(MockPolicyEngine::allow_all().with("extra", Decision::Deny)))
            .platform_policies(["extra"])
            .build()
            .unwrap(),
    );
    configure(
        Kest::builder()
            .identity(Arc::new(StaticIdentity::from_seed("spiffe://test/g2", [6u8; 32])))
            .engine(Arc::new(MockPolicyEngine::allow_all()))
            .build()
            .unwrap(),
    );
    let r = run(CallContext::new().runtime(&stricter));
    let Err(HookError::Kest(e)) = &r else { panic!("{r:?}") };
    assert_eq!(e.policy(), Some(("extra", Tier::Platform)));
    assert_eq!(ran.load(Ordering::SeqCst), 0);
}
