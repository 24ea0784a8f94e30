//! The span of one hooked call (SPEC §9).
//!
//! Two ways to the exporters:
//!
//! - **Through the OpenTelemetry API** (any global tracer provider): the
//!   span is started before the call and its attributes are set when it
//!   ends. With no provider installed the API is a no-op: the span still
//!   carries the trace id into the entry when a trace is active, but no
//!   attribute is computed and the passport is never serialized for it
//!   (`is_recording` guard).
//! - **Through Kest's recorder** (installed by `kest::telemetry::init`, a
//!   [`HookSink`]): the calling thread keeps only the span's ids and times
//!   and, when the call ends, hands the recorder a [`HookRecord`] holding
//!   the signed entry itself (shared, not copied) and the passport's view;
//!   the attribute strings and the span data are built on the recorder's
//!   thread. The exported span is the same.

use std::borrow::Cow;
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use kest_core::{Entry, EntryHash, Passport};
use opentelemetry::global::{self, BoxedSpan};
use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, Status, TraceContextExt as _, TraceId, Tracer as _,
};
use opentelemetry::{InstrumentationScope, KeyValue, StringValue};
use sha2::{Digest as _, Sha256};

use super::labels::{SpanLabels, workload_value};
use super::{PASSPORT_ATTRIBUTE_LIMIT, SCOPE, attr};
use crate::error::KestError;
use crate::lineage::Lineage;

/// How many attributes a hook span carries at most (SPEC §9): reserved
/// when the span starts, so recording them never grows the vector.
const ATTRIBUTE_CAPACITY: usize = 12;

/// Where the hook's spans go when Kest's own telemetry pipeline is
/// installed (instead of through the global tracer provider).
pub(crate) trait HookSink: Send + Sync {
    /// The trace and span ids of a new span under `parent` (its trace, or
    /// a new one when `parent` is not valid).
    fn new_ids(&self, parent: &SpanContext) -> (TraceId, SpanId);
    /// Takes a finished span; never blocks (a full queue drops it).
    fn submit(&self, record: HookRecord);
}

static SINK: RwLock<Option<Arc<dyn HookSink>>> = RwLock::new(None);

/// Installs the recorder the hook's spans go to (replacing any other).
#[cfg_attr(
    not(feature = "telemetry"),
    expect(dead_code, reason = "the recorder is installed by `telemetry::init`")
)]
pub(crate) fn install_sink(sink: Arc<dyn HookSink>) {
    match SINK.write() {
        Ok(mut current) => *current = Some(sink),
        Err(poisoned) => *poisoned.into_inner() = Some(sink),
    }
}

/// Removes `sink` if it is still the one installed (a later
/// `telemetry::init` may have replaced it; that one stays).
#[cfg_attr(
    not(feature = "telemetry"),
    expect(dead_code, reason = "the recorder is installed by `telemetry::init`")
)]
pub(crate) fn uninstall_sink(sink: &Arc<dyn HookSink>) {
    let mut current = match SINK.write() {
        Ok(current) => current,
        Err(poisoned) => poisoned.into_inner(),
    };
    if current.as_ref().is_some_and(|installed| Arc::ptr_eq(installed, sink)) {
        *current = None;
    }
}

fn current_sink() -> Option<Arc<dyn HookSink>> {
    SINK.read().ok().and_then(|s| s.clone())
}

/// The passport as a span reports it: whole when small, otherwise its
/// claim-check id and the flow's tips.
pub(crate) enum PassportView {
    /// The passport JSON (at most [`PASSPORT_ATTRIBUTE_LIMIT`] bytes).
    Inline(String),
    /// The content-addressed id and the tips.
    ClaimCheck {
        /// [`passport_claim_uuid`] of the passport.
        claim: uuid::Uuid,
        /// The flow's tips.
        tips: Hashes,
    },
}

/// Entry hashes (an entry's parents, a flow's tips), without a vector for
/// the usual single one.
pub(crate) enum Hashes {
    /// Exactly one.
    One(EntryHash),
    /// None or several.
    Many(Vec<EntryHash>),
}

impl Hashes {
    fn of(hashes: &[EntryHash]) -> Hashes {
        match hashes {
            [one] => Hashes::One(*one),
            many => Hashes::Many(many.to_vec()),
        }
    }

    /// The `kest.parent_hash` / `kest.chain_tip` form: hashes joined by
    /// `,`, `"0"` for none.
    fn format(&self) -> String {
        match self {
            Hashes::One(one) => one.to_string(),
            Hashes::Many(many) => kest_core::baggage::format_chain_tip(many),
        }
    }
}

