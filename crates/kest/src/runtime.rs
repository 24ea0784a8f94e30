//! The `Kest` runtime: everything the hook needs, built once at start-up
//! (SPEC §5 step 1, §6.3).
//!
//! Tier policy lists and deviations come only from here (code, a TOML file
//! or `KEST_*` environment variables), never from a hook call site, so a
//! developer cannot exempt their own function.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use kest_core::{OriginMap, TrustEvaluator, TrustRules, WeakestLink};
use serde::Deserialize;

use crate::identity::IdentityProvider;
use crate::policy::cache::{TTL_ENV, parse_ttl};
use crate::policy::{DecisionCache, PolicyEngine, Tier};
use crate::telemetry::{Exporter, TelemetryConfig};

/// A configuration problem (raised when building, never at call time).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A value is invalid.
    #[error("{0}")]
    Invalid(String),
    /// The configuration file could not be read or parsed.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
}

/// An approved exception: skips one policy of one tier for one scope.
///
/// The scope is a *qualified* operation name (`module::path::fn`, as
/// `#[kest::verified]` records it, or the operation name given explicitly
/// to [`crate::Verified::builder`] / the macro's `operation`), or the
/// application name: a function elsewhere with the same bare name is not
/// covered.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviationRule {
    /// The operation name or application the deviation applies to.
    pub scope: String,
    /// The skipped policy.
    pub policy: String,
    /// Its tier (`enterprise`, `platform`, `application`/`app`, `function`).
    pub tier: Tier,
    /// Why it was approved.
    pub reason: Option<String>,
    /// Who approved it.
    pub approver: Option<String>,
}

/// Everything a hooked call needs: identity, engine, decision cache, trust
/// rules, tier policies and deviations.
///
/// ```
/// use std::sync::Arc;
/// use kest::policy::MockPolicyEngine;
/// use kest::Kest;
/// let kest = Kest::builder()
///     .engine(Arc::new(MockPolicyEngine::allow_all()))
///     .enterprise_policies(["no_pii_egress"])
///     .build()
///     .unwrap();
/// assert_eq!(kest.tier_policies(kest::policy::Tier::Enterprise), ["no_pii_egress"]);
/// ```
#[derive(Debug, Clone)]
pub struct Kest {
    pub(crate) identity: Option<Arc<dyn IdentityProvider>>,
    pub(crate) engine: Option<Arc<dyn PolicyEngine>>,
    pub(crate) cache: Arc<DecisionCache>,
    pub(crate) trust: TrustRules,
    pub(crate) enterprise: Vec<String>,
    pub(crate) platform: Vec<String>,
    pub(crate) application: Vec<String>,
    pub(crate) deviations: Vec<DeviationRule>,
    pub(crate) app_name: Option<String>,
    pub(crate) allow_fully_deviated: bool,
    pub(crate) telemetry: Option<TelemetryConfig>,
}

impl Kest {
    /// A builder with no identity, no engine, a 5 s decision cache and the
    /// default trust rules.
    pub fn builder() -> KestBuilder {
        KestBuilder::default()
    }

    /// The configured identity.
    pub fn identity(&self) -> Option<&Arc<dyn IdentityProvider>> {
        self.identity.as_ref()
    }

    /// The configured engine.
    pub fn engine(&self) -> Option<&Arc<dyn PolicyEngine>> {
        self.engine.as_ref()
    }

    /// The decision cache.
    pub fn cache(&self) -> &DecisionCache {
        &self.cache
    }

    /// Forgets all cached decisions.
    pub fn invalidate(&self) {
        self.cache.invalidate();
    }

    /// The trust rules.
    pub fn trust_rules(&self) -> &TrustRules {
        &self.trust
    }

    /// The configured policies of a tier (`Function` has none here: they
    /// come from the hook).
    pub fn tier_policies(&self, tier: Tier) -> &[String] {
        match tier {
            Tier::Enterprise => &self.enterprise,
            Tier::Platform => &self.platform,
            Tier::Application => &self.application,
            Tier::Function => &[],
        }
    }

    /// The deviations active for an operation's scope name (its qualified
    /// name, see [`crate::Verified::scope_name`]) or the application name.
    pub fn active_deviations(&self, scope_name: &str) -> Vec<&DeviationRule> {
        self.deviations
            .iter()
            .filter(|d| d.scope == scope_name || self.app_name.as_deref() == Some(d.scope.as_str()))
            .collect()
    }

