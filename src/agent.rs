//! `camgw run`: the supervisor. It owns what lives for the whole process (the buffer, the
//! retained health, the command outbox, the replay memory) and (re)starts the parts that a
//! config decides (ingest, uplink, health monitor). Config changes (signed `set_config`, or
//! SIGHUP re-reading the file) are validated like `check-config`, applied as a whole by
//! restarting the parts with the new config, and rolled back to the last good config when
//! new MQTT settings cannot reach a broker within `security.rollback_timeout_s`.
//!
//! Order at start: open (recover) the buffer and report what recovery skipped, bind the
//! ingest listener, start the uplink and the health monitor. At shutdown: stop ingest, let the
//! uplink publish the offline status, then flush and close the buffer.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::buffer::{Buffer, Options};
use crate::clock::Clock;
use crate::config::Config;
use crate::health::{health_topic, Monitor};
use crate::ingest::{self, Ingest};
use crate::record::{format_id, new_id, Body, NewRecord};
use crate::remote;
use crate::uplink::{Gauges, Outbox, Retained, Uplink, UplinkStats};

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
    pub progress: Arc<AtomicU64>,
    pub uplink_beat: Arc<crate::watchdog::Beat>,
    pub health_beat: Arc<crate::watchdog::Beat>,
    pub board_beat: Arc<crate::watchdog::Beat>,
    /// Telemetry readings from the board and the system sampler.
    pub gauges: Arc<Gauges>,
    /// Free disk under data_dir is below `gateway.disk_low_mb`.
    pub disk_low: Arc<AtomicBool>,
}

impl Shared {
    /// Appends an alert (logging, not failing, when the buffer refuses).
    pub async fn alert(&self, kind: &str, camera: Option<&str>, detail: serde_json::Value) {
        let rec = NewRecord {
            ts_ms: self.clock.now_ms(),
            clock_synced: self.clock.synced(),
            body: Body::alert(kind, camera, detail),
        };
        if let Err(e) = self.buffer.append(rec).await {
            tracing::error!("cannot record the {kind} alert: {e}");
        }
    }
}

