//! `kest verify`: strict verification with exact exit codes.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Args;
use kest_core::baggage::{KEST_AGENT, KEST_CHAIN_TIP, KEST_TASK, KEST_USER, parse_chain_tip};
use kest_core::ingress::{Bound, IdentityClaims, IngressRules, bind};
use kest_core::{EntryHash, ErrorKind, Limits, Passport};
use serde_json::{Value, json};

use super::{
    Format, Malformed, entry_line, load_keys, parse_origins, passport_from_baggage, passport_report,
};
use crate::input::read_input;
use crate::render::count;
use crate::{CliError, Exit};

/// Arguments of `kest verify`.
#[derive(Debug, Args)]
#[command(after_help = "Exit status: 0 valid, 1 invalid (the first error is printed with its entry index \
and kind), 2 usage or I/O error.")]
pub struct VerifyArgs {
    /// JWKS (or JWK) file with the signers' public keys (kid = principal); repeatable.
    #[arg(long = "keys", value_name = "JWKS", required = true)]
    pub keys: Vec<PathBuf>,
    /// The --keys files are a key history: the same principal (kid) may have a key in several
    /// files (e.g. one JWKS per SVID rotation), and an entry verifies when any of its
    /// principal's keys of its algorithm does. Without it a kid in two files is an error. For
    /// offline audit: no key of the history is ever retired, so leave out a key known to be
    /// compromised.
    #[arg(long)]
    pub key_history: bool,
    /// Also check lineage semantics: taints and trust scores recomputed from the parents.
    #[arg(long)]
    pub semantic: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Treat the input as a raw W3C `baggage` header value carrying the passport; the ingress
    /// binding rules apply (kest.chain_tip must name exactly the tips).
    #[arg(long)]
    pub baggage: bool,
    /// Extra deployment origin for the semantic checks, NAME=SCORE; repeatable.
    #[arg(long = "origin", value_name = "NAME=SCORE")]
    pub origins: Vec<String>,
    /// A principal allowed to raise trust (sanitize); repeatable. With at least one, any trust
    /// escalation signed by another principal is rejected. Implies --semantic.
    #[arg(long = "sanitizer", value_name = "PRINCIPAL")]
    pub sanitizers: Vec<String>,
    /// Reject a root whose kest.source_type is neither a default origin nor an --origin.
    /// Implies --semantic.
    #[arg(long)]
    pub strict_origins: bool,
    /// With --baggage: accept a kest.chain_tip naming a non-empty subset of the tips (never an
    /// ancestor).
    #[arg(long, requires = "baggage")]
    pub allow_tip_subset: bool,
    /// With --baggage: reject a passport whose newest tip is older than this many seconds (or
    /// dated more than 60 s in the future). Off by default offline.
    #[arg(long, value_name = "SECONDS", requires = "baggage")]
    pub max_age: Option<u64>,
    /// After verification, a Rego policy over the whole verified passport
    /// (`input.entries`, `input.roots`, `input.tips`) that must allow
    /// (`allow` exactly true); a `deny` set of strings, when defined, names
    /// why it does not. Repeatable.
    #[arg(long = "require", value_name = "POLICY.rego")]
    pub require: Vec<PathBuf>,
    /// Passport file (a JSON array of JWS strings), or `-` for stdin.
    #[arg(value_name = "PASSPORT")]
    pub input: PathBuf,
}

/// What arrived in a `baggage` header besides the passport.
struct Ingress {
    chain_tip: Option<Result<Vec<EntryHash>, String>>,
    claims: IdentityClaims,
}

/// A refusal: kind, entry index when it is about one, message.
struct Invalid {
    kind: &'static str,
    index: Option<usize>,
    message: String,
}

/// Runs `kest verify`.
pub fn run(args: &VerifyArgs) -> Result<Exit, CliError> {
    match verify(args) {
        Ok(Ok((passport, ingress))) => {
            report_valid(args, &passport, ingress.as_ref());
            Ok(Exit::Ok)
        }
        Ok(Err(invalid)) => {
            report_invalid(&invalid, args.format);
            Ok(Exit::Invalid)
        }
        Err(e) => {
            // Usage and I/O errors go to stderr (exit 2); JSON callers still
            // get an object with `valid`.
            if args.format == Format::Json {
                println!("{}", json!({ "valid": false, "kind": "usage", "index": null, "message": e.0 }));
            }
            Err(e)
        }
    }
}

/// The verified passport and, with `--baggage`, the binding and the claims
/// as sent; or the refusal.
type Verdict = Result<(Passport, Option<(Bound, IdentityClaims)>), Invalid>;

