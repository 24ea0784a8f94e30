//! Typed Python exceptions.
//!
//! The exception classes live in `kest_rs/_errors.py` (so they can also
//! derive from `PermissionError` / `ValueError` like the reference's); this
//! module builds instances of them with a stable `kind` attribute and the
//! extra attributes of each family (`policy`, `tier`, `index`,
//! `http_status`).

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyDict;

/// The exception families, one Python class each.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Family {
    /// Bad configuration (no identity, no engine, invalid parameters).
    Configuration,
    /// A policy denied the call or could not be evaluated.
    PolicyDenied,
    /// A passport did not verify.
    Verification,
    /// Baggage could not be injected or extracted.
    Baggage,
    /// An identity could not be loaded or cannot sign.
    Identity,
    /// The operation ran but its entry could not be recorded.
    Unrecorded,
    /// Anything else raised by Kest (signing, drafting, appending).
    Other,
}

impl Family {
    fn class_name(self) -> &'static str {
        match self {
            Family::Configuration => "ConfigurationError",
            Family::PolicyDenied => "PolicyDeniedError",
            Family::Verification => "VerificationError",
            Family::Baggage => "BaggageError",
            Family::Identity => "IdentityError",
            Family::Unrecorded => "UnrecordedError",
            Family::Other => "KestError",
        }
    }
}

static ERRORS_MODULE: PyOnceLock<Py<PyModule>> = PyOnceLock::new();

/// Builds a Kest exception of `family` with `kind` and extra attributes.
pub(crate) fn kest_err(family: Family, kind: &str, message: String, extra: &[(&str, PyObject)]) -> PyErr {
    Python::attach(|py| match build(py, family, kind, message.clone(), extra) {
        Ok(err) => err,
        // The errors module is part of the package; failing to import it
        // means a broken installation, reported as it is.
        Err(import_error) => import_error,
    })
}

/// Any Python object.
type PyObject = Py<PyAny>;

fn build(
    py: Python<'_>,
    family: Family,
    kind: &str,
    message: String,
    extra: &[(&str, PyObject)],
) -> PyResult<PyErr> {
    let module = ERRORS_MODULE.get_or_try_init(py, || py.import("kest_rs._errors").map(Bound::unbind))?;
    let class = module.bind(py).getattr(family.class_name())?;
    let kwargs = PyDict::new(py);
    kwargs.set_item("kind", kind)?;
    for (name, value) in extra {
        kwargs.set_item(*name, value.bind(py))?;
    }
    let instance = class.call((message,), Some(&kwargs))?;
    Ok(PyErr::from_value(instance))
}

/// Maps a hook error to its exception.
pub(crate) fn from_kest(error: &kest::KestError) -> PyErr {
    use kest::KestError as K;
    let kind = error.kind();
    let message = error.to_string();
    match error {
        K::NoIdentity | K::NoEngine | K::Config(_) => kest_err(Family::Configuration, kind, message, &[]),
        K::Denied { .. } | K::PolicyFailed { .. } | K::NoPolicyEvaluated { .. } => {
            let extra: Vec<(&str, PyObject)> = Python::attach(|py| {
                let mut v = Vec::new();
                if let Some((policy, tier)) = error.policy() {
                    v.push(("policy", policy.into_pyobject(py).map(|o| o.into_any().unbind())));
                    v.push(("tier", tier.as_str().into_pyobject(py).map(|o| o.into_any().unbind())));
                }
                v.into_iter().filter_map(|(k, o)| o.ok().map(|o| (k, o))).collect()
            });
            kest_err(Family::PolicyDenied, kind, message, &extra)
        }
        K::NotReady { .. } => kest_err(Family::Identity, kind, message, &[]),
        K::Unrecorded { .. } => kest_err(Family::Unrecorded, kind, message, &[]),
        _ => kest_err(Family::Other, kind, message, &[]),
    }
}

/// Maps a verification error (kind and entry index).
pub(crate) fn from_verify(error: &kest_core::VerifyError) -> PyErr {
    let extra: Vec<(&str, PyObject)> = Python::attach(|py| {
        error
            .index()
            .and_then(|i| i.into_pyobject(py).ok())
            .map(|o| vec![("index", o.into_any().unbind())])
            .unwrap_or_default()
    });
    kest_err(Family::Verification, error.kind().as_str(), error.to_string(), &extra)
}

/// Maps a propagation error (kind and the HTTP status a server answers).
pub(crate) fn from_propagation(error: &kest::propagation::PropagationError) -> PyErr {
    let extra: Vec<(&str, PyObject)> = Python::attach(|py| {
        error
            .http_status()
            .into_pyobject(py)
            .map(|o| vec![("http_status", o.into_any().unbind())])
            .unwrap_or_default()
    });
    kest_err(Family::Baggage, error.kind(), error.to_string(), &extra)
}

/// A configuration error with a message.
pub(crate) fn config(message: impl Into<String>) -> PyErr {
    kest_err(Family::Configuration, "config", message.into(), &[])
}

/// An identity error with a message.
pub(crate) fn identity(message: impl Into<String>) -> PyErr {
    kest_err(Family::Identity, "identity", message.into(), &[])
}
