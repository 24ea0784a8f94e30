//! Byte encodings used on the wire: unpadded base64url and lowercase hex.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Encodes bytes as base64url without padding (RFC 7515 §2).
pub fn b64url_encode(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes unpadded base64url strictly: padding, characters outside the
/// URL-safe alphabet and non-zero trailing bits are all rejected, so every
/// byte string has exactly one accepted encoding.
pub fn b64url_decode(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    URL_SAFE_NO_PAD.decode(text)
}

/// Lowercase hexadecimal of `bytes`.
///
/// ```
/// assert_eq!(kest_core::encoding::hex_lower(&[0x0a, 0xff]), "0aff");
/// ```
pub fn hex_lower(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        for nibble in [byte >> 4, byte & 0x0f] {
            // A nibble is below 16, so the digit always exists.
            out.extend(char::from_digit(u32::from(nibble), 16));
        }
    }
    out
}

/// Parses exactly 64 lowercase hexadecimal digits into 32 bytes.
pub fn parse_hex32_lower(text: &str) -> Option<[u8; 32]> {
    let bytes = text.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (slot, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        let [hi, lo] = *pair else { return None };
        *slot = (hex_digit(hi)? << 4) | hex_digit(lo)?;
    }
    Some(out)
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64url_is_strict() {
        assert_eq!(b64url_encode(b"\xfb\xff"), "-_8");
        assert_eq!(b64url_decode("-_8").unwrap(), b"\xfb\xff");
        assert!(b64url_decode("-_8=").is_err(), "padding rejected");
        assert!(b64url_decode("+/8").is_err(), "standard alphabet rejected");
        assert!(b64url_decode("-_9").is_err(), "non-zero trailing bits rejected");
    }

    #[test]
    fn hex_round_trip_and_case() {
        let bytes = [0xabu8; 32];
        let hex = hex_lower(&bytes);
        assert_eq!(parse_hex32_lower(&hex), Some(bytes));
        assert_eq!(parse_hex32_lower(&hex.to_uppercase()), None);
        assert_eq!(parse_hex32_lower(&hex[..62]), None);
    }
}
