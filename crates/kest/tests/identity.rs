//! Identity providers (SPEC §8): local, static, mock, OIDC and the
//! auto-detector, including that no key material leaks through `Debug`,
//! `describe` or errors.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use ed25519_dalek::SigningKey;
use kest::core::encoding::b64url_encode;
use kest::core::{EntryDraft, ErrorKind, KeySet, Passport, Signer, TrustRules, Verifier};
use kest::identity::{
    AutoDetector, DEFAULT_LOCAL_WORKLOAD_ID, DEFAULT_MOCK_WORKLOAD_ID, IdentityError, IdentityProvider,
    LocalEd25519Provider, MockIdentityProvider, OIDCIdentity, OidcSigningKey, StaticIdentity,
};
use kest::keyfile::{PrivateKeyFormat, write_private_key};
use sha2::{Digest as _, Sha256};

const SEED: [u8; 32] = [0x5a; 32];
/// The platform's (fake) JWT signature: the secret part of a bearer token.
const TOKEN_SIG: &[u8] = b"platform-signature-bytes-that-must-not-leak";

fn now_secs() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

fn jwt(header: &str, payload: &str) -> String {
    format!(
        "{}.{}.{}",
        b64url_encode(header.as_bytes()),
        b64url_encode(payload.as_bytes()),
        b64url_encode(TOKEN_SIG)
    )
}

