//! Key files: Ed25519 and P-256 private keys as PKCS#8 PEM or private JWK,
//! public keys as JWK or JWKS.
//!
//! The key type is read from the content (the PKCS#8 algorithm, the JWK
//! `kty`/`crv`), never from the file name: an Ed25519 key signs `EdDSA`
//! entries, a P-256 key `ES256` entries.
//!
//! Private key material is read into zeroizing buffers, never printed, and
//! written only with mode `0600` to a file that did not exist before.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey, spki::der::pem::LineEnding};
use kest_core::encoding::{b64url_decode, b64url_encode};
use kest_core::parse_jwk;
use kest_core::{Ed25519Signer, Es256Signer, KeySet, KeySetError, LocalSigner, PublicKey, Signer as _};
use serde_json::Value;
use zeroize::{Zeroize, Zeroizing};

/// Why a key file could not be read or written. Messages name the file and
/// the problem, never key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyFileError {
    /// Reading or writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The content is not a key in a supported form.
    #[error("{path}: {reason}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A key set could not be assembled.
    #[error("{path}: {source}")]
    KeySet {
        /// The file.
        path: PathBuf,
        /// The key set error.
        source: KeySetError,
    },
    /// The principal is missing or contradicts the file.
    #[error("{0}")]
    Principal(String),
}

/// On-disk form of a private key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PrivateKeyFormat {
    /// PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`); carries no principal.
    #[default]
    Pem,
    /// A private JWK `{"kty":"OKP","crv":"Ed25519","x","d","kid"}` or
    /// `{"kty":"EC","crv":"P-256","x","y","d","kid"}`.
    Jwk,
}

fn format_err(path: &Path, reason: impl Into<String>) -> KeyFileError {
    KeyFileError::Format { path: path.to_owned(), reason: reason.into() }
}

fn read_secret(path: &Path) -> Result<Zeroizing<String>, KeyFileError> {
    fs::read_to_string(path)
        .map(Zeroizing::new)
        .map_err(|source| KeyFileError::Io { path: path.to_owned(), source })
}

/// Loads an Ed25519 signer from a private key file (PEM or private JWK).
///
/// The principal comes from `principal` or, for a JWK, from its `kid`; a
/// JWK whose `kid` differs from an explicit `principal` is an error, and a
/// PEM file needs an explicit principal. A P-256 key file is refused here
/// (the caller expects Ed25519); [`load_key`] loads either type.
pub fn load_signer(path: &Path, principal: Option<&str>) -> Result<Ed25519Signer, KeyFileError> {
    match load_key(path, principal)? {
        LocalSigner::Ed25519(signer) => Ok(signer),
        _ => Err(format_err(path, "a P-256 (ES256) key where an Ed25519 key is required")),
    }
}

