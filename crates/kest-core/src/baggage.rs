//! W3C Baggage codec and passport packing (SPEC §7.2–§7.4). Pure: no I/O,
//! no async.
//!
//! # The `baggage` header
//!
//! [`Baggage`] is the ordered list of members of a
//! [W3C Baggage](https://www.w3.org/TR/baggage/) header. [`Baggage::parse`]
//! reads the grammar
//!
//! ```text
//! baggage-string = list-member *( OWS "," OWS list-member )
//! list-member    = key OWS "=" OWS value *( OWS ";" OWS property )
//! property       = key OWS "=" OWS value / key OWS
//! key            = token                       ; RFC 7230 §3.2.6
//! value          = *baggage-octet              ; %x21 / %x23-2B / %x2D-3A / %x3C-5B / %x5D-7E
//! OWS            = *( SP / HTAB )
//! ```
//!
//! strictly, and fails closed with a precise [`BaggageError`]:
//!
//! - the header must be at most [`BaggageLimits::max_bytes`] bytes (default
//!   8192) and hold at most [`BaggageLimits::max_members`] members (default
//!   64); the same limits apply when writing with [`Baggage::to_header`];
//! - an empty or all-whitespace header is an empty baggage, but an empty
//!   member (`a=1,,b=2`, a trailing `,`) is an error;
//! - values are percent-decoded; a `%` not followed by two hex digits, or
//!   escapes that decode to invalid UTF-8, are errors (W3C asks for U+FFFD
//!   replacement; Kest refuses instead, so nothing is silently altered);
//! - properties are validated and kept as raw strings (trimmed of OWS);
//! - a key of the reserved `kest.` namespace may appear only once; other
//!   keys may repeat (W3C allows it), [`Baggage::get`] returns the first.
//!
//! Members that were parsed and not changed are written back byte for byte,
//! in their original order, so members put in the header by other systems
//! pass through untouched. New values are percent-encoded: every byte outside
//! the baggage-octet set (controls, space, `"`, `,`, `;`, `\`, non-ASCII) and
//! `%` itself.
//!
//! ## Tolerated raw JSON (the reference's `kest.passport`)
//!
//! The Python reference writes the passport JSON into the header unencoded,
//! e.g. `kest.passport=["a.b.c", "d.e.f"]`, whose `,` and space break the
//! grammar. Exactly this form is accepted, and nothing else:
//!
//! - the member's key is exactly `kest.passport` (OWS allowed around `=`);
//! - its value starts with `[`, and the bytes from that `[` form one complete
//!   JSON **array of strings** (any JSON whitespace and string escapes, as
//!   `serde_json` reads them; the array ends at its matching `]`);
//! - after the `]` come only OWS and then `,` or the end of the header (no
//!   properties).
//!
//! The member's value is then the JSON text from `[` to `]`, byte for byte.
//! This cannot be confused with a well-formed value: apart from `[]` (which
//! means the same either way) every JSON array of strings contains `"`, which
//! is not a baggage-octet. When the value starts with `[` but is neither a
//! raw JSON array of strings so delimited nor a well-formed value, parsing
//! fails with [`BaggageError::BadRawJson`]. Such a member is re-encoded
//! (percent-encoded) when written.
//!
//! # Packing a passport
//!
//! [`pack`] chooses one of three tiers (SPEC §7.3) and [`unpack`] reads them
//! back in the order claim check, compressed, inline; see [`Packed`] and
//! [`PassportSource`]. [`format_chain_tip`] and [`parse_chain_tip`] handle
//! `kest.chain_tip`.

use std::fmt;
use std::io::{Read, Write};
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
use flate2::Compression;
use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};
use uuid::Uuid;

use crate::hash::EntryHash;

/// Baggage key of an inline passport: a JSON array of JWS strings.
pub const KEST_PASSPORT: &str = "kest.passport";
/// Baggage key of a compressed passport: zlib, then base64url without
/// padding.
pub const KEST_PASSPORT_Z: &str = "kest.passport_z";
/// Baggage key of a claim check: a UUID naming the cache entry
/// `kest.claim.<uuid>` (see [`claim_key`]).
pub const KEST_CLAIM_CHECK: &str = "kest.claim_check";
/// Baggage key of the chain tips: comma-separated lowercase hex entry
/// hashes, `"0"` for none (see [`format_chain_tip`]).
pub const KEST_CHAIN_TIP: &str = "kest.chain_tip";
/// Baggage key of the end user on whose behalf the flow runs.
pub const KEST_USER: &str = "kest.user";
/// Baggage key of the agent (workload) acting in the flow.
pub const KEST_AGENT: &str = "kest.agent";
/// Baggage key of the task (the OAuth scope in the reference).
pub const KEST_TASK: &str = "kest.task";
/// Baggage key of the raw JWT the identity came from.
pub const KEST_JWT: &str = "kest.jwt";
/// Prefix of the cache key under which a claim-checked passport is stored.
pub const CLAIM_KEY_PREFIX: &str = "kest.claim.";
/// Keys in this namespace may appear at most once in a header.
pub const RESERVED_PREFIX: &str = "kest.";

/// Default packing threshold in bytes (SPEC §7.3).
pub const DEFAULT_THRESHOLD: usize = 4096;
/// Default bound on an inflated `kest.passport_z` (64 MiB, the default
/// [`crate::Limits::max_passport_bytes`]).
pub const DEFAULT_MAX_INFLATED_BYTES: usize = 64 << 20;
/// zlib level used by [`pack`]: 1, as the reference's
/// `zlib.compress(data, level=1)`.
pub const COMPRESSION_LEVEL: u32 = 1;

/// Every byte outside the W3C baggage-octet set, plus `%`. (Non-ASCII bytes
/// are always encoded by [`utf8_percent_encode`].)
const VALUE_ENCODE_SET: &AsciiSet = &CONTROLS.add(b' ').add(b'"').add(b',').add(b';').add(b'\\').add(b'%');

/// Decodes base64url either unpadded or with the canonical `=` padding the
/// reference writes, and nothing else (no standard alphabet, no partial
/// padding, no stray trailing bits).
fn b64url_decode_any_padding(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    if text.ends_with('=') { URL_SAFE.decode(text) } else { URL_SAFE_NO_PAD.decode(text) }
}

