//! SPIFFE key resolution with rotation (features `spiffe` and `http`):
//! `SpiffeBundleResolver` keeps every valid SVID key of a SPIFFE ID (a
//! rotation overlap), drops expired ones and the ones a bundle update no
//! longer anchors, follows the bundle on the Workload API stream; the SVID
//! directory resolver learns peers' SVIDs from a loopback HTTP directory,
//! checks every chain against the bundle, drops keys rotated out at the
//! next refresh and fails closed once the directory is stale.
//!
//! SVIDs and CAs are minted with `rcgen` at test time; the Workload API is
//! the in-test server of `support/spiffe_server.rs`. No assertion is timed:
//! changes that depend on the clock are polled for.
#![cfg(all(feature = "spiffe", feature = "http"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use kest::http::{JwksSource, RefreshPolicy};
use kest::identity::svid_directory::directory_document;
use kest::identity::{SpiffeBundleResolver, SpiffeIdentity, SvidDirectoryResolver, X509Svid};
use kest_core::{
    EntryDraft, ErrorKind, KeyResolver, Passport, ResolveError, Signer as _, TrustRules, Verifier,
};

#[path = "support/spiffe_server.rs"]
mod support;
use support::{FUTURE, new_ca, response, server, svid, svid_between};

const TD: &str = "example.org";
const ID: &str = "spiffe://example.org/ns/prod/sa/agent";

/// A passport whose entries are signed by `svids` in turn (one identity,
/// rotated before each entry).
fn passport(svids: &[&(Vec<u8>, Vec<u8>)]) -> String {
    let mut p = Passport::new();
    let mut identity: Option<SpiffeIdentity> = None;
    for (i, (chain, key)) in svids.iter().enumerate() {
        let svid = X509Svid::from_der(chain, key).unwrap();
        match &identity {
            None => identity = Some(SpiffeIdentity::new(svid)),
            Some(id) => id.rotate(svid).unwrap(),
        }
        let signer = identity.as_ref().unwrap();
        p.record(&EntryDraft::new(format!("step{i}")), signer, &TrustRules::default()).unwrap();
    }
    p.to_json()
}

fn verify(resolver: Arc<dyn KeyResolver>, text: &str) -> Result<(), (ErrorKind, Option<usize>, String)> {
    Verifier::with_resolver(resolver)
        .verify_json(text)
        .map(|_| ())
        .map_err(|e| (e.kind(), e.index(), e.to_string()))
}