    /// Whether a call whose deviations skip every policy may run (default
    /// `false`: it is refused with `no_policy_evaluated`).
    pub fn allows_fully_deviated(&self) -> bool {
        self.allow_fully_deviated
    }

    /// The telemetry configuration (service name and exporters), when
    /// exporters are configured; install it with
    /// `kest::telemetry::init_from_config` (feature `telemetry`).
    ///
    /// ```
    /// # #[cfg(feature = "telemetry")] {
    /// let kest = kest::Kest::builder()
    ///     .telemetry("svc", [kest::telemetry::Exporter::Stdout])
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(kest.telemetry().unwrap().service_name(), "svc");
    /// # }
    /// assert!(kest::Kest::builder().build().unwrap().telemetry().is_none());
    /// ```
    pub fn telemetry(&self) -> Option<&TelemetryConfig> {
        self.telemetry.as_ref()
    }
}

/// Builder for [`Kest`].
#[derive(Debug, Default)]
pub struct KestBuilder {
    identity: Option<Arc<dyn IdentityProvider>>,
    engine: Option<Arc<dyn PolicyEngine>>,
    cache_ttl: Option<Duration>,
    cache_capacity: Option<usize>,
    evaluator: Option<Arc<dyn TrustEvaluator>>,
    origins: Vec<(String, i64)>,
    default_root_origin: Option<String>,
    enterprise: Vec<String>,
    platform: Vec<String>,
    application: Vec<String>,
    deviations: Vec<DeviationRule>,
    app_name: Option<String>,
    allow_fully_deviated: bool,
    service_name: Option<String>,
    exporters: Option<Vec<Exporter>>,
}

fn names<I: IntoIterator<Item = S>, S: Into<String>>(list: I) -> Vec<String> {
    list.into_iter().map(Into::into).collect()
}

impl KestBuilder {
    /// The workload identity that signs entries.
    pub fn identity(mut self, identity: Arc<dyn IdentityProvider>) -> Self {
        self.identity = Some(identity);
        self
    }
    /// The policy engine.
    pub fn engine(mut self, engine: Arc<dyn PolicyEngine>) -> Self {
        self.engine = Some(engine);
        self
    }
    /// Decision-cache TTL (zero disables caching; default: `KEST_POLICY_CACHE_TTL` or 5 s).
    pub fn cache_ttl(mut self, ttl: Duration) -> Self {
        self.cache_ttl = Some(ttl);
        self
    }
    /// Decision-cache capacity (default 4096).
    pub fn cache_capacity(mut self, capacity: usize) -> Self {
        self.cache_capacity = Some(capacity);
        self
    }
    /// The trust evaluator for non-root entries (default weakest link).
    pub fn trust_evaluator(mut self, evaluator: Arc<dyn TrustEvaluator>) -> Self {
        self.evaluator = Some(evaluator);
        self
    }
    /// Adds a deployment origin (the seven defaults cannot be overridden).
    pub fn origin(mut self, name: impl Into<String>, score: i64) -> Self {
        self.origins.push((name.into(), score));
        self
    }
    /// The origin assumed at a root when a call names none.
    pub fn default_root_origin(mut self, origin: impl Into<String>) -> Self {
        self.default_root_origin = Some(origin.into());
        self
    }
    /// Enterprise-tier policies, evaluated first on every call.
    pub fn enterprise_policies<I: IntoIterator<Item = S>, S: Into<String>>(mut self, list: I) -> Self {
        self.enterprise = names(list);
        self
    }
    /// Platform-tier policies.
    pub fn platform_policies<I: IntoIterator<Item = S>, S: Into<String>>(mut self, list: I) -> Self {
        self.platform = names(list);
        self
    }
    /// Application-tier policies.
    pub fn app_policies<I: IntoIterator<Item = S>, S: Into<String>>(mut self, list: I) -> Self {
        self.application = names(list);
        self
    }
    /// An approved deviation.
    pub fn deviation(mut self, rule: DeviationRule) -> Self {
        self.deviations.push(rule);
        self
    }
    /// The application name (a deviation scope).
    pub fn app_name(mut self, name: impl Into<String>) -> Self {
        self.app_name = Some(name.into());
        self
    }
    /// Lets a call run when deviations skip *every* one of its policies
    /// (default: refused with `no_policy_evaluated`). The signed entry still
    /// records every deviation used.
    pub fn allow_fully_deviated(mut self, allow: bool) -> Self {
        self.allow_fully_deviated = allow;
        self
    }

