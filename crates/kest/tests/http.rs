//! HTTP integration end to end (SPEC §7.4–§7.5): real axum servers on
//! loopback, real reqwest clients, a local JWT issuer serving its JWKS.
#![cfg(feature = "http")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::signature::KeyPair as _;
use axum::Router;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use kest::cache::{CacheError, CacheProvider, MemoryCache};
use kest::http::{
    AuthenticatedPeer, HttpConfigError, IdentityLayer, IdentityLayerBuilder, KestLayer,
    KestPropagationMiddleware, LineageLayer, RefreshPolicy, TraceParent, respond_with_passport,
};
use kest::identity::StaticIdentity;
use kest::policy::{BoxFuture, MockPolicyEngine};
use kest::propagation::Propagator;
use kest::{CallContext, Kest, Lineage, Verified};
use kest_core::baggage::Baggage;
use kest_core::{Ed25519Signer, EntryDraft, KeySet, Passport, Signer as _, TrustRules, Verifier};
use serde_json::{Value, json};
use tower::ServiceBuilder;

const CLIENT: &str = "spiffe://test/client";
const SERVICE_A: &str = "spiffe://test/service-a";
const ISSUER: &str = "https://issuer.test";
const AUDIENCE: &str = "kest-tests";

// ---------------------------------------------------------------- helpers

async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn client_signer() -> Ed25519Signer {
    Ed25519Signer::from_seed(CLIENT, [21u8; 32])
}

fn service_a_identity() -> Arc<StaticIdentity> {
    Arc::new(StaticIdentity::from_seed(SERVICE_A, [22u8; 32]))
}

/// The Kest key set every service trusts: the client and service A.
fn kest_keys() -> KeySet {
    let mut keys = KeySet::new();
    keys.insert(CLIENT, client_signer().public_key().unwrap()).unwrap();
    keys.insert(SERVICE_A, service_a_identity().public_key().unwrap()).unwrap();
    keys
}

/// A passport with one root entry signed by the client.
fn client_passport() -> Passport {
    let mut passport = Passport::new();
    passport.record(&EntryDraft::new("client.start"), &client_signer(), &TrustRules::default()).unwrap();
    passport
}

async fn lineage_layer(propagator: Propagator) -> LineageLayer {
    LineageLayer::builder().key_set(kest_keys()).semantic(true).propagator(propagator).build().await.unwrap()
}

/// A handler that records that it ran and answers with the flow it saw.
fn echo_app(ran: Arc<AtomicBool>) -> Router {
    Router::new().route(
        "/",
        get(move |headers: HeaderMap| {
            let ran = ran.clone();
            async move {
                ran.store(true, Ordering::SeqCst);
                axum::Json(flow_json(&headers))
            }
        }),
    )
}

fn flow_json(headers: &HeaderMap) -> Value {
    let passport = kest::current_passport().unwrap_or_default();
    json!({
        "user": kest::current_user(),
        "agent": kest::current_agent(),
        "task": kest::current_task(),
        "jwt": kest::current_jwt(),
        "operations": passport.entries().iter().map(|e| e.payload().operation.clone()).collect::<Vec<_>>(),
        "principals": passport.entries().iter().map(|e| e.principal().to_owned()).collect::<Vec<_>>(),
        "baggage": headers.get("baggage").map(|v| v.to_str().unwrap().to_owned()),
        "traceparent": headers.get("traceparent").map(|v| v.to_str().unwrap().to_owned()),
    })
}

async fn get_with(url: &str, headers: &[(&str, String)]) -> (u16, Value, reqwest::header::HeaderMap) {
    let mut request = reqwest::Client::new().get(url);
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.json::<Value>().await.unwrap_or(Value::Null);
    (status, body, headers)
}

/// Asserts a rejection: status, JSON `error`, and that the handler did not run.
fn assert_rejected(
    result: &(u16, Value, reqwest::header::HeaderMap),
    status: u16,
    error: &str,
    ran: &AtomicBool,
) {
    let (got, body, headers) = result;
    assert_eq!(*got, status, "{body}");
    assert_eq!(body["error"], error, "{body}");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    assert_eq!(headers.get("content-type").unwrap(), "application/json");
    assert!(!ran.load(Ordering::SeqCst), "the handler must not run");
}

// ------------------------------------------------------- local JWT issuer

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum KeyKind {
    Ed25519,
    P256,
    Rsa,
}

struct IssuerKey {
    kid: String,
    alg: Algorithm,
    encoding: EncodingKey,
    jwk: Value,
}

/// A JWT issuer on loopback: keys that can be added at run time, a JWKS
/// endpoint that counts its fetches, and token minting.
#[derive(Clone)]
struct Issuer {
    keys: Arc<Mutex<Vec<Arc<IssuerKey>>>>,
    fetches: Arc<AtomicUsize>,
    jwks_url: String,
}

/// The PKCS#1 `RSAPrivateKey` inside a PKCS#8 v1 `PrivateKeyInfo`.
fn pkcs1_from_pkcs8(der: &[u8]) -> Vec<u8> {
    fn tlv(d: &[u8]) -> (u8, &[u8], &[u8]) {
        let tag = d[0];
        let (len, header) = if d[1] < 0x80 {
            (d[1] as usize, 2)
        } else {
            let n = (d[1] & 0x7f) as usize;
            (d[2..2 + n].iter().fold(0usize, |acc, b| (acc << 8) | *b as usize), 2 + n)
        };
        (tag, &d[header..header + len], &d[header + len..])
    }
    let (tag, body, _) = tlv(der);
    assert_eq!(tag, 0x30);
    let (_, _, rest) = tlv(body); // version
    let (_, _, rest) = tlv(rest); // algorithm
    let (tag, key, _) = tlv(rest);
    assert_eq!(tag, 0x04);
    key.to_vec()
}

