//! OTLP JSON lines: one `ExportTraceServiceRequest` per line, in the
//! OTLP/JSON encoding (hex trace and span ids, 64-bit integers as strings
//! or numbers) — what the OpenTelemetry Collector's file exporter and Kest's
//! `file` exporter write. Decoded with the official `opentelemetry-proto`
//! types.

use std::fs::File;
use std::io::{BufRead as _, BufReader, Read as _};
use std::path::Path;

use kest_core::encoding::hex_lower;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::Span;

use super::{Export, ExportedSpan, KestAttributes, Origin, Problem, is_hex_id};
use crate::CliError;

/// The longest line read (a span batch with passports attached).
pub(crate) const MAX_LINE_BYTES: usize = 64 * 1024 * 1024;

/// Reads every line of `path`; a line that is not an OTLP JSON trace
/// request becomes a [`Problem`] naming the line.
pub(super) fn read(path: &Path, export: &mut Export) -> Result<(), CliError> {
    let file = File::open(path).map_err(|e| CliError(format!("{}: {e}", path.display())))?;
    let mut reader = BufReader::with_capacity(1 << 16, file);
    let mut line_no = 0usize;
    let mut buf = Vec::new();
    loop {
        buf.clear();
        line_no += 1;
        let cap = u64::try_from(MAX_LINE_BYTES).unwrap_or(u64::MAX) + 1;
        let n = (&mut reader)
            .take(cap)
            .read_until(b'\n', &mut buf)
            .map_err(|e| CliError(format!("{}:{line_no}: {e}", path.display())))?;
        if n == 0 {
            break;
        }
        let location = format!("{}:{line_no}", path.display());
        if buf.len() > MAX_LINE_BYTES {
            export.problems.push(Problem {
                kind: "malformed_record",
                location,
                message: format!("line longer than {MAX_LINE_BYTES} bytes"),
            });
            // Skip the rest of the line.
            let mut rest = Vec::new();
            reader
                .read_until(b'\n', &mut rest)
                .map_err(|e| CliError(format!("{}:{line_no}: {e}", path.display())))?;
            continue;
        }
        let text = buf.strip_suffix(b"\n").unwrap_or(&buf);
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        if text.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        // A last line without its newline (a writer cut off mid-line) is
        // still read if it parses, and reported if it does not.
        match serde_json::from_slice::<ExportTraceServiceRequest>(text) {
            Ok(request) => {
                let origin = Origin::Line { path: path.to_owned(), line: line_no };
                collect(&request, &origin, &location, export);
            }
            Err(e) => export.problems.push(Problem {
                kind: "malformed_record",
                location,
                message: format!("not an OTLP JSON trace export request: {e}"),
            }),
        }
    }
    Ok(())
}

/// The spans of one request (a batch), each with `origin`.
pub(crate) fn collect(
    request: &ExportTraceServiceRequest,
    origin: &Origin,
    location: &str,
    export: &mut Export,
) {
    for resource_spans in &request.resource_spans {
        let service = resource_spans
            .resource
            .as_ref()
            .and_then(|r| r.attributes.iter().find(|kv| kv.key == "service.name"))
            .and_then(string_value);
        for scope_spans in &resource_spans.scope_spans {
            let scope = scope_spans.scope.as_ref().map(|s| s.name.clone());
            for span in &scope_spans.spans {
                match convert(span, origin, service.clone(), scope.clone()) {
                    Ok(span) => export.spans.push(span),
                    Err(message) => export.problems.push(Problem {
                        kind: "malformed_record",
                        location: location.to_owned(),
                        message,
                    }),
                }
            }
        }
    }
}

fn convert(
    span: &Span,
    origin: &Origin,
    service: Option<String>,
    scope: Option<String>,
) -> Result<ExportedSpan, String> {
    let trace_id = hex_lower(&span.trace_id);
    let span_id = hex_lower(&span.span_id);
    if !is_hex_id(&trace_id, 32) {
        return Err(format!("span `{}` has no valid trace id", span.name));
    }
    if !is_hex_id(&span_id, 16) {
        return Err(format!("span `{}` has no valid span id", span.name));
    }
    let mut kest = KestAttributes::default();
    for kv in &span.attributes {
        if kv.key == "kest.trust_score" {
            kest.trust_score = int_value(kv);
        } else if kv.key.starts_with("kest.")
            && let Some(s) = string_value(kv)
        {
            kest.set_str(&kv.key, s);
        }
    }
    Ok(ExportedSpan {
        origin: origin.clone(),
        trace_id,
        span_id,
        name: span.name.clone(),
        service,
        scope,
        status_code: span.status.as_ref().map_or(0, |s| s.code),
        status_message: span.status.as_ref().map(|s| s.message.clone()).filter(|m| !m.is_empty()),
        kest,
    })
}

fn string_value(kv: &KeyValue) -> Option<String> {
    match kv.value.as_ref()?.value.as_ref()? {
        any_value::Value::StringValue(s) => Some(s.clone()),
        _ => None,
    }
}

fn int_value(kv: &KeyValue) -> Option<i64> {
    match kv.value.as_ref()?.value.as_ref()? {
        any_value::Value::IntValue(i) => Some(*i),
        any_value::Value::StringValue(s) => s.parse().ok(),
        _ => None,
    }
}
