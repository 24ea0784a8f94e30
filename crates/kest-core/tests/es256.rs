//! ES256 (ECDSA P-256 SHA-256, RFC 7518 §3.4): published vectors (RFC 7515
//! Appendix A.3, Wycheproof `ecdsa_secp256r1_sha256_p1363_test.json`), key
//! parsing refusals, algorithm fixed by key type, signature encoding rules,
//! mixed Ed25519 + ES256 passports, properties.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use std::path::PathBuf;
use std::sync::Arc;

use common::{ALICE, alice};
use kest_core::encoding::{b64url_decode, b64url_encode};
use kest_core::jws::{header_json, signing_input};
use kest_core::workload::{DEFAULT_TOKEN_TTL, mint_workload_token, verify_workload_token};
use kest_core::{
    EntryDraft, ErrorKind, Es256Signer, KeyError, KeySet, KeySetError, Parents, Passport, PublicKey,
    SignatureError, Signer, TrustRules, UnverifiedPassport, Verifier, parse_jwk,
};
use proptest::prelude::*;
use serde_json::{Value, json};

const CAROL: &str = "spiffe://test/carol-p256";
const CAROL_SCALAR: [u8; 32] = [0xc4; 32];

/// The order n of the P-256 group, big-endian.
const N: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xbc,
    0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51,
];

fn carol() -> Es256Signer {
    Es256Signer::from_scalar(CAROL, CAROL_SCALAR).unwrap()
}

fn load(rel: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testvectors").join(rel);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn hex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd hex length");
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

/// `a - b` for 32-byte big-endian integers (`a >= b`).
fn sub(a: &[u8; 32], b: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let mut d = i16::from(a[i]) - i16::from(b[i]) - borrow;
        borrow = 0;
        if d < 0 {
            d += 256;
            borrow = 1;
        }
        out[i] = d as u8;
    }
    assert_eq!(borrow, 0);
    out
}

/// A DER `SEQUENCE { INTEGER r, INTEGER s }` of a raw `r||s` signature.
fn der(raw: &[u8]) -> Vec<u8> {
    let int = |v: &[u8]| {
        let mut v: Vec<u8> = v.iter().copied().skip_while(|b| *b == 0).collect();
        if v.first().is_none_or(|b| *b >= 0x80) {
            v.insert(0, 0);
        }
        let mut out = vec![0x02, v.len() as u8];
        out.extend(v);
        out
    };
    let mut body = int(&raw[..32]);
    body.extend(int(&raw[32..]));
    let mut out = vec![0x30, body.len() as u8];
    out.extend(body);
    out
}

// ------------------------------------------------------------ vectors

#[test]
fn wycheproof_p1363_every_case() {
    let doc = load("wycheproof/ecdsa_secp256r1_sha256_p1363_test.json");
    assert_eq!(doc["algorithm"], "ECDSA");
    let (mut valid, mut invalid, mut acceptable, mut jwk_keys) = (0, 0, 0, 0);
    for group in doc["testGroups"].as_array().unwrap() {
        assert_eq!(group["sha"], "SHA-256");
        let sec1 = hex(group["publicKey"]["uncompressed"].as_str().unwrap());
        let key = PublicKey::p256_from_sec1(&sec1).unwrap_or_else(|e| panic!("{sec1:x?}: {e}"));
        assert_eq!(key.allowed_alg(), "ES256");
        // The same key through the JWK route, when the file gives one.
        if let Some(jwk) = group.get("publicKeyJwk") {
            let mut jwk = jwk.clone();
            jwk["kid"] = json!("wycheproof");
            let (_, parsed) = parse_jwk(&jwk).unwrap();
            assert_eq!(parsed, key);
            assert_eq!(parsed.to_jwk("k")["x"], jwk["x"]);
            jwk_keys += 1;
        }
        for case in group["tests"].as_array().unwrap() {
            let id = &case["tcId"];
            let msg = hex(case["msg"].as_str().unwrap());
            let sig = hex(case["sig"].as_str().unwrap());
            let got = key.verify(&msg, &sig);
            match case["result"].as_str().unwrap() {
                "valid" => {
                    assert_eq!(got, Ok(()), "tcId {id} ({}) must verify", case["comment"]);
                    valid += 1;
                }
                "invalid" => {
                    assert!(got.is_err(), "tcId {id} ({}) must be refused", case["comment"]);
                    invalid += 1;
                }
                // Policy: Kest fails closed, so an "acceptable" signature
                // is refused. The current file has none.
                "acceptable" => {
                    assert!(got.is_err(), "tcId {id}: acceptable cases are refused by policy");
                    acceptable += 1;
                }
                other => panic!("tcId {id}: unknown result {other}"),
            }
        }
    }
    assert_eq!(valid + invalid + acceptable, doc["numberOfTests"].as_u64().unwrap() as usize);
    assert_eq!((valid, invalid, acceptable), (173, 89, 0));
    assert_eq!(jwk_keys, 103);
}

