//! `kest audit`: rebuild and verify every passport of every trace from span
//! exports (OTLP JSON lines, SQLite stores, directories of collector files).

use std::path::PathBuf;

use clap::Args;
use serde_json::{Value, json};

use super::{Format, load_keys, parse_origins};
use crate::audit::{Audit, Denial, Finding, TraceAudit, audit};
use crate::export::{self, Problem, is_hex_id};
use crate::render::{count, short};
use crate::{CliError, Exit};

/// Arguments of `kest audit`.
#[derive(Debug, Args)]
#[command(
    after_help = "Exit status: 0 every trace verified and complete, 1 a trace is invalid or incomplete \
(or a record unreadable; each defect is printed with the export record it is in), 2 usage or I/O error."
)]
pub struct AuditArgs {
    /// JWKS (or JWK) file with the signers' public keys; repeatable.
    #[arg(long = "keys", value_name = "JWKS", required = true)]
    pub keys: Vec<PathBuf>,
    /// Audit only this trace (32 lowercase hex).
    #[arg(long, value_name = "TRACE_ID")]
    pub trace: Option<String>,
    /// Semantic checks (taints and trust recomputed from the parents). Always on in an audit;
    /// accepted for symmetry with `kest verify`.
    #[arg(long)]
    pub semantic: bool,
    /// Extra deployment origin for the semantic checks, NAME=SCORE; repeatable.
    #[arg(long = "origin", value_name = "NAME=SCORE")]
    pub origins: Vec<String>,
    /// A principal allowed to raise trust (sanitize); repeatable.
    #[arg(long = "sanitizer", value_name = "PRINCIPAL")]
    pub sanitizers: Vec<String>,
    /// Reject a root whose kest.source_type is neither a default origin nor an --origin.
    #[arg(long)]
    pub strict_origins: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Export files (OTLP JSON lines, SQLite span stores) or directories of them.
    #[arg(value_name = "EXPORT", required = true)]
    pub exports: Vec<PathBuf>,
}

/// Checks a `--trace` value.
pub(crate) fn check_trace_id(trace: Option<&str>) -> Result<(), CliError> {
    match trace {
        Some(t) if !is_hex_id(t, 32) => Err(CliError(format!(
            "--trace `{}`: a trace id is 32 lowercase hex digits, not all zero",
            crate::render::ellipsis(&crate::render::printable(t), 40)
        ))),
        _ => Ok(()),
    }
}

/// Runs `kest audit`.
pub fn run(args: &AuditArgs) -> Result<Exit, CliError> {
    let result = (|| {
        check_trace_id(args.trace.as_deref())?;
        // Semantic checks are always on in an audit.
        let keys = load_keys(&args.keys)?;
        let verifier =
            super::verifier(keys, parse_origins(&args.origins)?, &args.sanitizers, args.strict_origins, true);
        let export = export::read(&args.exports)?;
        Ok::<_, CliError>(audit(&export, &verifier, args.trace.as_deref()))
    })();
    let report = match result {
        Ok(report) => report,
        Err(e) => {
            if args.format == Format::Json {
                println!("{}", json!({ "valid": false, "kind": "usage", "message": e.0 }));
            }
            return Err(e);
        }
    };
    match args.format {
        Format::Json => println!("{}", report_json(&report, args.trace.as_deref())),
        Format::Text => print!("{}", report_text(&report, args.trace.as_deref())),
    }
    Ok(if report.is_valid() { Exit::Ok } else { Exit::Invalid })
}

fn finding_json(f: &Finding) -> Value {
    json!({ "kind": f.kind, "location": f.location, "entry_hash": f.entry_hash, "message": f.message })
}

fn problem_json(p: &Problem) -> Value {
    json!({ "kind": p.kind, "location": p.location, "message": p.message })
}

fn denial_json(d: &Denial) -> Value {
    json!({
        "operation": d.operation, "policy": d.policy, "tier": d.tier, "service": d.service,
        "message": d.message, "location": d.location,
    })
}

