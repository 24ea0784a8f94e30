//! Audit from exports (SPEC §9): rebuild every passport of every trace from
//! the `kest.signature` entries of the exported spans alone, verify it with
//! every check, and report what is missing or inconsistent.
//!
//! Nothing in a span is trusted except the signed entries, and they only
//! after verification; every other attribute (`kest.entry_hash`,
//! `kest.parent_hash`, `kest.passport`, `kest.trust_score`, …) is
//! *cross-checked* against the entries, so an edited export row is named
//! precisely instead of being believed.
//!
//! A trace is valid only when its rebuilt passport verifies (semantic
//! checks included) and no finding was made about it; an audit is valid
//! only when every trace is and every record could be read.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use kest_core::baggage::parse_chain_tip;
use kest_core::{EntryHash, KestEntry, Limits, Passport, UnverifiedPassport, Verifier};

use crate::export::{Export, ExportedSpan, Problem};

/// Nesting limit when decoding entries.
const MAX_DEPTH: usize = 64;

/// One defect found about a trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Stable kind: a verification error kind (`bad_signature`,
    /// `unknown_signer`, `dangling_parent`, …) or one of the audit's own:
    /// `missing_parent`, `unrecorded_entry`, `passport_disagrees`,
    /// `span_mismatch`, `malformed_entry`, `unsigned_span`,
    /// `conflicting_span`, `duplicate_entry`.
    pub kind: &'static str,
    /// The export record it is about (`file:line`, `db row N`).
    pub location: Option<String>,
    /// The entry it is about.
    pub entry_hash: Option<String>,
    /// What is wrong.
    pub message: String,
}

/// A call that was refused before it ran (no entry was recorded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// The operation.
    pub operation: String,
    /// The policy that denied it, when the span names one.
    pub policy: Option<String>,
    /// Its tier.
    pub tier: Option<String>,
    /// The service that refused it.
    pub service: Option<String>,
    /// The span's status message.
    pub message: Option<String>,
    /// The export record.
    pub location: String,
}

/// The audit of one trace.
#[derive(Debug)]
pub struct TraceAudit {
    /// 32 lowercase hex.
    pub trace_id: String,
    /// `service.name` of every span of the trace.
    pub services: BTreeSet<String>,
    /// Kest spans in the trace (recorded calls and refusals).
    pub kest_spans: usize,
    /// The rebuilt passport, in topological order (unverified).
    pub rebuilt: UnverifiedPassport,
    /// Where each rebuilt entry was recorded (same order).
    pub entry_locations: Vec<String>,
    /// Signers of the rebuilt entries, in first-seen order.
    pub principals: Vec<String>,
    /// Root and tip hashes of the rebuilt DAG.
    pub roots: Vec<String>,
    /// Tips: entries no other entry names as parent.
    pub tips: Vec<String>,
    /// The verified passport, when verification passed.
    pub verified: Option<Passport>,
    /// The first verification error, when it failed.
    pub error: Option<Finding>,
    /// Everything else found (completeness and consistency).
    pub findings: Vec<Finding>,
    /// Refused calls.
    pub denials: Vec<Denial>,
}

impl TraceAudit {
    /// Valid: the passport verified and nothing else was found.
    pub fn is_valid(&self) -> bool {
        self.error.is_none() && self.findings.is_empty()
    }

    /// The first defect: the verification error, else the first finding.
    pub fn first_defect(&self) -> Option<&Finding> {
        self.error.as_ref().or_else(|| self.findings.first())
    }
}

/// The audit of all exports.
#[derive(Debug)]
pub struct Audit {
    /// Spans read.
    pub spans: usize,
    /// Spans that are not Kest's (the service's own, other scopes).
    pub other_spans: usize,
    /// Records that could not be read.
    pub problems: Vec<Problem>,
    /// Per trace, in trace id order.
    pub traces: Vec<TraceAudit>,
}

impl Audit {
    /// Valid: every record read, every trace valid, at least one trace.
    pub fn is_valid(&self) -> bool {
        self.problems.is_empty() && !self.traces.is_empty() && self.traces.iter().all(TraceAudit::is_valid)
    }
}