/// A flow's passport as its spans need it: the JSON length and the running
/// SHA-256 of the claim-check id (see [`passport_claim_uuid`]), advanced
/// over the entries appended since the last span instead of over the whole
/// passport each time. A flow's passport only grows at its end (appends and
/// merges keep the order before them); should the entries it counted ever
/// differ, it starts over.
#[derive(Default, Clone)]
pub(crate) struct PassportDigest {
    counted: usize,
    last: Option<EntryHash>,
    jws_bytes: usize,
    sha: Sha256,
}

impl std::fmt::Debug for PassportDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PassportDigest").field("counted", &self.counted).finish_non_exhaustive()
    }
}

impl PassportDigest {
    fn advance(&mut self, passport: &Passport) {
        let entries = passport.entries();
        let same_prefix = self.counted <= entries.len()
            && self.counted.checked_sub(1).is_none_or(|i| entries.get(i).map(|e| e.hash()) == self.last);
        if !same_prefix {
            *self = PassportDigest::default();
        }
        for entry in entries.get(self.counted..).unwrap_or_default() {
            self.sha.update(entry.hash().as_bytes());
            self.jws_bytes += entry.jws().len();
        }
        self.counted = entries.len();
        self.last = entries.last().map(|e| e.hash());
    }

    /// The length of the passport JSON (`["jws",...]`).
    fn json_len(&self) -> usize {
        if self.counted == 0 { 2 } else { self.jws_bytes + 3 * self.counted + 1 }
    }

    /// The claim-check id of the passport counted.
    fn claim(&self) -> uuid::Uuid {
        claim_uuid_of_digest(&self.sha.clone().finalize())
    }
}

impl PassportView {
    fn of(passport: &Passport, tips: &[EntryHash], digest: &mut PassportDigest) -> PassportView {
        digest.advance(passport);
        if digest.json_len() <= PASSPORT_ATTRIBUTE_LIMIT {
            return PassportView::Inline(passport.to_json());
        }
        PassportView::ClaimCheck { claim: digest.claim(), tips: Hashes::of(tips) }
    }
}

/// A finished hook span handed to a [`HookSink`].
#[cfg_attr(
    not(feature = "telemetry"),
    expect(dead_code, reason = "the recorder is installed by `telemetry::init`")
)]
pub(crate) struct HookRecord {
    /// The span's own context (sampled).
    pub(crate) span_context: SpanContext,
    /// The parent span (invalid for a root span).
    pub(crate) parent_span_id: SpanId,
    /// Whether the parent came from another process.
    pub(crate) parent_is_remote: bool,
    /// `kest.verified.<operation>`.
    pub(crate) name: Cow<'static, str>,
    /// When the hook started.
    pub(crate) start: SystemTime,
    /// When it ended.
    pub(crate) end: SystemTime,
    /// What the span reports.
    pub(crate) outcome: RecordOutcome,
}

/// How a hooked call ended, as its span reports it.
pub(crate) enum RecordOutcome {
    /// The entry was signed and appended.
    Recorded {
        /// What the span reports of the entry.
        entry: EntryFacts,
        /// Its signer.
        workload: StringValue,
        /// The operation.
        operation: StringValue,
        /// The passport after the call.
        passport: PassportView,
    },
    /// Refused or not recorded: the attributes are already built (a rare
    /// path) and the status is an error.
    Refused {
        /// The SPEC §9 attributes of a refusal.
        attributes: Vec<KeyValue>,
        /// The status message.
        message: String,
    },
}

/// What a span reports of its entry, taken on the calling thread without
/// copying the JWS (shared) and without keeping the entry itself alive: the
/// entry is freed where it was allocated, by whoever drops the flow last.
pub(crate) struct EntryFacts {
    jws: Arc<str>,
    hash: EntryHash,
    parents: Hashes,
    entry_id: EntryId,
    trust: u8,
}

/// The entry id: a UUID held in 16 bytes, or the text as signed. Kest's
/// own ids are UUIDs, so the calling thread copies 16 bytes instead of
/// allocating a string the recorder's thread would free (measured: about
/// 1.5 points of export overhead with glibc's malloc).
enum EntryId {
    Uuid(uuid::Uuid),
    Text(String),
}

impl EntryId {
    fn of(id: &str) -> EntryId {
        // Only the canonical form round-trips to the same text.
        match uuid::Uuid::try_parse(id) {
            Ok(uuid) if uuid.hyphenated().encode_lower(&mut uuid::Uuid::encode_buffer()) == id => {
                EntryId::Uuid(uuid)
            }
            _ => EntryId::Text(id.to_owned()),
        }
    }

