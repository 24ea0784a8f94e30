//! [`AwsWorkloadIdentity`] and [`BedrockAgentIdentity`]: who an AWS
//! workload is (STS), signing through KMS.

use std::fmt;

use kest_core::{PublicKey, SignError, Signer};

use super::{AwsClients, AwsError, AwsSettings, KmsSigner};
use crate::identity::IdentityProvider;

/// The alias of the Bedrock agent (optional).
pub const AWS_BEDROCK_AGENT_ALIAS_ID_ENV: &str = "AWS_BEDROCK_AGENT_ALIAS_ID";
/// The KMS key a Bedrock agent signs with.
pub const KEST_BEDROCK_KMS_KEY_ID_ENV: &str = "KEST_BEDROCK_KMS_KEY_ID";
/// The key a Bedrock agent signs with when none is configured (as the
/// reference).
pub const DEFAULT_BEDROCK_KMS_KEY: &str = "alias/bedrock-agent-signing-key";

/// The caller as STS sees it.
struct Caller {
    arn: String,
    account: String,
}

fn caller(clients: &AwsClients) -> Result<Caller, AwsError> {
    let client = aws_sdk_sts::Client::new(&clients.config);
    let out = clients
        .run(async move { client.get_caller_identity().send().await })?
        .map_err(|e| AwsError::service("sts", "GetCallerIdentity", &e))?;
    let arn = out.arn().ok_or(AwsError::MissingField { operation: "GetCallerIdentity", field: "Arn" })?;
    let account =
        out.account().ok_or(AwsError::MissingField { operation: "GetCallerIdentity", field: "Account" })?;
    Ok(Caller { arn: arn.to_owned(), account: account.to_owned() })
}

/// An AWS workload: the workload id is the caller ARN from STS
/// `GetCallerIdentity`, entries are signed by a KMS key ([`KmsSigner`]).
///
/// ```no_run
/// use kest::aws::{AwsSettings, AwsWorkloadIdentity};
/// use kest::identity::IdentityProvider as _;
/// let identity = AwsWorkloadIdentity::connect("alias/kest-signing", AwsSettings::default())?;
/// println!("signing as {}", identity.workload_id());
/// # Ok::<(), kest::aws::AwsError>(())
/// ```
pub struct AwsWorkloadIdentity {
    account: String,
    signer: KmsSigner,
}

impl fmt::Debug for AwsWorkloadIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsWorkloadIdentity")
            .field("account", &self.account)
            .field("signer", &self.signer)
            .finish()
    }
}

impl AwsWorkloadIdentity {
    /// Asks STS who this is and checks KMS key `kms_key_id`; any error is
    /// returned (there is no identity without both).
    pub fn connect(kms_key_id: &str, settings: AwsSettings) -> Result<AwsWorkloadIdentity, AwsError> {
        let clients = AwsClients::connect(settings)?;
        let who = caller(&clients)?;
        let signer = KmsSigner::with_clients(who.arn, kms_key_id, clients)?;
        Ok(AwsWorkloadIdentity { account: who.account, signer })
    }

    /// The signer (to tune its readiness interval, read its key).
    pub fn signer(&self) -> &KmsSigner {
        &self.signer
    }

    /// Sets the KMS readiness interval (see [`KmsSigner`]).
    #[must_use]
    pub fn readiness_interval(mut self, interval: std::time::Duration) -> AwsWorkloadIdentity {
        self.signer = self.signer.readiness_interval(interval);
        self
    }

    /// The AWS account id.
    pub fn account(&self) -> &str {
        &self.account
    }
}

/// A Bedrock agent: the workload id is
/// `bedrock://<account>/agent/<agent id>[/alias/<alias id>]` (the
/// reference's format), entries are signed by a KMS key.
///
/// Unlike the reference, an agent id is required: without one this is an
/// error, never the bare caller ARN.
pub struct BedrockAgentIdentity {
    agent_id: String,
    alias_id: Option<String>,
    account: String,
    signer: KmsSigner,
}

impl fmt::Debug for BedrockAgentIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BedrockAgentIdentity")
            .field("agent_id", &self.agent_id)
            .field("alias_id", &self.alias_id)
            .field("signer", &self.signer)
            .finish()
    }
}