/// A decoded `kest.signature`.
struct Recorded<'a> {
    span: &'a ExportedSpan,
    jws: &'a str,
    hash: EntryHash,
    entry: KestEntry,
}

/// Audits `export`: every trace (or only `trace`), each verified with
/// `verifier` (which should have semantic checks on).
pub fn audit(export: &Export, verifier: &Verifier, trace: Option<&str>) -> Audit {
    let (other_spans, traces) = traces(export, Some(verifier), trace);
    Audit { spans: export.spans.len(), other_spans, problems: export.problems.clone(), traces }
}

/// A trace's passport rebuilt from the exports, *not verified* (to draw it;
/// `kest viz` verifies it itself when given keys), and its refused calls.
#[derive(Debug)]
pub struct Rebuilt {
    /// The entries in topological order.
    pub passport: UnverifiedPassport,
    /// Refused calls.
    pub denials: Vec<Denial>,
}

/// Rebuilds trace `trace` from `export` without verifying it; `None` when
/// the export has no Kest span of that trace.
pub fn rebuild(export: &Export, trace: &str) -> Option<Rebuilt> {
    let (_, traces) = traces(export, None, Some(trace));
    traces.into_iter().next().map(|t| Rebuilt { passport: t.rebuilt, denials: t.denials })
}

/// The Kest traces of `export` (or only `trace`), verified when `verifier`
/// is given, and the number of spans that are not Kest's.
fn traces(export: &Export, verifier: Option<&Verifier>, trace: Option<&str>) -> (usize, Vec<TraceAudit>) {
    let mut by_trace: BTreeMap<&str, Vec<&ExportedSpan>> = BTreeMap::new();
    let mut other_spans = 0;
    for span in &export.spans {
        if !span.is_kest() {
            other_spans += 1;
        }
        by_trace.entry(span.trace_id.as_str()).or_default().push(span);
    }
    // Where every entry hash is recorded, across traces, to say where a
    // missing parent went.
    let mut recorded_in: HashMap<String, &str> = HashMap::new();
    for span in &export.spans {
        if let Some(jws) = &span.kest.signature {
            recorded_in.insert(EntryHash::of(jws).to_string(), span.trace_id.as_str());
        }
    }
    let traces = by_trace
        .into_iter()
        .filter(|(id, _)| trace.is_none_or(|t| t == *id))
        .filter(|(_, spans)| spans.iter().any(|s| s.is_kest()))
        .map(|(id, spans)| audit_trace(id, &spans, verifier, &recorded_in))
        .collect();
    (other_spans, traces)
}

