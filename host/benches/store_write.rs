//! How many spans per second the embedded store writes to its file, on its
//! own thread (one core), from the batches of encoded spans the export
//! worker hands it — the same path `polytrace up` takes (spans are encoded
//! when they end, on the request threads, so that is not timed here).
//!
//!     cargo bench -p polytrace --bench store_write
//!
//! The spans are what hello-rust produces per request: a SERVER span with
//! the HTTP semantic-convention attributes (12) and its child `hello.work`
//! with eight attributes and one event. Environment: BENCH_SPANS (default
//! 400000), BENCH_BATCH (spans per batch, default 512, the export batch),
//! BENCH_FLUSH_EVERY (batches queued before waiting for the writer, 64).

#[path = "common/hello_spans.rs"]
mod hello_spans;

#[path = "common/env.rs"]
mod env;
use env::env_or;
use hello_spans::hello_spans;
use polytrace::store::{Store, StoreConfig};
use polytrace::telemetry::traces::encoded::EncodedSpan;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// The allocator `polytrace up` runs with (host/src/main.rs): the writer
/// frees what the request threads allocated, which glibc's malloc makes
/// several times dearer.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let total = env_or("BENCH_SPANS", 400_000);
    let batch_size = env_or("BENCH_BATCH", 512);
    // Batches handed over between waits for the writer: 1 makes one
    // transaction per batch, as a host under moderate load does.
    let flush_every = env_or("BENCH_FLUSH_EVERY", 64).max(1);
    let dir = std::env::temp_dir().join(format!("polytrace-write-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = Store::open(StoreConfig {
        path: Some(dir.join("traces.db")),
        max_age: Duration::from_secs(86_400),
        max_bytes: 8 << 30,
    })
    .unwrap();
    let batches: Vec<Vec<EncodedSpan>> = hello_spans(total)
        .chunks(batch_size)
        .map(|c| c.iter().map(|s| EncodedSpan::encode(s, 0)).collect())
        .collect();
    let started = Instant::now();
    let mut sent = 0u64;
    for (n, batch) in batches.into_iter().enumerate() {
        sent += batch.len() as u64;
        store.add("hello", batch);
        // Stay within the queue so nothing is dropped: what is measured is
        // the writer's pace, not the queue's. Wait by watching its count,
        // not with a flush, which also applies retention (a scan of every
        // block) and which the live host never asks for.
        if n % flush_every == flush_every - 1 {
            let waited = Instant::now();
            while store.stats.stored.load(Ordering::Relaxed)
                + store.stats.dropped.load(Ordering::Relaxed)
                < sent
            {
                assert!(waited.elapsed() < Duration::from_secs(600));
                std::thread::yield_now();
            }
        }
    }
    assert!(store.flush(Duration::from_secs(600)));
    let elapsed = started.elapsed();
    let stored = store.stats.stored.load(Ordering::Relaxed);
    let dropped = store.stats.dropped.load(Ordering::Relaxed);
    let bytes = std::fs::metadata(dir.join("traces.db")).map_or(0, |m| m.len())
        + std::fs::metadata(dir.join("traces.db-wal")).map_or(0, |m| m.len());
    println!(
        "store write: {stored} spans in {:.2} s = {:.0} spans/s (dropped {dropped}), {:.0} bytes/span on disk",
        elapsed.as_secs_f64(),
        stored as f64 / elapsed.as_secs_f64(),
        bytes as f64 / stored.max(1) as f64,
    );
    let _ = std::fs::remove_dir_all(&dir);
}
