//! Debounced digital inputs (tamper switch, door contact, PIR): a pure [`Debouncer`] with
//! `now` passed in, and [`DebouncedInput`], which owns an embedded-hal `InputPin` and applies
//! the pin's polarity.

use embedded_hal::digital::InputPin;

/// A level must hold for `window_ms` before it becomes the stable state. The first sample
/// sets the initial state without reporting a change (an input that is already active at
/// start-up is a state, not an event).
#[derive(Debug, Clone)]
pub struct Debouncer {
    window_ms: u64,
    stable: Option<bool>,
    candidate: bool,
    since_ms: u64,
}

impl Debouncer {
    pub fn new(window_ms: u64) -> Self {
        Debouncer {
            window_ms,
            stable: None,
            candidate: false,
            since_ms: 0,
        }
    }

    /// The debounced state (None before the first sample).
    pub fn state(&self) -> Option<bool> {
        self.stable
    }

    /// Feeds one sample; returns the new stable state when it changed.
    pub fn update(&mut self, level: bool, now_ms: u64) -> Option<bool> {
        let Some(stable) = self.stable else {
            self.stable = Some(level);
            self.candidate = level;
            self.since_ms = now_ms;
            return None;
        };
        if level != self.candidate {
            self.candidate = level;
            self.since_ms = now_ms;
        }
        if self.candidate != stable && now_ms.saturating_sub(self.since_ms) >= self.window_ms {
            self.stable = Some(self.candidate);
            return Some(self.candidate);
        }
        None
    }
}

/// An input pin, its polarity and its debouncer. "Active" means the switch is open, the
/// PIR sees motion, the door is open.
pub struct DebouncedInput<P> {
    pin: P,
    active_low: bool,
    debouncer: Debouncer,
}

impl<P: InputPin> DebouncedInput<P> {
    pub fn new(pin: P, active_low: bool, window_ms: u64) -> Self {
        DebouncedInput {
            pin,
            active_low,
            debouncer: Debouncer::new(window_ms),
        }
    }

    /// Samples the pin; returns the new debounced state when it changed.
    pub fn poll(&mut self, now_ms: u64) -> Result<Option<bool>, P::Error> {
        let high = self.pin.is_high()?;
        Ok(self.debouncer.update(high != self.active_low, now_ms))
    }

    pub fn active(&self) -> Option<bool> {
        self.debouncer.state()
    }

    pub fn release(self) -> P {
        self.pin
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use embedded_hal_mock::eh1::digital::{Mock, State, Transaction as T};
    use proptest::prelude::*;

    #[test]
    fn a_bounce_shorter_than_the_window_is_ignored() {
        let mut d = Debouncer::new(50);
        assert_eq!(d.update(false, 0), None);
        assert_eq!(d.state(), Some(false));
        assert_eq!(d.update(true, 10), None);
        assert_eq!(d.update(false, 30), None);
        assert_eq!(d.update(true, 40), None);
        assert_eq!(d.update(true, 80), None, "only 40 ms since the last flip");
        assert_eq!(d.update(true, 90), Some(true));
        assert_eq!(d.update(true, 500), None);
        assert_eq!(d.update(false, 510), None);
        assert_eq!(d.update(false, 560), Some(false));
    }

    #[test]
    fn the_first_sample_is_the_initial_state_not_an_event() {
        let mut d = Debouncer::new(50);
        assert_eq!(d.update(true, 1000), None);
        assert_eq!(d.state(), Some(true));
    }

    proptest! {
        /// Whatever the samples, a reported change is to a level that held, unbroken, for the
        /// window, and changes alternate.
        #[test]
        fn changes_only_after_a_steady_window(samples in proptest::collection::vec((any::<bool>(), 1u64..40), 1..200)) {
            let mut d = Debouncer::new(50);
            let mut now = 0;
            let mut history: Vec<(u64, bool)> = Vec::new();
            let mut last = None;
            for (level, dt) in samples {
                now += dt;
                history.push((now, level));
                if let Some(s) = d.update(level, now) {
                    prop_assert_ne!(Some(s), last.or(Some(history[0].1)));
                    let held: Vec<_> = history.iter().rev().take_while(|(_, l)| *l == s).collect();
                    let first = held.last().unwrap().0;
                    prop_assert!(now - first >= 50);
                    last = Some(s);
                }
            }
        }
    }

    #[test]
    fn active_low_inverts_and_errors_propagate() {
        let mut pin = Mock::new(&[
            T::get(State::High),
            T::get(State::Low),
            T::get(State::Low),
            T::get(State::Low).with_error(embedded_hal_mock::eh1::MockError::Io(
                std::io::ErrorKind::Other,
            )),
        ]);
        let mut input = DebouncedInput::new(pin.clone(), true, 20);
        assert_eq!(input.poll(0).unwrap(), None);
        assert_eq!(
            input.active(),
            Some(false),
            "high on an active-low pin is inactive"
        );
        assert_eq!(input.poll(10).unwrap(), None);
        assert_eq!(input.poll(30).unwrap(), Some(true));
        assert!(input.poll(40).is_err());
        pin.done();
    }
}
