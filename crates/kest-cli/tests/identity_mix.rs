//! Issue 10, done when: one passport with entries signed by a local
//! Ed25519 key, a SPIFFE X509-SVID and an AWS KMS key (ES256) verifies with
//! `kest verify` given the resolved keys (one JWKS assembled by
//! `kest jwks KEYFILE --from-kms KEY_ID --from-spiffe SOCKET`), and a key
//! rotated out at its source stops verifying within the refresh interval —
//! through a refreshed JWKS URL (the KMS key) and through an SVID
//! directory (the SPIFFE key), both on loopback HTTP.
//!
//! Real clients everywhere: the AWS SDK against `moto` (`$KEST_MOTO_SERVER`,
//! started like the other AWS tests), the SPIFFE Workload API client
//! against the in-test Workload API server (official `workload.proto`,
//! SVIDs minted with `rcgen`), the `kest` binary for keygen/append/jwks/
//! verify. No assertion is timed: the refusal after a rotation is polled
//! for, and the acceptance before the refresh is checked without one.
#![cfg(all(feature = "aws", feature = "spiffe"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "support/moto.rs"]
mod moto;
#[path = "../../kest/tests/support/spiffe_server.rs"]
mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::Path as UrlPath;
use axum::routing::get;
use kest::http::{JwksKeyResolver, JwksSource, RefreshPolicy};
use kest::identity::svid_directory::directory_document;
use kest::identity::{SpiffeBundleResolver, SpiffeIdentity, SvidDirectoryResolver};
use kest_core::{
    EntryDraft, ErrorKind, KeyResolver, KeySet, PublicKey, ResolveError, Signer as _, TrustRules, Verifier,
};
use moto::{Moto, kest, ok};
use support::{FUTURE, new_ca, response, server, svid};

const PLANNER: &str = "spiffe://example.org/ns/prod/sa/planner";
const VERIFIER: &str = "spiffe://example.org/ns/prod/sa/verifier";
const LOCAL: &str = "spiffe://demo/ingest";

/// Loopback documents by name (`/jwks`, `/svids`), replaceable at any time.
#[derive(Clone, Default)]
struct Documents(Arc<Mutex<HashMap<String, String>>>);

