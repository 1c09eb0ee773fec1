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

#[cfg(test)]
mod tests {
    use super::*;

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
