//! # kest-core
//!
//! The Kest wire format and its offline verifier, with no async runtime, no
//! I/O and few dependencies, so auditors and other tools can depend on it
//! alone.
//!
//! A **Passport** is an ordered list of JWS compact strings (RFC 7515,
//! EdDSA/Ed25519 per RFC 8037) whose payloads are RFC 8785 canonical
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

pub mod baggage;
pub mod cache;
pub mod encoding;
pub mod entry;
pub mod error;
pub mod hash;
pub mod ingress;
pub mod json;
pub mod jws;
pub mod keyset;
pub mod passport;
mod pool;
pub mod resolve;
pub mod signer;
pub mod trust;
pub mod verify;

pub use cache::VerifiedEntryCache;
pub use entry::{Classification, Deviation, KestEntry, PolicyContext, Runtime};
pub use error::{EntryError, ErrorKind, FieldError, PassportError, Segment, VerifyError};
pub use hash::EntryHash;
pub use keyset::{KeySet, KeySetError, PublicKey};
pub use passport::{
    AppendError, DraftError, Entry, EntryDraft, Limits, Parents, Passport, RecordError, SignedEntry,
    UnverifiedPassport, prepare_entry, sign_entry,
};
pub use resolve::{KeyResolver, ResolveError};
pub use signer::{Ed25519Signer, SignError, Signer};
pub use trust::{OriginError, OriginMap, TrustEvaluator, TrustRules, WeakestLink, WeightedTrust};
pub use verify::Verifier;