#[test]
fn rfc7515_appendix_a3() {
    let doc = load("rfc7515/a3_es256.json");
    let v = &doc["vectors"][0];
    let (kid, key) = parse_jwk(&v["jwk"]).unwrap();
    assert_eq!(kid, "rfc7515-a3");
    assert_eq!(key.allowed_alg(), "ES256");
    // The RFC's private scalar is the one of this public key.
    let d: [u8; 32] = b64url_decode(v["private_d"].as_str().unwrap()).unwrap().try_into().unwrap();
    let signer = Es256Signer::from_scalar("rfc7515-a3", d).unwrap();
    assert_eq!(signer.public_key(), Some(key.clone()));

    // The JWS layer: header, signing input, signature.
    let jws = v["jws"].as_str().unwrap();
    let (input, sig64) = jws.rsplit_once('.').unwrap();
    let (h64, _) = input.split_once('.').unwrap();
    assert_eq!(
        String::from_utf8(b64url_decode(h64).unwrap()).unwrap(),
        v["protected_header"].as_str().unwrap()
    );
    let sig = b64url_decode(sig64).unwrap();
    assert_eq!(sig.len(), 64);
    assert_eq!(key.verify(input.as_bytes(), &sig), Ok(()));
    // Its DER form is refused, however valid it is as ECDSA.
    assert_eq!(key.verify(input.as_bytes(), &der(&sig)), Err(SignatureError::Length(der(&sig).len())));
    // One flipped bit anywhere in the input or the signature fails.
    for i in 0..sig.len() {
        let mut s = sig.clone();
        s[i] ^= 0x01;
        assert!(key.verify(input.as_bytes(), &s).is_err(), "signature byte {i}");
    }
    let mut m = input.as_bytes().to_vec();
    m[10] ^= 0x20;
    assert_eq!(key.verify(&m, &sig), Err(SignatureError::Invalid));
    // A fresh signature of ours over the same input verifies too.
    assert_eq!(key.verify(input.as_bytes(), &signer.sign(input.as_bytes()).unwrap()), Ok(()));
    // And the key round-trips through a JWKS document.
    let mut set = KeySet::new();
    set.insert(kid, key.clone()).unwrap();
    let back = KeySet::from_jwks_json(&set.to_jwks().to_string()).unwrap();
    assert_eq!(back.get("rfc7515-a3"), Some(&key));
    // The A.3 payload is a JWT, not a Kest entry: as a passport it is
    // refused structurally, never accepted.
    let err =
        Verifier::new(back).verify(&UnverifiedPassport::from_entries(vec![jws.to_owned()])).unwrap_err();
    assert_eq!(err.index(), Some(0));
}

// ------------------------------------------------------------ keys

fn ec_jwk(x: &[u8], y: &[u8]) -> Value {
    json!({"kty": "EC", "crv": "P-256", "kid": CAROL, "x": b64url_encode(x), "y": b64url_encode(y)})
}

