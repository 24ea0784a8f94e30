//! Fixtures for the hook benchmarks (SPEC §11 "hook overhead", "throughput")
//! shared by `benches/hook.rs` and the `side-by-side` binary.
//!
//! The measured flow has the same shape in every engine and in the Python
//! reference harness (`tests/interop/reference_bench.py`): a flow that
//! already holds a 10-entry linear passport (trust 40, taints `pii`,
//! `unverified`) and identity baggage (user `alice`, agent `research`); one
//! hooked call `web_search` with one function-tier policy that allows,
//! appending one signed entry.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use kest::hook::{CallContext, Verified};
use kest::identity::StaticIdentity;
use kest::lineage::{FlowIdentity, Lineage};
use kest::policy::cedar::{CedarEngine, bundled_cedar};
use kest::policy::rego::RegoEngine;
use kest::policy::{
    Environment, EvaluationContext, MockPolicyEngine, Object, PolicyEngine, PolicyInput, Subject, Tier,
};
use kest::{HookError, Kest};
use kest_core::Passport;

use crate::{PRINCIPAL, passport, signer};

/// Entries already in the flow when the hooked call runs.
pub const FLOW_LEN: usize = 10;

/// The hooked operation.
pub const OPERATION: &str = "web_search";

/// An allowing Rego policy over the reference-compatible flat keys
/// (`kest/allow` of the bundle needs trust >= 70, this flow has 40).
/// Valid as Rego v0 and v1 (also loaded by the reference's regopy engine).
pub const REGO_POLICY: &str = "package bench.allow\n\nimport rego.v1\n\ndefault allow := false\n\n\
allow if {\n\tinput.trust_score >= 30\n\tinput.is_root == false\n}\n";

/// The Rego policy name.
pub const REGO_NAME: &str = "bench/allow";

/// The Cedar policy name (bundled `invoke`: permits action `invoke`).
pub const CEDAR_NAME: &str = "invoke";

/// The policy engines measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineKind {
    /// `MockPolicyEngine::allow_all()`, policy `allow`.
    Mock,
    /// `RegoEngine` with [`REGO_POLICY`].
    Rego,
    /// `CedarEngine` with the bundled policies, policy `invoke`.
    Cedar,
}

impl EngineKind {
    /// All engines, in report order.
    pub const ALL: [EngineKind; 3] = [EngineKind::Mock, EngineKind::Rego, EngineKind::Cedar];

    /// Lowercase name (bench ids, JSON keys).
    pub fn name(self) -> &'static str {
        match self {
            EngineKind::Mock => "mock",
            EngineKind::Rego => "rego",
            EngineKind::Cedar => "cedar",
        }
    }

    /// The function-tier policy the hook names.
    pub fn policy(self) -> &'static str {
        match self {
            EngineKind::Mock => "allow",
            EngineKind::Rego => REGO_NAME,
            EngineKind::Cedar => CEDAR_NAME,
        }
    }

    /// A fresh engine.
    pub fn engine(self) -> Arc<dyn PolicyEngine> {
        match self {
            EngineKind::Mock => Arc::new(MockPolicyEngine::allow_all()),
            #[allow(clippy::expect_used)]
            EngineKind::Rego => {
                Arc::new(RegoEngine::new([(REGO_NAME, REGO_POLICY)]).expect("the bench Rego policy compiles"))
            }
            #[allow(clippy::expect_used)]
            EngineKind::Cedar => {
                Arc::new(CedarEngine::new(bundled_cedar()).expect("the bundled Cedar policies parse"))
            }
        }
    }
}

/// The signing identity (same key as [`signer`]).
pub fn identity() -> Arc<StaticIdentity> {
    Arc::new(StaticIdentity::from_seed(PRINCIPAL, [0x5a; 32]))
}

/// A runtime with `engine` and a decision cache of `ttl` (zero: no cache).
pub fn runtime(engine: Arc<dyn PolicyEngine>, ttl: Duration) -> Arc<Kest> {
    #[allow(clippy::expect_used)]
    let kest =
        Kest::builder().identity(identity()).engine(engine).cache_ttl(ttl).build().expect("bench runtime");
    Arc::new(kest)
}

/// The hook for `kind`.
pub fn hook(kind: EngineKind) -> Verified {
    #[allow(clippy::expect_used)]
    Verified::builder(OPERATION).policy(kind.policy()).build().expect("bench hook")
}

/// The passport every measured flow starts from.
pub fn base_passport() -> Passport {
    #[allow(clippy::expect_used)]
    passport(FLOW_LEN, &signer()).expect("fixture passport")
}

/// The flow's identity baggage.
pub fn flow_identity() -> FlowIdentity {
    FlowIdentity { user: Some("alice".into()), agent: Some("research".into()), ..FlowIdentity::default() }
}

/// A fresh flow continuing `base`.
pub fn flow(base: &Passport) -> Lineage {
    Lineage::from_passport(base.clone()).with_identity(flow_identity())
}

/// One hooked call in `flow` (a no-op operation).
pub fn call(hook: &Verified, kest: &Arc<Kest>, flow: &Lineage) -> Result<u64, HookError<Infallible>> {
    flow.enter(|| hook.call(CallContext::new().runtime(kest), || Ok::<u64, Infallible>(42)))
}

/// The evaluation context the hook builds for the call above (for timing
/// an engine alone).
pub fn evaluation_context(kind: EngineKind, base: &Passport) -> EvaluationContext {
    let tips: Vec<String> = base.tips().iter().map(ToString::to_string).collect();
    EvaluationContext {
        subject: Subject {
            workload: PRINCIPAL.into(),
            user: Some("alice".into()),
            agent: Some("research".into()),
            task: None,
            trust_score: 40,
            taints: vec!["pii".into(), "unverified".into()],
            attributes: serde_json::Map::new(),
        },
        object: Object { id: None, attributes: serde_json::Map::new() },
        environment: Environment {
            is_root: false,
            source_type: None,
            parent_hash: tips.first().cloned().unwrap_or_else(|| "0".into()),
            policy_names: vec![kind.policy().into()],
            policy_tier: Tier::Function,
            active_deviations: Vec::new(),
            operation: OPERATION.into(),
            entry_id: "0190b6a0-0000-7000-8000-000000000000".into(),
        },
        tips,
        action: OPERATION.into(),
        attributes: Default::default(),
        ancestors: Default::default(),
    }
}

/// The policy input for [`evaluation_context`].
pub fn policy_input(kind: EngineKind, base: &Passport) -> PolicyInput {
    PolicyInput::new(evaluation_context(kind, base))
}
