//! The wiring of the parts: what lives across reconfigurations ([`Shared`]: the buffer,
//! retained health, the outbox, the beats), opened once with the recovery alerts, and the parts
//! a config decides ([`Parts`]: ingest, uplink, events hub, health monitor, board, system
//! sampler), started together and stopped together.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::buffer::{Buffer, Options};
use crate::bus::{Gauges, Outbox, Retained};
use crate::clock::Clock;
use crate::config::Config;
use crate::health::Monitor;
use crate::ingest::{self, Ingest};
use crate::record::{format_id, new_id, AlertKind};
use crate::uplink::{Uplink, UplinkStats};

/// What lives across reconfigurations.
pub struct Shared {
    pub buffer: Buffer,
    pub clock: Arc<dyn Clock>,
    pub boot_id: String,
    pub started: Instant,
    pub stats: Arc<UplinkStats>,
    pub retained: Arc<Retained>,
    pub outbox: Arc<Outbox>,
    pub commands: mpsc::Sender<Vec<u8>>,
    pub final_shutdown: Arc<AtomicBool>,
    pub check_now: Arc<tokio::sync::Notify>,
    /// Probe rounds completed, all cameras together.
    pub progress: Arc<crate::bus::Counter>,
    /// Each camera's state and last probe round (the health monitor keeps it).
    pub probes: Arc<crate::bus::Probes>,
    pub uplink_beat: Arc<crate::watchdog::Beat>,
    pub health_beat: Arc<crate::watchdog::Beat>,
    pub board_beat: Arc<crate::watchdog::Beat>,
    /// Telemetry readings from the board and the system sampler.
    pub gauges: Arc<Gauges>,
    /// Free disk under data_dir is below `gateway.disk_low_mb`.
    pub disk_low: Arc<AtomicBool>,
    /// The install directory and this start's place in it (`camgw run` only).
    pub updates: Option<Arc<crate::update::Local>>,
}

impl Shared {
    /// Appends an alert (logging, not failing, when the buffer refuses).
    pub async fn alert(&self, kind: AlertKind, camera: Option<&str>, detail: serde_json::Value) {
        self.buffer
            .alert(self.clock.as_ref(), kind, camera, detail)
            .await;
    }
}

