//! Identity providers. The private key is created or loaded in Rust and
//! stays there: no Python object ever holds key material, and no method
//! returns it. Python sees the workload id, the kind and the public JWK.

use std::sync::Arc;

use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::DecodePrivateKey;
use kest::identity::{IdentityProvider, LocalEd25519Provider, StaticIdentity as RsStaticIdentity};
use kest_core::{Ed25519Signer, Signer, parse_jwk};
use pyo3::prelude::*;
use pyo3::types::PyString;
use serde_json::Value;
use zeroize::{Zeroize, Zeroizing};

use crate::convert::to_py;
use crate::errors;

/// A workload identity that signs passport entries (base class of
/// [`LocalIdentity`] and [`StaticIdentity`]).
#[pyclass(subclass, frozen, module = "kest_rs")]
#[derive(Debug)]
pub struct Identity {
    pub(crate) inner: Arc<dyn IdentityProvider>,
}

#[pymethods]
impl Identity {
    /// The workload id (the `principal` label and the JWS `kid`).
    #[getter]
    fn workload_id(&self) -> &str {
        self.inner.workload_id()
    }

    /// Reference-compatible name of [`Identity::workload_id`].
    fn get_identity(&self) -> &str {
        self.inner.workload_id()
    }

    /// The provider kind (`local`, `static`).
    #[getter]
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    /// The public key as a JWK dict (`kid` = the workload id).
    fn public_jwk<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_py(py, &self.jwk()?)
    }

    /// The public key as a JWKS JSON document (`{"keys":[...]}`).
    fn jwks_json(&self) -> PyResult<String> {
        Ok(serde_json::json!({ "keys": [self.jwk()?] }).to_string())
    }

    /// The raw 32-byte Ed25519 public key.
    fn public_key_bytes(&self) -> PyResult<Vec<u8>> {
        let jwk = self.jwk()?;
        let x = jwk.get("x").and_then(Value::as_str).ok_or_else(|| errors::identity("no public key"))?;
        kest_core::encoding::b64url_decode(x).map_err(|_| errors::identity("public key is not base64url"))
    }

    fn __repr__(&self) -> String {
        format!("<{} identity `{}`>", self.inner.kind(), self.inner.workload_id())
    }
}

impl Identity {
    fn jwk(&self) -> PyResult<Value> {
        let key = self
            .inner
            .public_key()
            .ok_or_else(|| errors::identity("this identity has no local public key"))?;
        Ok(key.to_jwk(self.inner.workload_id()))
    }
}

/// A fresh Ed25519 key for this process (development; logs a warning once).
#[pyclass(extends = Identity, frozen, module = "kest_rs")]
#[derive(Debug)]
pub struct LocalIdentity;

#[pymethods]
impl LocalIdentity {
    /// A new key; `workload_id` defaults to the local workload id.
    #[new]
    #[pyo3(signature = (workload_id = None))]
    fn new(workload_id: Option<String>) -> PyResult<(Self, Identity)> {
        let provider = match workload_id {
            Some(id) => LocalEd25519Provider::with_workload_id(id),
            None => LocalEd25519Provider::new(),
        }
        .map_err(|e| errors::identity(e.to_string()))?;
        Ok((LocalIdentity, Identity { inner: Arc::new(provider) }))
    }
}

/// An explicit workload id and key: from a seed, a PKCS#8 PEM, a private
/// JWK or a key file.
#[pyclass(extends = Identity, frozen, module = "kest_rs")]
#[derive(Debug)]
pub struct StaticIdentity;

fn static_identity(py: Python<'_>, signer: Ed25519Signer) -> PyResult<Py<StaticIdentity>> {
    if signer.principal().is_empty() {
        return Err(errors::identity("the workload id must not be empty"));
    }
    let init = PyClassInitializer::from(Identity { inner: Arc::new(RsStaticIdentity::from_signer(signer)) })
        .add_subclass(StaticIdentity);
    Py::new(py, init)
}

