//! Bodies of the kest-core fuzz targets. They live in `targets.rs`, which
//! `benches/tests/fuzz_smoke.rs` also includes, so the same code runs under
//! libFuzzer (nightly) and as a deterministic smoke test on stable.

pub mod targets;

/// The `kest viz` / `kest inspect` renderers, compiled from the CLI's own
/// source file (it depends only on `std`, `kest_core` and `serde_json`).
#[path = "../../crates/kest-cli/src/render.rs"]
pub mod render;