    fn into_text(self) -> String {
        match self {
            EntryId::Uuid(uuid) => uuid.hyphenated().to_string(),
            EntryId::Text(text) => text,
        }
    }
}

impl EntryFacts {
    fn of(entry: &Entry) -> EntryFacts {
        EntryFacts {
            jws: entry.jws_shared(),
            hash: entry.hash(),
            parents: Hashes::of(entry.parents()),
            entry_id: EntryId::of(&entry.payload().entry_id),
            trust: entry.payload().trust_score,
        }
    }
}

impl RecordOutcome {
    /// The span's attributes and status.
    pub(crate) fn into_attributes(self) -> (Vec<KeyValue>, Status) {
        match self {
            RecordOutcome::Recorded { entry, workload, operation, passport } => {
                (recorded_attributes(entry, workload, operation, passport), Status::Unset)
            }
            RecordOutcome::Refused { attributes, message } => (attributes, Status::error(message)),
        }
    }
}

/// The SPEC §9 attributes of a recorded call.
fn recorded_attributes(
    entry: EntryFacts,
    workload: StringValue,
    operation: StringValue,
    passport: PassportView,
) -> Vec<KeyValue> {
    let EntryFacts { jws, hash, parents, entry_id, trust } = entry;
    let hash_hex: Arc<str> = Arc::from(hash.to_string());
    let parent_hash = parents.format();
    let mut attributes = Vec::with_capacity(ATTRIBUTE_CAPACITY);
    attributes.extend([
        KeyValue::new(attr::SIGNATURE, StringValue::from(jws)),
        KeyValue::new(attr::ENTRY_HASH, StringValue::from(Arc::clone(&hash_hex))),
        KeyValue::new(attr::PARENT_HASH, parent_hash),
        KeyValue::new(attr::ENTRY_ID, entry_id.into_text()),
        KeyValue::new(attr::WORKLOAD_ID, workload),
        KeyValue::new(attr::TRUST_SCORE, i64::from(trust)),
        KeyValue::new(attr::OPERATION, operation),
        KeyValue::new(attr::DECISION, "allow"),
    ]);
    match passport {
        PassportView::Inline(json) => attributes.push(KeyValue::new(attr::PASSPORT, json)),
        PassportView::ClaimCheck { claim, tips } => {
            attributes.push(KeyValue::new(attr::CLAIM_CHECK, claim.to_string()));
            let tip = match tips {
                Hashes::One(only) if only == hash => StringValue::from(hash_hex),
                other => StringValue::from(other.format()),
            };
            attributes.push(KeyValue::new(attr::CHAIN_TIP, tip));
        }
    }
    attributes
}

/// The SPEC §9 attributes of a refused (or unrecorded) call.
fn refusal_attributes(operation: StringValue, error: &KestError) -> Vec<KeyValue> {
    let decision = match error {
        KestError::Denied { .. } | KestError::NoPolicyEvaluated { .. } => "deny",
        _ => "error",
    };
    let mut attributes = vec![
        KeyValue::new(attr::OPERATION, operation),
        KeyValue::new(attr::DECISION, decision),
        KeyValue::new(attr::ERROR_KIND, error.kind()),
    ];
    if let Some((policy, tier)) = error.policy() {
        attributes.push(KeyValue::new(attr::DENIED_POLICY, policy.to_owned()));
        attributes.push(KeyValue::new(attr::DENIED_TIER, tier.as_str()));
    }
    if let KestError::Denied { entry_id, workload, .. } = error {
        attributes.push(KeyValue::new(attr::ENTRY_ID, entry_id.clone()));
        attributes.push(KeyValue::new(attr::WORKLOAD_ID, workload.clone()));
    }
    attributes
}

/// A span to Kest's recorder: ids and start time only, until it ends.
struct DirectSpan {
    sink: Arc<dyn HookSink>,
    span_context: SpanContext,
    parent_span_id: SpanId,
    parent_is_remote: bool,
    start: SystemTime,
}

enum Route {
    Api(BoxedSpan),
    Direct(DirectSpan),
}

/// `kest.error_kind` of a span whose call ended before it was decided or
/// recorded: its future was dropped (a cancelled request, a timeout) or a
/// policy engine panicked.
pub(crate) const ABANDONED: &str = "abandoned";