    /// The telemetry service name and exporters (see
    /// [`crate::telemetry::TelemetryConfig`]); an empty list turns telemetry
    /// off. Checked by [`build`](KestBuilder::build): an exporter whose
    /// feature is not compiled in is an error.
    ///
    /// ```
    /// let kest = kest::Kest::builder().telemetry("svc", []).build().unwrap();
    /// assert!(kest.telemetry().is_none());
    /// ```
    pub fn telemetry(
        mut self,
        service_name: impl Into<String>,
        exporters: impl IntoIterator<Item = Exporter>,
    ) -> Self {
        self.service_name = Some(service_name.into());
        self.exporters = Some(exporters.into_iter().collect());
        self
    }

    /// Applies `KEST_*` environment variables over what is set so far:
    /// `KEST_ENTERPRISE_POLICIES`, `KEST_PLATFORM_POLICIES`,
    /// `KEST_APP_POLICIES` (comma-separated), `KEST_APP_NAME`,
    /// `KEST_DEFAULT_ORIGIN`, `KEST_ORIGINS` (`name=score,...`),
    /// `KEST_DEVIATIONS` (a JSON array of deviation objects),
    /// `KEST_ALLOW_FULLY_DEVIATED` (`true`/`false`),
    /// `KEST_POLICY_CACHE_TTL` (seconds), and for telemetry
    /// `KEST_TELEMETRY_EXPORTERS` (comma-separated exporter strings, see
    /// [`Exporter`]) and `KEST_SERVICE_NAME` (when unset, `OTEL_SERVICE_NAME`
    /// if no service name was configured before).
    pub fn with_env(self) -> Result<Self, ConfigError> {
        self.with_env_lookup(|k| std::env::var(k).ok())
    }

    /// [`KestBuilder::with_env`] with an injected variable lookup.
    pub fn with_env_lookup(mut self, var: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let list = |raw: String| -> Vec<String> {
            raw.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect()
        };
        if let Some(v) = var("KEST_ENTERPRISE_POLICIES") {
            self.enterprise = list(v);
        }
        if let Some(v) = var("KEST_PLATFORM_POLICIES") {
            self.platform = list(v);
        }
        if let Some(v) = var("KEST_APP_POLICIES") {
            self.application = list(v);
        }
        if let Some(v) = var("KEST_APP_NAME") {
            self.app_name = Some(v);
        }
        if let Some(v) = var("KEST_ALLOW_FULLY_DEVIATED") {
            self.allow_fully_deviated = match v.trim() {
                "true" | "1" => true,
                "false" | "0" | "" => false,
                other => {
                    return Err(ConfigError::Invalid(format!(
                        "KEST_ALLOW_FULLY_DEVIATED: `{other}` is not true or false"
                    )));
                }
            };
        }
        if let Some(v) = var("KEST_DEFAULT_ORIGIN") {
            self.default_root_origin = Some(v);
        }
        if let Some(v) = var("KEST_ORIGINS") {
            for spec in list(v) {
                let (name, score) = spec.split_once('=').ok_or_else(|| {
                    ConfigError::Invalid(format!("KEST_ORIGINS: `{spec}` is not name=score"))
                })?;
                let score = score.trim().parse().map_err(|_| {
                    ConfigError::Invalid(format!("KEST_ORIGINS: `{spec}` score is not an integer"))
                })?;
                self.origins.push((name.trim().to_owned(), score));
            }
        }
        if let Some(v) = var("KEST_DEVIATIONS") {
            let rules: Vec<DeviationRule> = serde_json::from_str(&v)
                .map_err(|e| ConfigError::Invalid(format!("KEST_DEVIATIONS: {e}")))?;
            self.deviations.extend(rules);
        }
        if let Some(v) = var(TTL_ENV) {
            self.cache_ttl = Some(parse_ttl(&v).map_err(|e| ConfigError::Invalid(e.to_string()))?);
        }
        if let Some(v) = var("KEST_TELEMETRY_EXPORTERS") {
            let list = if v.trim().is_empty() {
                Vec::new()
            } else {
                Exporter::parse_list(&v, &var)
                    .map_err(|e| ConfigError::Invalid(format!("KEST_TELEMETRY_EXPORTERS: {e}")))?
            };
            self.exporters = Some(list);
        }
        if let Some(v) = var("KEST_SERVICE_NAME") {
            self.service_name = Some(v);
        } else if self.service_name.is_none()
            && let Some(v) = var("OTEL_SERVICE_NAME")
        {
            self.service_name = Some(v);
        }
        Ok(self)
    }

