//! # kest-core
//!
//! The Kest wire format and its offline verifier, with no async runtime, no
//! I/O and few dependencies, so auditors and other tools can depend on it
//! alone.
//!
//! A **Passport** is an ordered list of JWS compact strings (RFC 7515,
//! EdDSA/Ed25519 per RFC 8037, or ES256/P-256 per RFC 7518) whose payloads are RFC 8785 canonical
//! [`KestEntry`] objects. Each entry names its parents by the SHA-256 of
//! their JWS strings, forming a Merkle DAG. The format is byte-compatible
//! with the Python reference (`kest==0.3.0.post1`).
//!
//! ```
//! use kest_core::{Ed25519Signer, EntryDraft, ErrorKind, KeySet, Passport, Signer, TrustRules, Verifier};
//!
//! // Record two steps.
//! let signer = Ed25519Signer::from_seed("spiffe://demo/agent", [9u8; 32]);
//! let rules = TrustRules::default();
//! let mut passport = Passport::new();
//! let mut fetch = EntryDraft::new("fetch_page");
//! fetch.source_type = Some("internet".into());
//! fetch.added_taints = vec!["unverified".into()];
//! passport.record(&fetch, &signer, &rules).unwrap();
//! passport.record(&EntryDraft::new("summarise"), &signer, &rules).unwrap();
//! let json = passport.to_json();
//!
//! // Verify it offline with the signer's public key.
//! let mut keys = KeySet::new();
//! keys.insert("spiffe://demo/agent", signer.public_key().unwrap()).unwrap();
//! let verifier = Verifier::new(keys).semantic(true);
//! let verified = verifier.verify_json(&json).unwrap();
//! assert_eq!(verified.entries()[1].payload().taints, vec!["unverified".to_string()]);
//!
//! // Any change breaks it.
//! let tampered = json.replacen("A", "B", 1);
//! assert!(verifier.verify_json(&tampered).is_err());
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

// Sub-APIs with many related items keep their own namespace.
pub mod baggage;
pub mod encoding;
pub mod ingress;
pub mod json;
pub mod jws;
pub mod workload;

// Everything else is private behind the re-exports below, so the public
// surface is exactly what is listed here.
mod cache;
mod entry;
mod error;
mod hash;
mod keyset;
mod passport;
mod pool;
mod resolve;
mod signer;
mod trust;
mod verify;

pub use cache::{DEFAULT_CACHE_CAPACITY, DEFAULT_CACHE_MAX_BYTES, VerifiedEntryCache};
pub use entry::{
    Classification, Deviation, KestEntry, LABEL_IDENTITY, LABEL_PRINCIPAL, LABEL_RESOURCE_ATTR,
    LABEL_SOURCE_TYPE, LABEL_TRACE_ID, LABEL_TRUST_EVALUATOR, LABEL_TRUST_OVERRIDE, PolicyContext,
    ROOT_PARENT, RUNTIME_NAME, RUNTIME_VERSION, Runtime, SCHEMA_VERSION,
};
pub use error::{EntryError, ErrorKind, FieldError, PassportError, Segment, VerifyError};
pub use hash::{EntryHash, ParseHashError};
pub use keyset::{
    ALG_EDDSA, ALG_ES256, KeyError, KeySet, KeySetError, PublicKey, SIGNATURE_LEN, SignatureError, parse_jwk,
};
pub use passport::{
    AppendError, DraftError, Entry, EntryDraft, Limits, Parents, Passport, RecordError, SignedEntry,
    UnverifiedPassport, prepare_entry, sign_entry,
};
pub use resolve::{KeyResolver, KeyRing, ResolveError};
pub use signer::{Algorithm, Ed25519Signer, Es256Signer, LocalSigner, SignError, Signer};
pub use trust::{
    DEFAULT_ORIGINS, MISSING_ROOT_ORIGIN_SCORE, MISSING_SELF_SCORE, OriginError, OriginMap, TrustEvaluator,
    TrustRules, WEAKEST_LINK, WeakestLink, WeightedTrust, accumulate_taints,
};
pub use verify::Verifier;

/// The RustCrypto P-256 crate this one uses for `ES256`, for callers that
/// build or export P-256 keys.
pub use p256;