impl Documents {
    async fn serve(&self) -> String {
        let docs = self.0.clone();
        let app = Router::new().route(
            "/{name}",
            get(move |UrlPath(name): UrlPath<String>| {
                let docs = docs.clone();
                async move {
                    match docs.lock().unwrap().get(&name) {
                        Some(doc) => (axum::http::StatusCode::OK, doc.clone()),
                        None => (axum::http::StatusCode::NOT_FOUND, String::new()),
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        base
    }
    fn set(&self, name: &str, doc: String) {
        self.0.lock().unwrap().insert(name.to_owned(), doc);
    }
}

/// SPIFFE IDs of `example.org` from the SVID directory, every other
/// principal from the JWKS (several keys each, passed through).
struct Mixed {
    jwks: Arc<JwksKeyResolver>,
    svids: Arc<SvidDirectoryResolver>,
}

impl KeyResolver for Mixed {
    fn resolve(&self, principal: &str) -> Result<Option<PublicKey>, ResolveError> {
        Ok(self.resolve_all(principal)?.into_iter().next())
    }
    fn resolve_all(&self, principal: &str) -> Result<Vec<PublicKey>, ResolveError> {
        if principal.starts_with("spiffe://example.org/") {
            self.svids.resolve_all(principal)
        } else {
            self.jwks.resolve_all(principal)
        }
    }
}

fn policy() -> RefreshPolicy {
    RefreshPolicy::default()
        .refresh_interval(Duration::from_millis(300))
        .min_refetch_interval(Duration::ZERO)
        .max_staleness(Duration::from_secs(600))
}

/// Polls until verifying `text` with `verifier` (after refreshing with
/// `refresh`) fails; returns the error. Fails after 60 s (a bound for a
/// broken test, not a speed assertion).
async fn refused_after_refresh<F: std::future::Future<Output = ()>>(
    verifier: &Verifier,
    text: &str,
    mut refresh: impl FnMut() -> F,
) -> kest_core::VerifyError {
    for _ in 0..600 {
        refresh().await;
        if let Err(e) = verifier.verify_json(text) {
            return e;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the key rotated out kept verifying");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spiffe_kms_and_local_entries_verify_together_and_a_rotated_key_stops_verifying() {
    let moto = Arc::new(Moto::start());
    let kms_key = moto.boto(
        "print(kms.create_key(KeySpec='ECC_NIST_P256', KeyUsage='SIGN_VERIFY')['KeyMetadata']['KeyId'])",
    );
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_owned();

    // The SPIFFE side: a trust domain CA, the planner's SVID, and one
    // Workload API socket per client (the test server streams to one).
    let ca = new_ca("spire-ca");
    let planner = svid(&ca, PLANNER, &rcgen::PKCS_ECDSA_P256_SHA256, FUTURE);
    let mut sockets = HashMap::new();
    let mut senders = Vec::new();
    for name in ["sign", "jwks", "verifier"] {
        let path = d.join(format!("{name}.sock"));
        let tx = server::start(&path);
        if name == "verifier" {
            // The verifying workload's own SVID: its bundle is the trust anchor.
            let own = svid(&ca, VERIFIER, &rcgen::PKCS_ECDSA_P256_SHA256, FUTURE);
            tx.send(Ok(response(&own.0, &own.1, &ca.der, VERIFIER))).await.unwrap();
        } else {
            tx.send(Ok(response(&planner.0, &planner.1, &ca.der, PLANNER))).await.unwrap();
        }
        sockets.insert(name, format!("unix://{}", path.display()));
        senders.push(tx);
    }

    // 1. A local Ed25519 key signs the root (the CLI).
    let (m, dd) = (moto.clone(), d.clone());
    tokio::task::spawn_blocking(move || {
        ok(&kest(&dd, &m, &["keygen", "--principal", LOCAL, "--out", "local.jwk"]));
        ok(&kest(
            &dd,
            &m,
            &[
                "append",
                "--key",
                "local.jwk",
                "--passport",
                "p.json",
                "--operation",
                "ingest",
                "--source-type",
                "system",
            ],
        ));
        std::fs::write(dd.join("local.json"), ok(&kest(&dd, &m, &["jwks", "local.jwk"]))).unwrap();
    })
    .await
    .unwrap();

    // 2. The planner signs with its X509-SVID from the Workload API (the real client).
    let identity = SpiffeIdentity::from_workload_api(&sockets["sign"], Duration::from_secs(5)).await.unwrap();
    assert_eq!(identity.principal(), PLANNER);
    let local_keys = KeySet::from_jwks_json(&std::fs::read_to_string(d.join("local.json")).unwrap()).unwrap();
    let mut passport =
        Verifier::new(local_keys).verify_json(&std::fs::read_to_string(d.join("p.json")).unwrap()).unwrap();
    passport.record(&EntryDraft::new("plan"), identity.as_ref(), &TrustRules::default()).unwrap();
    std::fs::write(d.join("p.json"), passport.to_json()).unwrap();

    // 3. A KMS key (ES256, through moto) signs the last entry; then one JWKS
    //    of the resolved keys, and `kest verify`.
    let (m, dd, kk, jwks_socket) = (moto.clone(), d.clone(), kms_key.clone(), sockets["jwks"].clone());
    let (all_jwks, kms_principal) = tokio::task::spawn_blocking(move || {
        std::fs::write(dd.join("spiffe.json"), ok(&kest(&dd, &m, &["jwks", "--from-spiffe", &jwks_socket])))
            .unwrap();
        ok(&kest(
            &dd,
            &m,
            &[
                "append",
                "--kms",
                &kk,
                "--keys",
                "local.json",
                "--keys",
                "spiffe.json",
                "--passport",
                "p.json",
                "--operation",
                "approve",
            ],
        ));
        let kms_jwks = ok(&kest(&dd, &m, &["jwks", "--from-kms", &kk]));
        let kms: serde_json::Value = serde_json::from_str(&kms_jwks).unwrap();
        let principal = kms["keys"][0]["kid"].as_str().unwrap().to_owned();
        // One key set assembled from the three sources.
        let mut all: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dd.join("local.json")).unwrap()).unwrap();
        let spiffe: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dd.join("spiffe.json")).unwrap()).unwrap();
        all["keys"].as_array_mut().unwrap().extend(spiffe["keys"].as_array().unwrap().clone());
        all["keys"].as_array_mut().unwrap().extend(kms["keys"].as_array().unwrap().clone());
        std::fs::write(dd.join("all.json"), all.to_string()).unwrap();
        let out = ok(&kest(&dd, &m, &["verify", "--semantic", "--keys", "all.json", "p.json"]));
        assert!(out.contains("valid"), "{out}");
        // Without the SPIFFE key, or without the KMS key, it does not verify.
        let out = kest(&dd, &m, &["verify", "--keys", "local.json", "--keys", "spiffe.json", "p.json"]);
        assert_eq!(out.status.code(), Some(1));
        let out = kest(&dd, &m, &["verify", "--keys", "local.json", "p.json"]);
        assert_eq!(out.status.code(), Some(1));
        (all.to_string(), principal)
    })
    .await
    .unwrap();
    assert!(kms_principal.starts_with("arn:aws:sts::"), "{kms_principal}");
    let text = std::fs::read_to_string(d.join("p.json")).unwrap();
    let principals: Vec<String> = Verifier::new(KeySet::from_jwks_json(&all_jwks).unwrap())
        .verify_json(&text)
        .unwrap()
        .entries()
        .iter()
        .map(|e| e.principal().to_owned())
        .collect();
    assert_eq!(principals, vec![LOCAL.to_owned(), PLANNER.to_owned(), kms_principal.clone()]);

    // 4. Refreshed sources on loopback: the JWKS (local and KMS keys) and the
    //    SVID directory (the planner's SVID chain, checked against the bundle
    //    of the verifying workload's Workload API).
    let docs = Documents::default();
    let base = docs.serve().await;
    docs.set("jwks", all_jwks.clone());
    docs.set("svids", directory_document([(PLANNER, planner.0.as_slice())]).to_string());
    let jwks = Arc::new(
        JwksKeyResolver::load(JwksSource::url(format!("{base}/jwks")).unwrap(), policy(), None)
            .await
            .unwrap(),
    );
    let bundle =
        SpiffeBundleResolver::from_workload_api(&sockets["verifier"], Duration::from_secs(5)).await.unwrap();
    let svids = Arc::new(
        SvidDirectoryResolver::load(
            JwksSource::url(format!("{base}/svids")).unwrap(),
            bundle,
            policy(),
            None,
        )
        .await
        .unwrap(),
    );
    let verifier =
        Verifier::with_resolver(Arc::new(Mixed { jwks: jwks.clone(), svids: svids.clone() })).semantic(true);
    verifier.verify_json(&text).expect("every signer resolved from the refreshed sources");

    // 4a. The planner's SVID rotates: the directory lists only the new chain.
    let rotated = svid(&ca, PLANNER, &rcgen::PKCS_ECDSA_P256_SHA256, FUTURE);
    docs.set("svids", directory_document([(PLANNER, rotated.0.as_slice())]).to_string());
    verifier.verify_json(&text).expect("accepted until the directory is refreshed");
    let s = svids.clone();
    let err = refused_after_refresh(&verifier, &text, || {
        let s = s.clone();
        async move { s.refresh_if_due().await }
    })
    .await;
    assert_eq!((err.kind(), err.index()), (ErrorKind::BadSignature, Some(1)), "{err}");
    assert!(err.to_string().contains(PLANNER), "{err}");

    // 4b. The KMS key is rotated out of the JWKS (the principal now has another KMS key).
    docs.set("svids", directory_document([(PLANNER, planner.0.as_slice())]).to_string());
    for _ in 0..600 {
        svids.refresh_if_due().await;
        if verifier.verify_json(&text).is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    verifier.verify_json(&text).expect("the planner's chain is listed again");
    let m = moto.clone();
    let new_kms_key = tokio::task::spawn_blocking(move || {
        m.boto(
            "print(kms.create_key(KeySpec='ECC_NIST_P256', KeyUsage='SIGN_VERIFY')['KeyMetadata']['KeyId'])",
        )
    })
    .await
    .unwrap();
    let (m, dd) = (moto.clone(), d.clone());
    let rotated_kms =
        tokio::task::spawn_blocking(move || ok(&kest(&dd, &m, &["jwks", "--from-kms", &new_kms_key])))
            .await
            .unwrap();
    let rotated_kms: serde_json::Value = serde_json::from_str(&rotated_kms).unwrap();
    assert_eq!(rotated_kms["keys"][0]["kid"], kms_principal.as_str(), "same principal, another key");
    let mut doc: serde_json::Value = serde_json::from_str(&all_jwks).unwrap();
    for key in doc["keys"].as_array_mut().unwrap() {
        if key["kid"] == kms_principal.as_str() {
            *key = rotated_kms["keys"][0].clone();
        }
    }
    docs.set("jwks", doc.to_string());
    verifier.verify_json(&text).expect("accepted until the JWKS is refreshed");
    let j = jwks.clone();
    let err = refused_after_refresh(&verifier, &text, || {
        let j = j.clone();
        async move { j.refresh_if_due().await }
    })
    .await;
    assert_eq!((err.kind(), err.index()), (ErrorKind::BadSignature, Some(2)), "{err}");
    assert!(err.to_string().contains(&kms_principal), "{err}");
    drop(senders);
}
