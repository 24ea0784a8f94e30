//! Propagation across process boundaries (SPEC §7.2–§7.4, §7.6): round
//! trips through every packing tier at realistic passport sizes, and every
//! way extraction must fail closed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use kest::cache::{CacheProvider, MemoryCache};
use kest::lineage::{FlowIdentity, Lineage};
use kest::propagation::{Extracted, PropagationError, Propagator};
use kest_core::baggage::{
    Baggage, BaggageError, BaggageLimits, KEST_CHAIN_TIP, KEST_CLAIM_CHECK, KEST_JWT, KEST_PASSPORT,
    KEST_PASSPORT_Z, KEST_USER, PackOptions, Packed, claim_key, pack, parse_claim_check,
};
use kest_core::ingress::IngressRules;
use kest_core::{
    Classification, Ed25519Signer, EntryDraft, EntryHash, KeySet, Parents, Passport, PolicyContext, Signer,
    TrustRules, Verifier,
};
use sha2::{Digest, Sha256};

const PRINCIPALS: [&str; 3] = [
    "spiffe://acme.example/ns/prod/sa/api-gateway",
    "spiffe://acme.example/ns/prod/sa/retriever",
    "spiffe://acme.example/ns/prod/sa/llm-agent",
];

fn signers() -> Vec<Ed25519Signer> {
    PRINCIPALS.iter().enumerate().map(|(i, p)| Ed25519Signer::from_seed(*p, [i as u8 + 11; 32])).collect()
}

fn verifier() -> Verifier {
    let mut keys = KeySet::new();
    for s in signers() {
        keys.insert(s.principal(), s.public_key().unwrap()).unwrap();
    }
    Verifier::new(keys).semantic(true)
}

