//! `kest keygen`: a new Ed25519 (default) or P-256 key for a principal.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use kest::keyfile::{PrivateKeyFormat, write_signer_key};
use kest_core::{Algorithm, LocalSigner, Signer as _};

use crate::{CliError, Exit};

/// On-disk format of the private key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KeyFormat {
    /// PKCS#8 PEM; it carries no principal, so the commands using it need --principal.
    Pem,
    /// Private JWK carrying the principal as `kid`.
    Jwk,
}

/// The signature algorithm of the new key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum KeyAlg {
    /// Ed25519 (`EdDSA`, RFC 8037), the default.
    #[default]
    #[value(name = "EdDSA")]
    EdDsa,
    /// ECDSA P-256 SHA-256 (`ES256`, RFC 7518 §3.4); JWK `kty` EC, `crv` P-256.
    #[value(name = "ES256")]
    Es256,
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
    /// Signature algorithm: EdDSA (Ed25519, default) or ES256 (P-256).
    #[arg(long, value_enum, ignore_case = true, default_value = "EdDSA")]
    pub alg: KeyAlg,
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
    let alg = match args.alg {
        KeyAlg::EdDsa => Algorithm::EdDsa,
        KeyAlg::Es256 => Algorithm::Es256,
    };
    let signer = LocalSigner::generate(&args.principal, alg).map_err(CliError::from_display)?;
    write_signer_key(&args.out, &signer, format).map_err(CliError::from_display)?;
    let public = signer.public_key().ok_or_else(|| CliError("no public key".into()))?;
    println!("{}", public.to_jwk(&args.principal));
    eprintln!(
        "kest: wrote {} private key for {} to {} (mode 0600)",
        signer.algorithm(),
        args.principal,
        args.out.display()
    );
    Ok(Exit::Ok)
}
