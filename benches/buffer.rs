//! Buffer benchmarks (no broker): append rates under both sync modes with 16 concurrent
//! writers, the serial-fsync bound, and start-up recovery of a full 64 MiB buffer.
//! Run: `cargo bench --bench buffer` (`-- quick` for a smoke run). Reports medians.

use std::sync::Arc;
use std::time::{Duration, Instant};

use camgw::buffer::{Buffer, Options};
use camgw::clock::FixedClock;
use camgw::config::SyncMode;
use camgw::record::{Body, NewRecord};

fn rec() -> NewRecord {
    NewRecord {
        ts_ms: 1_796_000_000_000,
        clock_synced: true,
        body: Body::motion(
            "cam01",
            camgw::record::Source::Ingest,
            camgw::record::MotionState::Start,
            serde_json::Value::Null,
        ),
    }
}

fn clock() -> Arc<FixedClock> {
    Arc::new(FixedClock::new(1_796_000_000_000, true))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Events/s for `total` appends from `writers` concurrent tasks.
fn append_rate(sync: SyncMode, writers: usize, total: usize) -> f64 {
    let dir = tempfile::tempdir_in(bench_dir()).unwrap();
    let opts = Options::new(1 << 30, sync, Duration::from_millis(200));
    let (buf, _) = Buffer::open(dir.path(), opts, clock()).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let per = total / writers;
    let t = Instant::now();
    rt.block_on(async {
        let tasks: Vec<_> = (0..writers)
            .map(|_| {
                let b = buf.clone();
                tokio::spawn(async move {
                    for _ in 0..per {
                        b.append(rec()).await.unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    });
    let rate = (per * writers) as f64 / t.elapsed().as_secs_f64();
    buf.close();
    rate
}

fn bench_dir() -> std::path::PathBuf {
    std::env::var_os("CAMGW_BENCH_DIR")
        .map(Into::into)
        .unwrap_or_else(std::env::temp_dir)
}

fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    let runs = if quick { 1 } else { 5 };
    let scale = if quick { 10 } else { 1 };
    println!(
        "camgw buffer benchmarks (median of {runs} runs), dir {}",
        bench_dir().display()
    );

    let r: Vec<_> = (0..runs)
        .map(|_| append_rate(SyncMode::Interval, 16, 400_000 / scale))
        .collect();
    println!(
        "append, sync=interval, 16 writers: {:>10.0} events/s (target >= 200000)",
        median(r)
    );
    let r: Vec<_> = (0..runs)
        .map(|_| append_rate(SyncMode::Always, 16, 40_000 / scale))
        .collect();
    let always16 = median(r);
    println!(
        "append, sync=always,   16 writers: {:>10.0} events/s (target >= 20000)",
        always16
    );
    let r: Vec<_> = (0..runs)
        .map(|_| append_rate(SyncMode::Always, 1, 4_000 / scale))
        .collect();
    let serial = median(r);
    println!("append, sync=always,    1 writer : {:>10.0} events/s (serial fsync: the physical bound per writer)", serial);
    println!("group commit gain: {:.1}x", always16 / serial);

    // Recovery of a full 64 MiB buffer.
    let dir = tempfile::tempdir_in(bench_dir()).unwrap();
    let max = 64u64 << 20;
    let opts = Options::new(max, SyncMode::Interval, Duration::from_millis(200));
    {
        let (buf, _) = Buffer::open(dir.path(), opts.clone(), clock()).unwrap();
        let target = if quick { max / 16 } else { max - (2 << 20) };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            while buf.stats().bytes < target {
                let tasks: Vec<_> = (0..16)
                    .map(|_| {
                        let b = buf.clone();
                        tokio::spawn(async move {
                            for _ in 0..2000 {
                                b.append(rec()).await.unwrap();
                            }
                        })
                    })
                    .collect();
                for t in tasks {
                    t.await.unwrap();
                }
            }
        });
        buf.flush_blocking().unwrap();
        buf.close();
    }
    let mut times = Vec::new();
    let mut pending = 0;
    let mut bytes = 0;
    for _ in 0..runs {
        // Drop the page cache where we can, so this measures the disk too (root only).
        let _ = std::process::Command::new("sh")
            .args(["-c", "sync; echo 3 > /proc/sys/vm/drop_caches"])
            .stderr(std::process::Stdio::null())
            .status();
        let t = Instant::now();
        let (buf, rep) = Buffer::open(dir.path(), opts.clone(), clock()).unwrap();
        times.push(t.elapsed().as_secs_f64());
        pending = rep.pending;
        bytes = buf.stats().bytes;
        buf.close();
    }
    println!(
        "recovery of {:.1} MiB ({} records): {:.3} s (target < 1 s)",
        bytes as f64 / (1 << 20) as f64,
        pending,
        median(times)
    );
}
