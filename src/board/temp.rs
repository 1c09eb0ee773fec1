//! I2C temperature sensors (LM75, TMP102, SHT3x): the register arithmetic and CRC as pure
//! functions, drivers generic over embedded-hal's `I2c` that own their bus, and the
//! [`Hysteresis`] alarm used for `over_temperature` (and, mirrored, `disk_low`).
//!
//! A reading is two steps, [`TempSensor::start`] and [`TempSensor::finish`], so the SHT3x's
//! conversion time is awaited by the caller instead of blocking in a delay.

use embedded_hal::i2c::I2c;

use crate::boardmap::SensorType;

/// LM75/LM75A/LM75B temperature register (0x00): a left-aligned two's complement value
/// with up to 11 significant bits of 0.125 °C (9-bit parts read 0 in the low bits).
pub fn lm75_celsius(raw: [u8; 2]) -> f32 {
    (i16::from_be_bytes(raw) >> 5) as f32 * 0.125
}

/// TMP102 temperature register (0x00): 12 bits of 0.0625 °C, or 13 bits when bit 0 (EM,
/// extended mode) is set.
pub fn tmp102_celsius(raw: [u8; 2]) -> f32 {
    let v = i16::from_be_bytes(raw);
    if raw[1] & 1 == 1 {
        (v >> 3) as f32 * 0.0625
    } else {
        (v >> 4) as f32 * 0.0625
    }
}