fn hex_sha256(data: &str) -> String {
    Sha256::digest(data.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// A realistic hop: labels, policy context, environment, OTel context,
/// input/output hashes; origins and taints vary along the chain.
fn draft(hop: usize) -> EntryDraft {
    let operations =
        ["http.receive", "retrieve_documents", "llm.complete", "tool.web_search", "sanitize_output"];
    let op = operations[hop % operations.len()];
    let mut d = EntryDraft::new(op);
    match hop % 5 {
        0 if hop == 0 => d.source_type = Some("user_input".into()),
        3 => {
            d.source_type = Some("internet".into());
            d.added_taints = vec!["unverified".into(), "external_content".into()];
        }
        4 => {
            d.classification = Classification::Sanitizer;
            d.removed_taints = vec!["unverified".into()];
            d.trust_override = Some(70);
        }
        _ => {}
    }
    let trace = hex_sha256(&format!("trace-{}", hop / 10));
    d.labels = BTreeMap::from([
        ("kest.identity".into(), identity_label()),
        ("trace_id".into(), trace[..32].to_string()),
        ("tenant".into(), "acme-corp".into()),
        ("route".into(), format!("/v1/assistants/{}/answer", hop % 7)),
        ("model".into(), "gpt-4o-2024-08-06".into()),
    ]);
    d.policy_context = PolicyContext {
        app_policies: vec!["assistant.allow_read".into(), format!("assistant.step_{}", hop % 4)],
        platform_policies: vec!["platform.pii_guard".into()],
        enterprise_policies: vec!["enterprise.data_residency_eu".into()],
        ..PolicyContext::default()
    };
    d.environment = BTreeMap::from([
        ("region".into(), "eu-west-1".into()),
        ("service".into(), PRINCIPALS[hop % 3].rsplit('/').next().unwrap().to_string()),
        ("version".into(), "2.14.3".into()),
    ]);
    d.otel_context = BTreeMap::from([(
        "traceparent".into(),
        format!("00-{}-{}-01", &trace[..32], &hex_sha256(&format!("span-{hop}"))[..16]),
    )]);
    d.input_hash = hex_sha256(&format!("input-{hop}"));
    d.content_hash = hex_sha256(&format!("output-{hop}"));
    d
}

fn passport_with(hops: usize) -> Passport {
    let signers = signers();
    let rules = TrustRules::default();
    let mut p = Passport::new();
    for hop in 0..hops {
        p.record(&draft(hop), &signers[hop % 3], &rules).unwrap();
    }
    p
}

fn identity() -> FlowIdentity {
    FlowIdentity {
        user: Some("alice@acme.example".into()),
        agent: Some(PRINCIPALS[2].into()),
        task: Some("documents:read search:web".into()),
        jwt: Some("eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJhbGljZSJ9.c2ln".into()),
        delegation: Vec::new(),
    }
}

/// The `kest.identity` label the hook signs for [`identity`].
fn identity_label() -> String {
    let id = identity();
    serde_json::json!({"user": id.user, "agent": id.agent, "task": id.task}).to_string()
}

fn unlimited() -> BaggageLimits {
    BaggageLimits { max_bytes: usize::MAX, max_members: 64 }
}

fn zlib(data: &[u8], level: u32) -> Vec<u8> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::new(level));
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// Sends `baggage` over the wire: header text, then parsed back.
fn wire(baggage: &Baggage, limits: &BaggageLimits) -> (usize, Baggage) {
    let header = baggage.to_header_with(limits).unwrap();
    (header.len(), Baggage::parse_with(&header, limits).unwrap())
}

fn assert_same_flow(got: &Extracted, sent: &Passport) {
    assert_eq!(got.passport.to_json(), sent.to_json());
    assert_eq!(got.tips, sent.tips());
    assert_eq!(got.identity.user, identity().user);
    assert_eq!(got.identity.jwt, None, "not forwarded by default");
}

#[tokio::test]
async fn round_trips_and_header_sizes_per_tier() {
    let verifier = verifier();
    let cache: Arc<dyn CacheProvider> = Arc::new(MemoryCache::new());
    let auto = Propagator::builder().cache(cache.clone()).build();
    let inline_only = Propagator::builder().threshold(usize::MAX).baggage_limits(unlimited()).build();
    let claim_only = Propagator::builder().cache(cache.clone()).threshold(0).build();

    let mut rows = Vec::new();
    for hops in [1, 5, 10, 25, 50, 100] {
        let passport = passport_with(hops);
        let json = passport.to_json();
        let flow = Lineage::from_passport(passport.clone()).with_identity(identity());

        // Tier 1, inline, whatever the size.
        let mut b = Baggage::new();
        inline_only.inject(&flow, &mut b).await.unwrap();
        assert!(b.get(KEST_PASSPORT).is_some());
        let (inline_bytes, received) = wire(&b, &unlimited());
        assert_same_flow(&inline_only.extract(&received, &verifier).await.unwrap(), &passport);

        // Tier 2, compressed, whatever the size (written as `pack` would).
        let compressed = URL_SAFE_NO_PAD.encode(zlib(json.as_bytes(), 1));
        let mut b = Baggage::new();
        inline_only.inject(&flow, &mut b).await.unwrap();
        Packed::Compressed(compressed.clone()).write_to(&mut b).unwrap();
        let (z_bytes, received) = wire(&b, &unlimited());
        assert_same_flow(&inline_only.extract(&received, &verifier).await.unwrap(), &passport);

        // Tier 3, claim check.
        let mut b = Baggage::new();
        claim_only.inject(&flow, &mut b).await.unwrap();
        let id = parse_claim_check(b.get(KEST_CLAIM_CHECK).unwrap()).unwrap();
        assert_eq!(id.get_version_num(), 4);
        assert_eq!(cache.get(&claim_key(&id)).await.unwrap().as_deref(), Some(json.as_str()));
        let (claim_bytes, received) = wire(&b, &BaggageLimits::default());
        assert_same_flow(&claim_only.extract(&received, &verifier).await.unwrap(), &passport);

        // Default settings: the tier chosen, always within the W3C limits.
        let mut b = Baggage::new();
        auto.inject(&flow, &mut b).await.unwrap();
        let (auto_bytes, received) = wire(&b, &BaggageLimits::default());
        let tier = match () {
            _ if b.get(KEST_PASSPORT).is_some() => "inline",
            _ if b.get(KEST_PASSPORT_Z).is_some() => "compressed",
            _ => "claim check",
        };
        let got = auto.extract(&received, &verifier).await.unwrap();
        assert_same_flow(&got, &passport);
        assert_eq!(got.into_lineage().unwrap().tips(), flow.tips());
        rows.push((hops, json.len(), compressed.len(), inline_bytes, z_bytes, claim_bytes, tier, auto_bytes));
    }

    println!("\nbaggage header bytes by tier (with kest.chain_tip, kest.user, kest.agent, kest.task):");
    println!(
        "{:>5} {:>10} {:>10} | {:>8} {:>11} {:>12} | {:<12} {:>6}",
        "hops", "json", "zlib+b64", "inline", "compressed", "claim check", "default", "bytes"
    );
    for (hops, json, z, inline, zh, claim, tier, auto) in &rows {
        println!("{hops:>5} {json:>10} {z:>10} | {inline:>8} {zh:>11} {claim:>12} | {tier:<12} {auto:>6}");
    }

    // SPEC §7.3 asks whether a 50-hop passport travels compressed under the
    // 4096-byte threshold. With realistic entries it does not: each entry
    // carries a 64-byte Ed25519 signature, a UUID, hashes and base64url
    // payloads, which zlib cannot shrink enough. Measured, not assumed:
    let (_, json50, z50, ..) = rows.iter().find(|r| r.0 == 50).copied().unwrap();
    assert!(
        z50 > 4096,
        "a 50-hop passport now compresses to {z50} bytes (JSON {json50}): it fits the threshold, \
         update this assertion and the report to say so"
    );
    let (.., tier50, _) = rows.iter().find(|r| r.0 == 50).copied().unwrap();
    assert_eq!(tier50, "claim check", "a 50-hop passport ({z50} bytes compressed) must be claim-checked");
    // Every header sent with the defaults is within the W3C limit.
    assert!(rows.iter().all(|r| r.7 <= 8192));
}

#[tokio::test]
async fn tampered_passport_fails_verification_in_every_tier() {
    let verifier = verifier();
    let passport = passport_with(6);
    let mut entries: Vec<String> = serde_json::from_str(&passport.to_json()).unwrap();
    // Rewrite entry 2's operation, keeping its signature.
    let parts: Vec<&str> = entries[2].split('.').collect();
    let payload = String::from_utf8(URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    let forged = payload.replace("\"operation\":\"llm.complete\"", "\"operation\":\"llm.complexe\"");
    assert_ne!(forged, payload);
    entries[2] = format!("{}.{}.{}", parts[0], URL_SAFE_NO_PAD.encode(forged), parts[2]);
    let tampered = serde_json::to_string(&entries).unwrap();

    let cache = Arc::new(MemoryCache::new());
    let p = Propagator::builder().cache(cache.clone()).build();
    let id = uuid::Uuid::new_v4();
    cache.set(&claim_key(&id), &tampered, Duration::from_secs(60)).await.unwrap();
    let compressed = URL_SAFE_NO_PAD.encode(zlib(tampered.as_bytes(), 6));
    for (key, value) in
        [(KEST_PASSPORT, tampered.clone()), (KEST_PASSPORT_Z, compressed), (KEST_CLAIM_CHECK, id.to_string())]
    {
        let mut b = Baggage::new();
        b.set(key, value).unwrap();
        let (_, received) = wire(&b, &unlimited());
        let err = p.extract(&received, &verifier).await.unwrap_err();
        match &err {
            PropagationError::Verification(e) => assert_eq!(e.index(), Some(2), "{key}: {err}"),
            other => panic!("{key}: {other:?}"),
        }
        assert_eq!(err.http_status(), 403);
    }

    // An unknown signer is a verification failure too.
    let mut b = Baggage::new();
    b.set(KEST_PASSPORT, passport.to_json()).unwrap();
    let err = p.extract(&b, &Verifier::new(KeySet::new())).await.unwrap_err();
    assert!(matches!(err, PropagationError::Verification(_)), "{err:?}");
}

#[tokio::test]
async fn expired_claim_check_is_an_error_never_an_empty_passport() {
    let verifier = verifier();
    let cache = Arc::new(MemoryCache::new());
    let p = Propagator::builder().cache(cache).threshold(0).claim_ttl(Duration::from_secs(1)).build();
    let flow = Lineage::from_passport(passport_with(3));
    let mut b = Baggage::new();
    p.inject(&flow, &mut b).await.unwrap();
    let id = parse_claim_check(b.get(KEST_CLAIM_CHECK).unwrap()).unwrap();
    assert_eq!(p.extract(&b, &verifier).await.unwrap().passport.len(), 3, "resolves before expiry");

    // Wait for the 1 s TTL to pass (the assertion is on the outcome).
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let err = p.extract(&b, &verifier).await.unwrap_err();
    assert_eq!(err, PropagationError::ClaimCheckNotFound { id });
    assert_eq!(err.http_status(), 424);
    assert!(err.to_string().contains(&id.to_string()), "{err}");
}

#[tokio::test]
async fn claim_check_without_cache_fails_on_inject_and_extract() {
    let verifier = verifier();
    let no_cache = Propagator::new();
    let big = Lineage::from_passport(passport_with(100));
    let header = "vendor=1,kest.user=bob";
    let mut b = Baggage::parse(header).unwrap();
    let err = no_cache.inject(&big, &mut b).await.unwrap_err();
    assert_eq!(err, PropagationError::NoCacheForClaimCheck);
    assert_eq!(b.to_header().unwrap(), header, "baggage unchanged on error");

    let mut b = Baggage::new();
    b.set(KEST_CLAIM_CHECK, uuid::Uuid::new_v4().to_string()).unwrap();
    let err = no_cache.extract(&b, &verifier).await.unwrap_err();
    assert_eq!(err, PropagationError::NoCacheForClaimCheck);
    assert_eq!(err.http_status(), 424);

    // A claim check that was never stored.
    let with_cache = Propagator::builder().cache(Arc::new(MemoryCache::new())).build();
    let err = with_cache.extract(&b, &verifier).await.unwrap_err();
    assert!(matches!(err, PropagationError::ClaimCheckNotFound { .. }), "{err:?}");

    // A cache that fails is a 503, not a miss.
    let failing = Propagator::builder().cache(Arc::new(DownCache)).threshold(0).build();
    let err = failing.extract(&b, &verifier).await.unwrap_err();
    assert!(matches!(err, PropagationError::CacheUnavailable(_)), "{err:?}");
    assert_eq!(err.http_status(), 503);
    let err = failing.inject(&big, &mut Baggage::new()).await.unwrap_err();
    assert!(matches!(err, PropagationError::CacheUnavailable(_)), "{err:?}");
}

/// A cache whose backend is down.
#[derive(Debug)]
struct DownCache;

impl CacheProvider for DownCache {
    fn name(&self) -> &str {
        "down"
    }
    fn get<'a>(
        &'a self,
        _: &'a str,
    ) -> kest::policy::BoxFuture<'a, Result<Option<String>, kest::cache::CacheError>> {
        Box::pin(async { Err(down()) })
    }
    fn set<'a>(
        &'a self,
        _: &'a str,
        _: &'a str,
        _: Duration,
    ) -> kest::policy::BoxFuture<'a, Result<(), kest::cache::CacheError>> {
        Box::pin(async { Err(down()) })
    }
    fn delete<'a>(&'a self, _: &'a str) -> kest::policy::BoxFuture<'a, Result<(), kest::cache::CacheError>> {
        Box::pin(async { Err(down()) })
    }
}

