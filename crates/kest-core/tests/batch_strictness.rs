//! Batch verification must accept exactly what one-by-one strict
//! (cofactorless, RFC 8032 §5.1.7 with canonical `s` and no small-order
//! points) verification accepts — independently of which other entries
//! share the batch.
//!
//! `ed25519_dalek::verify_batch` checks the cofactorless equation with
//! random 128-bit weights `z_i`. A signature whose defect
//! `D = R - sB + hA` is a pure torsion point (order 2, 4 or 8) is rejected
//! by `verify_strict` but vanishes from the batch sum whenever the order of
//! `D` divides `z_i` — with probability 1/2 for an order-2 defect, and the
//! weights are derived from the passport itself, so a signer can grind until
//! the batch passes. Such a defect needs a torsion component in `R` or in
//! the key `A`; neither occurs in honestly made signatures or keys.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::template_payload;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use ed25519_dalek::{Signature, VerifyingKey};
use kest_core::encoding::b64url_encode;
use kest_core::jws::{header_json, signing_input};
use kest_core::{KeySet, PublicKey, UnverifiedPassport, Verifier};
use serde_json::json;
use sha2::{Digest, Sha512};

const P: &str = "spiffe://test/torsion";

fn scalar(label: &str) -> Scalar {
    let wide: [u8; 64] = Sha512::digest(label.as_bytes()).into();
    Scalar::from_bytes_mod_order_wide(&wide)
}

/// The point (0, -1), of order 2.
fn order2() -> EdwardsPoint {
    let mut bytes = [0xffu8; 32];
    bytes[0] = 0xec;
    bytes[31] = 0x7f;
    let t = CompressedEdwardsY(bytes).decompress().unwrap();
    assert!(t.is_small_order() && !t.is_torsion_free());
    t
}

fn hram(r: &[u8; 32], a: &[u8; 32], m: &[u8]) -> Scalar {
    let mut h = Sha512::new();
    h.update(r);
    h.update(a);
    h.update(m);
    let wide: [u8; 64] = h.finalize().into();
    Scalar::from_bytes_mod_order_wide(&wide)
}

/// A deterministic payload signed by principal [`P`]; `n` varies it.
fn payload(n: usize) -> Vec<u8> {
    let mut v = template_payload();
    v["labels"]["principal"] = json!(P);
    v["entry_id"] = json!("01890a5d-ac96-774b-bcce-b302099a8057");
    v["timestamp_ms"] = json!(1_700_000_000_000u64);
    v["operation"] = json!(format!("grind{n}"));
    kest_core::json::canonicalize(&v).unwrap()
}

/// Signs as the holder of scalar `a` for public point `a_point`, with a
/// nonce point `r B + r_torsion`.
fn forge(
    n: usize,
    a: &Scalar,
    a_point: &EdwardsPoint,
    r_torsion: Option<EdwardsPoint>,
) -> (String, Vec<u8>, Signature) {
    let input = signing_input(&header_json("EdDSA", P), &payload(n));
    let r = scalar(&format!("nonce{n}"));
    let mut big_r = EdwardsPoint::mul_base(&r);
    if let Some(t) = r_torsion {
        big_r += t;
    }
    let r_bytes = big_r.compress().to_bytes();
    let a_bytes = a_point.compress().to_bytes();
    let h = hram(&r_bytes, &a_bytes, input.as_bytes());
    let s = r + h * a;
    let mut sig = [0u8; 64];
    sig[..32].copy_from_slice(&r_bytes);
    sig[32..].copy_from_slice(s.as_bytes());
    let jws = format!("{input}.{}", b64url_encode(&sig));
    (jws, input.into_bytes(), Signature::from_bytes(&sig))
}

fn verify_one(keys: &KeySet, jws: &str) -> bool {
    Verifier::new(keys.clone()).verify(&UnverifiedPassport::from_entries(vec![jws.to_owned()])).is_ok()
}

#[test]
fn control_honest_scalar_signatures_verify() {
    let a = scalar("key");
    let a_point = EdwardsPoint::mul_base(&a);
    let mut keys = KeySet::new();
    keys.insert(P, PublicKey::ed25519_from_bytes(a_point.compress().as_bytes()).unwrap()).unwrap();
    for n in 0..4 {
        let (jws, _, _) = forge(n, &a, &a_point, None);
        assert!(verify_one(&keys, &jws), "honest signature {n} refused");
    }
}

#[test]
fn torsion_in_r_is_refused_whatever_the_batch_weights() {
    let a = scalar("key");
    let a_point = EdwardsPoint::mul_base(&a);
    let vk = VerifyingKey::from_bytes(a_point.compress().as_bytes()).unwrap();
    let mut keys = KeySet::new();
    keys.insert(P, PublicKey::ed25519_from_bytes(vk.as_bytes()).unwrap()).unwrap();
    let mut batch_would_pass = 0;
    for n in 0..24 {
        let (jws, msg, sig) = forge(n, &a, &a_point, Some(order2()));
        // Strict one-by-one verification refuses it...
        assert!(vk.verify_strict(&msg, &sig).is_err());
        // ...while a bare batch accepts about half of them.
        if ed25519_dalek::verify_batch(&[msg.as_slice()], &[sig], &[vk]).is_ok() {
            batch_would_pass += 1;
        }
        // The verifier must agree with strict verification.
        assert!(!verify_one(&keys, &jws), "entry {n} with a torsion component in R was accepted");
    }
    assert!(batch_would_pass > 0, "the scenario did not exercise the batch weakness");
}

#[test]
fn mixed_order_key_is_refused_at_load() {
    let a = scalar("key");
    let mixed = EdwardsPoint::mul_base(&a) + order2();
    assert!(!mixed.is_small_order() && !mixed.is_torsion_free());
    let bytes = mixed.compress().to_bytes();
    // Without the load-time check, a batch accepts signatures that strict
    // verification refuses: D = h·T vanishes when z·h is even.
    let vk = VerifyingKey::from_bytes(&bytes).unwrap();
    assert!(!vk.is_weak());
    let mut divergent = 0;
    for n in 0..24 {
        let (_, msg, sig) = forge(n, &a, &mixed, None);
        let strict = vk.verify_strict(&msg, &sig).is_ok();
        let batch = ed25519_dalek::verify_batch(&[msg.as_slice()], &[sig], &[vk]).is_ok();
        if batch && !strict {
            divergent += 1;
        }
    }
    assert!(divergent > 0, "the scenario did not exercise the batch weakness");
    // So such a key never enters a key set.
    assert!(PublicKey::ed25519_from_bytes(&bytes).is_err());
    let jwks = json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": P, "x": b64url_encode(&bytes)}]});
    assert!(KeySet::from_jwks_json(&jwks.to_string()).is_err());
}
