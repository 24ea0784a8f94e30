//! The framework's errors.

use kest_core::{AppendError, DraftError, SignError};

use crate::policy::{PolicyError, Tier};
use crate::runtime::ConfigError;

/// Why a protected operation did not run, or ran but could not be recorded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KestError {
    /// Neither the call nor the runtime names an identity (SPEC §5 step 1).
    #[error("no IdentityProvider configured")]
    NoIdentity,
    /// Neither the call nor the runtime names a policy engine.
    #[error("no PolicyEngine configured")]
    NoEngine,
    /// A policy denied the operation; it did not run.
    #[error("policy `{policy}` ({tier} tier) denied `{operation}` for `{workload}` (entry {entry_id})")]
    Denied {
        /// The denying policy.
        policy: String,
        /// Its tier.
        tier: Tier,
        /// The operation.
        operation: String,
        /// The entry id the call would have had.
        entry_id: String,
        /// The workload.
        workload: String,
    },
    /// A policy could not be evaluated (engine error, timeout, unreachable
    /// engine, unknown policy); the operation did not run.
    #[error("policy `{policy}` ({tier} tier) could not be evaluated for `{operation}`: {source}")]
    PolicyFailed {
        /// The policy.
        policy: String,
        /// Its tier.
        tier: Tier,
        /// The operation.
        operation: String,
        /// The engine's error.
        source: PolicyError,
    },
    /// Deviations skipped every policy of the call and the configuration
    /// does not allow fully deviated operations (SPEC §5); it did not run.
    #[error("no policy evaluated for `{operation}`: deviations skipped every policy ({})", skipped.join(", "))]
    NoPolicyEvaluated {
        /// The operation.
        operation: String,
        /// The skipped policies, `tier:policy`.
        skipped: Vec<String>,
    },
    /// The identity cannot sign now (e.g. its token expired); the operation
    /// did not run.
    #[error("identity `{workload}` cannot sign: {source}")]
    NotReady {
        /// The workload.
        workload: String,
        /// Why.
        source: SignError,
    },
    /// The operation ran but its entry could not be signed or appended; its
    /// output is withheld (SPEC §5, no execution without lineage).
    #[error("`{operation}` ran but could not be recorded: {source}")]
    Unrecorded {
        /// The operation.
        operation: String,
        /// Why recording failed.
        source: Box<KestError>,
    },
    /// The call was cancelled before its result could be taken.
    #[error("the call was cancelled")]
    Cancelled,
    /// The hook's parameters or the runtime configuration are invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The entry could not be prepared (e.g. unknown origin).
    #[error(transparent)]
    Draft(#[from] DraftError),
    /// Signing failed; nothing was recorded.
    #[error(transparent)]
    Sign(#[from] SignError),
    /// The entry did not fit the flow's passport.
    #[error(transparent)]
    Append(#[from] AppendError),
    /// Inputs or output could not be hashed.
    #[error("cannot hash the {what}: {message}")]
    Hash {
        /// `inputs` or `output`.
        what: &'static str,
        /// The serializer's message.
        message: String,
    },
}

impl KestError {
    /// A stable, machine-readable kind (for logs and HTTP bodies).
    pub fn kind(&self) -> &'static str {
        match self {
            KestError::NoIdentity => "no_identity",
            KestError::NoEngine => "no_engine",
            KestError::Denied { .. } => "policy_denied",
            KestError::PolicyFailed { .. } => "policy_failed",
            KestError::NoPolicyEvaluated { .. } => "no_policy_evaluated",
            KestError::NotReady { .. } => "identity_not_ready",
            KestError::Unrecorded { .. } => "unrecorded",
            KestError::Cancelled => "cancelled",
            KestError::Config(_) => "config",
            KestError::Draft(_) => "draft",
            KestError::Sign(_) => "sign",
            KestError::Append(_) => "append",
            KestError::Hash { .. } => "hash",
        }
    }

    /// Whether the operation was refused by authorization (denial or policy
    /// failure).
    pub fn is_authorization(&self) -> bool {
        matches!(
            self,
            KestError::Denied { .. } | KestError::PolicyFailed { .. } | KestError::NoPolicyEvaluated { .. }
        )
    }

    /// The policy and tier that refused the operation, if any.
    pub fn policy(&self) -> Option<(&str, Tier)> {
        match self {
            KestError::Denied { policy, tier, .. } | KestError::PolicyFailed { policy, tier, .. } => {
                Some((policy, *tier))
            }
            _ => None,
        }
    }
}

/// The outcome of a hooked fallible operation: either Kest refused or
/// failed to record (`Kest`), or the operation itself failed (`Operation`,
/// returned unchanged after a `failed_execution` entry was recorded), or it
/// failed and its failure could not be recorded (`Unrecorded`).
#[derive(Debug, thiserror::Error)]
pub enum HookError<E> {
    /// Kest refused the call or could not record it.
    #[error(transparent)]
    Kest(KestError),
    /// The operation returned this error.
    #[error("operation failed: {0}")]
    Operation(E),
    /// The operation returned `error` and its `failed_execution` entry could
    /// not be recorded (`source` is [`KestError::Unrecorded`]).
    #[error("{source}")]
    Unrecorded {
        /// The operation's own error.
        error: E,
        /// Why the failure could not be recorded.
        source: KestError,
    },
}

impl<E> HookError<E> {
    /// Converts into the operation's error type (for `E: From<KestError>`).
    pub fn into_inner(self) -> E
    where
        E: From<KestError>,
    {
        match self {
            HookError::Kest(k) | HookError::Unrecorded { source: k, .. } => E::from(k),
            HookError::Operation(e) => e,
        }
    }
}