/// Why a baggage header or a packed passport was refused. Every failure is
/// an error: nothing here ever yields an empty passport in place of a bad
/// one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BaggageError {
    /// The header is longer than [`BaggageLimits::max_bytes`].
    #[error("baggage is {size} bytes, above the limit of {limit}")]
    TooLarge {
        /// Size in bytes.
        size: usize,
        /// Configured limit.
        limit: usize,
    },
    /// More members than [`BaggageLimits::max_members`].
    #[error("baggage has {count} members, above the limit of {limit}")]
    TooManyMembers {
        /// Number of members.
        count: usize,
        /// Configured limit.
        limit: usize,
    },
    /// A list member does not follow the W3C grammar.
    #[error("baggage member {index}: {reason}")]
    BadMember {
        /// Zero-based position of the member in the header.
        index: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// A `kest.passport` value starting with `[` is neither a raw JSON array
    /// of strings ending at a member boundary nor a well-formed value.
    #[error("baggage member {index}: raw JSON kest.passport is not accepted: {reason}")]
    BadRawJson {
        /// Zero-based position of the member in the header.
        index: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// A value's percent-encoding is malformed or decodes to invalid UTF-8.
    #[error("baggage member {index} (`{key}`): bad percent-encoding: {reason}")]
    BadPercentEncoding {
        /// Zero-based position of the member in the header.
        index: usize,
        /// The member's key.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A key given to [`Baggage::set`] or [`Member::new`] is not an RFC 7230
    /// token.
    #[error("`{0}` is not a valid baggage key (an RFC 7230 token)")]
    BadKey(String),
    /// A key of the reserved `kest.` namespace appears twice in the header.
    #[error("baggage key `{0}` appears more than once")]
    DuplicateKey(String),
    /// `kest.passport_z` is not base64url.
    #[error("kest.passport_z is not base64url: {0}")]
    BadBase64(String),
    /// `kest.passport_z` does not inflate as one complete zlib stream.
    #[error("kest.passport_z does not inflate: {0}")]
    Inflate(String),
    /// `kest.passport_z` inflates to more than the configured bound.
    #[error("kest.passport_z inflates to more than {limit} bytes")]
    InflatedTooLarge {
        /// Configured bound ([`PackOptions::max_inflated_bytes`]).
        limit: usize,
    },
    /// A passport value is not a JSON array of strings.
    #[error("{key} is not a JSON array of strings: {reason}")]
    NotPassportArray {
        /// Where the passport came from: [`KEST_PASSPORT`],
        /// [`KEST_PASSPORT_Z`] or [`KEST_CLAIM_CHECK`].
        key: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// `kest.claim_check` is not a lowercase hyphenated UUID.
    #[error("kest.claim_check `{0}` is not a lowercase hyphenated UUID")]
    BadClaimCheck(String),
    /// `kest.chain_tip` is not `"0"` or comma-separated entry hashes.
    #[error("kest.chain_tip `{value}` is invalid: {reason}")]
    BadChainTip {
        /// The value as received.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// [`Packed::write_to`] was given [`Packed::NeedsClaimCheck`]: store the
    /// passport and use [`write_claim_check`] instead.
    #[error("the passport is too large for the header: store it and send a claim check")]
    ClaimCheckRequired,
}

/// Size limits of a baggage header, enforced by [`Baggage::parse_with`] and
/// [`Baggage::to_header_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BaggageLimits {
    /// Largest header in bytes (default 8192, the W3C minimum to propagate).
    pub max_bytes: usize,
    /// Most list members (default 64, the W3C minimum to propagate).
    pub max_members: usize,
}

impl Default for BaggageLimits {
    fn default() -> Self {
        BaggageLimits { max_bytes: 8192, max_members: 64 }
    }
}

/// One list member: key, percent-decoded value and raw properties.
///
/// ```
/// use kest_core::baggage::Member;
/// let m = Member::new("user", "Zoë, admin").unwrap();
/// assert_eq!(m.value(), "Zoë, admin");
/// assert!(m.properties().is_empty());
/// ```
#[derive(Debug, Clone)]
pub struct Member {
    key: String,
    value: String,
    properties: Vec<String>,
    /// The value exactly as received, when it was well-formed; written back
    /// unchanged.
    raw_value: Option<String>,
}

impl PartialEq for Member {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key && self.value == other.value && self.properties == other.properties
    }
}

impl Eq for Member {}

impl Member {
    /// A member without properties. Fails if `key` is not an RFC 7230 token.
    pub fn new(key: impl Into<String>, value: impl Into<String>) -> Result<Member, BaggageError> {
        let key = key.into();
        if !is_token(&key) {
            return Err(BaggageError::BadKey(key));
        }
        Ok(Member { key, value: value.into(), properties: Vec::new(), raw_value: None })
    }

    /// The key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The value, percent-decoded.
    pub fn value(&self) -> &str {
        &self.value
    }

    /// The properties as received (`name` or `name=value`, trimmed of OWS,
    /// not decoded), in order.
    pub fn properties(&self) -> &[String] {
        &self.properties
    }

    fn write(&self, out: &mut String) {
        out.push_str(&self.key);
        out.push('=');
        match &self.raw_value {
            Some(raw) => out.push_str(raw),
            None => out.extend(utf8_percent_encode(&self.value, VALUE_ENCODE_SET)),
        }
        for property in &self.properties {
            out.push(';');
            out.push_str(property);
        }
    }
}

/// An ordered W3C Baggage list.
///
/// ```
/// use kest_core::baggage::Baggage;
/// let mut baggage = Baggage::parse("vendor=a%2Cb;ttl=3, kest.user = alice").unwrap();
/// assert_eq!(baggage.get("vendor"), Some("a,b"));
/// assert_eq!(baggage.get("kest.user"), Some("alice"));
///
/// baggage.set("kest.user", "bob; the builder").unwrap();
/// baggage.set("kest.task", "read").unwrap();
/// assert_eq!(
///     baggage.to_header().unwrap(),
///     "vendor=a%2Cb;ttl=3,kest.user=bob%3B%20the%20builder,kest.task=read"
/// );
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Baggage {
    members: Vec<Member>,
}

impl Baggage {
    /// An empty list.
    pub fn new() -> Baggage {
        Baggage::default()
    }

    /// Parses a `baggage` header under the default [`BaggageLimits`]. See
    /// the [module documentation](self) for exactly what is accepted.
    pub fn parse(header: &str) -> Result<Baggage, BaggageError> {
        Baggage::parse_with(header, &BaggageLimits::default())
    }

    /// Parses a `baggage` header under `limits`.
    ///
    /// ```
    /// use kest_core::baggage::{Baggage, BaggageError, BaggageLimits};
    /// let limits = BaggageLimits { max_bytes: 8192, max_members: 1 };
    /// assert_eq!(
    ///     Baggage::parse_with("a=1,b=2", &limits),
    ///     Err(BaggageError::TooManyMembers { count: 2, limit: 1 })
    /// );
    /// ```
    pub fn parse_with(header: &str, limits: &BaggageLimits) -> Result<Baggage, BaggageError> {
        if header.len() > limits.max_bytes {
            return Err(BaggageError::TooLarge { size: header.len(), limit: limits.max_bytes });
        }
        let mut members: Vec<Member> = Vec::new();
        if trim_ows(header).is_empty() {
            return Ok(Baggage { members });
        }
        let mut pos = 0;
        loop {
            let index = members.len();
            let rest = &header[pos..];
            let (member, consumed) = match raw_json_passport(rest) {
                RawJson::Accepted { value, consumed } => (
                    Member {
                        key: KEST_PASSPORT.to_owned(),
                        value: value.to_owned(),
                        properties: Vec::new(),
                        raw_value: None,
                    },
                    consumed,
                ),
                attempt => {
                    let end = rest.find(',').unwrap_or(rest.len());
                    let member = match parse_member(&rest[..end], index) {
                        Ok(member) => member,
                        Err(strict) => match attempt {
                            RawJson::Rejected(reason) => {
                                return Err(BaggageError::BadRawJson { index, reason });
                            }
                            _ => return Err(strict),
                        },
                    };
                    (member, end)
                }
            };
            if member.key.starts_with(RESERVED_PREFIX) && members.iter().any(|m| m.key == member.key) {
                return Err(BaggageError::DuplicateKey(member.key));
            }
            members.push(member);
            pos += consumed;
            if pos >= header.len() {
                break;
            }
            // `consumed` always stops at a ',' when input remains.
            pos += 1;
        }
        if members.len() > limits.max_members {
            return Err(BaggageError::TooManyMembers { count: members.len(), limit: limits.max_members });
        }
        Ok(Baggage { members })
    }

    /// Writes the header under the default [`BaggageLimits`].
    pub fn to_header(&self) -> Result<String, BaggageError> {
        self.to_header_with(&BaggageLimits::default())
    }

    /// Writes the header (`key=value;prop` members joined by `,`, no
    /// whitespace), failing if it would break `limits`. Unchanged parsed
    /// members are written exactly as received; other values are
    /// percent-encoded.
    pub fn to_header_with(&self, limits: &BaggageLimits) -> Result<String, BaggageError> {
        if self.members.len() > limits.max_members {
            return Err(BaggageError::TooManyMembers {
                count: self.members.len(),
                limit: limits.max_members,
            });
        }
        let mut out = String::new();
        for (i, member) in self.members.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            member.write(&mut out);
        }
        if out.len() > limits.max_bytes {
            return Err(BaggageError::TooLarge { size: out.len(), limit: limits.max_bytes });
        }
        Ok(out)
    }

    /// The decoded value of the first member named `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.member(key).map(Member::value)
    }

    /// The first member named `key`.
    pub fn member(&self, key: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.key == key)
    }

    /// All members, in order.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// Sets `key` to `value` (without properties). An existing member is
    /// replaced in place (later members with the same key are dropped);
    /// otherwise the member is appended. Fails if `key` is not a token.
    ///
    /// ```
    /// use kest_core::baggage::Baggage;
    /// let mut baggage = Baggage::parse("a=1,b=2").unwrap();
    /// baggage.set("a", "3").unwrap();
    /// assert_eq!(baggage.to_header().unwrap(), "a=3,b=2");
    /// assert!(baggage.set("bad key", "x").is_err());
    /// ```
    pub fn set(&mut self, key: impl Into<String>, value: impl Into<String>) -> Result<(), BaggageError> {
        self.set_member(Member::new(key, value)?);
        Ok(())
    }

    /// Sets a whole member, with the placement rules of [`Baggage::set`].
    pub fn set_member(&mut self, member: Member) {
        match self.members.iter().position(|m| m.key == member.key) {
            Some(first) => {
                let mut i = 0;
                self.members.retain(|m| {
                    let keep = i <= first || m.key != member.key;
                    i += 1;
                    keep
                });
                if let Some(slot) = self.members.get_mut(first) {
                    *slot = member;
                }
            }
            None => self.members.push(member),
        }
    }

    /// Removes every member named `key`; returns the first one removed.
    pub fn remove(&mut self, key: &str) -> Option<Member> {
        let first = self.members.iter().position(|m| m.key == key)?;
        let removed = self.members.remove(first);
        self.members.retain(|m| m.key != key);
        Some(removed)
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether there are no members.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }
}

