//! Entry hashes: SHA-256 of the whole JWS compact string (SPEC §2.3).

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

use crate::encoding::{hex_lower, parse_hex32_lower};

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
        f.write_str(&hex_lower(&self.0))
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
