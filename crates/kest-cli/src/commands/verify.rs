//! `kest verify`: strict verification with exact exit codes.

use std::path::PathBuf;

use clap::Args;
use kest_core::{Limits, Verifier, VerifyError};
use serde_json::json;

use super::{Format, entry_line, load_keys, parse_origins, passport_report};
use crate::input::read_input;
use crate::{CliError, Exit};

/// Arguments of `kest verify`.
#[derive(Debug, Args)]
#[command(after_help = "Exit status: 0 valid, 1 invalid (the first error is printed with its entry index \
and kind), 2 usage or I/O error.")]
pub struct VerifyArgs {
    /// JWKS (or JWK) file with the signers' public keys (kid = principal); repeatable.
    #[arg(long = "keys", value_name = "JWKS", required = true)]
    pub keys: Vec<PathBuf>,
    /// Also check lineage semantics: taints and trust scores recomputed from the parents.
    #[arg(long)]
    pub semantic: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Treat the input as a raw W3C `baggage` header value carrying the passport.
    #[arg(long)]
    pub baggage: bool,
    /// Extra deployment origin for the semantic checks, NAME=SCORE; repeatable.
    #[arg(long = "origin", value_name = "NAME=SCORE")]
    pub origins: Vec<String>,
    /// Passport file (a JSON array of JWS strings), or `-` for stdin.
    #[arg(value_name = "PASSPORT")]
    pub input: PathBuf,
}

/// Runs `kest verify`.
pub fn run(args: &VerifyArgs) -> Result<Exit, CliError> {
    let keys = load_keys(&args.keys)?;
    let origins = parse_origins(&args.origins)?;
    let limits = Limits::default();
    let text = read_input(&args.input, limits.max_passport_bytes)?;
    let passport_json =
        if args.baggage { crate::commands::inspect::passport_from_baggage(&text)? } else { text };
    let verifier = Verifier::new(keys).semantic(args.semantic).origins(origins).limits(limits);
    match verifier.verify_json(&passport_json) {
        Ok(passport) => {
            match args.format {
                Format::Json => println!("{}", passport_report(&passport)),
                Format::Text => {
                    println!(
                        "valid: {} entries, {} root(s), {} tip(s){}",
                        passport.len(),
                        passport.roots().count(),
                        passport.tips().len(),
                        if args.semantic { ", semantics checked" } else { "" }
                    );
                    for (i, entry) in passport.entries().iter().enumerate() {
                        println!("{}", entry_line(i, entry));
                    }
                }
            }
            Ok(Exit::Ok)
        }
        Err(err) => {
            report_invalid(&err, args.format);
            Ok(Exit::Invalid)
        }
    }
}

fn report_invalid(err: &VerifyError, format: Format) {
    match format {
        Format::Json => println!(
            "{}",
            json!({
                "valid": false,
                "error": { "kind": err.kind().as_str(), "index": err.index(), "message": err.to_string() },
            })
        ),
        Format::Text => println!("invalid: {err} [{}]", err.kind()),
    }
}