/// Opens the buffer (reporting what recovery skipped) and everything else that outlives a
/// config; returns the receiving end of the command queue.
pub async fn open_shared(
    config: &Config,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<(Shared, mpsc::Receiver<Vec<u8>>)> {
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
        progress: Arc::new(AtomicU64::new(0)),
        uplink_beat: Arc::new(crate::watchdog::Beat::default()),
        health_beat: Arc::new(crate::watchdog::Beat::default()),
        board_beat: Arc::new(crate::watchdog::Beat::inactive()),
        gauges: Arc::new(Gauges::default()),
        disk_low: Arc::new(AtomicBool::new(false)),
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
                "unclean_shutdown",
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
                "buffer_corrupt",
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
    token: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

pub async fn start_parts(config: Arc<Config>, shared: &Shared) -> anyhow::Result<Parts> {
    let token = CancellationToken::new();
    let mut tasks = Vec::new();
    let mut ingest_addr = None;
    let hub = crate::events::Hub::new(config.clone(), shared.buffer.clone(), shared.clock.clone());
    tasks.push(tokio::spawn(hub.clone().run(token.clone())));
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
        beat: shared.health_beat.clone(),
        hub: hub.clone(),
    };
    tasks.push(tokio::spawn(monitor.run(token.clone())));
    let board = start_board(&config, shared, &hub, &token, &mut tasks).await;
    tasks.push(tokio::spawn(sample_system(
        config.clone(),
        SystemParts {
            buffer: shared.buffer.clone(),
            clock: shared.clock.clone(),
            gauges: shared.gauges.clone(),
            disk_low: shared.disk_low.clone(),
            board: board.as_ref().map(|b| b.status.clone()),
        },
        token.clone(),
    )));
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
                    "board_fault",
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

struct SystemParts {
    buffer: Buffer,
    clock: Arc<dyn Clock>,
    gauges: Arc<Gauges>,
    disk_low: Arc<AtomicBool>,
    board: Option<Arc<std::sync::Mutex<crate::board::BoardStatus>>>,
}

/// Samples the gateway's own health into the telemetry every few seconds and raises
/// `disk_low` / `disk_ok`.
async fn sample_system(config: Arc<Config>, p: SystemParts, shutdown: CancellationToken) {
    let bound = config.gateway.disk_low_mb;
    let mut alarm = crate::system::disk_alarm(bound);
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let dir = config.gateway.data_dir.clone();
        let Ok(s) = tokio::task::spawn_blocking(move || crate::system::sample(&dir)).await else {
            continue;
        };
        if let (Some(free), true) = (s.disk_free_mb, bound > 0) {
            let change = alarm.update(free as f64);
            p.disk_low.store(alarm.active(), Ordering::Relaxed);
            if let Some(low) = change {
                let kind = if low { "disk_low" } else { "disk_ok" };
                tracing::warn!(free_mb = free, bound_mb = bound, "{kind}");
                let rec = NewRecord {
                    ts_ms: p.clock.now_ms(),
                    clock_synced: p.clock.synced(),
                    body: Body::alert(
                        kind,
                        None,
                        serde_json::json!({"free_mb": free, "bound_mb": bound, "data_dir": config.gateway.data_dir}),
                    ),
                };
                if let Err(e) = p.buffer.append(rec).await {
                    tracing::error!("cannot record the {kind} alert: {e}");
                }
            }
        }
        let mut sys = serde_json::to_value(&s).unwrap_or_default();
        sys["disk_low"] = alarm.active().into();
        p.gauges.set("system", sys);
        if let Some(b) = &p.board {
            let v = serde_json::to_value(&*b.lock().unwrap()).unwrap_or_default();
            p.gauges.set("board", v);
        }
    }
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

/// A running agent's handles, for callers that embed it (the demo, tests).
pub struct Running {
    pub buffer: Buffer,
    pub stats: Arc<UplinkStats>,
    pub ingest_addr: Option<std::net::SocketAddr>,
    pub boot_id: String,
    pub retained: Arc<Retained>,
    pub check_now: Arc<tokio::sync::Notify>,
    parts: Parts,
    _commands: mpsc::Receiver<Vec<u8>>,
}

/// Starts every part of the agent (without remote commands); it stops when `shutdown` is
/// cancelled and [`Running::finish`] is awaited.
pub async fn start(
    config: Config,
    clock: Arc<dyn Clock>,
    shutdown: CancellationToken,
) -> anyhow::Result<Running> {
    let (shared, rx) = open_shared(&config, clock).await?;
    let parts = start_parts(Arc::new(config), &shared).await?;
    let (fin, token) = (shared.final_shutdown.clone(), parts.token.clone());
    tokio::spawn(async move {
        shutdown.cancelled().await;
        fin.store(true, Ordering::SeqCst);
        token.cancel();
    });
    Ok(Running {
        buffer: shared.buffer.clone(),
        stats: shared.stats.clone(),
        ingest_addr: parts.ingest_addr,
        boot_id: shared.boot_id.clone(),
        retained: shared.retained.clone(),
        check_now: shared.check_now.clone(),
        parts,
        _commands: rx,
    })
}

async fn close_buffer(b: Buffer) {
    let _ = tokio::task::spawn_blocking(move || {
        if let Err(e) = b.flush_blocking() {
            tracing::error!("final buffer flush failed: {e}");
        }
        b.close();
    })
    .await;
}

impl Running {
    /// Waits for every part to stop (after `shutdown` was cancelled), then flushes and closes
    /// the buffer.
    pub async fn finish(self) {
        self.parts.stop().await;
        close_buffer(self.buffer).await;
    }
}

/// Where a config change came from.
#[derive(Debug, Clone, Copy)]
pub enum Source {
    Command,
    Sighup,
}

impl Source {
    fn name(self) -> &'static str {
        match self {
            Source::Command => "set_config",
            Source::Sighup => "sighup",
        }
    }
}

/// The supervisor's state.
pub struct Supervisor {
    pub shared: Shared,
    pub parts: Option<Parts>,
    pub config_path: PathBuf,
    /// The text of the config in force (for `get_config`).
    pub config_text: String,
    pub replay: remote::replay::Replay,
}

impl Supervisor {
    pub fn config(&self) -> Arc<Config> {
        self.parts.as_ref().expect("parts running").config.clone()
    }

    /// Applies a validated config as a whole, or nothing of it. Returns a description of the
    /// change, or why it was not applied (after rolling back).
    pub async fn apply(
        &mut self,
        new: Config,
        text: String,
        source: Source,
    ) -> Result<serde_json::Value, String> {
        let old = self.config();
        for (what, a, b) in [
            ("gateway.id", &old.gateway.id, &new.gateway.id),
            ("gateway.ward", &old.gateway.ward, &new.gateway.ward),
        ] {
            if a != b {
                return Err(self
                    .reject(
                        source,
                        vec![format!(
                            "{what}: cannot change while running (change the file and restart)"
                        )],
                    )
                    .await);
            }
        }
        if old.gateway.data_dir != new.gateway.data_dir {
            return Err(self.reject(source, vec!["gateway.data_dir: cannot change while running (change the file and restart)".into()]).await);
        }
        let old_text = std::mem::replace(&mut self.config_text, text.clone());
        let mqtt_changed = old.mqtt != new.mqtt;
        if let Source::Command = source {
            // New MQTT settings are on trial, durably, until they have connected (`trial`).
            let written = if mqtt_changed {
                crate::trial::begin(&self.config_path, &old_text, &text)
            } else {
                crate::trial::replace(&self.config_path, &old_text, &text)
            };
            if let Err(e) = written {
                self.config_text = old_text;
                return Err(format!("cannot write {}: {e}", self.config_path.display()));
            }
        }
        let added: Vec<String> = new
            .cameras
            .iter()
            .filter(|c| old.camera(&c.id).is_none())
            .map(|c| c.id.clone())
            .collect();
        let removed: Vec<String> = old
            .cameras
            .iter()
            .filter(|c| new.camera(&c.id).is_none())
            .map(|c| c.id.clone())
            .collect();
        let changed: Vec<String> = new
            .cameras
            .iter()
            .filter(|c| old.camera(&c.id).is_some_and(|o| o != *c))
            .map(|c| c.id.clone())
            .collect();
        let new = Arc::new(new);
        self.parts.take().expect("parts running").stop().await;
        // Counted after the old uplink stopped: a reconnect of the old settings while they
        // were stopping must not pass for the new ones connecting.
        let connects_before = self.shared.stats.connects.load(Ordering::SeqCst);
        for id in &removed {
            self.shared.retained.set(health_topic(&old, id), Vec::new());
        }
        let started = start_parts(new.clone(), &self.shared).await;
        let failure = match started {
            Err(e) => Some(format!("{e:#}")),
            Ok(parts) => {
                self.parts = Some(parts);
                if mqtt_changed
                    && !self
                        .wait_connected(connects_before, new.security.rollback_timeout)
                        .await
                {
                    Some(format!(
                        "the new MQTT settings did not reach a broker within {} s",
                        new.security.rollback_timeout.as_secs()
                    ))
                } else {
                    None
                }
            }
        };
        if let Some(why) = failure {
            tracing::error!("config change failed, rolling back: {why}");
            if let Some(p) = self.parts.take() {
                p.stop().await;
            }
            if let Source::Command = source {
                if let Err(e) = crate::trial::abort(&self.config_path, &old_text) {
                    tracing::error!("cannot restore {}: {e}", self.config_path.display());
                }
            }
            self.config_text = old_text;
            match start_parts(old.clone(), &self.shared).await {
                Ok(p) => self.parts = Some(p),
                Err(e) => {
                    // Nothing left to fall back to: let the service manager restart us.
                    tracing::error!("cannot restart with the last good config: {e:#}");
                    std::process::exit(1);
                }
            }
            self.shared
                .alert(
                    "config_rolled_back",
                    None,
                    serde_json::json!({"source": source.name(), "reason": why}),
                )
                .await;
            return Err(format!("rolled back to the last good config: {why}"));
        }
        if let (Source::Command, true) = (source, mqtt_changed) {
            if let Err(e) = crate::trial::confirm(&self.config_path) {
                tracing::error!("cannot end the config trial: {e}");
            }
        }
        let detail = serde_json::json!({
            "source": source.name(),
            "cameras_added": added,
            "cameras_removed": removed,
            "cameras_changed": changed,
            "mqtt_changed": mqtt_changed,
        });
        tracing::info!(%detail, "config applied");
        self.shared
            .alert("config_applied", None, detail.clone())
            .await;
        Ok(detail)
    }

    pub async fn reject(&self, source: Source, problems: Vec<String>) -> String {
        tracing::warn!(?problems, "config rejected");
        self.shared
            .alert(
                "config_rejected",
                None,
                serde_json::json!({"source": source.name(), "problems": problems}),
            )
            .await;
        format!("config rejected: {}", problems.join("; "))
    }

    async fn wait_connected(&self, before: u64, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while tokio::time::Instant::now() < deadline {
            if self.shared.stats.connects.load(Ordering::SeqCst) > before {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// Validates `text` like `check-config` and applies it.
    pub async fn apply_text(
        &mut self,
        text: String,
        source: Source,
    ) -> Result<serde_json::Value, String> {
        match Config::parse(&text) {
            Ok(c) => self.apply(c, text, source).await,
            Err(inv) => Err(self
                .reject(source, inv.problems.iter().map(|p| p.to_string()).collect())
                .await),
        }
    }
}

/// `camgw run`: runs until SIGTERM or SIGINT; SIGHUP reloads the config file.
pub async fn run(
    config_path: PathBuf,
    config: Config,
    clock: Arc<dyn Clock>,
    recovered: Option<String>,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    // Handlers first: a SIGHUP (or SIGTERM) arriving during start-up must not kill the agent
    // with the default action.
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("SIGHUP handler")?;
    let text = std::fs::read_to_string(&config_path).unwrap_or_default();
    let (shared, mut commands) = open_shared(&config, clock.clone()).await?;
    let replay = remote::replay::Replay::open(&config.gateway.data_dir, clock.now_ms())
        .context("cannot open the command replay memory")?;
    if let Some(reason) = recovered {
        tracing::warn!("{reason}");
        shared
            .alert(
                "config_rolled_back",
                None,
                serde_json::json!({"source": "set_config", "reason": reason}),
            )
            .await;
    }
    let parts = start_parts(Arc::new(config), &shared).await?;
    let mut sup = Supervisor {
        shared,
        parts: Some(parts),
        config_path: config_path.clone(),
        config_text: text,
        replay,
    };
    let watchdog_stop = CancellationToken::new();
    let mut watchdog_task = None;
    let systemd_every = crate::watchdog::interval();
    let hardware = match &sup.config().board.hardware_watchdog {
        Some(p) => match crate::watchdog::Hardware::open(p) {
            Ok(h) => Some(h),
            Err(e) => {
                tracing::error!("cannot open the hardware watchdog {}: {e}", p.display());
                None
            }
        },
        None => None,
    };
    if systemd_every.is_some() || hardware.is_some() {
        // The hardware watchdog is pinged every 2 s (its timeout is typically 10-60 s).
        let every = match (systemd_every, hardware.is_some()) {
            (Some(s), true) => s.min(Duration::from_secs(2)),
            (Some(s), false) => s,
            (None, _) => Duration::from_secs(2),
        };
        let loops = vec![
            ("buffer", sup.shared.buffer.beat()),
            ("uplink", sup.shared.uplink_beat.clone()),
            ("health", sup.shared.health_beat.clone()),
            ("board", sup.shared.board_beat.clone()),
        ];
        tracing::info!(
            every_ms = every.as_millis() as u64,
            systemd = systemd_every.is_some(),
            hardware = hardware.is_some(),
            "watchdog enabled"
        );
        watchdog_task = Some(tokio::spawn(crate::watchdog::run(
            loops,
            every,
            crate::watchdog::Notifier::from_env(),
            hardware,
            watchdog_stop.clone(),
        )));
    }
    crate::watchdog::notify("READY=1");
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                tracing::info!(file = %config_path.display(), "SIGHUP: reloading the config");
                match std::fs::read_to_string(&config_path) {
                    Ok(text) => { let _ = sup.apply_text(text, Source::Sighup).await; }
                    Err(e) => { sup.reject(Source::Sighup, vec![format!("(file): cannot read {}: {e}", config_path.display())]).await; }
                }
            }
            Some(payload) = commands.recv() => remote::handle(&mut sup, &payload).await,
        }
    }
    tracing::info!("shutting down");
    crate::watchdog::notify("STOPPING=1");
    sup.shared.final_shutdown.store(true, Ordering::SeqCst);
    if let Some(p) = sup.parts.take() {
        p.stop().await;
    }
    close_buffer(sup.shared.buffer.clone()).await;
    // Last: a shutdown that hangs before this point is still caught by the watchdogs.
    watchdog_stop.cancel();
    if let Some(t) = watchdog_task {
        let _ = t.await;
    }
    tracing::info!("stopped");
    Ok(())
}