/// Sensirion's CRC-8: polynomial 0x31, initial 0xFF, no reflection, no final XOR.
pub fn sht3x_crc(data: [u8; 2]) -> u8 {
    let mut crc = 0xffu8;
    for b in data {
        crc ^= b;
        for _ in 0..8 {
            crc = if crc & 0x80 != 0 {
                (crc << 1) ^ 0x31
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// An SHT3x measurement (temperature MSB, LSB, CRC, humidity MSB, LSB, CRC) to
/// (°C, %RH); None when a CRC does not match.
pub fn sht3x_decode(b: [u8; 6]) -> Option<(f32, f32)> {
    if sht3x_crc([b[0], b[1]]) != b[2] || sht3x_crc([b[3], b[4]]) != b[5] {
        return None;
    }
    let t = u16::from_be_bytes([b[0], b[1]]) as f32;
    let h = u16::from_be_bytes([b[3], b[4]]) as f32;
    Some((-45.0 + 175.0 * t / 65535.0, 100.0 * h / 65535.0))
}

/// SHT3x single-shot measurement, high repeatability, no clock stretching.
pub const SHT3X_MEASURE: [u8; 2] = [0x24, 0x00];
/// How long that measurement takes at most (datasheet: 15.5 ms).
pub const SHT3X_CONVERSION_MS: u64 = 16;

#[derive(Debug, PartialEq)]
pub enum SensorError<E> {
    Bus(E),
    /// The data arrived but its checksum is wrong (a noisy bus).
    Crc,
}

impl<E: embedded_hal::i2c::Error> std::fmt::Display for SensorError<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use embedded_hal::i2c::{ErrorKind, NoAcknowledgeSource};
        match self {
            SensorError::Crc => write!(f, "checksum mismatch (noise on the I2C bus?)"),
            SensorError::Bus(e) => match e.kind() {
                ErrorKind::NoAcknowledge(NoAcknowledgeSource::Address) => {
                    write!(
                        f,
                        "does not answer at its address (wiring, power, or address straps)"
                    )
                }
                ErrorKind::NoAcknowledge(_) => write!(f, "does not answer (no acknowledge)"),
                k => write!(f, "I2C error: {k:?}"),
            },
        }
    }
}

/// One temperature sensor on its bus.
pub struct TempSensor<B> {
    bus: B,
    kind: SensorType,
    address: u8,
}

impl<B: I2c> TempSensor<B> {
    pub fn new(bus: B, kind: SensorType, address: u8) -> Self {
        TempSensor { bus, kind, address }
    }

    pub fn kind(&self) -> SensorType {
        self.kind
    }

    /// How long to wait between `start` and `finish`.
    pub fn conversion_ms(&self) -> u64 {
        match self.kind {
            SensorType::Sht3x => SHT3X_CONVERSION_MS,
            SensorType::Lm75 | SensorType::Tmp102 => 0,
        }
    }

    /// Starts a conversion where the part needs one (SHT3x); LM75 and TMP102 convert
    /// continuously.
    pub fn start(&mut self) -> Result<(), SensorError<B::Error>> {
        match self.kind {
            SensorType::Sht3x => self
                .bus
                .write(self.address, &SHT3X_MEASURE)
                .map_err(SensorError::Bus),
            SensorType::Lm75 | SensorType::Tmp102 => Ok(()),
        }
    }

    /// Reads the temperature in °C.
    pub fn finish(&mut self) -> Result<f32, SensorError<B::Error>> {
        match self.kind {
            SensorType::Lm75 | SensorType::Tmp102 => {
                let mut raw = [0u8; 2];
                self.bus
                    .write_read(self.address, &[0x00], &mut raw)
                    .map_err(SensorError::Bus)?;
                Ok(if self.kind == SensorType::Lm75 {
                    lm75_celsius(raw)
                } else {
                    tmp102_celsius(raw)
                })
            }
            SensorType::Sht3x => {
                let mut raw = [0u8; 6];
                self.bus
                    .read(self.address, &mut raw)
                    .map_err(SensorError::Bus)?;
                sht3x_decode(raw).map(|(t, _)| t).ok_or(SensorError::Crc)
            }
        }
    }

    pub fn release(self) -> B {
        self.bus
    }
}

/// An alarm with hysteresis: raised when the value reaches `raise_at`, cleared only once it
/// is back past `clear_at`. Rising (`raise_at > clear_at`: temperature) or falling
/// (`raise_at < clear_at`: free disk).
#[derive(Debug, Clone)]
pub struct Hysteresis {
    raise_at: f64,
    clear_at: f64,
    active: bool,
}

impl Hysteresis {
    pub fn new(raise_at: f64, clear_at: f64) -> Self {
        Hysteresis {
            raise_at,
            clear_at,
            active: false,
        }
    }

    pub fn active(&self) -> bool {
        self.active
    }

    /// Feeds a value; Some(true) when the alarm is raised, Some(false) when it clears.
    pub fn update(&mut self, value: f64) -> Option<bool> {
        let rising = self.raise_at >= self.clear_at;
        let past_raise = if rising {
            value >= self.raise_at
        } else {
            value <= self.raise_at
        };
        let past_clear = if rising {
            value <= self.clear_at
        } else {
            value >= self.clear_at
        };
        if !self.active && past_raise {
            self.active = true;
            Some(true)
        } else if self.active && past_clear {
            self.active = false;
            Some(false)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use embedded_hal::i2c::{ErrorKind, NoAcknowledgeSource};
    use embedded_hal_mock::eh1::i2c::{Mock, Transaction as T};
    use proptest::prelude::*;

    #[test]
    fn lm75_datasheet_values() {
        // NXP LM75B table (11-bit values left-aligned): 0x3F8 → +127 °C, 0x3F7 → +126.875 °C,
        // 0x0C8 → +25 °C, 0x7FF → -0.125 °C, 0x648 → -55 °C.
        assert_eq!(lm75_celsius([0x7f, 0x00]), 127.0);
        assert_eq!(lm75_celsius([0x7e, 0xe0]), 126.875);
        assert_eq!(lm75_celsius([0xc9, 0x20]), -54.875);
        assert_eq!(lm75_celsius([0x0c, 0x80]), 12.5);
        assert_eq!(lm75_celsius([0x19, 0x00]), 25.0);
        assert_eq!(lm75_celsius([0x00, 0x20]), 0.125);
        assert_eq!(lm75_celsius([0x00, 0x00]), 0.0);
        assert_eq!(lm75_celsius([0xff, 0xe0]), -0.125);
        assert_eq!(lm75_celsius([0xe7, 0x00]), -25.0);
        assert_eq!(lm75_celsius([0xc9, 0x00]), -55.0);
    }

    #[test]
    fn tmp102_datasheet_values() {
        // TI TMP102 table 5 (12-bit) and table 6 (13-bit, EM set).
        assert_eq!(tmp102_celsius([0x7f, 0xf0]), 127.9375);
        assert_eq!(tmp102_celsius([0x19, 0x00]), 25.0);
        assert_eq!(tmp102_celsius([0x00, 0x40]), 0.25);
        assert_eq!(tmp102_celsius([0xff, 0xc0]), -0.25);
        assert_eq!(tmp102_celsius([0xe7, 0x00]), -25.0);
        assert_eq!(tmp102_celsius([0xc9, 0x00]), -55.0);
        assert_eq!(tmp102_celsius([0x4b, 0x01]), 150.0);
        assert_eq!(tmp102_celsius([0x0c, 0x81]), 25.0);
    }

    #[test]
    fn sht3x_crc_and_conversion() {
        // Sensirion's datasheet example: CRC(0xBEEF) = 0x92.
        assert_eq!(sht3x_crc([0xbe, 0xef]), 0x92);
        let t = 0x6666u16.to_be_bytes(); // -45 + 175 * 0.4 = 25 °C
        let h = 0x8000u16.to_be_bytes();
        let frame = [t[0], t[1], sht3x_crc(t), h[0], h[1], sht3x_crc(h)];
        let (c, rh) = sht3x_decode(frame).unwrap();
        assert!((c - 25.0).abs() < 0.01, "{c}");
        assert!((rh - 50.0).abs() < 0.01, "{rh}");
        let mut bad = frame;
        bad[1] ^= 1;
        assert_eq!(sht3x_decode(bad), None);
    }

    proptest! {
        #[test]
        fn lm75_resolution_and_range(raw in any::<[u8; 2]>()) {
            let c = lm75_celsius(raw);
            prop_assert!((-128.0..128.0).contains(&c));
            prop_assert_eq!((c * 8.0).fract(), 0.0);
        }

        #[test]
        fn sht3x_never_accepts_a_corrupted_word(t in any::<u16>(), flip in 0usize..16) {
            let b = t.to_be_bytes();
            let crc = sht3x_crc(b);
            let mut c = t;
            c ^= 1 << flip;
            prop_assert_ne!(sht3x_crc(c.to_be_bytes()), crc);
        }
    }

    #[test]
    fn lm75_driver_reads_register_zero() {
        let mut bus = Mock::new(&[T::write_read(0x48, vec![0x00], vec![0x19, 0x80])]);
        let mut s = TempSensor::new(bus.clone(), SensorType::Lm75, 0x48);
        s.start().unwrap();
        assert_eq!(s.finish().unwrap(), 25.5);
        bus.done();
    }

    #[test]
    fn tmp102_driver_reads_register_zero() {
        let mut bus = Mock::new(&[T::write_read(0x49, vec![0x00], vec![0x32, 0x00])]);
        let mut s = TempSensor::new(bus.clone(), SensorType::Tmp102, 0x49);
        assert_eq!(s.finish().unwrap(), 50.0);
        bus.done();
    }

    #[test]
    fn sht3x_driver_starts_then_reads_and_checks_the_crc() {
        let t = 0x6666u16.to_be_bytes();
        let h = 0x8000u16.to_be_bytes();
        let good = vec![t[0], t[1], sht3x_crc(t), h[0], h[1], sht3x_crc(h)];
        let mut corrupt = good.clone();
        corrupt[2] ^= 0xff;
        let mut bus = Mock::new(&[
            T::write(0x44, vec![0x24, 0x00]),
            T::read(0x44, good),
            T::write(0x44, vec![0x24, 0x00]),
            T::read(0x44, corrupt),
        ]);
        let mut s = TempSensor::new(bus.clone(), SensorType::Sht3x, 0x44);
        assert_eq!(s.conversion_ms(), 16);
        s.start().unwrap();
        assert!((s.finish().unwrap() - 25.0).abs() < 0.01);
        s.start().unwrap();
        assert_eq!(s.finish(), Err(SensorError::Crc));
        bus.done();
    }

    #[test]
    fn a_sensor_that_does_not_answer_says_so() {
        let mut bus = Mock::new(&[
            T::write_read(0x48, vec![0x00], vec![0, 0])
                .with_error(ErrorKind::NoAcknowledge(NoAcknowledgeSource::Address)),
            T::write(0x44, vec![0x24, 0x00]).with_error(ErrorKind::ArbitrationLoss),
        ]);
        let mut s = TempSensor::new(bus.clone(), SensorType::Lm75, 0x48);
        let e = s.finish().unwrap_err();
        assert!(
            e.to_string().contains("does not answer at its address"),
            "{e}"
        );
        let bus2 = s.release();
        let mut s = TempSensor::new(bus2, SensorType::Sht3x, 0x44);
        let e = s.start().unwrap_err();
        assert!(e.to_string().contains("ArbitrationLoss"), "{e}");
        bus.done();
    }

    #[test]
    fn hysteresis_raises_once_and_clears_past_the_lower_bound() {
        let mut h = Hysteresis::new(70.0, 65.0);
        let seq = [60.0, 69.9, 70.0, 75.0, 68.0, 66.0, 70.5, 65.0, 64.0, 71.0];
        let out: Vec<_> = seq.iter().map(|v| h.update(*v)).collect();
        assert_eq!(
            out,
            vec![
                None,
                None,
                Some(true),
                None,
                None,
                None,
                None,
                Some(false),
                None,
                Some(true)
            ]
        );
        // Falling: free disk below 100 raises, above 120 clears.
        let mut d = Hysteresis::new(100.0, 120.0);
        assert_eq!(d.update(500.0), None);
        assert_eq!(d.update(99.0), Some(true));
        assert_eq!(d.update(110.0), None);
        assert_eq!(d.update(121.0), Some(false));
    }
}