/// Loads a signer from a private key file, Ed25519 or P-256: PKCS#8 PEM
/// (`-----BEGIN PRIVATE KEY-----`) or a private JWK (`OKP`/`Ed25519` or
/// `EC`/`P-256`, with `d`).
///
/// The principal comes from `principal` or, for a JWK, from its `kid`; a
/// JWK whose `kid` differs from an explicit `principal` is an error, and a
/// PEM file needs an explicit principal. The public members of a JWK must
/// match `d`.
///
/// ```
/// use kest::keyfile::{PrivateKeyFormat, load_key, write_signer_key};
/// use kest::core::{Algorithm, LocalSigner, Signer};
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("key.jwk");
/// let signer = LocalSigner::generate("spiffe://demo/ec", Algorithm::Es256).unwrap();
/// write_signer_key(&path, &signer, PrivateKeyFormat::Jwk).unwrap();
/// let loaded = load_key(&path, None).unwrap();
/// assert_eq!(loaded.algorithm(), "ES256");
/// assert_eq!(loaded.principal(), "spiffe://demo/ec");
/// assert_eq!(loaded.public_key(), signer.public_key());
/// ```
pub fn load_key(path: &Path, principal: Option<&str>) -> Result<LocalSigner, KeyFileError> {
    let text = read_secret(path)?;
    let trimmed = text.trim_start();
    if trimmed.starts_with("-----BEGIN") {
        let principal = principal.ok_or_else(|| {
            KeyFileError::Principal(format!(
                "{}: a PEM key carries no principal; pass --principal",
                path.display()
            ))
        })?;
        return pem_signer(path, trimmed, principal);
    }
    let mut jwk: Value = serde_json::from_str(&text)
        .map_err(|_| format_err(path, "neither a PEM private key nor a JSON JWK"))?;
    let kid = jwk.get("kid").and_then(Value::as_str).map(str::to_owned);
    let Some(Value::String(mut d)) = jwk.as_object_mut().and_then(|o| o.remove("d")) else {
        return Err(format_err(path, "JWK has no private member `d` (is this a public key?)"));
    };
    let decoded = b64url_decode(&d).map(Zeroizing::new);
    d.zeroize();
    let decoded = decoded.map_err(|_| format_err(path, "`d` is not unpadded base64url"))?;
    let mut scalar: [u8; 32] =
        decoded.as_slice().try_into().map_err(|_| format_err(path, "`d` must be 32 bytes"))?;
    // The public half must be present and consistent with `d`.
    let parsed = parse_jwk(&with_kid(jwk, kid.as_deref().or(principal)));
    let (file_kid, public) = match parsed {
        Ok(found) => found,
        Err(source) => {
            scalar.zeroize();
            return Err(KeyFileError::KeySet { path: path.to_owned(), source });
        }
    };
    let name = match (principal, kid.as_deref()) {
        (Some(p), Some(k)) if p != k => {
            scalar.zeroize();
            return Err(KeyFileError::Principal(format!(
                "{}: --principal `{p}` differs from the key's kid `{k}`",
                path.display()
            )));
        }
        _ => file_kid,
    };
    let signer: LocalSigner = match &public {
        PublicKey::Ed25519(_) => Ed25519Signer::from_seed(name, scalar).into(),
        _ => match Es256Signer::from_scalar(name, scalar) {
            Ok(signer) => signer.into(),
            Err(e) => {
                scalar.zeroize();
                return Err(format_err(path, format!("`d`: {e}")));
            }
        },
    };
    scalar.zeroize();
    if signer.public_key().as_ref() != Some(&public) {
        return Err(format_err(path, "the public members do not match the private key `d`"));
    }
    Ok(signer)
}

/// A signer from PKCS#8 PEM text: Ed25519 or P-256 (read from the PKCS#8
/// algorithm identifier).
fn pem_signer(path: &Path, pem: &str, principal: &str) -> Result<LocalSigner, KeyFileError> {
    if let Ok(key) = SigningKey::from_pkcs8_pem(pem) {
        return Ok(Ed25519Signer::from_signing_key(principal, key).into());
    }
    if let Ok(key) = p256::ecdsa::SigningKey::from_pkcs8_pem(pem) {
        return Ok(Es256Signer::from_signing_key(principal, key).into());
    }
    Err(format_err(path, "not an Ed25519 or P-256 PKCS#8 private key (PEM)"))
}

fn with_kid(mut jwk: Value, kid: Option<&str>) -> Value {
    if let (Some(obj), Some(kid)) = (jwk.as_object_mut(), kid) {
        obj.insert("kid".into(), Value::String(kid.to_owned()));
    }
    jwk
}

/// Writes the Ed25519 `key` to a new file with mode `0600` (refusing to
/// overwrite). [`write_signer_key`] writes either key type.
pub fn write_private_key(
    path: &Path,
    principal: &str,
    key: &SigningKey,
    format: PrivateKeyFormat,
) -> Result<(), KeyFileError> {
    let content: Zeroizing<String> = match format {
        PrivateKeyFormat::Pem => key
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|_| format_err(path, "could not encode the key as PKCS#8"))?,
        PrivateKeyFormat::Jwk => {
            let d = Zeroizing::new(b64url_encode(key.as_bytes()));
            let x = b64url_encode(key.verifying_key().as_bytes());
            Zeroizing::new(format!(
                "{{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"kid\":{},\"x\":\"{x}\",\"d\":\"{}\"}}\n",
                Value::String(principal.to_owned()),
                d.as_str()
            ))
        }
    };
    write_new_0600(path, &content)
}

