//! Telemetry (SPEC §9): one span per hooked call, through the
//! OpenTelemetry API, instrumentation scope `kest.core`.
//!
//! The span is named `kest.verified.<operation>` and, once the entry is
//! recorded, carries `kest.signature`, `kest.parent_hash`, `kest.passport`,
//! `kest.entry_id`, `kest.workload_id`, `kest.trust_score` and
//! `kest.operation`. With no tracer provider installed the API is a no-op
//! and the passport is never serialized for it. `service.name` is a resource
//! attribute of whatever provider the application installs.

use opentelemetry::global::{self, BoxedSpan};
use opentelemetry::trace::{Span as _, Status, TraceContextExt as _, Tracer as _};
use opentelemetry::{InstrumentationScope, KeyValue};

use crate::error::KestError;
use crate::lineage::Lineage;

/// The instrumentation scope name.
pub const SCOPE: &str = "kest.core";

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

    /// Ends the span for a call that was refused or could not be recorded.
    pub(crate) fn end_error(mut self, error: &KestError) {
        self.span.set_attribute(KeyValue::new("kest.operation", self.operation.clone()));
        if let Some((policy, tier)) = error.policy() {
            self.span.set_attribute(KeyValue::new("kest.denied_policy", policy.to_owned()));
            self.span.set_attribute(KeyValue::new("kest.denied_tier", tier.as_str()));
        }
        self.span.set_status(Status::error(error.to_string()));
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
            // Only serialized when a real tracer records the span.
            let passport = lineage.passport();
            let parent_hash = passport
                .get(hash)
                .filter(|e| !e.is_root())
                .map(|e| e.parents().iter().map(ToString::to_string).collect::<Vec<_>>().join(","))
                .unwrap_or_else(|| "0".to_owned());
            self.span.set_attributes([
                KeyValue::new("kest.signature", jws.to_owned()),
                KeyValue::new("kest.parent_hash", parent_hash),
                KeyValue::new("kest.passport", passport.to_json()),
                KeyValue::new("kest.entry_id", entry_id.to_owned()),
                KeyValue::new("kest.workload_id", workload.to_owned()),
                KeyValue::new("kest.trust_score", i64::from(trust)),
                KeyValue::new("kest.operation", self.operation.clone()),
            ]);
        }
        self.span.end();
    }
}

/// Whether the current OpenTelemetry context carries a valid span.
pub fn has_active_trace() -> bool {
    opentelemetry::Context::current().span().span_context().is_valid()
}
