//! A release server for the update tests: plain HTTP/1.1 on a free loopback port, one file at
//! `/camgw` (anything else is 404), `Range: bytes=N-` answered with 206 when allowed, and
//! misbehaviour on purpose: cut the first connections after some bytes, ignore Range, call a
//! hook once a number of body bytes went out (to fill the disk or stop the broker mid-update),
//! drip slowly. It counts what it sent.
// Shared by tests/update.rs and benches/update.rs, which use different parts of it.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

type Hook = Box<dyn FnOnce() + Send>;

#[derive(Default)]
pub struct Behaviour {
    /// The first `cut_connections` answers stop after `cut_after` body bytes.
    pub cut_after: u64,
    pub cut_connections: u64,
    /// Answer every request with the whole file (200), whatever its Range says.
    pub ignore_range: bool,
    /// Pause after each 16 KiB piece.
    pub drip: Option<Duration>,
    /// Serve HTTPS with this configuration.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

pub struct ReleaseServer {
    pub port: u16,
    /// Body bytes sent, every connection together.
    pub sent: Arc<AtomicU64>,
    /// Requests seen, and those that carried a Range.
    pub requests: Arc<AtomicU64>,
    pub ranged: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    hook: Arc<Mutex<Option<(u64, Hook)>>>,
}

impl ReleaseServer {
    pub fn start(body: Vec<u8>, behaviour: Behaviour) -> ReleaseServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let s = ReleaseServer {
            port,
            sent: Arc::default(),
            requests: Arc::default(),
            ranged: Arc::default(),
            stop: Arc::default(),
            hook: Arc::default(),
        };
        let body = Arc::new(body);
        let b = Arc::new(behaviour);
        let (sent, requests, ranged, stop, hook) = (
            s.sent.clone(),
            s.requests.clone(),
            s.ranged.clone(),
            s.stop.clone(),
            s.hook.clone(),
        );
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let n = requests.fetch_add(1, Ordering::SeqCst);
                let (body, b, sent, ranged, hook) = (
                    body.clone(),
                    b.clone(),
                    sent.clone(),
                    ranged.clone(),
                    hook.clone(),
                );
                std::thread::spawn(move || {
                    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
                    match &b.tls {
                        None => {
                            let _ = serve(conn, n, &body, &b, &sent, &ranged, &hook);
                        }
                        Some(cfg) => {
                            let Ok(sc) = rustls::ServerConnection::new(cfg.clone()) else {
                                return;
                            };
                            let tls = rustls::StreamOwned::new(sc, conn);
                            let _ = serve(tls, n, &body, &b, &sent, &ranged, &hook);
                        }
                    }
                });
            }
        });
        s
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/camgw", self.port)
    }

    /// The same over TLS (the certificate is for `localhost`).
    pub fn https_url(&self) -> String {
        format!("https://localhost:{}/camgw", self.port)
    }

    /// Runs `f` once, as soon as `after` body bytes have gone out in total.
    pub fn on_sent(&self, after: u64, f: impl FnOnce() + Send + 'static) {
        *self.hook.lock().unwrap() = Some((after, Box::new(f)));
    }
}

impl Drop for ReleaseServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn serve<S: Read + Write>(
    mut w: S,
    n: u64,
    body: &[u8],
    b: &Behaviour,
    sent: &AtomicU64,
    ranged: &AtomicU64,
    hook: &Mutex<Option<(u64, Hook)>>,
) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 16 * 1024 {
        if w.read(&mut byte)? == 0 {
            return Ok(());
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_string();
    let first = head.lines().next().unwrap_or("").to_string();
    let mut range_from = None;
    for line in head.lines() {
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("range: bytes=") {
            range_from = v.trim().trim_end_matches('-').parse::<u64>().ok();
        }
    }
    let path = first.split_whitespace().nth(1).unwrap_or("");
    if path != "/camgw" {
        w.write_all(
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\nConnection: close\r\n\r\nnot found",
        )?;
        return Ok(());
    }
    if range_from.is_some() {
        ranged.fetch_add(1, Ordering::SeqCst);
    }
    let from = match range_from {
        Some(f) if !b.ignore_range && (f as usize) < body.len() => f as usize,
        _ => 0,
    };
    let head = if from > 0 {
        format!(
            "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {}-{}/{}\r\nAccept-Ranges: bytes\r\nConnection: close\r\n\r\n",
            body.len() - from,
            from,
            body.len() - 1,
            body.len()
        )
    } else {
        format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nAccept-Ranges: {}\r\nConnection: close\r\n\r\n",
            body.len(),
            if b.ignore_range { "none" } else { "bytes" }
        )
    };
    w.write_all(head.as_bytes())?;
    let limit = if n < b.cut_connections {
        (from as u64 + b.cut_after).min(body.len() as u64) as usize
    } else {
        body.len()
    };
    let mut at = from;
    while at < limit {
        let end = (at + 16 * 1024).min(limit);
        w.write_all(&body[at..end])?;
        let total = sent.fetch_add((end - at) as u64, Ordering::SeqCst) + (end - at) as u64;
        at = end;
        let due = {
            let mut h = hook.lock().unwrap();
            match h.as_ref() {
                Some((after, _)) if total >= *after => h.take().map(|(_, f)| f),
                _ => None,
            }
        };
        if let Some(f) = due {
            f();
        }
        if let Some(d) = b.drip {
            std::thread::sleep(d);
        }
    }
    w.flush()?;
    // A cut, or the end: close (dropping the stream) without anything more.
    Ok(())
}
