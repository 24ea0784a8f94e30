//! In-process Rego policy engine on [`regorus`] (SPEC §6.2, feature `rego`).
//!
//! A policy name maps to one Rego package; the decision is the rule
//! `data.<package>.<rule>` (rule `allow` unless configured), and it is
//! [`Decision::Allow`] only when that value is exactly the boolean `true`
//! (undefined, `false` or any other value deny). Every module is parsed and
//! the engine prepared at construction, so a syntax error is a construction
//! error ([`PolicyError::Compile`] naming the policy).
//!
//! Evaluation is safe from many threads at once: the prepared interpreter is
//! never shared mutably. Each evaluation takes a prepared copy from a small
//! pool (or clones the prepared original when the pool is empty), sets the
//! input on that copy and returns it to the pool afterwards; the pool's lock
//! is held only to pop or push, never while a policy runs. (The reference
//! shares one interpreter and races on `set_input`.) Reusing pooled copies
//! measured as fast as cloning per call with one module and about 30 %
//! faster with 40 modules (a clone's cost grows with the policy set).
//! Each evaluation has a wall-clock budget ([`DEFAULT_TIME_LIMIT`]).
//!
//! Built-ins: the OPA core plus `regex.*`, `glob.*`, `net.*`, `semver.*`,
//! `graph.*` / `walk`, `json.patch`, `base64*`, `hex.*` and `opa.runtime`;
//! not `time.*` (it would add `chrono` and `chrono-tz`), `http.send`,
//! `uuid.*`, `yaml.*` or JSON-schema functions. A call to a function that
//! does not exist is found only when evaluated (an evaluation error, so
//! deny).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;

use super::{Decision, PolicyEngine, PolicyError, PolicyInput};

/// The rule evaluated when none is configured for a policy.
pub const DEFAULT_RULE: &str = "allow";

/// The default wall-clock budget of one evaluation.
pub const DEFAULT_TIME_LIMIT: Duration = Duration::from_secs(1);

/// Rego keywords: a package component or rule named like one is written
/// with bracket notation in the query path.
const KEYWORDS: &[&str] = &[
    "as", "contains", "default", "else", "every", "false", "if", "import", "in", "not", "null", "package",
    "some", "true", "with",
];

/// The bundled Rego policies (`policies/rego/` at the repository root),
/// as `(policy name, module text)`, embedded at compile time so a demo
/// needs no files at run time.
///
/// | name | decision |
/// |------|----------|
/// | `kest/allow` | `input.trust_score >= 70` and `input.is_root == false` |
/// | `kest/send_email` | `subject.trust_score >= 50` and no `confidential` taint |
/// | `kest/no_pii_egress` | denies `send_*` operations whose subject carries the `pii` taint |
/// | `kest/<model>` | the seven models of the [policy library](super::library) (`policies/models/rego/`) |
///
/// ```
/// # #[cfg(feature = "rego")] {
/// use kest::policy::rego::{bundled_rego, RegoEngine};
/// let engine = RegoEngine::new(bundled_rego()).unwrap();
/// assert_eq!(engine.policy_names().len(), 3 + 7);
/// # }
/// ```
pub fn bundled_rego() -> Vec<(&'static str, &'static str)> {
    let mut policies = HISTORY_FREE.to_vec();
    policies.extend(super::library::rego_policies());
    policies
}

/// The bundled policies that never read `input.lineage`.
const HISTORY_FREE: [(&str, &str); 3] = [
    ("kest/allow", include_str!("../../../../policies/rego/kest_allow.rego")),
    ("kest/send_email", include_str!("../../../../policies/rego/send_email.rego")),
    ("kest/no_pii_egress", include_str!("../../../../policies/rego/no_pii_egress.rego")),
];

/// One named policy: the query that gives its decision.
#[derive(Debug)]
struct Compiled {
    /// `data.<package>.<rule>`, ready for `eval_rule`.
    query: String,
}

