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

pub mod parts;
pub mod supervisor;
pub mod updates;

pub use parts::{open_shared, start_parts, Parts, Shared};
pub use supervisor::{Source, Supervisor};

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::buffer::Buffer;
use crate::bus::Retained;
use crate::clock::Clock;
use crate::config::Config;
use crate::remote;
use crate::uplink::UplinkStats;

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

/// `camgw run`: runs until SIGTERM or SIGINT; SIGHUP reloads the config file. `local` is this
/// start's place among the installed versions. Returns the binary to exec when the agent
/// stopped to hand over (an update was installed, or its trial ended).
pub async fn run(
    config_path: PathBuf,
    config: Config,
    clock: Arc<dyn Clock>,
    recovered: Option<String>,
    local: Option<crate::update::Local>,
) -> anyhow::Result<Option<PathBuf>> {
    use tokio::signal::unix::{signal, SignalKind};
    // Handlers first: a SIGHUP (or SIGTERM) arriving during start-up must not kill the agent
    // with the default action.
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("SIGHUP handler")?;
    // After a hand-over, systemd's watchdog clock still runs from the last version's last
    // ping: ping at once, before the buffer's recovery.
    if crate::watchdog::interval().is_some() {
        crate::watchdog::notify("WATCHDOG=1");
    }
    let text = std::fs::read_to_string(&config_path).unwrap_or_default();
    let (mut shared, mut commands) = open_shared(&config, clock.clone()).await?;
    if let Some(l) = local {
        *shared.stats.origin.lock().unwrap() = Some(l.origin());
        tracing::info!(version = crate::release::VERSION, target = crate::release::TARGET, binary = %l.binary.display(), trial = l.on_trial(), "camgw starting");
        shared.updates = Some(Arc::new(l));
    }
    // update_failed / update_applied a previous start left to say.
    updates::report(&shared).await;
    let replay = remote::replay::Replay::open(&config.gateway.data_dir, clock.now_ms())
        .context("cannot open the command replay memory")?;
    if let Some(reason) = recovered {
        tracing::warn!("{reason}");
        shared
            .alert(
                crate::record::AlertKind::ConfigRolledBack,
                None,
                serde_json::json!({"source": "set_config", "reason": reason}),
            )
            .await;
    }
    let confirm = config.security.update_confirm;
    let parts = start_parts(Arc::new(config), &shared).await?;
    let (update_tx, mut update_rx) = mpsc::channel(4);
    let mut sup = Supervisor {
        shared,
        parts: Some(parts),
        config_path: config_path.clone(),
        config_text: text,
        replay,
        update_events: update_tx.clone(),
        update_busy: None,
    };
    if let Some(l) = sup.shared.updates.clone().filter(|l| l.on_trial()) {
        let inputs = Arc::new(updates::TrialInputs {
            local: l,
            stats: sup.shared.stats.clone(),
            progress: sup.shared.progress.clone(),
            probes: sup.shared.probes.clone(),
            check_now: sup.shared.check_now.clone(),
        });
        tokio::spawn(updates::trial(inputs, confirm, update_tx.clone()));
    }
    let mut handover: Option<PathBuf> = None;
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
            Some(ev) = update_rx.recv() => match ev {
                updates::Event::Confirmed => {
                    if let Some(l) = &sup.shared.updates {
                        *sup.shared.stats.origin.lock().unwrap() = Some(l.origin());
                        sup.shared.stats.republish_status.notify_one();
                    }
                    updates::report(&sup.shared).await;
                }
                updates::Event::TrialEnded => {
                    handover = sup.shared.updates.as_ref().map(|l| l.launcher.clone());
                    break;
                }
                updates::Event::Done { id, version, outcome } => {
                    sup.update_busy = None;
                    if updates::answer(&sup.shared, &sup.config(), &id, &version, outcome).await {
                        handover = sup.shared.updates.as_ref().map(|l| l.launcher.clone());
                        break;
                    }
                }
            },
        }
    }
    let mut flush = handover.is_some();
    if let (None, Some((id, version, stop))) = (&handover, sup.update_busy.take()) {
        // Stopped while downloading: the download ends (an install already begun runs to its
        // end), and its result says which it was.
        flush = true;
        stop.cancel();
        let done = tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(ev) = update_rx.recv().await {
                if let updates::Event::Done { outcome, .. } = ev {
                    return outcome;
                }
            }
            Err(("the update task ended".into(), "interrupted"))
        })
        .await
        .unwrap_or_else(|_| {
            Err((
                "the agent was stopped during the install; it is checked at the next start".into(),
                "interrupted",
            ))
        });
        updates::answer(&sup.shared, &sup.config(), &id, &version, done).await;
    }
    if flush {
        // The command's result goes out before the hand-over (bounded: the broker may be gone).
        let outbox = sup.shared.outbox.clone();
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while !outbox.is_empty() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
    }
    tracing::info!("shutting down");
    // A hand-over keeps the process (exec): to systemd it is a reload, and the next version's
    // READY=1 ends it. STOPPING=1 would have it kill the process it thinks is stopping.
    crate::watchdog::notify(if handover.is_some() {
        "RELOADING=1"
    } else {
        "STOPPING=1"
    });
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
    crate::faults::die_point("update_handover");
    match &handover {
        Some(p) => tracing::info!(launcher = %p.display(), "stopped: handing over"),
        None => tracing::info!("stopped"),
    }
    Ok(handover)
}
