//! The W3C Baggage header codec: [`Baggage`], [`Member`], [`BaggageLimits`]
//! (see the [module docs](super)).

use std::str::FromStr;

use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};

use super::{BaggageError, KEST_PASSPORT, RESERVED_PREFIX};

/// Every byte outside the W3C baggage-octet set, plus `%`. (Non-ASCII bytes
/// are always encoded by [`utf8_percent_encode`].)
pub(super) const VALUE_ENCODE_SET: &AsciiSet =
    &CONTROLS.add(b' ').add(b'"').add(b',').add(b';').add(b'\\').add(b'%');

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
    pub(super) key: String,
    pub(super) value: String,
    pub(super) properties: Vec<String>,
    /// The value exactly as received, when it was well-formed; written back
    /// unchanged.
    pub(super) raw_value: Option<String>,
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

pub(super) fn is_baggage_octet(b: u8) -> bool {
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
