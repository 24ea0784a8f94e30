//! [`AutoDetector`]: picks an identity provider from the environment
//! (SPEC §8).

use std::fmt;

use super::local::LocalEd25519Provider;
use super::oidc::{OIDC_TOKEN_PATH_ENV, OIDCIdentity};
use super::{IdentityError, IdentityProvider};

/// Set by SPIRE/SPIFFE agents: the Workload API socket.
pub const SPIFFE_ENDPOINT_SOCKET_ENV: &str = "SPIFFE_ENDPOINT_SOCKET";
/// Set inside AWS Bedrock agents.
pub const AWS_BEDROCK_AGENT_ID_ENV: &str = "AWS_BEDROCK_AGENT_ID";
/// The KMS key an AWS workload signs with.
pub const KEST_AWS_KMS_KEY_ID_ENV: &str = "KEST_AWS_KMS_KEY_ID";
/// How long the auto-detector waits for the first X509-SVID.
#[cfg(feature = "spiffe")]
const SPIFFE_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// AWS region variables; either marks an AWS environment.
pub const AWS_REGION_ENVS: [&str; 2] = ["AWS_REGION", "AWS_DEFAULT_REGION"];

/// The outcome of [`AutoDetector::detect`]: the provider and why it was
/// chosen (for `kest whoami` and startup logs).
#[derive(Debug)]
pub struct Detection {
    /// The chosen provider.
    pub provider: Box<dyn IdentityProvider>,
    /// Why it was chosen (names the environment variables involved, never
    /// their secret contents).
    pub reason: String,
}

/// The environment lookup used by [`AutoDetector::from_env`].
pub type EnvLookup = fn(&str) -> Option<String>;

fn std_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Detects the workload identity from the environment, in the SPEC §8
/// order:
///
/// 1. `SPIFFE_ENDPOINT_SOCKET` → SPIFFE Workload API;
/// 2. `AWS_BEDROCK_AGENT_ID` → Bedrock agent identity (KMS signing);
/// 3. `AWS_REGION` or `AWS_DEFAULT_REGION`, with `KEST_AWS_KMS_KEY_ID` →
///    AWS workload identity (KMS signing);
/// 4. `KEST_OIDC_TOKEN_PATH` → [`OIDCIdentity`] (key from
///    `KEST_OIDC_SIGNING_KEY`, else ephemeral);
/// 5. otherwise → [`LocalEd25519Provider`] (ephemeral key, warns once).
///
/// Backends this build lacks are an error
/// ([`IdentityError::NotCompiledIn`]), never a silent fall-through to a
/// weaker identity. Variables set to the empty string count as unset. The
/// environment is read through an injectable lookup, so tests need not
/// touch the process environment.
///
/// ```
/// use std::collections::HashMap;
/// use kest::identity::{AutoDetector, IdentityError};
///
/// // A SPIFFE socket wins; with no agent there (or without the `spiffe`
/// // feature) that is an error, never a fallback to a weaker identity.
/// let env = HashMap::from([("SPIFFE_ENDPOINT_SOCKET", "unix:///nonexistent/agent.sock")]);
/// let detector = AutoDetector::with_lookup(|name: &str| env.get(name).map(|v| v.to_string()));
/// let err: IdentityError = detector.detect().unwrap_err();
/// println!("{err}");
///
/// let detection = AutoDetector::with_lookup(|_: &str| None).detect().unwrap();
/// assert_eq!(detection.provider.kind(), "local");
/// println!("{}", detection.reason);
/// ```
pub struct AutoDetector<F = EnvLookup> {
    lookup: F,
}

impl AutoDetector<EnvLookup> {
    /// A detector reading the process environment.
    pub fn from_env() -> AutoDetector<EnvLookup> {
        AutoDetector { lookup: std_env }
    }
}

impl Default for AutoDetector<EnvLookup> {
    fn default() -> Self {
        AutoDetector::from_env()
    }
}

impl<F: Fn(&str) -> Option<String>> AutoDetector<F> {
    /// A detector reading variables through `lookup`.
    pub fn with_lookup(lookup: F) -> AutoDetector<F> {
        AutoDetector { lookup }
    }

    fn get(&self, name: &str) -> Option<String> {
        (self.lookup)(name).filter(|v| !v.is_empty())
    }

