//! `kest inspect`: decoded entries, no verification.

use std::path::PathBuf;

use clap::Args;
use kest_core::baggage::{Baggage, PackOptions, PassportSource, unpack};
use kest_core::{Limits, UnverifiedPassport};
use serde_json::Value;

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

/// Runs `kest inspect`.
pub fn run(args: &InspectArgs) -> Result<Exit, CliError> {
    let limits = Limits::default();
    let text = read_input(&args.input, limits.max_passport_bytes)?;
    let text = if args.baggage { passport_from_baggage(&text)? } else { text };
    let passport = UnverifiedPassport::from_json(&text, &limits).map_err(CliError::from_display)?;
    let decoded = crate::render::inspect_entries(&passport);
    match args.format {
        Format::Json => println!("{}", Value::Array(decoded)),
        Format::Text => print!("{}", crate::render::inspect_text(&decoded)),
    }
    Ok(Exit::Ok)
}