impl FromStr for Baggage {
    type Err = BaggageError;
    /// Same as [`Baggage::parse`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Baggage::parse(s)
    }
}

fn is_ows(c: char) -> bool {
    c == ' ' || c == '\t'
}

fn trim_ows(s: &str) -> &str {
    s.trim_matches(is_ows)
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_tchar)
}

fn is_baggage_octet(b: u8) -> bool {
    matches!(b, 0x21 | 0x23..=0x2B | 0x2D..=0x3A | 0x3C..=0x5B | 0x5D..=0x7E)
}

/// The first byte of `value` that is not a baggage-octet, described.
fn bad_octet(value: &str) -> Option<String> {
    value.bytes().position(|b| !is_baggage_octet(b)).map(|at| {
        let shown = value[at..].chars().next().map_or_else(String::new, |c| format!("{c:?}"));
        format!("value has {shown} at byte {at}, outside the baggage-octet set (percent-encode it)")
    })
}

/// Parses one member (the text between two commas) strictly.
fn parse_member(text: &str, index: usize) -> Result<Member, BaggageError> {
    let bad = |reason: String| BaggageError::BadMember { index, reason };
    if trim_ows(text).is_empty() {
        return Err(bad("empty member".into()));
    }
    let mut parts = text.split(';');
    let head = parts.next().unwrap_or_default();
    let (key, raw_value) =
        head.split_once('=').ok_or_else(|| bad(format!("`{}` has no '='", trim_ows(head))))?;
    let key = trim_ows(key);
    if !is_token(key) {
        return Err(bad(format!("key `{key}` is not an RFC 7230 token")));
    }
    let raw_value = trim_ows(raw_value);
    if let Some(reason) = bad_octet(raw_value) {
        return Err(bad(reason));
    }
    let value = percent_decode(raw_value).map_err(|reason| BaggageError::BadPercentEncoding {
        index,
        key: key.to_owned(),
        reason,
    })?;
    let mut properties = Vec::new();
    for property in parts {
        let property = trim_ows(property);
        let (name, pvalue) = match property.split_once('=') {
            Some((name, pvalue)) => (trim_ows(name), Some(trim_ows(pvalue))),
            None => (property, None),
        };
        if !is_token(name) {
            return Err(bad(format!("property key `{name}` is not an RFC 7230 token")));
        }
        if let Some(reason) = pvalue.and_then(bad_octet) {
            return Err(bad(format!("property `{name}`: {reason}")));
        }
        properties.push(property.to_owned());
    }
    Ok(Member { key: key.to_owned(), value, properties, raw_value: Some(raw_value.to_owned()) })
}

/// Strict percent-decoding: every `%` starts `%XX` (either case), and the
/// result is UTF-8.
fn percent_decode(raw: &str) -> Result<String, String> {
    let bytes = raw.as_bytes();
    for (at, _) in bytes.iter().enumerate().filter(|&(_, &b)| b == b'%') {
        let hex = |i: usize| bytes.get(i).is_some_and(u8::is_ascii_hexdigit);
        if !(hex(at + 1) && hex(at + 2)) {
            return Err(format!("'%' at byte {at} is not followed by two hex digits"));
        }
    }
    percent_decode_str(raw)
        .decode_utf8()
        .map(|v| v.into_owned())
        .map_err(|e| format!("decodes to invalid UTF-8 ({e})"))
}

/// Outcome of trying the reference's raw JSON `kest.passport` form.
enum RawJson<'a> {
    /// Not a `kest.passport=[` member: parse it strictly.
    NotApplicable,
    /// Raw JSON array of strings; `consumed` stops at the ',' or the end.
    Accepted { value: &'a str, consumed: usize },
    /// Looks like raw JSON but is not acceptable; parse strictly, and report
    /// this if that fails too.
    Rejected(String),
}