fn down() -> kest::cache::CacheError {
    kest::cache::CacheError::Unavailable { cache: "down".into(), message: "connection refused".into() }
}

#[tokio::test]
async fn decompression_bomb_is_refused() {
    let verifier = verifier();
    // 4 MiB of spaces compress to ~4 kB: a header that fits the W3C limit.
    let bomb = URL_SAFE_NO_PAD.encode(zlib(&vec![b' '; 4 << 20], 9));
    let header = format!("kest.passport_z={bomb}");
    assert!(header.len() <= 8192, "{}", header.len());
    let p = Propagator::new();
    let b = p.parse_header(Some(&header)).unwrap();
    let err = p.extract(&b, &verifier).await.unwrap_err();
    assert_eq!(err, PropagationError::Baggage(BaggageError::InflatedTooLarge { limit: 1 << 20 }));
    assert_eq!(err.http_status(), 400);

    let strict = Propagator::builder().max_inflated_bytes(10_000).build();
    let small_bomb = URL_SAFE_NO_PAD.encode(zlib(&vec![b'['; 20_000], 9));
    let mut b = Baggage::new();
    b.set(KEST_PASSPORT_Z, small_bomb).unwrap();
    let err = strict.extract(&b, &verifier).await.unwrap_err();
    assert_eq!(err, PropagationError::Baggage(BaggageError::InflatedTooLarge { limit: 10_000 }));

    // Not zlib, not base64url, not a passport: all 400, none an empty passport.
    for (key, value) in [
        (KEST_PASSPORT_Z, "eJzLSM3JyVcozy_KSQEAGgQEXQ".to_string()),
        (KEST_PASSPORT_Z, "not base64!".to_string()),
        (KEST_PASSPORT, "{\"a\":1}".to_string()),
        (KEST_CLAIM_CHECK, "not-a-uuid".to_string()),
    ] {
        let mut b = Baggage::new();
        b.set(key, value).unwrap();
        let err = p.extract(&b, &verifier).await.unwrap_err();
        assert!(matches!(err, PropagationError::Baggage(_)), "{key}: {err:?}");
        assert_eq!(err.http_status(), 400);
    }
}