fn key_error(jwk: Value) -> KeyError {
    match KeySet::from_jwks_json(&json!({"keys": [jwk]}).to_string()) {
        Err(KeySetError::InvalidKey { kid, source }) => {
            assert_eq!(kid.as_deref(), Some(CAROL));
            source
        }
        other => panic!("expected InvalidKey, got {other:?}"),
    }
}

#[test]
fn p256_jwk_refusals_are_typed() {
    let good = carol().public_key().unwrap().to_jwk(CAROL);
    assert_eq!(good["kty"], "EC");
    assert_eq!(good["crv"], "P-256");
    assert_eq!(good["alg"], "ES256");
    let x = b64url_decode(good["x"].as_str().unwrap()).unwrap();
    let y = b64url_decode(good["y"].as_str().unwrap()).unwrap();
    KeySet::from_jwks_json(&json!({"keys": [good.clone()]}).to_string()).unwrap();

    // Lengths: a leading zero byte dropped or added is not tolerated.
    assert_eq!(
        key_error(ec_jwk(&x[1..], &y)),
        KeyError::CoordinateLength { coordinate: "x", expected: 32, found: 31 }
    );
    let mut long = vec![0u8];
    long.extend(&y);
    assert_eq!(
        key_error(ec_jwk(&x, &long)),
        KeyError::CoordinateLength { coordinate: "y", expected: 32, found: 33 }
    );
    // Not on the curve: y changed, and the other root's neighbour.
    let mut y2 = y.clone();
    y2[31] ^= 1;
    assert_eq!(key_error(ec_jwk(&x, &y2)), KeyError::NotOnCurve);
    // Coordinates at or above the field prime.
    assert_eq!(key_error(ec_jwk(&[0xff; 32], &y)), KeyError::NotOnCurve);
    assert_eq!(key_error(ec_jwk(&[0; 32], &[0; 32])), KeyError::NotOnCurve);
    // Missing or badly encoded coordinates.
    let mut no_y = good.clone();
    no_y.as_object_mut().unwrap().remove("y");
    assert_eq!(key_error(no_y), KeyError::MissingCoordinate("y"));
    let mut padded = good.clone();
    padded["x"] = json!(format!("{}=", good["x"].as_str().unwrap()));
    assert_eq!(key_error(padded), KeyError::CoordinateEncoding("x"));
    // Other curves and key types.
    for (kty, crv) in
        [("EC", "P-384"), ("EC", "P-521"), ("EC", "secp256k1"), ("RSA", "none"), ("OKP", "P-256")]
    {
        let mut j = good.clone();
        j["kty"] = json!(kty);
        j["crv"] = json!(crv);
        assert_eq!(
            key_error(j),
            KeyError::UnsupportedKeyType { kty: kty.into(), crv: crv.into() },
            "{kty} {crv}"
        );
    }
    // `alg` of another key type.
    let mut j = good.clone();
    j["alg"] = json!("EdDSA");
    assert_eq!(key_error(j), KeyError::AlgMismatch { found: "\"EdDSA\"".into(), allowed: "ES256" });
    let mut j = alice().public_key().unwrap().to_jwk(CAROL);
    j["alg"] = json!("ES256");
    assert_eq!(key_error(j), KeyError::AlgMismatch { found: "\"ES256\"".into(), allowed: "EdDSA" });
    // Private material is refused.
    let mut j = good.clone();
    j["d"] = json!(b64url_encode(&CAROL_SCALAR));
    assert!(matches!(
        KeySet::from_jwks_json(&json!({"keys": [j]}).to_string()),
        Err(KeySetError::BadKey { .. })
    ));
    // SEC1: identity and garbage refused.
    assert_eq!(PublicKey::p256_from_sec1(&[0]), Err(KeyError::NotOnCurve));
    assert_eq!(PublicKey::p256_from_sec1(&[4; 65]), Err(KeyError::NotOnCurve));
}

