//! The fuzz target bodies, as plain functions over `&[u8]`.
//!
//! Included by the `kest-fuzz` crate (`fuzz/src/lib.rs`, driven by
//! libFuzzer) and by `benches/tests/fuzz_smoke.rs` (a seeded, deterministic
//! run on stable), so it may depend only on `std`, `kest_core` and
//! `serde_json` (and the CLI's renderers, `crates/kest-cli/src/render.rs`,
//! which the includer mounts as `crate::render`). Each function panics when an invariant is broken and
//! otherwise returns whether kest-core accepted the input (so a harness can
//! tell how deep its inputs get).

use std::sync::OnceLock;

use kest_core::json::{canonicalize, parse_strict};
use kest_core::jws::decode_compact;
use kest_core::{Ed25519Signer, KestEntry, KeySet, Limits, Signer, UnverifiedPassport, Verifier};
use serde_json::Value;

/// Nesting limit used by every target (the verifier's default).
pub const MAX_DEPTH: usize = 64;

/// The principals and seeds of the fixed key set. The seed corpus under
/// `fuzz/seeds/` is signed with these keys, so mutated seeds reach the
/// linkage, semantic and signature checks.
pub const SIGNERS: [(&str, [u8; 32]); 2] =
    [("spiffe://fuzz.example/a", [0x11; 32]), ("spiffe://fuzz.example/b", [0x22; 32])];

/// The signers behind the fixed key set.
pub fn signers() -> Vec<Ed25519Signer> {
    SIGNERS.iter().map(|(principal, seed)| Ed25519Signer::from_seed(*principal, *seed)).collect()
}

/// The fixed key set: the public keys of [`signers`].
pub fn key_set() -> KeySet {
    let mut keys = KeySet::new();
    for signer in signers() {
        let Some(key) = signer.public_key() else { panic!("in-memory signer without public key") };
        if let Err(e) = keys.insert(signer.principal(), key) {
            panic!("fixed key set: {e}");
        }
    }
    keys
}

fn verifiers() -> &'static (Verifier, Verifier) {
    static VERIFIERS: OnceLock<(Verifier, Verifier)> = OnceLock::new();
    VERIFIERS.get_or_init(|| {
        let keys = key_set();
        (Verifier::new(keys.clone()), Verifier::new(keys).semantic(true))
    })
}

/// `jws_decode`: `kest_core::jws::decode_compact` on arbitrary UTF-8, then
/// `KestEntry::from_json` on an accepted payload.
///
/// Invariants: an accepted JWS has its signing input followed by `.`, a
/// payload that is a JSON object whose canonical form is exactly the
/// signed payload bytes.
pub fn jws_decode(data: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(data) else { return false };
    let Ok(decoded) = decode_compact(text, MAX_DEPTH) else { return false };
    assert!(decoded.signing_input_len < text.len(), "signing input covers the whole JWS");
    assert_eq!(text.as_bytes()[decoded.signing_input_len], b'.', "signing input not followed by `.`");
    assert_eq!(text.matches('.').count(), 2, "accepted a JWS without exactly three segments");
    assert!(decoded.payload.is_object(), "accepted a non-object payload");
    match canonicalize(&decoded.payload) {
        Ok(canonical) => assert_eq!(canonical, decoded.payload_bytes, "accepted a non-canonical payload"),
        Err(e) => panic!("accepted payload cannot be re-canonicalized: {e}"),
    }
    if let Ok(entry) = KestEntry::from_json(decoded.payload) {
        assert!(!entry.principal().is_empty(), "accepted an entry without principal");
        assert!(entry.trust_score <= 100, "accepted trust_score {}", entry.trust_score);
        // The typed entry serializes back to a canonical payload that
        // decodes to the same entry.
        let bytes = match canonicalize(&entry) {
            Ok(b) => b,
            Err(e) => panic!("decoded entry cannot be canonicalized: {e}"),
        };
        let value = match parse_strict(&bytes, MAX_DEPTH) {
            Ok(v) => v,
            Err(e) => panic!("canonical entry does not parse: {e}"),
        };
        match KestEntry::from_json(value) {
            Ok(again) => assert_eq!(again, entry, "entry changed through canonicalization"),
            Err(e) => panic!("canonical entry no longer decodes: {e}"),
        }
    }
    true
}

/// `passport_verify`: `UnverifiedPassport::from_json` and
/// `Verifier::verify_json` (semantic off and on) with the fixed key set on
/// arbitrary UTF-8.
///
/// Invariants: the unverified form round-trips through `to_json`;
/// `verify_json` accepts only what `from_json` parses and agrees with
/// `verify` on it (same error kind and index); an accepted passport keeps
/// its entries in order, re-verifies from its own serialization and has
/// tips; the semantic verifier accepts nothing the plain one refuses.
pub fn passport_verify(data: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(data) else { return false };
    let limits = Limits::default();
    let parsed = UnverifiedPassport::from_json(text, &limits);
    if let Ok(p) = &parsed {
        match UnverifiedPassport::from_json(&p.to_json(), &limits) {
            Ok(again) => assert_eq!(&again, p, "unverified passport changed through to_json"),
            Err(e) => panic!("re-serialized unverified passport refused: {e}"),
        }
    }
    let (plain, semantic) = verifiers();
    let result = plain.verify_json(text);
    let semantic_result = semantic.verify_json(text);
    if semantic_result.is_ok() {
        assert!(result.is_ok(), "semantic verifier accepted what the plain one refused: {:?}", result.err());
    }
    match (&result, &parsed) {
        (Ok(_), Err(e)) => panic!("verify_json accepted a passport from_json refuses: {e}"),
        (Err(err), Ok(p)) => match plain.verify(p) {
            Ok(_) => panic!("verify accepted what verify_json refused: {err}"),
            Err(again) => {
                assert_eq!(again.kind(), err.kind(), "verify and verify_json disagree");
                assert_eq!(again.index(), err.index(), "verify and verify_json blame different entries");
            }
        },
        _ => {}
    }
    if let Err(err) = &result {
        // Errors render (Display must not panic on hostile content).
        let _ = err.to_string();
    }
    let (Ok(verified), Ok(p)) = (result, parsed) else { return false };
    assert_eq!(verified.len(), p.len(), "entry count changed by verification");
    for (entry, jws) in verified.entries().iter().zip(p.entries()) {
        assert_eq!(entry.jws(), jws.as_str(), "entry order or content changed by verification");
    }
    assert_eq!(verified.tips().is_empty(), verified.is_empty(), "a non-empty passport without tips");
    match plain.verify_json(&verified.to_json()) {
        Ok(again) => assert_eq!(again.len(), verified.len(), "re-verification changed the entry count"),
        Err(e) => panic!("a verified passport's own serialization is refused: {e}"),
    }
    true
}

