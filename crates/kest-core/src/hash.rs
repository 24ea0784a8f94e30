//! Entry hashes: SHA-256 of the whole JWS compact string (SPEC §2.3).

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

use crate::encoding::parse_hex32_lower;

/// The SHA-256 digest of an entry's JWS compact string; children name their
/// parents by it in `parent_ids` (lowercase hex).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntryHash([u8; 32]);

impl EntryHash {
    /// Hashes a JWS compact string.
    ///
    /// ```
    /// let h = kest_core::EntryHash::of("a.b.c");
    /// assert_eq!(h.to_string().len(), 64);
    /// ```
    pub fn of(jws: &str) -> EntryHash {
        EntryHash(Sha256::digest(jws.as_bytes()).into())
    }

    /// The raw digest.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for EntryHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Written from a stack buffer: formatting a hash does not allocate.
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut hex = [0u8; 64];
        for (pair, byte) in hex.chunks_exact_mut(2).zip(self.0) {
            for (digit, nibble) in pair.iter_mut().zip([byte >> 4, byte & 0x0f]) {
                // A nibble is below 16: the digit always exists.
                *digit = DIGITS.get(usize::from(nibble)).copied().unwrap_or(b'0');
            }
        }
        f.write_str(std::str::from_utf8(&hex).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for EntryHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EntryHash({self})")
    }
}

/// A string that is not 64 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a lowercase hex SHA-256 digest")]
pub struct ParseHashError(pub String);

impl FromStr for EntryHash {
    type Err = ParseHashError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_hex32_lower(s).map(EntryHash).ok_or_else(|| ParseHashError(s.to_owned()))
    }
}
