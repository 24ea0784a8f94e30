//! The file and stdout exporters: one OTLP/JSON `ExportTraceServiceRequest`
//! per line, the format the OpenTelemetry Collector's file exporter writes.
//!
//! The request is built with the official SDK → protobuf conversion of
//! `opentelemetry-proto` and serialized with its OTLP/JSON serde mapping:
//! camelCase field names, `traceId`/`spanId`/`parentSpanId` as lowercase
//! hex, 64-bit integers (`startTimeUnixNano`, `intValue`) as JSON strings,
//! enums (`kind`, `status.code`) as integers.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::sync::Mutex;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SpanData, SpanExporter};

/// One batch of spans as an OTLP/JSON `ExportTraceServiceRequest` (one
/// line, no trailing newline).
///
/// ```
/// use opentelemetry_sdk::Resource;
/// let line = kest::telemetry::to_otlp_json(Vec::new(), &Resource::builder().with_service_name("svc").build());
/// let value: serde_json::Value = serde_json::from_str(&line).unwrap();
/// let attrs = &value["resourceSpans"][0]["resource"]["attributes"];
/// assert!(attrs.as_array().unwrap().iter().any(|kv| kv["key"] == "service.name"
///     && kv["value"]["stringValue"] == "svc"));
/// ```
pub fn to_otlp_json(batch: Vec<SpanData>, resource: &Resource) -> String {
    let request = to_request(batch, &ResourceAttributesWithSchema::from(resource));
    // The generated types serialize infallibly (strings, numbers, bytes as
    // hex); an error here would be a bug in the mapping.
    serde_json::to_string(&request).unwrap_or_else(|e| {
        tracing::error!(error = %e, "kest telemetry: a span batch could not be serialized as OTLP/JSON");
        String::from("{}")
    })
}

fn to_request(batch: Vec<SpanData>, resource: &ResourceAttributesWithSchema) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest { resource_spans: group_spans_by_resource_and_scope(batch, resource) }
}

/// Writes each batch as one JSON line to a writer, flushed per batch.
pub(crate) struct JsonLinesExporter {
    target: String,
    out: Mutex<Box<dyn Write + Send>>,
    resource: ResourceAttributesWithSchema,
}

impl fmt::Debug for JsonLinesExporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JsonLinesExporter").field("target", &self.target).finish_non_exhaustive()
    }
}

impl JsonLinesExporter {
    /// Appends to `path` (created if missing; parent directories are not
    /// created). Opened now, so a path that cannot be written is an error
    /// at start-up, not a silent loss later.
    pub(crate) fn file(path: &Path) -> io::Result<JsonLinesExporter> {
        let file: File = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(JsonLinesExporter::new(path.display().to_string(), Box::new(file)))
    }

    /// Writes to standard output.
    pub(crate) fn stdout() -> JsonLinesExporter {
        JsonLinesExporter::new("stdout".into(), Box::new(io::stdout()))
    }

    fn new(target: String, out: Box<dyn Write + Send>) -> JsonLinesExporter {
        JsonLinesExporter { target, out: Mutex::new(out), resource: ResourceAttributesWithSchema::default() }
    }

    fn write_batch(&self, batch: Vec<SpanData>) -> io::Result<()> {
        let request = to_request(batch, &self.resource);
        let mut line = serde_json::to_vec(&request).map_err(io::Error::other)?;
        line.push(b'\n');
        let mut out = self.out.lock().map_err(|_| io::Error::other("writer lock poisoned"))?;
        // One write of the whole line, so concurrent appenders to the same
        // file (O_APPEND) never interleave inside a line.
        out.write_all(&line)?;
        out.flush()
    }
}

impl SpanExporter for JsonLinesExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        if batch.is_empty() {
            return Ok(());
        }
        self.write_batch(batch)
            .map_err(|e| OTelSdkError::InternalFailure(format!("writing spans to `{}`: {e}", self.target)))
    }

    fn force_flush(&self) -> OTelSdkResult {
        let mut out =
            self.out.lock().map_err(|_| OTelSdkError::InternalFailure("writer lock poisoned".into()))?;
        out.flush().map_err(|e| OTelSdkError::InternalFailure(format!("flushing `{}`: {e}", self.target)))
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.resource = ResourceAttributesWithSchema::from(resource);
    }
}
