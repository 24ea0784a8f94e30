//! ES256 through the framework: P-256 key files (JWK and PKCS#8 PEM) load
//! into `StaticIdentity`, sign `ES256` entries through the hook, and mix
//! with Ed25519 entries in one passport that verifies.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use kest::identity::{IdentityProvider, StaticIdentity};
use kest::keyfile::{PrivateKeyFormat, write_signer_key};
use kest::policy::MockPolicyEngine;
use kest::{CallContext, HookError, Kest, Lineage, Verified};
use kest_core::encoding::{b64url_decode, b64url_encode};
use kest_core::{Algorithm, ErrorKind, KeySet, LocalSigner, Signer as _, Verifier};

const EC: &str = "spiffe://test/ec-service";
const ED: &str = "spiffe://test/ed-service";

fn header_of(jws: &str) -> serde_json::Value {
    serde_json::from_slice(&b64url_decode(jws.split('.').next().unwrap()).unwrap()).unwrap()
}

#[test]
fn p256_key_file_signs_es256_entries_through_the_hook() {
    let dir = tempfile::tempdir().unwrap();
    let signer = LocalSigner::generate(EC, Algorithm::Es256).unwrap();
    let (jwk, pem) = (dir.path().join("ec.jwk"), dir.path().join("ec.pem"));
    write_signer_key(&jwk, &signer, PrivateKeyFormat::Jwk).unwrap();
    write_signer_key(&pem, &signer, PrivateKeyFormat::Pem).unwrap();

    for (path, principal) in [(&jwk, None), (&pem, Some(EC))] {
        let identity = Arc::new(StaticIdentity::from_key_file(path, principal).unwrap());
        assert_eq!(identity.algorithm(), "ES256");
        assert_eq!(identity.workload_id(), EC);
        assert_eq!(identity.public_jwk()["kty"], "EC");
        assert!(identity.describe().iter().any(|(k, v)| k == "algorithm" && v == "ES256"));
        let secret = b64url_encode(signer_scalar(&signer).as_slice());
        assert!(!format!("{identity:?}").contains(&secret));

        let ed = Arc::new(StaticIdentity::from_seed(ED, [0x11; 32]));
        let kest = Arc::new(
            Kest::builder()
                .identity(identity.clone())
                .engine(Arc::new(MockPolicyEngine::allow_all()))
                .build()
                .unwrap(),
        );
        let flow = Lineage::new();
        flow.enter(|| -> Result<(), HookError<std::io::Error>> {
            let root = Verified::builder("ingest").policy("allow").source_type("internal").build().unwrap();
            root.call(CallContext::new().runtime(&kest), || Ok(()))?;
            // The function tier signs with an Ed25519 identity: a mixed passport.
            let step = Verified::builder("summarise").policy("allow").build().unwrap();
            step.call(CallContext::new().runtime(&kest).identity(ed.clone()), || Ok(()))?;
            let last = Verified::builder("report").policy("allow").build().unwrap();
            last.call(CallContext::new().runtime(&kest), || Ok(()))
        })
        .unwrap();

        let passport = flow.passport();
        let algs: Vec<String> = passport
            .entries()
            .iter()
            .map(|e| header_of(e.jws())["alg"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(algs, ["ES256", "EdDSA", "ES256"]);
        let mut keys = KeySet::new();
        keys.insert(EC, identity.public_key().unwrap()).unwrap();
        keys.insert(ED, ed.public_key().unwrap()).unwrap();
        let verified = Verifier::new(keys.clone()).semantic(true).verify_json(&passport.to_json()).unwrap();
        assert_eq!(verified.len(), 3);
        assert_eq!(verified.entries()[0].principal(), EC);

        // The same passport through a JWKS document (EC and OKP keys).
        let jwks = KeySet::from_jwks_json(&keys.to_jwks().to_string()).unwrap();
        Verifier::new(jwks).verify_json(&passport.to_json()).unwrap();

        // With the EC key swapped for an Ed25519 key under the same
        // principal, the ES256 entries are refused for their algorithm.
        let mut wrong = KeySet::new();
        wrong.insert(EC, ed.public_key().unwrap()).unwrap();
        wrong.insert(ED, ed.public_key().unwrap()).unwrap();
        let err = Verifier::new(wrong).verify_json(&passport.to_json()).unwrap_err();
        assert_eq!((err.kind(), err.index()), (ErrorKind::AlgNotAllowed, Some(0)));
    }
}

fn signer_scalar(signer: &LocalSigner) -> Vec<u8> {
    match signer {
        LocalSigner::Es256(es) => es.signing_key().to_bytes().to_vec(),
        _ => panic!("not P-256"),
    }
}
