//! AWS workload identity (SPEC §8, feature `aws`): entries signed by an
//! asymmetric AWS KMS key ([`KmsSigner`], `ES256` for `ECC_NIST_P256`), the
//! workload id from STS `GetCallerIdentity` ([`AwsWorkloadIdentity`]) or
//! from the Bedrock agent that runs the code ([`BedrockAgentIdentity`]).
//!
//! Every call goes through the official AWS SDK crates (`aws-config`,
//! `aws-sdk-kms`, `aws-sdk-sts`) with the standard credential chain and
//! region variables; [`AwsSettings`] only overrides what a deployment or a
//! test needs (region, endpoint, static credentials, timeout).
//!
//! Fail closed, always: an STS or KMS error, a key that is not an enabled
//! `SIGN_VERIFY` `ECC_NIST_P256` key, a public key that does not parse, or
//! a signature from KMS that does not verify under that key is an
//! [`AwsError`] — before the operation runs where it can be known before
//! (see [`KmsSigner`]'s readiness check), never a silent fallback to
//! another key.
//!
//! Compared with the reference (`kest` 0.3.0 on PyPI), which puts KMS's
//! DER-encoded ECDSA signature straight into the JWS, entries here carry
//! the 64-byte `r||s` signature RFC 7518 §3.4 requires.

mod bridge;
mod identity;
mod kms;

use std::fmt;
use std::time::Duration;

pub use identity::{
    AWS_BEDROCK_AGENT_ALIAS_ID_ENV, AwsWorkloadIdentity, BedrockAgentIdentity, DEFAULT_BEDROCK_KMS_KEY,
    KEST_BEDROCK_KMS_KEY_ID_ENV,
};
pub use kms::{DEFAULT_READINESS_INTERVAL, KmsKey, KmsSigner};

/// How long one AWS call may take by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why an AWS identity or signature could not be had. Every variant means
/// no signature, so no execution or no recording.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AwsError {
    /// An AWS API call failed (the service's error code when it sent one).
    #[error("AWS {service} {operation} failed{}: {message}", code.as_deref().map(|c| format!(" ({c})")).unwrap_or_default())]
    Service {
        /// `kms`, `sts`, `verifiedpermissions`.
        service: &'static str,
        /// The API operation (`Sign`, `GetPublicKey`, …).
        operation: &'static str,
        /// The AWS error code (`NotFoundException`, …), when there is one.
        code: Option<String>,
        /// What the SDK reported.
        message: String,
    },
    /// The answer lacked a field the operation must return.
    #[error("AWS {operation} answered without `{field}`")]
    MissingField {
        /// The API operation.
        operation: &'static str,
        /// The missing field.
        field: &'static str,
    },
    /// The KMS key cannot sign Kest entries.
    #[error("KMS key `{key_id}` cannot sign Kest entries: {problem}")]
    KeyNotUsable {
        /// The key id or alias as configured.
        key_id: String,
        /// Why.
        problem: KeyProblem,
    },
    /// KMS returned a signature that does not verify under the key's public
    /// key (or is not a DER ECDSA signature).
    #[error("KMS key `{key_id}` returned a signature that does not verify")]
    BadSignature {
        /// The key id or alias.
        key_id: String,
    },
    /// A call took longer than the timeout.
    #[error("AWS call timed out after {0:?}")]
    Timeout(Duration),
    /// A Bedrock agent identity without an agent id.
    #[error("Bedrock agent identity needs an agent id (AWS_BEDROCK_AGENT_ID)")]
    NoAgentId,
    /// An agent or alias id with characters other than letters, digits,
    /// `-` and `_` (or longer than 64).
    #[error("Bedrock agent or alias id `{0}` is not 1-64 letters, digits, `-` or `_`")]
    InvalidAgentId(String),
    /// The thread that runs AWS calls could not be started or has stopped.
    #[error("AWS client runtime: {0}")]
    Runtime(String),
}

/// Why a KMS key cannot sign Kest entries ([`AwsError::KeyNotUsable`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyProblem {
    /// Its usage is not `SIGN_VERIFY`.
    #[error("key usage is `{0}`, not SIGN_VERIFY")]
    Usage(String),
    /// Its key spec has no Kest algorithm (only `ECC_NIST_P256` → `ES256`).
    #[error("key spec `{0}` is not supported (only ECC_NIST_P256, signing ES256)")]
    Spec(String),
    /// It does not offer `ECDSA_SHA_256`.
    #[error("ECDSA_SHA_256 is not among its signing algorithms")]
    Algorithm,
    /// Its state is not `Enabled` (disabled, pending deletion, …).
    #[error("key state is `{0}`, not Enabled")]
    State(String),
    /// Its public key is not a P-256 SubjectPublicKeyInfo.
    #[error("public key is not a P-256 SubjectPublicKeyInfo")]
    PublicKey,
}