/// An in-process Rego engine (see the [module documentation](self)).
///
/// ```
/// # #[cfg(feature = "rego")] {
/// use kest::policy::{Decision, PolicyEngine, PolicyInput};
/// use kest::policy::rego::RegoEngine;
///
/// let engine = RegoEngine::builder()
///     .policy("kest/allow", "package kest.allow\nallow if input.trust_score >= 70")
///     .policy("kest/audit", "package kest.audit\ndefault ok := false\nok if input.subject.user == \"alice\"")
///     .rule("kest/audit", "ok")
///     .build()
///     .unwrap();
///
/// let ctx = kest::policy::context::example_context(); // trust score 40, user alice
/// let input = PolicyInput::new(ctx);
/// assert_eq!(engine.evaluate("kest/allow", &input).unwrap(), Decision::Deny);
/// assert_eq!(engine.evaluate("kest/audit", &input).unwrap(), Decision::Allow);
/// assert!(engine.evaluate("kest/other", &input).is_err()); // unknown policy
/// # }
/// ```
pub struct RegoEngine {
    name: String,
    policies: HashMap<String, Arc<Compiled>>,
    /// The prepared original, never evaluated after construction.
    prepared: regorus::Engine,
    /// Prepared copies ready for use; the lock guards only pop and push.
    pool: Mutex<Vec<regorus::Engine>>,
    pool_capacity: usize,
    history_free: std::collections::HashSet<String>,
}

impl std::fmt::Debug for RegoEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&String> = self.policies.keys().collect();
        names.sort();
        f.debug_struct("RegoEngine")
            .field("name", &self.name)
            .field("policies", &names)
            .finish_non_exhaustive()
    }
}

impl RegoEngine {
    /// Builds an engine from `(policy name, Rego module)` pairs, each module
    /// with the default rule [`DEFAULT_RULE`].
    ///
    /// ```
    /// # #[cfg(feature = "rego")] {
    /// use kest::policy::rego::RegoEngine;
    /// let engine = RegoEngine::new([("kest/allow", "package kest.allow\nallow := true")]).unwrap();
    /// assert_eq!(engine.policy_names(), vec!["kest/allow"]);
    /// # }
    /// ```
    pub fn new<N, T>(policies: impl IntoIterator<Item = (N, T)>) -> Result<RegoEngine, PolicyError>
    where
        N: Into<String>,
        T: Into<String>,
    {
        policies.into_iter().fold(RegoEngine::builder(), |b, (n, t)| b.policy(n, t)).build()
    }

    /// Builds an engine from every `*.rego` file under `dir` (see
    /// [`RegoEngineBuilder::directory`]).
    pub fn from_directory(dir: impl AsRef<Path>) -> Result<RegoEngine, PolicyError> {
        RegoEngine::builder().directory(dir).build()
    }

    /// A builder (rules, directories, data, limits, engine name).
    pub fn builder() -> RegoEngineBuilder {
        RegoEngineBuilder::default()
    }

    /// The policy names this engine answers for (sorted; directory policies
    /// appear under both their `/` and `.` names).
    pub fn policy_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.policies.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    /// The query that decides `policy` (`data.<package>.<rule>`), if known.
    pub fn decision_path(&self, policy: &str) -> Option<&str> {
        self.policies.get(policy).map(|c| c.query.as_str())
    }

    fn checkout(&self) -> regorus::Engine {
        let pooled = self.pool.lock().ok().and_then(|mut pool| pool.pop());
        pooled.unwrap_or_else(|| self.prepared.clone())
    }

    fn checkin(&self, mut engine: regorus::Engine) {
        // Do not keep the last caller's input alive in the pool.
        engine.set_input(regorus::Value::new_object());
        if let Ok(mut pool) = self.pool.lock()
            && pool.len() < self.pool_capacity
        {
            pool.push(engine);
        }
    }
}

impl PolicyEngine for RegoEngine {
    fn name(&self) -> &str {
        &self.name
    }

    fn reads_lineage(&self, policy: &str) -> bool {
        !self.history_free.contains(policy)
    }

    fn evaluate(&self, policy: &str, input: &PolicyInput) -> Result<Decision, PolicyError> {
        self.evaluate_json(policy, input.json())
    }
}

impl RegoEngine {
    /// Evaluates `policy`'s decision rule on any JSON `input` document (the
    /// path of [`PolicyEngine::evaluate`], which passes the §6.1 context;
    /// also for contexts built elsewhere — `kest policy eval`,
    /// [`library::evaluate`](super::library::evaluate) — and chain-level
    /// requirements over a whole passport, `kest verify --require`): allow
    /// only when it is exactly `true`.
    ///
    /// # Errors
    ///
    /// An unknown policy, an input Rego cannot represent, or an evaluation
    /// error.
    pub fn evaluate_json(&self, policy: &str, input: &serde_json::Value) -> Result<Decision, PolicyError> {
        let compiled =
            self.policies.get(policy).ok_or_else(|| PolicyError::UnknownPolicy(policy.to_owned()))?;
        let value = self.eval(policy, compiled.query.clone(), input)?;
        Ok(Decision::from_bool(value == serde_json::Value::Bool(true)))
    }