fn generate(kind: KeyKind, kid: &str) -> IssuerKey {
    let b64 = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
    match kind {
        KeyKind::Ed25519 => {
            let pair = aws_lc_rs::signature::Ed25519KeyPair::generate().unwrap();
            let pkcs8 = pair.to_pkcs8().unwrap();
            let x = b64(pair.public_key().as_ref());
            IssuerKey {
                kid: kid.into(),
                alg: Algorithm::EdDSA,
                encoding: EncodingKey::from_ed_der(pkcs8.as_ref()),
                jwk: json!({"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "use": "sig", "alg": "EdDSA"}),
            }
        }
        KeyKind::P256 => {
            let alg = &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING;
            let pair = aws_lc_rs::signature::EcdsaKeyPair::generate(alg).unwrap();
            let pkcs8 = pair.to_pkcs8v1().unwrap();
            let point = pair.public_key().as_ref();
            assert_eq!(point[0], 4);
            IssuerKey {
                kid: kid.into(),
                alg: Algorithm::ES256,
                encoding: EncodingKey::from_ec_der(pkcs8.as_ref()),
                jwk: json!({"kty": "EC", "crv": "P-256", "x": b64(&point[1..33]), "y": b64(&point[33..]), "kid": kid}),
            }
        }
        KeyKind::Rsa => {
            let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
            let pkcs8 = pair.as_der().unwrap();
            let components = aws_lc_rs::signature::RsaPublicKeyComponents::<Vec<u8>>::from(pair.public_key());
            IssuerKey {
                kid: kid.into(),
                alg: Algorithm::RS256,
                encoding: EncodingKey::from_rsa_der(&pkcs1_from_pkcs8(pkcs8.as_ref())),
                jwk: json!({"kty": "RSA", "n": b64(&components.n), "e": b64(&components.e), "kid": kid, "alg": "RS256"}),
            }
        }
    }
}

impl Issuer {
    async fn start(kinds: &[(KeyKind, &str)]) -> Issuer {
        let keys: Vec<Arc<IssuerKey>> = kinds.iter().map(|(k, kid)| Arc::new(generate(*k, kid))).collect();
        let keys = Arc::new(Mutex::new(keys));
        let fetches = Arc::new(AtomicUsize::new(0));
        let (k, f) = (keys.clone(), fetches.clone());
        let app = Router::new().route(
            "/jwks",
            get(move || {
                f.fetch_add(1, Ordering::SeqCst);
                let doc =
                    json!({"keys": k.lock().unwrap().iter().map(|key| key.jwk.clone()).collect::<Vec<_>>()});
                async move { axum::Json(doc) }
            }),
        );
        let base = serve(app).await;
        Issuer { keys, fetches, jwks_url: format!("{base}/jwks") }
    }

    fn add_key(&self, kind: KeyKind, kid: &str) {
        self.keys.lock().unwrap().push(Arc::new(generate(kind, kid)));
    }

    fn key(&self, kid: &str) -> Arc<IssuerKey> {
        self.keys.lock().unwrap().iter().find(|k| k.kid == kid).unwrap().clone()
    }

    fn sign_with(key: &IssuerKey, header_kid: &str, claims: &Value) -> String {
        let mut header = Header::new(key.alg);
        header.kid = Some(header_kid.into());
        jsonwebtoken::encode(&header, claims, &key.encoding).unwrap()
    }

    fn mint(&self, kid: &str, claims: Value) -> String {
        Issuer::sign_with(&self.key(kid), kid, &claims)
    }

    fn builder(&self) -> IdentityLayerBuilder {
        IdentityLayer::builder().jwks_url(&self.jwks_url).unwrap().issuer(ISSUER).audience(AUDIENCE)
    }

    async fn layer(&self) -> IdentityLayer {
        self.builder().build().await.unwrap()
    }
}

fn claims(extra: Value) -> Value {
    let mut c = json!({
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "user-123",
        "preferred_username": "alice",
        "azp": "web-app",
        "scope": "orders:read",
        "iat": now(),
        "exp": now() + 300,
    });
    for (k, v) in extra.as_object().unwrap() {
        if v.is_null() {
            c.as_object_mut().unwrap().remove(k);
        } else {
            c[k] = v.clone();
        }
    }
    c
}

fn bearer(token: &str) -> (&'static str, String) {
    ("authorization", format!("Bearer {token}"))
}

/// A gateway: one `KestLayer`, an entry point verifying bearer tokens.
async fn protected_server(issuer: &Issuer, ran: Arc<AtomicBool>) -> String {
    let layer = KestLayer::builder()
        .lineage(LineageLayer::builder().key_set(kest_keys()).entry_point("user_input"))
        .identity(issuer.builder())
        .build()
        .await
        .unwrap();
    serve(echo_app(ran).layer(layer)).await
}

// ------------------------------------------------------------ happy path

/// Service A: a hooked handler appends an entry, then calls B through the
/// middleware, and returns B's view with the final passport.
fn service_a(kest: Arc<Kest>, b_url: String, propagator: Propagator) -> Router {
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(KestPropagationMiddleware::new(propagator))
        .build();
    Router::new().route(
        "/",
        get(move || {
            let (kest, client, b_url) = (kest.clone(), client.clone(), b_url.clone());
            async move {
                // The hooked step appends A's entry to the caller's flow...
                let hook = Verified::builder("service_a.handle").policy("allow").build().unwrap();
                hook.call_async(CallContext::new().runtime(&kest), async { Ok::<_, Infallible>(()) })
                    .await
                    .unwrap();
                // ...which the middleware carries on to B.
                let response =
                    client.get(&b_url).header("baggage", "vendor=keep%20me;prop=1").send().await.unwrap();
                let from_b: Value = response.json().await.unwrap();
                respond_with_passport(axum::Json(from_b).into_response())
            }
        }),
    )
}

async fn two_hop_chain(propagator: Propagator) {
    let issuer = Issuer::start(&[(KeyKind::Ed25519, "ed-1"), (KeyKind::P256, "ec-1")]).await;
    let ran_b = Arc::new(AtomicBool::new(false));
    let b_url = serve(echo_app(ran_b.clone()).layer(lineage_layer(propagator.clone()).await)).await;

    let engine = Arc::new(MockPolicyEngine::allow_all());
    let kest = Arc::new(Kest::builder().identity(service_a_identity()).engine(engine).build().unwrap());
    let a_url = serve(service_a(kest, b_url, propagator.clone()).layer(
        ServiceBuilder::new().layer(lineage_layer(propagator.clone()).await).layer(issuer.layer().await),
    ))
    .await;

    // The client: a flow with one root entry, a bearer token, the middleware.
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(KestPropagationMiddleware::new(propagator.clone()))
        .build();
    let token = issuer.mint("ec-1", claims(json!({})));
    let start = client_passport();
    let flow = Lineage::from_passport(start.clone()).with_user("mallory"); // overwritten by the token
    let client_trace = TraceParent::random();
    let response = flow
        .scope(client.get(&a_url).bearer_auth(&token).header("traceparent", client_trace.to_string()).send())
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let returned =
        response.headers().get("baggage").expect("A returned its passport").to_str().unwrap().to_owned();
    let b_saw: Value = response.json().await.unwrap();

    // B saw the verified passport with A's entry after the client's.
    assert!(ran_b.load(Ordering::SeqCst));
    assert_eq!(b_saw["operations"], json!(["client.start", "service_a.handle"]), "{b_saw}");
    assert_eq!(b_saw["principals"], json!([CLIENT, SERVICE_A]));
    // Identity verified at A's edge travelled on; the raw token did not.
    assert_eq!(b_saw["user"], "alice");
    assert_eq!(b_saw["agent"], "web-app");
    assert_eq!(b_saw["task"], "orders:read");
    assert_eq!(b_saw["jwt"], Value::Null);
    // Unrelated baggage members set by A's code were kept, byte for byte.
    let b_baggage = b_saw["baggage"].as_str().unwrap();
    assert!(b_baggage.starts_with("vendor=keep%20me;prop=1,kest."), "{b_baggage}");
    // One trace from the client through A to B, with a new parent span id.
    let b_trace = TraceParent::parse(b_saw["traceparent"].as_str().unwrap()).unwrap();
    assert_eq!(b_trace.trace_id(), client_trace.trace_id());
    assert_ne!(b_trace.parent_id(), client_trace.parent_id());

    // The passport A returned verifies and holds the whole chain.
    let extracted = propagator
        .extract(&Baggage::parse(&returned).unwrap(), &Verifier::new(kest_keys()).semantic(true))
        .await
        .unwrap();
    let ops: Vec<_> = extracted.passport.entries().iter().map(|e| e.payload().operation.clone()).collect();
    assert_eq!(ops, ["client.start", "service_a.handle"]);
    let a_entry = &extracted.passport.entries()[1];
    assert_eq!(a_entry.parents(), start.tips());
    let recorded = a_entry.payload().labels["kest.identity"].as_str().unwrap();
    let recorded: Value = serde_json::from_str(recorded).unwrap();
    assert_eq!(recorded["user"], "alice", "A's hook recorded the verified user");
    assert!(!returned.contains("kest.jwt"));
}

#[tokio::test]
async fn two_hop_chain_inline() {
    two_hop_chain(Propagator::new()).await;
}

#[tokio::test]
async fn two_hop_chain_with_claim_checks() {
    // A tiny threshold forces every passport through the shared cache.
    let cache = Arc::new(MemoryCache::new());
    two_hop_chain(Propagator::builder().cache(cache.clone()).threshold(64).build()).await;
    assert!(!cache.is_empty(), "the passports went through the cache");
}

// ------------------------------------------------------ lineage failures

async fn lineage_only_server(propagator: Propagator) -> (String, Arc<AtomicBool>) {
    let ran = Arc::new(AtomicBool::new(false));
    let url = serve(echo_app(ran.clone()).layer(lineage_layer(propagator).await)).await;
    (url, ran)
}

async fn baggage_for(passport: &Passport) -> String {
    let mut baggage = Baggage::new();
    Propagator::new().inject(&Lineage::from_passport(passport.clone()), &mut baggage).await.unwrap();
    baggage.to_header().unwrap()
}

#[tokio::test]
async fn attack_gateway_bypass_an_inner_service_refuses_requests_without_lineage() {
    let (url, ran) = lineage_only_server(Propagator::new()).await;
    // No passport, no token, a claimed user: the review's bypass request.
    let result = get_with(&url, &[("baggage", "kest.user=mallory".into())]).await;
    assert_rejected(&result, 403, "missing_lineage", &ran);
    assert_rejected(&get_with(&url, &[]).await, 403, "missing_lineage", &ran);

    // An entry point starts flows only for a verified identity.
    let entry = LineageLayer::builder().key_set(kest_keys()).entry_point("user_input").build().await.unwrap();
    let url = serve(echo_app(ran.clone()).layer(entry)).await;
    let result = get_with(&url, &[("baggage", "kest.user=mallory".into())]).await;
    assert_rejected(&result, 401, "missing_token", &ran);
}

#[tokio::test]
async fn a_valid_passport_is_restored() {
    let (url, _ran) = lineage_only_server(Propagator::new()).await;

    let header = format!("other=1,{}", baggage_for(&client_passport()).await);
    let (status, body, _) = get_with(&url, &[("baggage", header)]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["operations"], json!(["client.start"]));
}

#[tokio::test]
async fn malformed_baggage_is_400() {
    let (url, ran) = lineage_only_server(Propagator::new()).await;
    for bad in ["kest.passport=%zz", "a=1,,b=2", "kest.passport=not-json", "kest.chain_tip=xyz"] {
        let result = get_with(&url, &[("baggage", bad.to_owned())]).await;
        let error = if bad.starts_with("kest.chain_tip") { "bad_chain_tip" } else { "malformed_baggage" };
        assert_rejected(&result, 400, error, &ran);
    }
}

#[tokio::test]
async fn oversized_baggage_is_431() {
    let (url, ran) = lineage_only_server(Propagator::new()).await;
    let big = format!("vendor={}", "x".repeat(8200));
    assert_rejected(&get_with(&url, &[("baggage", big)]).await, 431, "baggage_too_large", &ran);
    // Split over two header lines: the joined header counts.
    let mut request = reqwest::Client::new().get(&url);
    for i in 0..2 {
        request = request.header("baggage", format!("k{i}={}", "y".repeat(4500)));
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 431);
    let many = (0..65).map(|i| format!("k{i}=v")).collect::<Vec<_>>().join(",");
    assert_rejected(&get_with(&url, &[("baggage", many)]).await, 431, "baggage_too_large", &ran);
}

#[tokio::test]
async fn unresolvable_claim_check_is_424() {
    let claim = "kest.claim_check=5f0c3a5e-8a57-4a8e-9a57-3e8f2d7b1c00".to_owned();
    let (url, ran) =
        lineage_only_server(Propagator::builder().cache(Arc::new(MemoryCache::new())).build()).await;
    assert_rejected(&get_with(&url, &[("baggage", claim.clone())]).await, 424, "claim_check_not_found", &ran);
    let (url, ran) = lineage_only_server(Propagator::new()).await;
    assert_rejected(&get_with(&url, &[("baggage", claim)]).await, 424, "no_cache_for_claim_check", &ran);
}

/// A cache that is always down.
#[derive(Debug)]
struct DownCache;

impl CacheProvider for DownCache {
    fn name(&self) -> &str {
        "down"
    }
    fn get<'a>(&'a self, _key: &'a str) -> BoxFuture<'a, Result<Option<String>, CacheError>> {
        Box::pin(async {
            Err(CacheError::Unavailable { cache: "down".into(), message: "connection refused".into() })
        })
    }
    fn set<'a>(&'a self, _: &'a str, _: &'a str, _: Duration) -> BoxFuture<'a, Result<(), CacheError>> {
        Box::pin(async {
            Err(CacheError::Unavailable { cache: "down".into(), message: "connection refused".into() })
        })
    }
    fn delete<'a>(&'a self, _key: &'a str) -> BoxFuture<'a, Result<(), CacheError>> {
        Box::pin(async { Ok(()) })
    }
}

