//! Shared helpers for the integration tests: deterministic signers, and
//! hand-built JWS strings whose only defect is the one a test is about.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use ed25519_dalek::{Signer as _, SigningKey};
use kest_core::encoding::b64url_encode;
use kest_core::jws::{header_json, signing_input};
use kest_core::{
    Ed25519Signer, EntryDraft, EntryHash, KeySet, Parents, Passport, Signer, TrustRules, UnverifiedPassport,
    Verifier, VerifyError,
};
use serde_json::Value;

/// Principal of the default test signer.
pub const ALICE: &str = "spiffe://test/alice";
/// Principal of a second signer.
pub const BOB: &str = "spiffe://test/bob";
/// Seed of [`ALICE`].
pub const ALICE_SEED: [u8; 32] = [0xa1; 32];
/// Seed of [`BOB`].
pub const BOB_SEED: [u8; 32] = [0xb0; 32];

pub fn alice() -> Ed25519Signer {
    Ed25519Signer::from_seed(ALICE, ALICE_SEED)
}

pub fn bob() -> Ed25519Signer {
    Ed25519Signer::from_seed(BOB, BOB_SEED)
}

/// A key set holding the public keys of these signers.
pub fn keys_for(signers: &[&Ed25519Signer]) -> KeySet {
    let mut keys = KeySet::new();
    for s in signers {
        keys.insert(s.principal(), s.public_key().unwrap()).unwrap();
    }
    keys
}

/// Alice and Bob.
pub fn keys() -> KeySet {
    keys_for(&[&alice(), &bob()])
}

pub fn verifier() -> Verifier {
    Verifier::new(keys())
}

/// Verifies a list of JWS strings (semantic on or off).
pub fn verify_list(list: &[String], semantic: bool) -> Result<Passport, VerifyError> {
    verifier().semantic(semantic).verify(&UnverifiedPassport::from_entries(list.to_vec()))
}

/// Asserts that the list is rejected with `kind` at `index`.
#[track_caller]
pub fn assert_rejects(list: &[String], semantic: bool, kind: kest_core::ErrorKind, index: usize) {
    match verify_list(list, semantic) {
        Ok(_) => panic!("expected {kind} at entry {index}, but the passport verified"),
        Err(e) => {
            assert_eq!(e.kind(), kind, "wrong kind; error was: {e}");
            assert_eq!(e.index(), Some(index), "wrong index; error was: {e}");
        }
    }
}

/// Asserts that the list verifies.
#[track_caller]
pub fn assert_accepts(list: &[String], semantic: bool) -> Passport {
    match verify_list(list, semantic) {
        Ok(p) => p,
        Err(e) => panic!("expected the passport to verify, got: {e}"),
    }
}

/// Signs `header_text.payload` with the raw key and returns the compact JWS.
pub fn sign_raw(header_text: &str, payload: &[u8], seed: [u8; 32]) -> String {
    let key = SigningKey::from_bytes(&seed);
    let input = signing_input(header_text, payload);
    let sig = key.sign(input.as_bytes()).to_bytes();
    format!("{input}.{}", b64url_encode(&sig))
}

/// Like [`sign_raw`] but lets the caller alter the 64 signature bytes.
pub fn sign_raw_with(
    header_text: &str,
    payload: &[u8],
    seed: [u8; 32],
    tamper: impl FnOnce(&mut [u8; 64]),
) -> String {
    let key = SigningKey::from_bytes(&seed);
    let input = signing_input(header_text, payload);
    let mut sig = key.sign(input.as_bytes()).to_bytes();
    tamper(&mut sig);
    format!("{input}.{}", b64url_encode(&sig))
}

/// Canonicalizes a payload value and signs it as `principal` with the
/// reference header.
pub fn sign_value(value: &Value, principal: &str, seed: [u8; 32]) -> String {
    let payload = kest_core::json::canonicalize(value).unwrap();
    sign_raw(&header_json("EdDSA", principal), &payload, seed)
}