fn raw_json_passport(rest: &str) -> RawJson<'_> {
    let start = rest.len() - rest.trim_start_matches(is_ows).len();
    let Some(after_key) = rest[start..].strip_prefix(KEST_PASSPORT) else {
        return RawJson::NotApplicable;
    };
    let Some(after_eq) = after_key.trim_start_matches(is_ows).strip_prefix('=') else {
        return RawJson::NotApplicable;
    };
    let json = after_eq.trim_start_matches(is_ows);
    if !json.starts_with('[') {
        return RawJson::NotApplicable;
    }
    let json_start = rest.len() - json.len();
    let mut stream = serde_json::Deserializer::from_str(json).into_iter::<Vec<String>>();
    match stream.next() {
        Some(Ok(_)) => {}
        Some(Err(e)) => return RawJson::Rejected(format!("not a JSON array of strings ({e})")),
        None => return RawJson::Rejected("not a JSON array of strings".into()),
    }
    let json_end = json_start + stream.byte_offset();
    let tail = rest[json_end..].trim_start_matches(is_ows);
    if !(tail.is_empty() || tail.starts_with(',')) {
        return RawJson::Rejected("the JSON array must be followed by ',' or the end of the header".into());
    }
    RawJson::Accepted { value: &rest[json_start..json_end], consumed: rest.len() - tail.len() }
}

/// Options of [`pack`] and [`unpack`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackOptions {
    /// Largest inline or compressed value, in bytes (default 4096). Applies
    /// to the serialized JSON and to the base64url text, before
    /// percent-encoding.
    pub threshold: usize,
    /// Largest inflated `kest.passport_z` accepted by [`unpack`] (default
    /// 64 MiB). Inflation stops as soon as it is exceeded.
    pub max_inflated_bytes: usize,
}

impl Default for PackOptions {
    fn default() -> Self {
        PackOptions { threshold: DEFAULT_THRESHOLD, max_inflated_bytes: DEFAULT_MAX_INFLATED_BYTES }
    }
}

/// How a passport travels (SPEC §7.3), chosen by [`pack`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packed {
    /// The JSON itself, for [`KEST_PASSPORT`].
    Inline(String),
    /// zlib (level 1), then base64url without padding, for
    /// [`KEST_PASSPORT_Z`].
    Compressed(String),
    /// Too large even compressed: the caller stores the JSON in its cache
    /// under [`claim_key`] and sends [`KEST_CLAIM_CHECK`] (see
    /// [`write_claim_check`]); with no cache it must fail rather than send
    /// an oversized header.
    NeedsClaimCheck,
}

impl Packed {
    /// The baggage key this value goes under, if it goes in the header.
    pub fn key(&self) -> Option<&'static str> {
        match self {
            Packed::Inline(_) => Some(KEST_PASSPORT),
            Packed::Compressed(_) => Some(KEST_PASSPORT_Z),
            Packed::NeedsClaimCheck => None,
        }
    }

    /// Replaces any passport in `baggage` (all of [`KEST_PASSPORT`],
    /// [`KEST_PASSPORT_Z`], [`KEST_CLAIM_CHECK`]) with this one. Fails with
    /// [`BaggageError::ClaimCheckRequired`], leaving `baggage` unchanged,
    /// for [`Packed::NeedsClaimCheck`].
    ///
    /// ```
    /// use kest_core::baggage::{pack, Baggage, PackOptions};
    /// let mut baggage = Baggage::parse("kest.claim_check=5f0c3a5e-8a57-4a8e-9a57-3e8f2d7b1c00").unwrap();
    /// pack(r#"["a.b.c"]"#, &PackOptions::default()).write_to(&mut baggage).unwrap();
    /// assert_eq!(baggage.to_header().unwrap(), "kest.passport=[%22a.b.c%22]");
    /// ```
    pub fn write_to(&self, baggage: &mut Baggage) -> Result<(), BaggageError> {
        let (key, value) = match self {
            Packed::Inline(v) => (KEST_PASSPORT, v),
            Packed::Compressed(v) => (KEST_PASSPORT_Z, v),
            Packed::NeedsClaimCheck => return Err(BaggageError::ClaimCheckRequired),
        };
        clear_passport(baggage);
        baggage.set_member(Member {
            key: key.to_owned(),
            value: value.clone(),
            properties: Vec::new(),
            raw_value: None,
        });
        Ok(())
    }
}

/// Removes every passport key ([`KEST_PASSPORT`], [`KEST_PASSPORT_Z`],
/// [`KEST_CLAIM_CHECK`]) from `baggage`, so that a stale one cannot shadow
/// the next.
pub fn clear_passport(baggage: &mut Baggage) {
    for key in [KEST_PASSPORT, KEST_PASSPORT_Z, KEST_CLAIM_CHECK] {
        baggage.remove(key);
    }
}

/// Replaces any passport in `baggage` with the claim check `id` (after the
/// caller stored the JSON under [`claim_key`]`(id)`).
pub fn write_claim_check(baggage: &mut Baggage, id: &Uuid) {
    clear_passport(baggage);
    baggage.set_member(Member {
        key: KEST_CLAIM_CHECK.to_owned(),
        value: id.hyphenated().to_string(),
        properties: Vec::new(),
        raw_value: None,
    });
}

/// The cache key of a claim-checked passport: `kest.claim.<uuid>`.
///
/// ```
/// let id = uuid::Uuid::nil();
/// assert_eq!(kest_core::baggage::claim_key(&id), "kest.claim.00000000-0000-0000-0000-000000000000");
/// ```
pub fn claim_key(id: &Uuid) -> String {
    format!("{CLAIM_KEY_PREFIX}{}", id.hyphenated())
}

/// Chooses how `passport_json` travels (SPEC §7.3): inline if it is at most
/// [`PackOptions::threshold`] bytes, else compressed (zlib level 1 as the
/// reference, base64url without padding) if that is at most the threshold,
/// else [`Packed::NeedsClaimCheck`]. The JSON is not validated here.
///
/// ```
/// use kest_core::baggage::{pack, Packed, PackOptions};
/// let small = r#"["a.b.c"]"#;
/// assert_eq!(pack(small, &PackOptions::default()), Packed::Inline(small.into()));
///
/// let big = format!("[{}]", vec![r#""aaaa.bbbb.cccc""#; 500].join(","));
/// assert!(matches!(pack(&big, &PackOptions::default()), Packed::Compressed(_)));
/// let tiny = PackOptions { threshold: 8, ..PackOptions::default() };
/// assert_eq!(pack(&big, &tiny), Packed::NeedsClaimCheck);
/// ```
pub fn pack(passport_json: &str, opts: &PackOptions) -> Packed {
    if passport_json.len() <= opts.threshold {
        return Packed::Inline(passport_json.to_owned());
    }
    // Writing to memory cannot fail; were it to, the claim check is the
    // safe answer.
    match compress(passport_json.as_bytes()) {
        Ok(encoded) if encoded.len() <= opts.threshold => Packed::Compressed(encoded),
        _ => Packed::NeedsClaimCheck,
    }
}

fn compress(data: &[u8]) -> std::io::Result<String> {
    let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), Compression::new(COMPRESSION_LEVEL));
    encoder.write_all(data)?;
    Ok(URL_SAFE_NO_PAD.encode(encoder.finish()?))
}

/// Inflates one complete zlib stream, stopping as soon as the output would
/// exceed `limit` bytes.
fn inflate_bounded(data: &[u8], limit: usize) -> Result<Vec<u8>, BaggageError> {
    let mut decoder = flate2::bufread::ZlibDecoder::new(data);
    let mut out = Vec::new();
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    (&mut decoder).take(cap).read_to_end(&mut out).map_err(|e| BaggageError::Inflate(e.to_string()))?;
    if out.len() > limit {
        return Err(BaggageError::InflatedTooLarge { limit });
    }
    if !decoder.get_ref().is_empty() {
        return Err(BaggageError::Inflate("trailing bytes after the zlib stream".into()));
    }
    Ok(out)
}

