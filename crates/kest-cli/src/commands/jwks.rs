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
    /// An AWS KMS signing key (id, ARN or alias; `ECC_NIST_P256`): its public key from
    /// `GetPublicKey`, with the standard AWS configuration (region, credentials, AWS_ENDPOINT_URL);
    /// repeatable. Needs the `aws` feature.
    #[arg(long = "from-kms", value_name = "KEY_ID")]
    pub from_kms: Vec<String>,
    /// The principal (kid) of the --from-kms keys (default: the caller ARN from STS
    /// GetCallerIdentity, the workload id an AWS workload signs as).
    #[arg(long, value_name = "PRINCIPAL", requires = "from_kms")]
    pub principal: Option<String>,
    /// A SPIFFE Workload API socket (`unix:///path` or a path): the public key of the X509-SVID it
    /// serves, kid = its SPIFFE ID. Needs the `spiffe` feature.
    #[arg(long = "from-spiffe", value_name = "SOCKET")]
    pub from_spiffe: Option<String>,
    /// Key files: private JWKs (from `kest keygen`), public JWKs or JWKS documents.
    #[arg(value_name = "KEYFILE")]
    pub files: Vec<PathBuf>,
}

/// Runs `kest jwks`.
pub fn run(args: &JwksArgs) -> Result<Exit, CliError> {
    if args.files.is_empty() && args.pem.is_empty() && args.from_kms.is_empty() && args.from_spiffe.is_none()
    {
        return Err(CliError("give at least one key file (or --pem, --from-kms, --from-spiffe)".into()));
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
    let mut jwks = keys.to_jwks();
    let mut extra = kms_keys(&args.from_kms, args.principal.as_deref())?;
    if let Some(socket) = &args.from_spiffe {
        extra.push(spiffe_key(socket)?);
    }
    if let Some(list) = jwks.get_mut("keys").and_then(serde_json::Value::as_array_mut) {
        list.extend(extra);
    }
    println!("{}", serde_json::to_string_pretty(&jwks).map_err(CliError::from_display)?);
    Ok(Exit::Ok)
}

/// The JWKs of KMS keys `ids`, for `principal` or the caller ARN.
#[cfg(feature = "aws")]
fn kms_keys(ids: &[String], principal: Option<&str>) -> Result<Vec<serde_json::Value>, CliError> {
    use kest::aws::{AwsSettings, AwsWorkloadIdentity, KmsKey};
    use kest::core::Signer as _;
    let settings = || AwsSettings::from_lookup(|name| std::env::var(name).ok());
    ids.iter()
        .map(|id| match principal {
            Some(p) => KmsKey::fetch(id, settings()).map(|k| k.jwk(p)),
            None => AwsWorkloadIdentity::connect(id, settings())
                .map(|who| who.signer().key().jwk(who.principal())),
        })
        .collect::<Result<_, _>>()
        .map_err(|e| CliError(format!("--from-kms: {e}")))
}

#[cfg(not(feature = "aws"))]
fn kms_keys(ids: &[String], _principal: Option<&str>) -> Result<Vec<serde_json::Value>, CliError> {
    if ids.is_empty() {
        Ok(Vec::new())
    } else {
        Err(CliError("--from-kms needs the `aws` feature (cargo install kest-cli --features aws)".into()))
    }
}

/// The JWK of the X509-SVID the Workload API at `socket` serves.
#[cfg(feature = "spiffe")]
fn spiffe_key(socket: &str) -> Result<serde_json::Value, CliError> {
    use kest::core::Signer as _;
    let identity = kest::identity::WorkloadApiIdentity::connect(socket, std::time::Duration::from_secs(5))
        .map_err(|e| CliError(format!("--from-spiffe: {e}")))?;
    let key = identity
        .public_key()
        .ok_or_else(|| CliError("--from-spiffe: the SVID has no usable public key".into()))?;
    Ok(key.to_jwk(identity.principal()))
}

#[cfg(not(feature = "spiffe"))]
fn spiffe_key(_socket: &str) -> Result<serde_json::Value, CliError> {
    Err(CliError(
        "--from-spiffe needs the `spiffe` feature (cargo install kest-cli --features spiffe)".into(),
    ))
}