    /// The value of another rule of `policy`'s package (e.g. a `deny` set
    /// of reasons) on `input`; `null` when the rule is undefined.
    pub fn evaluate_rule(
        &self,
        policy: &str,
        rule: &str,
        input: &serde_json::Value,
    ) -> Result<serde_json::Value, PolicyError> {
        let compiled =
            self.policies.get(policy).ok_or_else(|| PolicyError::UnknownPolicy(policy.to_owned()))?;
        let package = compiled.query.rsplit_once('.').map_or("data", |(package, _)| package);
        self.eval(policy, format!("{package}.{rule}"), input)
    }

    fn eval(
        &self,
        policy: &str,
        query: String,
        input: &serde_json::Value,
    ) -> Result<serde_json::Value, PolicyError> {
        let fail = |message: String| PolicyError::Evaluation { policy: policy.to_owned(), message };
        let value = regorus::Value::deserialize(input)
            .map_err(|e| fail(format!("input is not representable in Rego: {e}")))?;
        let mut engine = self.checkout();
        engine.set_input(value);
        match engine.eval_rule(query) {
            Ok(value) => {
                self.checkin(engine);
                if value == regorus::Value::Undefined {
                    return Ok(serde_json::Value::Null);
                }
                serde_json::to_value(&value).map_err(|e| fail(format!("result is not JSON: {e}")))
            }
            // A failed evaluation (e.g. the time limit) drops its engine.
            Err(e) => Err(fail(format!("{e:#}"))),
        }
    }
}

/// Builds a [`RegoEngine`]; obtained from [`RegoEngine::builder`].
///
/// ```
/// # #[cfg(feature = "rego")] {
/// use std::time::Duration;
/// use kest::policy::rego::RegoEngine;
/// let engine = RegoEngine::builder()
///     .named("rego-enterprise")
///     .policy("kest/allow", "package kest.allow\nallow if input.environment.operation in data.allowed_ops")
///     .data(serde_json::json!({"allowed_ops": ["ask"]}))
///     .time_limit(Duration::from_millis(100))
///     .build()
///     .unwrap();
/// assert_eq!(engine.decision_path("kest/allow"), Some("data.kest.allow.allow"));
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct RegoEngineBuilder {
    name: String,
    policies: Vec<(String, String)>,
    directories: Vec<PathBuf>,
    rules: HashMap<String, String>,
    data: Vec<serde_json::Value>,
    time_limit: Option<Duration>,
    rego_v0: bool,
    pool_capacity: usize,
    history_free: std::collections::HashSet<String>,
}

impl Default for RegoEngineBuilder {
    fn default() -> RegoEngineBuilder {
        let threads = std::thread::available_parallelism().map_or(4, |n| n.get());
        RegoEngineBuilder {
            name: "rego".into(),
            policies: Vec::new(),
            directories: Vec::new(),
            rules: HashMap::new(),
            data: Vec::new(),
            time_limit: Some(DEFAULT_TIME_LIMIT),
            rego_v0: false,
            pool_capacity: threads.saturating_mul(2).max(2),
            history_free: std::collections::HashSet::new(),
        }
    }
}

impl RegoEngineBuilder {
    /// Declares that `policy` never reads the verified history
    /// (`input.lineage`): the hook then spares computing and converting it
    /// for that policy (SPEC §6.1, "cheap when the policy does not read
    /// it"). A policy declared so that reads `input.lineage` anyway sees
    /// none — declare only what you wrote. The bundled `kest/allow`,
    /// `kest/send_email` and `kest/no_pii_egress` are declared
    /// automatically when loaded with their bundled text.
    pub fn history_free(mut self, policy: impl Into<String>) -> RegoEngineBuilder {
        self.history_free.insert(policy.into());
        self
    }

    /// Adds a policy: `name` maps to the package of the Rego module `text`
    /// (one module per name; two names may not share a package).
    pub fn policy(mut self, name: impl Into<String>, text: impl Into<String>) -> RegoEngineBuilder {
        self.policies.push((name.into(), text.into()));
        self
    }

    /// Decides `policy` by `rule` instead of [`DEFAULT_RULE`] (a rule name,
    /// or a dotted path of rule names inside the package, e.g.
    /// `decision.allow`). Applies to directory policies too (either name).
    pub fn rule(mut self, policy: impl Into<String>, rule: impl Into<String>) -> RegoEngineBuilder {
        self.rules.insert(policy.into(), rule.into());
        self
    }