/// The span of one hooked call. Ended by [`HookSpan::end_error`] or
/// [`HookSpan::end_recorded`]; dropped without either, it still ends and
/// is exported, with `kest.decision` `error` and `kest.error_kind`
/// [`ABANDONED`], so no started call is missing from the telemetry.
pub(crate) struct HookSpan {
    /// `None` once ended.
    route: Option<Route>,
    name: Cow<'static, str>,
    operation: StringValue,
}

impl HookSpan {
    /// Starts `kest.verified.<operation>` as a child of the current
    /// OpenTelemetry context.
    pub(crate) fn start(labels: &SpanLabels) -> HookSpan {
        let parent = opentelemetry::Context::current();
        let route = match current_sink() {
            Some(sink) => {
                let parent_span = parent.span();
                let parent_context = parent_span.span_context();
                let (trace_id, span_id) = sink.new_ids(parent_context);
                let trace_state = if parent_context.is_valid() {
                    parent_context.trace_state().clone()
                } else {
                    Default::default()
                };
                let span_context = SpanContext::new(
                    trace_id,
                    span_id,
                    opentelemetry::trace::TraceFlags::SAMPLED,
                    false,
                    trace_state,
                );
                Route::Direct(DirectSpan {
                    span_context,
                    parent_span_id: if parent_context.is_valid() {
                        parent_context.span_id()
                    } else {
                        SpanId::INVALID
                    },
                    parent_is_remote: parent_context.is_valid() && parent_context.is_remote(),
                    start: SystemTime::now(),
                    sink,
                })
            }
            None => {
                let scope =
                    InstrumentationScope::builder(SCOPE).with_version(env!("CARGO_PKG_VERSION")).build();
                let tracer = global::tracer_with_scope(scope);
                Route::Api(
                    tracer
                        .span_builder(labels.name.clone())
                        .with_attributes(Vec::with_capacity(ATTRIBUTE_CAPACITY))
                        .start_with_context(&tracer, &parent),
                )
            }
        };
        HookSpan { route: Some(route), name: labels.name.clone(), operation: labels.operation.clone() }
    }

    /// The trace id (32 lowercase hex) when a real trace is active.
    pub(crate) fn trace_id(&self) -> Option<String> {
        let ctx = match self.route.as_ref()? {
            Route::Api(span) => span.span_context(),
            Route::Direct(direct) => &direct.span_context,
        };
        ctx.is_valid().then(|| format!("{:032x}", u128::from_be_bytes(ctx.trace_id().to_bytes())))
    }

    /// Ends the span for a call that was refused or could not be recorded:
    /// `kest.decision` is `deny` for a policy denial (and a call whose
    /// deviations skipped every policy), `error` otherwise; the denying (or
    /// failing) policy and tier when there is one; status error.
    pub(crate) fn end_error(mut self, error: &KestError) {
        let operation = self.operation.clone();
        self.end_refused(|| refusal_attributes(operation, error), || error.to_string());
    }

    /// Ends the span with refusal attributes and an error status (built
    /// only if the span records).
    fn end_refused(&mut self, attributes: impl FnOnce() -> Vec<KeyValue>, message: impl FnOnce() -> String) {
        match self.route.take() {
            Some(Route::Api(mut span)) => {
                if span.is_recording() {
                    span.set_attributes(attributes());
                    span.set_status(Status::error(message()));
                }
                span.end();
            }
            Some(Route::Direct(direct)) => {
                let outcome = RecordOutcome::Refused { attributes: attributes(), message: message() };
                direct.finish(self.name.clone(), outcome);
            }
            None => {}
        }
    }

    /// Ends the span of the call whose entry `hash` was just appended to
    /// `lineage`, with the SPEC §9 attributes.
    pub(crate) fn end_recorded(mut self, hash: &EntryHash, workload: &str, lineage: &Lineage) {
        if let Some(Route::Api(span)) = &mut self.route
            && !span.is_recording()
        {
            // Nothing records it: no attribute is computed.
            span.end();
            self.route = None;
            return;
        }
        // Read in place under the flow's lock: the entry is shared, the
        // passport serialized only when it is small enough to go inline.
        let found = lineage.with_span_view(|passport, tips, digest| {
            passport.get(hash).map(|entry| (EntryFacts::of(entry), PassportView::of(passport, tips, digest)))
        });
        let Some((entry, passport)) = found else {
            // The caller appended the entry to this flow just before.
            tracing::error!(entry = %hash, "kest: the recorded entry is not in its flow; span without attributes");
            let operation = self.operation.clone();
            self.end_refused(
                || vec![KeyValue::new(attr::OPERATION, operation)],
                || "the recorded entry is not in its flow".into(),
            );
            return;
        };
        let outcome = RecordOutcome::Recorded {
            entry,
            workload: workload_value(workload),
            operation: self.operation.clone(),
            passport,
        };
        match self.route.take() {
            Some(Route::Api(mut span)) => {
                let (attributes, _) = outcome.into_attributes();
                span.set_attributes(attributes);
                span.end();
            }
            Some(Route::Direct(direct)) => direct.finish(self.name.clone(), outcome),
            None => {}
        }
    }
}

