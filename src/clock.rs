//! Time, behind a tiny trait so the pure core can be driven by tests.
//!
//! Gateways without a real-time clock boot with a wrong wall clock until NTP catches up, so
//! every record carries whether the kernel considered its clock synchronised when the record
//! was made (`clock_synced`). [`SystemClock`] asks the kernel (`adjtimex`); [`FixedClock`] is
//! for tests.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

/// Wall-clock time in Unix milliseconds, and whether it can be trusted.
pub trait Clock: Send + Sync + 'static {
    fn now_ms(&self) -> i64;
    fn synced(&self) -> bool;
}

/// The kernel's clock; `synced` comes from `adjtimex(2)` (no `STA_UNSYNC`, no `TIME_ERROR`).
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        d.as_millis() as i64
    }

    fn synced(&self) -> bool {
        kernel_clock_synced()
    }
}

#[cfg(target_os = "linux")]
fn kernel_clock_synced() -> bool {
    // SAFETY: adjtimex with modes = 0 only reads; the struct is plain data we zero first.
    unsafe {
        let mut tx: libc::timex = std::mem::zeroed();
        let state = libc::adjtimex(&mut tx);
        const STA_UNSYNC: i32 = 0x0040;
        const TIME_ERROR: i32 = 5;
        state >= 0 && state != TIME_ERROR && (tx.status & STA_UNSYNC) == 0
    }
}

#[cfg(not(target_os = "linux"))]
fn kernel_clock_synced() -> bool {
    false
}

/// A clock tests set by hand.
#[derive(Debug)]
pub struct FixedClock {
    ms: AtomicI64,
    synced: AtomicBool,
}

impl FixedClock {
    pub fn new(ms: i64, synced: bool) -> Self {
        FixedClock {
            ms: AtomicI64::new(ms),
            synced: AtomicBool::new(synced),
        }
    }
    pub fn set_ms(&self, ms: i64) {
        self.ms.store(ms, Ordering::SeqCst);
    }
    pub fn advance_ms(&self, d: i64) {
        self.ms.fetch_add(d, Ordering::SeqCst);
    }
}

impl Clock for FixedClock {
    fn now_ms(&self) -> i64 {
        self.ms.load(Ordering::SeqCst)
    }
    fn synced(&self) -> bool {
        self.synced.load(Ordering::SeqCst)
    }
}

/// RFC 3339 UTC with milliseconds: `2026-11-29T16:14:32.123Z`.
pub fn rfc3339_ms(unix_ms: i64) -> String {
    let secs = unix_ms.div_euclid(1000);
    let ms = unix_ms.rem_euclid(1000);
    match time::OffsetDateTime::from_unix_timestamp(secs) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            ms
        ),
        Err(_) => "1970-01-01T00:00:00.000Z".to_string(),
    }
}

/// Parses what [`rfc3339_ms`] writes (and any RFC 3339 time) back to Unix milliseconds.
pub fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    Some((t.unix_timestamp_nanos() / 1_000_000) as i64)
}

/// The UTC day number (days since 1970-01-01) of a time in ms.
pub fn utc_day(ms: i64) -> i64 {
    ms.div_euclid(86_400_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_utc_with_millis_and_parses_back() {
        let ms = 1_796_000_072_123;
        let s = rfc3339_ms(ms);
        assert!(s.ends_with(".123Z"), "{s}");
        assert_eq!(parse_rfc3339_ms(&s), Some(ms));
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn fixed_clock_advances() {
        let c = FixedClock::new(1000, false);
        c.advance_ms(500);
        assert_eq!(c.now_ms(), 1500);
        assert!(!c.synced());
    }
}