impl AwsError {
    /// A stable machine-readable kind.
    pub fn kind(&self) -> &'static str {
        match self {
            AwsError::Service { .. } => "aws_service",
            AwsError::MissingField { .. } => "aws_missing_field",
            AwsError::KeyNotUsable { .. } => "kms_key_not_usable",
            AwsError::BadSignature { .. } => "kms_bad_signature",
            AwsError::Timeout(_) => "aws_timeout",
            AwsError::NoAgentId => "bedrock_no_agent_id",
            AwsError::InvalidAgentId(_) => "bedrock_invalid_agent_id",
            AwsError::Runtime(_) => "aws_runtime",
        }
    }

    pub(crate) fn service<E>(service: &'static str, operation: &'static str, error: &E) -> AwsError
    where
        E: aws_sdk_kms::error::ProvideErrorMetadata + std::error::Error,
    {
        AwsError::Service {
            service,
            operation,
            code: error.code().map(str::to_owned),
            message: error
                .message()
                .map(str::to_owned)
                .unwrap_or_else(|| aws_sdk_kms::error::DisplayErrorContext(error).to_string()),
        }
    }
}

/// Where and how the AWS clients connect. Everything unset comes from the
/// standard AWS configuration chain (environment, profile, instance or
/// container credentials).
///
/// ```
/// use std::time::Duration;
/// use kest::aws::AwsSettings;
/// let settings = AwsSettings::default().region("eu-west-1").timeout(Duration::from_secs(2));
/// assert!(!format!("{settings:?}").contains("secret"));
/// ```
#[derive(Clone, Default)]
pub struct AwsSettings {
    region: Option<String>,
    endpoint_url: Option<String>,
    credentials: Option<(String, String, Option<String>)>,
    timeout: Option<Duration>,
}

impl fmt::Debug for AwsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsSettings")
            .field("region", &self.region)
            .field("endpoint_url", &self.endpoint_url)
            .field("static_credentials", &self.credentials.is_some())
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl AwsSettings {
    /// The region (default: `AWS_REGION` / profile).
    #[must_use]
    pub fn region(mut self, region: impl Into<String>) -> AwsSettings {
        self.region = Some(region.into());
        self
    }

    /// One endpoint for every service (a VPC endpoint, a local test server;
    /// default: `AWS_ENDPOINT_URL` or the service's public endpoint).
    #[must_use]
    pub fn endpoint_url(mut self, url: impl Into<String>) -> AwsSettings {
        self.endpoint_url = Some(url.into());
        self
    }

    /// Static credentials instead of the chain (for local endpoints and
    /// tests; never printed).
    #[must_use]
    pub fn static_credentials(
        mut self,
        access_key_id: impl Into<String>,
        secret: impl Into<String>,
    ) -> AwsSettings {
        self.credentials = Some((access_key_id.into(), secret.into(), None));
        self
    }

    /// Settings from variables read through `lookup` (the process
    /// environment for [`AutoDetector::from_env`]): `AWS_REGION` (or
    /// `AWS_DEFAULT_REGION`), `AWS_ENDPOINT_URL`, and `AWS_ACCESS_KEY_ID` /
    /// `AWS_SECRET_ACCESS_KEY` / `AWS_SESSION_TOKEN` when both keys are
    /// set; anything unset is left to the standard chain.
    ///
    /// [`AutoDetector::from_env`]: crate::identity::AutoDetector::from_env
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> AwsSettings {
        let get = |name: &str| lookup(name).filter(|v| !v.is_empty());
        let credentials = match (get("AWS_ACCESS_KEY_ID"), get("AWS_SECRET_ACCESS_KEY")) {
            (Some(id), Some(secret)) => Some((id, secret, get("AWS_SESSION_TOKEN"))),
            _ => None,
        };
        AwsSettings {
            region: get("AWS_REGION").or_else(|| get("AWS_DEFAULT_REGION")),
            endpoint_url: get("AWS_ENDPOINT_URL"),
            credentials,
            timeout: None,
        }
    }

    /// The limit on each AWS call ([`DEFAULT_TIMEOUT`] by default).
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> AwsSettings {
        self.timeout = Some(timeout);
        self
    }

    pub(crate) fn call_timeout(&self) -> Duration {
        self.timeout.unwrap_or(DEFAULT_TIMEOUT)
    }

    /// Loads the shared SDK configuration (on the AWS thread).
    pub(crate) async fn load(self) -> aws_config::SdkConfig {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if let Some(region) = self.region {
            loader = loader.region(aws_config::Region::new(region));
        }
        if let Some(url) = self.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        if let Some((id, secret, token)) = self.credentials {
            loader = loader
                .credentials_provider(aws_sdk_sts::config::Credentials::new(id, secret, token, None, "kest"));
        }
        loader.load().await
    }
}

/// The shared configuration and the thread AWS calls run on.
#[derive(Debug, Clone)]
pub(crate) struct AwsClients {
    pub(crate) bridge: std::sync::Arc<bridge::Bridge>,
    pub(crate) config: aws_config::SdkConfig,
}

impl AwsClients {
    pub(crate) fn connect(settings: AwsSettings) -> Result<AwsClients, AwsError> {
        let bridge = bridge::Bridge::start(settings.call_timeout())?;
        let config = bridge.run(settings.load())?;
        Ok(AwsClients { bridge: std::sync::Arc::new(bridge), config })
    }

    pub(crate) fn run<T, F>(&self, future: F) -> Result<T, AwsError>
    where
        T: Send + 'static,
        F: std::future::Future<Output = T> + Send + 'static,
    {
        self.bridge.run(future)
    }

    #[cfg(feature = "avp")]
    pub(crate) async fn run_async<T, F>(&self, future: F) -> Result<T, AwsError>
    where
        T: Send + 'static,
        F: std::future::Future<Output = T> + Send + 'static,
    {
        self.bridge.run_async(future).await
    }
}