#[test]
fn private_scalars_are_checked_and_never_printed() {
    assert_eq!(Es256Signer::from_scalar("p", [0; 32]).unwrap_err(), KeyError::InvalidPrivateScalar);
    assert_eq!(Es256Signer::from_scalar("p", N).unwrap_err(), KeyError::InvalidPrivateScalar);
    assert_eq!(Es256Signer::from_scalar("p", [0xff; 32]).unwrap_err(), KeyError::InvalidPrivateScalar);
    // n - 1 is the largest valid scalar.
    let mut one = [0u8; 32];
    one[31] = 1;
    Es256Signer::from_scalar("p", sub(&N, &one)).unwrap();
    let debug = format!("{:?}", carol());
    assert!(debug.contains(CAROL));
    assert!(!debug.contains(&b64url_encode(&CAROL_SCALAR)));
    assert!(!debug.to_lowercase().contains("c4c4c4c4"));
    assert!(!debug.contains("196, 196"));
    let generated = Es256Signer::generate("p").unwrap();
    assert_ne!(generated.public_key(), Es256Signer::generate("p").unwrap().public_key());
}

// ------------------------------------------------------------ passports

fn mixed_keys() -> KeySet {
    let mut keys = KeySet::new();
    keys.insert(ALICE, alice().public_key().unwrap()).unwrap();
    keys.insert(CAROL, carol().public_key().unwrap()).unwrap();
    keys
}

/// Both verifier paths: the static key set (signatures in pass 1) and a
/// resolver (signatures after pass 2).
fn verifiers() -> Vec<Verifier> {
    vec![
        Verifier::new(mixed_keys()).semantic(true),
        Verifier::with_resolver(Arc::new(mixed_keys())).semantic(true),
    ]
}

#[track_caller]
fn assert_rejects(list: &[String], kind: ErrorKind, index: usize) {
    for v in verifiers() {
        let err = v.verify(&UnverifiedPassport::from_entries(list.to_vec())).unwrap_err();
        assert_eq!((err.kind(), err.index()), (kind, Some(index)), "{err}");
    }
}

#[track_caller]
fn assert_accepts(list: &[String]) {
    for v in verifiers() {
        v.verify(&UnverifiedPassport::from_entries(list.to_vec())).unwrap_or_else(|e| panic!("{e}"));
    }
}

/// A root signed by Alice (Ed25519), then a child signed by Carol (ES256),
/// then a grandchild signed by Alice.
fn mixed_passport() -> Passport {
    let rules = TrustRules::default();
    let mut p = Passport::new();
    let mut root = EntryDraft::new("ingest");
    root.source_type = Some("internal".into());
    p.record(&root, &alice(), &rules).unwrap();
    let mut child = EntryDraft::new("score");
    child.added_taints = vec!["p256".into()];
    p.record(&child, &carol(), &rules).unwrap();
    let mut grandchild = EntryDraft::new("report");
    grandchild.parents = Parents::Tips;
    p.record(&grandchild, &alice(), &rules).unwrap();
    p
}

fn list(p: &Passport) -> Vec<String> {
    p.entries().iter().map(|e| e.jws().to_owned()).collect()
}

