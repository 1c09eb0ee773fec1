//! Watchdogs: systemd notify (`READY=1` once the agent runs, `STOPPING=1` at shutdown,
//! `WATCHDOG=1` pings when systemd asked for them with `WATCHDOG_USEC`) and, optionally, the
//! hardware watchdog device (`board.hardware_watchdog`, e.g. `/dev/watchdog`). Both are fed
//! only while every loop that matters makes progress: the buffer writer, the uplink, the
//! health monitor and, when a board runs, the board loop. One stuck loop stops the pings, and
//! systemd (or the hardware) restarts the agent. A clean shutdown writes the hardware
//! watchdog's magic close character `V`, so stopping the agent does not reboot the box.
//!
//! The notify protocol is a datagram to the unix socket in `$NOTIFY_SOCKET` (an abstract
//! socket when it starts with `@`); without it, notifications are no-ops.

use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Where notifications go.
#[derive(Debug, Clone)]
pub struct Notifier {
    socket: Option<String>,
}

impl Notifier {
    /// `$NOTIFY_SOCKET`, as systemd sets it.
    pub fn from_env() -> Notifier {
        Notifier {
            socket: std::env::var_os("NOTIFY_SOCKET").map(|p| p.to_string_lossy().into_owned()),
        }
    }

    /// An explicit socket path (tests).
    pub fn to(path: &Path) -> Notifier {
        Notifier {
            socket: Some(path.display().to_string()),
        }
    }

    /// Sends one notification; false when there is no socket or sending failed.
    pub fn notify(&self, state: &str) -> bool {
        let Some(path) = &self.socket else {
            return false;
        };
        let Ok(sock) = UnixDatagram::unbound() else {
            return false;
        };
        if let Some(name) = path.strip_prefix('@') {
            #[cfg(target_os = "linux")]
            {
                use std::os::linux::net::SocketAddrExt;
                std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
                    .and_then(|a| sock.send_to_addr(state.as_bytes(), &a))
                    .is_ok()
            }
            #[cfg(not(target_os = "linux"))]
            {
                let _ = name;
                false
            }
        } else {
            sock.send_to(state.as_bytes(), path).is_ok()
        }
    }
}

/// Sends one notification to `$NOTIFY_SOCKET`.
pub fn notify(state: &str) -> bool {
    Notifier::from_env().notify(state)
}

/// The ping interval systemd asked for (half of `WATCHDOG_USEC`).
pub fn interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

/// A loop's heartbeat: the loop bumps it, the watchdog reads it. A beat that is not active
/// (a part that is not running, like the board loop without a board) is not watched.
#[derive(Debug)]
pub struct Beat {
    count: AtomicU64,
    active: AtomicBool,
}

impl Default for Beat {
    fn default() -> Self {
        Beat {
            count: AtomicU64::new(0),
            active: AtomicBool::new(true),
        }
    }
}

impl Beat {
    /// A beat that is watched only once its loop calls [`Beat::set_active`].
    pub fn inactive() -> Self {
        Beat {
            count: AtomicU64::new(0),
            active: AtomicBool::new(false),
        }
    }
    pub fn bump(&self) {
        self.count.fetch_add(1, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
    pub fn set_active(&self, on: bool) {
        self.active.store(on, Ordering::Relaxed);
    }
    pub fn active(&self) -> bool {
        self.active.load(Ordering::Relaxed)
    }
}

/// Pure: given the beats now and at the last check (None for a loop not watched then),
/// which loops made no progress.
pub fn stuck<'a>(names: &[&'a str], before: &[Option<u64>], now: &[Option<u64>]) -> Vec<&'a str> {
    names
        .iter()
        .zip(before.iter().zip(now))
        .filter(|(_, (b, n))| matches!((b, n), (Some(b), Some(n)) if n <= b))
        .map(|(name, _)| *name)
        .collect()
}

/// The hardware watchdog device: any write pings it; writing `V` before closing disarms it
/// (the "magic close" of the Linux watchdog API, honoured unless the driver was built with
/// nowayout).
pub struct Hardware {
    path: PathBuf,
    file: std::fs::File,
}

