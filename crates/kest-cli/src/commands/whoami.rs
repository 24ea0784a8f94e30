//! `kest whoami`: the auto-detected workload identity (SPEC §8, §10).

use clap::Args;
use kest::identity::{AutoDetector, Detection};
use serde_json::{Map, Value, json};

use super::Format;
use crate::{CliError, Exit};

/// Arguments of `kest whoami`.
#[derive(Debug, Args)]
pub struct WhoamiArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

/// Runs `kest whoami`: detects the identity from the environment and prints
/// the provider kind, workload id, public JWK (when the key is local) and
/// why that provider was chosen. A detection failure is exit 2.
pub fn run(args: &WhoamiArgs) -> Result<Exit, CliError> {
    let detection = AutoDetector::from_env()
        .detect()
        .map_err(|e| CliError(format!("cannot determine the workload identity: {e}")))?;
    println!("{}", render(&detection, args.format)?);
    Ok(Exit::Ok)
}

/// The report of a detection in `format`.
pub fn render(detection: &Detection, format: Format) -> Result<String, CliError> {
    let provider = &*detection.provider;
    let jwk = provider.public_key().map(|k| k.to_jwk(provider.workload_id()));
    let details = provider.describe();
    match format {
        Format::Json => {
            let details: Map<String, Value> =
                details.into_iter().map(|(k, v)| (k, Value::String(v))).collect();
            let report = json!({
                "provider": provider.kind(),
                "workload_id": provider.workload_id(),
                "algorithm": provider.algorithm(),
                "public_jwk": jwk,
                "details": details,
                "reason": detection.reason,
            });
            serde_json::to_string_pretty(&report).map_err(CliError::from_display)
        }
        Format::Text => {
            let mut out = format!(
                "provider:    {}\nworkload id: {}\nalgorithm:   {}\n",
                provider.kind(),
                provider.workload_id(),
                provider.algorithm()
            );
            for (key, value) in details {
                out.push_str(&format!("{key}: {value}\n"));
            }
            match jwk {
                Some(jwk) => out.push_str(&format!(
                    "public JWK:  {}\n",
                    serde_json::to_string(&jwk).map_err(CliError::from_display)?
                )),
                None => out.push_str("public JWK:  (not available locally)\n"),
            }
            out.push_str(&format!("reason:      {}", detection.reason));
            Ok(out)
        }
    }
}
