//! [`KmsSigner`]: Kest entries signed by an asymmetric AWS KMS key.

use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{KeySpec, KeyState, KeyUsageType, MessageType, SigningAlgorithmSpec};
use kest_core::encoding::b64url_encode;
use kest_core::{PublicKey, SignError, Signer};
use p256::ecdsa::signature::Verifier as _;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::pkcs8::DecodePublicKey as _;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use super::{AwsClients, AwsError, AwsSettings, KeyProblem};

/// How long a successful key-state check ([`KmsSigner::check_key`]) is
/// trusted before [`KmsSigner::ready`] asks KMS again.
pub const DEFAULT_READINESS_INTERVAL: Duration = Duration::from_secs(5);

/// The largest message KMS `Sign` takes as `RAW`.
const KMS_RAW_LIMIT: usize = 4096;

/// The JWS algorithm of every KMS signature Kest makes.
const ALGORITHM: &str = "ES256";

/// The public half of a KMS signing key, from `GetPublicKey`, checked to
/// be an `ECC_NIST_P256` `SIGN_VERIFY` key offering `ECDSA_SHA_256`.
#[derive(Clone)]
pub struct KmsKey {
    key_id: String,
    key_arn: String,
    verifying: VerifyingKey,
}

impl fmt::Debug for KmsKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KmsKey").field("key_id", &self.key_id).field("key_arn", &self.key_arn).finish()
    }
}

impl KmsKey {
    /// Fetches and checks the public key of `key_id` (id, ARN or alias).
    pub fn fetch(key_id: &str, settings: AwsSettings) -> Result<KmsKey, AwsError> {
        KmsKey::fetch_with(key_id, &AwsClients::connect(settings)?)
    }

    pub(crate) fn fetch_with(key_id: &str, clients: &AwsClients) -> Result<KmsKey, AwsError> {
        let client = aws_sdk_kms::Client::new(&clients.config);
        let id = key_id.to_owned();
        let out = clients
            .run(async move { client.get_public_key().key_id(id).send().await })?
            .map_err(|e| AwsError::service("kms", "GetPublicKey", &e))?;
        let not_usable = |problem| AwsError::KeyNotUsable { key_id: key_id.to_owned(), problem };
        match out.key_usage() {
            Some(KeyUsageType::SignVerify) => {}
            Some(other) => return Err(not_usable(KeyProblem::Usage(other.as_str().to_owned()))),
            None => return Err(AwsError::MissingField { operation: "GetPublicKey", field: "KeyUsage" }),
        }
        // `KeySpec`, or the older `CustomerMasterKeySpec` some endpoints
        // still send instead.
        #[allow(deprecated)]
        let spec = out
            .key_spec()
            .map(|s| s.as_str().to_owned())
            .or_else(|| out.customer_master_key_spec().map(|s| s.as_str().to_owned()));
        match spec.as_deref() {
            Some(s) if s == KeySpec::EccNistP256.as_str() => {}
            Some(other) => return Err(not_usable(KeyProblem::Spec(other.to_owned()))),
            None => return Err(AwsError::MissingField { operation: "GetPublicKey", field: "KeySpec" }),
        }
        if !out.signing_algorithms().contains(&SigningAlgorithmSpec::EcdsaSha256) {
            return Err(not_usable(KeyProblem::Algorithm));
        }
        let der = out
            .public_key()
            .ok_or(AwsError::MissingField { operation: "GetPublicKey", field: "PublicKey" })?;
        let verifying =
            VerifyingKey::from_public_key_der(der.as_ref()).map_err(|_| not_usable(KeyProblem::PublicKey))?;
        let key_arn = out.key_id().unwrap_or(key_id).to_owned();
        Ok(KmsKey { key_id: key_id.to_owned(), key_arn, verifying })
    }

    /// The key id as configured.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The key's ARN (as KMS reports it).
    pub fn key_arn(&self) -> &str {
        &self.key_arn
    }

    /// The public key as a JWK for `principal` (`kty` EC, `crv` P-256,
    /// `alg` ES256, `kid` the principal).
    pub fn jwk(&self, principal: &str) -> Value {
        // SEC1 uncompressed: 0x04 || x (32) || y (32).
        let point = self.verifying.to_sec1_point(false);
        let bytes = point.as_bytes();
        let coordinate = |c: Option<&[u8]>| c.map(b64url_encode).unwrap_or_default();
        json!({
            "kty": "EC",
            "crv": "P-256",
            "alg": ALGORITHM,
            "use": "sig",
            "kid": principal,
            "x": coordinate(bytes.get(1..33)),
            "y": coordinate(bytes.get(33..65)),
        })
    }

    /// The key as a Kest verifier key, when this build's verifier knows
    /// P-256 keys.
    pub fn public_key(&self, principal: &str) -> Option<PublicKey> {
        kest_core::parse_jwk(&self.jwk(principal)).ok().map(|(_, key)| key)
    }
}

