//! Fault injection, for the tests that prove a panic in one camera's task is contained. Built
//! only with the `sim` feature (tests, demo); the firmware's [`panic_point`] is empty.
//!
//! `CAMGW_FAULTS="probe=cam02:2,stream=cam03"`: the named point panics for that camera the
//! first N times it is reached (no `:N`: every time). Points: `probe` (a health round, as a
//! parser bug on a camera's bytes would) and `stream` (an event-stream connection).

#[cfg(feature = "sim")]
mod imp {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};

    /// (point, camera) → how many more times it fires (`u64::MAX`: always).
    fn plan() -> &'static Mutex<HashMap<(String, String), u64>> {
        static PLAN: OnceLock<Mutex<HashMap<(String, String), u64>>> = OnceLock::new();
        PLAN.get_or_init(|| Mutex::new(parse(&std::env::var("CAMGW_FAULTS").unwrap_or_default())))
    }

    pub(super) fn parse(spec: &str) -> HashMap<(String, String), u64> {
        let mut m = HashMap::new();
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let Some((point, rest)) = item.split_once('=') else {
                continue;
            };
            let (cam, n) = match rest.split_once(':') {
                Some((c, n)) => (c, n.parse().unwrap_or(u64::MAX)),
                None => (rest, u64::MAX),
            };
            m.insert((point.to_string(), cam.to_string()), n);
        }
        m
    }

    pub fn panic_point(point: &str, camera: &str) {
        let fire = {
            let mut plan = plan().lock().unwrap_or_else(|e| e.into_inner());
            match plan.get_mut(&(point.to_string(), camera.to_string())) {
                Some(0) | None => false,
                Some(n) => {
                    if *n != u64::MAX {
                        *n -= 1;
                    }
                    true
                }
            }
        };
        if fire {
            panic!("injected fault at {point} for {camera}");
        }
    }
}

#[cfg(feature = "sim")]
pub use imp::panic_point;

/// Firmware builds: no fault injection.
#[cfg(not(feature = "sim"))]
#[inline(always)]
pub fn panic_point(_point: &str, _camera: &str) {}

#[cfg(all(test, feature = "sim"))]
mod tests {
    use super::imp::parse;

    #[test]
    fn the_spec_names_points_cameras_and_counts() {
        let m = parse(" probe=cam02:2, stream=cam03 ,junk,");
        assert_eq!(m[&("probe".into(), "cam02".into())], 2);
        assert_eq!(m[&("stream".into(), "cam03".into())], u64::MAX);
        assert_eq!(m.len(), 2);
    }
}
