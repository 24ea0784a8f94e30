//! Amazon Verified Permissions (SPEC §6.2, feature `avp`): policies kept
//! in an AVP policy store, decided by its `IsAuthorized` API through the
//! official `aws-sdk-verifiedpermissions` client.
//!
//! Evaluating policy `send_email` sends `IsAuthorized` with
//!
//! - `principal`: entity `Workload` / `<subject.workload>`,
//! - `action`: action `Action` / `send_email` (the policy name),
//! - `resource`: entity `Resource` / `<object.id, or environment.entry_id>`,
//! - `context`: the SPEC §6.1 document as an AVP context map (`null`s
//!   dropped, integers as `long`, strings, booleans, arrays as `set`,
//!   objects as `record`; a non-integer number is refused),
//!
//! — the same request shape as the Cedar engines (entity types can be
//! renamed, e.g. to a schema namespace, with the builder). The decision is
//! [`Decision::Allow`] only for `ALLOW` with no evaluation errors;
//! `DENY` is [`Decision::Deny`]; evaluation errors (AVP skips an erroring
//! policy, so an erroring `forbid` would not block) are
//! [`PolicyError::Evaluation`]; any SDK failure (unreachable, timeout,
//! throttled, access denied, unknown policy store, unexpected answer) is
//! [`PolicyError::Remote`] with a [`RemoteFailure`] — details in the logs,
//! never in the error.
//!
//! Like Cedar Agent, AVP evaluates every policy of the store for a
//! request, so policies are scoped per action:
//! `permit(principal, action == Action::"send_email", resource) when {…};`.
//! A policy name with no policy for its action is a deny.
//!
//! AVP is not in `moto`: the tests run this client against a loopback
//! server speaking the AVP JSON protocol (`awsJson1_0`,
//! `VerifiedPermissions.IsAuthorized`) that decides with `cedar-policy`.

use std::collections::HashMap;
use std::fmt;

use aws_sdk_verifiedpermissions::error::SdkError;
use aws_sdk_verifiedpermissions::types::{
    ActionIdentifier, AttributeValue, ContextDefinition, Decision as AvpDecision, EntityIdentifier,
};
use serde_json::Value;

use super::{BoxFuture, Decision, PolicyEngine, PolicyError, PolicyInput, RemoteFailure};
use crate::aws::{AwsClients, AwsError, AwsSettings};

/// Builds an [`AvpEngine`]; from [`AvpEngine::builder`].
#[derive(Debug, Clone)]
pub struct AvpEngineBuilder {
    policy_store_id: String,
    settings: AwsSettings,
    name: String,
    principal_type: String,
    action_type: String,
    resource_type: String,
}

impl AvpEngineBuilder {
    /// The AWS settings (region, endpoint, credentials, timeout).
    #[must_use]
    pub fn settings(mut self, settings: AwsSettings) -> AvpEngineBuilder {
        self.settings = settings;
        self
    }

    /// The engine name (part of decision-cache keys; default `avp`).
    #[must_use]
    pub fn named(mut self, name: impl Into<String>) -> AvpEngineBuilder {
        self.name = name.into();
        self
    }

    /// Entity and action types (defaults `Workload`, `Action`,
    /// `Resource`; e.g. `Kest::Workload` for a namespaced schema).
    #[must_use]
    pub fn entity_types(
        mut self,
        principal: impl Into<String>,
        action: impl Into<String>,
        resource: impl Into<String>,
    ) -> AvpEngineBuilder {
        self.principal_type = principal.into();
        self.action_type = action.into();
        self.resource_type = resource.into();
        self
    }

    /// Loads the AWS configuration and builds the engine (no call is made
    /// yet).
    pub fn build(self) -> Result<AvpEngine, AwsError> {
        let clients = AwsClients::connect(self.settings)?;
        let client = aws_sdk_verifiedpermissions::Client::new(&clients.config);
        Ok(AvpEngine {
            name: self.name,
            policy_store_id: self.policy_store_id,
            principal_type: self.principal_type,
            action_type: self.action_type,
            resource_type: self.resource_type,
            clients,
            client,
        })
    }
}