/// Opens the buffer (reporting what recovery skipped) and everything else that outlives a
/// config; returns the receiving end of the command queue.
pub async fn open_shared(
    config: &Config,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<(Shared, mpsc::Receiver<Vec<u8>>)> {
    let data_dir = &config.gateway.data_dir;
    crate::durable::create_dir_all_durable(data_dir)
        .with_context(|| format!("cannot create data_dir {}", data_dir.display()))?;
    let mut opts = Options::new(
        config.buffer.max_bytes,
        config.buffer.sync,
        config.buffer.sync_interval,
    );
    opts.still_max_bytes = config.snapshot.buffer_max_bytes;
    let (buffer, recovery) =
        Buffer::open_on(crate::faults::buffer_fs(), data_dir, opts, clock.clone())
            .with_context(|| format!("cannot open the buffer in {}", data_dir.display()))?;
    tracing::info!(
        pending = recovery.pending,
        segments = recovery.segments,
        "buffer opened"
    );
    // Small: each queued payload may be up to the command link's 1 MiB limit.
    let (tx, rx) = mpsc::channel(4);
    let shared = Shared {
        buffer,
        clock,
        boot_id: format_id(new_id()),
        started: Instant::now(),
        stats: Arc::new(UplinkStats::default()),
        retained: Arc::new(Retained::default()),
        outbox: Arc::new(Outbox::default()),
        commands: tx,
        final_shutdown: Arc::new(AtomicBool::new(false)),
        check_now: Arc::new(tokio::sync::Notify::new()),
        progress: Arc::default(),
        probes: Arc::default(),
        uplink_beat: Arc::new(crate::watchdog::Beat::default()),
        health_beat: Arc::new(crate::watchdog::Beat::default()),
        board_beat: Arc::new(crate::watchdog::Beat::inactive()),
        gauges: Arc::new(Gauges::default()),
        disk_low: Arc::new(AtomicBool::new(false)),
        updates: None,
    };
    if recovery.unclean {
        let (sync, at_risk_ms) = match config.buffer.sync {
            crate::config::SyncMode::Always => ("always", 0),
            crate::config::SyncMode::Interval => {
                ("interval", config.buffer.sync_interval.as_millis() as u64)
            }
        };
        tracing::warn!(
            sync,
            at_risk_ms,
            "the previous run did not shut down cleanly"
        );
        shared
            .alert(
                AlertKind::UncleanShutdown,
                None,
                serde_json::json!({
                    "sync": sync,
                    // With "always" every accepted record was on disk before it was accepted;
                    // with "interval", a power cut loses at most what arrived in this window.
                    "accepted_records_at_risk_ms": at_risk_ms,
                    "pending": recovery.pending,
                }),
            )
            .await;
    }
    if recovery.anything_skipped() {
        tracing::warn!(corrupt = recovery.corrupt, torn_bytes = recovery.torn_bytes, strays = ?recovery.strays, quarantined = ?recovery.quarantined, "buffer recovery skipped damaged data");
        shared
            .alert(
                AlertKind::BufferCorrupt,
                None,
                serde_json::json!({
                    "corrupt_records": recovery.corrupt,
                    "torn_tail_bytes": recovery.torn_bytes,
                    "stray_files": recovery.strays,
                    "quarantined": recovery.quarantined,
                    "empty_segments_removed": recovery.empty_removed,
                    "pending": recovery.pending,
                }),
            )
            .await;
    }
    Ok((shared, rx))
}

/// The parts a config decides.
pub struct Parts {
    pub config: Arc<Config>,
    pub ingest_addr: Option<std::net::SocketAddr>,
    /// The running board task, when the config names a board that opened.
    pub board: Option<crate::board::Handle>,
    pub(super) token: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

pub async fn start_parts(config: Arc<Config>, shared: &Shared) -> anyhow::Result<Parts> {
    let token = CancellationToken::new();
    let mut tasks = Vec::new();
    let mut ingest_addr = None;
    let (stills, still_rx) = crate::bus::StillRequests::channel(256);
    let hub = crate::events::Hub::with_stills(
        config.clone(),
        shared.buffer.clone(),
        shared.clock.clone(),
        stills.clone(),
    );
    tasks.push(tokio::spawn(hub.clone().run(token.clone())));
    if config.cameras.iter().any(|c| c.snapshot) {
        let service = crate::snapshot::Service {
            config: config.clone(),
            buffer: shared.buffer.clone(),
            clock: shared.clock.clone(),
            gauges: shared.gauges.clone(),
            requests: stills,
        };
        tasks.push(tokio::spawn(service.run(still_rx, token.clone())));
    }
    if let Some(ing) = &config.ingest {
        let listener = bind_retrying(ing.listen)
            .await
            .with_context(|| format!("cannot listen on {} (ingest.listen)", ing.listen))?;
        ingest_addr = Some(listener.local_addr()?);
        let state = Ingest {
            config: config.clone(),
            buffer: shared.buffer.clone(),
            clock: shared.clock.clone(),
            hub: hub.clone(),
        };
        let sd = token.clone();
        let limits = ingest::Limits::for_fds(ingest::raise_fd_limit(), config.cameras.len());
        tracing::debug!(connections = limits.connections, "ingest limits");
        tasks.push(tokio::spawn(async move {
            if let Err(e) = ingest::serve(listener, state, limits, sd).await {
                tracing::error!("ingest server failed: {e}");
            }
        }));
        tracing::info!(addr = %ingest_addr.unwrap(), "ingest listening");
    }
    if let Some(m) = &config.metrics {
        let listener = bind_retrying(m.listen)
            .await
            .with_context(|| format!("cannot listen on {} (metrics.listen)", m.listen))?;
        let source = crate::metrics::Source {
            buffer: shared.buffer.clone(),
            stats: shared.stats.clone(),
            probes: shared.probes.clone(),
            boot_id: shared.boot_id.clone(),
            started: shared.started,
        };
        tracing::info!(addr = %listener.local_addr()?, "metrics listening");
        tasks.push(tokio::spawn(crate::metrics::serve(
            listener,
            source,
            token.clone(),
        )));
    }
    let uplink = Uplink {
        config: config.clone(),
        buffer: shared.buffer.clone(),
        clock: shared.clock.clone(),
        boot_id: shared.boot_id.clone(),
        started: shared.started,
        stats: shared.stats.clone(),
        retained: shared.retained.clone(),
        outbox: shared.outbox.clone(),
        commands: Some(shared.commands.clone()),
        final_shutdown: shared.final_shutdown.clone(),
        beat: shared.uplink_beat.clone(),
        gauges: shared.gauges.clone(),
    };
    tasks.push(tokio::spawn(uplink.run(token.clone())));
    let monitor = Monitor {
        config: config.clone(),
        buffer: shared.buffer.clone(),
        clock: shared.clock.clone(),
        retained: shared.retained.clone(),
        check_now: shared.check_now.clone(),
        progress: shared.progress.clone(),
        probes: shared.probes.clone(),
        beat: shared.health_beat.clone(),
        hub: hub.clone(),
    };
    tasks.push(tokio::spawn(monitor.run(token.clone())));
    let board = start_board(&config, shared, &hub, &token, &mut tasks).await;
    let sampler = crate::system::Sampler {
        config: config.clone(),
        buffer: shared.buffer.clone(),
        clock: shared.clock.clone(),
        gauges: shared.gauges.clone(),
        disk_low: shared.disk_low.clone(),
        board: board.as_ref().map(|b| b.status.clone()),
    };
    tasks.push(tokio::spawn(sampler.run(token.clone())));
    Ok(Parts {
        config,
        ingest_addr,
        board,
        token,
        tasks,
    })
}

/// What the status LED reflects of the rest of the agent.
struct LedInputs {
    stats: Arc<UplinkStats>,
    retained: Arc<Retained>,
    disk_low: Arc<AtomicBool>,
}

impl crate::board::AgentState for LedInputs {
    fn connected(&self) -> bool {
        self.stats.connected.load(Ordering::Relaxed)
    }
    fn camera_problem(&self) -> bool {
        self.retained.cameras_not_up() > 0
    }
    fn fault(&self) -> bool {
        self.disk_low.load(Ordering::Relaxed)
    }
}

/// Opens the board the config names and starts its task. A board that cannot be resolved
/// or opened is reported (`board_fault`) and left out; the agent runs on without it.
async fn start_board(
    config: &Arc<Config>,
    shared: &Shared,
    hub: &Arc<crate::events::Hub>,
    token: &CancellationToken,
    tasks: &mut Vec<tokio::task::JoinHandle<()>>,
) -> Option<crate::board::Handle> {
    let map = match crate::board::load_map(config) {
        Ok(Some(m)) => m,
        Ok(None) => return None,
        Err(e) => {
            tracing::error!("board: {e}");
            shared.gauges.set("board", serde_json::json!({"error": e}));
            shared
                .alert(
                    AlertKind::BoardFault,
                    None,
                    serde_json::json!({"board": config.gateway.board, "problems": [e]}),
                )
                .await;
            return None;
        }
    };
    let name = map.name.clone();
    let (board, problems) = crate::board::Board::open(map, config);
    tracing::info!(board = %name, relays = ?board.relay_names(), problems = problems.len(), "board opened");
    let task = crate::board::Task {
        board,
        config: config.clone(),
        buffer: shared.buffer.clone(),
        clock: shared.clock.clone(),
        hub: hub.clone(),
        state: Arc::new(LedInputs {
            stats: shared.stats.clone(),
            retained: shared.retained.clone(),
            disk_low: shared.disk_low.clone(),
        }),
        beat: shared.board_beat.clone(),
        open_problems: problems,
    };
    let (handle, join) = task.spawn(token.clone());
    tasks.push(join);
    Some(handle)
}

/// A listener re-bound right after the previous one closed may briefly find the port busy.
async fn bind_retrying(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let mut last = None;
    for _ in 0..20 {
        match TcpListener::bind(addr).await {
            Ok(l) => return Ok(l),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(last.unwrap())
}

impl Parts {
    pub async fn stop(self) {
        self.token.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
    }
}
