//! SPEC §9 / §11: the hook's overhead with a batch exporter installed, next
//! to the same hook with no tracer provider and one raw Ed25519 signature of
//! the payload size the hook signs — all in one run, so the ratios share the
//! machine's load.
//!
//! The fixture is the one of `benches/hook.rs` (mock engine, warm decision
//! cache, one call appending to a fresh flow continuing a 10-entry passport).
//! With an exporter the span is recorded: its attributes are computed (the
//! passport, about 10 KB of JSON here, is above the 4 KiB attribute limit,
//! so the span carries its chain tip and claim-check id) and the finished
//! span is queued for the batch processor, whose own thread writes the file
//! or the SQLite store.
//!
//! Each exporter is measured twice: flat out (one thread calling back to
//! back, ~40 000 calls a second, where the export threads compete with the
//! caller for the second core of a 2-core machine) and paced (`_paced`:
//! about 6 000 calls a second, only the call timed).
//!
//! Run with `cargo bench -p kest-benches --bench export -- --noplot`;
//! `scripts/bench-ratios --bench export` prints the ratios. With
//! `--features mimalloc` the same run uses mimalloc as the global allocator.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use ed25519_dalek::Signer as _;
use kest::Kest;
use kest::hook::Verified;
use kest::telemetry::{self, Exporter};
use kest_benches::hook::{EngineKind, base_passport, call, flow, hook, runtime};
use kest_benches::{signer, signing_input};
use kest_core::Passport;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};

#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn measure(c: &mut Criterion, name: &str, hook: &Verified, kest: &Arc<Kest>, base: &Passport) {
    let mut g = c.benchmark_group("hook_export");
    g.bench_function(name, |b| {
        b.iter_batched(
            || flow(base),
            |f| {
                call(hook, kest, &f).unwrap();
                f
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

/// The pause after each call of a paced case: the calls arrive at about
/// 6 000 a second (the sleep overshoots by the timer slack), a busy service
/// rather than one thread calling flat out, so the export threads keep up.
const PACE: Duration = Duration::from_micros(100);

/// One call per iteration at the pace of [`PACE`]; only the call is timed.
fn measure_paced(c: &mut Criterion, name: &str, hook: &Verified, kest: &Arc<Kest>, base: &Passport) {
    let mut g = c.benchmark_group("hook_export");
    // Criterion plans by the measured time; the pauses are not measured,
    // so a short measurement keeps the wall time of a case to seconds.
    g.warm_up_time(Duration::from_millis(100)).measurement_time(Duration::from_millis(400));
    g.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            for _ in 0..iters {
                let f = flow(base);
                let start = Instant::now();
                call(hook, kest, &f).unwrap();
                timed += start.elapsed();
                drop(f);
                std::thread::sleep(PACE);
            }
            timed
        })
    });
    g.finish();
}

/// An exporter that drops every batch.
#[derive(Debug)]
struct Discard;

impl SpanExporter for Discard {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        black_box(batch);
        Ok(())
    }
}

fn spans_in_file(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["resourceSpans"][0]["scopeSpans"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["spans"].as_array().unwrap().len())
                .sum::<usize>()
        })
        .sum()
}

fn benches(c: &mut Criterion) {
    let base = base_passport();
    let kind = EngineKind::Mock;
    let hook = hook(kind);
    let kest = runtime(kind.engine(), Duration::from_secs(3600));
    let f = flow(&base);
    call(&hook, &kest, &f).unwrap();
    let message = signing_input(f.passport().entries().last().unwrap().jws()).as_bytes().to_vec();
    let sk = signer().signing_key().clone();

    let mut g = c.benchmark_group("hook_export");
    g.bench_function("raw_ed25519_sign", |b| b.iter(|| sk.sign(black_box(&message))));
    g.finish();

    // No provider: the global no-op tracer, nothing recorded.
    measure(c, "no_exporter", &hook, &kest, &base);
    measure_paced(c, "no_exporter_paced", &hook, &kest, &base);

    // A provider the application installs itself (the hook records through
    // the OpenTelemetry API, on the calling thread), with a batch processor
    // whose exporter discards the spans (no export work competing for the
    // cores). The file and SQLite cases below go through
    // `kest::telemetry::init`, i.e. Kest's span recorder.
    let provider = SdkTracerProvider::builder().with_batch_exporter(Discard).build();
    opentelemetry::global::set_tracer_provider(provider.clone());
    measure(c, "recorded_discarded", &hook, &kest, &base);
    provider.shutdown().unwrap();

    let dir = std::env::temp_dir().join(format!("kest-bench-export-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();

    let file = dir.join("spans.jsonl");
    let guard = telemetry::init("kest-bench", [Exporter::File(file.clone())]).unwrap();
    measure(c, "file_exporter", &hook, &kest, &base);
    measure_paced(c, "file_exporter_paced", &hook, &kest, &base);
    guard.shutdown().unwrap();
    let written = spans_in_file(&file);

    let db = dir.join("spans.db");
    let guard = telemetry::init("kest-bench", [Exporter::Sqlite(db.clone())]).unwrap();
    measure(c, "sqlite_exporter", &hook, &kest, &base);
    measure_paced(c, "sqlite_exporter_paced", &hook, &kest, &base);
    guard.shutdown().unwrap();

    // The batch processor drops spans when its queue (2048) is full rather
    // than block a call: say how many of the measured spans were written.
    eprintln!(
        "hook_export: file exporter wrote {written} spans ({} bytes)",
        std::fs::metadata(&file).unwrap().len()
    );
    eprintln!("hook_export: sqlite store {} bytes", std::fs::metadata(&db).unwrap().len());
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group! {
    name = export_benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(700))
        .measurement_time(Duration::from_secs(3));
    targets = benches
}
criterion_main!(export_benches);