/// A fixture: a valid passport with one root entry (origin `user_input`,
/// trust 40) signed by Alice, plus the payload the next (child) entry would
/// have, as a mutable JSON value.
pub struct Fixture {
    pub passport: Passport,
    pub rules: TrustRules,
}

impl Fixture {
    pub fn new() -> Fixture {
        let mut passport = Passport::new();
        let rules = TrustRules::default();
        let mut draft = EntryDraft::new("ingest");
        draft.source_type = Some("user_input".into());
        draft.added_taints = vec!["user".into()];
        passport.record(&draft, &alice(), &rules).unwrap();
        Fixture { passport, rules }
    }

    pub fn root_hash(&self) -> EntryHash {
        self.passport.entries()[0].hash()
    }

    /// The payload a child of the root would have (valid as it stands).
    pub fn child_value(&self) -> Value {
        self.child_value_of(&EntryDraft::new("child"))
    }

    pub fn child_value_of(&self, draft: &EntryDraft) -> Value {
        let entry = self.passport.prepare(draft, ALICE, &self.rules).unwrap();
        serde_json::to_value(&entry).unwrap()
    }

    /// The root's JWS followed by `jws`.
    pub fn with(&self, jws: String) -> Vec<String> {
        let mut list: Vec<String> = self.passport.entries().iter().map(|e| e.jws().to_owned()).collect();
        list.push(jws);
        list
    }

    /// The root followed by `value` canonicalized and signed by Alice.
    pub fn with_value(&self, value: &Value) -> Vec<String> {
        self.with(sign_value(value, ALICE, ALICE_SEED))
    }
}

impl Default for Fixture {
    fn default() -> Self {
        Fixture::new()
    }
}

/// A template root payload (no origin, trust 10, `kest.trust_evaluator`
/// label): a chain of these with trust 10 is valid even semantically.
pub fn template_payload() -> Value {
    let entry = Passport::new().prepare(&EntryDraft::new("step"), ALICE, &TrustRules::default()).unwrap();
    serde_json::to_value(&entry).unwrap()
}

/// Builds a linear chain of `n` hand-signed entries. `mutate(i, payload)`
/// may change entry `i`'s payload and `tamper(i, sig)` its signature; each
/// entry names the hash of the previous entry's *final* JWS string, so
/// linkage stays intact whatever the tampering.
pub fn craft_chain(
    n: usize,
    mut mutate: impl FnMut(usize, &mut Value),
    mut tamper: impl FnMut(usize, &mut [u8; 64]),
) -> Vec<String> {
    let template = template_payload();
    let header = header_json("EdDSA", ALICE);
    let mut out: Vec<String> = Vec::with_capacity(n);
    for i in 0..n {
        let mut value = template.clone();
        value["entry_id"] = Value::String(uuid::Uuid::now_v7().hyphenated().to_string());
        value["operation"] = Value::String(format!("step{i}"));
        if let Some(prev) = out.last() {
            value["parent_ids"] = serde_json::json!([EntryHash::of(prev).to_string()]);
        }
        mutate(i, &mut value);
        let payload = kest_core::json::canonicalize(&value).unwrap();
        out.push(sign_raw_with(&header, &payload, ALICE_SEED, |sig| tamper(i, sig)));
    }
    out
}

/// A passport built with the public API: `n` entries in a line.
pub fn linear_passport(n: usize) -> Passport {
    let signer = alice();
    let rules = TrustRules::default();
    let mut p = Passport::new();
    for i in 0..n {
        let mut d = EntryDraft::new(format!("op{i}"));
        if i == 0 {
            d.source_type = Some("internal".into());
        }
        d.parents = Parents::Tips;
        p.record(&d, &signer, &rules).unwrap();
    }
    p
}

pub fn jws_list(p: &Passport) -> Vec<String> {
    p.entries().iter().map(|e| e.jws().to_owned()).collect()
}