fn audit_trace(
    trace_id: &str,
    spans: &[&ExportedSpan],
    verifier: Option<&Verifier>,
    recorded_in: &HashMap<String, &str>,
) -> TraceAudit {
    let mut findings = Vec::new();
    let mut denials = Vec::new();
    let services: BTreeSet<String> = spans.iter().filter_map(|s| s.service.clone()).collect();

    // The same span read twice (an export and a collector copy) counts
    // once; the same span id with other content is a conflict.
    let mut seen: HashMap<&str, &ExportedSpan> = HashMap::new();
    let mut unique: Vec<&ExportedSpan> = Vec::new();
    for span in spans.iter().copied().filter(|s| s.is_kest()) {
        match seen.get(span.span_id.as_str()) {
            Some(first) if same_content(first, span) => {}
            Some(first) => findings.push(Finding {
                kind: "conflicting_span",
                location: Some(span.origin.to_string()),
                entry_hash: None,
                message: format!(
                    "span {} is also exported at {} with different content",
                    span.span_id, first.origin
                ),
            }),
            None => {
                seen.insert(span.span_id.as_str(), span);
                unique.push(span);
            }
        }
    }

    // Decode the recorded entries.
    let mut recorded: Vec<Recorded<'_>> = Vec::new();
    let mut by_hash: HashMap<EntryHash, usize> = HashMap::new();
    for span in &unique {
        let Some(jws) = span.kest.signature.as_deref() else {
            if is_refusal(span) {
                denials.push(denial(span));
            } else {
                findings.push(Finding {
                    kind: "unsigned_span",
                    location: Some(span.origin.to_string()),
                    entry_hash: span.kest.entry_hash.clone(),
                    message: format!(
                        "span `{}` records a call that ran (decision {}) but carries no kest.signature",
                        span.name,
                        span.kest.decision.as_deref().unwrap_or("unset")
                    ),
                });
            }
            continue;
        };
        let hash = EntryHash::of(jws);
        let entry = match kest_core::jws::decode_compact(jws, MAX_DEPTH)
            .map_err(|e| e.to_string())
            .and_then(|d| KestEntry::from_json(d.payload).map_err(|e| e.to_string()))
        {
            Ok(entry) => entry,
            Err(e) => {
                findings.push(Finding {
                    kind: "malformed_entry",
                    location: Some(span.origin.to_string()),
                    entry_hash: Some(hash.to_string()),
                    message: format!("kest.signature is not a Kest entry: {e}"),
                });
                continue;
            }
        };
        if let Some(first) = by_hash.get(&hash).and_then(|&i| recorded.get(i)) {
            findings.push(Finding {
                kind: "duplicate_entry",
                location: Some(span.origin.to_string()),
                entry_hash: Some(hash.to_string()),
                message: format!(
                    "entry already recorded by span {} at {}",
                    first.span.span_id, first.span.origin
                ),
            });
            continue;
        }
        by_hash.insert(hash, recorded.len());
        recorded.push(Recorded { span, jws, hash, entry });
    }

    // Cross-check every span attribute against its entry.
    for r in &recorded {
        check_attributes(r, &mut findings);
    }

    // Parents named but not recorded in this trace.
    let present: HashSet<String> = recorded.iter().map(|r| r.hash.to_string()).collect();
    let mut missing: BTreeMap<String, Vec<&Recorded<'_>>> = BTreeMap::new();
    for r in &recorded {
        for parent in r.entry.parent_ids.iter().filter(|p| p.as_str() != kest_core::ROOT_PARENT) {
            if !present.contains(parent) {
                missing.entry(parent.clone()).or_default().push(r);
            }
        }
    }
    for (parent, children) in &missing {
        let elsewhere = match recorded_in.get(parent) {
            Some(other) if *other != trace_id => format!("; it is recorded in trace {other}"),
            _ => "; no exported span records it (deleted span, or an export not given)".to_owned(),
        };
        let child = children.first().map(|c| (c.span.origin.to_string(), c.entry.operation.clone()));
        findings.push(Finding {
            kind: "missing_parent",
            location: child.as_ref().map(|c| c.0.clone()),
            entry_hash: Some(parent.clone()),
            message: format!(
                "parent {parent} of `{}` is missing from this trace{elsewhere}",
                child.map(|c| c.1).unwrap_or_default()
            ),
        });
    }

    // The passports attached to spans must agree with the entries recorded.
    for r in &recorded {
        check_span_passport(r, &present, &mut findings);
    }

    // Rebuild in topological order and verify.
    let order: Vec<&Recorded<'_>> =
        topological(&recorded).into_iter().filter_map(|i| recorded.get(i)).collect();
    let rebuilt = UnverifiedPassport::from_entries(order.iter().map(|r| r.jws.to_owned()).collect());
    let entry_locations: Vec<String> = order.iter().map(|r| r.span.origin.to_string()).collect();
    let mut principals: Vec<String> = Vec::new();
    for r in &order {
        let p = r.entry.principal().to_owned();
        if !principals.contains(&p) {
            principals.push(p);
        }
    }
    let named_as_parent: HashSet<&str> =
        recorded.iter().flat_map(|r| r.entry.parent_ids.iter().map(String::as_str)).collect();
    let roots = order.iter().filter(|r| r.entry.is_root()).map(|r| r.hash.to_string()).collect();
    let tips =
        order.iter().map(|r| r.hash.to_string()).filter(|h| !named_as_parent.contains(h.as_str())).collect();
    let (verified, error) = match verifier.filter(|_| !rebuilt.is_empty()) {
        None => (None, None),
        Some(verifier) => match verifier.verify(&rebuilt) {
            Ok(p) => (Some(p), None),
            Err(e) => {
                let at = e.index().and_then(|i| order.get(i));
                let error = Finding {
                    kind: e.kind().as_str(),
                    location: at.map(|r| r.span.origin.to_string()),
                    entry_hash: at.map(|r| r.hash.to_string()),
                    message: match at {
                        Some(r) => format!("`{}` by {}: {e}", r.entry.operation, r.entry.principal()),
                        None => e.to_string(),
                    },
                };
                (None, Some(error))
            }
        },
    };
    TraceAudit {
        trace_id: trace_id.to_owned(),
        services,
        kest_spans: unique.len(),
        rebuilt,
        entry_locations,
        principals,
        roots,
        tips,
        verified,
        error,
        findings,
        denials,
    }
}

