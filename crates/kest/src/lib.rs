//! # kest
//!
//! The Kest framework: identity, key files and (as they land) policy
//! engines, the verification hook, ambient lineage and propagation. The wire
//! format and the offline verifier live in [`kest_core`], re-exported here
//! as [`core`].
#![forbid(unsafe_code)]
#![warn(missing_docs)]
// This crate parses untrusted input (baggage, tokens, headers): no
// indexing that can panic.
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

pub use kest_core as core;

#[cfg(feature = "aws")]
pub mod aws;
pub mod cache;
pub mod error;
pub mod hook;
#[cfg(feature = "http")]
pub mod http;
pub mod identity;
pub mod keyfile;
pub mod lineage;
pub mod policy;
pub mod propagation;
pub mod runtime;
pub mod telemetry;

pub use error::{HookError, KestError};
pub use hook::{CallContext, Verified};
pub use lineage::{Lineage, current_agent, current_jwt, current_passport, current_task, current_user};
pub use runtime::{Kest, KestBuilder, configure, global};

/// Puts a function under the verification hook: policies before it runs, a
/// signed entry after. See [`kest_macros::verified`] for the arguments.
pub use kest_macros::verified;

/// Items the `#[kest::verified]` expansion refers to. Not a public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::error::{HookError, KestError};
    pub use crate::hook::{CallContext, Verified};
    pub use crate::runtime::ConfigError;
    use kest_core::Classification;

    /// A classification name validated by the macro at compile time.
    pub fn classification(name: &str) -> Classification {
        name.parse().unwrap_or(Classification::System)
    }

    /// The error of an infallible hooked function.
    pub fn infallible_hook_error(e: HookError<core::convert::Infallible>) -> KestError {
        match e {
            HookError::Kest(k) => k,
            HookError::Operation(never) | HookError::Unrecorded { error: never, .. } => match never {},
        }
    }

    /// An argument as a policy attribute (`context` / `persist`).
    pub fn attribute_value<T: serde::Serialize + ?Sized>(
        value: &T,
        name: &'static str,
    ) -> Result<serde_json::Value, KestError> {
        serde_json::to_value(value).map_err(|e| KestError::Hash { what: name, message: e.to_string() })
    }

    /// What a `user`/`agent`/`task`/`resource_id` resolver may return.
    pub trait ResolverValue {
        /// The value, or `None` to fall back to the flow's baggage.
        fn into_resolved(self) -> Option<String>;
    }
    impl ResolverValue for String {
        fn into_resolved(self) -> Option<String> {
            Some(self)
        }
    }
    impl ResolverValue for &str {
        fn into_resolved(self) -> Option<String> {
            Some(self.to_owned())
        }
    }
    impl ResolverValue for &String {
        fn into_resolved(self) -> Option<String> {
            Some(self.clone())
        }
    }
    impl<T: ResolverValue> ResolverValue for Option<T> {
        fn into_resolved(self) -> Option<String> {
            self.and_then(ResolverValue::into_resolved)
        }
    }
}
