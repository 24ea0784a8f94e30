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

mod chain_tip;
mod codec;
mod packing;

pub use chain_tip::{format_chain_tip, parse_chain_tip};
pub use codec::{Baggage, BaggageLimits, Member};
pub use packing::{
    PackOptions, Packed, PassportSource, check_claimed_json, claim_key, clear_passport, pack,
    parse_claim_check, unpack, write_claim_check,
};

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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use flate2::Compression;
    use std::io::Write as _;

    use percent_encoding::utf8_percent_encode;
    use uuid::Uuid;

    use super::codec::{VALUE_ENCODE_SET, is_baggage_octet};
    use super::*;
    use crate::hash::EntryHash;
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
