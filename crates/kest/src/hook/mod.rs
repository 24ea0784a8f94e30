//! The verification hook (SPEC §5): policy before execution, a signed entry
//! after it, lineage carried to what follows.
//!
//! [`Verified`] is the wrapper API; `#[kest::verified(...)]` expands to it.
//! One job per module: [`CallContext`] holds the per-call values, `plan`
//! resolves the runtime and builds the evaluation plan (tiers, deviations,
//! decision-cache keys), `run` runs the operation and guards it (panics,
//! cancellation), `record` signs and appends the entry.
//!
//! ```
//! use std::sync::Arc;
//! use kest::hook::{CallContext, Verified};
//! use kest::identity::StaticIdentity;
//! use kest::lineage::Lineage;
//! use kest::policy::MockPolicyEngine;
//! use kest::Kest;
//!
//! let kest = Arc::new(
//!     Kest::builder()
//!         .identity(Arc::new(StaticIdentity::from_seed("spiffe://demo/agent", [1; 32])))
//!         .engine(Arc::new(MockPolicyEngine::allow_all()))
//!         .build()
//!         .unwrap(),
//! );
//! let ingest = Verified::builder("ingest").policy("allow").source_type("user_input").build().unwrap();
//! let flow = Lineage::new();
//! let answer = flow.enter(|| {
//!     ingest.call(CallContext::new().runtime(&kest), || Ok::<_, std::io::Error>(42))
//! });
//! assert_eq!(answer.unwrap(), 42);
//! let passport = flow.passport();
//! assert_eq!(passport.len(), 1);
//! assert_eq!(passport.entries()[0].payload().trust_score, 40);
//! ```

mod call;
mod plan;
mod record;
mod run;

use kest_core::Classification;
use serde::Serialize;

pub use call::CallContext;
pub use plan::LABEL_DELEGATION;

use crate::error::KestError;
use crate::runtime::ConfigError;
use crate::telemetry::SpanLabels;

/// The taint added to the entry of an operation that failed.
pub const FAILED_EXECUTION: &str = "failed_execution";

/// The extra taint of an async operation whose future was dropped after it
/// started (SPEC §5, cancellation).
pub const CANCELLED: &str = "cancelled";

/// A protected operation: its name, policies and lineage parameters,
/// validated once.
#[derive(Debug, Clone)]
pub struct Verified {
    operation: String,
    span_labels: SpanLabels,
    action: Option<String>,
    scope_name: Option<String>,
    policies: Vec<String>,
    source_type: Option<String>,
    added_taints: Vec<String>,
    removed_taints: Vec<String>,
    trust_override: Option<i64>,
    classification: Classification,
    hash_inputs: bool,
    hash_output: bool,
}

/// Builder for [`Verified`].
#[derive(Debug, Clone)]
pub struct VerifiedBuilder {
    spec: Verified,
}

impl Verified {
    /// Starts a hook for `operation`. The operation name is also the scope
    /// deviations are matched against, unless [`VerifiedBuilder::scope_name`]
    /// gives a qualified one (the macro passes `module::path::fn`).
    pub fn builder(operation: impl Into<String>) -> VerifiedBuilder {
        let operation = operation.into();
        VerifiedBuilder {
            spec: Verified {
                span_labels: SpanLabels::new(&operation),
                operation,
                action: None,
                scope_name: None,
                policies: Vec::new(),
                source_type: None,
                added_taints: Vec::new(),
                removed_taints: Vec::new(),
                trust_override: None,
                classification: Classification::System,
                hash_inputs: false,
                hash_output: false,
            },
        }
    }

    /// The operation name (written into the entry).
    pub fn operation(&self) -> &str {
        &self.operation
    }

    /// The action policies see (`action`, label `kest.action`): the one
    /// given to the builder, else the operation name.
    pub fn action(&self) -> &str {
        self.action.as_deref().unwrap_or(&self.operation)
    }

    /// The name deviations are scoped to: the qualified name given to the
    /// builder, else the operation name.
    ///
    /// ```
    /// let hook = kest::Verified::builder("send").scope_name("billing::mail::send").policy("p").build().unwrap();
    /// assert_eq!(hook.scope_name(), "billing::mail::send");
    /// assert_eq!(kest::Verified::builder("send").policy("p").build().unwrap().scope_name(), "send");
    /// ```
    pub fn scope_name(&self) -> &str {
        self.scope_name.as_deref().unwrap_or(&self.operation)
    }