#[tokio::test]
async fn unavailable_cache_is_503() {
    let (url, ran) = lineage_only_server(Propagator::builder().cache(Arc::new(DownCache)).build()).await;
    let claim = "kest.claim_check=5f0c3a5e-8a57-4a8e-9a57-3e8f2d7b1c00".to_owned();
    assert_rejected(&get_with(&url, &[("baggage", claim)]).await, 503, "cache_unavailable", &ran);
}

#[tokio::test]
async fn tampered_or_unknown_passport_is_403_with_the_kind() {
    let (url, ran) = lineage_only_server(Propagator::new()).await;
    // Flip one signature character of the client's entry.
    let passport = client_passport();
    let mut entries: Vec<String> = serde_json::from_str(&passport.to_json()).unwrap();
    let last = entries[0].pop().unwrap();
    entries[0].push(if last == 'A' { 'Q' } else { 'A' });
    let mut baggage = Baggage::new();
    baggage.set("kest.passport", serde_json::to_string(&entries).unwrap()).unwrap();
    let result = get_with(&url, &[("baggage", baggage.to_header().unwrap())]).await;
    assert_rejected(&result, 403, "bad_signature", &ran);

    // Signed by a key outside the key set.
    let stranger = Ed25519Signer::from_seed("spiffe://test/stranger", [99u8; 32]);
    let mut other = Passport::new();
    other.record(&EntryDraft::new("forged"), &stranger, &TrustRules::default()).unwrap();
    let result = get_with(&url, &[("baggage", baggage_for(&other).await)]).await;
    assert_rejected(&result, 403, "unknown_signer", &ran);
}