fn verify(args: &VerifyArgs) -> Result<Verdict, CliError> {
    let keys = if args.key_history { None } else { Some(load_keys(&args.keys)?) };
    let origins = parse_origins(&args.origins)?;
    let limits = Limits::default();
    let text = read_input(&args.input, limits.max_passport_bytes)?;
    let (passport_json, ingress) = if args.baggage {
        match from_baggage(&text)? {
            Ok((json, ingress)) => (json, Some(ingress)),
            Err(Malformed { kind, message }) => return Ok(Err(Invalid { kind, index: None, message })),
        }
    } else {
        (text, None)
    };
    let semantic = args.semantic || !args.sanitizers.is_empty() || args.strict_origins;
    let verifier = match keys {
        Some(keys) => super::verifier(keys, origins, &args.sanitizers, args.strict_origins, semantic),
        None => super::resolver_verifier(
            std::sync::Arc::new(super::load_key_ring(&args.keys)?),
            origins,
            &args.sanitizers,
            args.strict_origins,
            semantic,
        ),
    }
    .limits(limits);
    let passport = match verifier.verify_json(&passport_json) {
        Ok(p) => p,
        Err(e) => {
            return Ok(Err(Invalid { kind: e.kind().as_str(), index: e.index(), message: e.to_string() }));
        }
    };
    if let Some(invalid) = requirements(&args.require, &passport)? {
        return Ok(Err(invalid));
    }
    let Some(ingress) = ingress else { return Ok(Ok((passport, None))) };
    let chain_tip = match ingress.chain_tip {
        None => None,
        Some(Ok(tips)) => Some(tips),
        Some(Err(message)) => {
            return Ok(Err(Invalid {
                kind: ErrorKind::TipMismatch.as_str(),
                index: None,
                message: crate::render::clip_quoted(&message, super::ECHO_CHARS),
            }));
        }
    };
    let rules = IngressRules {
        allow_tip_subset: args.allow_tip_subset,
        max_age: args.max_age.map(Duration::from_secs),
        peer: None,
    };
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    match bind(&passport, chain_tip.as_deref(), &ingress.claims, &rules, now_ms) {
        Ok(bound) => Ok(Ok((passport, Some((bound, ingress.claims))))),
        Err(e) => Ok(Err(Invalid { kind: e.kind().as_str(), index: None, message: e.to_string() })),
    }
}

/// The document a `--require` policy sees: every entry in passport order
/// with its hash, parents, ancestors (every entry reachable from it) and
/// decoded payload, plus the roots and tips.
pub fn requirement_input(passport: &Passport) -> Value {
    let mut ancestors: std::collections::HashMap<EntryHash, Vec<String>> = std::collections::HashMap::new();
    let mut entries = Vec::with_capacity(passport.len());
    for (index, entry) in passport.entries().iter().enumerate() {
        // Parents come earlier: their ancestor lists are complete.
        let mut mine: Vec<String> = Vec::new();
        for parent in entry.parents() {
            for hash in
                ancestors.get(parent).into_iter().flatten().chain(std::iter::once(&parent.to_string()))
            {
                if !mine.contains(hash) {
                    mine.push(hash.clone());
                }
            }
        }
        entries.push(json!({
            "index": index,
            "hash": entry.hash().to_string(),
            "principal": entry.principal(),
            "operation": entry.payload().operation,
            "parents": entry.parents().iter().map(ToString::to_string).collect::<Vec<_>>(),
            "ancestors": mine,
            "is_root": entry.is_root(),
            "payload": serde_json::to_value(entry.payload()).unwrap_or(Value::Null),
        }));
        ancestors.insert(entry.hash(), mine);
    }
    json!({
        "entries": entries,
        "roots": passport.roots().map(|e| e.hash().to_string()).collect::<Vec<_>>(),
        "tips": passport.tips().iter().map(ToString::to_string).collect::<Vec<_>>(),
    })
}

