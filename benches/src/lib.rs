//! Shared fixtures for the Kest benchmarks (SPEC §11): a realistic
//! ~900-byte entry draft, a signer, its key set and passports built from
//! them. Used by `benches/core.rs` and by the fuzz smoke test; [`hook`]
//! holds the hook fixtures of `benches/hook.rs` and the `side-by-side`
//! binary.

use std::collections::BTreeMap;

pub mod hook;

use kest_core::{
    Ed25519Signer, EntryDraft, KeySet, Passport, PolicyContext, RecordError, Signer, TrustRules,
    UnverifiedPassport,
};

/// The principal every fixture entry is signed by.
pub const PRINCIPAL: &str = "spiffe://example.org/agent/research";

/// The fixed signer (deterministic seed).
pub fn signer() -> Ed25519Signer {
    Ed25519Signer::from_seed(PRINCIPAL, [0x5a; 32])
}

/// A key set holding the fixture signer's public key.
pub fn key_set(signer: &Ed25519Signer) -> KeySet {
    let mut keys = KeySet::new();
    if let Some(key) = signer.public_key() {
        // A fresh set cannot already hold the principal.
        let _ = keys.insert(PRINCIPAL, key);
    }
    keys
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn map(items: &[(&str, &str)]) -> BTreeMap<String, String> {
    items.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

/// A realistic draft for hop `i`: labels (trace id, identity), a policy
/// context naming a few policies per tier, OTel context, an
/// input hash and, at the root and every 50th hop, new taints. Its
/// canonical payload is about 900 bytes.
pub fn draft(i: usize) -> EntryDraft {
    let mut d = EntryDraft::new(format!("web_search_{i:03}"));
    if i == 0 {
        d.source_type = Some("user_input".into());
        d.added_taints = strings(&["pii", "unverified"]);
    } else if i.is_multiple_of(50) {
        d.added_taints = vec![format!("derived_{i}")];
    }
    d.labels = map(&[
        ("trace_id", "4bf92f3577b34da6a3ce929d0e0e4736"),
        ("kest.identity", r#"{"agent":"research","user":"alice"}"#),
    ]);
    d.policy_context = PolicyContext {
        enterprise_policies: strings(&["residency", "pii"]),
        platform_policies: strings(&["rate_limit", "tools"]),
        app_policies: strings(&["scope"]),
        function_policies: strings(&["domains"]),
        deviations: Vec::new(),
        extra: serde_json::Map::new(),
    };
    d.otel_context = map(&[("span_id", "00f067aa0ba902b7")]);
    d.input_hash = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".into();
    d
}

/// A linear passport of `n` entries recorded from [`draft`].
pub fn passport(n: usize, signer: &Ed25519Signer) -> Result<Passport, RecordError> {
    let rules = TrustRules::default();
    let mut p = Passport::new();
    for i in 0..n {
        p.record(&draft(i), signer, &rules)?;
    }
    Ok(p)
}

/// The unverified form of [`passport`].
pub fn unverified(n: usize, signer: &Ed25519Signer) -> Result<UnverifiedPassport, RecordError> {
    Ok(passport(n, signer)?.to_unverified())
}

/// The signing input (`header.payload`) of a JWS compact string.
pub fn signing_input(jws: &str) -> &str {
    jws.rsplit_once('.').map_or(jws, |(input, _)| input)
}