#[test]
fn mixed_passport_verifies() {
    let p = mixed_passport();
    let jws = p.entries()[1].jws();
    let header = String::from_utf8(b64url_decode(jws.split('.').next().unwrap()).unwrap()).unwrap();
    assert_eq!(header, format!(r#"{{"alg":"ES256","kid":"{CAROL}","typ":"JWS"}}"#));
    assert_eq!(b64url_decode(jws.rsplit('.').next().unwrap()).unwrap().len(), 64);
    assert_accepts(&list(&p));
    let verified = Verifier::new(mixed_keys()).verify_json(&p.to_json()).unwrap();
    assert_eq!(verified.entries()[2].payload().taints, vec!["p256".to_string()]);
}

/// Re-signs entry `index` of the mixed passport with `header` and `sign`,
/// keeping its payload (the entry is then the last one).
fn resign(index: usize, header: &str, sign: impl FnOnce(&[u8]) -> Vec<u8>) -> Vec<String> {
    let mut entries = list(&mixed_passport());
    entries.truncate(index + 1);
    let payload = b64url_decode(entries[index].split('.').nth(1).unwrap()).unwrap();
    let input = signing_input(header, &payload);
    let sig = sign(input.as_bytes());
    entries[index] = format!("{input}.{}", b64url_encode(&sig));
    entries
}

fn carol_sig(input: &[u8]) -> Vec<u8> {
    carol().sign(input).unwrap()
}

#[test]
fn algorithm_is_fixed_by_key_type() {
    // A P-256 key never verifies an EdDSA header, even with a valid ECDSA signature.
    assert_rejects(&resign(1, &header_json("EdDSA", CAROL), carol_sig), ErrorKind::AlgNotAllowed, 1);
    // An Ed25519 key never verifies an ES256 header.
    assert_rejects(
        &resign(0, &header_json("ES256", ALICE), |m| alice().sign(m).unwrap()),
        ErrorKind::AlgNotAllowed,
        0,
    );
    for alg in ["none", "mock", "HS256", "ES384", "RS256", "es256", "ES256 "] {
        assert_rejects(&resign(1, &header_json(alg, CAROL), carol_sig), ErrorKind::AlgNotAllowed, 1);
    }
    // The control: the right header verifies.
    assert_accepts(&resign(1, &header_json("ES256", CAROL), carol_sig));
}

#[test]
fn es256_signature_encoding_rules() {
    let h = header_json("ES256", CAROL);
    // DER is refused (length), even though it encodes a valid signature.
    assert_rejects(&resign(1, &h, |m| der(&carol_sig(m))), ErrorKind::MalformedSignature, 1);
    // Truncated / extended.
    assert_rejects(&resign(1, &h, |m| carol_sig(m)[..63].to_vec()), ErrorKind::MalformedSignature, 1);
    assert_rejects(&resign(1, &h, |m| [carol_sig(m), vec![0]].concat()), ErrorKind::MalformedSignature, 1);
    // r or s zero, or not below n.
    let with = |r: Option<[u8; 32]>, s: Option<[u8; 32]>| {
        resign(1, &h, move |m| {
            let mut sig = carol_sig(m);
            if let Some(r) = r {
                sig[..32].copy_from_slice(&r);
            }
            if let Some(s) = s {
                sig[32..].copy_from_slice(&s);
            }
            sig
        })
    };
    for bad in [[0u8; 32], N, [0xff; 32]] {
        assert_rejects(&with(Some(bad), None), ErrorKind::MalformedSignature, 1);
        assert_rejects(&with(None, Some(bad)), ErrorKind::MalformedSignature, 1);
    }
    // r + n, s + n style "same value mod n" cannot be written in 32 bytes
    // for most values; r = 1 is well-formed but wrong.
    let mut one = [0u8; 32];
    one[31] = 1;
    assert_rejects(&with(Some(one), None), ErrorKind::BadSignature, 1);
    // Signed by another P-256 key.
    let mallory = Es256Signer::from_scalar(CAROL, [0x3d; 32]).unwrap();
    assert_rejects(&resign(1, &h, |m| mallory.sign(m).unwrap()), ErrorKind::BadSignature, 1);
    // High-S is accepted (SPEC §8: low-S not required on input): both s
    // and n - s verify.
    let high_and_low = |flip: bool| {
        resign(1, &h, move |m| {
            let mut sig = carol_sig(m);
            if flip {
                let s: [u8; 32] = sig[32..].try_into().unwrap();
                sig[32..].copy_from_slice(&sub(&N, &s));
            }
            sig
        })
    };
    assert_accepts(&high_and_low(false));
    assert_accepts(&high_and_low(true));
}

#[test]
fn errors_name_no_key_material() {
    let entries = resign(1, &header_json("ES256", CAROL), |m| der(&carol_sig(m)));
    let err = Verifier::new(mixed_keys()).verify(&UnverifiedPassport::from_entries(entries)).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("64 bytes"), "{text}");
    assert!(!text.contains(&b64url_encode(&CAROL_SCALAR)));
}

#[test]
fn workload_tokens_support_es256() {
    let keys = mixed_keys();
    let token = mint_workload_token(&carol(), "http://svc", DEFAULT_TOKEN_TTL, 1000).unwrap();
    let header: Value =
        serde_json::from_slice(&b64url_decode(token.split('.').next().unwrap()).unwrap()).unwrap();
    assert_eq!(header["alg"], "ES256");
    assert_eq!(verify_workload_token(&token, &keys, "http://svc", 1000).unwrap(), CAROL);
    // DER, and a token relabelled EdDSA, are refused.
    let (input, sig) = token.rsplit_once('.').unwrap();
    let der_token = format!("{input}.{}", b64url_encode(&der(&b64url_decode(sig).unwrap())));
    assert_eq!(
        verify_workload_token(&der_token, &keys, "http://svc", 1000).unwrap_err().kind(),
        "bad_workload_signature"
    );
    let ed_header = b64url_encode(
        json!({"alg": "EdDSA", "kid": CAROL, "typ": "kest-workload+jwt"}).to_string().as_bytes(),
    );
    let claims = input.split('.').nth(1).unwrap();
    let relabelled_input = format!("{ed_header}.{claims}");
    let relabelled = format!("{relabelled_input}.{}", b64url_encode(&carol_sig(relabelled_input.as_bytes())));
    assert_eq!(
        verify_workload_token(&relabelled, &keys, "http://svc", 1000).unwrap_err().kind(),
        "malformed_workload_token"
    );
}

// ------------------------------------------------------------ properties

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn sign_verify_round_trip(scalar in any::<[u8; 32]>(), msg in prop::collection::vec(any::<u8>(), 0..256)) {
        let Ok(signer) = Es256Signer::from_scalar("p", scalar) else {
            // Zero or >= n: refused, which is the property for those.
            return Ok(());
        };
        let sig = signer.sign(&msg).unwrap();
        prop_assert_eq!(sig.len(), 64);
        let key = signer.public_key().unwrap();
        prop_assert_eq!(key.verify(&msg, &sig), Ok(()));
        // Through the JWK route too.
        let (_, parsed) = parse_jwk(&key.to_jwk("p")).unwrap();
        prop_assert_eq!(parsed.verify(&msg, &sig), Ok(()));
    }

    #[test]
    fn any_bit_flip_is_rejected(bit in 0usize..(64 * 8), msg in prop::collection::vec(any::<u8>(), 1..64), msg_bit in any::<prop::sample::Index>(), in_msg in any::<bool>()) {
        let signer = carol();
        let key = signer.public_key().unwrap();
        let mut sig = signer.sign(&msg).unwrap();
        let mut msg = msg;
        if in_msg {
            let i = msg_bit.index(msg.len() * 8);
            msg[i / 8] ^= 1 << (i % 8);
        } else {
            sig[bit / 8] ^= 1 << (bit % 8);
        }
        prop_assert!(key.verify(&msg, &sig).is_err());
    }

    #[test]
    fn any_bit_flip_in_an_es256_entry_is_rejected(bit in any::<prop::sample::Index>()) {
        let entries = list(&mixed_passport());
        let mut bytes = entries[1].clone().into_bytes();
        let i = bit.index(bytes.len() * 8);
        bytes[i / 8] ^= 1 << (i % 8);
        let tampered = entries.iter().enumerate().map(|(j, e)| {
            if j == 1 { String::from_utf8_lossy(&bytes).into_owned() } else { e.clone() }
        }).collect::<Vec<_>>();
        prop_assert!(Verifier::new(mixed_keys()).verify(&UnverifiedPassport::from_entries(tampered)).is_err());
    }
}
