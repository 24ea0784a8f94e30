//! Steps 7–9 of the lifecycle (SPEC §5): sign the entry, append it to the
//! flow, end the span. A failure here is reported to the caller as
//! `unrecorded` by `run`, never swallowed; it is logged and ends the span
//! with an error so the omission is visible in telemetry.

use kest_core::{Entry, EntryHash, prepare_entry, sign_entry};

use super::plan::Pending;
use super::{CANCELLED, FAILED_EXECUTION, Verified};
use crate::error::KestError;

/// How the operation ended.
pub(super) enum Outcome {
    /// It returned a value (with the output hash, or `""`).
    Success { content_hash: String },
    /// It returned an error, panicked, or (`cancelled`) its future was
    /// dropped after it started.
    Failed { cancelled: bool },
}

impl Verified {
    /// Signs, appends and reports the entry of one call. On error the span
    /// ends with the error and the error is logged; the caller turns it
    /// into an `unrecorded` error.
    pub(super) fn record(&self, pending: Pending, outcome: Outcome) -> Result<EntryHash, KestError> {
        let Pending { identity, lineage, parents, mut draft, rules, mut entry, span } = pending;
        let signed = (|| {
            match outcome {
                Outcome::Success { content_hash } => entry.content_hash = content_hash,
                Outcome::Failed { cancelled } => {
                    // Recompute with the failure taints and a zero override
                    // so the entry stays consistent for semantic checks.
                    draft.added_taints.push(FAILED_EXECUTION.into());
                    if cancelled {
                        draft.added_taints.push(CANCELLED.into());
                    }
                    draft.trust_override = Some(0);
                    let parent_refs: Vec<&Entry> = parents.iter().map(|p| p.as_ref()).collect();
                    let failed = prepare_entry(&parent_refs, &draft, identity.principal(), &rules)?;
                    entry.added_taints = failed.added_taints;
                    entry.taints = failed.taints;
                    entry.trust_score = failed.trust_score;
                    entry.labels.extend(failed.labels);
                }
            }
            let signed = sign_entry(entry, identity.as_ref())?;
            Ok::<_, KestError>(lineage.append(signed)?)
        })();
        match signed {
            Ok(hash) => {
                span.end_recorded(&hash, identity.principal(), &lineage);
                Ok(hash)
            }
            Err(error) => {
                tracing::error!(
                    operation = %self.operation,
                    workload = %identity.principal(),
                    error = %error,
                    "kest: the call's entry could not be recorded"
                );
                span.end_error(&error);
                Err(error)
            }
        }
    }
}