/// Writes the private key of `signer` (Ed25519 or P-256) to a new file with
/// mode `0600`, refusing to overwrite. A JWK records the signer's principal
/// as `kid`; PEM (PKCS#8) carries none.
pub fn write_signer_key(
    path: &Path,
    signer: &LocalSigner,
    format: PrivateKeyFormat,
) -> Result<(), KeyFileError> {
    let es256 = match signer {
        LocalSigner::Ed25519(ed) => return write_private_key(path, ed.principal(), ed.signing_key(), format),
        LocalSigner::Es256(es) => es,
        _ => return Err(format_err(path, "unsupported key type")),
    };
    let content: Zeroizing<String> = match format {
        PrivateKeyFormat::Pem => {
            use p256::pkcs8::EncodePrivateKey as _;
            es256
                .signing_key()
                .to_pkcs8_pem(p256::pkcs8::LineEnding::LF)
                .map_err(|_| format_err(path, "could not encode the key as PKCS#8"))?
        }
        PrivateKeyFormat::Jwk => {
            let mut scalar = es256.signing_key().to_bytes();
            let d = Zeroizing::new(b64url_encode(scalar.as_slice()));
            scalar.as_mut_slice().zeroize();
            let public = signer.public_key().ok_or_else(|| format_err(path, "no public key"))?;
            let jwk = public.to_jwk(signer.principal());
            let coordinate =
                |name: &str| jwk.get(name).and_then(Value::as_str).unwrap_or_default().to_owned();
            Zeroizing::new(format!(
                "{{\"kty\":\"EC\",\"crv\":\"P-256\",\"kid\":{},\"x\":\"{}\",\"y\":\"{}\",\"d\":\"{}\"}}\n",
                Value::String(signer.principal().to_owned()),
                coordinate("x"),
                coordinate("y"),
                d.as_str()
            ))
        }
    };
    write_new_0600(path, &content)
}

fn write_new_0600(path: &Path, content: &str) -> Result<(), KeyFileError> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let io = |source| KeyFileError::Io { path: path.to_owned(), source };
    let mut file = options.open(path).map_err(io)?;
    file.write_all(content.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)
}

/// Loads public keys from a JWKS document, a single public JWK or a private
/// JWK (only its public half is kept).
pub fn load_public_keys(path: &Path) -> Result<KeySet, KeyFileError> {
    let text = read_secret(path)?;
    let mut doc: Value =
        serde_json::from_str(&text).map_err(|_| format_err(path, "not JSON (expected a JWKS or a JWK)"))?;
    let keyset_err = |source| KeyFileError::KeySet { path: path.to_owned(), source };
    if doc.get("keys").is_some() {
        return KeySet::from_jwks_json(&text).map_err(keyset_err);
    }
    if let Some(Value::String(mut d)) = doc.as_object_mut().and_then(|o| o.remove("d")) {
        d.zeroize();
    }
    let (kid, key) = parse_jwk(&doc).map_err(keyset_err)?;
    let mut set = KeySet::new();
    set.insert(kid, key).map_err(keyset_err)?;
    Ok(set)
}

