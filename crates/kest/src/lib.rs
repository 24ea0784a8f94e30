//! # kest
//!
//! The Kest framework: identity, key files and (as they land) policy
//! engines, the verification hook, ambient lineage and propagation. The wire
//! format and the offline verifier live in [`kest_core`], re-exported here
//! as [`core`].
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub use kest_core as core;

pub mod identity;
pub mod keyfile;
pub mod policy;