/// Where [`unpack`] found the passport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PassportSource {
    /// No passport key in the baggage (a new flow).
    None,
    /// The passport JSON (inline, or inflated), already checked to be a JSON
    /// array of strings; verify it before use.
    Json(String),
    /// A claim check: fetch [`claim_key`]`(id)` from the cache and check it
    /// with [`check_claimed_json`]. Missing from the cache → fail closed.
    ClaimCheck(Uuid),
}

/// Reads the passport from `baggage` in the order claim check
/// ([`KEST_CLAIM_CHECK`]), compressed ([`KEST_PASSPORT_Z`]), inline
/// ([`KEST_PASSPORT`]); the first key present decides, even if empty (an
/// empty value is an error, never an empty passport).
///
/// - A claim check must be a lowercase hyphenated UUID (as the reference's
///   `str(uuid4())`).
/// - A compressed value is base64url, unpadded or with the canonical `=`
///   padding the reference writes; it must be one complete zlib stream
///   (checksum verified, nothing after it) inflating to at most
///   [`PackOptions::max_inflated_bytes`] of UTF-8.
/// - The inline or inflated text must be a JSON array of strings.
///
/// ```
/// use kest_core::baggage::{pack, unpack, Baggage, PackOptions, PassportSource};
/// let opts = PackOptions { threshold: 64, ..PackOptions::default() };
/// let json = format!("[{}]", vec![r#""aaaa.bbbb.cccc""#; 10].join(","));
/// let mut baggage = Baggage::new();
/// pack(&json, &opts).write_to(&mut baggage).unwrap();
/// assert!(baggage.get("kest.passport_z").is_some());
/// let received = Baggage::parse(&baggage.to_header().unwrap()).unwrap();
/// assert_eq!(unpack(&received, &opts).unwrap(), PassportSource::Json(json));
///
/// let reference = Baggage::parse(r#"kest.passport=["a.b.c", "d.e.f"],kest.chain_tip=0"#).unwrap();
/// assert_eq!(unpack(&reference, &opts).unwrap(), PassportSource::Json(r#"["a.b.c", "d.e.f"]"#.into()));
/// ```
pub fn unpack(baggage: &Baggage, opts: &PackOptions) -> Result<PassportSource, BaggageError> {
    if let Some(claim) = baggage.get(KEST_CLAIM_CHECK) {
        return parse_claim_check(claim).map(PassportSource::ClaimCheck);
    }
    if let Some(encoded) = baggage.get(KEST_PASSPORT_Z) {
        let compressed =
            b64url_decode_any_padding(encoded).map_err(|e| BaggageError::BadBase64(e.to_string()))?;
        let inflated = inflate_bounded(&compressed, opts.max_inflated_bytes)?;
        let json = String::from_utf8(inflated).map_err(|_| BaggageError::NotPassportArray {
            key: KEST_PASSPORT_Z,
            reason: "inflated bytes are not UTF-8".into(),
        })?;
        check_array(&json, KEST_PASSPORT_Z)?;
        return Ok(PassportSource::Json(json));
    }
    if let Some(json) = baggage.get(KEST_PASSPORT) {
        check_array(json, KEST_PASSPORT)?;
        return Ok(PassportSource::Json(json.to_owned()));
    }
    Ok(PassportSource::None)
}

/// Checks that a passport fetched from the cache for a claim check is a
/// JSON array of strings.
pub fn check_claimed_json(json: &str) -> Result<(), BaggageError> {
    check_array(json, KEST_CLAIM_CHECK)
}

fn check_array(json: &str, key: &'static str) -> Result<(), BaggageError> {
    serde_json::from_str::<Vec<String>>(json)
        .map(drop)
        .map_err(|e| BaggageError::NotPassportArray { key, reason: e.to_string() })
}

/// Parses a claim check strictly: a lowercase hyphenated UUID.
///
/// ```
/// use kest_core::baggage::parse_claim_check;
/// assert!(parse_claim_check("5f0c3a5e-8a57-4a8e-9a57-3e8f2d7b1c00").is_ok());
/// assert!(parse_claim_check("5F0C3A5E-8A57-4A8E-9A57-3E8F2D7B1C00").is_err());
/// assert!(parse_claim_check("5f0c3a5e8a574a8e9a573e8f2d7b1c00").is_err());
/// ```
pub fn parse_claim_check(value: &str) -> Result<Uuid, BaggageError> {
    Uuid::parse_str(value)
        .ok()
        .filter(|id| id.hyphenated().to_string() == value)
        .ok_or_else(|| BaggageError::BadClaimCheck(value.to_owned()))
}

/// Formats `kest.chain_tip`: the tips' lowercase hex hashes joined by `,`,
/// or `"0"` when there are none. (The `,` is percent-encoded in the header.)
///
/// ```
/// use kest_core::{baggage::format_chain_tip, EntryHash};
/// assert_eq!(format_chain_tip(&[]), "0");
/// let tip = EntryHash::of("a.b.c");
/// assert_eq!(format_chain_tip(&[tip, tip]), format!("{tip},{tip}"));
/// ```
pub fn format_chain_tip(tips: &[EntryHash]) -> String {
    if tips.is_empty() {
        return "0".to_owned();
    }
    tips.iter().map(EntryHash::to_string).collect::<Vec<_>>().join(",")
}

/// Parses `kest.chain_tip` strictly: exactly `"0"` (no tips, returned as an
/// empty list) or one or more 64-digit lowercase hex hashes separated by
/// `,`, with no whitespace, empty items or repeats.
///
/// ```
/// use kest_core::{baggage::parse_chain_tip, EntryHash};
/// assert_eq!(parse_chain_tip("0").unwrap(), vec![]);
/// let tip = EntryHash::of("a.b.c");
/// assert_eq!(parse_chain_tip(&tip.to_string()).unwrap(), vec![tip]);
/// assert!(parse_chain_tip(&tip.to_string().to_uppercase()).is_err());
/// assert!(parse_chain_tip(&format!("0,{tip}")).is_err());
/// ```
pub fn parse_chain_tip(value: &str) -> Result<Vec<EntryHash>, BaggageError> {
    if value == "0" {
        return Ok(Vec::new());
    }
    let bad = |reason: String| BaggageError::BadChainTip { value: value.to_owned(), reason };
    let mut tips: Vec<EntryHash> = Vec::new();
    for (i, item) in value.split(',').enumerate() {
        let tip = EntryHash::from_str(item).map_err(|_| {
            if item == "0" {
                bad(format!("item {i}: \"0\" must stand alone"))
            } else {
                bad(format!("item {i} is not 64 lowercase hex digits"))
            }
        })?;
        if tips.contains(&tip) {
            return Err(bad(format!("item {i} repeats {tip}")));
        }
        tips.push(tip);
    }
    Ok(tips)
}

impl fmt::Display for PassportSource {
    /// A short description, without the passport itself.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PassportSource::None => f.write_str("no passport"),
            PassportSource::Json(json) => write!(f, "passport JSON ({} bytes)", json.len()),
            PassportSource::ClaimCheck(id) => write!(f, "claim check {id}"),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use super::*;
    use proptest::prelude::*;

    const JWS: &str = "eyJhbGciOiJFZERTQSJ9.eyJvcCI6ImEifQ.c2lnbmF0dXJl";

