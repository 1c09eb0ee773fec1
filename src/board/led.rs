//! The status LED: which pattern the gateway's state calls for, what level a pattern has at
//! a moment (both pure), and [`StatusLed`], which owns an embedded-hal `OutputPin` and writes
//! only when the level changes.
//!
//! What a technician sees (also in docs/install.md):
//! - steady on with a short blink every 5 s: connected, all cameras up;
//! - two short flashes every 2 s: connected, but a camera is down or degraded;
//! - slow blink (1 s on, 1 s off): no uplink, events are being buffered on the box;
//! - fast blink (5 per second): fault: the buffer cannot store, the box is overheating, or a
//!   board sensor failed;
//! - off: the agent is not running.

use embedded_hal::digital::OutputPin;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pattern {
    Off,
    Connected,
    CameraProblem,
    Offline,
    Fault,
}

impl Pattern {
    /// Fault first, then no uplink, then camera problems.
    pub fn choose(fault: bool, connected: bool, camera_problem: bool) -> Pattern {
        if fault {
            Pattern::Fault
        } else if !connected {
            Pattern::Offline
        } else if camera_problem {
            Pattern::CameraProblem
        } else {
            Pattern::Connected
        }
    }

    /// Whether the LED is lit at `t_ms` (any monotonic millisecond clock).
    pub fn level(self, t_ms: u64) -> bool {
        match self {
            Pattern::Off => false,
            Pattern::Connected => t_ms % 5000 >= 150,
            Pattern::CameraProblem => {
                let p = t_ms % 2000;
                p < 150 || (300..450).contains(&p)
            }
            Pattern::Offline => t_ms % 2000 < 1000,
            Pattern::Fault => t_ms % 200 < 100,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Pattern::Off => "off",
            Pattern::Connected => "connected",
            Pattern::CameraProblem => "camera_problem",
            Pattern::Offline => "offline",
            Pattern::Fault => "fault",
        }
    }
}

pub struct StatusLed<P> {
    pin: P,
    active_low: bool,
    lit: Option<bool>,
}

impl<P: OutputPin> StatusLed<P> {
    pub fn new(pin: P, active_low: bool) -> Self {
        StatusLed {
            pin,
            active_low,
            lit: None,
        }
    }

    /// Drives the LED to `pattern`'s level at `t_ms`; touches the pin only on a change.
    pub fn show(&mut self, pattern: Pattern, t_ms: u64) -> Result<(), P::Error> {
        self.set(pattern.level(t_ms))
    }

    pub fn set(&mut self, lit: bool) -> Result<(), P::Error> {
        if self.lit == Some(lit) {
            return Ok(());
        }
        if lit != self.active_low {
            self.pin.set_high()?;
        } else {
            self.pin.set_low()?;
        }
        self.lit = Some(lit);
        Ok(())
    }

    pub fn release(self) -> P {
        self.pin
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use embedded_hal_mock::eh1::digital::{Mock, State, Transaction as T};

    fn lit_ms(p: Pattern, period: u64) -> u64 {
        (0..period).filter(|t| p.level(*t)).count() as u64
    }

    #[test]
    fn patterns_are_told_apart_by_duty_cycle_and_period() {
        assert_eq!(lit_ms(Pattern::Connected, 5000), 4850);
        assert_eq!(lit_ms(Pattern::CameraProblem, 2000), 300);
        assert_eq!(lit_ms(Pattern::Offline, 2000), 1000);
        assert_eq!(lit_ms(Pattern::Fault, 200), 100);
        assert_eq!(lit_ms(Pattern::Off, 5000), 0);
        // Periodic.
        for p in [
            Pattern::Connected,
            Pattern::CameraProblem,
            Pattern::Offline,
            Pattern::Fault,
        ] {
            for t in (0..20_000).step_by(37) {
                assert_eq!(p.level(t), p.level(t + 10_000), "{p:?} at {t}");
            }
        }
    }

    #[test]
    fn fault_outranks_offline_outranks_camera_problems() {
        assert_eq!(Pattern::choose(true, false, true), Pattern::Fault);
        assert_eq!(Pattern::choose(false, false, true), Pattern::Offline);
        assert_eq!(Pattern::choose(false, true, true), Pattern::CameraProblem);
        assert_eq!(Pattern::choose(false, true, false), Pattern::Connected);
    }

    #[test]
    fn writes_only_on_change_with_polarity() {
        let mut pin = Mock::new(&[
            T::set(State::Low), // lit, active-low
            T::set(State::High),
            T::set(State::Low),
        ]);
        let mut led = StatusLed::new(pin.clone(), true);
        led.show(Pattern::Offline, 0).unwrap();
        led.show(Pattern::Offline, 500).unwrap();
        led.show(Pattern::Offline, 1500).unwrap();
        led.show(Pattern::Offline, 1999).unwrap();
        led.show(Pattern::Offline, 2000).unwrap();
        pin.done();
    }

    #[test]
    fn a_pin_error_is_returned_and_retried() {
        let mut pin = Mock::new(&[
            T::set(State::High).with_error(embedded_hal_mock::eh1::MockError::Io(
                std::io::ErrorKind::Other,
            )),
            T::set(State::High),
        ]);
        let mut led = StatusLed::new(pin.clone(), false);
        assert!(led.set(true).is_err());
        led.set(true).unwrap();
        pin.done();
    }
}
