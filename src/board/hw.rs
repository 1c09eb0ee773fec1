//! The backends behind the drivers: Linux (GPIO character devices through
//! linux-embedded-hal's `CdevPin`, `/dev/i2c-*` through `I2cdev`; not the deprecated sysfs
//! GPIO interface) and the simulation (files under a directory). [`Pin`] and [`Bus`] wrap
//! either, so the drivers stay generic over embedded-hal and the board is one concrete type.
//!
//! Opening reports what a technician can act on: a chip that does not exist, a line that
//! another program holds, a line number past the chip's end.

use std::path::{Path, PathBuf};

use embedded_hal::digital::{ErrorType as PinErrorType, InputPin, OutputPin};
use embedded_hal::i2c::{ErrorKind as I2cErrorKind, ErrorType as BusErrorType, I2c, Operation};
use linux_embedded_hal::gpio_cdev::{Chip, LineRequestFlags};
use linux_embedded_hal::{CdevPin, I2CError, I2cdev};

use super::temp::sht3x_crc;
use crate::boardmap::{Pin as PinSpec, SensorType};

/// A GPIO line.
pub enum Pin {
    Cdev(CdevPin),
    Sim(SimPin),
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
            Pin::Sim(p) => p.write(true),
        }
    }
    fn set_low(&mut self) -> Result<(), PinError> {
        match self {
            Pin::Cdev(p) => p.set_low().map_err(|e| PinError(e.to_string())),
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

/// A simulated line: a file holding "1" or "0" (the physical level). An input whose file is
/// missing reads low.
pub struct SimPin {
    path: PathBuf,
}

impl SimPin {
    pub fn open(dir: &Path, spec: &PinSpec, initial_high: Option<bool>) -> Result<Pin, String> {
        let mut p = SimPin {
            path: dir.join(&spec.name),
        };
        if let Some(h) = initial_high {
            p.write(h).map_err(|e| format!("pin {}: {e}", spec.name))?;
        }
        Ok(Pin::Sim(p))
    }

    fn read(&mut self) -> Result<bool, PinError> {
        match std::fs::read_to_string(&self.path) {
            Ok(s) => Ok(s.trim() == "1"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(PinError(format!("{}: {e}", self.path.display()))),
        }
    }

    fn write(&mut self, high: bool) -> Result<(), PinError> {
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, if high { "1\n" } else { "0\n" })
            .and_then(|_| std::fs::rename(&tmp, &self.path))
            .map_err(|e| PinError(format!("{}: {e}", self.path.display())))
    }
}

/// An I2C bus.
pub enum Bus {
    Linux(I2cdev),
    Sim(SimBus),
}

#[derive(Debug)]
pub enum BusError {
    Linux(I2CError),
    Sim(I2cErrorKind),
}

impl std::fmt::Display for BusError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BusError::Linux(e) => write!(f, "{e}"),
            BusError::Sim(k) => write!(f, "{k:?}"),
        }
    }
}

impl embedded_hal::i2c::Error for BusError {
    fn kind(&self) -> I2cErrorKind {
        match self {
            BusError::Linux(e) => e.kind(),
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

/// A simulated I2C bus with temperature sensors that answer in their parts' register
/// formats. Each sensor's temperature comes from `{dir}/{name}.temp` (°C as text); a missing
/// file makes the sensor not answer, as an unplugged one would.
pub struct SimBus {
    dir: PathBuf,
    devices: Vec<(u8, SensorType, String)>,
    sht_measured: bool,
}

impl SimBus {
    pub fn bus(dir: &Path, devices: Vec<(u8, SensorType, String)>) -> Bus {
        Bus::Sim(SimBus {
            dir: dir.to_path_buf(),
            devices,
            sht_measured: false,
        })
    }

    fn transaction(&mut self, address: u8, ops: &mut [Operation<'_>]) -> Result<(), I2cErrorKind> {
        use embedded_hal::i2c::NoAcknowledgeSource;
        let nack = I2cErrorKind::NoAcknowledge(NoAcknowledgeSource::Address);
        let (kind, name) = self
            .devices
            .iter()
            .find(|(a, _, _)| *a == address)
            .map(|(_, k, n)| (*k, n.clone()))
            .ok_or(nack)?;
        let celsius: f64 = std::fs::read_to_string(self.dir.join(format!("{name}.temp")))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or(nack)?;
        for op in ops.iter_mut() {
            match op {
                Operation::Write(w) => {
                    if kind == SensorType::Sht3x {
                        self.sht_measured = *w == [0x24, 0x00];
                    }
                }
                Operation::Read(r) => match kind {
                    SensorType::Lm75 => {
                        let raw = ((celsius / 0.125).round() as i16) << 5;
                        fill(r, &raw.to_be_bytes());
                    }
                    SensorType::Tmp102 => {
                        let raw = ((celsius / 0.0625).round() as i16) << 4;
                        fill(r, &raw.to_be_bytes());
                    }
                    SensorType::Sht3x => {
                        if !std::mem::take(&mut self.sht_measured) {
                            return Err(nack); // no measurement started: the part NACKs
                        }
                        let t = (((celsius + 45.0) / 175.0 * 65535.0).round() as u16).to_be_bytes();
                        let h = 0x8000u16.to_be_bytes();
                        fill(r, &[t[0], t[1], sht3x_crc(t), h[0], h[1], sht3x_crc(h)]);
                    }
                },
            }
        }
        Ok(())
    }
}

fn fill(out: &mut [u8], data: &[u8]) {
    for (o, d) in out.iter_mut().zip(data.iter().chain(std::iter::repeat(&0))) {
        *o = *d;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::board::temp::TempSensor;
    use crate::boardmap::Role;

    fn spec(chip: &str, line: u32) -> PinSpec {
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

    #[test]
    fn simulated_sensors_answer_in_their_parts_formats() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("enclosure.temp"), "71.25\n").unwrap();
        std::fs::write(dir.path().join("ambient.temp"), "-12.5").unwrap();
        let bus = SimBus::bus(
            dir.path(),
            vec![
                (0x48, SensorType::Lm75, "enclosure".into()),
                (0x44, SensorType::Sht3x, "ambient".into()),
                (0x49, SensorType::Tmp102, "other".into()),
            ],
        );
        let mut lm = TempSensor::new(bus, SensorType::Lm75, 0x48);
        assert_eq!(lm.finish().unwrap(), 71.25);
        let mut sht = TempSensor::new(lm.release(), SensorType::Sht3x, 0x44);
        sht.start().unwrap();
        assert!((sht.finish().unwrap() + 12.5).abs() < 0.01);
        assert!(
            sht.finish().is_err(),
            "a read without a measurement is refused"
        );
        let mut tmp = TempSensor::new(sht.release(), SensorType::Tmp102, 0x49);
        let e = tmp.finish().unwrap_err().to_string();
        assert!(e.contains("does not answer"), "{e}");
        std::fs::write(dir.path().join("other.temp"), "30").unwrap();
        assert_eq!(tmp.finish().unwrap(), 30.0);
    }

    #[test]
    fn simulated_pins_are_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut out = SimPin::open(dir.path(), &spec("sim", 1), Some(false)).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("tamper")).unwrap(),
            "0\n"
        );
        out.set_high().unwrap();
        assert!(out.is_high().unwrap());
        let mut other = spec("sim", 2);
        other.name = "pir1".into();
        let mut input = SimPin::open(dir.path(), &other, None).unwrap();
        assert!(!input.is_high().unwrap(), "missing file reads low");
        std::fs::write(dir.path().join("pir1"), "1").unwrap();
        assert!(input.is_high().unwrap());
    }
}