#[tokio::test]
async fn unrelated_members_preserved_and_stale_keys_replaced() {
    let verifier = verifier();
    let p = Propagator::builder().cache(Arc::new(MemoryCache::new())).build();
    let incoming = "vendor=a%2Cb;ttl=3, sentry-trace = abc ,kest.passport_z=stale,kest.user=mallory,\
                    kest.jwt=stale.jwt.token,kest.chain_tip=0,kest.custom=x";
    let mut b = Baggage::parse(incoming).unwrap();
    let passport = passport_with(2);
    let flow = Lineage::from_passport(passport.clone())
        .with_identity(FlowIdentity { user: Some("alice".into()), ..FlowIdentity::default() });
    p.inject(&flow, &mut b).await.unwrap();
    let header = b.to_header().unwrap();
    assert!(
        header.starts_with("vendor=a%2Cb;ttl=3,sentry-trace=abc,kest.custom=x,kest.passport=[%22eyJ"),
        "{header}"
    );
    assert!(
        !header.contains("stale") && !header.contains("mallory") && !header.contains(KEST_JWT),
        "{header}"
    );
    let received = Baggage::parse(&header).unwrap();
    assert_eq!(received.get(KEST_USER), Some("alice"));
    assert_eq!(received.get(KEST_CHAIN_TIP), Some(passport.tips()[0].to_string().as_str()));
    let got = p.extract(&received, &verifier).await.unwrap();
    assert_eq!(got.passport.len(), 2);
    // `alice` was never signed into the passport (its entries say
    // alice@acme.example): a claim, dropped.
    assert_eq!(got.identity, FlowIdentity::default());
    assert_eq!(got.dropped_claims, ["user"]);

    // The JWT travels only when enabled, both ways.
    let forwarding = Propagator::builder().forward_jwt(true).build();
    let flow = Lineage::from_passport(passport).with_identity(identity());
    let mut b = Baggage::new();
    forwarding.inject(&flow, &mut b).await.unwrap();
    assert_eq!(b.get(KEST_JWT), identity().jwt.as_deref());
    assert_eq!(forwarding.extract(&b, &verifier).await.unwrap().identity, identity());
    assert_eq!(p.extract(&b, &verifier).await.unwrap().identity.jwt, None);
}