    /// Applies a TOML configuration file (see [`FileConfig`]).
    pub fn with_toml_file(self, path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::File { path: path.display().to_string(), message: e.to_string() })?;
        self.with_toml_str(&text)
            .map_err(|e| ConfigError::File { path: path.display().to_string(), message: e.to_string() })
    }

    /// Applies TOML configuration text (see [`FileConfig`]).
    pub fn with_toml_str(mut self, text: &str) -> Result<Self, ConfigError> {
        let file: FileConfig = toml::from_str(text).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        if let Some(p) = file.policies {
            if let Some(v) = p.enterprise {
                self.enterprise = v;
            }
            if let Some(v) = p.platform {
                self.platform = v;
            }
            if let Some(v) = p.application {
                self.application = v;
            }
        }
        self.deviations.extend(file.deviations);
        if let Some(t) = file.trust {
            for (name, score) in t.origins {
                self.origins.push((name, score));
            }
            if let Some(o) = t.default_root_origin {
                self.default_root_origin = Some(o);
            }
        }
        if let Some(c) = file.cache {
            if let Some(ttl) = c.ttl_seconds {
                self.cache_ttl =
                    Some(Duration::try_from_secs_f64(ttl).map_err(|_| {
                        ConfigError::Invalid(format!("cache.ttl_seconds {ttl} is not valid"))
                    })?);
            }
            if let Some(cap) = c.capacity {
                self.cache_capacity = Some(cap);
            }
        }
        if let Some(name) = file.app_name {
            self.app_name = Some(name);
        }
        if let Some(allow) = file.allow_fully_deviated {
            self.allow_fully_deviated = allow;
        }
        if let Some(t) = file.telemetry {
            if let Some(name) = t.service_name {
                self.service_name = Some(name);
            }
            if let Some(list) = t.exporters {
                let env = |k: &str| std::env::var(k).ok();
                self.exporters = Some(
                    list.iter()
                        .map(|spec| Exporter::parse_with_env(spec, env))
                        .collect::<Result<_, _>>()
                        .map_err(|e| ConfigError::Invalid(format!("telemetry.exporters: {e}")))?,
                );
            }
        }
        Ok(self)
    }

    /// Validates and builds.
    pub fn build(self) -> Result<Kest, ConfigError> {
        let mut origins = OriginMap::default();
        for (name, score) in &self.origins {
            origins.register(name, *score).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        }
        if let Some(o) = &self.default_root_origin
            && origins.score(o).is_none()
        {
            return Err(ConfigError::Invalid(format!("default root origin `{o}` is not a known origin")));
        }
        for d in &self.deviations {
            if d.scope.is_empty() || d.policy.is_empty() {
                return Err(ConfigError::Invalid("a deviation needs a scope and a policy".into()));
            }
        }
        for (tier, list) in [
            ("enterprise", &self.enterprise),
            ("platform", &self.platform),
            ("application", &self.application),
        ] {
            if list.iter().any(String::is_empty) {
                return Err(ConfigError::Invalid(format!("{tier} policy names must not be empty")));
            }
        }
        let ttl = match self.cache_ttl {
            Some(t) => t,
            None => DecisionCache::ttl_from_env().map_err(|e| ConfigError::Invalid(e.to_string()))?,
        };
        let telemetry = match self.exporters {
            Some(list) if !list.is_empty() => {
                for exporter in &list {
                    let compiled = [
                        ("otlp", cfg!(feature = "otlp")),
                        ("sqlite", cfg!(feature = "sqlite")),
                        ("telemetry", cfg!(feature = "telemetry")),
                    ]
                    .iter()
                    .any(|(feature, on)| *on && *feature == exporter.feature());
                    if !compiled {
                        return Err(ConfigError::Invalid(format!(
                            "telemetry exporter `{exporter}` needs the `{}` feature of kest",
                            exporter.feature()
                        )));
                    }
                }
                let name = self.service_name.ok_or_else(|| {
                    ConfigError::Invalid(
                        "telemetry: exporters are configured but no service name (set [telemetry] \
                         service_name, KEST_SERVICE_NAME or OTEL_SERVICE_NAME)"
                            .into(),
                    )
                })?;
                Some(TelemetryConfig::new(name, list)?)
            }
            _ => None,
        };
        Ok(Kest {
            telemetry,
            identity: self.identity,
            engine: self.engine,
            cache: Arc::new(DecisionCache::new(ttl, self.cache_capacity.unwrap_or(4096))),
            trust: TrustRules {
                origins,
                evaluator: self.evaluator.unwrap_or_else(|| Arc::new(WeakestLink)),
                default_root_origin: self.default_root_origin,
            },
            enterprise: self.enterprise,
            platform: self.platform,
            application: self.application,
            deviations: self.deviations,
            app_name: self.app_name,
            allow_fully_deviated: self.allow_fully_deviated,
        })
    }
}

