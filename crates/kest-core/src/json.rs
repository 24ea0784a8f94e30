//! Strict JSON parsing and RFC 8785 canonicalization.
//!
//! `serde_json` silently keeps the last of two members with the same name and
//! has no configurable nesting limit. Signed payloads must not be ambiguous,
//! so [`parse_strict`] drives `serde_json` with a visitor that rejects
//! duplicate member names and nesting deeper than a caller-chosen limit.
//! Canonicalization is delegated to the maintained
//! [`serde_json_canonicalizer`] crate (checked against the RFC 8785 vectors
//! in `testvectors/rfc8785`).

use std::cell::Cell;
use std::fmt;

use serde::Serialize;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Why a JSON document was refused by [`parse_strict`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JsonError {
    /// An object names the same member twice.
    #[error("duplicate member `{0}`")]
    DuplicateMember(String),
    /// Arrays and objects nest deeper than the limit.
    #[error("nesting deeper than {0} levels")]
    TooDeep(usize),
    /// The bytes are not a single well-formed JSON value.
    #[error("invalid JSON: {0}")]
    Syntax(String),
}

/// Parses one JSON value, rejecting duplicate member names and nesting
/// deeper than `max_depth` arrays/objects.
///
/// ```
/// use kest_core::json::{parse_strict, JsonError};
/// assert!(parse_strict(br#"{"a":[1,{"b":2}]}"#, 8).is_ok());
/// assert_eq!(
///     parse_strict(br#"{"a":1,"a":2}"#, 8),
///     Err(JsonError::DuplicateMember("a".into()))
/// );
/// assert_eq!(parse_strict(b"[[[1]]]", 2), Err(JsonError::TooDeep(2)));
/// ```
pub fn parse_strict(bytes: &[u8], max_depth: usize) -> Result<Value, JsonError> {
    let failure = Cell::new(None);
    let mut de = serde_json::Deserializer::from_slice(bytes);
    // serde_json's own limit (128) stays on as a backstop for stack safety.
    let seed = StrictSeed { depth: 0, max_depth, failure: &failure };
    let value = seed
        .deserialize(&mut de)
        .map_err(|e| failure.take().unwrap_or_else(|| JsonError::Syntax(e.to_string())))?;
    de.end().map_err(|e| JsonError::Syntax(e.to_string()))?;
    Ok(value)
}

/// Walks the document; a refusal is stored in `failure` (typed) and
/// reported to serde as an opaque custom error that aborts parsing.
#[derive(Clone, Copy)]
struct StrictSeed<'f> {
    depth: usize,
    max_depth: usize,
    failure: &'f Cell<Option<JsonError>>,
}

impl StrictSeed<'_> {
    fn fail<E: de::Error>(&self, error: JsonError) -> E {
        let message = error.to_string();
        self.failure.set(Some(error));
        E::custom(message)
    }

    fn nested<E: de::Error>(&self) -> Result<Self, E> {
        let depth = self.depth + 1;
        if depth > self.max_depth {
            return Err(self.fail(JsonError::TooDeep(self.max_depth)));
        }
        Ok(StrictSeed { depth, ..*self })
    }
}

impl<'de> DeserializeSeed<'de> for StrictSeed<'_> {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StrictSeed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        serde_json::Number::from_f64(v).map(Value::Number).ok_or_else(|| E::custom("non-finite number"))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(self.nested()?)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut members = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            // One lookup per member: the slot found free is filled.
            match members.entry(key) {
                serde_json::map::Entry::Occupied(taken) => {
                    return Err(self.fail(JsonError::DuplicateMember(taken.key().clone())));
                }
                serde_json::map::Entry::Vacant(slot) => {
                    slot.insert(map.next_value_seed(self.nested()?)?);
                }
            }
        }
        Ok(Value::Object(members))
    }
}

/// Largest integer magnitude a JSON number can have and still be written
/// by RFC 8785 (which goes through IEEE doubles) exactly as `serde_json`
/// writes it.
const EXACT_INTEGER_LIMIT: u64 = 1 << 53;

/// Whether a key sorts the same by UTF-8 bytes (`serde_json`'s maps) and
/// by UTF-16 code units (RFC 8785): true when it has no character at or
/// above U+E000.
pub fn key_is_simple(key: &str) -> bool {
    !key.chars().any(|c| c >= '\u{E000}')
}