#[tokio::test]
async fn lineage_layer_requires_a_key_set() {
    assert_eq!(LineageLayer::builder().build().await.unwrap_err(), HttpConfigError::NoKeySet);
    assert!(LineageLayer::builder().key_set(KeySet::new()).build().await.is_err(), "an empty key set");
    // From a JWKS file and a JWKS URL.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, kest_keys().to_jwks().to_string()).unwrap();
    let layer = LineageLayer::builder().jwks_file(&path).build().await.unwrap();
    assert!(layer.verifier().resolver().resolve(CLIENT).unwrap().is_some());
    let doc = kest_keys().to_jwks();
    let url = serve(Router::new().route("/k", get(move || async move { axum::Json(doc) }))).await;
    let layer = LineageLayer::builder().jwks_url(format!("{url}/k")).unwrap().build().await.unwrap();
    assert!(layer.verifier().resolver().resolve(SERVICE_A).unwrap().is_some());
    assert!(layer.verifier().resolver().resolve("spiffe://test/nobody").unwrap().is_none());
    assert!(LineageLayer::builder().jwks_url("http://kest.example/jwks").is_err(), "plain http off loopback");
}

// ------------------------------------------------------ identity layer

#[tokio::test]
async fn valid_tokens_of_every_algorithm_map_to_the_flow_identity() {
    let issuer =
        Issuer::start(&[(KeyKind::Ed25519, "ed-1"), (KeyKind::P256, "ec-1"), (KeyKind::Rsa, "rsa-1")]).await;
    let ran = Arc::new(AtomicBool::new(false));
    let url = protected_server(&issuer, ran.clone()).await;
    for kid in ["ed-1", "ec-1", "rsa-1"] {
        let token = issuer.mint(kid, claims(json!({})));
        // Propagated identity is overwritten by the verified one.
        let headers = [bearer(&token), ("baggage", "kest.user=mallory,kest.agent=evil,kest.task=all".into())];
        let (status, body, _) = get_with(&url, &headers).await;
        assert_eq!(status, 200, "{kid}: {body}");
        assert_eq!(body["user"], "alice");
        assert_eq!(body["agent"], "web-app");
        assert_eq!(body["task"], "orders:read");
        assert_eq!(body["jwt"], token.as_str());
    }
    // Fallbacks: `sub` for the user, `client_id` for the agent; no scope → no task.
    let token = issuer.mint(
        "ed-1",
        claims(json!({"preferred_username": null, "azp": null, "scope": null, "client_id": "cli"})),
    );
    let headers = [bearer(&token), ("baggage", "kest.task=propagated".into())];
    let (status, body, _) = get_with(&url, &headers).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!((body["user"].as_str(), body["agent"].as_str()), (Some("user-123"), Some("cli")));
    assert_eq!(body["task"], Value::Null, "unverified baggage does not fill gaps");
}