/// A Kest span of a call that did not run: refused (`deny`), or failed
/// before recording (status error, no signature).
fn is_refusal(span: &ExportedSpan) -> bool {
    match span.kest.decision.as_deref() {
        Some("allow") => false,
        Some(_) => true,
        None => span.status_code == 2,
    }
}

fn denial(span: &ExportedSpan) -> Denial {
    Denial {
        operation: span.kest.operation.clone().unwrap_or_else(|| {
            span.name.strip_prefix(crate::export::SPAN_PREFIX).unwrap_or(&span.name).to_owned()
        }),
        policy: span.kest.denied_policy.clone(),
        tier: span.kest.denied_tier.clone(),
        service: span.service.clone(),
        message: span.status_message.clone(),
        location: span.origin.to_string(),
    }
}

fn same_content(a: &ExportedSpan, b: &ExportedSpan) -> bool {
    a.name == b.name && a.kest == b.kest && a.status_code == b.status_code && a.service == b.service
}

/// Each `kest.*` attribute that restates the entry must say what the entry
/// says.
fn check_attributes(r: &Recorded<'_>, findings: &mut Vec<Finding>) {
    let e = &r.entry;
    let parents = e.parent_ids.join(",");
    let checks: [(&str, Option<String>, String); 6] = [
        ("kest.entry_hash", r.span.kest.entry_hash.clone(), r.hash.to_string()),
        ("kest.parent_hash", r.span.kest.parent_hash.clone(), parents),
        ("kest.entry_id", r.span.kest.entry_id.clone(), e.entry_id.clone()),
        ("kest.operation", r.span.kest.operation.clone(), e.operation.clone()),
        ("kest.workload_id", r.span.kest.workload_id.clone(), e.principal().to_owned()),
        ("kest.trust_score", r.span.kest.trust_score.map(|t| t.to_string()), e.trust_score.to_string()),
    ];
    for (name, span_says, entry_says) in checks {
        if let Some(span_says) = span_says
            && span_says != entry_says
        {
            findings.push(Finding {
                kind: "span_mismatch",
                location: Some(r.span.origin.to_string()),
                entry_hash: Some(r.hash.to_string()),
                message: format!(
                    "{name} is `{}` but the signed entry says `{}`",
                    crate::render::ellipsis(&span_says, 80),
                    crate::render::ellipsis(&entry_says, 80)
                ),
            });
        }
    }
    if let Some(decision) = r.span.kest.decision.as_deref()
        && decision != "allow"
    {
        findings.push(Finding {
            kind: "span_mismatch",
            location: Some(r.span.origin.to_string()),
            entry_hash: Some(r.hash.to_string()),
            message: format!("kest.decision is `{decision}` on a span that recorded a signed entry"),
        });
    }
}

