//! `kest keygen`: a new Ed25519 key for a principal.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use kest::keyfile::{PrivateKeyFormat, write_private_key};
use kest_core::{Ed25519Signer, Signer as _};

use crate::{CliError, Exit};

/// On-disk format of the private key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KeyFormat {
    /// PKCS#8 PEM; it carries no principal, so the commands using it need --principal.
    Pem,
    /// Private JWK carrying the principal as `kid`.
    Jwk,
}

/// Arguments of `kest keygen`.
#[derive(Debug, Args)]
#[command(after_help = "The private key file is created with mode 0600 and never overwritten. \
The public JWK printed on stdout can be collected into a JWKS with `kest jwks`.")]
pub struct KeygenArgs {
    /// The workload id this key signs as (written as `kid` and `labels.principal`).
    #[arg(long)]
    pub principal: String,
    /// Where to write the private key (must not exist).
    #[arg(long, value_name = "KEYFILE")]
    pub out: PathBuf,
    /// Private key format; default: jwk (whatever the file name), which records the principal so
    /// every other command can use the file without --principal.
    #[arg(long, value_enum)]
    pub format: Option<KeyFormat>,
}

/// Runs `kest keygen`.
pub fn run(args: &KeygenArgs) -> Result<Exit, CliError> {
    if args.principal.is_empty() {
        return Err(CliError("--principal must not be empty".into()));
    }
    let format = match args.format {
        Some(KeyFormat::Pem) => PrivateKeyFormat::Pem,
        Some(KeyFormat::Jwk) => PrivateKeyFormat::Jwk,
        // The loaders read the content, not the extension: a JWK in
        // `key.pem` works everywhere and carries its principal.
        None => PrivateKeyFormat::Jwk,
    };
    let signer = Ed25519Signer::generate(&args.principal).map_err(CliError::from_display)?;
    write_private_key(&args.out, &args.principal, signer.signing_key(), format)
        .map_err(CliError::from_display)?;
    let public = signer.public_key().ok_or_else(|| CliError("no public key".into()))?;
    println!("{}", public.to_jwk(&args.principal));
    eprintln!("kest: wrote private key for {} to {} (mode 0600)", args.principal, args.out.display());
    Ok(Exit::Ok)
}
