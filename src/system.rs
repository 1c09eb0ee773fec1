//! The gateway's own health for `T/telemetry`: CPU temperature, load, memory, free disk under
//! `data_dir`, uptime, and the `disk_low`/`disk_ok` alerts (with hysteresis). The parsers of
//! `/proc` and `/sys` text are pure; [`sample`] reads the files; [`Sampler`] is the task that
//! puts a sample into the telemetry gauges every 5 s.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use tokio_util::sync::CancellationToken;

use crate::board::temp::Hysteresis;
use crate::buffer::Buffer;
use crate::bus::Gauges;
use crate::clock::Clock;
use crate::config::Config;

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Sample {
    pub cpu_temp_c: Option<f64>,
    pub load: Option<[f64; 3]>,
    pub mem_total_kb: Option<u64>,
    pub mem_available_kb: Option<u64>,
    pub disk_free_mb: Option<u64>,
    pub disk_total_mb: Option<u64>,
    pub uptime_s: Option<u64>,
}

/// `/proc/loadavg`: "0.52 0.58 0.59 2/1234 5678".
pub fn parse_loadavg(text: &str) -> Option<[f64; 3]> {
    let mut it = text.split_whitespace().map(|s| s.parse::<f64>().ok());
    Some([it.next()??, it.next()??, it.next()??])
}

/// `/proc/meminfo`: (MemTotal, MemAvailable) in kB.
pub fn parse_meminfo(text: &str) -> (Option<u64>, Option<u64>) {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|r| r.trim_start_matches(':').split_whitespace().next())
            .and_then(|n| n.parse().ok())
    };
    (field("MemTotal"), field("MemAvailable"))
}

/// `/proc/uptime`: "12345.67 23456.78" → seconds.
pub fn parse_uptime(text: &str) -> Option<u64> {
    text.split_whitespace()
        .next()?
        .parse::<f64>()
        .ok()
        .map(|s| s as u64)
}

/// A thermal zone's `temp` file: millidegrees Celsius.
pub fn parse_millicelsius(text: &str) -> Option<f64> {
    text.trim().parse::<i64>().ok().map(|m| m as f64 / 1000.0)
}

/// Free and total megabytes of the filesystem holding `path`.
pub fn disk_space_mb(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: c is a valid NUL-terminated path and st a valid out-pointer.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    let frsize = st.f_frsize as u64;
    Some((
        st.f_bavail as u64 * frsize / (1024 * 1024),
        st.f_blocks as u64 * frsize / (1024 * 1024),
    ))
}

/// Reads everything it can; what is missing (not Linux, no thermal zone) stays None.
pub fn sample(data_dir: &Path) -> Sample {
    let read = |p: &str| std::fs::read_to_string(p).ok();
    let (mem_total_kb, mem_available_kb) = read("/proc/meminfo")
        .map(|t| parse_meminfo(&t))
        .unwrap_or((None, None));
    let disk = disk_space_mb(data_dir);
    Sample {
        cpu_temp_c: read("/sys/class/thermal/thermal_zone0/temp")
            .as_deref()
            .and_then(parse_millicelsius),
        load: read("/proc/loadavg").as_deref().and_then(parse_loadavg),
        mem_total_kb,
        mem_available_kb,
        disk_free_mb: disk.map(|d| d.0),
        disk_total_mb: disk.map(|d| d.1),
        uptime_s: read("/proc/uptime").as_deref().and_then(parse_uptime),
    }
}

/// `disk_low` raises below `bound_mb` free and clears above 120 % of it.
pub fn disk_alarm(bound_mb: u64) -> Hysteresis {
    Hysteresis::new(bound_mb as f64, bound_mb as f64 * 1.2 + 1.0)
}

/// What the sampler reads and writes.
pub struct Sampler {
    pub config: Arc<Config>,
    pub buffer: Buffer,
    pub clock: Arc<dyn Clock>,
    pub gauges: Arc<Gauges>,
    pub disk_low: Arc<AtomicBool>,
    pub board: Option<Arc<std::sync::Mutex<crate::board::BoardStatus>>>,
}

/// Samples the gateway's own health into the telemetry every few seconds and raises
/// `disk_low` / `disk_ok`.
impl Sampler {
    /// Runs until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let (config, p) = (self.config.clone(), self);
        let bound = config.gateway.disk_low_mb;
        let mut alarm = disk_alarm(bound);
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let dir = config.gateway.data_dir.clone();
            let Ok(s) = tokio::task::spawn_blocking(move || sample(&dir)).await else {
                continue;
            };
            if let (Some(free), true) = (s.disk_free_mb, bound > 0) {
                let change = alarm.update(free as f64);
                p.disk_low.store(alarm.active(), Ordering::Relaxed);
                if let Some(low) = change {
                    let kind = if low {
                        crate::record::AlertKind::DiskLow
                    } else {
                        crate::record::AlertKind::DiskOk
                    };
                    tracing::warn!(free_mb = free, bound_mb = bound, "{kind}");
                    p.buffer.alert(
                        p.clock.as_ref(),
                        kind,
                        None,
                        serde_json::json!({"free_mb": free, "bound_mb": bound, "data_dir": config.gateway.data_dir}),
                    ).await;
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_parse() {
        assert_eq!(
            parse_loadavg("0.52 0.58 0.59 2/1234 5678\n"),
            Some([0.52, 0.58, 0.59])
        );
        assert_eq!(parse_loadavg("0.52 x"), None);
        let mi = "MemTotal:        3884096 kB\nMemFree:          200000 kB\nMemAvailable:    2884096 kB\n";
        assert_eq!(parse_meminfo(mi), (Some(3884096), Some(2884096)));
        assert_eq!(parse_meminfo("garbage"), (None, None));
        assert_eq!(parse_uptime("12345.67 23456.78\n"), Some(12345));
        assert_eq!(parse_millicelsius("48312\n"), Some(48.312));
        assert_eq!(parse_millicelsius("-5000"), Some(-5.0));
        assert_eq!(parse_millicelsius(""), None);
    }

    #[test]
    fn this_machine_has_a_disk_and_uptime() {
        let s = sample(Path::new("/"));
        assert!(s.disk_total_mb.unwrap() > 0);
        assert!(s.disk_free_mb.unwrap() <= s.disk_total_mb.unwrap());
        assert!(s.uptime_s.is_some() && s.load.is_some() && s.mem_total_kb.is_some());
        assert_eq!(disk_space_mb(Path::new("/no/such/dir")), None);
    }

    #[test]
    fn disk_alarm_has_a_margin() {
        let mut a = disk_alarm(100);
        assert_eq!(a.update(5000.0), None);
        assert_eq!(a.update(99.0), Some(true));
        assert_eq!(a.update(115.0), None);
        assert_eq!(a.update(125.0), Some(false));
    }
}