impl Drop for HookSpan {
    fn drop(&mut self) {
        if self.route.is_none() {
            return;
        }
        let operation = self.operation.clone();
        self.end_refused(
            || {
                vec![
                    KeyValue::new(attr::OPERATION, operation),
                    KeyValue::new(attr::DECISION, "error"),
                    KeyValue::new(attr::ERROR_KIND, ABANDONED),
                ]
            },
            || "the call ended before it was decided or recorded (dropped or panicked)".into(),
        );
    }
}

impl DirectSpan {
    fn finish(self, name: Cow<'static, str>, outcome: RecordOutcome) {
        let DirectSpan { sink, span_context, parent_span_id, parent_is_remote, start } = self;
        sink.submit(HookRecord {
            span_context,
            parent_span_id,
            parent_is_remote,
            name,
            start,
            end: SystemTime::now(),
            outcome,
        });
    }
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
#[cfg(test)]
pub(crate) fn passport_claim_uuid(hashes: impl IntoIterator<Item = kest_core::EntryHash>) -> uuid::Uuid {
    let mut h = Sha256::new();
    for hash in hashes {
        h.update(hash.as_bytes());
    }
    claim_uuid_of_digest(&h.finalize())
}

/// The claim-check UUID from the SHA-256 of the entry hashes.
fn claim_uuid_of_digest(digest: &[u8]) -> uuid::Uuid {
    let mut bytes = [0u8; 16];
    for (b, d) in bytes.iter_mut().zip(digest.iter()) {
        *b = *d;
    }
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passport_of(signer: &kest_core::Ed25519Signer, steps: &[&str]) -> Passport {
        let mut passport = Passport::new();
        for step in steps {
            passport
                .record(&kest_core::EntryDraft::new(*step), signer, &kest_core::TrustRules::default())
                .unwrap();
        }
        passport
    }

    fn check(digest: &mut PassportDigest, passport: &Passport) {
        digest.advance(passport);
        assert_eq!(digest.json_len(), passport.to_json().len());
        assert_eq!(digest.claim(), passport_claim_uuid(passport.entries().iter().map(|e| e.hash())));
    }

    #[test]
    fn the_digest_follows_appends_merges_and_a_different_passport() {
        let signer = kest_core::Ed25519Signer::from_seed("spiffe://t/a", [7u8; 32]);
        let mut digest = PassportDigest::default();
        let mut passport = Passport::new();
        check(&mut digest, &passport);
        for step in ["a", "b", "c"] {
            passport
                .record(&kest_core::EntryDraft::new(step), &signer, &kest_core::TrustRules::default())
                .unwrap();
            check(&mut digest, &passport);
        }
        // A merge appends the other passport's new entries after ours.
        let other = passport_of(&signer, &["x", "y"]);
        let merged = passport.merge(&other);
        check(&mut digest, &merged);
        assert_eq!(digest.counted, 5);
        // Another passport (not an extension of the one counted): start over.
        check(&mut digest, &other);
        assert_eq!(digest.counted, 2);
        check(&mut digest, &passport_of(&signer, &["z"]));
    }

    #[test]
    fn claim_id_is_the_hash_of_the_entry_hashes() {
        let hashes = [kest_core::EntryHash::of("a.b.c"), kest_core::EntryHash::of("d.e.f")];
        let mut concat = Vec::new();
        for h in &hashes {
            concat.extend_from_slice(h.as_bytes());
        }
        let digest = Sha256::digest(&concat);
        let id = passport_claim_uuid(hashes);
        assert_eq!(id.get_version_num(), 8);
        // Everything but the version and variant bits comes from the hash.
        let mut expected = [0u8; 16];
        expected.copy_from_slice(&digest[..16]);
        expected[6] = (expected[6] & 0x0f) | 0x80;
        expected[8] = (expected[8] & 0x3f) | 0x80;
        assert_eq!(id.as_bytes(), &expected);
        assert_ne!(passport_claim_uuid(hashes), passport_claim_uuid(hashes[..1].iter().copied()));
        assert_ne!(passport_claim_uuid(hashes), passport_claim_uuid([hashes[1], hashes[0]]), "order matters");
    }
}
