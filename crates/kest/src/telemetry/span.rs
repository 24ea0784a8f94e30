//! The span of one hooked call (SPEC §9), through the OpenTelemetry API.
//!
//! With no tracer provider installed the API is a no-op: the span is still
//! started and ended (it carries the trace id into the entry when a trace is
//! active) but no attribute is computed and the passport is never
//! serialized for it (`is_recording` guard).

use opentelemetry::global::{self, BoxedSpan};
use opentelemetry::trace::{Span as _, Status, Tracer as _};
use opentelemetry::{InstrumentationScope, KeyValue};
use sha2::{Digest as _, Sha256};

use super::{PASSPORT_ATTRIBUTE_LIMIT, SCOPE, attr};
use crate::error::KestError;
use crate::lineage::Lineage;

/// The span of one hooked call.
pub(crate) struct HookSpan {
    span: BoxedSpan,
    operation: String,
}

impl HookSpan {
    /// Starts `kest.verified.<operation>` as a child of the current
    /// OpenTelemetry context.
    pub(crate) fn start(operation: &str) -> HookSpan {
        let scope = InstrumentationScope::builder(SCOPE).with_version(env!("CARGO_PKG_VERSION")).build();
        let tracer = global::tracer_with_scope(scope);
        let parent = opentelemetry::Context::current();
        let span = tracer.start_with_context(format!("kest.verified.{operation}"), &parent);
        HookSpan { span, operation: operation.to_owned() }
    }

    /// The trace id (32 lowercase hex) when a real trace is active.
    pub(crate) fn trace_id(&self) -> Option<String> {
        let ctx = self.span.span_context();
        ctx.is_valid().then(|| format!("{:032x}", u128::from_be_bytes(ctx.trace_id().to_bytes())))
    }

    /// Ends the span for a call that was refused or could not be recorded:
    /// `kest.decision` is `deny` for a policy denial (and a call whose
    /// deviations skipped every policy), `error` otherwise; the denying (or
    /// failing) policy and tier when there is one; status error.
    pub(crate) fn end_error(mut self, error: &KestError) {
        if self.span.is_recording() {
            let decision = match error {
                KestError::Denied { .. } | KestError::NoPolicyEvaluated { .. } => "deny",
                _ => "error",
            };
            self.span.set_attribute(KeyValue::new(attr::OPERATION, self.operation.clone()));
            self.span.set_attribute(KeyValue::new(attr::DECISION, decision));
            self.span.set_attribute(KeyValue::new(attr::ERROR_KIND, error.kind()));
            if let Some((policy, tier)) = error.policy() {
                self.span.set_attribute(KeyValue::new(attr::DENIED_POLICY, policy.to_owned()));
                self.span.set_attribute(KeyValue::new(attr::DENIED_TIER, tier.as_str()));
            }
            if let KestError::Denied { entry_id, workload, .. } = error {
                self.span.set_attribute(KeyValue::new(attr::ENTRY_ID, entry_id.clone()));
                self.span.set_attribute(KeyValue::new(attr::WORKLOAD_ID, workload.clone()));
            }
            self.span.set_status(Status::error(error.to_string()));
        }
        self.span.end();
    }