/// A policy engine on an Amazon Verified Permissions policy store (see the
/// [module documentation](self)).
///
/// ```no_run
/// use kest::aws::AwsSettings;
/// use kest::policy::avp::AvpEngine;
/// use kest::policy::{Decision, PolicyEngine, PolicyInput};
/// let engine = AvpEngine::builder("PSEXAMPLEabcdefg111111").settings(AwsSettings::default()).build()?;
/// let input = PolicyInput::new(kest::policy::context::example_context());
/// let allowed = engine.evaluate("send_email", &input) == Ok(Decision::Allow);
/// # Ok::<(), kest::aws::AwsError>(())
/// ```
pub struct AvpEngine {
    name: String,
    policy_store_id: String,
    principal_type: String,
    action_type: String,
    resource_type: String,
    clients: AwsClients,
    client: aws_sdk_verifiedpermissions::Client,
}

impl fmt::Debug for AvpEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AvpEngine")
            .field("name", &self.name)
            .field("policy_store_id", &self.policy_store_id)
            .finish_non_exhaustive()
    }
}

/// The parts of one `IsAuthorized` request.
struct Request {
    principal: EntityIdentifier,
    action: ActionIdentifier,
    resource: EntityIdentifier,
    context: HashMap<String, AttributeValue>,
}

type Answer = Result<
    aws_sdk_verifiedpermissions::operation::is_authorized::IsAuthorizedOutput,
    SdkError<aws_sdk_verifiedpermissions::operation::is_authorized::IsAuthorizedError>,
>;

impl AvpEngine {
    /// A builder for policy store `policy_store_id`.
    pub fn builder(policy_store_id: impl Into<String>) -> AvpEngineBuilder {
        AvpEngineBuilder {
            policy_store_id: policy_store_id.into(),
            settings: AwsSettings::default(),
            name: "avp".into(),
            principal_type: "Workload".into(),
            action_type: "Action".into(),
            resource_type: "Resource".into(),
        }
    }

    fn request(&self, policy: &str, input: &PolicyInput) -> Result<Request, PolicyError> {
        let evaluation = |message: String| PolicyError::Evaluation { policy: policy.to_owned(), message };
        if policy.is_empty() {
            return Err(evaluation("the policy name is empty".into()));
        }
        let ctx = input.context();
        let resource = ctx.object.id.as_deref().unwrap_or(&ctx.environment.entry_id);
        let entity = |ty: &str, id: &str| {
            EntityIdentifier::builder()
                .entity_type(ty)
                .entity_id(id)
                .build()
                .map_err(|e| evaluation(e.to_string()))
        };
        let context = match input.json() {
            Value::Object(members) => {
                let mut map = HashMap::with_capacity(members.len());
                for (key, value) in members {
                    if let Some(v) = attribute(value, key).map_err(evaluation)? {
                        map.insert(key.clone(), v);
                    }
                }
                map
            }
            _ => return Err(evaluation("the context is not a JSON object".into())),
        };
        Ok(Request {
            principal: entity(&self.principal_type, &ctx.subject.workload)?,
            action: ActionIdentifier::builder()
                .action_type(&self.action_type)
                .action_id(policy)
                .build()
                .map_err(|e| evaluation(e.to_string()))?,
            resource: entity(&self.resource_type, resource)?,
            context,
        })
    }

