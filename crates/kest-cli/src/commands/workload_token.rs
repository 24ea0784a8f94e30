//! `kest workload-token`: mints a workload token (SPEC §7.5) with a key
//! file, for calling an inner service that authenticates its peers — and
//! for testing that it does.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Args;
use kest_core::workload::mint_workload_token;

use crate::{CliError, Exit};

/// Arguments of `kest workload-token`.
#[derive(Debug, Args)]
pub struct WorkloadTokenArgs {
    /// The workload's private key file (from `kest keygen`).
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// The principal, when the key file does not carry it.
    #[arg(long)]
    pub principal: Option<String>,
    /// The destination service's origin, `scheme://host:port`.
    #[arg(long, value_name = "URL")]
    pub audience: String,
    /// Lifetime in seconds (at most 600: verifiers refuse longer ones).
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub ttl: u64,
}

/// Prints a token for the `kest-workload` request header.
pub fn run(args: &WorkloadTokenArgs) -> Result<Exit, CliError> {
    let signer =
        kest::keyfile::load_key(&args.key, args.principal.as_deref()).map_err(CliError::from_display)?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let token = mint_workload_token(&signer, &args.audience, Duration::from_secs(args.ttl), now)
        .map_err(CliError::from_display)?;
    println!("{token}");
    Ok(Exit::Ok)
}