impl Hardware {
    pub fn open(path: &Path) -> std::io::Result<Hardware> {
        let file = std::fs::OpenOptions::new().write(true).open(path)?;
        Ok(Hardware {
            path: path.to_path_buf(),
            file,
        })
    }
    pub fn ping(&mut self) -> std::io::Result<()> {
        self.file.write_all(b"\0")
    }
    /// Disarms and closes.
    pub fn magic_close(mut self) -> std::io::Result<()> {
        self.file.write_all(b"V")
    }
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Pings (systemd and/or hardware) every `every` while all active `loops` progress. Each
/// loop must beat more often than `every`.
pub async fn run(
    loops: Vec<(&'static str, Arc<Beat>)>,
    every: Duration,
    notifier: Notifier,
    mut hardware: Option<Hardware>,
    shutdown: CancellationToken,
) {
    let names: Vec<&str> = loops.iter().map(|(n, _)| *n).collect();
    let read = || -> Vec<Option<u64>> {
        loops
            .iter()
            .map(|(_, b)| b.active().then(|| b.get()))
            .collect()
    };
    let mut before = read();
    let mut t = tokio::time::interval(every);
    t.tick().await;
    let mut was_stuck = false;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = t.tick() => {}
        }
        let now = read();
        let stuck = stuck(&names, &before, &now);
        if stuck.is_empty() {
            notifier.notify("WATCHDOG=1");
            if let Some(h) = hardware.as_mut() {
                if let Err(e) = h.ping() {
                    tracing::error!(
                        "cannot ping the hardware watchdog {}: {e}",
                        h.path().display()
                    );
                }
            }
            was_stuck = false;
        } else if !was_stuck {
            tracing::error!(
                ?stuck,
                "a loop made no progress: withholding the watchdog ping"
            );
            was_stuck = true;
        }
        before = now;
    }
    if let Some(h) = hardware {
        let p = h.path().to_path_buf();
        if let Err(e) = h.magic_close() {
            tracing::error!("cannot disarm the hardware watchdog {}: {e}", p.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loop_whose_beat_did_not_move_is_stuck() {
        assert_eq!(
            stuck(
                &["buffer", "uplink"],
                &[Some(1), Some(5)],
                &[Some(2), Some(5)]
            ),
            vec!["uplink"]
        );
        assert!(stuck(&["buffer"], &[Some(1)], &[Some(9)]).is_empty());
        // A loop that is not running (or just started) is not judged.
        assert!(stuck(&["board"], &[None], &[Some(0)]).is_empty());
        assert!(stuck(&["board"], &[Some(3)], &[None]).is_empty());
    }

    fn recv_all(sock: &UnixDatagram, window: Duration) -> Vec<String> {
        let mut out = Vec::new();
        let deadline = std::time::Instant::now() + window;
        let mut buf = [0u8; 64];
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            sock.set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .unwrap();
            match sock.recv(&mut buf) {
                Ok(n) => out.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
                Err(_) => break,
            }
        }
        out
    }

    /// One stuck loop stops the pings, on a notify socket the test binds and on a hardware
    /// watchdog file; a clean stop writes the magic close.
    #[test]
    fn a_stuck_loop_stops_the_pings_and_shutdown_disarms_the_hardware() {
        let dir = tempfile::tempdir().unwrap();
        let sock_path = dir.path().join("notify.sock");
        let sock = UnixDatagram::bind(&sock_path).unwrap();
        let hw_path = dir.path().join("watchdog");
        std::fs::write(&hw_path, b"").unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let (a, b) = (Arc::new(Beat::default()), Arc::new(Beat::default()));
        let idle = Arc::new(Beat::inactive()); // a board loop that never started
        let stop_b = CancellationToken::new();
        let shutdown = CancellationToken::new();
        let _g = rt.enter();
        for (beat, stop) in [(a.clone(), shutdown.clone()), (b.clone(), stop_b.clone())] {
            rt.spawn(async move {
                let mut t = tokio::time::interval(Duration::from_millis(20));
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = t.tick() => beat.bump(),
                    }
                }
            });
        }
        let task = rt.spawn(run(
            vec![("health", a), ("uplink", b), ("board", idle)],
            Duration::from_millis(100),
            Notifier::to(&sock_path),
            Some(Hardware::open(&hw_path).unwrap()),
            shutdown.clone(),
        ));
        let healthy = recv_all(&sock, Duration::from_millis(600));
        assert!(
            healthy.iter().filter(|m| *m == "WATCHDOG=1").count() >= 3,
            "pings while every loop beats: {healthy:?}"
        );
        let pinged = std::fs::read(&hw_path).unwrap().len();
        assert!(pinged >= 3, "hardware pings: {pinged}");
        stop_b.cancel(); // the uplink loop is now stuck
        let _ = recv_all(&sock, Duration::from_millis(250)); // at most one ping in flight
        let stuck = recv_all(&sock, Duration::from_millis(600));
        assert!(
            stuck.is_empty(),
            "no pings while a loop is stuck: {stuck:?}"
        );
        let hw_before = std::fs::read(&hw_path).unwrap().len();
        shutdown.cancel();
        rt.block_on(task).unwrap();
        let hw = std::fs::read(&hw_path).unwrap();
        assert_eq!(hw.len(), hw_before + 1, "no hardware pings while stuck");
        assert_eq!(hw.last(), Some(&b'V'), "magic close at shutdown");
    }
}
