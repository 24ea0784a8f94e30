//! Several engines behind one: a policy name `prefix:name` is evaluated
//! by the engine registered under `prefix` as policy `name`.
//!
//! ```
//! use std::sync::Arc;
//! use kest::policy::{Decision, MockPolicyEngine, PolicyEngine, PolicyInput, RoutedEngine};
//! let engine = RoutedEngine::new()
//!     .route("a", Arc::new(MockPolicyEngine::allow_all()))
//!     .route("d", Arc::new(MockPolicyEngine::deny_all()));
//! let input = PolicyInput::new(kest::policy::context::example_context());
//! assert_eq!(engine.evaluate("a:anything", &input).unwrap(), Decision::Allow);
//! assert_eq!(engine.evaluate("d:anything", &input).unwrap(), Decision::Deny);
//! assert!(engine.evaluate("anything", &input).is_err(), "no prefix: unknown, never a default engine");
//! assert!(engine.evaluate("x:anything", &input).is_err(), "unknown prefix");
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{BoxFuture, Decision, PolicyEngine, PolicyError, PolicyInput};

/// Routes `prefix:name` to the engine registered under `prefix`.
#[derive(Debug, Default, Clone)]
pub struct RoutedEngine {
    name: String,
    routes: BTreeMap<String, Arc<dyn PolicyEngine>>,
}

impl RoutedEngine {
    /// No routes yet.
    pub fn new() -> RoutedEngine {
        RoutedEngine { name: "routed".into(), routes: BTreeMap::new() }
    }

    /// Registers `engine` for policy names `prefix:…`.
    pub fn route(mut self, prefix: impl Into<String>, engine: Arc<dyn PolicyEngine>) -> RoutedEngine {
        let prefix = prefix.into();
        self.name = format!("{}+{prefix}={}", self.name, engine.name());
        self.routes.insert(prefix, engine);
        self
    }

    fn resolve<'a>(&self, policy: &'a str) -> Result<(&Arc<dyn PolicyEngine>, &'a str), PolicyError> {
        let (prefix, name) =
            policy.split_once(':').ok_or_else(|| PolicyError::UnknownPolicy(policy.to_owned()))?;
        let engine = self.routes.get(prefix).ok_or_else(|| PolicyError::UnknownPolicy(policy.to_owned()))?;
        Ok((engine, name))
    }
}

impl PolicyEngine for RoutedEngine {
    fn name(&self) -> &str {
        &self.name
    }

    fn evaluate(&self, policy: &str, input: &PolicyInput) -> Result<Decision, PolicyError> {
        let (engine, name) = self.resolve(policy)?;
        engine.evaluate(name, input)
    }

    fn reads_lineage(&self, policy: &str) -> bool {
        self.resolve(policy).map_or(true, |(engine, name)| engine.reads_lineage(name))
    }

    fn evaluate_async<'a>(
        &'a self,
        policy: &'a str,
        input: &'a PolicyInput,
    ) -> BoxFuture<'a, Result<Decision, PolicyError>> {
        match self.resolve(policy) {
            Ok((engine, name)) => engine.evaluate_async(name, input),
            Err(e) => Box::pin(std::future::ready(Err(e))),
        }
    }
}
