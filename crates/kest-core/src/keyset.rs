//! Public keys by principal, loaded from a JWKS document (RFC 7517, RFC 8037
//! for Ed25519, RFC 7518 §6.2 for P-256).

use std::collections::BTreeMap;
use std::fmt;

use ed25519_dalek::VerifyingKey;
use p256::ecdsa::VerifyingKey as P256VerifyingKey;
use serde_json::Value;

use crate::encoding::{b64url_decode, b64url_encode};
use crate::json::parse_strict;

/// The JWS `alg` of Ed25519 signatures (RFC 8037).
pub const ALG_EDDSA: &str = "EdDSA";
/// The JWS `alg` of ECDSA P-256 SHA-256 signatures (RFC 7518 §3.4).
pub const ALG_ES256: &str = "ES256";

/// Length of a JWS signature for both algorithms: Ed25519 `R||S`, and the
/// ES256 `r||s` (two 32-byte big-endian integers, RFC 7518 §3.4).
pub const SIGNATURE_LEN: usize = 64;

/// One verification key. The key type fixes the only JWS `alg` it accepts,
/// so algorithm confusion (`none`, `mock`, `HS256`, an Ed25519 key given an
/// `ES256` header or the reverse …) cannot happen.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PublicKey {
    /// An Ed25519 key (OKP, RFC 8037): `alg` must be `EdDSA`.
    Ed25519(VerifyingKey),
    /// A NIST P-256 key (EC, RFC 7518 §6.2), a point validated on the curve:
    /// `alg` must be `ES256`.
    P256(P256VerifyingKey),
}

/// Why a signature was refused by [`PublicKey::verify`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// Not exactly 64 bytes (an ES256 signature in DER form is refused here).
    #[error("signature must be 64 bytes, found {0}")]
    Length(usize),
    /// The encoding is not canonical: for Ed25519 a non-reduced `s` or a
    /// non-canonical or small-order `R`; for ES256 an `r` or `s` that is
    /// zero or not below the group order.
    #[error("malformed signature: {0}")]
    Malformed(&'static str),
    /// Well-formed, but it does not verify under the key.
    #[error("signature does not verify")]
    Invalid,
}

