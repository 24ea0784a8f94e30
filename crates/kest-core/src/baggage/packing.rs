//! Packing a passport into baggage (SPEC §7.3): [`pack`], [`unpack`] and
//! claim checks (see the [module docs](super)).

use std::fmt;
use std::io::{Read, Write};

use base64::Engine as _;
use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
use flate2::Compression;
use uuid::Uuid;

use super::*;

/// Decodes base64url either unpadded or with the canonical `=` padding the
/// reference writes, and nothing else (no standard alphabet, no partial
/// padding, no stray trailing bits).
fn b64url_decode_any_padding(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    if text.ends_with('=') { URL_SAFE.decode(text) } else { URL_SAFE_NO_PAD.decode(text) }
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