    fn reference_json(n: usize) -> String {
        // Python's json.dumps(list): ", " separators.
        let items: Vec<String> = (0..n).map(|i| format!("\"{JWS}{i}\"")).collect();
        format!("[{}]", items.join(", "))
    }

    fn bad_member(header: &str) -> (usize, String) {
        match Baggage::parse(header) {
            Err(BaggageError::BadMember { index, reason }) => (index, reason),
            other => panic!("expected BadMember for {header:?}, got {other:?}"),
        }
    }

    #[test]
    fn parses_ows_properties_and_decodes() {
        let b = Baggage::parse(" \tk1 = v%201 ; p1 ; p2 = x ,k2=v2\t").unwrap();
        assert_eq!(b.len(), 2);
        assert_eq!(b.members()[0].key(), "k1");
        assert_eq!(b.get("k1"), Some("v 1"));
        assert_eq!(b.members()[0].properties(), &["p1".to_string(), "p2 = x".to_string()]);
        assert_eq!(b.get("k2"), Some("v2"));
        assert_eq!(b.get("k3"), None);
        assert!(Baggage::parse("").unwrap().is_empty());
        assert!(Baggage::parse(" \t ").unwrap().is_empty());
        assert_eq!("a=".parse::<Baggage>().unwrap().get("a"), Some(""));
        assert_eq!(Baggage::parse("a=b=c").unwrap().get("a"), Some("b=c"));
    }

    #[test]
    fn unrelated_members_preserved_byte_for_byte() {
        let header = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7;prop,x=%41%2c[]:/?,dup=1,dup=2";
        let mut b = Baggage::parse(header).unwrap();
        assert_eq!(b.get("x"), Some("A,[]:/?"));
        assert_eq!(b.get("dup"), Some("1"));
        assert_eq!(b.to_header().unwrap(), header);
        b.set("kest.user", "alice").unwrap();
        assert_eq!(b.to_header().unwrap(), format!("{header},kest.user=alice"));
        b.set("rojo", "new").unwrap();
        assert!(b.to_header().unwrap().starts_with("congo=t61rcWkgMzE,rojo=new,x=%41%2c[]:/?,"));
    }

    #[test]
    fn set_replaces_in_place_and_remove_removes_all() {
        let mut b = Baggage::parse("a=1,b=2,a=3,c=4").unwrap();
        b.set("a", "x").unwrap();
        assert_eq!(b.to_header().unwrap(), "a=x,b=2,c=4");
        b.set("d", "5").unwrap();
        assert_eq!(b.to_header().unwrap(), "a=x,b=2,c=4,d=5");
        let mut b = Baggage::parse("a=1,b=2,a=3").unwrap();
        assert_eq!(b.remove("a").unwrap().value(), "1");
        assert_eq!(b.to_header().unwrap(), "b=2");
        assert!(b.remove("a").is_none());
        assert_eq!(b.set("", "x"), Err(BaggageError::BadKey(String::new())));
        assert_eq!(Member::new("a,b", "x").unwrap_err(), BaggageError::BadKey("a,b".into()));
    }

    #[test]
    fn percent_encodes_everything_outside_baggage_octets() {
        let mut b = Baggage::new();
        b.set("k", "a,b;c d\"e\\f%g\u{7f}\té").unwrap();
        let header = b.to_header().unwrap();
        assert_eq!(header, "k=a%2Cb%3Bc%20d%22e%5Cf%25g%7F%09%C3%A9");
        assert_eq!(Baggage::parse(&header).unwrap(), b);
        for byte in 0u8..0x80 {
            let s = char::from(byte).to_string();
            let encoded: String = utf8_percent_encode(&s, VALUE_ENCODE_SET).collect();
            assert_eq!(encoded != s, !is_baggage_octet(byte) || byte == b'%', "byte {byte:#x}");
        }
    }

    #[test]
    fn grammar_errors_are_precise() {
        assert_eq!(bad_member("a=1,,b=2"), (1, "empty member".into()));
        assert_eq!(bad_member("a=1,").0, 1);
        assert!(bad_member("a=1,novalue").1.contains("no '='"));
        assert!(bad_member("a b=1").1.contains("not an RFC 7230 token"));
        assert!(bad_member("=1").1.contains("not an RFC 7230 token"));
        assert!(bad_member("a=x y").1.contains("outside the baggage-octet set"));
        assert!(bad_member("a=\"q\"").1.contains("outside the baggage-octet set"));
        assert!(bad_member("a=é").1.contains("'é'"));
        assert!(bad_member("a=1;p p").1.contains("property key"));
        assert!(bad_member("a=1;p=x y").1.contains("property `p`"));
        assert!(bad_member("a=1;").1.contains("property key ``"));
    }

    #[test]
    fn bad_percent_encoding() {
        for (header, needle) in
            [("a=%2", "two hex"), ("a=%zz", "two hex"), ("a=100%", "two hex"), ("a=%C3", "UTF-8")]
        {
            match Baggage::parse(header) {
                Err(BaggageError::BadPercentEncoding { index: 0, key, reason }) => {
                    assert_eq!(key, "a");
                    assert!(reason.contains(needle), "{header}: {reason}");
                }
                other => panic!("{header}: {other:?}"),
            }
        }
        assert_eq!(Baggage::parse("a=%c3%a9").unwrap().get("a"), Some("é"));
    }

    #[test]
    fn limits_enforced_on_parse_and_write() {
        let long = format!("a={}", "x".repeat(8190));
        assert_eq!(Baggage::parse(&long).unwrap().get("a").unwrap().len(), 8190);
        let longer = format!("{long}x");
        assert_eq!(Baggage::parse(&longer), Err(BaggageError::TooLarge { size: 8193, limit: 8192 }));

        let members: Vec<String> = (0..65).map(|i| format!("k{i}=v")).collect();
        assert_eq!(Baggage::parse(&members[..64].join(",")).unwrap().len(), 64);
        assert_eq!(
            Baggage::parse(&members.join(",")),
            Err(BaggageError::TooManyMembers { count: 65, limit: 64 })
        );

        let mut b = Baggage::new();
        b.set("a", ",".repeat(3000)).unwrap(); // 9000 bytes once encoded
        assert_eq!(b.to_header(), Err(BaggageError::TooLarge { size: 9002, limit: 8192 }));
        let roomy = BaggageLimits { max_bytes: 10_000, max_members: 1 };
        assert!(b.to_header_with(&roomy).is_ok());
        b.set("b", "1").unwrap();
        assert_eq!(b.to_header_with(&roomy), Err(BaggageError::TooManyMembers { count: 2, limit: 1 }));
    }

