//! Relays that power cameras: [`Relay`] owns an embedded-hal `OutputPin` and its polarity;
//! [`Cycles`] is the pure bookkeeping of power-cycles in progress (`now` passed in).
//!
//! Safety: the board drives every relay to its configured default when it starts, so a
//! crash or power cut in the middle of a power-cycle never leaves a camera switched off for
//! longer than the agent takes to come back.

use std::collections::BTreeMap;

use embedded_hal::digital::OutputPin;

pub struct Relay<P> {
    pin: P,
    active_low: bool,
    on: bool,
}

impl<P: OutputPin> Relay<P> {
    /// Takes the pin and drives it to `default_on` at once.
    pub fn new(pin: P, active_low: bool, default_on: bool) -> Result<Self, (P, P::Error)> {
        let mut r = Relay {
            pin,
            active_low,
            on: default_on,
        };
        match r.drive(default_on) {
            Ok(()) => Ok(r),
            Err(e) => Err((r.pin, e)),
        }
    }

    fn drive(&mut self, on: bool) -> Result<(), P::Error> {
        if on != self.active_low {
            self.pin.set_high()
        } else {
            self.pin.set_low()
        }
    }

    pub fn set(&mut self, on: bool) -> Result<(), P::Error> {
        self.drive(on)?;
        self.on = on;
        Ok(())
    }

    pub fn is_on(&self) -> bool {
        self.on
    }

    pub fn release(self) -> P {
        self.pin
    }
}

/// Power-cycles in progress: which relay goes back on when.
#[derive(Debug, Default)]
pub struct Cycles {
    back_on_at: BTreeMap<String, u64>,
}

impl Cycles {
    /// Starts a cycle; false when that relay is already in one (the caller must not switch it
    /// off again, which would extend the outage).
    pub fn begin(&mut self, relay: &str, now_ms: u64, off_ms: u64) -> bool {
        if self.back_on_at.contains_key(relay) {
            return false;
        }
        self.back_on_at.insert(relay.to_string(), now_ms + off_ms);
        true
    }

    /// The relays whose off time is over; they are forgotten.
    pub fn due(&mut self, now_ms: u64) -> Vec<String> {
        let due: Vec<String> = self
            .back_on_at
            .iter()
            .filter(|(_, t)| **t <= now_ms)
            .map(|(r, _)| r.clone())
            .collect();
        for r in &due {
            self.back_on_at.remove(r);
        }
        due
    }

    pub fn cycling(&self, relay: &str) -> bool {
        self.back_on_at.contains_key(relay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use embedded_hal_mock::eh1::digital::{Mock, State, Transaction as T};

    #[test]
    fn start_up_drives_the_default_with_polarity() {
        let mut pin = Mock::new(&[T::set(State::Low), T::set(State::High), T::set(State::Low)]);
        let mut r = Relay::new(pin.clone(), true, true).unwrap();
        assert!(r.is_on());
        r.set(false).unwrap();
        assert!(!r.is_on());
        r.set(true).unwrap();
        pin.done();

        let mut pin = Mock::new(&[T::set(State::Low)]);
        let r = Relay::new(pin.clone(), false, false).unwrap();
        assert!(!r.is_on());
        pin.done();
    }

    #[test]
    fn a_failed_write_leaves_the_state_unchanged() {
        let mut pin = Mock::new(&[
            T::set(State::High),
            T::set(State::Low).with_error(embedded_hal_mock::eh1::MockError::Io(
                std::io::ErrorKind::Other,
            )),
        ]);
        let mut r = Relay::new(pin.clone(), false, true).unwrap();
        assert!(r.set(false).is_err());
        assert!(r.is_on());
        pin.done();

        let pin =
            Mock::new(&[
                T::set(State::High).with_error(embedded_hal_mock::eh1::MockError::Io(
                    std::io::ErrorKind::Other,
                )),
            ]);
        let Err((mut p, _)) = Relay::new(pin.clone(), false, true) else {
            panic!("the start-up write failed")
        };
        p.done();
        drop(pin);
    }

    #[test]
    fn a_cycle_ends_after_its_off_time_and_is_not_restarted_midway() {
        let mut c = Cycles::default();
        assert!(c.begin("relay1", 1000, 10_000));
        assert!(!c.begin("relay1", 5000, 10_000), "already off");
        assert!(c.begin("relay2", 2000, 1000));
        assert!(c.due(2999).is_empty());
        assert_eq!(c.due(3000), vec!["relay2"]);
        assert!(c.cycling("relay1"));
        assert_eq!(c.due(11_000), vec!["relay1"]);
        assert!(!c.cycling("relay1"));
        assert!(c.due(99_999).is_empty());
    }
}