#[tokio::test]
async fn header_limit_falls_back_to_claim_check_or_fails() {
    let verifier = verifier();
    let passport = passport_with(3); // ~4 kB of JSON, inline at this threshold
    let flow = Lineage::from_passport(passport.clone());
    let padding = format!("vendor={}", "v".repeat(5000));
    let roomy = Propagator::builder().threshold(6000);
    let mut b = Baggage::parse(&padding).unwrap();
    let err = roomy.clone().build().inject(&flow, &mut b).await.unwrap_err();
    assert!(matches!(err, PropagationError::Baggage(BaggageError::TooLarge { .. })), "{err:?}");
    assert_eq!(err.http_status(), 431);
    assert_eq!(b.to_header().unwrap(), padding, "unchanged");

    let with_cache = roomy.cache(Arc::new(MemoryCache::new())).build();
    with_cache.inject(&flow, &mut b).await.unwrap();
    assert!(b.get(KEST_CLAIM_CHECK).is_some());
    let (bytes, received) = wire(&b, &BaggageLimits::default());
    assert!(bytes <= 8192);
    assert_eq!(
        with_cache.extract(&received, &verifier).await.unwrap().passport.to_json(),
        passport.to_json()
    );

    // An oversized incoming header is a 431.
    let err = with_cache.parse_header(Some(&padding.repeat(2))).unwrap_err();
    assert_eq!(err.http_status(), 431);
}

