//! The size of the SQLite span store (and of the OTLP JSON lines file) per
//! 10 000 hooked calls (SPEC §9, issue 8 closing figures).
//!
//! Two shapes: root calls (each call starts its own flow: the span's
//! passport holds one entry) and calls continuing the 10-entry flow of the
//! hook benchmarks (each span carries the 11-entry passport JSON, about
//! 11 KB, in `kest.passport`). The stores are written through
//! `kest::telemetry::init` and shut down (flushed, WAL checkpointed) before
//! they are measured.
//!
//! `cargo run --release -p kest-benches --bin export-size [-- CALLS]`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use kest::hook::Verified;
use kest::lineage::Lineage;
use kest::telemetry::{self, Exporter};
use kest_benches::hook::{EngineKind, OPERATION, base_passport, call, flow, hook, runtime};

fn size(path: &Path) -> u64 {
    let mut total = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    for suffix in ["-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        total += std::fs::metadata(Path::new(&p)).map(|m| m.len()).unwrap_or(0);
    }
    total
}

fn rows(db: &Path) -> i64 {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row("SELECT COUNT(*) FROM spans", [], |r| r.get(0)).unwrap()
}

fn main() {
    let calls: usize = std::env::args().nth(1).map_or(10_000, |a| a.parse().expect("CALLS is a number"));
    let kind = EngineKind::Mock;
    let hook = hook(kind);
    let root_hook =
        Verified::builder(OPERATION).policy(kind.policy()).source_type("internal").build().unwrap();
    let kest = runtime(kind.engine(), Duration::from_secs(3600));
    let base = base_passport();
    let dir = std::env::temp_dir().join(format!("kest-export-size-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();

    println!("{calls} hooked calls per store (mock engine, warm decision cache)");
    println!("{:34} {:>14} {:>10} {:>14} {:>10}", "shape", "sqlite bytes", "rows", "jsonl bytes", "seconds");
    for (shape, continue_flow) in
        [("root calls (1-entry passport)", false), ("continuing a 10-entry flow", true)]
    {
        let db = dir.join(format!("{continue_flow}.db"));
        let file = dir.join(format!("{continue_flow}.jsonl"));
        let guard =
            telemetry::init("kest-export-size", [Exporter::Sqlite(db.clone()), Exporter::File(file.clone())])
                .unwrap();
        let start = Instant::now();
        for i in 0..calls {
            if continue_flow {
                call(&hook, &kest, &flow(&base)).unwrap();
            } else {
                call(&root_hook, &kest, &Lineage::new()).unwrap();
            }
            // Let the batch processors keep up: a full queue drops spans,
            // and this figure is about what a store holds.
            if i % 1024 == 1023 {
                guard.force_flush().unwrap();
            }
        }
        guard.shutdown().unwrap();
        let secs = start.elapsed().as_secs_f64();
        println!("{shape:34} {:>14} {:>10} {:>14} {:>10.1}", size(&db), rows(&db), size(&file), secs);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
