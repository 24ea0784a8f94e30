//! # kest-py — Kest's native core for Python (`kest_rs`)
//!
//! A PyO3 extension module (`kest_rs._native`, wrapped by the pure-Python
//! package `kest_rs`) over the Rust crates `kest` and `kest-core`: the
//! verification hook, passports, verification, identity providers, policy
//! engines and baggage propagation.
//!
//! Design rules (SPEC §13):
//! - every signature, verification, canonicalization, hash, policy
//!   evaluation and baggage packing runs in Rust inside a call that
//!   releases the GIL (`Python::detach`);
//! - private keys are created or loaded in Rust and never returned to
//!   Python;
//! - no Python callback on the hot path: engines, identities and caches
//!   are Rust objects; the only Python code a protected call runs is the
//!   decorated function itself.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use pyo3::prelude::*;

/// The Rust side's allocator (Python keeps its own): per-thread heaps, no
/// lock shared by the threads that sign at the same time.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod baggage;
mod config;
mod convert;
mod engine;
mod errors;
mod flow;
mod hook;
mod identity;
mod passport;

/// Reseeds this thread's CSPRNG (UUIDs of entries and claim checks come
/// from rand's thread-local generator) from the operating system. The
/// package registers it with `os.register_at_fork(after_in_child=...)`:
/// rand does not reseed on fork, and a child must never repeat its
/// parent's ids.
#[pyfunction]
fn _reseed_after_fork() -> PyResult<()> {
    rand::rng()
        .reseed()
        .map_err(|e| errors::config(format!("cannot reseed the random generator after fork: {e}")))
}

/// The native module `kest_rs._native`.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<identity::Identity>()?;
    m.add_class::<identity::LocalIdentity>()?;
    m.add_class::<identity::StaticIdentity>()?;
    m.add_class::<engine::Engine>()?;
    m.add_class::<engine::MockEngine>()?;
    m.add_class::<engine::RegoEngine>()?;
    m.add_class::<engine::CedarEngine>()?;
    m.add_class::<engine::RoutedEngine>()?;
    m.add_class::<engine::OpaEngine>()?;
    m.add_class::<engine::CedarAgentEngine>()?;
    m.add_class::<baggage::RedisCache>()?;
    m.add_class::<passport::Passport>()?;
    m.add_class::<passport::PassportVerifier>()?;
    m.add_class::<flow::Flow>()?;
    m.add_class::<hook::Hook>()?;
    m.add_class::<hook::AsyncCall>()?;
    m.add_class::<baggage::MemoryCache>()?;
    m.add_class::<baggage::Propagator>()?;
    m.add_function(wrap_pyfunction!(passport::sign_entry, m)?)?;
    m.add_function(wrap_pyfunction!(config::configure, m)?)?;
    m.add_function(wrap_pyfunction!(config::invalidate_policy_cache, m)?)?;
    m.add_function(wrap_pyfunction!(baggage::parse_baggage, m)?)?;
    m.add_function(wrap_pyfunction!(_reseed_after_fork, m)?)?;
    m.add("RUNTIME_VERSION", kest_core::RUNTIME_VERSION)?;
    Ok(())
}
