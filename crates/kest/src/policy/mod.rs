//! Policy engines (SPEC §6): one trait, sync and async evaluation, and
//! the decision cache in front of any engine.

#[cfg(feature = "avp")]
pub mod avp;
pub mod cache;
#[cfg(feature = "cedar")]
pub mod cedar;
#[cfg(feature = "remote")]
pub mod cedar_agent;
pub mod context;
#[cfg(any(feature = "rego", feature = "cedar"))]
pub mod library;
pub mod mock;
#[cfg(feature = "remote")]
pub mod opa;
#[cfg(feature = "rego")]
pub mod rego;
pub mod router;
#[cfg(feature = "remote")]
pub mod transport;

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use serde_json::Value;

#[cfg(feature = "avp")]
pub use avp::{AvpEngine, AvpEngineBuilder};
pub use cache::DecisionCache;
#[cfg(feature = "cedar")]
pub use cedar::{CedarEngine, CedarEngineBuilder};
#[cfg(feature = "remote")]
pub use cedar_agent::{CedarAgentEngine, CedarAgentEngineBuilder};
pub use context::{Environment, EvaluationContext, Object, Subject, Tier};
pub use mock::MockPolicyEngine;
#[cfg(feature = "remote")]
pub use opa::{OpaEngine, OpaEngineBuilder};
#[cfg(feature = "rego")]
pub use rego::{RegoEngine, RegoEngineBuilder};
pub use router::RoutedEngine;

/// A boxed, sendable future (the async evaluation path).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a policy said. Only [`Decision::Allow`] lets an operation run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Decision {
    /// The policy allows the operation.
    Allow,
    /// The policy denies it (or did not explicitly allow it).
    Deny,
}

impl Decision {
    /// `Allow` for `true`, `Deny` otherwise.
    pub fn from_bool(allowed: bool) -> Decision {
        if allowed { Decision::Allow } else { Decision::Deny }
    }
    /// Whether this is `Allow`.
    pub fn is_allow(self) -> bool {
        self == Decision::Allow
    }
}

/// One evaluation request: the policy name and the context, with its JSON
/// form computed once.
#[derive(Debug, Clone)]
pub struct PolicyInput {
    context: EvaluationContext,
    json: Value,
}

impl PolicyInput {
    /// Wraps a context (computes its JSON once).
    pub fn new(context: EvaluationContext) -> PolicyInput {
        let json = context.to_json();
        PolicyInput { context, json }
    }
    /// The typed context.
    pub fn context(&self) -> &EvaluationContext {
        &self.context
    }
    /// The JSON document (Rego `input`).
    pub fn json(&self) -> &Value {
        &self.json
    }
}

/// Why a policy could not give a decision. Every variant means *deny*.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The engine has no policy by that name (never a fallback).
    #[error("unknown policy `{0}`")]
    UnknownPolicy(String),
    /// A policy could not be compiled or loaded (construction time).
    #[error("policy `{policy}` does not compile: {message}")]
    Compile {
        /// The policy.
        policy: String,
        /// The engine's message.
        message: String,
    },
    /// Evaluation failed.
    #[error("policy `{policy}` failed to evaluate: {message}")]
    Evaluation {
        /// The policy.
        policy: String,
        /// The engine's message.
        message: String,
    },
    /// A remote engine was unreachable, timed out or answered badly: the
    /// typed failure (the details are in the logs, never in the error).
    #[error("policy engine `{engine}` unavailable: {failure}")]
    Remote {
        /// The engine.
        engine: String,
        /// What went wrong.
        failure: RemoteFailure,
    },
    /// An engine could not be reached or used for another reason.
    #[error("policy engine `{engine}` unavailable: {message}")]
    Unavailable {
        /// The engine.
        engine: String,
        /// What happened.
        message: String,
    },
    /// The engine is misconfigured.
    #[error("policy engine configuration: {0}")]
    Config(String),
}

