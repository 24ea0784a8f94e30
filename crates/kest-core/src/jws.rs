//! JWS compact serialization (RFC 7515) with EdDSA (RFC 8037).

use serde_json::Value;

use crate::encoding::b64url_decode;
use crate::error::{EntryError, FieldError, Segment};
use crate::json::parse_strict;

/// The protected header members this crate understands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwsHeader {
    /// `alg` (required).
    pub alg: String,
    /// `kid`, when present (tolerated absent on input).
    pub kid: Option<String>,
}

/// Writes the protected header exactly as the reference does:
/// `{"alg":"<alg>","kid":"<kid>","typ":"JWS"}` with keys sorted, no
/// whitespace and non-ASCII characters escaped as `\uXXXX` (Python's
/// `json.dumps(..., sort_keys=True, separators=(",", ":"))`).
///
/// ```
/// assert_eq!(
///     kest_core::jws::header_json("EdDSA", "spiffe://a/b"),
///     r#"{"alg":"EdDSA","kid":"spiffe://a/b","typ":"JWS"}"#
/// );
/// assert_eq!(kest_core::jws::header_json("EdDSA", "é"), r#"{"alg":"EdDSA","kid":"\u00e9","typ":"JWS"}"#);
/// ```
pub fn header_json(alg: &str, kid: &str) -> String {
    format!(r#"{{"alg":{},"kid":{},"typ":"JWS"}}"#, ascii_json_string(alg), ascii_json_string(kid))
}

/// A JSON string literal escaped like Python's `json.dumps` with
/// `ensure_ascii=True`.
fn ascii_json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            _ => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
        }
    }
    out.push('"');
    out
}

/// The three decoded segments of a compact JWS, validated structurally
/// (not yet cryptographically).
#[derive(Debug, Clone)]
pub struct DecodedJws {
    /// Protected header.
    pub header: JwsHeader,
    /// Payload parsed as strict JSON (not yet checked as a `KestEntry`).
    pub payload: Value,
    /// The exact payload bytes that were signed.
    pub payload_bytes: Vec<u8>,
    /// Byte length of `header.payload`, the signing input prefix of the
    /// compact string.
    pub signing_input_len: usize,
    /// The signature bytes (an Ed25519 signature is 64 bytes; the length is
    /// checked once the key, and so the algorithm, is known).
    pub signature: Vec<u8>,
}

/// Splits and decodes a compact JWS: exactly three segments, strict
/// unpadded base64url, header and payload strict JSON objects (no duplicate
/// members, bounded nesting), header `alg` a string and `kid` a string when
/// present, payload bytes in RFC 8785 canonical form.
pub fn decode_compact(jws: &str, max_depth: usize) -> Result<DecodedJws, EntryError> {
    let mut parts = jws.split('.');
    let (Some(h64), Some(p64), Some(s64), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(EntryError::SegmentCount(jws.split('.').count()));
    };
    let header_bytes = b64url_decode(h64).map_err(|_| EntryError::Base64(Segment::Header))?;
    let payload_bytes = b64url_decode(p64).map_err(|_| EntryError::Base64(Segment::Payload))?;
    let sig_bytes = b64url_decode(s64).map_err(|_| EntryError::Base64(Segment::Signature))?;

    let header = parse_header(&header_bytes, max_depth)?;
    let payload = parse_strict(&payload_bytes, max_depth)
        .map_err(|source| EntryError::Json { segment: Segment::Payload, source })?;
    if !payload.is_object() {
        return Err(EntryError::NotObject(Segment::Payload));
    }
    if !crate::json::is_canonical(&payload, &payload_bytes) {
        return Err(EntryError::NotCanonical);
    }
    Ok(DecodedJws {
        header,
        payload,
        payload_bytes,
        signing_input_len: h64.len() + 1 + p64.len(),
        signature: sig_bytes,
    })
}

fn parse_header(bytes: &[u8], max_depth: usize) -> Result<JwsHeader, EntryError> {
    let value = parse_strict(bytes, max_depth)
        .map_err(|source| EntryError::Json { segment: Segment::Header, source })?;
    let Value::Object(obj) = value else {
        return Err(EntryError::NotObject(Segment::Header));
    };
    let field = |source| EntryError::Field { segment: Segment::Header, source };
    let alg = match obj.get("alg") {
        Some(Value::String(a)) => a.clone(),
        Some(_) => return Err(field(FieldError::WrongType { name: "alg".into(), expected: "a string" })),
        None => return Err(field(FieldError::Missing("alg".into()))),
    };
    let kid = match obj.get("kid") {
        None => None,
        Some(Value::String(k)) => Some(k.clone()),
        Some(_) => return Err(field(FieldError::WrongType { name: "kid".into(), expected: "a string" })),
    };
    // Critical extensions we do not implement must not be ignored (RFC 7515 §4.1.11).
    if obj.contains_key("crit") {
        return Err(field(FieldError::Invalid {
            name: "crit".into(),
            reason: "critical header extensions are not supported".into(),
        }));
    }
    Ok(JwsHeader { alg, kid })
}

/// Assembles `BASE64URL(header) "." BASE64URL(payload)`, the signing input.
pub fn signing_input(header_json: &str, payload: &[u8]) -> String {
    use base64::Engine as _;
    let engine = &base64::engine::general_purpose::URL_SAFE_NO_PAD;
    // One buffer, sized for the signature segment that is appended later.
    let mut out = String::with_capacity((header_json.len() + payload.len() + 64) * 4 / 3 + 8);
    engine.encode_string(header_json.as_bytes(), &mut out);
    out.push('.');
    engine.encode_string(payload, &mut out);
    out
}