    /// Loads every `*.rego` file under `dir` (recursively, skipping
    /// `*_test.rego`) at [`build`](RegoEngineBuilder::build). Files are grouped by
    /// package; each package is one policy, named by its package path with
    /// `/` (`package kest.allow` → `kest/allow`) and also by the dotted
    /// path (`kest.allow`).
    pub fn directory(mut self, dir: impl AsRef<Path>) -> RegoEngineBuilder {
        self.directories.push(dir.as_ref().to_path_buf());
        self
    }

    /// Adds a base `data` document (merged with any other added data).
    pub fn data(mut self, data: serde_json::Value) -> RegoEngineBuilder {
        self.data.push(data);
        self
    }

    /// The wall-clock budget of one evaluation (default
    /// [`DEFAULT_TIME_LIMIT`]); exceeding it is an evaluation error (deny).
    /// `None` removes the engine's own limit (regorus' process-wide fallback,
    /// if any, then applies).
    pub fn time_limit(mut self, limit: impl Into<Option<Duration>>) -> RegoEngineBuilder {
        self.time_limit = limit.into();
        self
    }

    /// Parses modules as Rego v0 (rules without `if`), for older policies.
    pub fn rego_v0(mut self, v0: bool) -> RegoEngineBuilder {
        self.rego_v0 = v0;
        self
    }

    /// The engine name (part of decision-cache keys; default `rego`).
    pub fn named(mut self, name: impl Into<String>) -> RegoEngineBuilder {
        self.name = name.into();
        self
    }

    /// How many prepared interpreters are kept for reuse (default twice the
    /// available parallelism). `0` clones the prepared original for every
    /// evaluation.
    pub fn pool_capacity(mut self, capacity: usize) -> RegoEngineBuilder {
        self.pool_capacity = capacity;
        self
    }

