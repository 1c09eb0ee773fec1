//! The pure motion coalescer (no I/O, `now` passed in), one per camera and source.
//!
//! Cameras report motion three ways: start/stop pairs (Dahua, ONVIF, GPIO), repeated
//! "active" notices with no end (Hikvision VMD: motion ends after `silence` without one),
//! and single pulses. The coalescer turns all of them into `start`/`end`/`pulse` events with
//! starts and ends paired, and a minimum spacing so a chattering sensor or camera cannot flood
//! the buffer: a start within `min_spacing` of the previous start, or a pulse within
//! `min_spacing` of the previous pulse, is merged (and counted) instead of emitted.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// Motion is happening now (a start, or another "still active" notice).
    Active,
    /// Motion stopped.
    Inactive,
    /// A single instant of motion.
    Pulse,
}

/// What the coalescer emits: the `state` of a motion event.
pub use crate::record::MotionState as Output;

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counters {
    pub emitted: u64,
    /// Repeated "active" notices folded into an ongoing motion.
    pub extended: u64,
    /// Starts and pulses dropped for coming within `min_spacing`.
    pub merged: u64,
    /// Ends with no motion ongoing.
    pub orphan_ends: u64,
}

#[derive(Debug, Clone)]
pub struct Coalescer {
    min_spacing_ms: i64,
    /// End motion after this long without an Active (None: wait for Inactive).
    silence_ms: Option<i64>,
    active_since: Option<i64>,
    last_active: i64,
    last_start: Option<i64>,
    last_pulse: Option<i64>,
    pub counters: Counters,
}

impl Coalescer {
    pub fn new(min_spacing_ms: i64, silence_ms: Option<i64>) -> Coalescer {
        Coalescer {
            min_spacing_ms,
            silence_ms,
            active_since: None,
            last_active: 0,
            last_start: None,
            last_pulse: None,
            counters: Counters::default(),
        }
    }

    pub fn active(&self) -> bool {
        self.active_since.is_some()
    }

    fn emit(&mut self, o: Output) -> Option<Output> {
        self.counters.emitted += 1;
        Some(o)
    }

    pub fn input(&mut self, i: Input, now: i64) -> Option<Output> {
        match i {
            Input::Active => {
                self.last_active = now;
                if self.active_since.is_some() {
                    self.counters.extended += 1;
                    return None;
                }
                if self
                    .last_start
                    .is_some_and(|t| now - t < self.min_spacing_ms)
                {
                    self.counters.merged += 1;
                    return None;
                }
                self.active_since = Some(now);
                self.last_start = Some(now);
                self.emit(Output::Start)
            }
            Input::Inactive => {
                if self.active_since.take().is_none() {
                    self.counters.orphan_ends += 1;
                    return None;
                }
                self.emit(Output::End)
            }
            Input::Pulse => {
                if self
                    .last_pulse
                    .is_some_and(|t| now - t < self.min_spacing_ms)
                {
                    self.counters.merged += 1;
                    return None;
                }
                self.last_pulse = Some(now);
                self.emit(Output::Pulse)
            }
        }
    }

    /// Ends motion that has gone silent; call periodically.
    pub fn tick(&mut self, now: i64) -> Option<Output> {
        let silence = self.silence_ms?;
        if self.active_since.is_some() && now - self.last_active >= silence {
            self.active_since = None;
            return self.emit(Output::End);
        }
        None
    }

    /// When the next [`Coalescer::tick`] could end motion.
    pub fn next_deadline(&self) -> Option<i64> {
        Some(self.last_active + self.silence_ms?).filter(|_| self.active_since.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Input::*;
    use Output as O;

    #[test]
    fn start_stop_pairs_pass_through() {
        let mut c = Coalescer::new(1000, None);
        assert_eq!(c.input(Active, 0), Some(O::Start));
        assert_eq!(c.input(Inactive, 500), Some(O::End));
        assert_eq!(c.input(Inactive, 600), None);
        assert_eq!(c.counters.orphan_ends, 1);
    }

    #[test]
    fn hikvision_style_actives_end_after_silence() {
        let mut c = Coalescer::new(1000, Some(5000));
        assert_eq!(c.input(Active, 0), Some(O::Start));
        assert_eq!(c.input(Active, 1000), None);
        assert_eq!(c.input(Active, 4000), None);
        assert_eq!(c.tick(8000), None, "4 s after the last notice");
        assert_eq!(c.next_deadline(), Some(9000));
        assert_eq!(c.tick(9000), Some(O::End));
        assert_eq!(c.counters.extended, 2);
    }

    #[test]
    fn a_chattering_sensor_is_merged_and_counted() {
        let mut c = Coalescer::new(1000, None);
        let mut out = Vec::new();
        for k in 0..20 {
            let t = k * 100;
            out.extend(c.input(Active, t));
            out.extend(c.input(Inactive, t + 50));
        }
        // One start/end per second at most.
        assert_eq!(out, vec![O::Start, O::End, O::Start, O::End]);
        assert_eq!(c.counters.merged, 18);
    }

    #[test]
    fn pulses_are_spaced() {
        let mut c = Coalescer::new(1000, None);
        assert_eq!(c.input(Pulse, 0), Some(O::Pulse));
        assert_eq!(c.input(Pulse, 999), None);
        assert_eq!(c.input(Pulse, 1000), Some(O::Pulse));
    }

    proptest::proptest! {
        #[test]
        fn starts_and_ends_always_alternate(inputs in proptest::collection::vec((0u8..4, 0i64..3000), 0..200)) {
            let mut c = Coalescer::new(500, Some(2000));
            let mut now = 0;
            let mut open = false;
            for (k, dt) in inputs {
                now += dt;
                let o = match k { 0 => c.input(Active, now), 1 => c.input(Inactive, now), 2 => c.input(Pulse, now), _ => c.tick(now) };
                match o {
                    Some(O::Start) => { proptest::prop_assert!(!open); open = true; }
                    Some(O::End) => { proptest::prop_assert!(open); open = false; }
                    _ => {}
                }
            }
        }
    }
}