fn claims_jwt(payload: &str) -> String {
    jwt(r#"{"alg":"RS256","kid":"k1","typ":"JWT"}"#, payload)
}

fn write(dir: &Path, name: &str, content: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path
}

/// Records two entries with `signer` and verifies them with its public key.
fn round_trip(signer: &dyn Signer) {
    let rules = TrustRules::default();
    let mut passport = Passport::new();
    passport.record(&EntryDraft::new("a"), signer, &rules).unwrap();
    passport.record(&EntryDraft::new("b"), signer, &rules).unwrap();
    let mut keys = KeySet::new();
    keys.insert(signer.principal(), signer.public_key().unwrap()).unwrap();
    let verified = Verifier::new(keys).verify_json(&passport.to_json()).unwrap();
    assert_eq!(verified.entries()[1].principal(), signer.principal());
}

fn token_err(result: Result<OIDCIdentity, IdentityError>) -> String {
    match result {
        Err(e @ IdentityError::Token { .. }) => e.to_string(),
        other => panic!("expected a token error, got {other:?}"),
    }
}

// ---------------------------------------------------------------- local

#[test]
fn local_provider_has_a_fresh_working_key() {
    let a = LocalEd25519Provider::new().unwrap();
    let b = LocalEd25519Provider::new().unwrap();
    assert_eq!(a.workload_id(), DEFAULT_LOCAL_WORKLOAD_ID);
    assert_eq!(a.kind(), "local");
    assert_ne!(a.public_key(), b.public_key(), "one key per instance");
    assert_eq!(a.public_jwk()["kid"], DEFAULT_LOCAL_WORKLOAD_ID);
    round_trip(&a);

    let named = LocalEd25519Provider::with_workload_id("spiffe://dev/x").unwrap();
    assert_eq!(named.principal(), "spiffe://dev/x");
    round_trip(&named);
    assert!(LocalEd25519Provider::with_workload_id("").is_err());
}

// ---------------------------------------------------------------- static

#[test]
fn static_identity_from_seed_signer_and_key_files() {
    let from_seed = StaticIdentity::from_seed("spiffe://t/a", SEED);
    assert_eq!(from_seed.kind(), "static");
    assert_eq!(from_seed.workload_id(), "spiffe://t/a");
    round_trip(&from_seed);

    let from_signer = StaticIdentity::from_signer(kest::core::Ed25519Signer::from_seed("spiffe://t/a", SEED));
    assert_eq!(from_signer.public_key(), from_seed.public_key());
    assert_eq!(from_signer.sign(b"x").unwrap(), from_seed.sign(b"x").unwrap());

    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::from_bytes(&SEED);
    let pem = dir.path().join("k.pem");
    let jwk = dir.path().join("k.jwk");
    write_private_key(&pem, "spiffe://t/a", &key, PrivateKeyFormat::Pem).unwrap();
    write_private_key(&jwk, "spiffe://t/a", &key, PrivateKeyFormat::Jwk).unwrap();

    let from_pem = StaticIdentity::from_key_file(&pem, Some("spiffe://t/a")).unwrap();
    let from_jwk = StaticIdentity::from_key_file(&jwk, None).unwrap();
    for id in [&from_pem, &from_jwk] {
        assert_eq!(id.workload_id(), "spiffe://t/a");
        assert_eq!(id.public_key(), from_seed.public_key());
        assert_eq!(id.public_jwk(), from_seed.public_jwk());
        assert!(id.describe().iter().any(|(_, v)| v.contains("key file")));
    }
    assert!(
        matches!(StaticIdentity::from_key_file(&pem, None), Err(IdentityError::KeyFile(_))),
        "PEM needs a principal"
    );
    assert!(matches!(StaticIdentity::from_key_file(&jwk, Some("other")), Err(IdentityError::KeyFile(_))));
    let missing =
        StaticIdentity::from_key_file(dir.path().join("nope.pem"), Some("p")).unwrap_err().to_string();
    assert!(missing.contains("nope.pem"), "{missing}");
}

// ---------------------------------------------------------------- mock

#[test]
fn mock_provider_matches_the_reference() {
    let mock = MockIdentityProvider::new();
    assert_eq!(mock.workload_id(), DEFAULT_MOCK_WORKLOAD_ID);
    assert_eq!(mock.kind(), "mock");
    assert_eq!(mock.algorithm(), "mock");
    assert!(mock.public_key().is_none());
    let expected = Sha256::new().chain_update(b"mock-key").chain_update(b"h.p").finalize().to_vec();
    assert_eq!(mock.sign(b"h.p").unwrap(), expected);
    assert_eq!(expected.len(), 32);

    // A recorded entry carries the reference's header and a 32-byte signature.
    let mut passport = Passport::new();
    passport.record(&EntryDraft::new("op"), &mock, &TrustRules::default()).unwrap();
    let jws = passport.entries()[0].jws().to_owned();
    let parts: Vec<&str> = jws.split('.').collect();
    assert_eq!(
        parts[0],
        b64url_encode(
            format!(r#"{{"alg":"mock","kid":"{DEFAULT_MOCK_WORKLOAD_ID}","typ":"JWS"}}"#).as_bytes()
        )
    );
    let signing_input = format!("{}.{}", parts[0], parts[1]);
    assert_eq!(parts[2], b64url_encode(&mock.sign(signing_input.as_bytes()).unwrap()));
}

/// A passport recorded by `signer`, and a key set holding some (unrelated)
/// Ed25519 key for its principal.
fn recorded_with(signer: &dyn Signer) -> (String, KeySet) {
    let mut passport = Passport::new();
    passport.record(&EntryDraft::new("op"), signer, &TrustRules::default()).unwrap();
    let mut keys = KeySet::new();
    let impostor = StaticIdentity::from_seed(signer.principal(), SEED);
    keys.insert(signer.principal(), impostor.public_key().unwrap()).unwrap();
    (passport.to_json(), keys)
}

#[test]
fn verifiers_reject_mock_signed_passports() {
    let (json, keys) = recorded_with(&MockIdentityProvider::new());
    // The key fixes the algorithm: a known principal signing with `mock` is
    // refused for the algorithm, an unknown one for being unknown (the
    // 32-byte mock signature never reaches the signature check).
    for (keys, kind) in [(keys, ErrorKind::AlgNotAllowed), (KeySet::new(), ErrorKind::UnknownSigner)] {
        let err = Verifier::new(keys).verify_json(&json).unwrap_err();
        assert_eq!(err.kind(), kind, "{err}");
        assert_eq!(err.index(), Some(0));
    }
}

/// Signs with `alg: mock` but a 64-byte signature, to reach the verifier's
/// algorithm and key checks.
#[derive(Debug)]
struct Mock64(MockIdentityProvider);

impl Signer for Mock64 {
    fn principal(&self) -> &str {
        self.0.principal()
    }
    fn algorithm(&self) -> &'static str {
        self.0.algorithm()
    }
    fn sign(&self, input: &[u8]) -> Result<Vec<u8>, kest::core::SignError> {
        let mut sig = self.0.sign(input)?;
        sig.extend(self.0.sign(&sig)?);
        Ok(sig)
    }
    fn public_key(&self) -> Option<kest::core::PublicKey> {
        None
    }
}

#[test]
fn verifiers_reject_the_mock_algorithm() {
    let (json, keys) = recorded_with(&Mock64(MockIdentityProvider::new()));
    let err = Verifier::new(keys).verify_json(&json).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlgNotAllowed, "some key for the principal: {err}");
    let err = Verifier::new(KeySet::new()).verify_json(&json).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::UnknownSigner, "no key for the principal: {err}");
}

