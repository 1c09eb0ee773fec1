//! What reaches the log from outside: values clipped, repeated warnings rate-limited.
//!
//! Ids, topics and camera replies are written to the log through [`clip`]: at most [`CLIP`]
//! characters, control characters escaped (a peer cannot forge a log line with a newline).
//! Warnings a peer can trigger at will (a refused command, an ignored event part) go
//! through a [`RateLimit`]: the first in each period per key is logged, with how many were
//! suppressed since the last one. Both are pure; the limiter takes `now`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The most characters of an outside value written to a log line or an error message.
pub const CLIP: usize = 96;

/// `s` cut to [`CLIP`] characters (with `…` and the full length when cut), control
/// characters escaped.
pub fn clip(s: &str) -> String {
    clip_to(s, CLIP)
}

/// The most characters of one problem's text in a camera's health (our words and the
/// camera's, together).
pub const DETAIL: usize = 512;

/// `s` cut to `max` characters, like [`clip`].
pub fn clip_to(s: &str, max: usize) -> String {
    let mut out = String::new();
    for (n, c) in s.chars().enumerate() {
        if n == max {
            out.push_str(&format!("…({} bytes)", s.len()));
            return out;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// [`clip`] of bytes that may not be UTF-8.
pub fn clip_bytes(b: &[u8]) -> String {
    clip(&String::from_utf8_lossy(&b[..b.len().min(CLIP * 4)]))
}

/// At most one log line per key per period.
#[derive(Debug)]
pub struct RateLimit {
    period: Duration,
    keys: Mutex<HashMap<&'static str, (Instant, u64)>>,
}

impl RateLimit {
    pub fn new(period: Duration) -> RateLimit {
        RateLimit {
            period,
            keys: Mutex::new(HashMap::new()),
        }
    }

    /// `Some(suppressed)` when a line for `key` may be written now (`suppressed` lines were
    /// held back since the last one), `None` when it is to be suppressed.
    pub fn allow(&self, key: &'static str, now: Instant) -> Option<u64> {
        let mut keys = self.keys.lock().unwrap();
        match keys.get_mut(key) {
            Some((last, suppressed)) if now.duration_since(*last) < self.period => {
                *suppressed += 1;
                None
            }
            Some((last, suppressed)) => {
                *last = now;
                Some(std::mem::take(suppressed))
            }
            None => {
                keys.insert(key, (now, 0));
                Some(0)
            }
        }
    }
}

/// A token bucket: `rate` a second, bursts of `burst`. For answers a peer can cause at will
/// (results of refused commands), so a flood cannot become a flood of answers.
#[derive(Debug)]
pub struct Bucket {
    rate: f64,
    burst: f64,
    state: Mutex<(f64, Option<Instant>)>,
}

impl Bucket {
    pub fn new(rate: f64, burst: f64) -> Bucket {
        Bucket {
            rate,
            burst,
            state: Mutex::new((burst, None)),
        }
    }

    /// Takes a token if there is one.
    pub fn take(&self, now: Instant) -> bool {
        let mut s = self.state.lock().unwrap();
        let (tokens, last) = &mut *s;
        if let Some(l) = *last {
            *tokens = (*tokens + now.duration_since(l).as_secs_f64() * self.rate).min(self.burst);
        }
        *last = Some(now);
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Logs a warning through a [`RateLimit`] (`$rl`), keyed by the message's literal.
#[macro_export]
macro_rules! warn_limited {
    ($rl:expr, $key:literal, $($arg:tt)+) => {
        if let Some(suppressed) = $rl.allow($key, std::time::Instant::now()) {
            if suppressed > 0 {
                tracing::warn!(suppressed, $($arg)+);
            } else {
                tracing::warn!($($arg)+);
            }
        }
    };
}

/// Lines the in-memory log ring keeps (for the `log_tail` command).
pub const RING_LINES: usize = 1000;
/// And bytes, whichever bound is reached first.
pub const RING_BYTES: usize = 256 * 1024;

/// The last lines of the agent's own log, bounded in lines and bytes. Lines arrive already
/// clipped where they quote outside values; the ring also strips terminal colour codes and
/// masks `user:password@` in URLs, so no credential leaves through `log_tail`.
#[derive(Default)]
pub struct Ring(Mutex<(std::collections::VecDeque<String>, usize)>);

impl Ring {
    pub fn push(&self, text: &str) {
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let line = mask_userinfo(&strip_ansi(line));
            let line = clip_to(&line, 2000);
            g.1 += line.len();
            g.0.push_back(line);
            while g.0.len() > RING_LINES || g.1 > RING_BYTES {
                if let Some(old) = g.0.pop_front() {
                    g.1 -= old.len();
                }
            }
        }
    }

    /// The last `n` lines, oldest first.
    pub fn tail(&self, n: usize) -> Vec<String> {
        let g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        g.0.iter()
            .skip(g.0.len().saturating_sub(n))
            .cloned()
            .collect()
    }
}

/// The process's ring.
pub fn ring() -> &'static Ring {
    static R: std::sync::OnceLock<Ring> = std::sync::OnceLock::new();
    R.get_or_init(Ring::default)
}

/// A log writer that writes to stderr and keeps each line in [`ring`].
pub struct Tee;

impl std::io::Write for Tee {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        ring().push(&String::from_utf8_lossy(buf));
        std::io::stderr().write(buf)
    }
    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        ring().push(&String::from_utf8_lossy(buf));
        std::io::stderr().write_all(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        if c == '\u{1b}' && it.peek() == Some(&'[') {
            it.next();
            for d in it.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// `scheme://user:secret@host` → `scheme://user:***@host`, wherever it appears.
fn mask_userinfo(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("://") {
        out.push_str(&rest[..i + 3]);
        rest = &rest[i + 3..];
        // Up to the end of the token: a password may hold a raw '/' (over-masking a path
        // with '@' in it is the safe mistake).
        let end = rest
            .find(|c: char| c.is_whitespace() || c == '"')
            .unwrap_or(rest.len());
        let authority = &rest[..end];
        if let Some(at) = authority.rfind('@') {
            match authority[..at].split_once(':') {
                Some((user, _)) => {
                    out.push_str(user);
                    out.push_str(":***");
                }
                None => out.push_str(&authority[..at]),
            }
            out.push_str(&authority[at..]);
            rest = &rest[end..];
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_is_bounded_strips_colours_and_masks_credentials() {
        let r = Ring::default();
        r.push("\u{1b}[32m INFO\u{1b}[0m connecting to mqtts://gw:s3cret@broker:8883/x\n");
        assert_eq!(
            r.tail(5),
            [" INFO connecting to mqtts://gw:***@broker:8883/x"]
        );
        for i in 0..(RING_LINES + 10) {
            r.push(&format!("line {i}\n"));
        }
        let t = r.tail(RING_LINES + 100);
        assert_eq!(t.len(), RING_LINES);
        assert_eq!(t.last().unwrap(), &format!("line {}", RING_LINES + 9));
        r.push(&"x".repeat(5000));
        assert!(r.tail(1)[0].chars().count() < 2100, "one line is clipped");
        let big = "y".repeat(1500);
        for _ in 0..RING_LINES {
            r.push(&big);
        }
        let total: usize = r.tail(RING_LINES).iter().map(|l| l.len()).sum();
        assert!(total <= RING_BYTES, "{total}");
        assert_eq!(mask_userinfo("http://host/a@b"), "http://host/a@b");
        assert_eq!(mask_userinfo("rtsp://admin@cam"), "rtsp://admin@cam");
        assert_eq!(
            mask_userinfo("url=rtsp://admin:pa/ss@cam:554/x next"),
            "url=rtsp://admin:***@cam:554/x next"
        );
    }

    #[test]
    fn long_values_are_cut_and_control_characters_escaped() {
        assert_eq!(clip("cam01"), "cam01");
        assert_eq!(clip("a\nforged: line"), "a\\nforged: line");
        let long = "x".repeat(253_000);
        let c = clip(&long);
        assert!(c.len() < CLIP + 32, "{}", c.len());
        assert!(c.ends_with("…(253000 bytes)"));
        assert_eq!(clip_bytes(b"\xff\xfeok"), "\u{fffd}\u{fffd}ok");
    }

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let b = Bucket::new(5.0, 20.0);
        let t0 = Instant::now();
        assert_eq!((0..100).filter(|_| b.take(t0)).count(), 20);
        assert!(!b.take(t0 + Duration::from_millis(100)));
        assert!(b.take(t0 + Duration::from_millis(250)));
        assert_eq!(
            (0..100)
                .filter(|_| b.take(t0 + Duration::from_secs(60)))
                .count(),
            20
        );
    }

    #[test]
    fn one_line_per_period_and_key_with_the_count_held_back() {
        let rl = RateLimit::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(rl.allow("a", t0), Some(0));
        for i in 1..200 {
            assert_eq!(rl.allow("a", t0 + Duration::from_millis(i)), None);
        }
        assert_eq!(rl.allow("b", t0), Some(0));
        assert_eq!(rl.allow("a", t0 + Duration::from_secs(10)), Some(199));
        assert_eq!(rl.allow("a", t0 + Duration::from_secs(11)), None);
    }
}