#[pymethods]
impl StaticIdentity {
    /// From a 32-byte Ed25519 seed (RFC 8032 secret key).
    #[staticmethod]
    fn from_seed(py: Python<'_>, workload_id: String, seed: &[u8]) -> PyResult<Py<StaticIdentity>> {
        let mut bytes: [u8; 32] =
            seed.try_into().map_err(|_| errors::identity("the seed must be 32 bytes"))?;
        let signer = Ed25519Signer::from_seed(workload_id, bytes);
        bytes.zeroize();
        static_identity(py, signer)
    }

    /// From a PKCS#8 PEM private key (`-----BEGIN PRIVATE KEY-----`).
    #[staticmethod]
    fn from_pem(
        py: Python<'_>,
        workload_id: String,
        pem: &Bound<'_, PyString>,
    ) -> PyResult<Py<StaticIdentity>> {
        let text = Zeroizing::new(pem.to_cow()?.into_owned());
        let key = SigningKey::from_pkcs8_pem(text.trim())
            .map_err(|_| errors::identity("not an Ed25519 PKCS#8 private key (PEM)"))?;
        static_identity(py, Ed25519Signer::from_signing_key(workload_id, key))
    }

    /// From a private JWK (`{"kty":"OKP","crv":"Ed25519","x","d","kid"}`);
    /// the workload id is `workload_id` or the JWK's `kid`.
    #[staticmethod]
    #[pyo3(signature = (jwk, workload_id = None))]
    fn from_jwk(
        py: Python<'_>,
        jwk: &Bound<'_, PyString>,
        workload_id: Option<String>,
    ) -> PyResult<Py<StaticIdentity>> {
        let text = Zeroizing::new(jwk.to_cow()?.into_owned());
        let mut value: Value =
            serde_json::from_str(&text).map_err(|_| errors::identity("the JWK is not JSON"))?;
        let kid = value.get("kid").and_then(Value::as_str).map(str::to_owned);
        let name = match (workload_id, kid) {
            (Some(w), Some(k)) if w != k => {
                return Err(errors::identity(format!("workload id `{w}` differs from the JWK's kid `{k}`")));
            }
            (Some(w), _) => w,
            (None, Some(k)) => k,
            (None, None) => return Err(errors::identity("the JWK has no kid: pass workload_id")),
        };
        let Some(Value::String(d)) = value.as_object_mut().and_then(|o| o.remove("d")) else {
            return Err(errors::identity("the JWK has no private member `d`"));
        };
        let d = Zeroizing::new(d);
        let decoded = Zeroizing::new(
            kest_core::encoding::b64url_decode(&d)
                .map_err(|_| errors::identity("`d` is not unpadded base64url"))?,
        );
        let mut seed: [u8; 32] =
            decoded.as_slice().try_into().map_err(|_| errors::identity("`d` must be 32 bytes"))?;
        let signer = Ed25519Signer::from_seed(name.clone(), seed);
        seed.zeroize();
        if let Some(o) = value.as_object_mut() {
            o.insert("kid".into(), Value::String(name));
        }
        let (_, public) = parse_jwk(&value).map_err(|e| errors::identity(format!("bad JWK: {e}")))?;
        if signer.public_key().as_ref() != Some(&public) {
            return Err(errors::identity("`x` does not match the private key `d`"));
        }
        static_identity(py, signer)
    }

    /// From a key file (PKCS#8 PEM, which needs `workload_id`, or a private
    /// JWK). Errors name the file, never the key.
    #[staticmethod]
    #[pyo3(signature = (path, workload_id = None))]
    fn from_key_file(
        py: Python<'_>,
        path: std::path::PathBuf,
        workload_id: Option<String>,
    ) -> PyResult<Py<StaticIdentity>> {
        let signer = py
            .detach(|| kest::keyfile::load_signer(&path, workload_id.as_deref()))
            .map_err(|e| errors::identity(e.to_string()))?;
        static_identity(py, signer)
    }

    /// Generates a new key for `workload_id` (kept in Rust).
    #[staticmethod]
    fn generate(py: Python<'_>, workload_id: String) -> PyResult<Py<StaticIdentity>> {
        let signer = Ed25519Signer::generate(workload_id).map_err(|e| errors::identity(e.to_string()))?;
        static_identity(py, signer)
    }
}
