//! `kest append`: record one signed step in a passport file.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use clap::Args;
use kest_core::{
    Classification, EntryDraft, EntryHash, KeySet, Limits, OriginMap, Parents, Passport, TrustRules, Verifier,
};

use super::{entry_line, load_keys, parse_origins};
use crate::input::read_input;
use crate::{CliError, Exit};

/// Arguments of `kest append`.
#[derive(Debug, Args)]
#[command(
    long_about = "Record one signed step in a passport file.\n\n\
The existing passport is verified first (its signers' keys come from --keys, plus the signing key \
itself); a missing file means an empty passport. The new entry's parents are all current tips, so \
after two branches the next step joins them (fan-in); --parent picks parents explicitly (for example \
an earlier entry, to fan out) and --root starts a new root. Trust is computed from the parents with the \
weakest-link rule (or set by --trust-override), taints accumulate from the parents.",
    after_help = "Example:\n  kest keygen --principal spiffe://demo/ingest --out ingest.jwk\n  \
kest append --key ingest.jwk --passport p.json --operation fetch --source-type internet --taint unverified\n  \
kest append --key ingest.jwk --passport p.json --operation clean --classification sanitizer \
--remove-taint unverified --trust-override 80"
)]
pub struct AppendArgs {
    /// Private key file (JWK from `kest keygen`, or PKCS#8 PEM with --principal).
    #[arg(long, value_name = "KEYFILE", required_unless_present = "kms")]
    pub key: Option<PathBuf>,
    /// Sign with this AWS KMS key instead (id, ARN or alias; ECC_NIST_P256, ES256) as the STS
    /// caller ARN (or --principal), with the standard AWS variables (AWS_REGION, credentials,
    /// AWS_ENDPOINT_URL). Needs the `aws` feature.
    #[arg(long, value_name = "KEY_ID", conflicts_with = "key")]
    pub kms: Option<String>,
    /// Principal (workload id) to sign as; required for PEM keys, must match a JWK's kid.
    #[arg(long)]
    pub principal: Option<String>,
    /// Passport file to extend (created if missing).
    #[arg(long, value_name = "FILE")]
    pub passport: PathBuf,
    /// Name of the step (function name or caller label).
    #[arg(long)]
    pub operation: String,
    /// Origin of the data this step brings in: system, internal, verified_rag, third_party_api,
    /// user_input, internet, llm, or one added with --origin.
    #[arg(long, value_name = "ORIGIN")]
    pub source_type: Option<String>,
    /// Taint added at this step; repeatable.
    #[arg(long = "taint", value_name = "T")]
    pub taints: Vec<String>,
    /// Taint removed at this step (needs --trust-override or --classification sanitizer); repeatable.
    #[arg(long = "remove-taint", value_name = "T")]
    pub remove_taints: Vec<String>,
    /// Replace the computed trust score (sanitizer mechanism), clamped to 0..=100.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub trust_override: Option<i64>,
    /// Node classification: system, data, sanitizer, critic, snapshot.
    #[arg(long, default_value = "system")]
    pub classification: String,
    /// Explicit parent entry hash (default: all current tips); repeatable.
    #[arg(long = "parent", value_name = "HASH", conflicts_with = "root")]
    pub parents: Vec<String>,
    /// Start a new root even if the passport has entries.
    #[arg(long)]
    pub root: bool,
    /// Extra label KEY=VALUE; repeatable.
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// Public keys (JWKS/JWK) of the other signers in the passport; repeatable.
    #[arg(long = "keys", value_name = "JWKS")]
    pub keys: Vec<PathBuf>,
    /// Deployment origin NAME=SCORE; repeatable.
    #[arg(long = "origin", value_name = "NAME=SCORE")]
    pub origins: Vec<String>,
    /// Also check the existing passport's lineage semantics before appending.
    #[arg(long)]
    pub semantic: bool,
    /// Write the result here instead of back to --passport.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// Runs `kest append`.
pub fn run(args: &AppendArgs) -> Result<Exit, CliError> {
    let signer = signer(args)?;
    let mut keys: KeySet = load_keys(&args.keys)?;
    let own = signer.public_key().ok_or_else(|| CliError("signing key has no public key".into()))?;
    let mut own_set = KeySet::new();
    own_set.insert(signer.principal(), own).map_err(CliError::from_display)?;
    keys.extend(own_set).map_err(|e| CliError(format!("--keys and --key disagree: {e}")))?;

    let origins = parse_origins(&args.origins)?;
    if let Some(origin) = args.source_type.as_deref() {
        known_origin(&origins, origin)?;
    }
    let limits = Limits::default();
    let mut passport = match read_existing(&args.passport, limits.max_passport_bytes)? {
        None => Passport::new(),
        Some(text) => {
            let verifier =
                Verifier::new(keys).semantic(args.semantic).origins(origins.clone()).limits(limits);
            match verifier.verify_json(&text) {
                Ok(p) => p,
                Err(e) => {
                    eprintln!(
                        "kest: refusing to append: {} is invalid: {e} [{}]",
                        args.passport.display(),
                        e.kind()
                    );
                    return Ok(Exit::Invalid);
                }
            }
        }
    };

    let draft = draft(args)?;
    let rules = TrustRules { origins, ..TrustRules::default() };
    let hash = passport.record(&draft, signer.as_ref(), &rules).map_err(CliError::from_display)?;
    let out = args.out.as_deref().unwrap_or(&args.passport);
    write_atomically(out, &passport.to_json())?;
    let index = passport.len() - 1;
    if let Some(entry) = passport.get(&hash) {
        println!("appended{}", entry_line(index, entry).trim_start_matches(' ').replacen('[', " [", 1));
    }
    Ok(Exit::Ok)
}

/// The signer: a key file, or (feature `aws`) a KMS key.
fn signer(args: &AppendArgs) -> Result<Box<dyn kest_core::Signer>, CliError> {
    if let Some(path) = &args.key {
        let signer =
            kest::keyfile::load_key(path, args.principal.as_deref()).map_err(CliError::from_display)?;
        return Ok(Box::new(signer));
    }
    kms_signer(args.kms.as_deref().unwrap_or_default(), args.principal.as_deref())
}

#[cfg(feature = "aws")]
fn kms_signer(key_id: &str, principal: Option<&str>) -> Result<Box<dyn kest_core::Signer>, CliError> {
    use kest::aws::{AwsSettings, AwsWorkloadIdentity, KmsSigner};
    let settings = AwsSettings::from_lookup(|name| std::env::var(name).ok());
    let signer: Box<dyn kest_core::Signer> = match principal {
        Some(p) => {
            Box::new(KmsSigner::connect(p, key_id, settings).map_err(|e| CliError(format!("--kms: {e}")))?)
        }
        None => Box::new(
            AwsWorkloadIdentity::connect(key_id, settings).map_err(|e| CliError(format!("--kms: {e}")))?,
        ),
    };
    Ok(signer)
}

#[cfg(not(feature = "aws"))]
fn kms_signer(_key_id: &str, _principal: Option<&str>) -> Result<Box<dyn kest_core::Signer>, CliError> {
    Err(CliError("--kms needs the `aws` feature (cargo install kest-cli --features aws)".into()))
}

/// Refuses a `--source-type` that is neither a default origin nor one given
/// with `--origin`, saying how to register it.
fn known_origin(origins: &OriginMap, origin: &str) -> Result<(), CliError> {
    if origins.score(origin).is_some() {
        return Ok(());
    }
    let known: Vec<String> = origins.iter().map(|(name, score)| format!("{name} ({score})")).collect();
    let name = crate::render::ellipsis(&crate::render::printable(origin), super::ECHO_CHARS);
    Err(CliError(format!(
        "--source-type `{name}`: unknown origin; the known origins are {}; register a deployment origin \
         with --origin NAME=SCORE (e.g. --origin {name}=50)",
        known.join(", ")
    )))
}

fn draft(args: &AppendArgs) -> Result<EntryDraft, CliError> {
    let classification: Classification =
        args.classification.parse().map_err(|e| CliError(format!("--classification: {e}")))?;
    let parents = if args.root {
        Parents::Root
    } else if args.parents.is_empty() {
        Parents::Tips
    } else {
        Parents::Explicit(
            args.parents
                .iter()
                .map(|p| p.parse::<EntryHash>().map_err(|e| CliError(format!("--parent: {e}"))))
                .collect::<Result<_, _>>()?,
        )
    };
    let mut labels = BTreeMap::new();
    for spec in &args.labels {
        let (k, v) =
            spec.split_once('=').ok_or_else(|| CliError(format!("--label `{spec}`: expected KEY=VALUE")))?;
        labels.insert(k.to_owned(), v.to_owned());
    }
    Ok(EntryDraft {
        operation: args.operation.clone(),
        classification,
        source_type: args.source_type.clone(),
        added_taints: args.taints.clone(),
        removed_taints: args.remove_taints.clone(),
        trust_override: args.trust_override,
        parents,
        labels,
        ..EntryDraft::default()
    })
}

fn read_existing(path: &Path, limit: usize) -> Result<Option<String>, CliError> {
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(CliError(format!("{}: {e}", path.display()))),
        Ok(_) => read_input(path, limit).map(Some),
    }
}

/// Writes via a temporary file in the same directory and a rename, so a
/// crash never leaves a half-written passport.
fn write_atomically(path: &Path, content: &str) -> Result<(), CliError> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name =
        path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "passport".into());
    let tmp = dir.join(format!(".{name}.kest-tmp-{}", std::process::id()));
    let io = |e: std::io::Error| CliError(format!("{}: {e}", path.display()));
    let mut file = std::fs::File::create(&tmp).map_err(io)?;
    file.write_all(content.as_bytes())
        .and_then(|()| file.write_all(b"\n"))
        .and_then(|()| file.sync_all())
        .map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}