    /// Ends the span of a recorded call with the SPEC §9 attributes.
    pub(crate) fn end_recorded(
        mut self,
        jws: &str,
        hash: &kest_core::EntryHash,
        entry_id: &str,
        workload: &str,
        trust: u8,
        lineage: &Lineage,
    ) {
        if self.span.is_recording() {
            // Only computed (and the passport serialized) when a real
            // tracer records the span; read in place, never copied.
            let (parent_hash, passport_attribute) = lineage.with_passport(|passport| {
                let parent_hash = passport
                    .get(hash)
                    .filter(|e| !e.is_root())
                    .map(|e| e.parents().iter().map(ToString::to_string).collect::<Vec<_>>().join(","))
                    .unwrap_or_else(|| "0".to_owned());
                let json_len = passport_json_len(passport.entries().iter().map(|e| e.jws().len()));
                let attribute = if json_len <= PASSPORT_ATTRIBUTE_LIMIT {
                    KeyValue::new(attr::PASSPORT, passport.to_json())
                } else {
                    KeyValue::new(
                        attr::CLAIM_CHECK,
                        passport_claim_id(passport.entries().iter().map(|e| e.hash())),
                    )
                };
                (parent_hash, attribute)
            });
            let inline = passport_attribute.key.as_str() == attr::PASSPORT;
            self.span.set_attributes([
                KeyValue::new(attr::SIGNATURE, jws.to_owned()),
                KeyValue::new(attr::ENTRY_HASH, hash.to_string()),
                KeyValue::new(attr::PARENT_HASH, parent_hash),
                KeyValue::new(attr::ENTRY_ID, entry_id.to_owned()),
                KeyValue::new(attr::WORKLOAD_ID, workload.to_owned()),
                KeyValue::new(attr::TRUST_SCORE, i64::from(trust)),
                KeyValue::new(attr::OPERATION, self.operation.clone()),
                KeyValue::new(attr::DECISION, "allow"),
                passport_attribute,
            ]);
            if !inline {
                self.span.set_attribute(KeyValue::new(
                    attr::CHAIN_TIP,
                    kest_core::baggage::format_chain_tip(&lineage.tips()),
                ));
            }
        }
        self.span.end();
    }
}

/// The length in bytes of the passport JSON (`["jws","jws",...]`) without
/// building it.
fn passport_json_len(jws_lengths: impl Iterator<Item = usize>) -> usize {
    let (n, sum) = jws_lengths.fold((0usize, 0usize), |(n, sum), len| (n + 1, sum + len));
    if n == 0 { 2 } else { sum + 3 * n + 1 }
}

/// The content-addressed id of a passport: a UUID (version 8, RFC 9562
/// §5.8) whose custom bits are the first 16 bytes of SHA-256 over the raw
/// 32-byte hashes of its entries, in passport order. (Each entry hash is
/// SHA-256 of the entry's JWS, so the id binds every byte of the passport,
/// and it costs one small hash however large the passport is.)
///
/// The propagation layer's claim-check ids are random v4 UUIDs that live in
/// a cache for a TTL, so no span could name one usefully; this id is instead
/// reproducible by anyone who rebuilds the same passport from the entries.
pub(crate) fn passport_claim_id(hashes: impl IntoIterator<Item = kest_core::EntryHash>) -> String {
    let mut h = Sha256::new();
    for hash in hashes {
        h.update(hash.as_bytes());
    }
    let digest = h.finalize();
    let mut bytes = [0u8; 16];
    for (b, d) in bytes.iter_mut().zip(digest.iter()) {
        *b = *d;
    }
    uuid::Builder::from_custom_bytes(bytes).into_uuid().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_length_matches_the_serialization() {
        for entries in [vec![], vec!["a.b.c"], vec!["a.b.c", "dd.ee.ff", "g.h.i"]] {
            let json = serde_json::to_string(&entries).unwrap();
            assert_eq!(passport_json_len(entries.iter().map(|e| e.len())), json.len());
        }
    }

    #[test]
    fn claim_id_is_the_hash_of_the_entry_hashes() {
        let hashes = [kest_core::EntryHash::of("a.b.c"), kest_core::EntryHash::of("d.e.f")];
        let mut concat = Vec::new();
        for h in &hashes {
            concat.extend_from_slice(h.as_bytes());
        }
        let digest = Sha256::digest(&concat);
        let id: uuid::Uuid = passport_claim_id(hashes).parse().unwrap();
        assert_eq!(id.get_version_num(), 8);
        // Everything but the version and variant bits comes from the hash.
        let mut expected = [0u8; 16];
        expected.copy_from_slice(&digest[..16]);
        expected[6] = (expected[6] & 0x0f) | 0x80;
        expected[8] = (expected[8] & 0x3f) | 0x80;
        assert_eq!(id.as_bytes(), &expected);
        assert_ne!(passport_claim_id(hashes), passport_claim_id(hashes[..1].iter().copied()));
        assert_ne!(passport_claim_id(hashes), passport_claim_id([hashes[1], hashes[0]]), "order matters");
    }
}