/// The passport (or chain tip) a span carries must contain the span's own
/// entry as a tip, and every entry in it must be recorded by the export.
fn check_span_passport(r: &Recorded<'_>, present: &HashSet<String>, findings: &mut Vec<Finding>) {
    let own = r.hash.to_string();
    let location = Some(r.span.origin.to_string());
    if let Some(text) = r.span.kest.passport.as_deref() {
        let limits = Limits::default();
        let passport = match UnverifiedPassport::from_json(text, &limits) {
            Ok(p) => p,
            Err(e) => {
                findings.push(Finding {
                    kind: "passport_disagrees",
                    location,
                    entry_hash: Some(own),
                    message: format!("kest.passport is not a passport: {e}"),
                });
                return;
            }
        };
        let hashes: Vec<String> = passport.entries().iter().map(|j| EntryHash::of(j).to_string()).collect();
        if !hashes.contains(&own) {
            findings.push(Finding {
                kind: "passport_disagrees",
                location: location.clone(),
                entry_hash: Some(own.clone()),
                message: "kest.passport does not contain the span's own entry (kest.signature)".to_owned(),
            });
        }
        for (jws, hash) in passport.entries().iter().zip(&hashes) {
            if !present.contains(hash) {
                let what = kest_core::jws::decode_compact(jws, MAX_DEPTH)
                    .ok()
                    .and_then(|d| KestEntry::from_json(d.payload).ok())
                    .map(|e| format!("`{}` by {}", e.operation, e.principal()))
                    .unwrap_or_else(|| "an undecodable entry".to_owned());
                findings.push(Finding {
                    kind: "unrecorded_entry",
                    location: location.clone(),
                    entry_hash: Some(hash.clone()),
                    message: format!(
                        "kest.passport contains {what} ({hash}), which no exported span of this trace records \
                         (deleted span, or an export not given)"
                    ),
                });
            }
        }
    } else if let Some(tip) = r.span.kest.chain_tip.as_deref() {
        match parse_chain_tip(tip) {
            Ok(tips) => {
                let tips: Vec<String> = tips.iter().map(ToString::to_string).collect();
                if !tips.contains(&own) {
                    findings.push(Finding {
                        kind: "passport_disagrees",
                        location: location.clone(),
                        entry_hash: Some(own.clone()),
                        message: "kest.chain_tip does not name the span's own entry".to_owned(),
                    });
                }
                for hash in tips.iter().filter(|h| !present.contains(*h)) {
                    findings.push(Finding {
                        kind: "unrecorded_entry",
                        location: location.clone(),
                        entry_hash: Some(hash.clone()),
                        message: format!(
                            "kest.chain_tip names {hash}, which no exported span of this trace records"
                        ),
                    });
                }
            }
            Err(e) => findings.push(Finding {
                kind: "passport_disagrees",
                location,
                entry_hash: Some(own),
                message: format!("kest.chain_tip is malformed: {e}"),
            }),
        }
    }
}

/// Indices of `recorded` with every present parent before its children;
/// ties by timestamp, then reading order (an entry whose parent is missing
/// stays where the export had it, so a forged parent is reported before
/// the children it orphaned).
fn topological(recorded: &[Recorded<'_>]) -> Vec<usize> {
    let index: HashMap<String, usize> =
        recorded.iter().enumerate().map(|(i, r)| (r.hash.to_string(), i)).collect();
    let mut pending: Vec<usize> = vec![0; recorded.len()];
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); recorded.len()];
    for (i, r) in recorded.iter().enumerate() {
        let mut parents: Vec<usize> =
            r.entry.parent_ids.iter().filter_map(|p| index.get(p).copied()).collect();
        parents.sort_unstable();
        parents.dedup();
        for p in parents {
            if let (Some(count), Some(list)) = (pending.get_mut(i), children.get_mut(p)) {
                *count += 1;
                list.push(i);
            }
        }
    }
    let key = |i: usize| recorded.get(i).map_or(u64::MAX, |r| r.entry.timestamp_ms);
    let mut ready: BTreeSet<(u64, usize)> =
        (0..recorded.len()).filter(|&i| pending.get(i) == Some(&0)).map(|i| (key(i), i)).collect();
    let mut order = Vec::with_capacity(recorded.len());
    while let Some(first) = ready.pop_first() {
        let i = first.1;
        order.push(i);
        for &child in children.get(i).map(Vec::as_slice).unwrap_or_default() {
            if let Some(count) = pending.get_mut(child) {
                *count -= 1;
                if *count == 0 {
                    ready.insert((key(child), child));
                }
            }
        }
    }
    // A cycle cannot be signed (hashes), but whatever is left goes last so
    // the verifier names it.
    let mut placed = vec![false; recorded.len()];
    for &i in &order {
        if let Some(p) = placed.get_mut(i) {
            *p = true;
        }
    }
    order.extend(placed.iter().enumerate().filter(|(_, p)| !**p).map(|(i, _)| i));
    order
}