/// Signs Kest entries with an AWS KMS key (`ECC_NIST_P256` → `ES256`).
///
/// Each signature is one KMS `Sign` call (`ECDSA_SHA_256`) over the JWS
/// signing input — sent `RAW` up to KMS's 4096-byte limit, above it as its
/// SHA-256 digest (`DIGEST`), so entries of any size can be signed; the DER
/// signature KMS returns is checked against the key's public key and
/// converted to the 64-byte `r||s` of RFC 7518 §3.4. The private key never
/// leaves KMS.
///
/// Readiness (SPEC §5, no execution without lineage): [`KmsSigner::ready`]
/// asks KMS (`DescribeKey`) whether the key is still `Enabled` when the
/// last successful check is older than the readiness interval
/// ([`DEFAULT_READINESS_INTERVAL`]; zero checks before every call), so a
/// disabled or deleted key stops operations before they run.
pub struct KmsSigner {
    principal: String,
    key: KmsKey,
    public: Option<PublicKey>,
    clients: AwsClients,
    client: aws_sdk_kms::Client,
    interval: Duration,
    checked: Mutex<Option<Instant>>,
}

impl fmt::Debug for KmsSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KmsSigner")
            .field("principal", &self.principal)
            .field("key", &self.key)
            .field("readiness_interval", &self.interval)
            .finish_non_exhaustive()
    }
}

impl KmsSigner {
    /// A signer for `principal` with KMS key `key_id` (id, ARN or alias):
    /// fetches and checks the public key now.
    pub fn connect(
        principal: impl Into<String>,
        key_id: &str,
        settings: AwsSettings,
    ) -> Result<KmsSigner, AwsError> {
        KmsSigner::with_clients(principal.into(), key_id, AwsClients::connect(settings)?)
    }

    pub(crate) fn with_clients(
        principal: String,
        key_id: &str,
        clients: AwsClients,
    ) -> Result<KmsSigner, AwsError> {
        let key = KmsKey::fetch_with(key_id, &clients)?;
        let public = key.public_key(&principal);
        let client = aws_sdk_kms::Client::new(&clients.config);
        let signer = KmsSigner {
            principal,
            key,
            public,
            clients,
            client,
            interval: DEFAULT_READINESS_INTERVAL,
            checked: Mutex::new(None),
        };
        signer.check_key()?;
        Ok(signer)
    }

    /// How long a successful key-state check is trusted (zero: check
    /// before every call).
    #[must_use]
    pub fn readiness_interval(mut self, interval: Duration) -> KmsSigner {
        self.interval = interval;
        self
    }

    /// The KMS key.
    pub fn key(&self) -> &KmsKey {
        &self.key
    }

    /// Asks KMS now whether the key is `Enabled`.
    pub fn check_key(&self) -> Result<(), AwsError> {
        let client = self.client.clone();
        let id = self.key.key_id.clone();
        let out = self
            .clients
            .run(async move { client.describe_key().key_id(id).send().await })?
            .map_err(|e| AwsError::service("kms", "DescribeKey", &e))?;
        let state = out.key_metadata().and_then(|m| m.key_state());
        match state {
            Some(KeyState::Enabled) => {
                if let Ok(mut checked) = self.checked.lock() {
                    *checked = Some(Instant::now());
                }
                Ok(())
            }
            Some(other) => Err(AwsError::KeyNotUsable {
                key_id: self.key.key_id.clone(),
                problem: KeyProblem::State(other.as_str().to_owned()),
            }),
            None => Err(AwsError::MissingField { operation: "DescribeKey", field: "KeyMetadata.KeyState" }),
        }
    }

    /// Whether the key can sign now: a cached successful check younger
    /// than the readiness interval, else [`KmsSigner::check_key`].
    pub fn ready(&self) -> Result<(), AwsError> {
        let fresh = self
            .checked
            .lock()
            .ok()
            .and_then(|c| *c)
            .is_some_and(|at| !self.interval.is_zero() && at.elapsed() < self.interval);
        if fresh { Ok(()) } else { self.check_key() }
    }

    /// Signs `signing_input`: the 64-byte `r||s`, checked against the key.
    pub fn sign_es256(&self, signing_input: &[u8]) -> Result<[u8; 64], AwsError> {
        let (message, kind) = if signing_input.len() <= KMS_RAW_LIMIT {
            (signing_input.to_vec(), MessageType::Raw)
        } else {
            (Sha256::digest(signing_input).to_vec(), MessageType::Digest)
        };
        let client = self.client.clone();
        let id = self.key.key_id.clone();
        let out = self
            .clients
            .run(async move {
                client
                    .sign()
                    .key_id(id)
                    .message(Blob::new(message))
                    .message_type(kind)
                    .signing_algorithm(SigningAlgorithmSpec::EcdsaSha256)
                    .send()
                    .await
            })?
            .map_err(|e| AwsError::service("kms", "Sign", &e))?;
        let der = out.signature().ok_or(AwsError::MissingField { operation: "Sign", field: "Signature" })?;
        let bad = || AwsError::BadSignature { key_id: self.key.key_id.clone() };
        let signature = Signature::from_der(der.as_ref()).map_err(|_| bad())?;
        self.key.verifying.verify(signing_input, &signature).map_err(|_| bad())?;
        Ok(signature.to_bytes().into())
    }
}

impl Signer for KmsSigner {
    fn principal(&self) -> &str {
        &self.principal
    }

    fn algorithm(&self) -> &'static str {
        ALGORITHM
    }

    fn sign(&self, signing_input: &[u8]) -> Result<Vec<u8>, SignError> {
        self.sign_es256(signing_input).map(|s| s.to_vec()).map_err(|e| SignError(e.to_string()))
    }

    fn public_key(&self) -> Option<PublicKey> {
        self.public.clone()
    }
}
