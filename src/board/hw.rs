//! The backends behind the drivers: Linux (GPIO character devices through
//! linux-embedded-hal's `CdevPin`, `/dev/i2c-*` through `I2cdev`; not the deprecated sysfs
//! GPIO interface) and, with the `sim` feature only, the simulation (`simhw`: files under a
//! directory). [`Pin`] and [`Bus`] wrap either, so the drivers stay generic over
//! embedded-hal and the board is one concrete type.
//!
//! Opening reports what a technician can act on: a chip that does not exist, a line that
//! another program holds, a line number past the chip's end.

use std::path::Path;

use embedded_hal::digital::{ErrorType as PinErrorType, InputPin, OutputPin};
use embedded_hal::i2c::{ErrorKind as I2cErrorKind, ErrorType as BusErrorType, I2c, Operation};
use linux_embedded_hal::gpio_cdev::{Chip, LineRequestFlags};
use linux_embedded_hal::{CdevPin, I2CError, I2cdev};

use crate::boardmap::Pin as PinSpec;

/// A GPIO line.
pub enum Pin {
    Cdev(CdevPin),
    #[cfg(feature = "sim")]
    Sim(super::simhw::SimPin),
}

#[derive(Debug)]
pub struct PinError(pub String);

impl std::fmt::Display for PinError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl embedded_hal::digital::Error for PinError {
    fn kind(&self) -> embedded_hal::digital::ErrorKind {
        embedded_hal::digital::ErrorKind::Other
    }
}

impl PinErrorType for Pin {
    type Error = PinError;
}

impl InputPin for Pin {
    fn is_high(&mut self) -> Result<bool, PinError> {
        match self {
            Pin::Cdev(p) => p.is_high().map_err(|e| PinError(e.to_string())),
            #[cfg(feature = "sim")]
            Pin::Sim(p) => p.read(),
        }
    }
    fn is_low(&mut self) -> Result<bool, PinError> {
        self.is_high().map(|h| !h)
    }
}

impl OutputPin for Pin {
    fn set_high(&mut self) -> Result<(), PinError> {
        match self {
            Pin::Cdev(p) => p.set_high().map_err(|e| PinError(e.to_string())),
            #[cfg(feature = "sim")]
            Pin::Sim(p) => p.write(true),
        }
    }
    fn set_low(&mut self) -> Result<(), PinError> {
        match self {
            Pin::Cdev(p) => p.set_low().map_err(|e| PinError(e.to_string())),
            #[cfg(feature = "sim")]
            Pin::Sim(p) => p.write(false),
        }
    }
}

/// Requests a line from a GPIO character device. `initial_high` makes it an output driven
/// to that physical level in the same request (no glitch); None makes it an input.
pub fn open_cdev(spec: &PinSpec, initial_high: Option<bool>) -> Result<Pin, String> {
    let what = format!("pin {} (line {} on {})", spec.name, spec.line, spec.chip);
    if !Path::new(&spec.chip).exists() {
        return Err(format!(
            "{what}: GPIO chip {} does not exist (is this the right board? `gpiodetect` lists the chips)",
            spec.chip
        ));
    }
    let mut chip = Chip::new(&spec.chip).map_err(|e| {
        format!(
            "{what}: cannot open {} ({e}; is the agent in the gpio group?)",
            spec.chip
        )
    })?;
    if spec.line >= chip.num_lines() {
        return Err(format!(
            "{what}: {} has only {} lines",
            spec.chip,
            chip.num_lines()
        ));
    }
    let line = chip
        .get_line(spec.line)
        .map_err(|e| format!("{what}: {e}"))?;
    if let Ok(info) = line.info() {
        if info.is_used() {
            return Err(format!(
                "{what}: the line is in use by \"{}\" (another program or a kernel driver holds it)",
                info.consumer().unwrap_or("?")
            ));
        }
    }
    let (flags, value) = match initial_high {
        Some(h) => (LineRequestFlags::OUTPUT, h as u8),
        None => (LineRequestFlags::INPUT, 0),
    };
    let handle = line
        .request(flags, value, "camgw")
        .map_err(|e| format!("{what}: cannot request the line: {e}"))?;
    CdevPin::new(handle)
        .map(Pin::Cdev)
        .map_err(|e| format!("{what}: {e}"))
}

/// An I2C bus.
pub enum Bus {
    Linux(I2cdev),
    #[cfg(feature = "sim")]
    Sim(super::simhw::SimBus),
}

#[derive(Debug)]
pub enum BusError {
    Linux(I2CError),
    #[cfg(feature = "sim")]
    Sim(I2cErrorKind),
}

impl std::fmt::Display for BusError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BusError::Linux(e) => write!(f, "{e}"),
            #[cfg(feature = "sim")]
            BusError::Sim(k) => write!(f, "{k:?}"),
        }
    }
}

impl embedded_hal::i2c::Error for BusError {
    fn kind(&self) -> I2cErrorKind {
        match self {
            BusError::Linux(e) => e.kind(),
            #[cfg(feature = "sim")]
            BusError::Sim(k) => *k,
        }
    }
}

impl BusErrorType for Bus {
    type Error = BusError;
}

impl I2c for Bus {
    fn transaction(&mut self, address: u8, ops: &mut [Operation<'_>]) -> Result<(), BusError> {
        match self {
            Bus::Linux(b) => b.transaction(address, ops).map_err(BusError::Linux),
            #[cfg(feature = "sim")]
            Bus::Sim(b) => b.transaction(address, ops).map_err(BusError::Sim),
        }
    }
}

pub fn open_i2c(path: &str) -> Result<Bus, String> {
    if !Path::new(path).exists() {
        return Err(format!(
            "I2C bus {path} does not exist (enable I2C on the board, e.g. dtparam=i2c_arm=on on a Raspberry Pi)"
        ));
    }
    I2cdev::new(path)
        .map(Bus::Linux)
        .map_err(|e| format!("cannot open I2C bus {path}: {e} (is the agent in the i2c group?)"))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::boardmap::Role;

    /// A pin named `tamper` on `chip`, line `line` (the simulated backend's tests use it too).
    pub(in crate::board) fn spec(chip: &str, line: u32) -> PinSpec {
        PinSpec {
            name: "tamper".into(),
            role: Role::Tamper,
            chip: chip.into(),
            line,
            active_low: false,
            default_on: true,
        }
    }

    #[test]
    fn a_missing_chip_or_bus_is_named() {
        let e = open_cdev(&spec("/dev/gpiochip-none", 4), None)
            .err()
            .unwrap();
        assert!(
            e.contains("GPIO chip /dev/gpiochip-none does not exist"),
            "{e}"
        );
        assert!(e.contains("pin tamper (line 4"), "{e}");
        // A file that is not a GPIO chip.
        let f = tempfile::NamedTempFile::new().unwrap();
        let e = open_cdev(&spec(f.path().to_str().unwrap(), 4), None)
            .err()
            .unwrap();
        assert!(e.contains("cannot open"), "{e}");
        let e = open_i2c("/dev/i2c-none").err().unwrap();
        assert!(e.contains("I2C bus /dev/i2c-none does not exist"), "{e}");
    }
}