/// A fan-out passport: a root, a clean branch and a tainted branch.
fn forked() -> (Passport, EntryHash, EntryHash, EntryHash) {
    let signers = signers();
    let rules = TrustRules::default();
    let mut passport = Passport::new();
    let root = passport.record(&draft(0), &signers[0], &rules).unwrap();
    let mut branch = |op: &str, taint: Option<&str>| {
        let mut d = EntryDraft::new(op);
        d.parents = Parents::Explicit(vec![root]);
        d.added_taints = taint.into_iter().map(str::to_owned).collect();
        passport.record(&d, &signers[1], &rules).unwrap()
    };
    let clean = branch("branch_clean", None);
    let tainted = branch("web_search", Some("prompt_injection_suspect"));
    (passport, root, clean, tainted)
}

fn with_tip(p: &Propagator, passport: &Passport, chain_tip: &str) -> Baggage {
    let mut b = Baggage::new();
    b.set(KEST_PASSPORT, passport.to_json()).unwrap();
    b.set(KEST_CHAIN_TIP, chain_tip).unwrap();
    p.parse_header(Some(&b.to_header_with(&unlimited()).unwrap())).unwrap_or(b)
}

fn kind(err: &PropagationError) -> &'static str {
    err.kind()
}

#[tokio::test]
async fn attack_rewind_to_an_ancestor_is_refused() {
    let (passport, root, _, _) = forked();
    let p = Propagator::new();
    // The sender names the root (before any taint) as where to continue.
    let err = p.extract(&with_tip(&p, &passport, &root.to_string()), &verifier()).await.unwrap_err();
    assert_eq!(kind(&err), "tip_mismatch");
    assert_eq!(err.http_status(), 403);
    // Not even in the compatibility mode: an ancestor is never a tip.
    let lenient = Propagator::builder()
        .ingress(IngressRules { allow_tip_subset: true, ..IngressRules::default() })
        .build();
    let err =
        lenient.extract(&with_tip(&lenient, &passport, &root.to_string()), &verifier()).await.unwrap_err();
    assert_eq!(kind(&err), "tip_mismatch");
}

#[tokio::test]
async fn attack_dropping_a_tainted_tip_is_refused() {
    let (passport, _, clean, tainted) = forked();
    let p = Propagator::new();
    let err = p.extract(&with_tip(&p, &passport, &clean.to_string()), &verifier()).await.unwrap_err();
    assert_eq!(kind(&err), "tip_mismatch", "the tainted branch cannot be dropped");
    // Both tips, in any order: accepted, and the next entry inherits the taint.
    let got = p.extract(&with_tip(&p, &passport, &format!("{tainted},{clean}")), &verifier()).await.unwrap();
    let mut tips = got.tips.clone();
    tips.sort();
    let mut expected = vec![clean, tainted];
    expected.sort();
    assert_eq!(tips, expected);
    // The compatibility option accepts a subset of the tips (the reference
    // writes only the last entry), never an ancestor (above).
    let lenient = Propagator::builder()
        .ingress(IngressRules { allow_tip_subset: true, ..IngressRules::default() })
        .build();
    // ... and the next entry still continues from *every* tip.
    let got = lenient.extract(&with_tip(&lenient, &passport, &clean.to_string()), &verifier()).await.unwrap();
    assert_eq!(got.tips, passport.tips());
}

