//! `kest jwks`: a JWKS of the public keys of key files.

use std::path::PathBuf;

use clap::Args;
use kest_core::KeySet;

use super::load_keys;
use crate::{CliError, Exit};

/// Arguments of `kest jwks`.
#[derive(Debug, Args)]
pub struct JwksArgs {
    /// PEM private key with its principal, as PRINCIPAL=PATH (a PEM file carries no principal); repeatable.
    #[arg(long = "pem", value_name = "PRINCIPAL=PATH")]
    pub pem: Vec<String>,
    /// Key files: private JWKs (from `kest keygen`), public JWKs or JWKS documents.
    #[arg(value_name = "KEYFILE")]
    pub files: Vec<PathBuf>,
}

/// Runs `kest jwks`.
pub fn run(args: &JwksArgs) -> Result<Exit, CliError> {
    if args.files.is_empty() && args.pem.is_empty() {
        return Err(CliError("give at least one key file".into()));
    }
    let mut keys: KeySet = load_keys(&args.files)?;
    for spec in &args.pem {
        let (principal, path) = spec
            .split_once('=')
            .ok_or_else(|| CliError(format!("--pem `{spec}`: expected PRINCIPAL=PATH")))?;
        let key =
            kest::keyfile::pem_public_key(std::path::Path::new(path)).map_err(CliError::from_display)?;
        let mut one = KeySet::new();
        one.insert(principal, key).map_err(CliError::from_display)?;
        keys.extend(one).map_err(CliError::from_display)?;
    }
    println!("{}", serde_json::to_string_pretty(&keys.to_jwks()).map_err(CliError::from_display)?);
    Ok(Exit::Ok)
}
