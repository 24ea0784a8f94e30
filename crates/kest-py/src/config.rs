//! `configure(...)`: the process-wide runtime (identity, engine, tier
//! policies, deviations, trust rules), installed as `kest::configure`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kest::Kest;
use kest::identity::IdentityProvider;
use kest::policy::PolicyEngine;
use kest::runtime::DeviationRule;
use pyo3::prelude::*;

use crate::convert::to_json;
use crate::engine::Engine;
use crate::errors;
use crate::identity::Identity;

/// What `configure` has been given so far (unset parameters keep their
/// values, as in the reference).
#[derive(Debug, Default, Clone)]
struct Settings {
    identity: Option<Arc<dyn IdentityProvider>>,
    engine: Option<Arc<dyn PolicyEngine>>,
    enterprise: Vec<String>,
    platform: Vec<String>,
    application: Vec<String>,
    deviations: Vec<DeviationRule>,
    origins: BTreeMap<String, i64>,
    default_root_origin: Option<String>,
    cache_ttl: Option<Duration>,
    app_name: Option<String>,
    allow_fully_deviated: bool,
}

static SETTINGS: Mutex<Option<Settings>> = Mutex::new(None);

/// Configures the process-wide runtime. Parameters not given keep their
/// values; `clear=True` resets everything first. There is no silent
/// default identity: without one, protected calls raise
/// `ConfigurationError(kind="no_identity")`.
#[pyfunction]
#[pyo3(signature = (identity = None, engine = None, *, enterprise_policies = None, platform_policies = None, app_policies = None, deviations = None, origins = None, default_root_origin = None, cache_ttl = None, app_name = None, allow_fully_deviated = None, clear = false))]
#[allow(clippy::too_many_arguments)]
pub fn configure(
    identity: Option<&Bound<'_, Identity>>,
    engine: Option<&Bound<'_, Engine>>,
    enterprise_policies: Option<Vec<String>>,
    platform_policies: Option<Vec<String>>,
    app_policies: Option<Vec<String>>,
    deviations: Option<Vec<Bound<'_, PyAny>>>,
    origins: Option<BTreeMap<String, i64>>,
    default_root_origin: Option<String>,
    cache_ttl: Option<f64>,
    app_name: Option<String>,
    allow_fully_deviated: Option<bool>,
    clear: bool,
) -> PyResult<()> {
    let mut guard = SETTINGS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut s = if clear { Settings::default() } else { guard.clone().unwrap_or_default() };
    if let Some(i) = identity {
        s.identity = Some(Arc::clone(&i.get().inner));
    }
    if let Some(e) = engine {
        s.engine = Some(Arc::clone(&e.get().inner));
    }
    if let Some(v) = enterprise_policies {
        s.enterprise = v;
    }
    if let Some(v) = platform_policies {
        s.platform = v;
    }
    if let Some(v) = app_policies {
        s.application = v;
    }
    if let Some(list) = deviations {
        s.deviations = list
            .iter()
            .map(|d| {
                serde_json::from_value::<DeviationRule>(to_json(d)?)
                    .map_err(|e| errors::config(format!("bad deviation: {e}")))
            })
            .collect::<PyResult<_>>()?;
    }
    if let Some(o) = origins {
        s.origins = o;
    }
    if let Some(o) = default_root_origin {
        s.default_root_origin = Some(o);
    }
    if let Some(t) = cache_ttl {
        s.cache_ttl = Some(
            Duration::try_from_secs_f64(t)
                .map_err(|_| errors::config("cache_ttl must be a non-negative number"))?,
        );
    }
    if let Some(n) = app_name {
        s.app_name = Some(n);
    }
    if let Some(a) = allow_fully_deviated {
        s.allow_fully_deviated = a;
    }
    let mut b = Kest::builder()
        .enterprise_policies(s.enterprise.clone())
        .platform_policies(s.platform.clone())
        .app_policies(s.application.clone())
        .allow_fully_deviated(s.allow_fully_deviated);
    if let Some(i) = &s.identity {
        b = b.identity(Arc::clone(i));
    }
    if let Some(e) = &s.engine {
        b = b.engine(Arc::clone(e));
    }
    for d in &s.deviations {
        b = b.deviation(d.clone());
    }
    for (name, score) in &s.origins {
        b = b.origin(name.clone(), *score);
    }
    if let Some(o) = &s.default_root_origin {
        b = b.default_root_origin(o.clone());
    }
    if let Some(t) = s.cache_ttl {
        b = b.cache_ttl(t);
    }
    if let Some(n) = &s.app_name {
        b = b.app_name(n.clone());
    }
    let kest = b.build().map_err(|e| errors::config(e.to_string()))?;
    kest::configure(kest);
    *guard = Some(s);
    Ok(())
}

/// Drops every cached policy decision of the process runtime (after a
/// policy reload).
#[pyfunction]
pub fn invalidate_policy_cache() {
    if let Some(k) = kest::global() {
        k.invalidate();
    }
}