#[tokio::test]
async fn chain_tip_syntax_strangers_and_the_new_root_sentinel() {
    let (passport, _, clean, tainted) = forked();
    let p = Propagator::new();
    let stranger = EntryHash::of("x.y.z");
    let err = p
        .extract(&with_tip(&p, &passport, &format!("{clean},{tainted},{stranger}")), &verifier())
        .await
        .unwrap_err();
    assert_eq!(kind(&err), "tip_mismatch");
    let err = p.extract(&with_tip(&p, &passport, "not-a-hash"), &verifier()).await.unwrap_err();
    assert!(matches!(err, PropagationError::BadChainTip { .. }), "{err:?}");
    assert_eq!(err.http_status(), 400);
    // "0" (start a new root) while carrying history would detach the next
    // entry from its lineage.
    let err = p.extract(&with_tip(&p, &passport, "0"), &verifier()).await.unwrap_err();
    assert_eq!(kind(&err), "tip_mismatch");
    // Tips without any passport.
    let mut b = Baggage::new();
    b.set(KEST_CHAIN_TIP, clean.to_string()).unwrap();
    assert_eq!(kind(&p.extract(&b, &verifier()).await.unwrap_err()), "tip_mismatch");
    // Absent: the passport's own tips.
    let mut b = Baggage::new();
    b.set(KEST_PASSPORT, passport.to_json()).unwrap();
    assert_eq!(p.extract(&b, &verifier()).await.unwrap().tips, passport.tips());
    // Editing the tips of an extraction is caught by into_lineage.
    let mut got = p.extract(&b, &verifier()).await.unwrap();
    got.tips.push(stranger);
    assert_eq!(got.into_lineage().unwrap_err(), PropagationError::TipNotInPassport { tip: stranger });
}

/// A passport whose only entry was signed `age` ago (a captured header).
fn recorded_ago(age: Duration) -> Passport {
    let signer = &signers()[0];
    let mut d = draft(0);
    d.parents = Parents::Root;
    let mut entry = kest_core::prepare_entry(&[], &d, signer.principal(), &TrustRules::default()).unwrap();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    entry.timestamp_ms = u64::try_from((now - age).as_millis()).unwrap();
    let mut passport = Passport::new();
    passport.append(kest_core::sign_entry(entry, signer).unwrap()).unwrap();
    passport
}

#[tokio::test]
async fn attack_replaying_a_stale_passport_is_refused() {
    let p = Propagator::new();
    let captured = recorded_ago(Duration::from_secs(8 * 60));
    let mut b = Baggage::new();
    p.inject(&Lineage::from_passport(captured.clone()), &mut b).await.unwrap();
    let err = p.extract(&b, &verifier()).await.unwrap_err();
    assert_eq!(kind(&err), "stale_passport");
    assert_eq!(err.http_status(), 403);
    // A fresh one verifies; a deployment may widen the age window.
    let fresh = recorded_ago(Duration::from_secs(10));
    let mut b = Baggage::new();
    p.inject(&Lineage::from_passport(fresh), &mut b).await.unwrap();
    assert!(p.extract(&b, &verifier()).await.is_ok());
    let patient = Propagator::builder()
        .ingress(IngressRules { max_age: Some(Duration::from_secs(3600)), ..IngressRules::default() })
        .build();
    let mut b = Baggage::new();
    patient.inject(&Lineage::from_passport(captured), &mut b).await.unwrap();
    assert!(patient.extract(&b, &verifier()).await.is_ok());
}

#[tokio::test]
async fn attack_spoofed_baggage_identity_is_dropped_not_trusted() {
    let p = Propagator::new();
    let flow = Lineage::from_passport(passport_with(2)).with_identity(identity());
    let mut b = Baggage::new();
    p.inject(&flow, &mut b).await.unwrap();
    // Signed into the tips: kept.
    assert_eq!(p.extract(&b, &verifier()).await.unwrap().identity.user, identity().user);
    // Replaced by mallory in the header: dropped, and the drop is reported.
    b.set(KEST_USER, "mallory").unwrap();
    let got = p.extract(&b, &verifier()).await.unwrap();
    assert_eq!(got.identity.user, None);
    assert_eq!(got.dropped_claims, ["user"]);
    assert_eq!(got.identity.agent, identity().agent, "the other claims still match");
    // Control characters are refused outright (400), never recorded.
    b.set(KEST_USER, "alice\r\nx-role: admin").unwrap();
    let err = p.extract(&b, &verifier()).await.unwrap_err();
    assert_eq!(kind(&err), "invalid_identity");
    assert_eq!(err.http_status(), 400);
}