    fn is_set(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Detects the identity (see the type's documentation for the order).
    pub fn detect(&self) -> Result<Detection, IdentityError> {
        if let Some(socket) = self.get(SPIFFE_ENDPOINT_SOCKET_ENV) {
            return self.spiffe(&socket);
        }
        if self.is_set(AWS_BEDROCK_AGENT_ID_ENV) {
            return self.bedrock(format!("{AWS_BEDROCK_AGENT_ID_ENV} is set"));
        }
        if let Some(region_var) = AWS_REGION_ENVS.into_iter().find(|v| self.is_set(v))
            && self.is_set(KEST_AWS_KMS_KEY_ID_ENV)
        {
            return self.aws(format!("{region_var} and {KEST_AWS_KMS_KEY_ID_ENV} are set"));
        }
        if self.is_set(OIDC_TOKEN_PATH_ENV) {
            let provider = OIDCIdentity::from_lookup(|name| self.get(name))?;
            let key = if self.is_set(super::oidc::OIDC_SIGNING_KEY_ENV) {
                "signing with the key file in KEST_OIDC_SIGNING_KEY"
            } else {
                "signing with an ephemeral key (KEST_OIDC_SIGNING_KEY is not set)"
            };
            return Ok(Detection {
                reason: format!("{OIDC_TOKEN_PATH_ENV} is set: workload id from the token's `sub`, {key}"),
                provider: Box::new(provider),
            });
        }
        let provider = LocalEd25519Provider::new()?;
        Ok(Detection {
            provider: Box::new(provider),
            reason: "no SPIFFE socket, AWS Bedrock agent, AWS KMS key or OIDC token configured: \
                     falling back to an ephemeral local key (not for production)"
                .to_owned(),
        })
    }
}

impl<F: Fn(&str) -> Option<String>> AutoDetector<F> {
    #[cfg(feature = "spiffe")]
    fn spiffe(&self, socket: &str) -> Result<Detection, IdentityError> {
        let provider = super::spiffe::WorkloadApiIdentity::connect(socket, SPIFFE_CONNECT_TIMEOUT)?;
        Ok(Detection {
            reason: format!(
                "{SPIFFE_ENDPOINT_SOCKET_ENV} is set: X509-SVID from the SPIFFE Workload API, workload id = its \
                 SPIFFE ID, rotated from the stream"
            ),
            provider: Box::new(provider),
        })
    }

    #[cfg(not(feature = "spiffe"))]
    fn spiffe(&self, _socket: &str) -> Result<Detection, IdentityError> {
        Err(IdentityError::NotCompiledIn {
            backend: "SPIFFE",
            reason: format!("{SPIFFE_ENDPOINT_SOCKET_ENV} is set"),
            feature: "spiffe",
        })
    }

    #[cfg(feature = "aws")]
    fn aws_settings(&self) -> crate::aws::AwsSettings {
        crate::aws::AwsSettings::from_lookup(|n| self.get(n))
    }

    #[cfg(feature = "aws")]
    fn bedrock(&self, why: String) -> Result<Detection, IdentityError> {
        let provider = crate::aws::BedrockAgentIdentity::from_lookup(|n| self.get(n), self.aws_settings())?;
        let key = self.get(crate::aws::KEST_BEDROCK_KMS_KEY_ID_ENV).map_or_else(
            || format!("the default key {}", crate::aws::DEFAULT_BEDROCK_KMS_KEY),
            |_| format!("the key in {}", crate::aws::KEST_BEDROCK_KMS_KEY_ID_ENV),
        );
        Ok(Detection {
            reason: format!("{why}: Bedrock agent identity (account from STS), signing ES256 with KMS {key}"),
            provider: Box::new(provider),
        })
    }

    #[cfg(not(feature = "aws"))]
    fn bedrock(&self, why: String) -> Result<Detection, IdentityError> {
        Err(IdentityError::NotCompiledIn { backend: "AWS Bedrock agent", reason: why, feature: "aws" })
    }

    #[cfg(feature = "aws")]
    fn aws(&self, why: String) -> Result<Detection, IdentityError> {
        let key = self.get(KEST_AWS_KMS_KEY_ID_ENV).unwrap_or_default();
        let provider = crate::aws::AwsWorkloadIdentity::connect(&key, self.aws_settings())?;
        Ok(Detection {
            reason: format!(
                "{why}: AWS workload identity (caller ARN from STS GetCallerIdentity), signing ES256 with the \
                 KMS key in {KEST_AWS_KMS_KEY_ID_ENV}"
            ),
            provider: Box::new(provider),
        })
    }

    #[cfg(not(feature = "aws"))]
    fn aws(&self, why: String) -> Result<Detection, IdentityError> {
        Err(IdentityError::NotCompiledIn { backend: "AWS KMS", reason: why, feature: "aws" })
    }
}

impl<F> fmt::Debug for AutoDetector<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AutoDetector").finish_non_exhaustive()
    }
}