impl PublicKey {
    /// The only JWS algorithm this key verifies ([`ALG_EDDSA`] or
    /// [`ALG_ES256`]).
    pub fn allowed_alg(&self) -> &'static str {
        match self {
            PublicKey::Ed25519(_) => ALG_EDDSA,
            PublicKey::P256(_) => ALG_ES256,
        }
    }

    /// Verifies a raw JWS signature over `message` (the JWS signing input)
    /// with the one algorithm of this key: Ed25519 `verify_strict`
    /// (cofactorless; non-canonical and small-order components refused), or
    /// ECDSA P-256 with SHA-256 over the 64-byte `r||s` of RFC 7518 §3.4 —
    /// DER refused, `r`/`s` zero or not below the group order refused,
    /// high-`s` accepted (SPEC §8: low-S is not required on input).
    ///
    /// ```
    /// use kest_core::{Es256Signer, SignatureError, Signer};
    /// let signer = Es256Signer::from_scalar("spiffe://demo/a", [7u8; 32]).unwrap();
    /// let key = signer.public_key().unwrap();
    /// let sig = signer.sign(b"input").unwrap();
    /// assert_eq!(key.allowed_alg(), "ES256");
    /// assert!(key.verify(b"input", &sig).is_ok());
    /// assert_eq!(key.verify(b"other", &sig), Err(SignatureError::Invalid));
    /// assert_eq!(key.verify(b"input", &[0u8; 64]), Err(SignatureError::Malformed("r or s is zero or not below the group order")));
    /// assert_eq!(key.verify(b"input", &sig[..63]), Err(SignatureError::Length(63)));
    /// ```
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), SignatureError> {
        let raw: &[u8; SIGNATURE_LEN] =
            signature.try_into().map_err(|_| SignatureError::Length(signature.len()))?;
        match self {
            PublicKey::Ed25519(key) => {
                let sig = ed25519_dalek::Signature::from_bytes(raw);
                if key.verify_strict(message, &sig).is_ok() {
                    return Ok(());
                }
                // Only on failure: name an encoding defect when there is
                // one (`verify_strict` makes the same checks).
                Err(ed25519_defect(&sig).map_or(SignatureError::Invalid, SignatureError::Malformed))
            }
            PublicKey::P256(key) => {
                use p256::ecdsa::signature::Verifier as _;
                let sig = p256::ecdsa::Signature::from_slice(raw)
                    .map_err(|_| SignatureError::Malformed("r or s is zero or not below the group order"))?;
                key.verify(message, &sig).map_err(|_| SignatureError::Invalid)
            }
        }
    }

    /// A P-256 key from its affine coordinates (32-byte big-endian each, as
    /// in a JWK's `x` and `y`), refusing wrong lengths, coordinates not
    /// below the field prime and points not on the curve.
    ///
    /// ```
    /// use kest_core::{KeyError, PublicKey};
    /// assert_eq!(
    ///     PublicKey::p256_from_coordinates(&[1u8; 32], &[2u8; 32]),
    ///     Err(KeyError::NotOnCurve)
    /// );
    /// assert!(matches!(
    ///     PublicKey::p256_from_coordinates(&[1u8; 31], &[2u8; 32]),
    ///     Err(KeyError::CoordinateLength { coordinate: "x", expected: 32, found: 31 })
    /// ));
    /// ```
    pub fn p256_from_coordinates(x: &[u8], y: &[u8]) -> Result<PublicKey, KeyError> {
        let len = |coordinate, v: &[u8]| {
            if v.len() == 32 {
                Ok(())
            } else {
                Err(KeyError::CoordinateLength { coordinate, expected: 32, found: v.len() })
            }
        };
        len("x", x)?;
        len("y", y)?;
        let mut sec1 = [0u8; 65];
        sec1[0] = 0x04;
        sec1[1..33].copy_from_slice(x);
        sec1[33..].copy_from_slice(y);
        PublicKey::p256_from_sec1(&sec1)
    }

    /// A P-256 key from its SEC1 encoding (uncompressed `04||x||y` or
    /// compressed), validated on the curve; the identity is refused.
    pub fn p256_from_sec1(bytes: &[u8]) -> Result<PublicKey, KeyError> {
        P256VerifyingKey::from_sec1_bytes(bytes).map(PublicKey::P256).map_err(|_| KeyError::NotOnCurve)
    }

    /// The bytes identifying this key within its algorithm: the Ed25519
    /// encoding (32 bytes) or the P-256 affine `x||y` (64 bytes).
    pub fn raw_bytes(&self) -> Vec<u8> {
        match self {
            PublicKey::Ed25519(key) => key.as_bytes().to_vec(),
            PublicKey::P256(key) => {
                let point = key.to_sec1_point(false);
                point.as_bytes().get(1..).unwrap_or_default().to_vec()
            }
        }
    }

    /// An Ed25519 key from its 32-byte encoding, refusing non-canonical
    /// encodings, weak (small-order) keys and keys outside the prime-order
    /// subgroup.
    pub fn ed25519_from_bytes(bytes: &[u8]) -> Result<PublicKey, KeySetError> {
        let raw: [u8; 32] = bytes.try_into().map_err(|_| KeySetError::BadKey {
            kid: None,
            reason: format!("Ed25519 key must be 32 bytes, found {}", bytes.len()),
        })?;
        let key = VerifyingKey::from_bytes(&raw).map_err(|_| KeySetError::BadKey {
            kid: None,
            reason: "not a point on the Ed25519 curve".into(),
        })?;
        if key.to_edwards().compress().to_bytes() != raw {
            return Err(KeySetError::BadKey { kid: None, reason: "non-canonical point encoding".into() });
        }
        if key.is_weak() {
            return Err(KeySetError::BadKey { kid: None, reason: "weak (small-order) key".into() });
        }
        // An honest key is a multiple of the base point. A torsion component
        // lets its holder make signatures whose validity depends on the
        // verification equation (cofactored, cofactorless, batched).
        if !key.to_edwards().is_torsion_free() {
            return Err(KeySetError::BadKey { kid: None, reason: "key has a small-order component".into() });
        }
        Ok(PublicKey::Ed25519(key))
    }

    /// The public JWK of this key with `kid` set to `principal`.
    pub fn to_jwk(&self, principal: &str) -> Value {
        match self {
            PublicKey::Ed25519(key) => serde_json::json!({
                "kty": "OKP",
                "crv": "Ed25519",
                "x": b64url_encode(key.as_bytes()),
                "kid": principal,
                "alg": ALG_EDDSA,
                "use": "sig",
            }),
            PublicKey::P256(_) => {
                let raw = self.raw_bytes();
                let (x, y) = raw.split_at(32.min(raw.len()));
                serde_json::json!({
                    "kty": "EC",
                    "crv": "P-256",
                    "x": b64url_encode(x),
                    "y": b64url_encode(y),
                    "kid": principal,
                    "alg": ALG_ES256,
                    "use": "sig",
                })
            }
        }
    }
}