    fn call(&self, request: Request) -> impl std::future::Future<Output = Answer> + Send + 'static {
        let client = self.client.clone();
        let store = self.policy_store_id.clone();
        async move {
            client
                .is_authorized()
                .policy_store_id(store)
                .principal(request.principal)
                .action(request.action)
                .resource(request.resource)
                .context(ContextDefinition::ContextMap(request.context))
                .send()
                .await
        }
    }

    fn decide(&self, policy: &str, answer: Result<Answer, AwsError>) -> Result<Decision, PolicyError> {
        let remote = |failure: RemoteFailure, detail: String| {
            tracing::warn!(engine = %self.name, policy, %failure, detail, "AVP IsAuthorized failed");
            failure.into_error(&self.name)
        };
        let out = match answer {
            Err(AwsError::Timeout(_)) => {
                return Err(remote(RemoteFailure::Timeout, "no answer in time".into()));
            }
            Err(e) => return Err(remote(RemoteFailure::Worker, e.to_string())),
            Ok(Err(e)) => {
                let detail = aws_sdk_verifiedpermissions::error::DisplayErrorContext(&e).to_string();
                let failure = match &e {
                    SdkError::TimeoutError(_) => RemoteFailure::Timeout,
                    SdkError::DispatchFailure(d) if d.is_timeout() => RemoteFailure::Timeout,
                    SdkError::DispatchFailure(_) => RemoteFailure::Connect,
                    SdkError::ResponseError(_) => RemoteFailure::UnexpectedAnswer,
                    // A 2xx the SDK could not read is a bad answer, not a status.
                    SdkError::ServiceError(ctx) if ctx.raw().status().is_success() => {
                        RemoteFailure::UnexpectedAnswer
                    }
                    SdkError::ServiceError(ctx) => RemoteFailure::Status(ctx.raw().status().as_u16()),
                    _ => RemoteFailure::Request,
                };
                return Err(remote(failure, detail));
            }
            Ok(Ok(out)) => out,
        };
        if !out.errors().is_empty() {
            let errors: Vec<&str> = out.errors().iter().map(|e| e.error_description()).collect();
            tracing::warn!(engine = %self.name, policy, errors = %errors.join("; "), "AVP reported evaluation errors");
            return Err(PolicyError::Evaluation {
                policy: policy.to_owned(),
                message: "Verified Permissions reported evaluation errors".into(),
            });
        }
        match out.decision() {
            AvpDecision::Allow => Ok(Decision::Allow),
            AvpDecision::Deny => Ok(Decision::Deny),
            other => Err(remote(RemoteFailure::UnexpectedAnswer, format!("decision {other:?}"))),
        }
    }
}

/// A JSON value as an AVP attribute: `None` for `null` (dropped, as Cedar
/// has no null); non-integer numbers refused.
fn attribute(value: &Value, path: &str) -> Result<Option<AttributeValue>, String> {
    Ok(Some(match value {
        Value::Null => return Ok(None),
        Value::Bool(b) => AttributeValue::Boolean(*b),
        Value::Number(n) => AttributeValue::Long(n.as_i64().ok_or_else(|| {
            format!("context value `{path}` = {n} is not representable in Cedar (64-bit integers only)")
        })?),
        Value::String(s) => AttributeValue::String(s.clone()),
        Value::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                out.extend(attribute(item, path)?);
            }
            AttributeValue::Set(out)
        }
        Value::Object(members) => {
            let mut out = HashMap::with_capacity(members.len());
            for (key, value) in members {
                if let Some(v) = attribute(value, &format!("{path}.{key}"))? {
                    out.insert(key.clone(), v);
                }
            }
            AttributeValue::Record(out)
        }
    }))
}

impl PolicyEngine for AvpEngine {
    fn name(&self) -> &str {
        &self.name
    }

    fn evaluate(&self, policy: &str, input: &PolicyInput) -> Result<Decision, PolicyError> {
        let request = self.request(policy, input)?;
        self.decide(policy, self.clients.run(self.call(request)))
    }

    fn evaluate_async<'a>(
        &'a self,
        policy: &'a str,
        input: &'a PolicyInput,
    ) -> BoxFuture<'a, Result<Decision, PolicyError>> {
        Box::pin(async move {
            let request = self.request(policy, input)?;
            let answer = self.clients.run_async(self.call(request)).await;
            self.decide(policy, answer)
        })
    }
}
