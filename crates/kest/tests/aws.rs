//! AWS workload identity against `moto` (PyPI `moto[server]`, an AWS
//! protocol server), which each test starts on a free loopback port: the
//! real AWS SDK clients (`aws-sdk-kms`, `aws-sdk-sts`) sign through KMS,
//! read the public key, ask STS who the caller is; every failure (KMS key
//! disabled, unknown or of the wrong kind, STS unreachable) stops the
//! operation before it runs.
//!
//! The server is `$KEST_MOTO_SERVER` (`./scripts/test` installs moto into a
//! venv and sets it); without it the tests fail, they are never skipped.
#![cfg(feature = "aws")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use kest::aws::{AwsError, AwsSettings, AwsWorkloadIdentity, BedrockAgentIdentity, KeyProblem, KmsSigner};
use kest::hook::{CallContext, Verified};
use kest::identity::{AutoDetector, IdentityProvider};
use kest::policy::MockPolicyEngine;
use kest::{HookError, Kest, Lineage};
use kest_core::Signer as _;
use p256::ecdsa::signature::Verifier as _;

/// A `moto_server` child process, killed on drop.
struct Moto {
    child: Child,
    port: u16,
}

impl Moto {
    fn start() -> Moto {
        let bin = std::env::var_os("KEST_MOTO_SERVER").map(PathBuf::from).unwrap_or_else(|| {
            panic!("KEST_MOTO_SERVER is not set: the AWS tests need moto_server (./scripts/test installs moto[server])")
        });
        assert!(bin.is_file(), "KEST_MOTO_SERVER={} is not a file", bin.display());
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
        for _ in 0..600 {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("moto_server exited with {status}");
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Moto { child, port };
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        panic!("moto_server did not listen on {port}");
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn settings(&self) -> AwsSettings {
        AwsSettings::default()
            .region("us-east-1")
            .endpoint_url(self.url())
            .static_credentials("AKIAKESTTEST", "kest-test-secret-not-a-real-one")
            .timeout(Duration::from_secs(10))
    }

    /// A KMS client of the test itself (to create and break keys).
    fn kms(&self) -> (tokio::runtime::Runtime, aws_sdk_kms::Client) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let config = rt.block_on(
            aws_config::defaults(aws_config::BehaviorVersion::latest())
                .region(aws_config::Region::new("us-east-1"))
                .endpoint_url(self.url())
                .credentials_provider(aws_sdk_kms::config::Credentials::new(
                    "AKIAKESTTEST",
                    "x",
                    None,
                    None,
                    "t",
                ))
                .load(),
        );
        (rt, aws_sdk_kms::Client::new(&config))
    }

    fn create_key(
        &self,
        spec: aws_sdk_kms::types::KeySpec,
        usage: aws_sdk_kms::types::KeyUsageType,
    ) -> String {
        let (rt, kms) = self.kms();
        rt.block_on(async { kms.create_key().key_spec(spec).key_usage(usage).send().await })
            .unwrap()
            .key_metadata()
            .unwrap()
            .key_id()
            .to_owned()
    }

    fn signing_key(&self) -> String {
        self.create_key(
            aws_sdk_kms::types::KeySpec::EccNistP256,
            aws_sdk_kms::types::KeyUsageType::SignVerify,
        )
    }

    fn disable(&self, key: &str) {
        let (rt, kms) = self.kms();
        rt.block_on(async { kms.disable_key().key_id(key).send().await }).unwrap();
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn kms_signatures_are_es256_r_s_and_verify_under_get_public_key() {
    let moto = Moto::start();
    let key = moto.signing_key();
    let signer = KmsSigner::connect("spiffe://demo/kms", &key, moto.settings()).unwrap();
    assert_eq!(signer.algorithm(), "ES256");
    let input = b"eyJhbGciOiJFUzI1NiJ9.eyJvcCI6InRlc3QifQ";
    let sig = signer.sign(input).unwrap();
    assert_eq!(sig.len(), 64, "r||s, not DER");
    // Verify with the public key exported as a JWK, independently of kest.
    let jwk = signer.key().jwk("spiffe://demo/kms");
    assert_eq!(jwk["kty"], "EC");
    assert_eq!(jwk["crv"], "P-256");
    let x = kest_core::encoding::b64url_decode(jwk["x"].as_str().unwrap()).unwrap();
    let y = kest_core::encoding::b64url_decode(jwk["y"].as_str().unwrap()).unwrap();
    let sec1: Vec<u8> = [&[0x04][..], &x, &y].concat();
    let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(&sec1).unwrap();
    let signature = p256::ecdsa::Signature::from_slice(&sig).unwrap();
    vk.verify(input, &signature).unwrap();
    assert!(vk.verify(b"other input", &signature).is_err());
    // No secret in Debug.
    let settings = format!("{:?}", moto.settings());
    assert!(!settings.contains("kest-test-secret"), "{settings}");
}

/// A hooked call counting how often its body ran.
fn run_hooked(
    identity: Arc<dyn IdentityProvider>,
    ran: &AtomicUsize,
) -> Result<u32, HookError<std::io::Error>> {
    let kest = Arc::new(
        Kest::builder().identity(identity).engine(Arc::new(MockPolicyEngine::allow_all())).build().unwrap(),
    );
    let hook = Verified::builder("kms_signed_step").policy("allow").source_type("system").build().unwrap();
    let flow = Lineage::new();
    flow.enter(|| {
        hook.call(CallContext::new().runtime(&kest), || {
            ran.fetch_add(1, Ordering::SeqCst);
            Ok(7)
        })
    })
}

#[test]
fn the_workload_id_is_the_sts_caller_and_a_hooked_call_is_kms_signed() {
    let moto = Moto::start();
    let key = moto.signing_key();
    let identity = AwsWorkloadIdentity::connect(&key, moto.settings()).unwrap();
    assert!(identity.workload_id().starts_with("arn:aws:"), "{}", identity.workload_id());
    assert_eq!(identity.account(), "123456789012");
    assert_eq!(identity.kind(), "aws");
    let facts: Vec<String> = identity.describe().into_iter().map(|(k, _)| k).collect();
    assert!(facts.contains(&"kms_key".to_owned()));
    let ran = AtomicUsize::new(0);
    let principal = identity.workload_id().to_owned();
    let jwk = identity.signer().key().jwk(&principal);
    let identity: Arc<dyn IdentityProvider> = Arc::new(identity);
    let kest = Arc::new(
        Kest::builder().identity(identity).engine(Arc::new(MockPolicyEngine::allow_all())).build().unwrap(),
    );
    let hook = Verified::builder("kms_signed_step").policy("allow").source_type("system").build().unwrap();
    let flow = Lineage::new();
    let out = flow.enter(|| {
        hook.call(CallContext::new().runtime(&kest), || {
            ran.fetch_add(1, Ordering::SeqCst);
            Ok::<_, std::io::Error>(7)
        })
    });
    assert_eq!(out.unwrap(), 7);
    assert_eq!(ran.load(Ordering::SeqCst), 1);
    let passport = flow.passport();
    let entry = &passport.entries()[0];
    assert_eq!(entry.header().alg, "ES256");
    assert_eq!(entry.principal(), principal);
    // The passport verifies with the key from GetPublicKey.
    let keys = kest_core::KeySet::from_jwks_json(&serde_json::json!({ "keys": [jwk] }).to_string()).unwrap();
    kest_core::Verifier::new(keys).semantic(true).verify_json(&passport.to_json()).unwrap();
}

#[test]
fn a_disabled_kms_key_stops_the_call_before_it_runs() {
    let moto = Moto::start();
    let key = moto.signing_key();
    let identity =
        AwsWorkloadIdentity::connect(&key, moto.settings()).unwrap().readiness_interval(Duration::ZERO);
    moto.disable(&key);
    let ran = AtomicUsize::new(0);
    let err = run_hooked(Arc::new(identity), &ran).unwrap_err();
    assert_eq!(ran.load(Ordering::SeqCst), 0, "the body must not run");
    assert!(err.to_string().contains("Disabled"), "{err}");
}

#[test]
fn unusable_keys_and_unknown_keys_are_refused_at_connect() {
    let moto = Moto::start();
    let settings = moto.settings();
    let err = AwsWorkloadIdentity::connect("alias/does-not-exist", settings.clone()).unwrap_err();
    assert!(matches!(&err, AwsError::Service { service: "kms", operation: "GetPublicKey", .. }), "{err:?}");
    assert_eq!(err.kind(), "aws_service");
    // An RSA signing key has no Kest algorithm here.
    let rsa =
        moto.create_key(aws_sdk_kms::types::KeySpec::Rsa2048, aws_sdk_kms::types::KeyUsageType::SignVerify);
    let err = AwsWorkloadIdentity::connect(&rsa, settings.clone()).unwrap_err();
    assert!(
        matches!(&err, AwsError::KeyNotUsable { problem: KeyProblem::Spec(s), .. } if s == "RSA_2048"),
        "{err:?}"
    );
    // A symmetric encryption key cannot sign.
    let aes = moto.create_key(
        aws_sdk_kms::types::KeySpec::SymmetricDefault,
        aws_sdk_kms::types::KeyUsageType::EncryptDecrypt,
    );
    let err = AwsWorkloadIdentity::connect(&aes, settings).unwrap_err();
    assert!(matches!(&err, AwsError::KeyNotUsable { .. } | AwsError::Service { .. }), "{err:?}");
    // A disabled key is refused at connect too.
    let key = moto.signing_key();
    moto.disable(&key);
    let err = KmsSigner::connect("p", &key, moto.settings()).unwrap_err();
    assert!(
        matches!(&err, AwsError::KeyNotUsable { problem: KeyProblem::State(s), .. } if s == "Disabled"),
        "{err:?}"
    );
}

#[test]
fn sts_unreachable_is_an_error_not_an_identity() {
    // Nothing listens on this port.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let settings = AwsSettings::default()
        .region("us-east-1")
        .endpoint_url(format!("http://127.0.0.1:{port}"))
        .static_credentials("AKIAKESTTEST", "x")
        .timeout(Duration::from_secs(5));
    let err = AwsWorkloadIdentity::connect("alias/any", settings).unwrap_err();
    assert!(
        matches!(
            &err,
            AwsError::Service { service: "sts", operation: "GetCallerIdentity", .. } | AwsError::Timeout(_)
        ),
        "{err:?}"
    );
}

#[test]
fn bedrock_agent_identity() {
    let moto = Moto::start();
    let key = moto.signing_key();
    let identity =
        BedrockAgentIdentity::connect("AGENT12345", Some("TSTALIASID"), &key, moto.settings()).unwrap();
    assert_eq!(identity.workload_id(), "bedrock://123456789012/agent/AGENT12345/alias/TSTALIASID");
    assert_eq!(identity.kind(), "bedrock");
    let ran = AtomicUsize::new(0);
    assert_eq!(run_hooked(Arc::new(identity), &ran).unwrap(), 7);
    assert_eq!(ran.load(Ordering::SeqCst), 1);
    // No agent id, or one that would make the principal ambiguous: refused.
    assert_eq!(
        BedrockAgentIdentity::connect("", None, &key, moto.settings()).unwrap_err(),
        AwsError::NoAgentId
    );
    let err = BedrockAgentIdentity::connect("a/../b", None, &key, moto.settings()).unwrap_err();
    assert_eq!(err.kind(), "bedrock_invalid_agent_id");
    let env = |name: &str| match name {
        "AWS_BEDROCK_AGENT_ID" => Some("AGENT12345".to_owned()),
        "KEST_BEDROCK_KMS_KEY_ID" => Some(key.clone()),
        _ => None,
    };
    let identity = BedrockAgentIdentity::from_lookup(env, moto.settings()).unwrap();
    assert_eq!(identity.workload_id(), "bedrock://123456789012/agent/AGENT12345");
}

#[test]
fn auto_detector_aws_branches_are_real() {
    let moto = Moto::start();
    let key = moto.signing_key();
    let url = moto.url();
    let aws = |name: &str| match name {
        "AWS_REGION" => Some("us-east-1".to_owned()),
        "AWS_ENDPOINT_URL" => Some(url.clone()),
        "AWS_ACCESS_KEY_ID" => Some("AKIAKESTTEST".to_owned()),
        "AWS_SECRET_ACCESS_KEY" => Some("x".to_owned()),
        "KEST_AWS_KMS_KEY_ID" => Some(key.clone()),
        _ => None,
    };
    let detection = AutoDetector::with_lookup(aws).detect().unwrap();
    assert_eq!(detection.provider.kind(), "aws");
    assert!(detection.provider.workload_id().starts_with("arn:aws:"));
    assert!(detection.reason.contains("KEST_AWS_KMS_KEY_ID"), "{}", detection.reason);
    // A Bedrock agent id takes precedence.
    let bedrock = |name: &str| match name {
        "AWS_BEDROCK_AGENT_ID" => Some("AGENT12345".to_owned()),
        "KEST_BEDROCK_KMS_KEY_ID" => Some(key.clone()),
        other => aws(other),
    };
    let detection = AutoDetector::with_lookup(bedrock).detect().unwrap();
    assert_eq!(detection.provider.kind(), "bedrock");
    // A detected backend that fails is an error, never a fallback to a
    // local key: here the KMS key does not exist.
    let missing = |name: &str| match name {
        "KEST_AWS_KMS_KEY_ID" => Some("alias/missing".to_owned()),
        other => aws(other),
    };
    let err = AutoDetector::with_lookup(missing).detect().unwrap_err();
    assert!(matches!(err, kest::identity::IdentityError::Aws(AwsError::Service { .. })), "{err}");
}
