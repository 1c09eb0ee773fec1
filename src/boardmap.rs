//! Board pin maps: the files in `boards/` (shipped inside the binary, so a name always
//! resolves) or a technician's own file, parsed and validated into a typed [`BoardMap`], and
//! the device-tree auto-detection. Pure apart from [`resolve`] reading a file and
//! `/proc/device-tree/compatible`.
//!
//! A board file names each pin by its logical role (`status_led`, `tamper`, `pir1`, `door1`,
//! `input1`, `relay1`, `relay_cam01`) and maps it to a line on a Linux GPIO character device.
//! Sensors are I2C temperature sensors by type, bus and address.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The board files shipped with camgw, by name.
pub const SHIPPED: &[(&str, &str)] = &[
    ("rpi4", include_str!("../boards/rpi4.toml")),
    ("rpi5", include_str!("../boards/rpi5.toml")),
    ("rpi3-armhf", include_str!("../boards/rpi3-armhf.toml")),
    ("bbb", include_str!("../boards/bbb.toml")),
    ("rock-pi-s", include_str!("../boards/rock-pi-s.toml")),
    (
        "orangepi-zero2",
        include_str!("../boards/orangepi-zero2.toml"),
    ),
    ("sim", include_str!("../boards/sim.toml")),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// GPIO character devices and `/dev/i2c-*`.
    Linux,
    /// Files under a directory stand in for pins and sensors (tests, `camgw demo`).
    Sim,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SensorType {
    Lm75,
    Tmp102,
    Sht3x,
}

impl SensorType {
    pub fn name(self) -> &'static str {
        match self {
            SensorType::Lm75 => "lm75",
            SensorType::Tmp102 => "tmp102",
            SensorType::Sht3x => "sht3x",
        }
    }
    /// The addresses the part can be strapped to.
    pub fn addresses(self) -> std::ops::RangeInclusive<u8> {
        match self {
            SensorType::Lm75 => 0x48..=0x4f,
            SensorType::Tmp102 => 0x48..=0x4b,
            SensorType::Sht3x => 0x44..=0x45,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnOff {
    On,
    Off,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBoard {
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    compatible: Vec<String>,
    #[serde(default = "linux")]
    backend: Backend,
    #[serde(default)]
    pins: BTreeMap<String, RawPin>,
    #[serde(default)]
    sensor: Vec<RawSensor>,
}

fn linux() -> Backend {
    Backend::Linux
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPin {
    chip: String,
    line: u32,
    #[serde(default)]
    active_low: bool,
    default: Option<OnOff>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSensor {
    name: String,
    #[serde(rename = "type")]
    kind: SensorType,
    bus: String,
    address: i64,
}

/// What a pin is for, from its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    StatusLed,
    /// The enclosure's tamper switch: active means open.
    Tamper,
    /// A motion or contact input (`pirN`, `doorN`, `inputN`).
    Motion,
    Relay,
}

impl Role {
    /// The role a pin name stands for, or None for a name no role knows.
    pub fn of(name: &str) -> Option<Role> {
        let numbered = |prefix: &str| {
            name.strip_prefix(prefix).is_some_and(|n| {
                (1..=2).contains(&n.len())
                    && n.bytes().all(|b| b.is_ascii_digit())
                    && !n.starts_with('0')
            })
        };
        match name {
            "status_led" => Some(Role::StatusLed),
            "tamper" => Some(Role::Tamper),
            _ if numbered("pir") || numbered("door") || numbered("input") => Some(Role::Motion),
            _ if numbered("relay") => Some(Role::Relay),
            _ => name
                .strip_prefix("relay_")
                .filter(|s| {
                    (1..=64).contains(&s.len())
                        && s.bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                })
                .map(|_| Role::Relay),
        }
    }

    pub fn is_output(self) -> bool {
        matches!(self, Role::StatusLed | Role::Relay)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Pin {
    pub name: String,
    pub role: Role,
    /// `/dev/gpiochipN` (or a simulated chip's name).
    pub chip: String,
    pub line: u32,
    pub active_low: bool,
    /// Relays: the state driven at start-up (on unless the file says off).
    pub default_on: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Sensor {
    pub name: String,
    pub kind: SensorType,
    pub bus: String,
    pub address: u8,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BoardMap {
    pub name: String,
    pub description: String,
    pub compatible: Vec<String>,
    pub backend: Backend,
    pub pins: Vec<Pin>,
    pub sensors: Vec<Sensor>,
}

impl BoardMap {
    pub fn pin(&self, name: &str) -> Option<&Pin> {
        self.pins.iter().find(|p| p.name == name)
    }
    pub fn pins_with(&self, role: Role) -> impl Iterator<Item = &Pin> {
        self.pins.iter().filter(move |p| p.role == role)
    }
}

/// Parses and validates a board file's text; every problem is one line naming its key.
pub fn parse(text: &str) -> Result<BoardMap, Vec<String>> {
    let raw: RawBoard = toml::from_str(text).map_err(|e| {
        vec![e
            .to_string()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect::<Vec<_>>()
            .join(" ")]
    })?;
    let mut problems = Vec::new();
    if raw.name.is_empty()
        || !raw
            .name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        problems.push(format!(
            "name: \"{}\" must be [a-z0-9-], not empty",
            raw.name
        ));
    }
    let mut pins = Vec::new();
    let mut lines: BTreeMap<(String, u32), String> = BTreeMap::new();
    for (name, p) in raw.pins {
        let Some(role) = Role::of(&name) else {
            problems.push(format!(
                "pins.{name}: unknown pin name (expected status_led, tamper, pirN, doorN, inputN, relayN or relay_<camera>)"
            ));
            continue;
        };
        let chip = normalise_chip(&p.chip, raw.backend);
        if chip.is_empty() {
            problems.push(format!("pins.{name}.chip: must not be empty"));
        }
        if p.line > 1023 {
            problems.push(format!(
                "pins.{name}.line: {} is out of range (0..1023)",
                p.line
            ));
        }
        if let Some(other) = lines.insert((chip.clone(), p.line), name.clone()) {
            problems.push(format!(
                "pins.{name}: line {} on {chip} is already used by pins.{other}",
                p.line
            ));
        }
        if p.default.is_some() && role != Role::Relay {
            problems.push(format!("pins.{name}.default: only relays have a default"));
        }
        pins.push(Pin {
            role,
            chip,
            line: p.line,
            active_low: p.active_low,
            default_on: p.default != Some(OnOff::Off),
            name,
        });
    }
    if pins.iter().filter(|p| p.role == Role::StatusLed).count() > 1 {
        problems.push("pins: more than one status_led".into());
    }
    let mut sensors: Vec<Sensor> = Vec::new();
    for (i, s) in raw.sensor.iter().enumerate() {
        let at = format!("sensor[{i}]");
        if !matches!(s.name.as_str(), "enclosure" | "ambient") {
            problems.push(format!(
                "{at}.name: unknown sensor name \"{}\" (expected enclosure or ambient)",
                s.name
            ));
        }
        let range = s.kind.addresses();
        let address = match u8::try_from(s.address) {
            Ok(a) if range.contains(&a) => a,
            _ => {
                problems.push(format!(
                    "{at}.address: {:#04x} is not an address a {} can have ({:#04x}..={:#04x})",
                    s.address,
                    s.kind.name(),
                    range.start(),
                    range.end()
                ));
                0
            }
        };
        if s.bus.is_empty() {
            problems.push(format!("{at}.bus: must not be empty"));
        }
        if let Some(o) = sensors
            .iter()
            .find(|o| o.bus == s.bus && o.address == address)
        {
            problems.push(format!(
                "{at}: address {address:#04x} on {} is already used by sensor \"{}\"",
                s.bus, o.name
            ));
        }
        if sensors.iter().any(|o| o.name == s.name) {
            problems.push(format!("{at}.name: \"{}\" appears twice", s.name));
        }
        sensors.push(Sensor {
            name: s.name.clone(),
            kind: s.kind,
            bus: s.bus.clone(),
            address,
        });
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(BoardMap {
        name: raw.name,
        description: raw.description,
        compatible: raw.compatible,
        backend: raw.backend,
        pins,
        sensors,
    })
}

fn normalise_chip(chip: &str, backend: Backend) -> String {
    if backend == Backend::Linux && !chip.is_empty() && !chip.contains('/') {
        format!("/dev/{chip}")
    } else {
        chip.to_string()
    }
}

/// Which shipped board the device tree's `compatible` list (NUL-separated, most specific
/// first) names. The first of the device's strings that any board claims wins.
pub fn detect(compatible: &[u8]) -> Option<&'static str> {
    let boards: Vec<(&str, BoardMap)> = SHIPPED
        .iter()
        .filter_map(|(n, t)| parse(t).ok().map(|b| (*n, b)))
        .collect();
    compatible
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .find_map(|s| {
            let s = std::str::from_utf8(s).ok()?;
            boards
                .iter()
                .find(|(_, b)| b.compatible.iter().any(|c| c == s))
                .map(|(n, _)| *n)
        })
}

/// Where auto-detection reads the device's compatible strings.
pub const DEVICE_TREE: &str = "/proc/device-tree/compatible";

/// Where a `gateway.board` value points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BoardRef {
    None,
    Auto,
    Shipped(&'static str),
    File(PathBuf),
}

/// Interprets `gateway.board`: "none", "auto", a shipped name, or a path to a file (anything
/// with a `/` or ending in `.toml`).
pub fn reference(value: &str) -> Result<BoardRef, String> {
    match value {
        "none" => Ok(BoardRef::None),
        "auto" => Ok(BoardRef::Auto),
        v if v.contains('/') || v.ends_with(".toml") => Ok(BoardRef::File(PathBuf::from(v))),
        v => SHIPPED
            .iter()
            .find(|(n, _)| *n == v)
            .map(|(n, _)| BoardRef::Shipped(n))
            .ok_or_else(|| {
                format!(
                    "unknown board \"{v}\" (known: none, auto, {}; or a path to a board file)",
                    SHIPPED
                        .iter()
                        .map(|(n, _)| *n)
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }),
    }
}

impl std::fmt::Display for BoardRef {
    /// The value as it is written in `gateway.board`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BoardRef::None => f.write_str("none"),
            BoardRef::Auto => f.write_str("auto"),
            BoardRef::Shipped(n) => f.write_str(n),
            BoardRef::File(p) => write!(f, "{}", p.display()),
        }
    }
}

impl serde::Serialize for BoardRef {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Loads the board a reference names. `Ok(None)` for "none"; auto-detection reads
/// `device_tree` (normally `/proc/device-tree/compatible`).
pub fn resolve(r: &BoardRef, device_tree: &Path) -> Result<Option<BoardMap>, String> {
    let shipped = |n: &str| {
        let text = SHIPPED.iter().find(|(s, _)| *s == n).unwrap().1;
        parse(text).map_err(|p| format!("shipped board {n}: {}", p.join("; ")))
    };
    match r {
        BoardRef::None => Ok(None),
        BoardRef::Shipped(n) => shipped(n).map(Some),
        BoardRef::File(p) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| format!("cannot read board file {}: {e}", p.display()))?;
            parse(&text)
                .map(Some)
                .map_err(|ps| format!("{}: {}", p.display(), ps.join("; ")))
        }
        BoardRef::Auto => {
            let dt = std::fs::read(device_tree).map_err(|e| {
                format!(
                    "board \"auto\": cannot read {} ({e}); set gateway.board to one of the shipped boards or a board file",
                    device_tree.display()
                )
            })?;
            let name = detect(&dt).ok_or_else(|| {
                let list: Vec<String> = dt
                    .split(|b| *b == 0)
                    .filter(|s| !s.is_empty())
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .collect();
                format!(
                    "board \"auto\": no shipped board matches this device ({}); set gateway.board to a board file",
                    list.join(", ")
                )
            })?;
            shipped(name).map(Some)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_board_is_valid_and_named_like_its_file() {
        for (name, text) in SHIPPED {
            let b = parse(text).unwrap_or_else(|p| panic!("{name}: {p:?}"));
            assert_eq!(b.name, *name);
            assert!(b.pin("status_led").is_some(), "{name} has a status LED");
            assert!(b.pin("tamper").is_some(), "{name} has a tamper switch");
            assert!(!b.sensors.is_empty(), "{name} has a temperature sensor");
            if b.backend == Backend::Linux {
                assert!(!b.compatible.is_empty(), "{name} can be auto-detected");
            }
        }
    }

    #[test]
    fn roles_follow_names() {
        assert_eq!(Role::of("status_led"), Some(Role::StatusLed));
        assert_eq!(Role::of("pir1"), Some(Role::Motion));
        assert_eq!(Role::of("door12"), Some(Role::Motion));
        assert_eq!(Role::of("relay_cam01"), Some(Role::Relay));
        assert_eq!(Role::of("relay3"), Some(Role::Relay));
        for bad in [
            "pir",
            "pir0",
            "pir123",
            "led",
            "relay_",
            "relay_CAM",
            "Tamper",
        ] {
            assert_eq!(Role::of(bad), None, "{bad}");
        }
    }

    fn problems(text: &str) -> String {
        parse(text).unwrap_err().join("\n")
    }

    #[test]
    fn duplicate_lines_unknown_names_and_bad_addresses_are_refused() {
        let p = problems(
            r#"
            name = "x"
            [pins]
            tamper = { chip = "gpiochip0", line = 4 }
            pir1 = { chip = "/dev/gpiochip0", line = 4 }
            buzzer = { chip = "gpiochip0", line = 5 }
            status_led = { chip = "gpiochip0", line = 6, default = "on" }
            [[sensor]]
            name = "enclosure"
            type = "lm75"
            bus = "/dev/i2c-1"
            address = 0x40
            [[sensor]]
            name = "ambient"
            type = "sht3x"
            bus = "/dev/i2c-1"
            address = 0x44
            [[sensor]]
            name = "ambient"
            type = "tmp102"
            bus = "/dev/i2c-1"
            address = 300
            "#,
        );
        assert!(
            p.contains("pins.tamper: line 4 on /dev/gpiochip0 is already used by pins.pir1"),
            "{p}"
        );
        assert!(p.contains("pins.buzzer: unknown pin name"), "{p}");
        assert!(p.contains("pins.status_led.default: only relays"), "{p}");
        assert!(
            p.contains("sensor[0].address: 0x40 is not an address a lm75 can have (0x48..=0x4f)"),
            "{p}"
        );
        assert!(p.contains("sensor[2].address: 0x12c"), "{p}");
        assert!(
            p.contains("sensor[2].name: \"ambient\" appears twice"),
            "{p}"
        );
    }

    #[test]
    fn syntax_errors_and_unknown_keys_are_named() {
        assert!(
            problems("name = \"x\"\n[pins]\ntamper = { chip = \"a\", lines = 3 }")
                .contains("lines")
        );
        assert!(problems("name = \"x\"\ncolour = 1").contains("colour"));
        assert!(problems(
            "name = \"x\"\n[[sensor]]\nname=\"enclosure\"\ntype=\"ds18b20\"\nbus=\"b\"\naddress=1"
        )
        .contains("ds18b20"));
        assert!(problems("name = \"Big Box\"").contains("name"));
    }

    #[test]
    fn relays_default_on_unless_told() {
        let b = parse(
            "name = \"x\"\n[pins]\nrelay1 = { chip = \"c\", line = 1 }\nrelay2 = { chip = \"c\", line = 2, default = \"off\", active_low = true }",
        )
        .unwrap();
        assert!(b.pin("relay1").unwrap().default_on);
        let r2 = b.pin("relay2").unwrap();
        assert!(!r2.default_on && r2.active_low);
        assert_eq!(r2.chip, "/dev/c");
    }

    #[test]
    fn auto_detection_uses_the_most_specific_string_first() {
        assert_eq!(
            detect(b"raspberrypi,4-model-b\0brcm,bcm2711\0"),
            Some("rpi4")
        );
        assert_eq!(
            detect(b"raspberrypi,5-model-b\0brcm,bcm2712\0"),
            Some("rpi5")
        );
        assert_eq!(
            detect(b"ti,am335x-bone-black\0ti,am335x-bone\0ti,am33xx\0"),
            Some("bbb")
        );
        assert_eq!(detect(b"acme,unknown\0"), None);
        assert_eq!(detect(b""), None);
    }

    #[test]
    fn references() {
        assert_eq!(reference("none"), Ok(BoardRef::None));
        assert_eq!(reference("rpi4"), Ok(BoardRef::Shipped("rpi4")));
        assert_eq!(
            reference("/etc/camgw/box.toml"),
            Ok(BoardRef::File("/etc/camgw/box.toml".into()))
        );
        assert!(reference("rpi9")
            .unwrap_err()
            .contains("known: none, auto, rpi4"));
        let dir = tempfile::tempdir().unwrap();
        let dt = dir.path().join("compatible");
        std::fs::write(&dt, b"raspberrypi,4-model-b\0brcm,bcm2711\0").unwrap();
        assert_eq!(resolve(&BoardRef::Auto, &dt).unwrap().unwrap().name, "rpi4");
        std::fs::write(&dt, b"acme,box\0").unwrap();
        let e = resolve(&BoardRef::Auto, &dt).unwrap_err();
        assert!(e.contains("acme,box"), "{e}");
        let e = resolve(&BoardRef::Auto, &dir.path().join("nope")).unwrap_err();
        assert!(e.contains("cannot read"), "{e}");
    }
}
