//! A deterministic policy engine for tests and demos.

use std::collections::HashMap;
use std::sync::Mutex;

use serde_json::Value;

use super::{Decision, PolicyEngine, PolicyError, PolicyInput};

/// Answers from a fixed table; records every request it sees.
///
/// ```
/// use kest::policy::{Decision, MockPolicyEngine, PolicyEngine, PolicyInput};
/// let engine = MockPolicyEngine::allow_all().with("deny_all", Decision::Deny);
/// let input = PolicyInput::new(kest::policy::context::example_context());
/// assert_eq!(engine.evaluate("anything", &input).unwrap(), Decision::Allow);
/// assert_eq!(engine.evaluate("deny_all", &input).unwrap(), Decision::Deny);
/// assert_eq!(engine.calls().len(), 2);
/// ```
#[derive(Debug)]
pub struct MockPolicyEngine {
    name: String,
    default: Option<Decision>,
    answers: HashMap<String, Result<Decision, PolicyError>>,
    calls: Mutex<Vec<(String, Value)>>,
}

impl MockPolicyEngine {
    /// Allows every policy name.
    pub fn allow_all() -> MockPolicyEngine {
        MockPolicyEngine::with_default(Some(Decision::Allow))
    }

    /// Denies every policy name.
    pub fn deny_all() -> MockPolicyEngine {
        MockPolicyEngine::with_default(Some(Decision::Deny))
    }

    /// Knows only the policies added with [`MockPolicyEngine::with`]; any
    /// other name is [`PolicyError::UnknownPolicy`].
    pub fn strict() -> MockPolicyEngine {
        MockPolicyEngine::with_default(None)
    }

    fn with_default(default: Option<Decision>) -> MockPolicyEngine {
        MockPolicyEngine {
            name: "mock".into(),
            default,
            answers: HashMap::new(),
            calls: Mutex::new(Vec::new()),
        }
    }

    /// Answers `decision` for `policy`.
    pub fn with(mut self, policy: &str, decision: Decision) -> MockPolicyEngine {
        self.answers.insert(policy.to_owned(), Ok(decision));
        self
    }

    /// Fails with `error` for `policy` (an engine error must deny).
    pub fn failing(mut self, policy: &str, error: PolicyError) -> MockPolicyEngine {
        self.answers.insert(policy.to_owned(), Err(error));
        self
    }

    /// Renames the engine (decision-cache keys include the name).
    pub fn named(mut self, name: &str) -> MockPolicyEngine {
        self.name = name.to_owned();
        self
    }

    /// Every `(policy, context JSON)` evaluated so far, in order.
    pub fn calls(&self) -> Vec<(String, Value)> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }
}

impl PolicyEngine for MockPolicyEngine {
    fn name(&self) -> &str {
        &self.name
    }

    fn evaluate(&self, policy: &str, input: &PolicyInput) -> Result<Decision, PolicyError> {
        if let Ok(mut calls) = self.calls.lock() {
            calls.push((policy.to_owned(), input.json().clone()));
        }
        match self.answers.get(policy) {
            Some(answer) => answer.clone(),
            None => self.default.ok_or_else(|| PolicyError::UnknownPolicy(policy.to_owned())),
        }
    }
}
