//! Workload tokens over HTTP: the `kest-workload` request header carrying
//! a token of [`kest_core::workload`] (see there for the format). The
//! [`KestPropagationMiddleware`](super::KestPropagationMiddleware) mints one
//! per request with
//! [`workload_identity`](super::KestPropagationMiddleware::workload_identity);
//! a lineage layer with
//! [`authenticate_peers`](super::LineageLayerBuilder::authenticate_peers)
//! verifies it and makes its signer the
//! [`AuthenticatedPeer`](super::AuthenticatedPeer).

use http::HeaderName;

pub use kest_core::workload::{
    DEFAULT_TOKEN_TTL, MAX_TOKEN_LIFETIME, TOKEN_TYPE, WorkloadTokenError, mint_workload_token,
    verify_workload_token,
};

/// The request header carrying the workload token.
pub const WORKLOAD_TOKEN_HEADER: HeaderName = HeaderName::from_static("kest-workload");