    #[test]
    fn duplicate_reserved_key_is_refused() {
        assert_eq!(
            Baggage::parse("kest.user=a,x=1,kest.user=b"),
            Err(BaggageError::DuplicateKey("kest.user".into()))
        );
        assert_eq!(
            Baggage::parse(r#"kest.passport=["a"],kest.passport=[]"#),
            Err(BaggageError::DuplicateKey("kest.passport".into()))
        );
    }

    #[test]
    fn reference_raw_json_passport_is_accepted() {
        let json = reference_json(3);
        let header = format!("other=1, kest.passport = {json} ,kest.chain_tip=0,last=2");
        let b = Baggage::parse(&header).unwrap();
        assert_eq!(b.len(), 4);
        assert_eq!(b.get(KEST_PASSPORT), Some(json.as_str()));
        assert_eq!(b.get("kest.chain_tip"), Some("0"));
        assert_eq!(b.get("last"), Some("2"));
        assert_eq!(unpack(&b, &PackOptions::default()).unwrap(), PassportSource::Json(json.clone()));
        // Re-encoded on the way out, and that reads back the same.
        let out = b.to_header().unwrap();
        assert!(out.starts_with("other=1,kest.passport=[%22eyJ"), "{out}");
        assert!(out.contains("%2C%20%22"), "{out}");
        assert_eq!(Baggage::parse(&out).unwrap(), b);

        // Strings with escapes, commas and semicolons inside, at the end.
        let tricky = r#"["a,b;c=d", "q\"]", "\u00e9"]"#;
        let b = Baggage::parse(&format!("kest.passport={tricky}")).unwrap();
        assert_eq!(b.get(KEST_PASSPORT), Some(tricky));
        // `[]` means the same either way.
        assert_eq!(Baggage::parse("kest.passport=[]").unwrap().get(KEST_PASSPORT), Some("[]"));
        // Our own percent-encoded form also starts with '[' and is read strictly.
        let ours = Baggage::parse("kest.passport=[%22a.b.c%22]").unwrap();
        assert_eq!(ours.get(KEST_PASSPORT), Some(r#"["a.b.c"]"#));
    }

    #[test]
    fn ambiguous_raw_json_is_refused() {
        for (header, needle) in [
            (r#"kest.passport=["a", 1]"#, "JSON array of strings"),
            (r#"kest.passport=["a", "b""#, "JSON array of strings"),
            (r#"kest.passport=[{"a": "b"}]"#, "JSON array of strings"),
            (r#"kest.passport=["a", "b"]x"#, "followed by ','"),
            (r#"kest.passport=["a", "b"];p"#, "followed by ','"),
            (r#"kest.passport=["a", "b"] ["c"]"#, "followed by ','"),
        ] {
            match Baggage::parse(header) {
                Err(BaggageError::BadRawJson { index: 0, reason }) => {
                    assert!(reason.contains(needle), "{header}: {reason}")
                }
                other => panic!("{header}: {other:?}"),
            }
        }
        // Raw JSON under any other key is not tolerated.
        assert!(matches!(Baggage::parse(r#"kest.roles=["a", "b"]"#), Err(BaggageError::BadMember { .. })));
        assert!(matches!(Baggage::parse(r#"kest.passport_z=["a"]"#), Err(BaggageError::BadMember { .. })));
        // Well-formed values that merely start with '[' are fine.
        assert_eq!(Baggage::parse("kest.passport=[]x").unwrap().get(KEST_PASSPORT), Some("[]x"));
    }

    #[test]
    fn pack_tiers_and_round_trip() {
        let opts = PackOptions::default();
        let small = reference_json(2);
        assert_eq!(pack(&small, &opts), Packed::Inline(small.clone()));
        assert_eq!(pack(&small, &opts).key(), Some(KEST_PASSPORT));

        let big = reference_json(200); // ~10 kB, very repetitive
        assert!(big.len() > DEFAULT_THRESHOLD);
        let packed = pack(&big, &opts);
        let Packed::Compressed(encoded) = &packed else { panic!("{packed:?}") };
        assert!(encoded.len() <= DEFAULT_THRESHOLD && !encoded.contains('='));
        let raw = URL_SAFE_NO_PAD.decode(encoded).unwrap();
        assert_eq!(raw[..2], [0x78, 0x01], "zlib header of level 1, as Python's zlib.compress(data, 1)");

        let mut b = Baggage::parse(&format!("kest.passport={small},keep=1")).unwrap();
        packed.write_to(&mut b).unwrap();
        assert_eq!(b.get(KEST_PASSPORT), None);
        let header = b.to_header().unwrap();
        let received = Baggage::parse(&header).unwrap();
        assert_eq!(unpack(&received, &opts).unwrap(), PassportSource::Json(big.clone()));

        let tiny = PackOptions { threshold: 16, ..opts };
        assert_eq!(pack(&big, &tiny), Packed::NeedsClaimCheck);
        assert_eq!(pack(&big, &tiny).key(), None);
        assert_eq!(Packed::NeedsClaimCheck.write_to(&mut b), Err(BaggageError::ClaimCheckRequired));
        assert_eq!(b.to_header().unwrap(), header, "left unchanged");

        let id = Uuid::from_u128(0x5f0c3a5e_8a57_4a8e_9a57_3e8f2d7b1c00);
        write_claim_check(&mut b, &id);
        assert_eq!(b.get(KEST_PASSPORT_Z), None);
        assert_eq!(b.to_header().unwrap(), "keep=1,kest.claim_check=5f0c3a5e-8a57-4a8e-9a57-3e8f2d7b1c00");
        let received = Baggage::parse(&b.to_header().unwrap()).unwrap();
        assert_eq!(unpack(&received, &opts).unwrap(), PassportSource::ClaimCheck(id));
        assert_eq!(claim_key(&id), "kest.claim.5f0c3a5e-8a57-4a8e-9a57-3e8f2d7b1c00");
        assert!(check_claimed_json(&big).is_ok());
        assert!(matches!(
            check_claimed_json("{}"),
            Err(BaggageError::NotPassportArray { key: KEST_CLAIM_CHECK, .. })
        ));
    }

    #[test]
    fn inflates_python_zlib_with_and_without_padding() {
        // BaggageManager._compress(Passport(entries=[JWS+"0"..JWS+"3"]).serialize())
        // from kest 0.3.0: zlib.compress(data, level=1), urlsafe_b64encode, '=' kept.
        let padded = "eAGLVkqt9MpIck_O9M_0cotyDQoJDPay1AMKliU7e5p55rpmpgXqJRvl5CXluhmkRHjlGCjpKJCsyZAcTUbkaDJWigUAVnFD1w==";
        let expected = PassportSource::Json(reference_json(4));
        for value in [padded, padded.trim_end_matches('=')] {
            let b = Baggage::parse(&format!("kest.passport_z={value}")).unwrap();
            assert_eq!(unpack(&b, &PackOptions::default()).unwrap(), expected);
        }
    }

    fn unpack_z(value: &str, opts: &PackOptions) -> Result<PassportSource, BaggageError> {
        let mut b = Baggage::new();
        b.set(KEST_PASSPORT_Z, value).unwrap();
        unpack(&b, opts)
    }

    fn zlib(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), Compression::new(9));
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn compressed_errors() {
        let opts = PackOptions::default();
        let good = zlib(br#"["a.b.c"]"#);
        assert!(unpack_z(&URL_SAFE_NO_PAD.encode(&good), &opts).is_ok());
        for bad in ["a+b/", "ab=", "a", "!!!!", "eA=", "eA==="] {
            assert!(matches!(unpack_z(bad, &opts), Err(BaggageError::BadBase64(_))), "{bad}");
        }
        // Empty, truncated, corrupted checksum, trailing bytes.
        let mut corrupt = good.clone();
        *corrupt.last_mut().unwrap() ^= 1;
        let mut trailing = good.clone();
        trailing.push(0);
        for bytes in [&[][..], &good[..good.len() - 5], &corrupt[..], &trailing[..], b"not zlib"] {
            let r = unpack_z(&URL_SAFE_NO_PAD.encode(bytes), &opts);
            assert!(matches!(r, Err(BaggageError::Inflate(_))), "{bytes:?}: {r:?}");
        }
        // Not UTF-8, not an array of strings.
        for data in [&b"\xff\xfe"[..], b"{}", b"[1]", b"", b"[\"a\"] x"] {
            let r = unpack_z(&URL_SAFE_NO_PAD.encode(zlib(data)), &opts);
            assert!(
                matches!(r, Err(BaggageError::NotPassportArray { key: KEST_PASSPORT_Z, .. })),
                "{data:?}: {r:?}"
            );
        }
    }

    #[test]
    fn decompression_bomb_stops_at_limit() {
        // 1 MiB of spaces compresses to ~1 kB; inflation must stop just past
        // the limit rather than inflate it all.
        let bomb = zlib(&vec![b' '; 1 << 20]);
        let opts = PackOptions { max_inflated_bytes: 1000, ..PackOptions::default() };
        assert_eq!(
            unpack_z(&URL_SAFE_NO_PAD.encode(&bomb), &opts),
            Err(BaggageError::InflatedTooLarge { limit: 1000 })
        );
        let exact = zlib(&[b' '; 1000]);
        let r = unpack_z(&URL_SAFE_NO_PAD.encode(&exact), &opts);
        assert!(matches!(r, Err(BaggageError::NotPassportArray { .. })), "{r:?}: within limit, then checked");
    }

    #[test]
    fn unpack_order_and_fail_closed() {
        let opts = PackOptions::default();
        assert_eq!(unpack(&Baggage::parse("a=1").unwrap(), &opts).unwrap(), PassportSource::None);
        let id = "5f0c3a5e-8a57-4a8e-9a57-3e8f2d7b1c00";
        let z = URL_SAFE_NO_PAD.encode(zlib(br#"["z"]"#));
        let all =
            Baggage::parse(&format!("kest.passport=[],kest.passport_z={z},kest.claim_check={id}")).unwrap();
        assert!(matches!(unpack(&all, &opts).unwrap(), PassportSource::ClaimCheck(_)));
        let two = Baggage::parse(&format!("kest.passport=[],kest.passport_z={z}")).unwrap();
        assert_eq!(unpack(&two, &opts).unwrap(), PassportSource::Json(r#"["z"]"#.into()));

        for claim in
            ["", "nope", "5F0C3A5E-8A57-4A8E-9A57-3E8F2D7B1C00", "{5f0c3a5e-8a57-4a8e-9a57-3e8f2d7b1c00}"]
        {
            let mut b = Baggage::new();
            b.set(KEST_CLAIM_CHECK, claim).unwrap();
            assert_eq!(unpack(&b, &opts), Err(BaggageError::BadClaimCheck(claim.into())));
        }
        for inline in ["", "x", "{}", "[1]", "[\"a\",]", "[[\"a\"]]", "null"] {
            let mut b = Baggage::new();
            b.set(KEST_PASSPORT, inline).unwrap();
            assert!(
                matches!(unpack(&b, &opts), Err(BaggageError::NotPassportArray { key: KEST_PASSPORT, .. })),
                "{inline}"
            );
        }
        assert_eq!(
            PassportSource::ClaimCheck(Uuid::nil()).to_string(),
            format!("claim check {}", Uuid::nil())
        );
    }

    #[test]
    fn chain_tip_strict() {
        let a = EntryHash::of("a.b.c");
        let b = EntryHash::of("d.e.f");
        let both = format_chain_tip(&[a, b]);
        assert_eq!(both, format!("{a},{b}"));
        assert_eq!(parse_chain_tip(&both).unwrap(), vec![a, b]);
        assert_eq!(parse_chain_tip("0").unwrap(), Vec::<EntryHash>::new());
        let mut bag = Baggage::new();
        bag.set(KEST_CHAIN_TIP, both.clone()).unwrap();
        let back = Baggage::parse(&bag.to_header().unwrap()).unwrap();
        assert_eq!(back.get(KEST_CHAIN_TIP), Some(both.as_str()));
        for bad in [
            "",
            "00",
            " 0",
            &format!("{a},"),
            &format!("{a}, {b}"),
            &format!("{a},{a}"),
            &format!("{a},0"),
            &a.to_string().to_uppercase(),
            &a.to_string()[1..],
        ] {
            assert!(matches!(parse_chain_tip(bad), Err(BaggageError::BadChainTip { .. })), "{bad}");
        }
    }

    #[test]
    fn identity_keys() {
        let b = Baggage::parse(
            "kest.user=alice,kest.agent=spiffe%3A//demo/agent,kest.task=read%20write,kest.jwt=e.y.j",
        )
        .unwrap();
        assert_eq!(b.get(KEST_USER), Some("alice"));
        assert_eq!(b.get(KEST_AGENT), Some("spiffe://demo/agent"));
        assert_eq!(b.get(KEST_TASK), Some("read write"));
        assert_eq!(b.get(KEST_JWT), Some("e.y.j"));
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in any::<String>()) {
            let _ = Baggage::parse(&s);
        }

        #[test]
        fn parse_never_panics_on_header_like_input(s in r#"[a-z.=,; \t%0-9A-F"\[\]\\]{0,200}"#) {
            if let Ok(b) = Baggage::parse(&s) {
                // Whatever parses writes back and re-parses to the same list
                // (when within the limits).
                if let Ok(h) = b.to_header() {
                    prop_assert_eq!(Baggage::parse(&h).unwrap(), b);
                }
            }
        }

        #[test]
        fn values_round_trip(values in proptest::collection::vec(any::<String>(), 0..10)) {
            let mut b = Baggage::new();
            for (i, v) in values.iter().enumerate() {
                b.set(format!("k{i}"), v.clone()).unwrap();
            }
            let header = b.to_header_with(&BaggageLimits { max_bytes: usize::MAX, max_members: 64 }).unwrap();
            prop_assert!(header.bytes().all(|c| is_baggage_octet(c) || c == b',' || c == b'='));
            let big = BaggageLimits { max_bytes: usize::MAX, max_members: 64 };
            let back = Baggage::parse_with(&header, &big).unwrap();
            prop_assert_eq!(&back, &b);
            for (i, v) in values.iter().enumerate() {
                prop_assert_eq!(back.get(&format!("k{i}")), Some(v.as_str()));
            }
        }

        #[test]
        fn pack_unpack_round_trip(entries in proptest::collection::vec("[A-Za-z0-9_.-]{0,300}", 0..40), threshold in 1usize..5000) {
            let json = serde_json::to_string(&entries).unwrap();
            let opts = PackOptions { threshold, ..PackOptions::default() };
            let packed = pack(&json, &opts);
            let mut b = Baggage::new();
            match packed.write_to(&mut b) {
                Ok(()) => {
                    let back = Baggage::parse_with(&b.to_header_with(&BaggageLimits { max_bytes: usize::MAX, max_members: 64 }).unwrap(),
                        &BaggageLimits { max_bytes: usize::MAX, max_members: 64 }).unwrap();
                    prop_assert_eq!(unpack(&back, &opts).unwrap(), PassportSource::Json(json));
                }
                Err(e) => prop_assert_eq!(e, BaggageError::ClaimCheckRequired),
            }
        }
    }
}