    /// The function-tier policies.
    pub fn policies(&self) -> &[String] {
        &self.policies
    }

    /// Whether the caller should hash the inputs into `input_hash`.
    pub fn hashes_inputs(&self) -> bool {
        self.hash_inputs
    }

    /// Whether the output is hashed into `content_hash`.
    pub fn hashes_output(&self) -> bool {
        self.hash_output
    }
}

impl VerifiedBuilder {
    /// Adds a function-tier policy (at least one is required).
    pub fn policy(mut self, name: impl Into<String>) -> Self {
        self.spec.policies.push(name.into());
        self
    }
    /// Adds several function-tier policies.
    pub fn policies<I: IntoIterator<Item = S>, S: Into<String>>(mut self, names: I) -> Self {
        self.spec.policies.extend(names.into_iter().map(Into::into));
        self
    }
    /// The qualified name deviations are scoped to (`module::path::fn`), so
    /// a function elsewhere with the same bare name is not covered by them.
    pub fn scope_name(mut self, name: impl Into<String>) -> Self {
        self.spec.scope_name = Some(name.into());
        self
    }
    /// The action policies see (SPEC §6.1; default the operation name),
    /// recorded as the label `kest.action`.
    pub fn action(mut self, action: impl Into<String>) -> Self {
        self.spec.action = Some(action.into());
        self
    }
    /// The origin of the data this operation brings in.
    pub fn source_type(mut self, origin: impl Into<String>) -> Self {
        self.spec.source_type = Some(origin.into());
        self
    }
    /// A taint this operation adds.
    pub fn added_taint(mut self, taint: impl Into<String>) -> Self {
        self.spec.added_taints.push(taint.into());
        self
    }
    /// A taint this operation removes (needs a sanitizer or a trust override).
    pub fn removed_taint(mut self, taint: impl Into<String>) -> Self {
        self.spec.removed_taints.push(taint.into());
        self
    }
    /// Sanitizer override of the computed trust score.
    pub fn trust_override(mut self, score: i64) -> Self {
        self.spec.trust_override = Some(score);
        self
    }
    /// The node classification.
    pub fn classification(mut self, classification: Classification) -> Self {
        self.spec.classification = classification;
        self
    }
    /// Hash the operation's inputs into `input_hash` (the caller passes them
    /// through [`CallContext::inputs`]).
    pub fn hash_inputs(mut self, on: bool) -> Self {
        self.spec.hash_inputs = on;
        self
    }
    /// Hash the operation's output into `content_hash` (use
    /// [`Verified::call_hashed`] or the async twin).
    pub fn hash_output(mut self, on: bool) -> Self {
        self.spec.hash_output = on;
        self
    }

    /// Validates: an operation name, at least one policy, no empty names,
    /// taint removal only by a sanitizer or with an override, an override
    /// in 0..=100.
    pub fn build(self) -> Result<Verified, ConfigError> {
        let s = self.spec;
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if s.operation.is_empty() {
            return invalid("operation name must not be empty".into());
        }
        if s.action.as_deref().is_some_and(str::is_empty) {
            return invalid(format!("`{}`: the action must not be empty", s.operation));
        }
        if s.scope_name.as_deref().is_some_and(str::is_empty) {
            return invalid(format!("`{}`: the scope name must not be empty", s.operation));
        }
        if s.policies.is_empty() {
            return invalid(format!(
                "`{}`: the policy list is empty (an empty list never allows)",
                s.operation
            ));
        }
        if s.policies.iter().any(String::is_empty) {
            return invalid(format!("`{}`: a policy name is empty", s.operation));
        }
        if !s.removed_taints.is_empty()
            && s.trust_override.is_none()
            && s.classification != Classification::Sanitizer
        {
            return invalid(format!(
                "`{}`: removed_taints needs trust_override or classification = sanitizer",
                s.operation
            ));
        }
        if let Some(o) = s.trust_override
            && !(0..=100).contains(&o)
        {
            return invalid(format!("`{}`: trust_override {o} is outside 0..=100", s.operation));
        }
        Ok(s)
    }
}

/// Lowercase hex SHA-256 of the RFC 8785 form of `value`.
pub fn hash_json<T: Serialize>(value: &T, what: &'static str) -> Result<String, KestError> {
    let bytes = kest_core::json::canonicalize(value).map_err(|e| KestError::Hash { what, message: e.0 })?;
    use sha2::Digest as _;
    Ok(kest_core::encoding::hex_lower(&sha2::Sha256::digest(&bytes)))
}