/// Polls `done` every 50 ms; fails after 60 s (a bound for a broken test,
/// not a speed assertion).
async fn eventually(what: &str, mut done: impl AsyncFnMut() -> bool) {
    for _ in 0..1200 {
        if done().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("never happened: {what}");
}

#[test]
fn bundle_resolver_keeps_every_valid_key_of_an_id_and_drops_expired_ones() {
    let ca = new_ca("spire-ca");
    let now = SystemTime::now();
    let long = svid(&ca, ID, &rcgen::PKCS_ECDSA_P256_SHA256, FUTURE);
    let short = svid_between(&ca, ID, now - Duration::from_secs(60), now + Duration::from_secs(2));
    // Entry 0 signed with the short-lived SVID, entry 1 after rotating to the long one.
    let text = passport(&[&short, &long]);

    let resolver = Arc::new(SpiffeBundleResolver::new(TD, &ca.der).unwrap());
    resolver.add_svid(&short.0, now).unwrap();
    // Only the first SVID known: the entry signed after the rotation fails.
    let (kind, index, _) = verify(resolver.clone(), &text).unwrap_err();
    assert_eq!((kind, index), (ErrorKind::BadSignature, Some(1)));
    resolver.add_svid(&long.0, now).unwrap();
    resolver.add_svid(&long.0, now).unwrap(); // the same key twice counts once
    assert_eq!(resolver.resolve_all(ID).unwrap().len(), 2, "both SVID keys, deduplicated");
    verify(resolver.clone(), &text).expect("rotation overlap: each entry verifies under its SVID's key");
    // Newest (latest notAfter) first.
    let long_key = X509Svid::from_der(&long.0, &long.1).map(|s| SpiffeIdentity::new(s).public_key()).unwrap();
    assert_eq!(resolver.resolve(ID).unwrap(), long_key);

    // Once the short-lived chain has expired its key is not returned: its
    // entry stops verifying (deterministically at a later time…)
    let later = now + Duration::from_secs(10);
    assert_eq!(resolver.keys_at(ID, later), vec![long_key.clone().unwrap()]);
    // …and with the clock.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        match verify(resolver.clone(), &text) {
            Err((ErrorKind::BadSignature, Some(0), message)) => {
                assert!(message.contains(ID), "{message}");
                break;
            }
            Ok(()) => assert!(std::time::Instant::now() < deadline, "the expired SVID key kept verifying"),
            Err(other) => panic!("unexpected {other:?}"),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // Removing the SPIFFE ID forgets every key.
    resolver.remove(ID);
    assert!(resolver.resolve_all(ID).unwrap().is_empty());
    assert_eq!(verify(resolver, &text).unwrap_err().0, ErrorKind::UnknownSigner);
}

#[test]
fn a_bundle_update_that_removes_a_ca_drops_the_keys_it_anchored() {
    let (old_ca, new_ca_) = (new_ca("old-ca"), new_ca("new-ca"));
    let now = SystemTime::now();
    let a = svid(&old_ca, "spiffe://example.org/a", &rcgen::PKCS_ECDSA_P256_SHA256, FUTURE);
    let b = svid(&new_ca_, "spiffe://example.org/b", &rcgen::PKCS_ECDSA_P256_SHA256, FUTURE);
    let both: Vec<u8> = [old_ca.der.clone(), new_ca_.der.clone()].concat();
    let resolver = Arc::new(SpiffeBundleResolver::new(TD, &both).unwrap());
    resolver.add_svid(&a.0, now).unwrap();
    resolver.add_svid(&b.0, now).unwrap();
    let (text_a, text_b) = (passport(&[&a]), passport(&[&b]));
    verify(resolver.clone(), &text_a).unwrap();
    verify(resolver.clone(), &text_b).unwrap();

    // A malformed bundle is refused and changes nothing.
    assert!(resolver.set_bundle(b"not a certificate", now).is_err());
    assert!(resolver.set_bundle(&a.0, now).is_err(), "a leaf is not a CA");
    verify(resolver.clone(), &text_a).unwrap();

    // The old CA leaves the bundle: the key it anchored is dropped.
    assert_eq!(resolver.set_bundle(&new_ca_.der, now).unwrap(), 1);
    let (kind, index, message) = verify(resolver.clone(), &text_a).unwrap_err();
    assert_eq!((kind, index), (ErrorKind::UnknownSigner, Some(0)), "{message}");
    verify(resolver.clone(), &text_b).unwrap();
    // And a chain from the removed CA cannot come back.
    assert!(matches!(resolver.add_svid(&a.0, now), Err(kest::identity::SpiffeError::Chain { .. })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bundle_follows_the_workload_api_stream() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("agent.sock");
    let tx = server::start(&socket);
    let (ca1, ca2) = (new_ca("ca-1"), new_ca("ca-2"));
    let own1 = svid(&ca1, ID, &rcgen::PKCS_ECDSA_P256_SHA256, FUTURE);
    tx.send(Ok(response(&own1.0, &own1.1, &ca1.der, ID))).await.unwrap();
    let uri = format!("unix://{}", socket.display());
    let resolver = SpiffeBundleResolver::from_workload_api(&uri, Duration::from_secs(5)).await.unwrap();
    assert_eq!(resolver.trust_domain(), TD);
    // The workload's own SVID key is known; a peer anchored by ca-1 can be added.
    assert_eq!(resolver.resolve_all(ID).unwrap().len(), 1);
    let peer = svid(&ca1, "spiffe://example.org/peer", &rcgen::PKCS_ECDSA_P256_SHA256, FUTURE);
    resolver.add_svid(&peer.0, SystemTime::now()).unwrap();

    // The trust domain moves to ca-2 (the agent's next response): keys
    // anchored by ca-1 are dropped, the new own SVID is recorded.
    let own2 = svid(&ca2, ID, &rcgen::PKCS_ECDSA_P256_SHA256, FUTURE);
    tx.send(Ok(response(&own2.0, &own2.1, &ca2.der, ID))).await.unwrap();
    let r = resolver.clone();
    eventually("ca-1 keys dropped", async || r.resolve_all("spiffe://example.org/peer").unwrap().is_empty())
        .await;
    let text = passport(&[&own2]);
    verify(resolver.clone(), &text).unwrap();
    verify(resolver.clone(), &passport(&[&own1])).unwrap_err();
    assert!(resolver.add_svid(&peer.0, SystemTime::now()).is_err(), "ca-1 is no longer trusted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_workload_api_stream_fails_closed_once_stale_and_recovers_on_reconnect() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("agent.sock");
    let tx = server::start(&socket);
    let ca = new_ca("ca");
    let own = svid(&ca, ID, &rcgen::PKCS_ECDSA_P256_SHA256, FUTURE);
    tx.send(Ok(response(&own.0, &own.1, &ca.der, ID))).await.unwrap();
    let uri = format!("unix://{}", socket.display());
    let resolver = SpiffeBundleResolver::from_workload_api(&uri, Duration::from_secs(5)).await.unwrap();
    resolver.set_max_staleness(Duration::from_millis(300));
    let text = passport(&[&own]);
    verify(resolver.clone(), &text).unwrap();

    // The agent goes away (its stream ends; reconnecting fails: this test
    // server hands out one stream). After the allowed staleness, nothing
    // resolves: a CA removed upstream meanwhile must not stay trusted.
    drop(tx);
    let r = resolver.clone();
    eventually("stale", async || matches!(r.resolve_all(ID), Err(kest_core::ResolveError::Stale { .. })))
        .await;
    let (kind, index, message) = verify(resolver.clone(), &text).unwrap_err();
    assert_eq!((kind, index), (ErrorKind::KeyUnavailable, Some(0)), "{message}");

    // A new agent on the same socket: the resolver reconnects by itself and
    // answers again.
    std::fs::remove_file(&socket).unwrap();
    let tx = server::start(&socket);
    tx.send(Ok(response(&own.0, &own.1, &ca.der, ID))).await.unwrap();
    let r = resolver.clone();
    eventually("reconnected", async || r.resolve_all(ID).is_ok_and(|keys| keys.len() == 1)).await;
    verify(resolver.clone(), &text).unwrap();
}

// ------------------------------------------------------------- directory

/// A loopback SVID directory: answers with `doc` (or `status` when not 200).
#[derive(Clone)]
struct Directory {
    state: Arc<Mutex<(StatusCode, String)>>,
    url: String,
}

impl Directory {
    async fn start(svids: &[(&str, &[u8])]) -> Directory {
        let state = Arc::new(Mutex::new((StatusCode::OK, String::new())));
        let s = state.clone();
        let app = Router::new().route(
            "/svids",
            get(move || {
                let s = s.clone();
                async move {
                    let (status, body) = s.lock().unwrap().clone();
                    (status, [("content-type", "application/json")], body)
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/svids", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let directory = Directory { state, url };
        directory.publish(svids);
        directory
    }

    fn publish(&self, svids: &[(&str, &[u8])]) {
        *self.state.lock().unwrap() = (StatusCode::OK, directory_document(svids.iter().copied()).to_string());
    }

    fn fail(&self) {
        self.state.lock().unwrap().0 = StatusCode::SERVICE_UNAVAILABLE;
    }

    async fn resolver(
        &self,
        bundle: Arc<SpiffeBundleResolver>,
        policy: RefreshPolicy,
    ) -> Arc<SvidDirectoryResolver> {
        Arc::new(
            SvidDirectoryResolver::load(JwksSource::url(&self.url).unwrap(), bundle, policy, None)
                .await
                .unwrap(),
        )
    }
}

fn fast(refresh_ms: u64, max_stale_ms: u64) -> RefreshPolicy {
    RefreshPolicy::default()
        .refresh_interval(Duration::from_millis(refresh_ms))
        .min_refetch_interval(Duration::ZERO)
        .max_staleness(Duration::from_millis(max_stale_ms))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_key_rotated_out_stops_verifying_within_the_refresh_interval() {
    let ca = new_ca("spire-ca");
    let bundle = Arc::new(SpiffeBundleResolver::new(TD, &ca.der).unwrap());
    let first = svid(&ca, ID, &rcgen::PKCS_ECDSA_P256_SHA256, FUTURE);
    let second = svid(&ca, ID, &rcgen::PKCS_ECDSA_P256_SHA256, FUTURE);
    let directory = Directory::start(&[(ID, &first.0)]).await;
    let keys = directory.resolver(bundle, fast(300, 60_000)).await;
    let old = passport(&[&first]);
    let rotated = passport(&[&first, &second]);

    verify(keys.clone(), &old).expect("the listed chain's key verifies");
    assert_eq!(keys.principals(), vec![ID.to_owned()]);
    assert_eq!(
        verify(keys.clone(), &rotated).unwrap_err().0,
        ErrorKind::BadSignature,
        "second not listed yet"
    );

    // The SVID rotates: both listed during the overlap, then the first one is dropped.
    directory.publish(&[(ID, &first.0), (ID, &second.0)]);
    assert!(kest::http::RefreshingKeyResolver::refetch_for_unknown(keys.as_ref()).await);
    verify(keys.clone(), &rotated).expect("overlap: both keys verify");
    directory.publish(&[(ID, &second.0)]);
    verify(keys.clone(), &old).expect("accepted until the next refresh");
    let k = keys.clone();
    eventually("the rotated-out key refused", async || {
        k.refresh_if_due().await;
        match verify(k.clone(), &old) {
            Ok(()) => false,
            Err((kind, index, message)) => {
                assert_eq!((kind, index), (ErrorKind::BadSignature, Some(0)), "{message}");
                assert!(message.contains(ID), "{message}");
                true
            }
        }
    })
    .await;
    verify(keys.clone(), &passport(&[&second])).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_cannot_inject_a_key() {
    let ca = new_ca("spire-ca");
    let rogue = new_ca("rogue-ca");
    let bundle = Arc::new(SpiffeBundleResolver::new(TD, &ca.der).unwrap());
    let honest = svid(&ca, "spiffe://example.org/honest", &rcgen::PKCS_ECDSA_P256_SHA256, FUTURE);
    // A chain for ID minted by a CA outside the bundle, one listed under
    // another SPIFFE ID than its own, one in another trust domain, one expired.
    let forged = svid(&rogue, ID, &rcgen::PKCS_ECDSA_P256_SHA256, FUTURE);
    let mislabelled = svid(&ca, "spiffe://example.org/other", &rcgen::PKCS_ECDSA_P256_SHA256, FUTURE);
    let foreign_td = svid(&ca, "spiffe://evil.org/agent", &rcgen::PKCS_ECDSA_P256_SHA256, FUTURE);
    let expired = svid(&ca, "spiffe://example.org/old", &rcgen::PKCS_ECDSA_P256_SHA256, (2021, 1, 1));
    let directory = Directory::start(&[
        ("spiffe://example.org/honest", &honest.0),
        (ID, &forged.0),
        (ID, &mislabelled.0),
        ("spiffe://evil.org/agent", &foreign_td.0),
        ("spiffe://example.org/old", &expired.0),
    ])
    .await;
    let keys = directory.resolver(bundle, fast(60_000, 60_000)).await;
    assert_eq!(keys.refused(), 4);
    assert_eq!(keys.principals(), vec!["spiffe://example.org/honest".to_owned()]);
    assert!(keys.resolve_all(ID).unwrap().is_empty());
    let (kind, index, _) = verify(keys.clone(), &passport(&[&forged])).unwrap_err();
    assert_eq!((kind, index), (ErrorKind::UnknownSigner, Some(0)));
    assert_eq!(verify(keys.clone(), &passport(&[&mislabelled])).unwrap_err().0, ErrorKind::UnknownSigner);
    verify(keys.clone(), &passport(&[&honest])).unwrap();
    // No key material in Debug.
    let debug = format!("{keys:?}");
    assert!(!debug.contains("x509_svid") && debug.contains("SvidDirectoryResolver"), "{debug}");

    // A document that is not a directory is refused at load.
    let bad = Directory::start(&[]).await;
    *bad.state.lock().unwrap() = (StatusCode::OK, r#"{"svids":[{"spiffe_id":"x","x509_svid":"%%"}]}"#.into());
    let bundle = Arc::new(SpiffeBundleResolver::new(TD, &ca.der).unwrap());
    let err = SvidDirectoryResolver::load(JwksSource::url(&bad.url).unwrap(), bundle, fast(1000, 1000), None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not base64"), "{err}");
    // Plain http off loopback is refused before any fetch.
    assert!(JwksSource::url("http://directory.example/svids").is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_directory_fails_closed_past_the_maximum_staleness() {
    let ca = new_ca("spire-ca");
    let bundle = Arc::new(SpiffeBundleResolver::new(TD, &ca.der).unwrap());
    let first = svid(&ca, ID, &rcgen::PKCS_ECDSA_P256_SHA256, FUTURE);
    let directory = Directory::start(&[(ID, &first.0)]).await;
    let keys = directory.resolver(bundle, fast(100, 1_000)).await;
    let text = passport(&[&first]);
    verify(keys.clone(), &text).unwrap();
    directory.fail();
    let k = keys.clone();
    eventually("stale directory refused", async || {
        k.refresh_if_due().await;
        match verify(k.clone(), &text) {
            Ok(()) => false,
            Err((kind, index, message)) => {
                assert_eq!((kind, index), (ErrorKind::KeyUnavailable, Some(0)), "{message}");
                true
            }
        }
    })
    .await;
    assert!(matches!(keys.resolve_all(ID), Err(ResolveError::Stale { .. })));
    assert!(keys.principals().is_empty());
    // Back online: keys again after the next refresh.
    directory.publish(&[(ID, &first.0)]);
    let k = keys.clone();
    eventually("recovered", async || {
        k.refresh_if_due().await;
        verify(k.clone(), &text).is_ok()
    })
    .await;
}
