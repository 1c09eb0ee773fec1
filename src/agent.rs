//! `camgw run`: builds the agent from a validated config and runs it until shutdown.
//!
//! Order at start: open (recover) the buffer and report what recovery skipped, bind the
//! ingest listener, start the uplink. At shutdown: stop ingest, let the uplink publish the
//! offline status, then flush and close the buffer.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::buffer::{Buffer, Options};
use crate::clock::Clock;
use crate::config::Config;
use crate::health::Monitor;
use crate::ingest::{self, Ingest};
use crate::record::{format_id, new_id, Body, NewRecord};
use crate::uplink::{Retained, Uplink, UplinkStats};

/// A running agent's handles, for callers that embed it (the demo, tests).
pub struct Running {
    pub buffer: Buffer,
    pub stats: Arc<UplinkStats>,
    pub ingest_addr: Option<std::net::SocketAddr>,
    pub boot_id: String,
    pub retained: Arc<Retained>,
    pub check_now: Arc<tokio::sync::Notify>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Starts every part of the agent; they stop when `shutdown` is cancelled and
/// [`Running::finish`] is awaited.
pub async fn start(
    config: Config,
    clock: Arc<dyn Clock>,
    shutdown: CancellationToken,
) -> anyhow::Result<Running> {
    let config = Arc::new(config);
    let boot_id = format_id(new_id());
    let data_dir = &config.gateway.data_dir;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create data_dir {}", data_dir.display()))?;
    let opts = Options::new(
        config.buffer.max_bytes,
        config.buffer.sync,
        config.buffer.sync_interval,
    );
    let (buffer, recovery) = Buffer::open(data_dir, opts, clock.clone())
        .with_context(|| format!("cannot open the buffer in {}", data_dir.display()))?;
    tracing::info!(
        pending = recovery.pending,
        segments = recovery.segments,
        "buffer opened"
    );
    if recovery.anything_skipped() {
        tracing::warn!(
            corrupt = recovery.corrupt,
            torn_bytes = recovery.torn_bytes,
            strays = ?recovery.strays,
            "buffer recovery skipped damaged data"
        );
        let alert = NewRecord {
            ts_ms: clock.now_ms(),
            clock_synced: clock.synced(),
            body: Body::alert(
                "buffer_corrupt",
                None,
                serde_json::json!({
                    "corrupt_records": recovery.corrupt,
                    "torn_tail_bytes": recovery.torn_bytes,
                    "stray_files": recovery.strays,
                    "empty_segments_removed": recovery.empty_removed,
                    "pending": recovery.pending,
                }),
            ),
        };
        if let Err(e) = buffer.append(alert).await {
            tracing::error!("cannot record the buffer_corrupt alert: {e}");
        }
    }

    let mut tasks = Vec::new();
    let mut ingest_addr = None;
    if let Some(ing) = &config.ingest {
        let listener = TcpListener::bind(ing.listen)
            .await
            .with_context(|| format!("cannot listen on {} (ingest.listen)", ing.listen))?;
        ingest_addr = Some(listener.local_addr()?);
        let state = Ingest {
            config: config.clone(),
            buffer: buffer.clone(),
            clock: clock.clone(),
        };
        let sd = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            if let Err(e) = ingest::serve(listener, state, sd).await {
                tracing::error!("ingest server failed: {e}");
            }
        }));
        tracing::info!(addr = %ingest_addr.unwrap(), "ingest listening");
    }

    let stats = Arc::new(UplinkStats::default());
    let retained = Arc::new(Retained::default());
    let uplink = Uplink {
        retained: retained.clone(),
        config: config.clone(),
        buffer: buffer.clone(),
        clock: clock.clone(),
        boot_id: boot_id.clone(),
        started: Instant::now(),
        stats: stats.clone(),
    };
    let sd = shutdown.clone();
    tasks.push(tokio::spawn(uplink.run(sd)));

    let check_now = Arc::new(tokio::sync::Notify::new());
    let monitor = Monitor {
        config: config.clone(),
        buffer: buffer.clone(),
        clock: clock.clone(),
        retained: retained.clone(),
        check_now: check_now.clone(),
        progress: Arc::new(std::sync::atomic::AtomicU64::new(0)),
    };
    tasks.push(tokio::spawn(monitor.run(shutdown.clone())));
    Ok(Running {
        buffer,
        stats,
        ingest_addr,
        boot_id,
        retained,
        check_now,
        tasks,
    })
}

impl Running {
    /// Waits for every task to stop (after `shutdown` was cancelled), then flushes and closes
    /// the buffer.
    pub async fn finish(self) {
        for t in self.tasks {
            let _ = t.await;
        }
        let b = self.buffer.clone();
        let _ = tokio::task::spawn_blocking(move || {
            if let Err(e) = b.flush_blocking() {
                tracing::error!("final buffer flush failed: {e}");
            }
            b.close();
        })
        .await;
    }
}

/// `camgw run`: runs until SIGTERM or SIGINT.
pub async fn run(config: Config, clock: Arc<dyn Clock>) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let running = start(config, clock, shutdown.clone()).await?;
    wait_for_signal().await?;
    tracing::info!("shutting down");
    shutdown.cancel();
    running.finish().await;
    tracing::info!("stopped");
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