/// Names the encoding defect of an Ed25519 signature, if it has one: a
/// non-reduced `s`, or an `R` that is not a canonical encoding of a point or
/// is of small order.
fn ed25519_defect(signature: &ed25519_dalek::Signature) -> Option<&'static str> {
    use curve25519_dalek::edwards::CompressedEdwardsY;
    use curve25519_dalek::scalar::Scalar;
    if Option::<Scalar>::from(Scalar::from_canonical_bytes(*signature.s_bytes())).is_none() {
        return Some("scalar s is not reduced");
    }
    let r = CompressedEdwardsY(*signature.r_bytes());
    let Some(point) = r.decompress() else { return Some("R is not a curve point") };
    if point.compress() != r {
        return Some("R is not canonically encoded");
    }
    if point.is_small_order() {
        return Some("R has small order");
    }
    None
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PublicKey::Ed25519(key) => write!(f, "Ed25519({})", b64url_encode(key.as_bytes())),
            PublicKey::P256(_) => write!(f, "P256({})", b64url_encode(&self.raw_bytes())),
        }
    }
}

/// What is wrong with the material of one key (typed, for the JWK members
/// of RFC 7517/7518/8037).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// A key type or curve other than OKP Ed25519 and EC P-256.
    #[error("unsupported key type kty={kty} crv={crv} (only OKP Ed25519 and EC P-256)")]
    UnsupportedKeyType {
        /// The JWK `kty` (`none` when absent).
        kty: String,
        /// The JWK `crv` (`none` when absent).
        crv: String,
    },
    /// A required coordinate member is absent or not a string.
    #[error("`{0}` is required")]
    MissingCoordinate(&'static str),
    /// A coordinate is not unpadded base64url.
    #[error("`{0}` is not unpadded base64url")]
    CoordinateEncoding(&'static str),
    /// A coordinate (or private scalar) has the wrong length.
    #[error("`{coordinate}` must be {expected} bytes, found {found}")]
    CoordinateLength {
        /// `x`, `y` or `d`.
        coordinate: &'static str,
        /// Required length.
        expected: usize,
        /// Length found.
        found: usize,
    },
    /// The coordinates are not a point of the curve (or not below the field
    /// prime, or the identity).
    #[error("the point is not on the P-256 curve")]
    NotOnCurve,
    /// A private scalar that is zero or not below the group order.
    #[error("the private scalar is zero or not below the group order")]
    InvalidPrivateScalar,
    /// The JWK's `alg` is not the one its key type allows.
    #[error("`alg` `{found}` is not {allowed}")]
    AlgMismatch {
        /// The `alg` member.
        found: String,
        /// The algorithm of the key type.
        allowed: &'static str,
    },
}

/// Why a key set could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeySetError {
    /// The document is not a JWKS.
    #[error("not a JWKS document: {0}")]
    NotJwks(String),
    /// A key is unusable.
    #[error("key {}: {reason}", kid.as_deref().map(|k| format!("`{k}`")).unwrap_or_else(|| "without kid".into()))]
    BadKey {
        /// The key's `kid`, if it had one.
        kid: Option<String>,
        /// What is wrong.
        reason: String,
    },
    /// Two keys claim the same principal.
    #[error("two keys have kid `{0}`")]
    DuplicateKid(String),
    /// A key's material is invalid (typed reason).
    #[error("key {}: {source}", kid.as_deref().map(|k| format!("`{k}`")).unwrap_or_else(|| "without kid".into()))]
    InvalidKey {
        /// The key's `kid`, if it had one.
        kid: Option<String>,
        /// What is wrong.
        source: KeyError,
    },
}

/// Public keys by principal (the JWK `kid`). Weak and malformed keys are
/// refused when the set is built, so verification never sees them.
///
/// ```
/// let jwks = r#"{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"spiffe://demo/a",
///   "x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#;
/// let keys = kest_core::KeySet::from_jwks_json(jwks).unwrap();
/// assert!(keys.get("spiffe://demo/a").is_some());
/// assert!(keys.get("spiffe://demo/b").is_none());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeySet {
    keys: BTreeMap<String, PublicKey>,
}

impl KeySet {
    /// An empty key set (verifies only the empty passport).
    pub fn new() -> KeySet {
        KeySet::default()
    }

    /// Adds a key for `principal`; a second key for the same principal is
    /// an error (ambiguous).
    pub fn insert(&mut self, principal: impl Into<String>, key: PublicKey) -> Result<(), KeySetError> {
        let principal = principal.into();
        if self.keys.contains_key(&principal) {
            return Err(KeySetError::DuplicateKid(principal));
        }
        self.keys.insert(principal, key);
        Ok(())
    }