// ---------------------------------------------------------------- OIDC

#[test]
fn oidc_identity_from_a_valid_token() {
    let dir = tempfile::tempdir().unwrap();
    let exp = now_secs() as u64 + 3600;
    let token = claims_jwt(&format!(
        r#"{{"aud":["kest"],"exp":{exp},"iss":"https://oidc.example","sub":"system:serviceaccount:ns:agent"}}"#
    ));
    let path = write(dir.path(), "token", &format!("{token}\n"));

    let id = OIDCIdentity::from_token_file(&path, OidcSigningKey::Ephemeral).unwrap();
    assert_eq!(id.kind(), "oidc");
    assert_eq!(id.workload_id(), "system:serviceaccount:ns:agent");
    assert_eq!(id.issuer(), Some("https://oidc.example"));
    assert_eq!(id.token_path(), path);
    assert_eq!(id.expires_at().unwrap().duration_since(UNIX_EPOCH).unwrap().as_secs(), exp);
    let facts: HashMap<String, String> = id.describe().into_iter().collect();
    assert_eq!(facts["iss"], "https://oidc.example");
    assert_eq!(facts["sub"], "system:serviceaccount:ns:agent");
    assert_eq!(facts["exp"], exp.to_string());
    round_trip(&id);

    // A configured key (file or in memory) is used as is.
    let key_file = dir.path().join("k.pem");
    write_private_key(&key_file, "unused", &SigningKey::from_bytes(&SEED), PrivateKeyFormat::Pem).unwrap();
    let from_file = OIDCIdentity::from_token_file(&path, OidcSigningKey::KeyFile(key_file)).unwrap();
    let expected = StaticIdentity::from_seed("x", SEED).public_key();
    assert_eq!(from_file.public_key(), expected);
    let in_memory =
        OIDCIdentity::from_token_file(&path, OidcSigningKey::Key(SigningKey::from_bytes(&SEED))).unwrap();
    assert_eq!(in_memory.public_key(), expected);
    assert_eq!(in_memory.principal(), "system:serviceaccount:ns:agent");

    // A JWK key whose kid is another principal is refused.
    let jwk = dir.path().join("k.jwk");
    write_private_key(&jwk, "spiffe://someone/else", &SigningKey::from_bytes(&SEED), PrivateKeyFormat::Jwk)
        .unwrap();
    assert!(matches!(
        OIDCIdentity::from_token_file(&path, OidcSigningKey::KeyFile(jwk)),
        Err(IdentityError::KeyFile(_))
    ));

    // No iss and no exp is fine.
    let bare = write(dir.path(), "bare", &claims_jwt(r#"{"sub":"w"}"#));
    let id = OIDCIdentity::from_token_file(&bare, OidcSigningKey::Ephemeral).unwrap();
    assert_eq!(id.issuer(), None);
    assert_eq!(id.expires_at(), None);
}

#[test]
fn oidc_identity_from_lookup_uses_the_key_variable() {
    let dir = tempfile::tempdir().unwrap();
    let token = write(dir.path(), "token", &claims_jwt(r#"{"sub":"w"}"#));
    let key = dir.path().join("k.pem");
    write_private_key(&key, "w", &SigningKey::from_bytes(&SEED), PrivateKeyFormat::Pem).unwrap();
    let env = HashMap::from([
        ("KEST_OIDC_TOKEN_PATH", token.display().to_string()),
        ("KEST_OIDC_SIGNING_KEY", key.display().to_string()),
    ]);
    let id = OIDCIdentity::from_lookup(|n| env.get(n).cloned()).unwrap();
    assert_eq!(id.public_key(), StaticIdentity::from_seed("w", SEED).public_key());
    assert!(matches!(OIDCIdentity::from_lookup(|_| None), Err(IdentityError::Token { .. })));
}

#[test]
fn oidc_rejects_an_expired_token() {
    let dir = tempfile::tempdir().unwrap();
    let exp = now_secs() as u64 - 60;
    let path = write(dir.path(), "token", &claims_jwt(&format!(r#"{{"exp":{exp},"sub":"w"}}"#)));
    let err = token_err(OIDCIdentity::from_token_file(&path, OidcSigningKey::Ephemeral));
    assert!(err.contains("expired") && err.contains("token"), "{err}");
    let path = write(dir.path(), "strexp", &claims_jwt(r#"{"exp":"never","sub":"w"}"#));
    assert!(token_err(OIDCIdentity::from_token_file(&path, OidcSigningKey::Ephemeral)).contains("`exp`"));
}

#[test]
fn oidc_refuses_to_sign_after_the_token_expires() {
    let dir = tempfile::tempdir().unwrap();
    let exp = now_secs() + 1.0;
    let path = write(dir.path(), "token", &claims_jwt(&format!(r#"{{"exp":{exp},"sub":"w"}}"#)));
    let id = OIDCIdentity::from_token_file(&path, OidcSigningKey::Ephemeral).unwrap();
    assert!(id.sign(b"x").is_ok());
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let err = id.sign(b"x").unwrap_err();
    assert!(err.to_string().contains("expired"), "{err}");
}

#[test]
fn oidc_rejects_tokens_without_a_usable_sub() {
    let dir = tempfile::tempdir().unwrap();
    for (payload, needle) in [
        (r#"{"iss":"https://oidc.example"}"#, "no `sub`"),
        (r#"{"sub":""}"#, "`sub` claim is empty"),
        (r#"{"sub":42}"#, "`sub` claim is not a string"),
        (r#"{"sub":"w","iss":7}"#, "`iss` claim is not a string"),
    ] {
        let path = write(dir.path(), "token", &claims_jwt(payload));
        let err = token_err(OIDCIdentity::from_token_file(&path, OidcSigningKey::Ephemeral));
        assert!(err.contains(needle), "{payload}: {err}");
        assert!(err.contains(&path.display().to_string()), "names the file: {err}");
    }
}

#[test]
fn oidc_rejects_malformed_tokens_without_echoing_them() {
    let dir = tempfile::tempdir().unwrap();
    let good_header = b64url_encode(br#"{"alg":"RS256"}"#);
    let good_payload = b64url_encode(br#"{"sub":"secret-subject"}"#);
    let sig = b64url_encode(TOKEN_SIG);
    let cases: Vec<(String, &str)> = vec![
        (String::new(), "empty"),
        (format!("{good_header}.{good_payload}"), "three"),
        (format!("{good_header}.{good_payload}.{sig}.x"), "three"),
        (format!("{good_header}.{good_payload}.{sig}.x.y"), "JWE"),
        (format!("{good_header}=.{good_payload}.{sig}"), "header is not unpadded base64url"),
        (format!("{good_header}.{good_payload}=.{sig}"), "payload is not unpadded base64url"),
        (format!("{good_header}.{good_payload}.{sig}="), "signature segment"),
        (format!("{good_header}.{good_payload}."), "empty signature"),
        (format!("{}.{good_payload}.{sig}", b64url_encode(b"[1]")), "header is not a JSON object"),
        (format!("{}.{good_payload}.{sig}", b64url_encode(br#"{"typ":"JWT"}"#)), "no `alg`"),
        (format!("{}.{good_payload}.{sig}", b64url_encode(br#"{"alg":"none"}"#)), "unsigned"),
        (
            format!("{good_header}.{}.{sig}", b64url_encode(b"\"secret-subject\"")),
            "payload is not a JSON object",
        ),
        (
            format!("{good_header}.{}.{sig}", b64url_encode(b"{not json secret-subject")),
            "payload is not a JSON object",
        ),
        (
            format!("{good_header}.{}.{sig}", b64url_encode(br#"{"sub":"a","sub":"secret-subject"}"#)),
            "duplicate",
        ),
        ("\u{1F600}.a.b".to_owned(), "header is not unpadded base64url"),
    ];
    for (token, needle) in cases {
        let path = write(dir.path(), "token", &token);
        let err = token_err(OIDCIdentity::from_token_file(&path, OidcSigningKey::Ephemeral));
        assert!(err.contains(needle), "{token:?}: {err}");
        assert!(!err.contains("secret-subject") && !err.contains(&sig), "leaks the token: {err}");
    }
    // Not UTF-8, and absurdly large files.
    let path = dir.path().join("binary");
    std::fs::write(&path, [0xff, 0xfe, 0x00]).unwrap();
    assert!(token_err(OIDCIdentity::from_token_file(&path, OidcSigningKey::Ephemeral)).contains("UTF-8"));
    let path = write(dir.path(), "huge", &"a".repeat(100_000));
    assert!(token_err(OIDCIdentity::from_token_file(&path, OidcSigningKey::Ephemeral)).contains("64 KiB"));
}

#[test]
fn oidc_reports_a_missing_token_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no-such-token");
    let err = token_err(OIDCIdentity::from_token_file(&path, OidcSigningKey::Ephemeral));
    assert!(err.contains("no-such-token") && err.contains("cannot read"), "{err}");
}

// ---------------------------------------------------------------- auto

/// Detects with exactly the variables in `vars` set.
fn detect(vars: &[(&str, &str)]) -> Result<kest::identity::Detection, IdentityError> {
    let env: HashMap<String, String> = vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    AutoDetector::with_lookup(move |name: &str| env.get(name).cloned()).detect()
}

/// Which backend the detector chose for `vars`: the provider's kind, or,
/// when it failed, the backend it failed in — `NotCompiledIn` without the
/// feature, the backend's own error with it (no SPIFFE agent or AWS
/// endpoint is reachable here: the socket does not exist and AWS points at
/// a closed loopback port). Never a silent fallback.
fn chosen(vars: &[(&str, &str)]) -> (String, String) {
    match detect(vars) {
        Ok(d) => (d.provider.kind().to_owned(), d.reason),
        Err(IdentityError::NotCompiledIn { feature, reason, backend }) => {
            (feature.to_owned(), format!("{backend}: {reason}"))
        }
        #[cfg(feature = "spiffe")]
        Err(e @ IdentityError::Spiffe(_)) => ("spiffe".to_owned(), e.to_string()),
        #[cfg(feature = "aws")]
        Err(e @ IdentityError::Aws(_)) => ("aws".to_owned(), e.to_string()),
        Err(other) => panic!("unexpected error for {vars:?}: {other:?}"),
    }
}

#[test]
fn auto_detection_follows_the_spec_order() {
    let dir = tempfile::tempdir().unwrap();
    let token = write(dir.path(), "token", &claims_jwt(r#"{"iss":"https://i","sub":"oidc-workload"}"#));
    let token = token.to_str().unwrap();
    let spiffe = ("SPIFFE_ENDPOINT_SOCKET", "unix:///nonexistent/spire/agent.sock");
    let bedrock = ("AWS_BEDROCK_AGENT_ID", "AGENT123");
    let region = ("AWS_REGION", "eu-west-1");
    let default_region = ("AWS_DEFAULT_REGION", "eu-west-1");
    let kms = ("KEST_AWS_KMS_KEY_ID", "alias/kest");
    let oidc = ("KEST_OIDC_TOKEN_PATH", token);
    // Hermetic AWS: a closed loopback endpoint and static credentials.
    let aws_endpoint = ("AWS_ENDPOINT_URL", "http://127.0.0.1:9");
    let aws_key = ("AWS_ACCESS_KEY_ID", "AKIATEST");
    let aws_secret = ("AWS_SECRET_ACCESS_KEY", "x");

    // 1. SPIFFE wins over everything.
    let (backend, reason) = chosen(&[spiffe, bedrock, region, kms, oidc, aws_endpoint, aws_key, aws_secret]);
    assert_eq!(backend, "spiffe", "{reason}");
    assert!(reason.contains("SPIFFE") || reason.contains("spire"), "{reason}");
    // 2. Bedrock over AWS KMS and OIDC.
    let (backend, reason) = chosen(&[bedrock, region, kms, oidc, aws_endpoint, aws_key, aws_secret]);
    assert_eq!(backend, "aws", "{reason}");
    #[cfg(not(feature = "aws"))]
    assert!(reason.contains("Bedrock") && reason.contains("AWS_BEDROCK_AGENT_ID"), "{reason}");
    // 3. AWS region (either variable) with a KMS key, over OIDC.
    for r in [region, default_region] {
        let (backend, reason) = chosen(&[r, kms, oidc, aws_endpoint, aws_key, aws_secret]);
        assert_eq!(backend, "aws", "{reason}");
        #[cfg(not(feature = "aws"))]
        assert!(reason.contains(r.0) && reason.contains("KEST_AWS_KMS_KEY_ID"), "{reason}");
    }
    // A region without a KMS key, or a key without a region, is not AWS.
    assert_eq!(detect(&[region, oidc]).unwrap().provider.kind(), "oidc");
    assert_eq!(detect(&[kms]).unwrap().provider.kind(), "local");
    // 4. OIDC.
    let detection = detect(&[oidc]).unwrap();
    assert_eq!(detection.provider.kind(), "oidc");
    assert_eq!(detection.provider.workload_id(), "oidc-workload");
    assert!(detection.reason.contains("KEST_OIDC_TOKEN_PATH"), "{}", detection.reason);
    // 5. Local.
    let detection = detect(&[]).unwrap();
    assert_eq!(detection.provider.kind(), "local");
    assert_eq!(detection.provider.workload_id(), DEFAULT_LOCAL_WORKLOAD_ID);
    assert!(detection.reason.contains("ephemeral"));
    round_trip(&*detection.provider);
    // Empty values count as unset.
    assert_eq!(
        detect(&[("SPIFFE_ENDPOINT_SOCKET", ""), ("KEST_OIDC_TOKEN_PATH", "")]).unwrap().provider.kind(),
        "local"
    );
}

#[test]
fn auto_detection_does_not_fall_back_when_oidc_is_broken() {
    let err = detect(&[("KEST_OIDC_TOKEN_PATH", "/definitely/not/here")]).unwrap_err();
    assert!(matches!(err, IdentityError::Token { .. }), "{err:?}");
    assert!(err.to_string().contains("/definitely/not/here"));
}

#[test]
fn auto_detector_reads_the_process_environment_by_default() {
    // Only checks construction: detection depends on the host environment.
    assert!(format!("{:?}", AutoDetector::from_env()).contains("AutoDetector"));
}

// ---------------------------------------------------------------- secrets

#[test]
fn no_provider_shows_its_secret() {
    let dir = tempfile::tempdir().unwrap();
    let secret_b64 = b64url_encode(&SEED);
    let secret_hex: String = SEED.iter().map(|b| format!("{b:02x}")).collect();
    let key = SigningKey::from_bytes(&SEED);
    let pem = dir.path().join("k.pem");
    write_private_key(&pem, "spiffe://t/a", &key, PrivateKeyFormat::Pem).unwrap();
    let token_path = write(dir.path(), "token", &claims_jwt(r#"{"sub":"spiffe://t/a"}"#));
    let token_sig = b64url_encode(TOKEN_SIG);

    let providers: Vec<Box<dyn IdentityProvider>> = vec![
        Box::new(StaticIdentity::from_seed("spiffe://t/a", SEED)),
        Box::new(StaticIdentity::from_signer(kest::core::Ed25519Signer::from_seed("spiffe://t/a", SEED))),
        Box::new(StaticIdentity::from_key_file(&pem, Some("spiffe://t/a")).unwrap()),
        Box::new(OIDCIdentity::from_token_file(&token_path, OidcSigningKey::KeyFile(pem.clone())).unwrap()),
        Box::new(OIDCIdentity::from_token_file(&token_path, OidcSigningKey::Key(key.clone())).unwrap()),
        Box::new(MockIdentityProvider::new()),
        Box::new(LocalEd25519Provider::new().unwrap()),
    ];
    let key_debug = format!("{:?}", OidcSigningKey::Key(key.clone()));
    for provider in &providers {
        let debug = format!("{provider:?} {:?} {key_debug}", provider.describe());
        assert!(!debug.contains(&secret_b64), "{debug}");
        assert!(!debug.contains(&secret_hex), "{debug}");
        assert!(!debug.contains(&token_sig), "{debug}");
        assert!(!debug.contains("90, 90, 90"), "raw seed bytes: {debug}");
        // Debug shows the public half only.
        if provider.kind() == "local" || provider.kind() == "static" {
            assert!(debug.contains("public_key"), "{debug}");
        }
    }
    let detection = detect(&[("KEST_OIDC_TOKEN_PATH", token_path.to_str().unwrap())]).unwrap();
    let debug = format!("{detection:?}");
    assert!(
        !debug.contains(&token_sig) && !debug.contains(&b64url_encode(br#"{"sub":"spiffe://t/a"}"#)),
        "{debug}"
    );
}