#[tokio::test]
async fn on_behalf_of_tokens() {
    let issuer = Issuer::start(&[(KeyKind::Ed25519, "ed-1")]).await;
    let ran = Arc::new(AtomicBool::new(false));
    let url = protected_server(&issuer, ran.clone()).await;
    // RFC 8693 §4.1: `sub` is on whose behalf, `act.sub` the current actor.
    let token = issuer.mint(
        "ed-1",
        claims(json!({"sub": "bob", "act": {"sub": "agent-7", "act": {"sub": "orchestrator"}}, "azp": "ignored", "scope": "tickets:write"})),
    );
    let (status, body, _) = get_with(&url, &[bearer(&token)]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user"], "bob");
    assert_eq!(body["agent"], "agent-7");
    assert_eq!(body["task"], "tickets:write");
    // Control characters in an identity claim: 400, the handler never runs.
    ran.store(false, Ordering::SeqCst);
    let token = issuer.mint("ed-1", claims(json!({"preferred_username": "alice\u{0}admin"})));
    assert_rejected(&get_with(&url, &[bearer(&token)]).await, 400, "invalid_identity", &ran);
}

#[tokio::test]
async fn bad_tokens_are_401_and_the_handler_never_runs() {
    let issuer = Issuer::start(&[(KeyKind::Ed25519, "ed-1"), (KeyKind::P256, "ec-1")]).await;
    let ran = Arc::new(AtomicBool::new(false));
    let url = protected_server(&issuer, ran.clone()).await;
    let stranger = generate(KeyKind::Ed25519, "ed-1");
    let cases: Vec<(&str, Vec<(&str, String)>)> = vec![
        ("missing_token", vec![]),
        ("missing_token", vec![("authorization", "Basic dXNlcjpwdw==".into())]),
        ("malformed_token", vec![bearer("not-a-jwt")]),
        ("bad_signature", vec![bearer(&Issuer::sign_with(&stranger, "ed-1", &claims(json!({}))))]),
        ("token_expired", vec![bearer(&issuer.mint("ed-1", claims(json!({"exp": now() - 120}))))]),
        ("token_not_yet_valid", vec![bearer(&issuer.mint("ed-1", claims(json!({"nbf": now() + 600}))))]),
        ("wrong_audience", vec![bearer(&issuer.mint("ed-1", claims(json!({"aud": "someone-else"}))))]),
        ("wrong_audience", vec![bearer(&issuer.mint("ed-1", claims(json!({"aud": null}))))]),
        ("wrong_issuer", vec![bearer(&issuer.mint("ed-1", claims(json!({"iss": "https://evil.test"}))))]),
        ("invalid_claims", vec![bearer(&issuer.mint("ed-1", claims(json!({"exp": null}))))]),
        ("unknown_key", vec![bearer(&Issuer::sign_with(&stranger, "ed-unknown", &claims(json!({}))))]),
        // An EdDSA token naming the EC key: the key's type fixes the algorithm.
        (
            "alg_not_allowed",
            vec![bearer(&Issuer::sign_with(&issuer.key("ed-1"), "ec-1", &claims(json!({}))))],
        ),
    ];
    for (error, headers) in cases {
        let result = get_with(&url, &headers).await;
        assert_rejected(&result, 401, error, &ran);
        assert!(result.2.get("www-authenticate").unwrap().to_str().unwrap().starts_with("Bearer"));
    }
    // Within the leeway, expiry is tolerated.
    let token = issuer.mint("ed-1", claims(json!({"exp": now() - 5})));
    assert_eq!(get_with(&url, &[bearer(&token)]).await.0, 200);
}

#[tokio::test]
async fn key_rotation_refetches_at_most_once_per_interval() {
    let issuer = Issuer::start(&[(KeyKind::Ed25519, "ed-1")]).await;
    let ran = Arc::new(AtomicBool::new(false));
    let url = protected_server(&issuer, ran.clone()).await;
    assert_eq!(issuer.fetches.load(Ordering::SeqCst), 1, "fetched when the layer was built");

    // The issuer rotates in a new key after the service started.
    issuer.add_key(KeyKind::P256, "ec-2");
    let token = issuer.mint("ec-2", claims(json!({})));
    let (status, body, _) = get_with(&url, &[bearer(&token)]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(issuer.fetches.load(Ordering::SeqCst), 2, "one refetch for the unknown kid");
    assert_eq!(get_with(&url, &[bearer(&token)]).await.0, 200);
    assert_eq!(issuer.fetches.load(Ordering::SeqCst), 2, "known now: no refetch");

    // Another new key within 30 s: no second refetch, so it is refused.
    issuer.add_key(KeyKind::Ed25519, "ed-3");
    ran.store(false, Ordering::SeqCst);
    let token = issuer.mint("ed-3", claims(json!({})));
    assert_rejected(&get_with(&url, &[bearer(&token)]).await, 401, "unknown_key", &ran);
    assert_eq!(issuer.fetches.load(Ordering::SeqCst), 2);

    // With a short interval the next unknown kid refetches again.
    let quick = IdentityLayer::builder()
        .jwks_url(&issuer.jwks_url)
        .unwrap()
        .audience(AUDIENCE)
        .refetch_interval(Duration::from_millis(50))
        .build()
        .await
        .unwrap();
    let url = serve(echo_app(ran.clone()).layer(quick)).await;
    let before = issuer.fetches.load(Ordering::SeqCst);
    issuer.add_key(KeyKind::Ed25519, "ed-4");
    let first = issuer.mint("ed-4", claims(json!({})));
    assert_eq!(get_with(&url, &[bearer(&first)]).await.0, 200);
    tokio::time::sleep(Duration::from_millis(60)).await;
    issuer.add_key(KeyKind::Ed25519, "ed-5");
    let second = issuer.mint("ed-5", claims(json!({})));
    assert_eq!(get_with(&url, &[bearer(&second)]).await.0, 200);
    assert_eq!(issuer.fetches.load(Ordering::SeqCst), before + 2);
}

#[tokio::test]
async fn identity_layer_from_a_jwks_file() {
    let issuer = Issuer::start(&[(KeyKind::Ed25519, "ed-1")]).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("idp.json");
    std::fs::write(&path, json!({"keys": [issuer.key("ed-1").jwk.clone()]}).to_string()).unwrap();
    let layer = IdentityLayer::builder().jwks_file(&path).audience(AUDIENCE).build().await.unwrap();
    let ran = Arc::new(AtomicBool::new(false));
    let url = serve(echo_app(ran.clone()).layer(layer)).await;
    let token = issuer.mint("ed-1", claims(json!({})));
    let (status, body, _) = get_with(&url, &[bearer(&token)]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user"], "alice");
}

#[tokio::test]
async fn identity_layer_requires_a_jwks_unless_insecure() {
    let err = IdentityLayer::builder().audience(AUDIENCE).env(|_| None).build().await.unwrap_err();
    assert_eq!(err, HttpConfigError::NoJwks);
    let err =
        IdentityLayer::builder().audience(AUDIENCE).env(|_| Some("false".into())).build().await.unwrap_err();
    assert_eq!(err, HttpConfigError::NoJwks);
    assert!(
        IdentityLayer::builder().audience(AUDIENCE).jwks_json(r#"{"keys":[]}"#).build().await.is_err(),
        "no usable key"
    );

    let insecure = IdentityLayer::builder()
        .env(|name| (name == "KEST_INSECURE_NO_VERIFY").then(|| "true".to_owned()))
        .audience(AUDIENCE)
        .build()
        .await
        .unwrap();
    assert!(!insecure.verifier().verifies_signatures());
    let ran = Arc::new(AtomicBool::new(false));
    let url = serve(echo_app(ran.clone()).layer(insecure)).await;
    // Any signature passes, claims are still checked.
    let stranger = generate(KeyKind::Ed25519, "whatever");
    let token = Issuer::sign_with(&stranger, "whatever", &claims(json!({})));
    let (status, body, _) = get_with(&url, &[bearer(&token)]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user"], "alice");
    ran.store(false, Ordering::SeqCst);
    let expired = Issuer::sign_with(&stranger, "whatever", &claims(json!({"exp": now() - 120})));
    assert_rejected(&get_with(&url, &[bearer(&expired)]).await, 401, "token_expired", &ran);
}

// ------------------------------------------------------------- client

#[tokio::test]
async fn middleware_outside_a_flow_only_adds_traceparent() {
    let seen = Arc::new(Mutex::new(None::<(Option<String>, Option<String>)>));
    let s = seen.clone();
    let url = serve(Router::new().route(
        "/",
        get(move |headers: HeaderMap| {
            let get = |n: &str| headers.get(n).map(|v| v.to_str().unwrap().to_owned());
            *s.lock().unwrap() = Some((get("baggage"), get("traceparent")));
            async { "ok" }
        }),
    ))
    .await;
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(KestPropagationMiddleware::new(Propagator::new()))
        .build();
    client.get(&url).header("baggage", "a=1").send().await.unwrap();
    let (baggage, traceparent) = seen.lock().unwrap().clone().unwrap();
    assert_eq!(baggage.as_deref(), Some("a=1"));
    assert!(TraceParent::parse(&traceparent.unwrap()).is_ok());

    // A valid traceparent already on the request is kept; a broken one replaced.
    let tp = TraceParent::random().to_string();
    client.get(&url).header("traceparent", &tp).send().await.unwrap();
    assert_eq!(seen.lock().unwrap().clone().unwrap().1.as_deref(), Some(tp.as_str()));
    client.get(&url).header("traceparent", tp.to_uppercase()).send().await.unwrap();
    let replaced = seen.lock().unwrap().clone().unwrap().1.unwrap();
    assert!(TraceParent::parse(&replaced).is_ok());

    // A flow too large for the header without a cache fails before sending.
    let mut big = Passport::new();
    for i in 0..40 {
        big.record(&EntryDraft::new(format!("step-{i}")), &client_signer(), &TrustRules::default()).unwrap();
    }
    let small = Propagator::builder().threshold(64).build();
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(KestPropagationMiddleware::new(small))
        .build();
    let err = Lineage::from_passport(big).scope(client.get(&url).send()).await.unwrap_err();
    assert!(err.to_string().contains("claim check"), "{err}");
}

/// Responses to rejected requests must not depend on the inner body type:
/// the layers also work on a plain tower service.
#[tokio::test]
async fn layers_work_on_a_plain_tower_service() {
    use tower::{Service as _, ServiceExt as _};
    let ran = Arc::new(AtomicBool::new(false));
    let r = ran.clone();
    let inner = tower::service_fn(move |_req: http::Request<String>| {
        r.store(true, Ordering::SeqCst);
        async { Ok::<_, Infallible>(Response::new(axum::body::Body::from("inner"))) }
    });
    let mut service = ServiceBuilder::new().layer(lineage_layer(Propagator::new()).await).service(inner);
    let request =
        http::Request::builder().header("baggage", "kest.passport=%zz").body(String::new()).unwrap();
    let response = service.ready().await.unwrap().call(request).await.unwrap();
    assert_eq!(response.status(), 400);
    assert!(response.body().is_rejection());
    assert!(!ran.load(Ordering::SeqCst));
    let response = service.ready().await.unwrap().call(http::Request::new(String::new())).await.unwrap();
    assert_eq!(response.status(), 403, "an inner service: no passport, no call");
    assert!(!ran.load(Ordering::SeqCst));
    let request = http::Request::builder()
        .header("baggage", baggage_for(&client_passport()).await)
        .body(String::new())
        .unwrap();
    let response = service.ready().await.unwrap().call(request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(ran.load(Ordering::SeqCst));
}

// ------------------------------------------ the review's attacks over HTTP

#[tokio::test]
async fn attack_spoofed_baggage_identity_with_and_without_the_identity_layer() {
    let issuer = Issuer::start(&[(KeyKind::Ed25519, "ed-1")]).await;
    let token = issuer.mint("ed-1", claims(json!({})));
    let spoofed = format!("kest.user=mallory,{}", baggage_for(&client_passport()).await);

    // Identity layer *outside* the lineage layer (the order that used to
    // let the header win): the token's alice stands.
    let ran = Arc::new(AtomicBool::new(false));
    let app = echo_app(ran.clone()).layer(
        ServiceBuilder::new().layer(issuer.layer().await).layer(lineage_layer(Propagator::new()).await),
    );
    let url = serve(app).await;
    let (status, body, _) = get_with(&url, &[bearer(&token), ("baggage", spoofed.clone())]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user"], "alice");

    // Identity layer inside: the same.
    let url = protected_server(&issuer, ran.clone()).await;
    let (status, body, _) = get_with(&url, &[bearer(&token), ("baggage", spoofed.clone())]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user"], "alice");

    // No identity layer: the claim is not signed into the passport, so it
    // is dropped, never handed to policy.
    let (url, _) = lineage_only_server(Propagator::new()).await;
    let (status, body, _) = get_with(&url, &[("baggage", spoofed)]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user"], Value::Null);
}

#[tokio::test]
async fn an_entry_point_scores_a_new_flow_with_its_ingress_origin() {
    let issuer = Issuer::start(&[(KeyKind::Ed25519, "ed-1")]).await;
    let kest = Arc::new(
        Kest::builder()
            .identity(service_a_identity())
            .engine(Arc::new(MockPolicyEngine::allow_all()))
            .build()
            .unwrap(),
    );
    // The handler claims `internal` data: at an entry point the root is
    // scored with the ingress origin instead.
    let app = Router::new()
        .route(
            "/",
            get(move || {
                let kest = kest.clone();
                async move {
                    let hook = Verified::builder("ingest").policy("p").source_type("internal").build().unwrap();
                    hook.call(CallContext::new().runtime(&kest), || Ok::<_, Infallible>(())).unwrap();
                    let p = kest::current_passport().unwrap();
                    let e = p.entries()[0].payload();
                    axum::Json(json!({"trust": e.trust_score, "origin": e.label("kest.source_type"), "user": kest::current_user()}))
                }
            }),
        )
        .layer(
            KestLayer::builder()
                .lineage(LineageLayer::builder().key_set(kest_keys()).entry_point("user_input"))
                .identity(issuer.builder())
                .build()
                .await
                .unwrap(),
        );
    let url = serve(app).await;
    let (status, body, _) = get_with(&url, &[bearer(&issuer.mint("ed-1", claims(json!({}))))]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"trust": 40, "origin": "user_input", "user": "alice"}));
}

#[tokio::test]
async fn a_removed_key_stops_verifying_within_the_refresh_interval() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, kest_keys().to_jwks().to_string()).unwrap();
    let layer = LineageLayer::builder()
        .jwks_file(&path)
        .refresh(
            RefreshPolicy::default().refresh_interval(Duration::ZERO).min_refetch_interval(Duration::ZERO),
        )
        .build()
        .await
        .unwrap();
    let ran = Arc::new(AtomicBool::new(false));
    let url = serve(echo_app(ran.clone()).layer(layer)).await;
    let header = baggage_for(&client_passport()).await;
    assert_eq!(get_with(&url, &[("baggage", header.clone())]).await.0, 200);
    // The client's key is removed from the source.
    let mut remaining = KeySet::new();
    remaining.insert(SERVICE_A, service_a_identity().public_key().unwrap()).unwrap();
    std::fs::write(&path, remaining.to_jwks().to_string()).unwrap();
    ran.store(false, Ordering::SeqCst);
    assert_rejected(&get_with(&url, &[("baggage", header)]).await, 403, "unknown_signer", &ran);
}

#[tokio::test]
async fn tips_must_be_signed_by_the_authenticated_peer_over_http() {
    // A transport layer (mTLS, say) authenticated the caller as SERVICE_A.
    let ran = Arc::new(AtomicBool::new(false));
    let app = echo_app(ran.clone()).layer(
        ServiceBuilder::new()
            .map_request(|mut r: http::Request<axum::body::Body>| {
                r.extensions_mut().insert(AuthenticatedPeer(SERVICE_A.to_owned()));
                r
            })
            .layer(lineage_layer(Propagator::new()).await),
    );
    let url = serve(app).await;
    // The client signed the tip, not SERVICE_A: someone replays the
    // client's passport through SERVICE_A's connection.
    let result = get_with(&url, &[("baggage", baggage_for(&client_passport()).await)]).await;
    assert_rejected(&result, 403, "tip_not_signed_by_peer", &ran);
}

#[tokio::test]
async fn gating_layers_check_semantics_origins_and_sanitizers_by_default() {
    let ran = Arc::new(AtomicBool::new(false));
    // The default builder: semantic checks and unknown-origin refusal on.
    let layer = LineageLayer::builder().key_set(kest_keys()).build().await.unwrap();
    let url = serve(echo_app(ran.clone()).layer(layer)).await;

    // A root claiming an origin this service does not know.
    let mut rules = TrustRules::default();
    rules.origins.register("partner_feed", 95).unwrap();
    let mut draft = EntryDraft::new("ingest");
    draft.source_type = Some("partner_feed".into());
    let mut custom = Passport::new();
    custom.record(&draft, &client_signer(), &rules).unwrap();
    assert_rejected(
        &get_with(&url, &[("baggage", baggage_for(&custom).await)]).await,
        403,
        "unknown_origin",
        &ran,
    );

    // A child claiming more trust than its parent, signed as such.
    let mut raised = client_passport();
    let parent = raised.entries()[0].clone();
    let mut child = EntryDraft::new("raise");
    child.parents = kest_core::Parents::Explicit(vec![parent.hash()]);
    let mut entry = kest_core::prepare_entry(&[&parent], &child, CLIENT, &TrustRules::default()).unwrap();
    entry.trust_score = 100;
    raised.append(kest_core::sign_entry(entry, &client_signer()).unwrap()).unwrap();
    assert_rejected(
        &get_with(&url, &[("baggage", baggage_for(&raised).await)]).await,
        403,
        "trust_mismatch",
        &ran,
    );

    // An override escalation by a principal outside the sanitizer set.
    let layer = LineageLayer::builder().key_set(kest_keys()).sanitizers([SERVICE_A]).build().await.unwrap();
    let url = serve(echo_app(ran.clone()).layer(layer)).await;
    let mut escalated = Passport::new();
    let mut web = EntryDraft::new("fetch");
    web.source_type = Some("internet".into());
    escalated.record(&web, &client_signer(), &TrustRules::default()).unwrap();
    let mut clean = EntryDraft::new("launder");
    clean.trust_override = Some(100);
    escalated.record(&clean, &client_signer(), &TrustRules::default()).unwrap();
    assert_rejected(
        &get_with(&url, &[("baggage", baggage_for(&escalated).await)]).await,
        403,
        "trust_escalation",
        &ran,
    );
}

#[tokio::test]
async fn a_removed_token_key_stops_verifying_within_the_refresh_interval() {
    let issuer = Issuer::start(&[(KeyKind::Ed25519, "ed-1"), (KeyKind::Ed25519, "ed-2")]).await;
    let layer = issuer
        .builder()
        .refresh(
            RefreshPolicy::default().refresh_interval(Duration::ZERO).min_refetch_interval(Duration::ZERO),
        )
        .build()
        .await
        .unwrap();
    let ran = Arc::new(AtomicBool::new(false));
    let url = serve(echo_app(ran.clone()).layer(layer)).await;
    let token = issuer.mint("ed-2", claims(json!({})));
    assert_eq!(get_with(&url, &[bearer(&token)]).await.0, 200);
    issuer.keys.lock().unwrap().retain(|k| k.kid != "ed-2");
    ran.store(false, Ordering::SeqCst);
    assert_rejected(&get_with(&url, &[bearer(&token)]).await, 401, "unknown_key", &ran);
}

#[test]
fn error_bodies_never_carry_engine_internals() {
    let failed = kest::KestError::PolicyFailed {
        policy: "guard".into(),
        tier: kest::policy::Tier::Function,
        operation: "send".into(),
        source: kest::policy::PolicyError::Evaluation {
            policy: "guard".into(),
            message: "rego: undefined ref data.secrets.db_password at line 7".into(),
        },
    };
    let response = kest::http::kest_error_response(&failed);
    assert_eq!(response.status(), 403);
    let body: Value = serde_json::from_str(response.body()).unwrap();
    assert_eq!(body["error"], "policy_failed");
    assert_eq!(body["policy"], "guard");
    assert!(!response.body().contains("db_password"), "{}", response.body());
}

#[tokio::test]
async fn the_flow_goes_only_to_allowed_destinations() {
    let ran = Arc::new(AtomicBool::new(false));
    let url = serve(echo_app(ran)).await; // a plain server: shows what arrived
    let send = |middleware: KestPropagationMiddleware| {
        let url = url.clone();
        async move {
            let client =
                reqwest_middleware::ClientBuilder::new(reqwest::Client::new()).with(middleware).build();
            let flow = Lineage::from_passport(client_passport()).with_user("alice");
            let body: Value = flow.scope(client.get(&url).send()).await.unwrap().json().await.unwrap();
            body
        }
    };
    let elsewhere = KestPropagationMiddleware::new(Propagator::new())
        .allow_destinations(["https://orders.internal/"])
        .unwrap();
    let body = send(elsewhere).await;
    assert_eq!(body["baggage"], Value::Null, "no passport or identity to an unlisted host");
    assert!(body["traceparent"].is_string());
    let listed =
        KestPropagationMiddleware::new(Propagator::new()).allow_destinations([url.as_str()]).unwrap();
    let body = send(listed).await;
    assert!(body["baggage"].as_str().unwrap().contains("kest.passport="), "{body}");
}

#[tokio::test]
async fn inner_services_authenticate_their_callers_with_workload_tokens() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    let layer = LineageLayer::builder()
        .key_set(kest_keys())
        .authenticate_peers(origin.clone())
        .build()
        .await
        .unwrap();
    let ran = Arc::new(AtomicBool::new(false));
    let app = echo_app(ran.clone()).layer(layer);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let url = format!("{origin}/");

    // No workload token: 401, whatever the passport.
    let header = baggage_for(&client_passport()).await;
    assert_rejected(
        &get_with(&url, &[("baggage", header.clone())]).await,
        401,
        "missing_workload_token",
        &ran,
    );

    // The client's middleware proves it is CLIENT; its own passport passes.
    let client_identity: Arc<dyn kest::identity::IdentityProvider> =
        Arc::new(StaticIdentity::from_seed(CLIENT, [21u8; 32]));
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(KestPropagationMiddleware::new(Propagator::new()).workload_identity(client_identity))
        .build();
    let flow = Lineage::from_passport(client_passport());
    let response = flow.scope(client.get(&url).send()).await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(ran.swap(false, Ordering::SeqCst));

    // CLIENT presenting a passport whose tip SERVICE_A signed: refused.
    let mut theirs = client_passport();
    theirs
        .record(&EntryDraft::new("service_a.step"), &*service_a_identity(), &TrustRules::default())
        .unwrap();
    let flow = Lineage::from_passport(theirs);
    let response = flow.scope(client.get(&url).send()).await.unwrap();
    assert_eq!(response.status(), 403);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "tip_not_signed_by_peer");
    assert!(!ran.load(Ordering::SeqCst));
}

/// A key source whose key for a principal rotated after the last fetch:
/// the entry (or workload token) signed with the new key does not verify
/// under the old one (`bad_signature`, not `unknown_signer`), so the layer
/// refetches once (rate-limited) and verifies again; the old key's
/// signatures are then refused.
#[tokio::test]
async fn a_key_rotated_at_the_source_is_refetched_for_passports_and_workload_tokens() {
    use kest::http::{JwksKeyResolver, JwksSource};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, kest_keys().to_jwks().to_string()).unwrap();
    // Refreshed only when a signature needs it (the interval is an hour).
    let policy = RefreshPolicy::default()
        .refresh_interval(Duration::from_secs(3600))
        .min_refetch_interval(Duration::ZERO);
    let keys = Arc::new(JwksKeyResolver::load(JwksSource::file(&path), policy, None).await.unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    let layer = LineageLayer::builder()
        .refreshing_key_resolver(keys)
        .authenticate_peers(origin.clone())
        .build()
        .await
        .unwrap();
    let ran = Arc::new(AtomicBool::new(false));
    let app = echo_app(ran.clone()).layer(layer);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let url = format!("{origin}/");

    // CLIENT's key rotates at the source (same kid, another key).
    let rotated = Ed25519Signer::from_seed(CLIENT, [99u8; 32]);
    let mut jwks = KeySet::new();
    jwks.insert(CLIENT, rotated.public_key().unwrap()).unwrap();
    jwks.insert(SERVICE_A, service_a_identity().public_key().unwrap()).unwrap();
    std::fs::write(&path, jwks.to_jwks().to_string()).unwrap();

    // The client, on its new key: its workload token and its passport
    // verify after one refetch.
    let client_identity: Arc<dyn kest::identity::IdentityProvider> =
        Arc::new(StaticIdentity::from_seed(CLIENT, [99u8; 32]));
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(KestPropagationMiddleware::new(Propagator::new()).workload_identity(client_identity))
        .build();
    let mut passport = Passport::new();
    passport.record(&EntryDraft::new("client.start"), &rotated, &TrustRules::default()).unwrap();
    let response = Lineage::from_passport(passport).scope(client.get(&url).send()).await.unwrap();
    assert_eq!(response.status(), 200, "{:?}", response.text().await);
    assert!(ran.swap(false, Ordering::SeqCst));

    // The old key's passport is refused now (the handler never runs).
    let response = Lineage::from_passport(client_passport()).scope(client.get(&url).send()).await.unwrap();
    assert_eq!(response.status(), 403);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "bad_signature", "{body}");
    assert!(!ran.load(Ordering::SeqCst));
}

#[tokio::test]
async fn a_key_rotated_at_the_source_is_refetched_for_a_passport() {
    use kest::http::{JwksKeyResolver, JwksSource};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, kest_keys().to_jwks().to_string()).unwrap();
    let policy = RefreshPolicy::default()
        .refresh_interval(Duration::from_secs(3600))
        .min_refetch_interval(Duration::ZERO);
    let keys = Arc::new(JwksKeyResolver::load(JwksSource::file(&path), policy, None).await.unwrap());
    let layer = LineageLayer::builder().refreshing_key_resolver(keys).build().await.unwrap();
    let ran = Arc::new(AtomicBool::new(false));
    let url = serve(echo_app(ran.clone()).layer(layer)).await;
    let old = baggage_for(&client_passport()).await;
    assert_eq!(get_with(&url, &[("baggage", old.clone())]).await.0, 200);

    // CLIENT's key rotates at the source; a passport on the new key is
    // accepted after one refetch, and the old key's is refused.
    let rotated = Ed25519Signer::from_seed(CLIENT, [98u8; 32]);
    let mut jwks = KeySet::new();
    jwks.insert(CLIENT, rotated.public_key().unwrap()).unwrap();
    std::fs::write(&path, jwks.to_jwks().to_string()).unwrap();
    let mut passport = Passport::new();
    passport.record(&EntryDraft::new("client.start"), &rotated, &TrustRules::default()).unwrap();
    let (status, body, _) = get_with(&url, &[("baggage", baggage_for(&passport).await)]).await;
    assert_eq!(status, 200, "{body}");
    ran.store(false, Ordering::SeqCst);
    assert_rejected(&get_with(&url, &[("baggage", old)]).await, 403, "bad_signature", &ran);
}