    /// The key of `principal`.
    pub fn get(&self, principal: &str) -> Option<&PublicKey> {
        self.keys.get(principal)
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the set has no keys.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Principals and keys, ordered by principal.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &PublicKey)> {
        self.keys.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Adds every key of `other`; a principal present in both is an error
    /// unless the keys are identical.
    pub fn extend(&mut self, other: KeySet) -> Result<(), KeySetError> {
        for (principal, key) in other.keys {
            match self.keys.get(&principal) {
                Some(existing) if *existing == key => {}
                Some(_) => return Err(KeySetError::DuplicateKid(principal)),
                None => {
                    self.keys.insert(principal, key);
                }
            }
        }
        Ok(())
    }

    /// Parses a JWKS document `{"keys":[...]}`. Every key must be an OKP
    /// Ed25519 or an EC P-256 public key with a `kid` (the principal);
    /// `alg`, when present, must be the key type's (`EdDSA`, `ES256`) and
    /// `use`, when present, `sig`. A key carrying private material (`d`) is
    /// refused rather than silently used.
    ///
    /// ```
    /// use kest_core::{KeyError, KeySet, KeySetError};
    /// // RFC 7515 Appendix A.3's P-256 key.
    /// let jwks = r#"{"keys":[{"kty":"EC","crv":"P-256","kid":"spiffe://demo/ec",
    ///   "x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
    ///   "y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}"#;
    /// let keys = KeySet::from_jwks_json(jwks).unwrap();
    /// assert_eq!(keys.get("spiffe://demo/ec").unwrap().allowed_alg(), "ES256");
    /// // The same x with another y is not on the curve.
    /// let bad = jwks.replace("x_FEzRu9", "y_FEzRu9");
    /// assert!(matches!(
    ///     KeySet::from_jwks_json(&bad),
    ///     Err(KeySetError::InvalidKey { source: KeyError::NotOnCurve, .. })
    /// ));
    /// ```
    pub fn from_jwks_json(text: &str) -> Result<KeySet, KeySetError> {
        let doc = parse_strict(text.as_bytes(), 16).map_err(|e| KeySetError::NotJwks(e.to_string()))?;
        let Some(Value::Array(keys)) = doc.get("keys") else {
            return Err(KeySetError::NotJwks("missing `keys` array".into()));
        };
        let mut set = KeySet::new();
        for jwk in keys {
            let (kid, key) = parse_jwk(jwk)?;
            set.insert(kid, key)?;
        }
        Ok(set)
    }

    /// The JWKS document of this set.
    pub fn to_jwks(&self) -> Value {
        serde_json::json!({ "keys": self.keys.iter().map(|(p, k)| k.to_jwk(p)).collect::<Vec<_>>() })
    }
}

/// Parses one public JWK into its `kid` and key.
pub fn parse_jwk(jwk: &Value) -> Result<(String, PublicKey), KeySetError> {
    let member = |name: &str| jwk.get(name).and_then(Value::as_str);
    let kid = member("kid").map(str::to_owned);
    let bad = |reason: String| KeySetError::BadKey { kid: kid.clone(), reason };
    if !jwk.is_object() {
        return Err(bad("a JWK must be an object".into()));
    }
    let Some(kid_str) = kid.clone() else {
        return Err(bad("`kid` (the principal) is required".into()));
    };
    if kid_str.is_empty() {
        return Err(bad("`kid` must not be empty".into()));
    }
    if jwk.get("d").is_some() {
        return Err(bad("contains private key material `d`; publish only public keys".into()));
    }
    let invalid = |source: KeyError| KeySetError::InvalidKey { kid: kid.clone(), source };
    let allowed = match (member("kty"), member("crv")) {
        (Some("OKP"), Some("Ed25519")) => ALG_EDDSA,
        (Some("EC"), Some("P-256")) => ALG_ES256,
        (kty, crv) => {
            return Err(invalid(KeyError::UnsupportedKeyType {
                kty: kty.unwrap_or("none").to_owned(),
                crv: crv.unwrap_or("none").to_owned(),
            }));
        }
    };
    if let Some(alg) = jwk.get("alg")
        && alg.as_str() != Some(allowed)
    {
        return Err(invalid(KeyError::AlgMismatch { found: alg.to_string(), allowed }));
    }
    if let Some(usage) = jwk.get("use")
        && usage.as_str() != Some("sig")
    {
        return Err(bad(format!("`use` {usage} is not sig")));
    }
    let coordinate = |name: &'static str| -> Result<Vec<u8>, KeySetError> {
        let text = member(name).ok_or_else(|| invalid(KeyError::MissingCoordinate(name)))?;
        b64url_decode(text).map_err(|_| invalid(KeyError::CoordinateEncoding(name)))
    };
    let x = coordinate("x")?;
    let key = if allowed == ALG_ES256 {
        let y = coordinate("y")?;
        PublicKey::p256_from_coordinates(&x, &y).map_err(invalid)?
    } else {
        PublicKey::ed25519_from_bytes(&x).map_err(|e| match e {
            KeySetError::BadKey { reason, .. } => bad(reason),
            other => other,
        })?
    };
    Ok((kid_str, key))
}
