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
            if members.contains_key(&key) {
                return Err(self.fail(JsonError::DuplicateMember(key)));
            }
            let value = map.next_value_seed(self.nested()?)?;
            members.insert(key, value);
        }
        Ok(Value::Object(members))
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