/// Whether `serde_json`'s compact output of `value` is already its RFC 8785
/// form: integers only (magnitude ≤ 2^53), simple keys throughout, and
/// every object's members iterating in sorted order.
/// String escaping is the same in both (ECMAScript `JSON.stringify` and
/// `serde_json` escape exactly `"`, `\` and control characters, with the
/// same short forms and lowercase `\u00xx`).
pub fn is_jcs_simple(value: &Value) -> bool {
    match value {
        Value::Null | Value::Bool(_) | Value::String(_) => true,
        Value::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => u <= EXACT_INTEGER_LIMIT,
            (None, Some(i)) => i.unsigned_abs() <= EXACT_INTEGER_LIMIT,
            _ => false,
        },
        Value::Array(items) => items.iter().all(is_jcs_simple),
        // Members must already iterate in sorted order: with serde_json's
        // `preserve_order` feature (which any crate in a build can turn on)
        // a map keeps insertion order, and its output would not be sorted.
        Value::Object(map) => {
            map.keys().zip(map.keys().skip(1)).all(|(a, b)| a < b)
                && map.iter().all(|(k, v)| key_is_simple(k) && is_jcs_simple(v))
        }
    }
}

/// RFC 8785 bytes of a parsed value: plain `serde_json` output when
/// [`is_jcs_simple`] holds (several times faster), the full canonicalizer
/// otherwise.
pub fn canonicalize_value(value: &Value) -> Result<Vec<u8>, CanonicalizeError> {
    if is_jcs_simple(value) {
        serde_json::to_vec(value).map_err(|e| CanonicalizeError(e.to_string()))
    } else {
        canonicalize(value)
    }
}

/// Whether `bytes` are exactly the RFC 8785 form of `value` (parsed from
/// them): compared while serializing, without building a copy, when
/// [`is_jcs_simple`] holds; through the full canonicalizer otherwise.
pub fn is_canonical(value: &Value, bytes: &[u8]) -> bool {
    if is_jcs_simple(value) {
        let mut rest = Expect(bytes);
        serde_json::to_writer(&mut rest, value).is_ok() && rest.0.is_empty()
    } else {
        canonicalize(value).is_ok_and(|c| c == bytes)
    }
}

/// A writer that accepts only the bytes it still expects.
struct Expect<'a>(&'a [u8]);

impl std::io::Write for Expect<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self.0.strip_prefix(buf) {
            Some(rest) => {
                self.0 = rest;
                Ok(buf.len())
            }
            None => Err(std::io::Error::other("not the expected bytes")),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Serializes `value` as RFC 8785 canonical JSON (UTF-8 bytes).
///
/// ```
/// let v = serde_json::json!({"b": 2, "a": 1});
/// assert_eq!(kest_core::json::canonicalize(&v).unwrap(), br#"{"a":1,"b":2}"#);
/// ```
pub fn canonicalize<T: Serialize>(value: &T) -> Result<Vec<u8>, CanonicalizeError> {
    serde_json_canonicalizer::to_vec(value).map_err(|e| CanonicalizeError(e.to_string()))
}

/// A value could not be expressed as canonical JSON (for example a
/// non-finite float).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot canonicalize: {0}")]
pub struct CanonicalizeError(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_path_agrees_with_the_canonicalizer() {
        let docs = [
            r#"{"b":[1,-2,{"z":null,"a":true}],"a":"x\u0001\n\"\\/é😀","c":9007199254740992}"#,
            r#"{"\u00e9":1,"e":2,"\ud7ff":3,"A":4}"#,
            r#"[]"#,
            r#"{"n":-9007199254740992}"#,
        ];
        // Whatever the map implementation (serde_json's `preserve_order`
        // keeps insertion order), both paths give the same bytes.
        for doc in docs {
            let v: Value = serde_json::from_str(doc).unwrap_or(Value::Null);
            assert_eq!(canonicalize_value(&v).ok(), canonicalize(&v).ok(), "{doc}");
            let canonical = canonicalize(&v).unwrap_or_default();
            assert!(is_canonical(&v, &canonical), "{doc}");
            assert!(!is_canonical(&v, doc.as_bytes()) || doc.as_bytes() == canonical, "{doc}");
            assert!(!is_canonical(&v, &canonical[..canonical.len() - 1]), "{doc}");
            assert!(!is_canonical(&v, &[canonical.as_slice(), b" "].concat()), "{doc}");
        }
        let sorted: Value =
            serde_json::from_str(r#"{"a":[{"b":null,"c":-1}],"d":"é"}"#).unwrap_or(Value::Null);
        assert!(is_jcs_simple(&sorted));
        let unsorted: Value = serde_json::from_str(r#"{"b":1,"a":2}"#).unwrap_or(Value::Null);
        assert_eq!(canonicalize_value(&unsorted).ok(), Some(br#"{"a":2,"b":1}"#.to_vec()));
        for doc in [r#"{"x":1.5}"#, r#"{"x":9007199254740993}"#, r#"{"\uffff":1,"\ud83d\ude00":2}"#] {
            let v: Value = serde_json::from_str(doc).unwrap_or(Value::Null);
            assert!(!is_jcs_simple(&v), "{doc}");
            assert_eq!(canonicalize_value(&v).ok(), canonicalize(&v).ok(), "{doc}");
        }
    }
}
