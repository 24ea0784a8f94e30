//! Bodies of the kest-core fuzz targets. They live in `targets.rs`, which
//! `benches/tests/fuzz_smoke.rs` also includes, so the same code runs under
//! libFuzzer (nightly) and as a deterministic smoke test on stable.

pub mod targets;