/// What went wrong talking to a remote engine ([`PolicyError::Remote`]).
/// Short and fixed, so it can be shown; the details are in the logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum RemoteFailure {
    /// No complete answer within the timeout.
    #[error("timed out")]
    Timeout,
    /// The connection could not be made (refused, unresolvable, TLS).
    #[error("cannot connect")]
    Connect,
    /// The request failed after connecting (connection reset, bad HTTP).
    #[error("request failed")]
    Request,
    /// An HTTP status other than 200.
    #[error("HTTP {0}")]
    Status(u16),
    /// The answer is larger than the engine's limit.
    #[error("answer too large")]
    TooLarge,
    /// The answer is not JSON.
    #[error("answer is not JSON")]
    NotJson,
    /// The answer is JSON but not in the engine's answer format.
    #[error("unexpected answer")]
    UnexpectedAnswer,
    /// The synchronous path's HTTP thread could not be started or stopped.
    #[error("synchronous path unavailable")]
    Worker,
}

impl RemoteFailure {
    /// The failure a remote engine reported in `error`, if it is one.
    ///
    /// ```
    /// use kest::policy::{PolicyError, RemoteFailure};
    /// let error = RemoteFailure::Status(503).into_error("opa");
    /// assert_eq!(error.to_string(), "policy engine `opa` unavailable: HTTP 503");
    /// assert_eq!(RemoteFailure::of(&error), Some(RemoteFailure::Status(503)));
    /// assert_eq!(RemoteFailure::of(&PolicyError::UnknownPolicy("p".into())), None);
    /// ```
    pub fn of(error: &PolicyError) -> Option<RemoteFailure> {
        match error {
            PolicyError::Remote { failure, .. } => Some(*failure),
            _ => None,
        }
    }

    /// The [`PolicyError::Remote`] of engine `engine` for this failure.
    pub fn into_error(self, engine: &str) -> PolicyError {
        PolicyError::Remote { engine: engine.to_owned(), failure: self }
    }
}

/// The policies of `policies` that are history-free: declared so by the
/// deployer, or bundled ones loaded with exactly their bundled text.
#[cfg(any(feature = "rego", feature = "cedar"))]
fn history_free(
    policies: &[(String, String)],
    declared: &std::collections::HashSet<String>,
    bundled: &[(&str, &str)],
) -> std::collections::HashSet<String> {
    policies
        .iter()
        .filter(|(name, text)| declared.contains(name) || bundled.iter().any(|(n, t)| n == name && t == text))
        .map(|(name, _)| name.clone())
        .collect()
}

/// A policy engine: evaluates one named policy against a context.
///
/// Implementations must be safe to call from many threads at once, must
/// answer [`PolicyError::UnknownPolicy`] for a name they do not hold, and
/// must allow only on an explicit allow.
pub trait PolicyEngine: fmt::Debug + Send + Sync {
    /// A stable name for this engine instance (part of decision-cache keys).
    fn name(&self) -> &str;

    /// Evaluates `policy` synchronously.
    fn evaluate(&self, policy: &str, input: &PolicyInput) -> Result<Decision, PolicyError>;

    /// Whether `policy` may read the verified history (`lineage` in the
    /// context). The hook computes and passes `lineage.ancestors` only to
    /// policies that may; the default is `true`, and an engine answers
    /// `false` only for a policy explicitly declared history-free (see
    /// `history_free` on the Rego and Cedar builders). A policy declared
    /// history-free that reads `lineage` anyway sees none.
    fn reads_lineage(&self, _policy: &str) -> bool {
        true
    }

    /// Evaluates `policy` asynchronously. In-process engines are CPU-bound
    /// and use the synchronous path; remote engines override this.
    fn evaluate_async<'a>(
        &'a self,
        policy: &'a str,
        input: &'a PolicyInput,
    ) -> BoxFuture<'a, Result<Decision, PolicyError>> {
        Box::pin(std::future::ready(self.evaluate(policy, input)))
    }
}

impl<E: PolicyEngine + ?Sized> PolicyEngine for std::sync::Arc<E> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn evaluate(&self, policy: &str, input: &PolicyInput) -> Result<Decision, PolicyError> {
        (**self).evaluate(policy, input)
    }
    fn reads_lineage(&self, policy: &str) -> bool {
        (**self).reads_lineage(policy)
    }
    fn evaluate_async<'a>(
        &'a self,
        policy: &'a str,
        input: &'a PolicyInput,
    ) -> BoxFuture<'a, Result<Decision, PolicyError>> {
        (**self).evaluate_async(policy, input)
    }
}