/// The TOML configuration file.
///
/// ```toml
/// app_name = "support-bot"
/// [policies]
/// enterprise = ["no_pii_egress"]
/// platform = []
/// application = ["kest/allow"]
/// [[deviations]]
/// scope = "export_report"
/// policy = "no_pii_egress"
/// tier = "enterprise"
/// reason = "legal hold export"
/// approver = "ciso@example.com"
/// [trust]
/// default_root_origin = "internal"
/// origins = { partner_feed = 70 }
/// [cache]
/// ttl_seconds = 5
/// capacity = 4096
/// [telemetry]
/// service_name = "support-bot"
/// exporters = ["file:/var/log/kest/spans.jsonl", "otlp"]
/// ```
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Application name (a deviation scope).
    pub app_name: Option<String>,
    /// Whether a call whose deviations skip every policy may run.
    pub allow_fully_deviated: Option<bool>,
    /// Tier policy lists.
    pub policies: Option<FilePolicies>,
    /// Deviations.
    #[serde(default)]
    pub deviations: Vec<DeviationRule>,
    /// Trust settings.
    pub trust: Option<FileTrust>,
    /// Decision cache settings.
    pub cache: Option<FileCache>,
    /// Telemetry export.
    pub telemetry: Option<FileTelemetry>,
}

/// `[telemetry]`: the service name (resource `service.name`) and the
/// exporters, as strings (`file:PATH`, `sqlite:PATH`, `stdout`, `otlp`,
/// `otlp-grpc[:URL]`, `otlp-http[:URL]`; see [`Exporter`]).
///
/// ```
/// let file: kest::runtime::FileConfig =
///     toml::from_str("[telemetry]\nservice_name = \"svc\"\nexporters = [\"stdout\"]").unwrap();
/// assert_eq!(file.telemetry.unwrap().exporters.unwrap(), ["stdout"]);
/// ```
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileTelemetry {
    /// The service name.
    pub service_name: Option<String>,
    /// The exporters (an empty list turns telemetry off).
    pub exporters: Option<Vec<String>>,
}

/// `[policies]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilePolicies {
    /// Enterprise tier.
    pub enterprise: Option<Vec<String>>,
    /// Platform tier.
    pub platform: Option<Vec<String>>,
    /// Application tier.
    pub application: Option<Vec<String>>,
}

/// `[trust]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileTrust {
    /// Extra origins.
    #[serde(default)]
    pub origins: std::collections::BTreeMap<String, i64>,
    /// Default root origin.
    pub default_root_origin: Option<String>,
}

/// `[cache]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileCache {
    /// TTL in seconds (0 disables).
    pub ttl_seconds: Option<f64>,
    /// Capacity.
    pub capacity: Option<usize>,
}

static GLOBAL: ArcSwapOption<Kest> = ArcSwapOption::const_empty();

