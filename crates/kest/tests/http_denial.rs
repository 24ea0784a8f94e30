//! A hooked handler whose policy denies answers 403 naming the policy and
//! tier, and its operation never runs (SPEC §5, §7.5).
#![cfg(feature = "http")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::routing::get;
use kest::http::{AuthenticatedPeer, LineageLayer, kest_error_response};
use kest::identity::StaticIdentity;
use kest::policy::{Decision, MockPolicyEngine};
use kest::{CallContext, HookError, Kest, Verified};
use kest_core::{KeySet, Signer as _};

#[tokio::test]
async fn policy_denial_is_403_with_the_policy_name() {
    let identity = Arc::new(StaticIdentity::from_seed("spiffe://test/svc", [41u8; 32]));
    let mut keys = KeySet::new();
    keys.insert("spiffe://test/svc", identity.public_key().unwrap()).unwrap();
    let engine = MockPolicyEngine::allow_all().with("send_email", Decision::Deny);
    let kest = Arc::new(Kest::builder().identity(identity).engine(Arc::new(engine)).build().unwrap());
    let ran = Arc::new(AtomicBool::new(false));
    let hook = Arc::new(Verified::builder("send").policy("send_email").build().unwrap());
    let (k, r, h) = (kest.clone(), ran.clone(), hook.clone());
    let app = Router::new()
        .route(
            "/",
            get(move || {
                let (kest, ran, hook) = (k.clone(), r.clone(), h.clone());
                async move {
                    let result = hook
                        .call_async(CallContext::new().runtime(&kest), async {
                            ran.store(true, Ordering::SeqCst);
                            Ok::<_, std::convert::Infallible>(())
                        })
                        .await;
                    match result {
                        Ok(()) => axum::http::Response::new("sent".to_owned()),
                        Err(HookError::Kest(e)) => kest_error_response(&e),
                        Err(HookError::Operation(never)) => match never {},
                    }
                }
            }),
        )
        // An entry point; the caller was authenticated by the transport.
        .layer(LineageLayer::builder().key_set(keys).entry_point("user_input").build().await.unwrap())
        .layer(axum::middleware::map_request(|mut r: axum::extract::Request| async move {
            r.extensions_mut().insert(AuthenticatedPeer("spiffe://test/client".to_owned()));
            r
        }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let response = reqwest::get(&url).await.unwrap();
    assert_eq!(response.status().as_u16(), 403);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"], "policy_denied");
    assert_eq!(body["policy"], "send_email");
    assert_eq!(body["tier"], "function");
    assert!(!ran.load(Ordering::SeqCst), "the operation never ran");
}