    /// Parses every module, checks that each policy's package declares its
    /// decision rule and prepares the interpreter.
    ///
    /// # Errors
    ///
    /// [`PolicyError::Compile`] (naming the policy) for a module that does not
    /// parse or prepare, a package shared by two policy names, or a missing
    /// decision rule; [`PolicyError::Config`] for an unreadable directory, a
    /// duplicate policy name, a malformed rule name or bad data.
    pub fn build(self) -> Result<RegoEngine, PolicyError> {
        let mut engine = regorus::Engine::new();
        engine.set_rego_v0(self.rego_v0);
        if let Some(limit) = self.time_limit {
            engine.set_execution_timer_config(regorus::utils::limits::ExecutionTimerConfig {
                limit,
                check_interval: std::num::NonZeroU32::MIN.saturating_add(63),
            });
        }
        for data in &self.data {
            let value = regorus::Value::deserialize(data)
                .map_err(|e| PolicyError::Config(format!("Rego data is not representable: {e}")))?;
            engine.add_data(value).map_err(|e| PolicyError::Config(format!("Rego data: {e:#}")))?;
        }

        // Source label → the policy name it was given under (None for a
        // directory file, named by its package).
        let mut sources: Vec<(String, Option<String>)> = Vec::new();
        for (name, text) in &self.policies {
            if sources.iter().any(|(_, n)| n.as_deref() == Some(name.as_str())) {
                return Err(PolicyError::Config(format!("Rego policy `{name}` is defined twice")));
            }
            let label = format!("{name}.rego");
            engine
                .add_policy(label.clone(), text.clone())
                .map_err(|e| PolicyError::Compile { policy: name.clone(), message: format!("{e:#}") })?;
            sources.push((label, Some(name.clone())));
        }
        for dir in &self.directories {
            for file in rego_files(dir)? {
                let label = file.display().to_string();
                let text = std::fs::read_to_string(&file)
                    .map_err(|e| PolicyError::Config(format!("cannot read {label}: {e}")))?;
                engine
                    .add_policy(label.clone(), text)
                    .map_err(|e| PolicyError::Compile { policy: label.clone(), message: format!("{e:#}") })?;
                sources.push((label, None));
            }
        }

        // Group the sources by package.
        let packages = engine
            .get_policy_package_components()
            .map_err(|e| PolicyError::Config(format!("cannot read Rego packages: {e:#}")))?;
        let mut by_package: BTreeMap<Vec<String>, Vec<(String, Option<String>)>> = BTreeMap::new();
        for package in packages {
            let given =
                sources.iter().find(|(label, _)| *label == package.source_file).and_then(|(_, n)| n.clone());
            by_package.entry(package.components).or_default().push((package.source_file, given));
        }

        let mut policies: HashMap<String, Arc<Compiled>> = HashMap::new();
        for (components, files) in &by_package {
            let dotted = components.join(".");
            let given: Vec<&String> = files.iter().filter_map(|(_, n)| n.as_ref()).collect();
            let names: Vec<String> = match given.as_slice() {
                [] => vec![components.join("/"), dotted.clone()],
                [one] if files.len() == 1 => vec![(*one).clone()],
                _ => {
                    let all: Vec<String> = files
                        .iter()
                        .map(|(label, n)| n.as_ref().map_or_else(|| label.clone(), |n| format!("`{n}`")))
                        .collect();
                    return Err(PolicyError::Compile {
                        policy: given.first().map_or_else(|| dotted.clone(), |n| (*n).clone()),
                        message: format!(
                            "package `{dotted}` is defined by more than one policy: {}",
                            all.join(", ")
                        ),
                    });
                }
            };
            let rule = names.iter().find_map(|n| self.rules.get(n)).map_or(DEFAULT_RULE, String::as_str);
            let rule_components: Vec<&str> = rule.split('.').collect();
            if rule_components.iter().any(|c| !is_identifier(c)) {
                return Err(PolicyError::Config(format!(
                    "`{rule}` is not a Rego rule name (policy `{}`)",
                    names.first().map_or(dotted.as_str(), String::as_str)
                )));
            }
            let mut declared = false;
            for (label, _) in files {
                declared |= engine.has_declared_rule_rooted_at(label, rule).unwrap_or(false);
            }
            if !declared {
                return Err(PolicyError::Compile {
                    policy: names.first().cloned().unwrap_or_else(|| dotted.clone()),
                    message: format!("package `{dotted}` declares no rule `{rule}`"),
                });
            }
            let query =
                query_path(components.iter().map(String::as_str).chain(rule_components.iter().copied()));
            let compiled = Arc::new(Compiled { query });
            for name in names {
                if policies.insert(name.clone(), compiled.clone()).is_some() {
                    return Err(PolicyError::Config(format!("Rego policy name `{name}` is used twice")));
                }
            }
        }
        for name in self.rules.keys() {
            if !policies.contains_key(name) {
                return Err(PolicyError::Config(format!(
                    "a rule is configured for unknown Rego policy `{name}`"
                )));
            }
        }

        // Prepare (analyse, schedule, gather rules) once; copies inherit it.
        if let Err(e) = engine.eval_query("true".into(), false) {
            let message = format!("{e:#}");
            let policy = sources
                .iter()
                .find(|(label, _)| message.contains(label.as_str()))
                .map_or_else(|| "*".to_owned(), |(label, n)| n.clone().unwrap_or_else(|| label.clone()));
            return Err(PolicyError::Compile { policy, message });
        }

        let pool: Vec<regorus::Engine> = Vec::with_capacity(self.pool_capacity);
        let history_free = super::history_free(&self.policies, &self.history_free, &HISTORY_FREE);
        Ok(RegoEngine {
            history_free,
            name: self.name,
            policies,
            prepared: engine,
            pool: Mutex::new(pool),
            pool_capacity: self.pool_capacity,
        })
    }
}

/// `*.rego` files under `dir`, recursively, sorted, without `*_test.rego`.
fn rego_files(dir: &Path) -> Result<Vec<PathBuf>, PolicyError> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries = std::fs::read_dir(&dir)
            .map_err(|e| PolicyError::Config(format!("cannot read {}: {e}", dir.display())))?;
        for entry in entries {
            let path =
                entry.map_err(|e| PolicyError::Config(format!("cannot read {}: {e}", dir.display())))?.path();
            if path.is_dir() {
                pending.push(path);
            } else if let Some(file) = path.file_name().and_then(|f| f.to_str())
                && file.ends_with(".rego")
                && !file.ends_with("_test.rego")
            {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `data.a.b["c-d"]`: dots for plain identifiers, brackets otherwise.
fn query_path<'a>(components: impl Iterator<Item = &'a str>) -> String {
    let mut query = String::from("data");
    for c in components {
        if is_identifier(c) && !KEYWORDS.contains(&c) {
            query.push('.');
            query.push_str(c);
        } else {
            query.push('[');
            query.push_str(&serde_json::Value::String(c.to_owned()).to_string());
            query.push(']');
        }
    }
    query
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_paths() {
        assert_eq!(query_path(["kest", "allow", "allow"].into_iter()), "data.kest.allow.allow");
        assert_eq!(query_path(["graph", "1.0.0", "if"].into_iter()), r#"data.graph["1.0.0"]["if"]"#);
    }

    #[test]
    fn engine_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<RegoEngine>();
    }
}
