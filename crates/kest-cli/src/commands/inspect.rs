//! `kest inspect`: decoded entries, no verification.

use std::path::PathBuf;

use clap::Args;
use kest_core::baggage::{Baggage, PackOptions, PassportSource, unpack};
use kest_core::encoding::b64url_decode;
use kest_core::{EntryHash, Limits, UnverifiedPassport};
use serde_json::{Value, json};

use super::Format;
use crate::input::read_input;
use crate::{CliError, Exit};

/// Arguments of `kest inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Output format (JSON prints each entry's header and payload exactly as decoded).
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Treat the input as a raw W3C `baggage` header value carrying the passport.
    #[arg(long)]
    pub baggage: bool,
    /// Passport file, or `-` for stdin.
    #[arg(value_name = "PASSPORT")]
    pub input: PathBuf,
}

/// Extracts the passport JSON from a raw `baggage` header value (inline or
/// compressed; a claim check cannot be resolved offline and is an error).
pub(crate) fn passport_from_baggage(header: &str) -> Result<String, CliError> {
    let baggage = Baggage::parse(header.trim_end_matches(['\r', '\n']))
        .map_err(|e| CliError(format!("baggage: {e}")))?;
    match unpack(&baggage, &PackOptions::default()).map_err(|e| CliError(format!("baggage: {e}")))? {
        PassportSource::Json(json) => Ok(json),
        PassportSource::ClaimCheck(id) => Err(CliError(format!(
            "baggage carries claim check {id}: the passport is in the sender's cache under kest.claim.{id}; \
             fetch it and verify the file"
        ))),
        PassportSource::None => Err(CliError("baggage carries no kest passport".into())),
    }
}

fn decode_segment(segment: Option<&str>) -> Value {
    let Some(segment) = segment else { return Value::Null };
    match b64url_decode(segment) {
        Ok(bytes) => match kest_core::json::parse_strict(&bytes, 64) {
            Ok(v) => v,
            Err(e) => json!({ "undecodable": e.to_string() }),
        },
        Err(_) => json!({ "undecodable": "not unpadded base64url" }),
    }
}

/// Runs `kest inspect`.
pub fn run(args: &InspectArgs) -> Result<Exit, CliError> {
    let limits = Limits::default();
    let text = read_input(&args.input, limits.max_passport_bytes)?;
    let text = if args.baggage { passport_from_baggage(&text)? } else { text };
    let passport = UnverifiedPassport::from_json(&text, &limits).map_err(CliError::from_display)?;
    let decoded: Vec<Value> = passport
        .entries()
        .iter()
        .enumerate()
        .map(|(index, jws)| {
            let mut parts = jws.split('.');
            json!({
                "index": index,
                "hash": EntryHash::of(jws).to_string(),
                "header": decode_segment(parts.next()),
                "payload": decode_segment(parts.next()),
            })
        })
        .collect();
    match args.format {
        Format::Json => println!("{}", Value::Array(decoded)),
        Format::Text => {
            println!("{} entries (NOT verified: use `kest verify`)", decoded.len());
            for entry in &decoded {
                let p = &entry["payload"];
                println!(
                    "[{}] {} {}\n    operation={} principal={} trust={} classification={}\n    parents={} taints={}",
                    entry["index"],
                    entry["hash"].as_str().unwrap_or_default(),
                    p["entry_id"].as_str().unwrap_or("?"),
                    p["operation"].as_str().unwrap_or("?"),
                    p["labels"]["principal"].as_str().unwrap_or("?"),
                    p["trust_score"],
                    p["classification"].as_str().unwrap_or("?"),
                    p["parent_ids"],
                    p["taints"],
                );
            }
        }
    }
    Ok(Exit::Ok)
}