fn trace_json(t: &TraceAudit) -> Value {
    let first = t.first_defect();
    json!({
        "trace_id": t.trace_id,
        "valid": t.is_valid(),
        "kind": first.map(|f| f.kind),
        "message": first.map(|f| f.message.clone()),
        "services": t.services,
        "kest_spans": t.kest_spans,
        "entries": t.rebuilt.len(),
        "principals": t.principals,
        "roots": t.roots,
        "tips": t.tips,
        "error": t.error.as_ref().map(finding_json),
        "findings": t.findings.iter().map(finding_json).collect::<Vec<_>>(),
        "denials": t.denials.iter().map(denial_json).collect::<Vec<_>>(),
        "passport": serde_json::from_str::<Value>(&t.rebuilt.to_json()).unwrap_or(Value::Null),
    })
}

/// The machine-readable report.
pub fn report_json(report: &Audit, trace: Option<&str>) -> Value {
    let first = report
        .problems
        .first()
        .map(|p| (p.kind, p.message.clone()))
        .or_else(|| report.traces.iter().find_map(|t| t.first_defect()).map(|f| (f.kind, f.message.clone())))
        .or_else(|| report.traces.is_empty().then(|| ("trace_not_found", no_trace_message(trace))));
    json!({
        "valid": report.is_valid(),
        "kind": first.as_ref().map(|f| f.0),
        "message": first.map(|f| f.1),
        "spans": report.spans,
        "other_spans": report.other_spans,
        "problems": report.problems.iter().map(problem_json).collect::<Vec<_>>(),
        "traces": report.traces.iter().map(trace_json).collect::<Vec<_>>(),
    })
}

fn no_trace_message(trace: Option<&str>) -> String {
    match trace {
        Some(t) => format!("no Kest span of trace {t} in the exports"),
        None => "no Kest spans in the exports".to_owned(),
    }
}

fn finding_line(f: &Finding) -> String {
    let at = f.location.as_deref().map(|l| format!(" at {l}")).unwrap_or_default();
    format!("{}{at}: {}", f.kind, f.message)
}

/// The human-readable report.
pub fn report_text(report: &Audit, trace: Option<&str>) -> String {
    let mut out = String::new();
    let traces = count(report.traces.len(), "trace", "traces");
    out.push_str(&format!(
        "audit: {} read ({} not Kest's), {traces}\n",
        count(report.spans, "span", "spans"),
        report.other_spans
    ));
    for p in &report.problems {
        out.push_str(&format!("  UNREADABLE {} at {}: {}\n", p.kind, p.location, p.message));
    }
    if report.traces.is_empty() {
        out.push_str(&format!("  {}\n", no_trace_message(trace)));
    }
    for t in &report.traces {
        let verdict = if t.is_valid() { "VALID" } else { "INVALID" };
        out.push_str(&format!(
            "\ntrace {}: {verdict} — {}, {}, services: {}\n",
            t.trace_id,
            count(t.rebuilt.len(), "entry", "entries"),
            count(t.denials.len(), "denial", "denials"),
            t.services.iter().cloned().collect::<Vec<_>>().join(", ")
        ));
        out.push_str(&format!("  principals: {}\n", t.principals.join(", ")));
        let hashes = |v: &[String]| v.iter().map(|h| short(h, 12).to_owned()).collect::<Vec<_>>().join(", ");
        out.push_str(&format!("  roots: {}   tips: {}\n", hashes(&t.roots), hashes(&t.tips)));
        if let Some(e) = &t.error {
            out.push_str(&format!("  first error: {}\n", finding_line(e)));
        }
        for f in &t.findings {
            out.push_str(&format!("  {}\n", finding_line(f)));
        }
        for d in &t.denials {
            let policy = match (&d.policy, &d.tier) {
                (Some(p), Some(tier)) => format!(" by policy {p} ({tier} tier)"),
                (Some(p), None) => format!(" by policy {p}"),
                _ => String::new(),
            };
            let service = d.service.as_deref().map(|s| format!(" in {s}")).unwrap_or_default();
            let why = d.message.as_deref().map(|m| format!(": {m}")).unwrap_or_default();
            out.push_str(&format!("  denied `{}`{service}{policy}{why} [{}]\n", d.operation, d.location));
        }
    }
    out
}
