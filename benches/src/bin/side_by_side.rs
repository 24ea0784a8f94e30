//! Our side of `scripts/bench-side-by-side`: times the operations the
//! Python reference is timed on (`tests/interop/reference_bench.py`) and
//! prints JSON with microseconds per operation.
//!
//! ```text
//! cargo run --release -p kest-benches --bin side-by-side -- --iterations 2000
//! ```
//!
//! Operations (same shapes as the reference harness):
//! - `hook_{mock,rego,cedar}`: one hooked call appending to a flow that
//!   holds a 10-entry passport, warm decision cache; `hook_mock_root` the
//!   mock call in an empty flow (a root step);
//! - `sign_entry`: canonicalize + sign one ~900-byte entry;
//! - `verify_100`: verify a 100-entry passport (signatures and links;
//!   `verify_100_semantic` also recomputes trust and taints).
//!
//! Each figure is the median over 5 rounds of the mean of `iterations / 5`
//! operations (a tenth of them first as warm-up); `verify_*` run a
//! twentieth as many iterations.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kest::lineage::Lineage;
use kest_benches::hook::{EngineKind, base_passport, call, flow, flow_identity, hook, runtime};
use kest_benches::{draft, key_set, passport, signer};
use kest_core::{Signer as _, TrustRules, Verifier};
use serde_json::{Map, Value, json};

const ROUNDS: usize = 5;

/// Median over `ROUNDS` of the mean µs per operation; `round(n)` runs `n`
/// operations and returns the time they took.
fn measure(iterations: usize, mut round: impl FnMut(usize) -> Duration) -> f64 {
    let per_round = (iterations / ROUNDS).max(1);
    round((iterations / 10).max(1));
    let mut means: Vec<f64> =
        (0..ROUNDS).map(|_| round(per_round).as_secs_f64() * 1e6 / per_round as f64).collect();
    means.sort_by(f64::total_cmp);
    means[ROUNDS / 2]
}

fn usage() -> ! {
    eprintln!("usage: side-by-side [--iterations N]   (default 2000)");
    std::process::exit(2)
}

fn main() {
    let mut iterations = 2000usize;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--iterations" => {
                iterations = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|n| *n >= ROUNDS)
                    .unwrap_or_else(|| usage())
            }
            _ => usage(),
        }
    }

    let mut ops = Map::new();
    let mut sizes = Map::new();

    // Hook: fresh flows are built outside the timed loop.
    let base = base_passport();
    for kind in EngineKind::ALL {
        let hook = hook(kind);
        let kest = runtime(kind.engine(), Duration::from_secs(3600));
        let first = flow(&base);
        call(&hook, &kest, &first).unwrap_or_else(|e| panic!("{} hook refused: {e}", kind.name()));
        let jws_len = first.passport().entries().last().unwrap().jws().len();
        sizes.insert(format!("hook_{}_jws_bytes", kind.name()), json!(jws_len));
        let us = measure(iterations, |n| {
            let flows: Vec<_> = (0..n).map(|_| flow(&base)).collect();
            let start = Instant::now();
            for f in &flows {
                call(&hook, &kest, f).unwrap();
            }
            let elapsed = start.elapsed();
            drop(flows);
            elapsed
        });
        ops.insert(format!("hook_{}", kind.name()), json!(us));
    }

    // The mock-engine call as a root step (an empty flow).
    {
        let hook = hook(EngineKind::Mock);
        let kest = runtime(EngineKind::Mock.engine(), Duration::from_secs(3600));
        let root = || Lineage::new().with_identity(flow_identity());
        call(&hook, &kest, &root()).unwrap();
        let us = measure(iterations, |n| {
            let flows: Vec<_> = (0..n).map(|_| root()).collect();
            let start = Instant::now();
            for f in &flows {
                call(&hook, &kest, f).unwrap();
            }
            start.elapsed()
        });
        ops.insert("hook_mock_root".into(), json!(us));
    }

    // sign_entry of a typical ~900-byte entry.
    let signer = signer();
    let fixture = passport(50, &signer).unwrap();
    let entry = fixture.prepare(&draft(50), signer.principal(), &TrustRules::default()).unwrap();
    sizes.insert(
        "sign_entry_payload_bytes".into(),
        json!(kest_core::json::canonicalize(&entry).unwrap().len()),
    );
    let us = measure(iterations, |n| {
        let entries: Vec<_> = (0..n).map(|_| entry.clone()).collect();
        let start = Instant::now();
        for e in entries {
            black_box(kest_core::sign_entry(e, &signer).unwrap());
        }
        start.elapsed()
    });
    ops.insert("sign_entry".into(), json!(us));

    // verify a 100-entry passport.
    let hundred = passport(100, &signer).unwrap().to_unverified();
    sizes.insert("verify_100_json_bytes".into(), json!(hundred.to_json().len()));
    let keys = key_set(&signer);
    for (name, verifier) in [
        ("verify_100", Verifier::new(keys.clone())),
        ("verify_100_semantic", Verifier::new(keys.clone()).semantic(true)),
    ] {
        let verifier = Arc::new(verifier);
        let us = measure((iterations / 20).max(ROUNDS * 2), |n| {
            let start = Instant::now();
            for _ in 0..n {
                black_box(verifier.verify(black_box(&hundred)).unwrap());
            }
            start.elapsed()
        });
        ops.insert(name.into(), json!(us));
    }

    let out = json!({
        "impl": "kest-rs",
        "unit": "us_per_op",
        "iterations": iterations,
        "ops": Value::Object(ops),
        "sizes": Value::Object(sizes),
    });
    println!("{out}");
}
