//! One test per SPEC §3 rejection: each bad passport is built so that the
//! rejected property is its only defect (payloads are canonical and validly
//! signed unless the test is about exactly that), and each test asserts the
//! stable error kind and the entry index.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use kest_core::encoding::{b64url_decode, b64url_encode};
use kest_core::jws::header_json;
use kest_core::{
    Classification, EntryDraft, EntryHash, ErrorKind, KeySet, KeySetError, Limits, PublicKey, Signer,
    UnverifiedPassport, Verifier,
};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const ED: ErrorKind = ErrorKind::MalformedSignature;

/// Control: the fixture's untouched child verifies, so every rejection
/// below is caused by the one change each test makes.
#[test]
fn control_fixture_child_verifies() {
    let fx = Fixture::new();
    let list = fx.with_value(&fx.child_value());
    let p = assert_accepts(&list, true);
    assert_eq!(p.len(), 2);
    assert_eq!(p.entries()[1].payload().trust_score, 40);
    // A header without `kid` is tolerated.
    let payload = kest_core::json::canonicalize(&fx.child_value()).unwrap();
    let jws = sign_raw(r#"{"alg":"EdDSA","typ":"JWS"}"#, &payload, ALICE_SEED);
    assert_accepts(&fx.with(jws), true);
    // Payload members beyond §2.1 and non-string label values are tolerated.
    let mut v = fx.child_value();
    v["future_member"] = json!({"x": [1, 2]});
    v["labels"]["persisted_arg"] = json!(42);
    assert_accepts(&fx.with_value(&v), true);
    // The passport array may carry JSON whitespace (the reference writes it).
    let spaced = format!("[\"{}\", \"{}\"]", list[0], list[1]);
    verifier().verify_json(&spaced).unwrap();
}

// ---------------------------------------------------------------- structural

#[test]
fn two_segments() {
    let fx = Fixture::new();
    let jws = fx.with_value(&fx.child_value()).pop().unwrap();
    let two = jws.rsplit_once('.').unwrap().0.to_owned();
    assert_rejects(&fx.with(two), false, ErrorKind::SegmentCount, 1);
}

#[test]
fn four_segments() {
    let fx = Fixture::new();
    let jws = fx.with_value(&fx.child_value()).pop().unwrap();
    assert_rejects(&fx.with(format!("{jws}.AAAA")), false, ErrorKind::SegmentCount, 1);
    assert_rejects(&fx.with(format!("{jws}.")), false, ErrorKind::SegmentCount, 1);
}

#[test]
fn one_segment_and_empty_string() {
    let fx = Fixture::new();
    assert_rejects(&fx.with("abc".into()), false, ErrorKind::SegmentCount, 1);
    assert_rejects(&fx.with(String::new()), false, ErrorKind::SegmentCount, 1);
}

#[test]
fn padded_base64_signature() {
    let fx = Fixture::new();
    let jws = fx.with_value(&fx.child_value()).pop().unwrap();
    // 64 bytes encode to 86 characters: "==" is the standard padding.
    assert_eq!(jws.rsplit('.').next().unwrap().len(), 86);
    assert_rejects(&fx.with(format!("{jws}==")), false, ErrorKind::Base64, 1);
}

#[test]
fn padded_base64_payload() {
    let fx = Fixture::new();
    // Grow the operation name until the payload needs padding.
    let mut op = String::from("child");
    loop {
        let mut v = fx.child_value();
        v["operation"] = json!(op);
        let payload = kest_core::json::canonicalize(&v).unwrap();
        if !payload.len().is_multiple_of(3) {
            let header = header_json("EdDSA", ALICE);
            let pad = if payload.len() % 3 == 1 { "==" } else { "=" };
            let h64 = b64url_encode(header.as_bytes());
            let p64 = format!("{}{pad}", b64url_encode(&payload));
            // Sign exactly the padded signing input, so only the padding is wrong.
            let input = format!("{h64}.{p64}");
            let sig = ed25519_sign(&input);
            assert_rejects(&fx.with(format!("{input}.{sig}")), false, ErrorKind::Base64, 1);
            return;
        }
        op.push('x');
    }
}

#[test]
fn standard_alphabet_base64() {
    let fx = Fixture::new();
    let jws = fx.with_value(&fx.child_value()).pop().unwrap();
    let (input, sig) = jws.rsplit_once('.').unwrap();
    let std_sig = sig.replace('-', "+").replace('_', "/");
    let jws = if std_sig == sig { format!("{input}.+{}", &sig[1..]) } else { format!("{input}.{std_sig}") };
    assert_rejects(&fx.with(jws), false, ErrorKind::Base64, 1);
}

#[test]
fn header_not_object() {
    let fx = Fixture::new();
    let payload = kest_core::json::canonicalize(&fx.child_value()).unwrap();
    let jws = sign_raw(r#"["EdDSA"]"#, &payload, ALICE_SEED);
    assert_rejects(&fx.with(jws), false, ErrorKind::NotObject, 1);
}

#[test]
fn header_not_json() {
    let fx = Fixture::new();
    let payload = kest_core::json::canonicalize(&fx.child_value()).unwrap();
    let jws = sign_raw(r#"{"alg":"EdDSA""#, &payload, ALICE_SEED);
    assert_rejects(&fx.with(jws), false, ErrorKind::Json, 1);
}

#[test]
fn header_with_crit() {
    let fx = Fixture::new();
    let payload = kest_core::json::canonicalize(&fx.child_value()).unwrap();
    let header = format!(r#"{{"alg":"EdDSA","crit":["exp"],"exp":1,"kid":"{ALICE}","typ":"JWS"}}"#);
    assert_rejects(&fx.with(sign_raw(&header, &payload, ALICE_SEED)), false, ErrorKind::InvalidValue, 1);
}

#[test]
fn header_duplicate_alg() {
    let fx = Fixture::new();
    let payload = kest_core::json::canonicalize(&fx.child_value()).unwrap();
    let header = format!(r#"{{"alg":"none","alg":"EdDSA","kid":"{ALICE}","typ":"JWS"}}"#);
    assert_rejects(&fx.with(sign_raw(&header, &payload, ALICE_SEED)), false, ErrorKind::DuplicateMember, 1);
}

#[test]
fn payload_not_object() {
    let fx = Fixture::new();
    let jws = sign_raw(&header_json("EdDSA", ALICE), b"[1,2]", ALICE_SEED);
    assert_rejects(&fx.with(jws), false, ErrorKind::NotObject, 1);
}

#[test]
fn payload_duplicate_member() {
    let fx = Fixture::new();
    let canonical = String::from_utf8(kest_core::json::canonicalize(&fx.child_value()).unwrap()).unwrap();
    // Valid JSON for a lenient parser (last member wins), validly signed.
    let dup = canonical.replacen('{', r#"{"trust_score":100,"#, 1);
    assert!(serde_json::from_str::<Value>(&dup).is_ok());
    let jws = sign_raw(&header_json("EdDSA", ALICE), dup.as_bytes(), ALICE_SEED);
    assert_rejects(&fx.with(jws), false, ErrorKind::DuplicateMember, 1);
}

#[test]
fn payload_noncanonical_whitespace() {
    let fx = Fixture::new();
    let canonical = String::from_utf8(kest_core::json::canonicalize(&fx.child_value()).unwrap()).unwrap();
    let spaced = canonical.replacen("{\"", "{ \"", 1);
    let jws = sign_raw(&header_json("EdDSA", ALICE), spaced.as_bytes(), ALICE_SEED);
    assert_rejects(&fx.with(jws), false, ErrorKind::NotCanonical, 1);
}

#[test]
fn payload_noncanonical_member_order() {
    let fx = Fixture::new();
    // serde_json without preserve_order writes sorted keys too; build the
    // unsorted text by hand: move the first member to the end.
    let canonical = String::from_utf8(kest_core::json::canonicalize(&fx.child_value()).unwrap()).unwrap();
    let body = &canonical[1..canonical.len() - 1];
    let (first, rest) = body.split_once(",\"").unwrap();
    let reordered = format!("{{\"{rest},{first}}}");
    assert!(serde_json::from_str::<Value>(&reordered).is_ok());
    let jws = sign_raw(&header_json("EdDSA", ALICE), reordered.as_bytes(), ALICE_SEED);
    assert_rejects(&fx.with(jws), false, ErrorKind::NotCanonical, 1);
}

#[test]
fn payload_noncanonical_escape() {
    let fx = Fixture::new();
    let mut v = fx.child_value();
    v["operation"] = json!("child/op");
    let canonical = String::from_utf8(kest_core::json::canonicalize(&v).unwrap()).unwrap();
    // "\/" is a valid JSON escape for "/" but not the canonical form.
    let escaped = canonical.replacen("child/op", "child\\/op", 1);
    let jws = sign_raw(&header_json("EdDSA", ALICE), escaped.as_bytes(), ALICE_SEED);
    assert_rejects(&fx.with(jws), false, ErrorKind::NotCanonical, 1);
}

#[test]
fn trust_score_101() {
    let fx = Fixture::new();
    let mut v = fx.child_value();
    v["trust_score"] = json!(101);
    assert_rejects(&fx.with_value(&v), false, ErrorKind::InvalidValue, 1);
    v["trust_score"] = json!(256);
    assert_rejects(&fx.with_value(&v), false, ErrorKind::InvalidValue, 1);
}

#[test]
fn trust_score_fraction() {
    let fx = Fixture::new();
    let mut v = fx.child_value();
    v["trust_score"] = json!(50.5);
    assert_rejects(&fx.with_value(&v), false, ErrorKind::WrongType, 1);
}

#[test]
fn trust_score_negative_or_string() {
    let fx = Fixture::new();
    let mut v = fx.child_value();
    v["trust_score"] = json!(-1);
    assert_rejects(&fx.with_value(&v), false, ErrorKind::WrongType, 1);
    v["trust_score"] = json!("40");
    assert_rejects(&fx.with_value(&v), false, ErrorKind::WrongType, 1);
}

#[test]
fn missing_taints() {
    let fx = Fixture::new();
    let mut v = fx.child_value();
    v.as_object_mut().unwrap().remove("taints");
    assert_rejects(&fx.with_value(&v), false, ErrorKind::MissingMember, 1);
}

#[test]
fn every_required_member_missing() {
    let fx = Fixture::new();
    let names: Vec<String> = fx.child_value().as_object().unwrap().keys().cloned().collect();
    assert_eq!(names.len(), 18, "SPEC §2.1 has 18 members: {names:?}");
    for name in names {
        let mut v = fx.child_value();
        v.as_object_mut().unwrap().remove(&name);
        let err = verify_list(&fx.with_value(&v), false).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::MissingMember, "removing {name}: {err}");
        assert_eq!(err.index(), Some(1));
    }
    for name in
        ["enterprise_policies", "platform_policies", "app_policies", "function_policies", "deviations"]
    {
        let mut v = fx.child_value();
        v["policy_context"].as_object_mut().unwrap().remove(name);
        assert_rejects(&fx.with_value(&v), false, ErrorKind::MissingMember, 1);
    }
}

#[test]
fn entry_id_not_uuid() {
    let fx = Fixture::new();
    let mut v = fx.child_value();
    v["entry_id"] = json!("not-a-uuid");
    assert_rejects(&fx.with_value(&v), false, ErrorKind::InvalidValue, 1);
    // Uppercase and unhyphenated forms are not the wire form either.
    let id = fx.child_value()["entry_id"].as_str().unwrap().to_owned();
    v["entry_id"] = json!(id.to_uppercase());
    assert_rejects(&fx.with_value(&v), false, ErrorKind::InvalidValue, 1);
    v["entry_id"] = json!(id.replace('-', ""));
    assert_rejects(&fx.with_value(&v), false, ErrorKind::InvalidValue, 1);
}

#[test]
fn principal_not_string() {
    let fx = Fixture::new();
    let mut v = fx.child_value();
    v["labels"]["principal"] = json!(7);
    assert_rejects(&fx.with_value(&v), false, ErrorKind::WrongType, 1);
    v["labels"].as_object_mut().unwrap().remove("principal");
    assert_rejects(&fx.with_value(&v), false, ErrorKind::MissingMember, 1);
}

#[test]
fn wrong_types_and_values() {
    let fx = Fixture::new();
    let cases: Vec<(&str, Value, ErrorKind)> = vec![
        ("classification", json!("admin"), ErrorKind::InvalidValue),
        ("classification", json!(1), ErrorKind::WrongType),
        ("schema_version", json!("9.9.9"), ErrorKind::InvalidValue),
        ("operation", json!(""), ErrorKind::InvalidValue),
        ("parent_ids", json!("0"), ErrorKind::WrongType),
        ("taints", json!([1]), ErrorKind::WrongType),
        ("labels", json!([]), ErrorKind::WrongType),
        ("environment", json!({"k": 1}), ErrorKind::WrongType),
        ("input_hash", json!("ABC"), ErrorKind::InvalidValue),
        ("content_hash", json!("A".repeat(64)), ErrorKind::InvalidValue),
        ("timestamp_ms", json!(-5), ErrorKind::WrongType),
        ("runtime", json!("kest-rs"), ErrorKind::WrongType),
    ];
    for (name, value, kind) in cases {
        let mut v = fx.child_value();
        v[name] = value.clone();
        let err = verify_list(&fx.with_value(&v), false).unwrap_err();
        assert_eq!(err.kind(), kind, "{name} = {value}: {err}");
        assert_eq!(err.index(), Some(1));
    }
}

fn nested_arrays(depth: usize) -> Value {
    let mut v = json!(0);
    for _ in 0..depth {
        v = Value::Array(vec![v]);
    }
    v
}

#[test]
fn nesting_deeper_than_limit() {
    let fx = Fixture::new();
    let limit = Limits::default().max_json_depth;
    // The payload object is one level; metadata adds the rest.
    let mut v = fx.child_value();
    v["metadata"] = nested_arrays(limit);
    assert_rejects(&fx.with_value(&v), false, ErrorKind::TooDeep, 1);
    // Exactly at the limit is fine (so the limit, not something else, decides).
    v["metadata"] = nested_arrays(limit - 1);
    assert_accepts(&fx.with_value(&v), true);
    // Far beyond serde_json's own recursion limit: still a typed refusal.
    v["metadata"] = nested_arrays(200);
    assert_rejects(&fx.with_value(&v), false, ErrorKind::TooDeep, 1);
}

#[test]
fn entry_above_max_entry_bytes() {
    let fx = Fixture::new();
    let mut v = fx.child_value();
    v["metadata"] = json!("x".repeat(4096));
    let list = fx.with_value(&v);
    let limits = Limits { max_entry_bytes: list[0].len(), ..Limits::default() };
    assert!(list[1].len() > limits.max_entry_bytes);
    let err = Verifier::new(keys())
        .limits(limits)
        .verify(&UnverifiedPassport::from_entries(list.clone()))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::LimitExceeded);
    assert_eq!(err.index(), Some(1));
    // With room for it, the same passport verifies.
    let limits = Limits { max_entry_bytes: list[1].len(), ..Limits::default() };
    Verifier::new(keys()).limits(limits).verify(&UnverifiedPassport::from_entries(list)).unwrap();
}

#[test]
fn passport_above_max_entries() {
    let p = linear_passport(3);
    let limits = Limits { max_entries: 2, ..Limits::default() };
    let v = Verifier::new(keys()).limits(limits);
    let err = v.verify_json(&p.to_json()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::LimitExceeded);
    assert_eq!(err.index(), None);
    let err = UnverifiedPassport::from_json(&p.to_json(), &limits).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::LimitExceeded);
    // Via `verify` on an unverified list built without the limit check.
    let err = v.verify(&p.to_unverified()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::LimitExceeded);
    // Three is fine when the limit is three.
    Verifier::new(keys()).limits(Limits { max_entries: 3, ..limits }).verify_json(&p.to_json()).unwrap();
}

#[test]
fn passport_above_max_bytes() {
    let p = linear_passport(2);
    let json = p.to_json();
    let limits = Limits { max_passport_bytes: json.len() - 1, ..Limits::default() };
    let err = Verifier::new(keys()).limits(limits).verify_json(&json).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::LimitExceeded);
    assert_eq!(err.index(), None);
}

#[test]
fn passport_not_an_array_of_strings() {
    let v = verifier();
    for text in ["{}", "[1,2]", "\"a.b.c\"", "[", "", "null", "[[\"a.b.c\"]]", "[\"a.b.c\",null]", "[] []"] {
        let err = v.verify_json(text).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::MalformedPassport, "{text:?}: {err}");
        assert_eq!(err.index(), None);
    }
    // The empty passport is valid.
    assert!(v.verify_json("[]").unwrap().is_empty());
    assert!(v.verify_json(" [ ] ").unwrap().is_empty());
}

// ------------------------------------------------------------ cryptographic

fn ed25519_sign(input: &str) -> String {
    use ed25519_dalek::Signer as _;
    let key = ed25519_dalek::SigningKey::from_bytes(&ALICE_SEED);
    b64url_encode(&key.sign(input.as_bytes()).to_bytes())
}

#[test]
fn alg_none() {
    let fx = Fixture::new();
    let payload = kest_core::json::canonicalize(&fx.child_value()).unwrap();
    // A real Ed25519 signature, so `alg` is the only defect.
    let jws = sign_raw(&header_json("none", ALICE), &payload, ALICE_SEED);
    assert_rejects(&fx.with(jws.clone()), false, ErrorKind::AlgNotAllowed, 1);
    // The classic form: empty signature segment. The key fixes the
    // algorithm, so `none` is refused for what it is.
    let unsigned = format!("{}.", jws.rsplit_once('.').unwrap().0);
    assert_rejects(&fx.with(unsigned), false, ErrorKind::AlgNotAllowed, 1);
}

#[test]
fn alg_mock_like_reference() {
    let fx = Fixture::new();
    let payload = kest_core::json::canonicalize(&fx.child_value()).unwrap();
    let input = kest_core::jws::signing_input(&header_json("mock", ALICE), &payload);
    // The reference MockIdentityProvider: sha256(b"mock-key" + signing_input).
    let mut h = Sha256::new();
    h.update(b"mock-key");
    h.update(input.as_bytes());
    let mock_sig = h.finalize();
    let jws = format!("{input}.{}", b64url_encode(&mock_sig));
    // 32 bytes, but the algorithm is refused first: the key allows EdDSA only.
    assert_rejects(&fx.with(jws), false, ErrorKind::AlgNotAllowed, 1);
    // With a genuine 64-byte Ed25519 signature, `mock` is refused as an alg.
    let jws = sign_raw(&header_json("mock", ALICE), &payload, ALICE_SEED);
    assert_rejects(&fx.with(jws), false, ErrorKind::AlgNotAllowed, 1);
}

#[test]
fn alg_confusion() {
    let fx = Fixture::new();
    let payload = kest_core::json::canonicalize(&fx.child_value()).unwrap();
    for alg in ["HS256", "ES256", "RS256", "eddsa", "EdDSA ", "Ed25519", ""] {
        let jws = sign_raw(&header_json(alg, ALICE), &payload, ALICE_SEED);
        let err = verify_list(&fx.with(jws), false).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::AlgNotAllowed, "alg {alg:?}: {err}");
        assert_eq!(err.index(), Some(1));
    }
    // HS256 keyed with the public key (the classic confusion attack) has
    // a 32-byte MAC: refused for its algorithm.
    let input = kest_core::jws::signing_input(&header_json("HS256", ALICE), &payload);
    let jws = format!("{input}.{}", b64url_encode(&[7u8; 32]));
    assert_rejects(&fx.with(jws), false, ErrorKind::AlgNotAllowed, 1);
    // alg of the wrong JSON type.
    let header = format!(r#"{{"alg":1,"kid":"{ALICE}","typ":"JWS"}}"#);
    assert_rejects(&fx.with(sign_raw(&header, &payload, ALICE_SEED)), false, ErrorKind::WrongType, 1);
    let header = format!(r#"{{"kid":"{ALICE}","typ":"JWS"}}"#);
    assert_rejects(&fx.with(sign_raw(&header, &payload, ALICE_SEED)), false, ErrorKind::MissingMember, 1);
}

#[test]
fn kid_differs_from_principal() {
    let fx = Fixture::new();
    let payload = kest_core::json::canonicalize(&fx.child_value()).unwrap();
    // Bob is in the key set; the payload says Alice, signed by Alice.
    let jws = sign_raw(&header_json("EdDSA", BOB), &payload, ALICE_SEED);
    assert_rejects(&fx.with(jws), false, ErrorKind::KidMismatch, 1);
    // kid of the wrong type.
    let header = r#"{"alg":"EdDSA","kid":5,"typ":"JWS"}"#;
    assert_rejects(&fx.with(sign_raw(header, &payload, ALICE_SEED)), false, ErrorKind::WrongType, 1);
}

#[test]
fn principal_not_in_key_set() {
    let fx = Fixture::new();
    let mallory = "spiffe://test/mallory";
    let seed = [0x66; 32];
    let mut v = fx.child_value();
    v["labels"]["principal"] = json!(mallory);
    let jws = sign_value(&v, mallory, seed);
    assert_rejects(&fx.with(jws), false, ErrorKind::UnknownSigner, 1);
    // Signing as Mallory but claiming to be Bob: the signature fails.
    v["labels"]["principal"] = json!(BOB);
    assert_rejects(&fx.with(sign_value(&v, BOB, seed)), false, ErrorKind::BadSignature, 1);
}

#[test]
fn bad_signature_one_bit() {
    let fx = Fixture::new();
    let payload = kest_core::json::canonicalize(&fx.child_value()).unwrap();
    // Flip the lowest bit of s (keeps s reduced and R a valid point).
    let jws = sign_raw_with(&header_json("EdDSA", ALICE), &payload, ALICE_SEED, |s| s[32] ^= 1);
    assert_rejects(&fx.with(jws), false, ErrorKind::BadSignature, 1);
}

#[test]
fn bad_signature_other_message() {
    let fx = Fixture::new();
    let payload = kest_core::json::canonicalize(&fx.child_value()).unwrap();
    let good = sign_raw(&header_json("EdDSA", ALICE), &payload, ALICE_SEED);
    let other = sign_raw(&header_json("EdDSA", ALICE), b"{}", ALICE_SEED);
    let spliced = format!("{}.{}", good.rsplit_once('.').unwrap().0, other.rsplit_once('.').unwrap().1);
    assert_rejects(&fx.with(spliced), false, ErrorKind::BadSignature, 1);
    // Signed by Bob's key, claimed by Alice.
    let jws = sign_raw(&header_json("EdDSA", ALICE), &payload, BOB_SEED);
    assert_rejects(&fx.with(jws), false, ErrorKind::BadSignature, 1);
}

/// The group order L, little endian.
const L: [u8; 32] = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];

fn add_l(s: &mut [u8]) {
    let mut carry = 0u16;
    for (b, l) in s.iter_mut().zip(L) {
        let sum = u16::from(*b) + u16::from(l) + carry;
        *b = (sum & 0xff) as u8;
        carry = sum >> 8;
    }
    assert_eq!(carry, 0);
}

#[test]
fn noncanonical_s() {
    let fx = Fixture::new();
    let payload = kest_core::json::canonicalize(&fx.child_value()).unwrap();
    let header = header_json("EdDSA", ALICE);
    let jws = sign_raw_with(&header, &payload, ALICE_SEED, |sig| add_l(&mut sig[32..]));
    // s + L passes the cofactorless equation in lenient verifiers; it must not here.
    assert_rejects(&fx.with(jws), false, ED, 1);
}

#[test]
fn small_order_r() {
    let fx = Fixture::new();
    let payload = kest_core::json::canonicalize(&fx.child_value()).unwrap();
    let header = header_json("EdDSA", ALICE);
    // R = identity (order 1) and R = (0, -1) encoding (order 2), s = 0.
    let mut identity = [0u8; 32];
    identity[0] = 1;
    let mut order2 = [0u8; 32];
    order2[0] = 0xec;
    order2[1..31].fill(0xff);
    order2[31] = 0x7f;
    for r in [identity, order2] {
        let jws = sign_raw_with(&header, &payload, ALICE_SEED, |sig| {
            sig[..32].copy_from_slice(&r);
            sig[32..].fill(0);
        });
        assert_rejects(&fx.with(jws), false, ED, 1);
    }
}

#[test]
fn noncanonical_r() {
    let fx = Fixture::new();
    let payload = kest_core::json::canonicalize(&fx.child_value()).unwrap();
    let header = header_json("EdDSA", ALICE);
    // y = p + 1 (non-canonical encoding of the identity) with the sign bit.
    let mut r = [0xffu8; 32];
    r[0] = 0xee;
    r[31] = 0x7f;
    let jws = sign_raw_with(&header, &payload, ALICE_SEED, |sig| sig[..32].copy_from_slice(&r));
    assert_rejects(&fx.with(jws), false, ED, 1);
}

#[test]
fn signature_wrong_length() {
    let fx = Fixture::new();
    let jws = fx.with_value(&fx.child_value()).pop().unwrap();
    let (input, sig) = jws.rsplit_once('.').unwrap();
    let bytes = b64url_decode(sig).unwrap();
    assert_rejects(&fx.with(format!("{input}.{}", b64url_encode(&bytes[..63]))), false, ED, 1);
    let mut long = bytes.clone();
    long.push(0);
    assert_rejects(&fx.with(format!("{input}.{}", b64url_encode(&long))), false, ED, 1);
}

#[test]
fn weak_key_in_jwks() {
    let mut identity = [0u8; 32];
    identity[0] = 1;
    let jwks =
        json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": ALICE, "x": b64url_encode(&identity)}]});
    let err = KeySet::from_jwks_json(&jwks.to_string()).unwrap_err();
    assert!(matches!(err, KeySetError::BadKey { .. }), "{err}");
    assert!(PublicKey::ed25519_from_bytes(&identity).is_err());
    // The same document with a real key loads.
    let good = alice().public_key().unwrap().to_jwk(ALICE);
    KeySet::from_jwks_json(&json!({"keys": [good]}).to_string()).unwrap();
}

#[test]
fn jwks_with_private_d() {
    let mut jwk = alice().public_key().unwrap().to_jwk(ALICE);
    jwk["d"] = json!(b64url_encode(&ALICE_SEED));
    let err = KeySet::from_jwks_json(&json!({"keys": [jwk]}).to_string()).unwrap_err();
    assert!(matches!(err, KeySetError::BadKey { .. }), "{err}");
}

#[test]
fn jwks_other_refusals() {
    let good = alice().public_key().unwrap().to_jwk(ALICE);
    let mut cases = Vec::new();
    for (k, v) in
        [("kty", json!("EC")), ("crv", json!("X25519")), ("alg", json!("none")), ("use", json!("enc"))]
    {
        let mut j = good.clone();
        j[k] = v;
        cases.push(json!({"keys": [j]}));
    }
    let mut nokid = good.clone();
    nokid.as_object_mut().unwrap().remove("kid");
    cases.push(json!({"keys": [nokid]}));
    cases.push(json!({"keys": [good.clone(), good.clone()]}));
    cases.push(json!({"keys": {}}));
    for doc in cases {
        assert!(KeySet::from_jwks_json(&doc.to_string()).is_err(), "{doc}");
    }
    // Duplicate member in the document.
    let text = format!(r#"{{"keys":[],"keys":[{good}]}}"#);
    assert!(KeySet::from_jwks_json(&text).is_err());
}

// ------------------------------------------------------------------ linkage

#[test]
fn parent_ids_empty() {
    let fx = Fixture::new();
    let mut v = fx.child_value();
    v["parent_ids"] = json!([]);
    assert_rejects(&fx.with_value(&v), false, ErrorKind::EmptyParents, 1);
}

#[test]
fn parent_ids_root_sentinel_mixed() {
    let fx = Fixture::new();
    let mut v = fx.child_value();
    v["parent_ids"] = json!(["0", fx.root_hash().to_string()]);
    assert_rejects(&fx.with_value(&v), false, ErrorKind::MixedRoot, 1);
    v["parent_ids"] = json!([fx.root_hash().to_string(), "0"]);
    assert_rejects(&fx.with_value(&v), false, ErrorKind::MixedRoot, 1);
}

#[test]
fn parent_id_malformed() {
    let fx = Fixture::new();
    let mut v = fx.child_value();
    v["parent_ids"] = json!([fx.root_hash().to_string().to_uppercase()]);
    assert_rejects(&fx.with_value(&v), false, ErrorKind::MalformedParent, 1);
    v["parent_ids"] = json!(["00"]);
    assert_rejects(&fx.with_value(&v), false, ErrorKind::MalformedParent, 1);
}

#[test]
fn parent_dangling() {
    let fx = Fixture::new();
    let mut v = fx.child_value();
    v["parent_ids"] = json!([EntryHash::of("nowhere").to_string()]);
    assert_rejects(&fx.with_value(&v), false, ErrorKind::DanglingParent, 1);
    // One good parent and one dangling one.
    v["parent_ids"] = json!([fx.root_hash().to_string(), EntryHash::of("nowhere").to_string()]);
    assert_rejects(&fx.with_value(&v), false, ErrorKind::DanglingParent, 1);
}

#[test]
fn parent_out_of_order() {
    let fx = Fixture::new();
    let mut list = fx.with_value(&fx.child_value());
    list.swap(0, 1);
    assert_rejects(&list, false, ErrorKind::ParentOutOfOrder, 0);
}

#[test]
fn duplicate_entry() {
    let fx = Fixture::new();
    let mut list = fx.with_value(&fx.child_value());
    list.push(list[0].clone());
    assert_rejects(&list, false, ErrorKind::DuplicateEntry, 2);
    let list = vec![list[0].clone(), list[0].clone()];
    assert_rejects(&list, false, ErrorKind::DuplicateEntry, 1);
}

#[test]
fn duplicate_parent() {
    let fx = Fixture::new();
    let mut v = fx.child_value();
    let h = fx.root_hash().to_string();
    v["parent_ids"] = json!([h, h]);
    assert_rejects(&fx.with_value(&v), false, ErrorKind::DuplicateParent, 1);
}

// ----------------------------------------------------------------- semantic

/// Asserts rejection with semantic checks on and acceptance with them off.
#[track_caller]
fn semantic_only(list: &[String], kind: ErrorKind, index: usize) {
    assert!(kind.is_semantic());
    assert_rejects(list, true, kind, index);
    assert_accepts(list, false);
}

#[test]
fn semantic_taints_not_recomputed() {
    let fx = Fixture::new();
    // Dropping an inherited taint without removing it.
    let mut v = fx.child_value();
    assert_eq!(v["taints"], json!(["user"]));
    v["taints"] = json!([]);
    semantic_only(&fx.with_value(&v), ErrorKind::TaintMismatch, 1);
    // Adding one that nobody declared.
    v["taints"] = json!(["pii", "user"]);
    semantic_only(&fx.with_value(&v), ErrorKind::TaintMismatch, 1);
    // Unsorted and duplicated but the same set: accepted (the reference
    // writes them unsorted).
    let mut d = EntryDraft::new("child");
    d.added_taints = vec!["a".into()];
    let mut v = fx.child_value_of(&d);
    v["taints"] = json!(["user", "a", "user"]);
    assert_accepts(&fx.with_value(&v), true);
    // A root's taints must equal its added taints.
    let mut root = template_payload();
    root["taints"] = json!(["x"]);
    semantic_only(&[sign_value(&root, ALICE, ALICE_SEED)], ErrorKind::TaintMismatch, 0);
}

#[test]
fn semantic_trust_mismatch_with_source_type() {
    let fx = Fixture::new();
    let mut d = EntryDraft::new("child");
    d.source_type = Some("verified_rag".into());
    let v = fx.child_value_of(&d);
    assert_eq!(v["trust_score"], json!(36)); // 40 * 90 / 100
    assert_accepts(&fx.with_value(&v), true);
    for claimed in [35, 37, 40, 90, 100] {
        let mut v = v.clone();
        v["trust_score"] = json!(claimed);
        semantic_only(&fx.with_value(&v), ErrorKind::TrustMismatch, 1);
    }
    // A root claiming more than its origin.
    let mut root = template_payload();
    root["labels"]["kest.source_type"] = json!("internet");
    root["trust_score"] = json!(10);
    assert_accepts(&[sign_value(&root, ALICE, ALICE_SEED)], true);
    root["trust_score"] = json!(100);
    semantic_only(&[sign_value(&root, ALICE, ALICE_SEED)], ErrorKind::TrustMismatch, 0);
    // Our writer's root without origin: pessimistic 10.
    let mut root = template_payload();
    root["trust_score"] = json!(11);
    semantic_only(&[sign_value(&root, ALICE, ALICE_SEED)], ErrorKind::TrustMismatch, 0);
}

fn foreign(v: &mut Value) {
    let labels = v["labels"].as_object_mut().unwrap();
    labels.remove("kest.source_type");
    labels.remove("kest.trust_evaluator");
    labels.remove("kest.trust_override");
}

#[test]
fn semantic_trust_escalation_foreign_entry() {
    let fx = Fixture::new(); // root trust 40
    let mut v = fx.child_value();
    foreign(&mut v);
    v["trust_score"] = json!(41);
    semantic_only(&fx.with_value(&v), ErrorKind::TrustEscalation, 1);
    v["trust_score"] = json!(100);
    semantic_only(&fx.with_value(&v), ErrorKind::TrustEscalation, 1);
    // At or below the weakest parent: allowed.
    for ok in [0, 13, 40] {
        v["trust_score"] = json!(ok);
        assert_accepts(&fx.with_value(&v), true);
    }
    // A custom evaluator or unknown origin also falls back to this rule.
    let mut v = fx.child_value();
    v["labels"]["kest.trust_evaluator"] = json!("weighted");
    v["trust_score"] = json!(41);
    semantic_only(&fx.with_value(&v), ErrorKind::TrustEscalation, 1);
    let mut v = fx.child_value();
    v["labels"]["kest.source_type"] = json!("partner_feed");
    v["trust_score"] = json!(41);
    semantic_only(&fx.with_value(&v), ErrorKind::TrustEscalation, 1);
}

#[test]
fn semantic_sanitizer_may_raise_trust() {
    let fx = Fixture::new();
    let mut v = fx.child_value();
    foreign(&mut v);
    v["classification"] = json!("sanitizer");
    v["trust_score"] = json!(95);
    assert_accepts(&fx.with_value(&v), true);
    // Our own sanitizer records the override and passes.
    let mut fx2 = Fixture::new();
    let mut d = EntryDraft::new("clean");
    d.classification = Classification::Sanitizer;
    d.trust_override = Some(90);
    d.removed_taints = vec!["user".into()];
    fx2.passport.record(&d, &alice(), &fx2.rules).unwrap();
    let p = assert_accepts(&jws_list(&fx2.passport), true);
    assert_eq!(p.entries()[1].payload().trust_score, 90);
    assert!(p.entries()[1].payload().taints.is_empty());
}

#[test]
fn semantic_trust_override_label() {
    let fx = Fixture::new();
    let mut v = fx.child_value();
    v["labels"]["kest.trust_override"] = json!("70");
    v["trust_score"] = json!(70);
    assert_accepts(&fx.with_value(&v), true);
    v["trust_score"] = json!(71);
    semantic_only(&fx.with_value(&v), ErrorKind::TrustMismatch, 1);
    // Malformed override labels are refused (semantic on) at that entry.
    for bad in [json!("abc"), json!("101"), json!("-1"), json!(""), json!(" 70"), json!(70), json!(null)] {
        let mut v = fx.child_value();
        v["labels"]["kest.trust_override"] = bad.clone();
        v["trust_score"] = json!(70);
        let list = fx.with_value(&v);
        let err = verify_list(&list, true).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidValue, "override {bad}: {err}");
        assert_eq!(err.index(), Some(1));
        assert_accepts(&list, false);
    }
}

// ---------------------------------------------------------- the first error

#[test]
fn first_error_bad_signature_before_structural() {
    let list = craft_chain(
        5,
        |i, v| {
            if i == 3 {
                v["trust_score"] = json!(101);
            }
        },
        |i, sig| {
            if i == 1 {
                sig[40] ^= 0x10;
            }
        },
    );
    assert_rejects(&list, false, ErrorKind::BadSignature, 1);
    assert_rejects(&list, true, ErrorKind::BadSignature, 1);
    // Control: without the bad signature the structural error is reported.
    let list = craft_chain(
        5,
        |i, v| {
            if i == 3 {
                v["trust_score"] = json!(101)
            }
        },
        |_, _| {},
    );
    assert_rejects(&list, false, ErrorKind::InvalidValue, 3);
    // And with nothing wrong, the crafted chain verifies (also semantically).
    assert_accepts(&craft_chain(5, |_, _| {}, |_, _| {}), true);
}

#[test]
fn first_error_bad_signature_before_semantic_and_linkage() {
    let list = craft_chain(
        6,
        |i, v| match i {
            2 => v["taints"] = json!(["smuggled"]),
            4 => v["parent_ids"] = json!([EntryHash::of("x").to_string()]),
            _ => {}
        },
        |i, sig| {
            if i == 1 {
                sig[33] ^= 1;
            }
        },
    );
    assert_rejects(&list, true, ErrorKind::BadSignature, 1);
    // A structural error first wins over a later bad signature.
    let list = craft_chain(
        6,
        |i, v| {
            if i == 1 {
                v["entry_id"] = json!("x")
            }
        },
        |i, sig| {
            if i == 4 {
                sig[33] ^= 1;
            }
        },
    );
    assert_rejects(&list, true, ErrorKind::InvalidValue, 1);
}

#[test]
fn bad_signature_at_57_of_100_is_named() {
    let good = craft_chain(100, |_, _| {}, |_, _| {});
    assert_eq!(assert_accepts(&good, true).len(), 100);
    let list = craft_chain(
        100,
        |_, _| {},
        |i, sig| {
            if i == 57 {
                sig[50] ^= 0x80;
            }
        },
    );
    assert_rejects(&list, false, ErrorKind::BadSignature, 57);
    // Several bad ones: the first is named.
    let list = craft_chain(
        100,
        |_, _| {},
        |i, sig| {
            if i == 57 || i == 80 || i == 99 {
                sig[50] ^= 0x80;
            }
        },
    );
    assert_rejects(&list, true, ErrorKind::BadSignature, 57);
    // First and last positions.
    for bad in [0usize, 99] {
        let list = craft_chain(
            100,
            |_, _| {},
            |i, sig| {
                if i == bad {
                    sig[40] ^= 4;
                }
            },
        );
        assert_rejects(&list, false, ErrorKind::BadSignature, bad);
    }
}

#[test]
fn api_built_passport_bad_signature_at_57() {
    // Same through the public API: flip one signature bit in place; the
    // child's parent hash then dangles, but the signature error comes first.
    let p = linear_passport(100);
    let mut list = jws_list(&p);
    let (input, sig) = list[57].rsplit_once('.').unwrap();
    let mut bytes = b64url_decode(sig).unwrap();
    bytes[60] ^= 1;
    list[57] = format!("{input}.{}", b64url_encode(&bytes));
    assert_rejects(&list, false, ErrorKind::BadSignature, 57);
}

// ---------------------------------- no entry is accepted without its signature

/// Replaces byte `pos` of the signature segment of `jws` with `with`.
fn replace_sig_byte(jws: &str, pos: usize, with: u8) -> String {
    let dot = jws.rfind('.').unwrap();
    let mut bytes = jws.as_bytes().to_vec();
    bytes[dot + 1 + pos] = with;
    String::from_utf8(bytes).unwrap()
}

const B64URL: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

#[test]
fn every_signature_byte_of_one_entry_matters() {
    let p = linear_passport(30);
    let list = jws_list(&p);
    assert_accepts(&list, true);
    // A "random" entry, chosen from the passport's own bytes.
    let target = usize::from(p.entries()[0].hash().as_bytes()[0]) % 30;
    let sig_len = list[target].len() - list[target].rfind('.').unwrap() - 1;
    assert_eq!(sig_len, 86);
    for pos in 0..sig_len {
        let original = list[target].as_bytes()[list[target].rfind('.').unwrap() + 1 + pos];
        // One substitute per position (debug-build Ed25519 is slow), at a
        // position-dependent distance in the alphabet so that near and far
        // characters, and both trailing-bit cases of the last one, are tried.
        let at = B64URL.iter().position(|c| *c == original).unwrap();
        let with = B64URL[(at + 1 + (pos * 7) % 63) % 64];
        let mut bad = list.clone();
        bad[target] = replace_sig_byte(&list[target], pos, with);
        let err = verify_list(&bad, false).unwrap_err();
        assert_eq!(err.index(), Some(target), "entry {target} pos {pos} -> {}: {err}", char::from(with));
        assert!(
            matches!(err.kind(), ErrorKind::BadSignature | ErrorKind::MalformedSignature | ErrorKind::Base64),
            "entry {target} pos {pos}: unexpected {err}"
        );
    }
}

#[test]
fn every_entry_signature_is_checked() {
    let p = linear_passport(30);
    let list = jws_list(&p);
    for target in 0..list.len() {
        // Decoded-signature bit flip, alternately in s (BadSignature) and in
        // R (bad signature or malformed R).
        let (byte, bit) = if target % 2 == 0 { (32 + target % 31, 1u8) } else { (target % 32, 0x40) };
        let (input, sig) = list[target].rsplit_once('.').unwrap();
        let mut bytes = b64url_decode(sig).unwrap();
        bytes[byte] ^= bit;
        let mut bad = list.clone();
        bad[target] = format!("{input}.{}", b64url_encode(&bytes));
        let err = verify_list(&bad, true).unwrap_err();
        assert_eq!(err.index(), Some(target), "entry {target} byte {byte}: {err}");
        assert!(matches!(err.kind(), ErrorKind::BadSignature | ErrorKind::MalformedSignature), "{err}");
        // And the signature of another entry in its place.
        let mut bad = list.clone();
        let other_sig = list[(target + 1) % list.len()].rsplit_once('.').unwrap().1.to_owned();
        bad[target] = format!("{}.{other_sig}", list[target].rsplit_once('.').unwrap().0);
        let err = verify_list(&bad, false).unwrap_err();
        assert_eq!((err.kind(), err.index()), (ErrorKind::BadSignature, Some(target)), "{err}");
    }
}
