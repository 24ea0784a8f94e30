//! One module per subcommand.

pub mod append;
pub mod audit;
pub mod demo;
pub mod inspect;
pub mod jwks;
pub mod keygen;
pub mod policy;
pub mod verify;
pub mod viz;
pub mod whoami;
pub mod workload_token;

use std::path::PathBuf;

use clap::ValueEnum;
use kest_core::baggage::{Baggage, PackOptions, PassportSource, unpack};
use kest_core::{Entry, KeySet, OriginMap, Passport};
use serde_json::{Value, json};

use crate::CliError;

/// Output format of `verify` and `inspect`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum Format {
    /// Human-readable text.
    #[default]
    Text,
    /// One JSON document.
    Json,
}

/// Input that is not what it claims to be (a passport, a baggage value):
/// exit 1 ("invalid"), like a passport that fails verification.
#[derive(Debug)]
pub(crate) struct Malformed {
    /// Stable error kind (`malformed_passport`, `malformed_baggage`, …).
    pub kind: &'static str,
    /// What is wrong; echoed input is cut to a short prefix.
    pub message: String,
}

/// How long a quoted piece of the input may be in an error message (one
/// entry hash fits).
pub(crate) const ECHO_CHARS: usize = 64;

impl Malformed {
    /// `kind` with `message` (any backtick-quoted input in it clipped).
    pub fn new(kind: &'static str, message: impl std::fmt::Display) -> Malformed {
        Malformed { kind, message: crate::render::clip_quoted(&message.to_string(), ECHO_CHARS) }
    }
}

/// The parsed header and the passport JSON it carries inline or compressed,
/// from a raw `baggage` header value. A value that does not parse, or
/// carries no passport, is [`Malformed`]; a claim check, which cannot be
/// resolved offline, is a usage error.
pub(crate) fn passport_from_baggage(header: &str) -> Result<Result<(String, Baggage), Malformed>, CliError> {
    let baggage = match Baggage::parse(header.trim_end_matches(['\r', '\n'])) {
        Ok(b) => b,
        Err(e) => return Ok(Err(Malformed::new("malformed_baggage", format_args!("baggage: {e}")))),
    };
    let source = match unpack(&baggage, &PackOptions::default()) {
        Ok(source) => source,
        Err(e) => return Ok(Err(Malformed::new("malformed_baggage", format_args!("baggage: {e}")))),
    };
    match source {
        PassportSource::Json(json) => Ok(Ok((json, baggage))),
        PassportSource::ClaimCheck(id) => Err(CliError(format!(
            "baggage carries claim check {id}: the passport is in the sender's cache under kest.claim.{id}; \
             fetch it and verify the file"
        ))),
        PassportSource::None => {
            Ok(Err(Malformed::new("missing_lineage", "baggage carries no kest passport (kest.passport)")))
        }
    }
}

/// Loads and merges key sets (JWKS, JWK or private JWK files).
pub(crate) fn load_keys(paths: &[PathBuf]) -> Result<KeySet, CliError> {
    let mut keys = KeySet::new();
    for path in paths {
        let set = kest::keyfile::load_public_keys(path).map_err(CliError::from_display)?;
        keys.extend(set).map_err(|e| CliError(format!("{}: {e}", path.display())))?;
    }
    Ok(keys)
}

/// A key ring from key files: the same principal may have a key in several
/// files (a key history), e.g. one JWKS per SVID rotation.
pub(crate) fn load_key_ring(paths: &[PathBuf]) -> Result<kest_core::KeyRing, CliError> {
    let mut ring = kest_core::KeyRing::new();
    for path in paths {
        let set = kest::keyfile::load_public_keys(path).map_err(CliError::from_display)?;
        ring.extend(&set);
    }
    if ring.is_empty() {
        return Err(CliError("the key files hold no key".into()));
    }
    Ok(ring)
}

/// The strict verifier of `verify` and `audit`: `keys`, deployment
/// `origins`, the sanitizer set (when not empty) and strict origins.
pub(crate) fn verifier(
    keys: KeySet,
    origins: OriginMap,
    sanitizers: &[String],
    strict_origins: bool,
    semantic: bool,
) -> kest_core::Verifier {
    configure(kest_core::Verifier::new(keys), origins, sanitizers, strict_origins, semantic)
}

/// [`verifier`] over any key resolver (`kest verify --key-history`).
pub(crate) fn resolver_verifier(
    keys: std::sync::Arc<dyn kest_core::KeyResolver>,
    origins: OriginMap,
    sanitizers: &[String],
    strict_origins: bool,
    semantic: bool,
) -> kest_core::Verifier {
    configure(kest_core::Verifier::with_resolver(keys), origins, sanitizers, strict_origins, semantic)
}

fn configure(
    verifier: kest_core::Verifier,
    origins: OriginMap,
    sanitizers: &[String],
    strict_origins: bool,
    semantic: bool,
) -> kest_core::Verifier {
    let verifier = verifier.semantic(semantic).origins(origins).strict_origins(strict_origins);
    if sanitizers.is_empty() { verifier } else { verifier.sanitizers(sanitizers.iter().cloned()) }
}

/// Parses `NAME=SCORE` deployment origins.
pub(crate) fn parse_origins(specs: &[String]) -> Result<OriginMap, CliError> {
    let mut origins = OriginMap::default();
    for spec in specs {
        let (name, score) = spec
            .split_once('=')
            .ok_or_else(|| CliError(format!("--origin `{spec}`: expected NAME=SCORE")))?;
        let score: i64 =
            score.parse().map_err(|_| CliError(format!("--origin `{spec}`: score is not an integer")))?;
        origins.register(name, score).map_err(CliError::from_display)?;
    }
    Ok(origins)
}

/// JSON summary of one verified entry.
pub(crate) fn entry_summary(index: usize, entry: &Entry) -> Value {
    let p = entry.payload();
    json!({
        "index": index,
        "hash": entry.hash().to_string(),
        "entry_id": p.entry_id,
        "operation": p.operation,
        "principal": entry.principal(),
        "classification": p.classification.as_str(),
        "trust_score": p.trust_score,
        "taints": p.taints,
        "parents": entry.parents().iter().map(ToString::to_string).collect::<Vec<_>>(),
        "runtime": p.runtime.name,
    })
}

/// JSON report of a verified passport.
pub(crate) fn passport_report(passport: &Passport) -> Value {
    json!({
        "valid": true,
        "entries": passport.entries().iter().enumerate().map(|(i, e)| entry_summary(i, e)).collect::<Vec<_>>(),
        "roots": passport.roots().map(|e| e.hash().to_string()).collect::<Vec<_>>(),
        "tips": passport.tips().iter().map(ToString::to_string).collect::<Vec<_>>(),
    })
}

/// One text line per entry: index, operation, principal, trust, taints.
pub(crate) fn entry_line(index: usize, entry: &Entry) -> String {
    let p = entry.payload();
    let parents = if entry.is_root() {
        "root".to_owned()
    } else {
        let short: Vec<String> =
            entry.parents().iter().map(|h| crate::render::short(&h.to_string(), 12).to_owned()).collect();
        format!("parents {}", short.join(","))
    };
    format!(
        "  [{index}] {} by {} trust={} taints=[{}] {} ({})",
        p.operation,
        entry.principal(),
        p.trust_score,
        p.taints.join(","),
        crate::render::short(&entry.hash().to_string(), 12),
        parents
    )
}
