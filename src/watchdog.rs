//! systemd integration: `READY=1` once the agent runs, `STOPPING=1` at shutdown, and
//! `WATCHDOG=1` pings (when systemd asked for them with `WATCHDOG_USEC`) only while every
//! loop that matters makes progress: the buffer writer, the uplink and the health monitor.
//! One stuck loop stops the pings, and systemd restarts the agent.
//!
//! The protocol is a datagram to the unix socket in `$NOTIFY_SOCKET` (an abstract socket
//! when it starts with `@`); without it, everything here is a no-op.

use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Sends one notification; false when there is no notify socket or sending failed.
pub fn notify(state: &str) -> bool {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return false;
    };
    let Ok(sock) = UnixDatagram::unbound() else {
        return false;
    };
    let path = path.to_string_lossy().to_string();
    let sent = if let Some(name) = path.strip_prefix('@') {
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
        sock.send_to(state.as_bytes(), &path).is_ok()
    };
    sent
}

/// The ping interval systemd asked for (half of `WATCHDOG_USEC`).
pub fn interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

/// A loop's heartbeat: the loop bumps it, the watchdog reads it.
#[derive(Debug, Default)]
pub struct Beat(AtomicU64);

impl Beat {
    pub fn bump(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Pure: given the beats now and at the last ping, which loops made no progress.
pub fn stuck<'a>(names: &[&'a str], before: &[u64], now: &[u64]) -> Vec<&'a str> {
    names
        .iter()
        .zip(before.iter().zip(now))
        .filter(|(_, (b, n))| n <= b)
        .map(|(name, _)| *name)
        .collect()
}

/// Pings systemd every `every` while all `loops` progress. Each loop must beat more often
/// than `every`.
pub async fn run(
    loops: Vec<(&'static str, Arc<Beat>)>,
    every: Duration,
    shutdown: CancellationToken,
) {
    let names: Vec<&str> = loops.iter().map(|(n, _)| *n).collect();
    let mut before: Vec<u64> = loops.iter().map(|(_, b)| b.get()).collect();
    let mut t = tokio::time::interval(every);
    t.tick().await;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = t.tick() => {}
        }
        let now: Vec<u64> = loops.iter().map(|(_, b)| b.get()).collect();
        let stuck = stuck(&names, &before, &now);
        if stuck.is_empty() {
            notify("WATCHDOG=1");
        } else {
            tracing::error!(
                ?stuck,
                "a loop made no progress: withholding the watchdog ping"
            );
        }
        before = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loop_whose_beat_did_not_move_is_stuck() {
        assert_eq!(
            stuck(&["buffer", "uplink"], &[1, 5], &[2, 5]),
            vec!["uplink"]
        );
        assert!(stuck(&["buffer"], &[1], &[9]).is_empty());
    }
}