/// Installs the process-wide default runtime (per-call overrides still win).
pub fn configure(kest: Kest) -> Arc<Kest> {
    let kest = Arc::new(kest);
    GLOBAL.store(Some(Arc::clone(&kest)));
    kest
}

/// The process-wide default runtime, if configured.
pub fn global() -> Option<Arc<Kest>> {
    GLOBAL.load_full()
}

/// Removes the process-wide default (mainly for tests).
pub fn reset_global() {
    GLOBAL.store(None);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_file_sets_tiers_deviations_trust_and_cache() {
        let kest = Kest::builder()
            .with_toml_str(
                r#"
                app_name = "support-bot"
                [policies]
                enterprise = ["no_pii_egress"]
                application = ["kest/allow"]
                [[deviations]]
                scope = "export_report"
                policy = "no_pii_egress"
                tier = "enterprise"
                reason = "legal hold"
                approver = "ciso@example.com"
                [trust]
                default_root_origin = "partner_feed"
                origins = { partner_feed = 70 }
                [cache]
                ttl_seconds = 0
                "#,
            )
            .unwrap()
            .build()
            .unwrap();
        assert_eq!(kest.tier_policies(Tier::Enterprise), ["no_pii_egress"]);
        assert_eq!(kest.tier_policies(Tier::Application), ["kest/allow"]);
        assert!(kest.tier_policies(Tier::Platform).is_empty());
        assert_eq!(kest.active_deviations("export_report").len(), 1);
        assert!(kest.active_deviations("other").is_empty());
        assert_eq!(kest.trust_rules().origins.score("partner_feed"), Some(70));
        assert!(!kest.cache().enabled());
    }

    #[test]
    fn unknown_toml_keys_and_bad_values_are_errors() {
        assert!(Kest::builder().with_toml_str("[policies]\nenterprize = []").is_err());
        let bad_tier = "[[deviations]]\nscope = \"x\"\npolicy = \"p\"\ntier = \"galactic\"";
        assert!(
            Kest::builder().with_toml_str(bad_tier).is_err(),
            "a tier is typed: unknown names are refused"
        );
        let protected = "[trust]\norigins = { internet = 100 }";
        assert!(Kest::builder().with_toml_str(protected).unwrap().build().is_err(), "defaults are protected");
        let unknown_default = "[trust]\ndefault_root_origin = \"nowhere\"";
        assert!(Kest::builder().with_toml_str(unknown_default).unwrap().build().is_err());
    }

    #[test]
    fn environment_variables_override() {
        let env = |k: &str| match k {
            "KEST_ENTERPRISE_POLICIES" => Some("a, b".to_owned()),
            "KEST_APP_POLICIES" => Some("c".to_owned()),
            "KEST_ORIGINS" => Some("partner=55".to_owned()),
            "KEST_POLICY_CACHE_TTL" => Some("2.5".to_owned()),
            "KEST_DEVIATIONS" => Some(
                r#"[{"scope":"op","policy":"a","tier":"enterprise","reason":null,"approver":"x"}]"#
                    .to_owned(),
            ),
            _ => None,
        };
        let kest =
            Kest::builder().enterprise_policies(["old"]).with_env_lookup(env).unwrap().build().unwrap();
        assert_eq!(kest.tier_policies(Tier::Enterprise), ["a", "b"]);
        assert_eq!(kest.tier_policies(Tier::Application), ["c"]);
        assert_eq!(kest.trust_rules().origins.score("partner"), Some(55));
        assert_eq!(kest.cache().ttl(), Duration::from_millis(2500));
        assert_eq!(kest.active_deviations("op").len(), 1);

        let bad = |k: &str| (k == "KEST_POLICY_CACHE_TTL").then(|| "soon".to_owned());
        assert!(Kest::builder().with_env_lookup(bad).is_err(), "a malformed TTL is an error, not a default");
        let bad = |k: &str| (k == "KEST_DEVIATIONS").then(|| "[{\"scope\":1}]".to_owned());
        assert!(Kest::builder().with_env_lookup(bad).is_err());
    }

    #[test]
    fn configure_installs_the_global_default() {
        let kest = configure(Kest::builder().app_name("global-test").build().unwrap());
        assert!(global().is_some_and(|g| Arc::ptr_eq(&g, &kest)));
    }

    #[test]
    #[cfg(all(feature = "telemetry", feature = "sqlite", feature = "otlp"))]
    fn telemetry_from_toml_and_environment() {
        use crate::telemetry::OtlpProtocol;
        let toml = "[telemetry]\nservice_name = \"svc\"\nexporters = [\"file:/tmp/a,b.jsonl\", \"sqlite:/tmp/s.db\", \
                    \"otlp-http:http://127.0.0.1:4318/v1/traces\"]";
        let kest = Kest::builder().with_toml_str(toml).unwrap().build().unwrap();
        let t = kest.telemetry().unwrap();
        assert_eq!(t.service_name(), "svc");
        assert_eq!(
            t.exporters(),
            [
                Exporter::File("/tmp/a,b.jsonl".into()),
                Exporter::Sqlite("/tmp/s.db".into()),
                Exporter::Otlp {
                    protocol: OtlpProtocol::HttpProtobuf,
                    endpoint: Some("http://127.0.0.1:4318/v1/traces".into())
                },
            ]
        );
        // The environment overrides the file; KEST_SERVICE_NAME wins over
        // OTEL_SERVICE_NAME, which only fills a missing name.
        let env = |k: &str| match k {
            "KEST_TELEMETRY_EXPORTERS" => Some("stdout, otlp".into()),
            "OTEL_EXPORTER_OTLP_PROTOCOL" => Some("http/protobuf".into()),
            "OTEL_SERVICE_NAME" => Some("otel-name".into()),
            _ => None,
        };
        let kest =
            Kest::builder().with_toml_str(toml).unwrap().with_env_lookup(env).unwrap().build().unwrap();
        let t = kest.telemetry().unwrap();
        assert_eq!(t.service_name(), "svc");
        assert_eq!(
            t.exporters(),
            [Exporter::Stdout, Exporter::Otlp { protocol: OtlpProtocol::HttpProtobuf, endpoint: None }]
        );
        let kest = Kest::builder().with_env_lookup(env).unwrap().build().unwrap();
        assert_eq!(kest.telemetry().unwrap().service_name(), "otel-name");
        let named = |k: &str| if k == "KEST_SERVICE_NAME" { Some("kest-name".into()) } else { env(k) };
        let kest = Kest::builder().with_env_lookup(named).unwrap().build().unwrap();
        assert_eq!(kest.telemetry().unwrap().service_name(), "kest-name");
        // An empty list turns telemetry off.
        let off = |k: &str| (k == "KEST_TELEMETRY_EXPORTERS").then(String::new);
        assert!(
            Kest::builder()
                .with_toml_str(toml)
                .unwrap()
                .with_env_lookup(off)
                .unwrap()
                .build()
                .unwrap()
                .telemetry()
                .is_none()
        );
    }

    #[test]
    fn bad_telemetry_configuration_is_an_error() {
        for toml in [
            "[telemetry]\nexporters = [\"zipkin\"]",
            "[telemetry]\nexporters = [\"sqlite:\"]",
            "[telemetry]\nexporters = [\"stdout:x\"]",
            "[telemetry]\nexporters = [\"otlp-grpc:localhost:4317\"]",
            "[telemetry]\nexporter = [\"stdout\"]",
        ] {
            assert!(Kest::builder().with_toml_str(toml).is_err(), "{toml}");
        }
        let env = |v: &'static str| move |k: &str| (k == "KEST_TELEMETRY_EXPORTERS").then(|| v.to_owned());
        assert!(Kest::builder().with_env_lookup(env("stdout,")).is_err());
        let protocol = |k: &str| match k {
            "KEST_TELEMETRY_EXPORTERS" => Some("otlp".into()),
            "OTEL_EXPORTER_OTLP_PROTOCOL" => Some("http/json".into()),
            _ => None,
        };
        assert!(Kest::builder().with_env_lookup(protocol).is_err(), "unsupported protocol");
        // Exporters without a service name.
        assert!(Kest::builder().with_env_lookup(env("stdout")).unwrap().build().is_err());
        // An exporter whose feature is not compiled in.
        let sqlite = Kest::builder().telemetry("svc", [Exporter::Sqlite("/tmp/x.db".into())]).build();
        assert_eq!(sqlite.is_ok(), cfg!(feature = "sqlite"));
    }
}