/// Evaluates each `--require` policy; the first that does not allow is the
/// refusal (`requirement_failed`, naming the file, package and reasons).
fn requirements(files: &[PathBuf], passport: &Passport) -> Result<Option<Invalid>, CliError> {
    if files.is_empty() {
        return Ok(None);
    }
    let input = requirement_input(passport);
    for file in files {
        let text = std::fs::read_to_string(file).map_err(|e| CliError(format!("{}: {e}", file.display())))?;
        let name = file.display().to_string();
        let engine = kest::policy::rego::RegoEngine::new([(name.clone(), text)])
            .map_err(|e| CliError(format!("--require {name}: {e}")))?;
        let decision =
            engine.evaluate_json(&name, &input).map_err(|e| CliError(format!("--require {name}: {e}")))?;
        if decision.is_allow() {
            continue;
        }
        let rule = engine.decision_path(&name).unwrap_or("allow").to_owned();
        let reasons: Vec<String> = match engine.evaluate_rule(&name, "deny", &input) {
            Ok(Value::Array(list)) => {
                list.iter().map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned)).collect()
            }
            _ => Vec::new(),
        };
        let why = if reasons.is_empty() { format!("{rule} is not true") } else { reasons.join("; ") };
        return Ok(Some(Invalid {
            kind: ErrorKind::RequirementFailed.as_str(),
            index: None,
            message: format!("requirement {name} ({rule}) failed: {why}"),
        }));
    }
    Ok(None)
}

/// The passport JSON, chain tip and identity claims of a raw `baggage`
/// header value; [`Malformed`] when it is not baggage carrying a passport.
fn from_baggage(header: &str) -> Result<Result<(String, Ingress), Malformed>, CliError> {
    let (json, baggage) = match passport_from_baggage(header)? {
        Ok(found) => found,
        Err(malformed) => return Ok(Err(malformed)),
    };
    let chain_tip = baggage.get(KEST_CHAIN_TIP).map(|v| parse_chain_tip(v).map_err(|e| e.to_string()));
    let claim = |key: &str| baggage.get(key).map(str::to_owned);
    let claims = IdentityClaims { user: claim(KEST_USER), agent: claim(KEST_AGENT), task: claim(KEST_TASK) };
    Ok(Ok((json, Ingress { chain_tip, claims })))
}

/// The claims of `claims` that `bound` dropped, by name.
fn unverified_claims<'a>(claims: &'a IdentityClaims, bound: &Bound) -> Vec<(&'static str, &'a str)> {
    let value = |name: &str| match name {
        "user" => claims.user.as_deref(),
        "agent" => claims.agent.as_deref(),
        _ => claims.task.as_deref(),
    };
    bound.dropped.iter().filter_map(|&name| value(name).map(|v| (name, v))).collect()
}

fn report_valid(args: &VerifyArgs, passport: &Passport, ingress: Option<&(Bound, IdentityClaims)>) {
    let semantic = args.semantic || !args.sanitizers.is_empty() || args.strict_origins;
    let bound = ingress.map(|(b, _)| b);
    let sent = ingress.map(|(_, claims)| claims);
    match args.format {
        Format::Json => {
            let mut report = passport_report(passport);
            if let (Some(bound), Some(sent), Some(obj)) = (bound, sent, report.as_object_mut()) {
                let verified = json!({
                    "user": bound.identity.user, "agent": bound.identity.agent, "task": bound.identity.task,
                });
                let unverified: serde_json::Map<String, Value> = unverified_claims(sent, bound)
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), Value::String(v.to_owned())))
                    .collect();
                obj.insert("identity".into(), json!({ "verified": verified, "unverified": unverified }));
            }
            println!("{report}");
        }
        Format::Text => {
            println!(
                "valid: {}, {}, {}{}{}",
                count(passport.len(), "entry", "entries"),
                count(passport.roots().count(), "root", "roots"),
                count(passport.tips().len(), "tip", "tips"),
                if semantic { ", semantics checked" } else { "" },
                if bound.is_some() { ", chain tip bound" } else { "" },
            );
            for (i, entry) in passport.entries().iter().enumerate() {
                println!("{}", entry_line(i, entry));
            }
            if let (Some(bound), Some(sent)) = (bound, sent) {
                let id = &bound.identity;
                for (name, value) in [("user", &id.user), ("agent", &id.agent), ("task", &id.task)] {
                    if let Some(v) = value {
                        println!("identity: {name}={v} (signed into every tip)");
                    }
                }
                for (name, value) in unverified_claims(sent, bound) {
                    println!(
                        "identity: {name}={value} UNVERIFIED (not the signed kest.identity of the tips)"
                    );
                }
            }
        }
    }
}

fn report_invalid(invalid: &Invalid, format: Format) {
    let Invalid { kind, index, message } = invalid;
    match format {
        Format::Json => println!(
            "{}",
            json!({
                "valid": false,
                "kind": kind,
                "index": index,
                "message": message,
                "error": { "kind": kind, "index": index, "message": message },
            })
        ),
        Format::Text => println!("invalid: {message} [{kind}]"),
    }
}
