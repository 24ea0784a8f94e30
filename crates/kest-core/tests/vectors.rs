//! Published test vectors: RFC 8785 (JCS) numbers and objects, RFC 8032
//! Ed25519.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use ed25519_dalek::Verifier as _;
use kest_core::json::canonicalize;
use kest_core::{Ed25519Signer, KeySet, PublicKey, Signer};
use serde_json::Value;

fn load(rel: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testvectors").join(rel);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn vectors(doc: &Value) -> &Vec<Value> {
    let list = doc["vectors"].as_array().expect("`vectors` array");
    assert!(!list.is_empty());
    list
}

fn hex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd hex length");
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or_else(|| panic!("member {key} missing in {v}"))
}

#[test]
fn rfc8785_numbers() {
    let doc = load("rfc8785/numbers.json");
    let mut checked = 0;
    let mut errors = 0;
    for v in vectors(&doc) {
        let bits = u64::from_str_radix(s(v, "ieee_hex"), 16).unwrap();
        let f = f64::from_bits(bits);
        if v.get("error").and_then(Value::as_bool) == Some(true) {
            // NaN and the infinities have no JSON representation at all:
            // serde_json refuses to make a Number of them, so they cannot
            // even reach the canonicalizer as a Value. Check both the value
            // route and the raw-float route refuse.
            assert!(!f.is_finite(), "error row {v} should be non-finite");
            assert!(
                serde_json::Number::from_f64(f).is_none(),
                "{v}: serde_json represented a non-finite number"
            );
            assert!(canonicalize(&f).is_err(), "{v}: canonicalize accepted a non-finite float");
            errors += 1;
            continue;
        }
        let expected = s(v, "expected");
        let number = Value::Number(serde_json::Number::from_f64(f).unwrap());
        let got = canonicalize(&number).unwrap();
        assert_eq!(String::from_utf8(got).unwrap(), expected, "ieee {}", s(v, "ieee_hex"));
        // Same result inside an array and as a bare f64.
        let got = canonicalize(&serde_json::json!([number])).unwrap();
        assert_eq!(String::from_utf8(got).unwrap(), format!("[{expected}]"));
        assert_eq!(String::from_utf8(canonicalize(&f).unwrap()).unwrap(), expected);
        checked += 1;
    }
    assert!(checked >= 20, "only {checked} number vectors checked");
    assert_eq!(errors, 2, "NaN and Infinity rows");
}

#[test]
fn rfc8785_objects() {
    let doc = load("rfc8785/objects.json");
    let mut checked = 0;
    for v in vectors(&doc) {
        let name = s(v, "name");
        let input: Value = serde_json::from_str(s(v, "input")).unwrap_or_else(|e| panic!("{name}: {e}"));
        let got = canonicalize(&input).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(String::from_utf8_lossy(&got), s(v, "expected"), "vector {name}");
        assert_eq!(got, s(v, "expected").as_bytes(), "vector {name} (bytes)");
        if let Some(h) = v.get("expected_utf8_hex").and_then(Value::as_str) {
            assert_eq!(got, hex(h), "vector {name} (RFC byte dump)");
        }
        // Canonical output is a fixed point and parses strictly.
        let reparsed = kest_core::json::parse_strict(&got, 64).unwrap();
        assert_eq!(canonicalize(&reparsed).unwrap(), got, "vector {name}: not idempotent");
        checked += 1;
    }
    assert!(checked >= 10, "only {checked} object vectors");
}

#[test]
fn spec_sorting_examples() {
    let cases =
        [(r#"{"b":2,"a":1}"#, r#"{"a":1,"b":2}"#), (r#"{"z":3,"a":1,"m":2}"#, r#"{"a":1,"m":2,"z":3}"#)];
    for (input, expected) in cases {
        let v: Value = serde_json::from_str(input).unwrap();
        assert_eq!(canonicalize(&v).unwrap(), expected.as_bytes());
    }
    // UTF-16 code unit order, not UTF-8 / code point order: U+FB33 (one
    // unit 0xFB33) sorts after U+1F600 (surrogates 0xD83D 0xDE00).
    let v: Value = serde_json::from_str(r#"{"\ufb33":1,"\ud83d\ude00":2}"#).unwrap();
    assert_eq!(String::from_utf8(canonicalize(&v).unwrap()).unwrap(), "{\"\u{1F600}\":2,\"\u{FB33}\":1}");
}

#[test]
fn rfc8032_ed25519() {
    let doc = load("rfc8032/ed25519.json");
    let mut checked = 0;
    for v in vectors(&doc) {
        let name = s(v, "name");
        let seed: [u8; 32] = hex(s(v, "secret_key")).try_into().unwrap();
        let public = hex(s(v, "public_key"));
        let message = hex(s(v, "message"));
        let expected_sig = hex(s(v, "signature"));

        let signer = Ed25519Signer::from_seed("spiffe://vectors/rfc8032", seed);
        let sig = signer.sign(&message).unwrap();
        assert_eq!(sig, expected_sig, "{name}: signature");
        let pk = signer.public_key().unwrap();
        let PublicKey::Ed25519(vk) = &pk else { panic!("not ed25519") };
        assert_eq!(vk.as_bytes().as_slice(), public.as_slice(), "{name}: public key");

        let parsed = PublicKey::ed25519_from_bytes(&public).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(parsed, pk, "{name}: parsed key");
        let PublicKey::Ed25519(parsed_vk) = &parsed else { panic!("not ed25519") };
        let sig = ed25519_dalek::Signature::from_slice(&expected_sig).unwrap();
        parsed_vk.verify_strict(&message, &sig).unwrap_or_else(|e| panic!("{name}: {e}"));
        parsed_vk.verify(&message, &sig).unwrap();

        // And as a JWKS document.
        let mut keys = KeySet::new();
        keys.insert("k", parsed.clone()).unwrap();
        let back = KeySet::from_jwks_json(&keys.to_jwks().to_string()).unwrap();
        assert_eq!(back.get("k"), Some(&parsed));
        checked += 1;
    }
    assert_eq!(checked, 5);
}

#[test]
fn ed25519_from_bytes_refuses_bad_keys() {
    // Wrong length.
    assert!(PublicKey::ed25519_from_bytes(&[1u8; 31]).is_err());
    // Identity point (small order, weak).
    let mut identity = [0u8; 32];
    identity[0] = 1;
    assert!(PublicKey::ed25519_from_bytes(&identity).is_err());
    // All-zero encodes a point of order 4.
    assert!(PublicKey::ed25519_from_bytes(&[0u8; 32]).is_err());
    // Non-canonical encoding of the identity: y = p + 1.
    let mut noncanon = [0xffu8; 32];
    noncanon[0] = 0xee;
    noncanon[31] = 0x7f;
    assert!(PublicKey::ed25519_from_bytes(&noncanon).is_err());
}