/// The public key of a PKCS#8 PEM private key file (Ed25519 or P-256).
pub fn pem_public_key(path: &Path) -> Result<PublicKey, KeyFileError> {
    let text = read_secret(path)?;
    let signer = pem_signer(path, text.trim_start(), "pem")?;
    let public = signer.public_key().ok_or_else(|| format_err(path, "no public key"))?;
    // Ed25519 keys pass the same weak-key checks as a JWKS.
    match public {
        PublicKey::Ed25519(vk) => PublicKey::ed25519_from_bytes(vk.as_bytes())
            .map_err(|source| KeyFileError::KeySet { path: path.to_owned(), source }),
        other => Ok(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_and_jwk_round_trip_with_0600() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::from_bytes(&[5u8; 32]);
        for (name, format) in [("k.pem", PrivateKeyFormat::Pem), ("k.jwk", PrivateKeyFormat::Jwk)] {
            let path = dir.path().join(name);
            write_private_key(&path, "spiffe://t/a", &key, format).unwrap();
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt as _;
                assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
            }
            let signer = load_signer(&path, Some("spiffe://t/a")).unwrap();
            assert_eq!(signer.signing_key().as_bytes(), key.as_bytes());
            assert!(!format!("{signer:?}").contains(&b64url_encode(key.as_bytes())));
            assert!(write_private_key(&path, "spiffe://t/a", &key, format).is_err(), "no overwrite");
        }
        let jwk = dir.path().join("k.jwk");
        assert_eq!(load_signer(&jwk, None).unwrap().principal(), "spiffe://t/a");
        assert!(matches!(load_signer(&jwk, Some("other")), Err(KeyFileError::Principal(_))));
        assert!(matches!(load_signer(&dir.path().join("k.pem"), None), Err(KeyFileError::Principal(_))));
        let set = load_public_keys(&jwk).unwrap();
        assert!(set.get("spiffe://t/a").is_some());
    }

    #[test]
    fn p256_pem_and_jwk_round_trip_with_0600() {
        let dir = tempfile::tempdir().unwrap();
        let signer: LocalSigner = Es256Signer::from_scalar("spiffe://t/ec", [9u8; 32]).unwrap().into();
        for (name, format) in [("k.pem", PrivateKeyFormat::Pem), ("k.jwk", PrivateKeyFormat::Jwk)] {
            let path = dir.path().join(name);
            write_signer_key(&path, &signer, format).unwrap();
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt as _;
                assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
            }
            let loaded = load_key(&path, Some("spiffe://t/ec")).unwrap();
            assert_eq!(loaded.algorithm(), "ES256");
            assert_eq!(loaded.public_key(), signer.public_key());
            assert!(!format!("{loaded:?}").contains(&b64url_encode(&[9u8; 32])));
            assert!(write_signer_key(&path, &signer, format).is_err(), "no overwrite");
            // The Ed25519-only loader refuses it with a clear message.
            let err = load_signer(&path, Some("spiffe://t/ec")).unwrap_err().to_string();
            assert!(err.contains("P-256"), "{err}");
        }
        let jwk = dir.path().join("k.jwk");
        assert_eq!(load_key(&jwk, None).unwrap().principal(), "spiffe://t/ec");
        let text = fs::read_to_string(&jwk).unwrap();
        assert!(text.contains(r#""kty":"EC""#) && text.contains(r#""crv":"P-256""#), "{text}");
        let set = load_public_keys(&jwk).unwrap();
        assert_eq!(set.get("spiffe://t/ec").unwrap().allowed_alg(), "ES256");
        assert_eq!(Some(pem_public_key(&dir.path().join("k.pem")).unwrap()), signer.public_key());
        // A P-256 JWK whose `d` does not match x/y, and one with d = 0.
        let other = Es256Signer::from_scalar("spiffe://t/ec", [8u8; 32]).unwrap();
        let mut doc = other.public_key().unwrap().to_jwk("spiffe://t/ec");
        doc["d"] = serde_json::json!(b64url_encode(&[9u8; 32]));
        let bad = dir.path().join("bad.jwk");
        fs::write(&bad, doc.to_string()).unwrap();
        let err = load_key(&bad, None).unwrap_err().to_string();
        assert!(err.contains("do not match") && !err.contains(&b64url_encode(&[9u8; 32])), "{err}");
        doc["d"] = serde_json::json!(b64url_encode(&[0u8; 32]));
        let zero = dir.path().join("zero.jwk");
        fs::write(&zero, doc.to_string()).unwrap();
        assert!(load_key(&zero, None).unwrap_err().to_string().contains("zero"));
    }

    #[test]
    fn mismatched_private_jwk_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let other = SigningKey::from_bytes(&[6u8; 32]);
        let path = dir.path().join("bad.jwk");
        let text = format!(
            r#"{{"kty":"OKP","crv":"Ed25519","kid":"p","x":"{}","d":"{}"}}"#,
            b64url_encode(other.verifying_key().as_bytes()),
            b64url_encode(&[5u8; 32])
        );
        fs::write(&path, text).unwrap();
        let err = load_signer(&path, None).unwrap_err().to_string();
        assert!(err.contains("do not match"), "{err}");
        assert!(!err.contains(&b64url_encode(&[5u8; 32])));
    }
}
