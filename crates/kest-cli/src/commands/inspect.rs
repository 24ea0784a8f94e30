//! `kest inspect`: decoded entries, no verification.

use std::path::PathBuf;

use clap::Args;
use kest_core::{Limits, UnverifiedPassport};
use serde_json::{Value, json};

use super::{Format, Malformed, passport_from_baggage};
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

/// Runs `kest inspect`.
pub fn run(args: &InspectArgs) -> Result<Exit, CliError> {
    let limits = Limits::default();
    let text = read_input(&args.input, limits.max_passport_bytes)?;
    let text = if args.baggage {
        match passport_from_baggage(&text)? {
            Ok((json, _)) => json,
            Err(malformed) => return Ok(report_malformed(&malformed, args.format)),
        }
    } else {
        text
    };
    let passport = match UnverifiedPassport::from_json(&text, &limits) {
        Ok(p) => p,
        Err(e) => return Ok(report_malformed(&Malformed::new(e.kind().as_str(), e), args.format)),
    };
    let decoded = crate::render::inspect_entries(&passport);
    match args.format {
        Format::Json => println!("{}", Value::Array(decoded)),
        Format::Text => print!("{}", crate::render::inspect_text(&decoded)),
    }
    Ok(Exit::Ok)
}

/// Input that is not a passport (or baggage carrying one): exit 1, as in
/// `kest verify`.
fn report_malformed(malformed: &Malformed, format: Format) -> Exit {
    let Malformed { kind, message } = malformed;
    match format {
        Format::Json => {
            println!("{}", json!({ "valid": false, "kind": kind, "index": null, "message": message }))
        }
        Format::Text => eprintln!("kest: invalid: {message} [{kind}]"),
    }
    Exit::Invalid
}
