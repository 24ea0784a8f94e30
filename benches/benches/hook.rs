//! SPEC §11 hook benchmarks: the overhead of one hooked call (warm decision
//! cache, in-process engine) next to one raw Ed25519 signature of an
//! equally sized payload, and throughput with 1 and 2 threads.
//!
//! Every measured call appends one entry to a fresh flow continuing a
//! 10-entry passport (see `kest_benches::hook`), so the flow stays bounded
//! and the decision-cache key (which covers the lineage position) is the
//! same on every call.
//!
//! Run with `cargo bench -p kest-benches --bench hook -- --noplot`;
//! `scripts/bench-ratios` prints the ratios.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use ed25519_dalek::Signer as _;
use kest::Kest;
use kest::hook::Verified;
use kest_benches::hook::{EngineKind, base_passport, call, flow, hook, policy_input, runtime};
use kest_benches::{signer, signing_input};
use kest_core::Passport;

/// Calls per throughput iteration (split over the threads).
const CALLS: usize = 400;

/// Warm decision cache: longer than any run.
const WARM: Duration = Duration::from_secs(3600);

struct Setup {
    kind: EngineKind,
    hook: Verified,
    warm: Arc<Kest>,
    cold: Arc<Kest>,
}

fn setups() -> Vec<Setup> {
    EngineKind::ALL
        .into_iter()
        .map(|kind| {
            let engine = kind.engine();
            Setup {
                kind,
                hook: hook(kind),
                warm: runtime(Arc::clone(&engine), WARM),
                cold: runtime(engine, Duration::ZERO),
            }
        })
        .collect()
}

/// The hooked call with a warm cache, per engine, next to the raw signature
/// of a payload of the size the hook signs.
fn overhead(c: &mut Criterion, base: &Passport, setups: &[Setup]) {
    // One call per engine: checks it allows, warms the cache, and gives the
    // signing input the hook produces.
    let mut message = Vec::new();
    for s in setups {
        let f = flow(base);
        call(&s.hook, &s.warm, &f).unwrap_or_else(|e| panic!("{} hook refused: {e}", s.kind.name()));
        let p = f.passport();
        let last = p.entries().last().unwrap();
        message = signing_input(last.jws()).as_bytes().to_vec();
        eprintln!(
            "hook fixture ({}): flow of {} entries + 1, signing input {} B, payload {} B (JCS)",
            s.kind.name(),
            base.len(),
            message.len(),
            kest_core::json::canonicalize(last.payload()).unwrap().len()
        );
    }
    let sk = signer().signing_key().clone();
    let mut g = c.benchmark_group("hook");
    g.bench_function("raw_ed25519_sign", |b| b.iter(|| sk.sign(black_box(&message))));
    for s in setups {
        g.bench_function(s.kind.name(), |b| {
            b.iter_batched(
                || flow(base),
                |f| {
                    call(&s.hook, &s.warm, &f).unwrap();
                    f
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

/// Where the hook's time goes: the same call without a decision cache, each
/// in-process engine alone, canonicalize + sign of the hook's own entry, and
/// the flow set-up that `hook/*` excludes.
fn parts(c: &mut Criterion, base: &Passport, setups: &[Setup]) {
    let mut g = c.benchmark_group("hook_cold");
    for s in setups {
        g.bench_function(s.kind.name(), |b| {
            b.iter_batched(
                || flow(base),
                |f| {
                    call(&s.hook, &s.cold, &f).unwrap();
                    f
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();

    let mut g = c.benchmark_group("hook_parts");
    // (The mock engine records every request it sees, so timing it alone
    // for millions of iterations would only grow its log.)
    for s in setups.iter().filter(|s| s.kind != EngineKind::Mock) {
        let engine = s.kind.engine();
        let input = policy_input(s.kind, base);
        assert!(engine.evaluate(s.kind.policy(), &input).unwrap().is_allow());
        g.bench_function(format!("eval_{}", s.kind.name()), |b| {
            b.iter(|| engine.evaluate(black_box(s.kind.policy()), black_box(&input)).unwrap())
        });
    }
    let f = flow(base);
    call(&setups[0].hook, &setups[0].warm, &f).unwrap();
    let entry = f.passport().entries().last().unwrap().payload().clone();
    let signer = signer();
    g.bench_function("sign_entry_of_hook_entry", |b| {
        b.iter_batched(
            || entry.clone(),
            |e| kest_core::sign_entry(e, &signer).unwrap(),
            BatchSize::SmallInput,
        )
    });
    g.bench_function("flow_setup", |b| b.iter(|| flow(black_box(base))));
    g.finish();
}

/// `CALLS` hooked calls split over `threads` threads, each with its own flow
/// (every call a branch of it, so the cache stays warm), one shared runtime
/// and engine.
fn run(threads: usize, s: &Setup, base: &Passport) {
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                let own = flow(base);
                for _ in 0..CALLS / threads {
                    let branch = own.fork();
                    call(&s.hook, &s.warm, &branch).unwrap();
                }
            });
        }
    });
}

/// Control for the scaling figure: `CALLS` raw signatures of the hook's
/// payload size split the same way. If these do not scale either, the
/// machine (other load, SMT siblings) is the limit, not the hook.
fn run_raw(threads: usize, message: &[u8]) {
    let sk = signer().signing_key().clone();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                for _ in 0..CALLS / threads {
                    black_box(sk.sign(black_box(message)));
                }
            });
        }
    });
}

fn throughput(c: &mut Criterion, base: &Passport, setups: &[Setup]) {
    let s = &setups[0];
    let f = flow(base);
    call(&s.hook, &s.warm, &f).unwrap();
    let message = signing_input(f.passport().entries().last().unwrap().jws()).as_bytes().to_vec();
    let mut g = c.benchmark_group("throughput");
    g.throughput(Throughput::Elements(CALLS as u64));
    g.sample_size(10);
    for threads in [1, 2] {
        g.bench_function(format!("threads_{threads}"), |b| b.iter(|| run(threads, s, base)));
    }
    for threads in [1, 2] {
        g.bench_function(format!("raw_sign_threads_{threads}"), |b| b.iter(|| run_raw(threads, &message)));
    }
    g.finish();
}

fn benches(c: &mut Criterion) {
    let base = base_passport();
    let setups = setups();
    overhead(c, &base, &setups);
    parts(c, &base, &setups);
    throughput(c, &base, &setups);
}

criterion_group! {
    name = hook_benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(700))
        .measurement_time(Duration::from_secs(2));
    targets = benches
}
criterion_main!(hook_benches);