#[tokio::test]
async fn tips_must_be_signed_by_the_authenticated_peer() {
    let p = Propagator::new();
    let passport = passport_with(2); // tip signed by PRINCIPALS[1]
    let mut b = Baggage::new();
    p.inject(&Lineage::from_passport(passport), &mut b).await.unwrap();
    assert!(p.extract_from_peer(&b, &verifier(), Some(PRINCIPALS[1])).await.is_ok());
    let err = p.extract_from_peer(&b, &verifier(), Some(PRINCIPALS[2])).await.unwrap_err();
    assert_eq!(kind(&err), "tip_not_signed_by_peer");
    assert_eq!(err.http_status(), 403);
}

#[tokio::test]
async fn no_passport_keys_is_a_new_flow() {
    let verifier = verifier();
    let p = Propagator::new();
    for header in [None, Some(""), Some("vendor=1"), Some("kest.user=alice,kest.chain_tip=0")] {
        let b = p.parse_header(header).unwrap();
        let got = p.extract(&b, &verifier).await.unwrap();
        assert!(got.is_new_flow() && got.passport.is_empty() && got.tips.is_empty(), "{header:?}");
        let lineage = got.into_lineage().unwrap();
        assert!(lineage.passport().is_empty());
    }
    // A new flow injects an explicit empty passport.
    let mut b = Baggage::new();
    p.inject(&Lineage::new(), &mut b).await.unwrap();
    assert_eq!(b.to_header().unwrap(), "kest.passport=[],kest.chain_tip=0");
    assert!(p.extract(&b, &verifier).await.unwrap().is_new_flow());
}

#[tokio::test]
async fn propagation_continues_the_chain_downstream() {
    // Three services, each extracting, recording one hop, injecting.
    let verifier = verifier();
    let signers = signers();
    let p = Propagator::builder().cache(Arc::new(MemoryCache::new())).build();
    let mut header = String::new();
    for hop in 0..12 {
        let got = p.extract(&p.parse_header(Some(&header)).unwrap(), &verifier).await.unwrap();
        assert_eq!(got.passport.len(), hop);
        let flow = got.into_lineage().unwrap();
        let mut passport = flow.passport();
        let mut d = draft(hop);
        d.parents = if hop == 0 { Parents::Root } else { Parents::Explicit(flow.tips()) };
        passport.record(&d, &signers[hop % 3], &TrustRules::default()).unwrap();
        let next = Lineage::from_passport(passport);
        let mut b = Baggage::new();
        p.inject(&next, &mut b).await.unwrap();
        header = b.to_header().unwrap();
    }
    let pack_opts = PackOptions::default();
    let got = p.extract(&p.parse_header(Some(&header)).unwrap(), &verifier).await.unwrap();
    assert_eq!(got.passport.len(), 12);
    assert_eq!(
        pack(&got.passport.to_json(), &pack_opts),
        Packed::NeedsClaimCheck,
        "12 hops travel by claim check"
    );
}

#[tokio::test]
async fn compressed_tier_is_chosen_when_it_fits() {
    let verifier = verifier();
    let passport = passport_with(3);
    assert!(passport.to_json().len() > 4096);
    let p = Propagator::new();
    let mut b = Baggage::new();
    p.inject(&Lineage::from_passport(passport.clone()), &mut b).await.unwrap();
    assert!(b.get(KEST_PASSPORT_Z).is_some() && b.get(KEST_PASSPORT).is_none(), "{b:?}");
    let (bytes, received) = wire(&b, &BaggageLimits::default());
    assert!(bytes < 4096 + 200, "{bytes}");
    assert_eq!(p.extract(&received, &verifier).await.unwrap().passport.to_json(), passport.to_json());
}