/// `canonicalize_roundtrip`: `parse_strict`, then `canonicalize`, then
/// `parse_strict` again.
///
/// Invariants: the canonical text parses (within the same depth limit) to
/// a value equal to the original — numbers compared as the IEEE doubles JCS
/// defines them to be — and canonicalizing that value gives the same bytes
/// again (canonical form is a fixed point, which the verifier relies on).
pub fn canonicalize_roundtrip(data: &[u8]) -> bool {
    let Ok(value) = parse_strict(data, MAX_DEPTH) else { return false };
    // A value outside JCS's domain may be refused; it is then refused
    // everywhere (decode_compact fails closed on it).
    let Ok(canonical) = canonicalize(&value) else { return false };
    assert!(std::str::from_utf8(&canonical).is_ok(), "canonical form is not UTF-8");
    let reparsed = match parse_strict(&canonical, MAX_DEPTH) {
        Ok(v) => v,
        Err(e) => panic!("canonical form does not parse: {e}: {}", String::from_utf8_lossy(&canonical)),
    };
    assert!(
        same_json(&value, &reparsed),
        "canonical form parses to a different value: {}",
        String::from_utf8_lossy(&canonical)
    );
    match canonicalize(&reparsed) {
        Ok(again) => assert_eq!(again, canonical, "canonicalization is not idempotent"),
        Err(e) => panic!("canonical form cannot be canonicalized again: {e}"),
    }
    true
}

/// JSON equality with numbers compared as IEEE doubles (the JCS data
/// model): `1.0` and `1`, or `-0` and `0`, are the same number.
pub fn same_json(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Null, Value::Null) => true,
        (Value::Bool(x), Value::Bool(y)) => x == y,
        (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) => x == y,
            _ => x == y,
        },
        (Value::String(x), Value::String(y)) => x == y,
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_json(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same_json(v, w)))
        }
        _ => false,
    }
}

/// `baggage_parse`: a raw `baggage` header value through the W3C Baggage
/// parser and the passport unpacking of SPEC §7.3. Invariants: an accepted
/// header re-serializes and re-parses to the same members; unpacking never
/// yields a passport that is not a JSON array of strings.
pub fn baggage_parse(data: &[u8]) -> bool {
    use kest_core::baggage::{Baggage, PackOptions, PassportSource, unpack};
    let Ok(text) = std::str::from_utf8(data) else { return false };
    let Ok(baggage) = Baggage::parse(text) else { return false };
    let header = match baggage.to_header() {
        Ok(h) => h,
        Err(_) => return false,
    };
    let again = match Baggage::parse(&header) {
        Ok(b) => b,
        Err(e) => panic!("re-serialized baggage does not parse: {e}: {header:?}"),
    };
    assert_eq!(again.len(), baggage.len(), "member count changed through to_header");
    for member in baggage.members() {
        assert_eq!(again.get(member.key()), baggage.get(member.key()), "value of {} changed", member.key());
    }
    let options = PackOptions { max_inflated_bytes: 1 << 20, ..PackOptions::default() };
    if let Ok(PassportSource::Json(json)) = unpack(&baggage, &options) {
        let parsed: Result<Vec<String>, _> = serde_json::from_str(&json);
        assert!(parsed.is_ok(), "unpacked passport is not a JSON array of strings");
    }
    true
}

/// `render`: the `kest viz` and `kest inspect` renderers (tree, Mermaid,
/// dot, HTML, inspect text and JSON) over arbitrary UTF-8 taken as an
/// unverified passport.
///
/// Invariants: nothing panics (no byte slicing of hostile strings, no
/// unbounded recursion); a passport document yields six outputs, all but
/// the tree non-empty, the tree having one line per entry.
pub fn render(data: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(data) else { return false };
    let Some(outputs) = crate::render::render_all(text) else { return false };
    assert_eq!(outputs.len(), 6, "every renderer ran");
    // The tree of an empty passport is empty; every other format has a frame.
    assert!(outputs.iter().skip(1).all(|o| !o.is_empty()), "a renderer printed nothing");
    let entries = UnverifiedPassport::from_json(text, &Limits::default()).map_or(0, |p| p.len());
    let lines = outputs.first().map_or(0, |tree| tree.lines().count());
    assert_eq!(lines, entries, "the tree has one line per entry");
    true
}