/// An agent or alias id: letters, digits, `-` and `_`, 1 to 64 of them
/// (so the principal built from it is unambiguous).
fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl BedrockAgentIdentity {
    /// The identity of agent `agent_id` (alias `alias_id`), signing with KMS
    /// key `kms_key_id`; STS gives the account.
    pub fn connect(
        agent_id: &str,
        alias_id: Option<&str>,
        kms_key_id: &str,
        settings: AwsSettings,
    ) -> Result<BedrockAgentIdentity, AwsError> {
        if agent_id.is_empty() {
            return Err(AwsError::NoAgentId);
        }
        for id in std::iter::once(agent_id).chain(alias_id) {
            if !valid_id(id) {
                return Err(AwsError::InvalidAgentId(
                    id.chars().take(64).flat_map(char::escape_debug).collect(),
                ));
            }
        }
        let clients = AwsClients::connect(settings)?;
        let who = caller(&clients)?;
        let mut principal = format!("bedrock://{}/agent/{agent_id}", who.account);
        if let Some(alias) = alias_id {
            principal.push_str(&format!("/alias/{alias}"));
        }
        let signer = KmsSigner::with_clients(principal, kms_key_id, clients)?;
        Ok(BedrockAgentIdentity {
            agent_id: agent_id.to_owned(),
            alias_id: alias_id.map(str::to_owned),
            account: who.account,
            signer,
        })
    }

    /// From `AWS_BEDROCK_AGENT_ID`, `AWS_BEDROCK_AGENT_ALIAS_ID` and
    /// `KEST_BEDROCK_KMS_KEY_ID` (default [`DEFAULT_BEDROCK_KMS_KEY`]),
    /// read through `lookup`.
    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
        settings: AwsSettings,
    ) -> Result<BedrockAgentIdentity, AwsError> {
        let agent = lookup(crate::identity::AWS_BEDROCK_AGENT_ID_ENV).filter(|v| !v.is_empty());
        let agent = agent.ok_or(AwsError::NoAgentId)?;
        let alias = lookup(AWS_BEDROCK_AGENT_ALIAS_ID_ENV).filter(|v| !v.is_empty());
        let key = lookup(KEST_BEDROCK_KMS_KEY_ID_ENV)
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| DEFAULT_BEDROCK_KMS_KEY.to_owned());
        BedrockAgentIdentity::connect(&agent, alias.as_deref(), &key, settings)
    }

    /// The signer.
    pub fn signer(&self) -> &KmsSigner {
        &self.signer
    }

    /// Sets the KMS readiness interval (see [`KmsSigner`]).
    #[must_use]
    pub fn readiness_interval(mut self, interval: std::time::Duration) -> BedrockAgentIdentity {
        self.signer = self.signer.readiness_interval(interval);
        self
    }
}

macro_rules! kms_backed {
    ($ty:ty, $kind:literal, |$s:ident| $describe:expr) => {
        impl Signer for $ty {
            fn principal(&self) -> &str {
                self.signer.principal()
            }
            fn algorithm(&self) -> &'static str {
                self.signer.algorithm()
            }
            fn sign(&self, signing_input: &[u8]) -> Result<Vec<u8>, SignError> {
                self.signer.sign(signing_input)
            }
            fn public_key(&self) -> Option<PublicKey> {
                self.signer.public_key()
            }
        }

        impl IdentityProvider for $ty {
            fn kind(&self) -> &'static str {
                $kind
            }
            fn describe(&self) -> Vec<(String, String)> {
                let $s = self;
                $describe
            }
            fn ready(&self) -> Result<(), SignError> {
                self.signer.ready().map_err(|e| SignError(e.to_string()))
            }
        }
    };
}

kms_backed!(AwsWorkloadIdentity, "aws", |s| vec![
    ("account".to_owned(), s.account.clone()),
    ("kms_key".to_owned(), s.signer.key().key_arn().to_owned()),
    ("algorithm".to_owned(), "ES256".to_owned()),
]);

kms_backed!(BedrockAgentIdentity, "bedrock", |s| {
    let mut facts =
        vec![("account".to_owned(), s.account.clone()), ("agent_id".to_owned(), s.agent_id.clone())];
    if let Some(alias) = &s.alias_id {
        facts.push(("alias_id".to_owned(), alias.clone()));
    }
    facts.push(("kms_key".to_owned(), s.signer.key().key_arn().to_owned()));
    facts.push(("algorithm".to_owned(), "ES256".to_owned()));
    facts
});
