//! systemd integration: READY=1, WATCHDOG=1 pings while the loops run, STOPPING=1, against a
//! notify socket the test binds.

mod common;

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use common::*;

fn recv_until(sock: &UnixDatagram, want: &str, timeout: Duration, seen: &mut Vec<String>) {
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 256];
    while Instant::now() < deadline {
        sock.set_read_timeout(Some(
            deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1)),
        ))
        .unwrap();
        if let Ok(n) = sock.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).to_string();
            let done = msg == want;
            seen.push(msg);
            if done {
                return;
            }
        }
    }
    panic!("no {want} within {timeout:?}; got {seen:?}");
}

#[test]
fn ready_then_watchdog_pings_then_stopping() {
    let broker = Broker::start();
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    let env = vec![
        ("NOTIFY_SOCKET".to_string(), path.display().to_string()),
        ("WATCHDOG_USEC".to_string(), "2000000".to_string()),
    ];
    let mut agent = Agent::in_dir_env(tmp.path(), tmp.path().join("data"), broker.port, "", env);
    let mut seen = Vec::new();
    recv_until(&sock, "READY=1", Duration::from_secs(10), &mut seen);
    // Pings every second (half of WATCHDOG_USEC) while buffer, uplink and health loops beat.
    recv_until(&sock, "WATCHDOG=1", Duration::from_secs(5), &mut seen);
    recv_until(&sock, "WATCHDOG=1", Duration::from_secs(5), &mut seen);
    assert_eq!(agent.term().code(), Some(0));
    recv_until(&sock, "STOPPING=1", Duration::from_secs(5), &mut seen);
    assert_eq!(seen.iter().filter(|m| *m == "READY=1").count(), 1);
}
