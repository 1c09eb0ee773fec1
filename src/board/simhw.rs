//! The simulated board backend, compiled only with the `sim` feature (tests and `camgw
//! demo`; not in the firmware): pins are files holding "1" or "0" under a directory, and an
//! I2C bus whose temperature sensors answer in their parts' register formats from
//! `{name}.temp` files. [`super::hw::Pin`] and [`super::hw::Bus`] wrap them.

use std::path::{Path, PathBuf};

use embedded_hal::i2c::{ErrorKind as I2cErrorKind, Operation};

use super::hw::{Bus, Pin, PinError};
use super::temp::sht3x_crc;
use crate::boardmap::{Pin as PinSpec, SensorType};

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

    pub(super) fn read(&mut self) -> Result<bool, PinError> {
        match std::fs::read_to_string(&self.path) {
            Ok(s) => Ok(s.trim() == "1"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(PinError(format!("{}: {e}", self.path.display()))),
        }
    }

    pub(super) fn write(&mut self, high: bool) -> Result<(), PinError> {
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, if high { "1\n" } else { "0\n" })
            .and_then(|_| std::fs::rename(&tmp, &self.path))
            .map_err(|e| PinError(format!("{}: {e}", self.path.display())))
    }
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

    pub(super) fn transaction(
        &mut self,
        address: u8,
        ops: &mut [Operation<'_>],
    ) -> Result<(), I2cErrorKind> {
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
    use crate::board::hw::tests::spec;
    use crate::board::temp::TempSensor;
    use embedded_hal::digital::{InputPin, OutputPin};

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
