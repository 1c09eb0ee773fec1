//! Board support end to end: the agent binary runs on the simulated board (`board = "sim"`,
//! files standing in for pins and sensors, the sensors answering in their parts' register
//! formats), and what the board sees reaches a real Mosquitto: `enclosure_open`,
//! `over_temperature` with hysteresis, GPIO motion events, `board_fault` for a sensor that
//! does not answer, relays driven to their defaults at start, a `reboot_camera` through a
//! relay, `disk_low`, the hardware watchdog's pings and magic close, and the self-health
//! telemetry.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_camgw");

fn config(port: u16, ingest: SocketAddr, data: &Path, extra_gateway: &str, extra: &str) -> String {
    TestConfig::new(port, ingest, data)
        .set("gateway", "board", "sim")
        .merge_into("gateway", extra_gateway)
        .set("mqtt", "telemetry_interval_s", 1)
        .merge(
            "[board]\npoll_ms = 10\ndebounce_ms = 30\ntemperature_interval_s = 1\n\
             over_temperature_c = 60\ntemperature_hysteresis_c = 5\n\
             inputs = { pir1 = \"cam01\", door1 = \"gate\" }\n",
        )
        .set("board", "relay_off_s", relay_off_s() as i64)
        .merge_into("board", extra)
        .camera(
            CameraToml::new("cam01", "generic")
                .set("probe", false)
                .set("relay", "relay1"),
        )
        .text()
}

fn write(dir: &Path, name: &str, value: &str) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, value).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name))
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// Waits (bounded) until a simulated output file holds `want`.
fn wait_file(dir: &Path, name: &str, want: &str, what: &str) {
    let deadline =
        Instant::now() + scaled(Duration::from_secs(10)) + Duration::from_secs(relay_off_s());
    while read(dir, name) != want {
        assert!(
            Instant::now() < deadline,
            "{what}: {name} is {:?}, wanted {want}",
            read(dir, name)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Long enough that the test sees the relay off after `camgw cmd` has returned, even
/// under emulation.
fn relay_off_s() -> u64 {
    scaled(Duration::from_secs(4)).as_secs()
}

fn alerts<'a>(sub: &'a Subscriber, kind: &'a str) -> impl Iterator<Item = serde_json::Value> + 'a {
    distinct(&sub.seen, "alert")
        .into_iter()
        .filter(move |a| a["kind"] == kind)
}

fn has_alert(kind: &'static str) -> impl Fn(&[Msg]) -> bool {
    move |msgs| {
        msgs.iter()
            .any(|m| m.leaf() == "alert" && m.json()["kind"] == kind)
    }
}

#[test]
fn what_the_simulated_board_sees_reaches_the_broker() {
    let broker = Broker::start();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let sim = data.join("sim-board");
    std::fs::create_dir_all(&sim).unwrap();
    write(&sim, "enclosure.temp", "41.5");
    write(&sim, "tamper", "0");
    write(&sim, "pir1", "0");
    // As if the agent had died in the middle of a power-cycle: relay1 (active-low) is off.
    write(&sim, "relay1", "1");
    // No ambient.temp: the SHT3x does not answer.

    let st = tempfile::tempdir().unwrap();
    let out = camgw_command(BIN)
        .arg("keygen")
        .arg("--out")
        .arg(st.path().join("ward"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let public = std::fs::read_to_string(st.path().join("ward.pub")).unwrap();
    let security = format!("[security]\ncommand_keys = [\"{}\"]", public.trim());

    let mut sub = Subscriber::new(broker.port, &format!("camgw/{WARD}/{GW}/#"));
    let ingest: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let text = config(broker.port, ingest, &data, "", &security);
    let mut agent = Agent::from_text(tmp.path(), data.clone(), broker.port, ingest, &text, vec![]);

    // Relays are driven to their defaults at start: the camera is powered again.
    wait_file(&sim, "relay1", "0", "relay1 (active-low, default on)");
    wait_file(&sim, "relay3", "1", "relay3 (active-high, default on)");
    wait_file(&sim, "relay4", "0", "relay4 (default off)");

    sub.wait_until(
        Duration::from_secs(15),
        "board_fault for the silent SHT3x",
        |m| {
            m.iter().any(|m| {
                m.leaf() == "alert"
                    && m.json()["kind"] == "board_fault"
                    && m.json()["detail"]["problems"][0]
                        .as_str()
                        .is_some_and(|p| p.contains("sensor ambient (sht3x): does not answer"))
            })
        },
    );
    // The sensor is plugged in: it answers on the next reading and the fault clears.
    write(&sim, "ambient.temp", "30");
    // Telemetry carries the board and the gateway's own health.
    sub.wait_until(Duration::from_secs(15), "telemetry with readings", |m| {
        m.iter().any(|m| {
            let t = m.json();
            m.leaf() == "telemetry"
                && t["board"]["temperatures_c"]["enclosure"] == 41.5
                && t["board"]["led"] == "connected"
                && t["board"]["faults"]
                    .as_array()
                    .is_some_and(|f| f.is_empty())
                && t["system"]["disk_free_mb"].as_u64().is_some()
                && t["system"]["load"].is_array()
                && t["system"]["mem_available_kb"].as_u64().is_some()
                && t["system"]["uptime_s"].as_u64().is_some()
        })
    });
    let tel = sub.on("telemetry").pop().unwrap();
    assert_eq!(tel["board"]["enclosure_open"], false, "{tel}");
    assert_eq!(tel["board"]["relays"]["relay1"], true, "{tel}");
    // Connected: steady on, but for a 150 ms blink every 5 s.
    wait_file(&sim, "status_led", "1", "the status LED");

    // The enclosure is opened, then closed.
    write(&sim, "tamper", "1");
    sub.wait_until(
        Duration::from_secs(10),
        "enclosure_open",
        has_alert("enclosure_open"),
    );
    write(&sim, "tamper", "0");
    sub.wait_until(
        Duration::from_secs(10),
        "enclosure_closed",
        has_alert("enclosure_closed"),
    );
    let open: Vec<_> = alerts(&sub, "enclosure_open").collect();
    assert_eq!(open.len(), 1);
    assert_eq!(open[0]["detail"]["open"], true);
    assert_eq!(open[0]["camera"], serde_json::Value::Null);

    // A PIR on pir1 (wired for cam01) sees motion.
    write(&sim, "pir1", "1");
    sub.wait_until(Duration::from_secs(10), "gpio motion start", |m| {
        m.iter()
            .any(|m| m.leaf() == "event" && m.json()["state"] == "start")
    });
    write(&sim, "pir1", "0");
    sub.wait_until(Duration::from_secs(10), "gpio motion end", |m| {
        m.iter()
            .any(|m| m.leaf() == "event" && m.json()["state"] == "end")
    });
    for e in sub.on("event") {
        assert_eq!(e["source"], "gpio", "{e}");
        assert_eq!(e["camera"], "cam01", "{e}");
        assert_eq!(e["kind"], "motion", "{e}");
    }

    // The afternoon sun: 65 °C raises, 58 °C (inside the hysteresis) does not clear,
    // 54 °C clears.
    write(&sim, "enclosure.temp", "65");
    sub.wait_until(
        Duration::from_secs(10),
        "over_temperature",
        has_alert("over_temperature"),
    );
    let hot: Vec<_> = alerts(&sub, "over_temperature").collect();
    assert_eq!(hot[0]["detail"]["celsius"], 65.0);
    assert_eq!(hot[0]["detail"]["limit_c"], 60.0);
    sub.wait_until(Duration::from_secs(10), "the LED showing a fault", |m| {
        m.iter()
            .any(|m| m.leaf() == "telemetry" && m.json()["board"]["led"] == "fault")
    });
    write(&sim, "enclosure.temp", "58");
    sub.wait_until(
        Duration::from_secs(10),
        "a telemetry reading of 58 °C",
        |m| {
            m.iter().any(|m| {
                m.leaf() == "telemetry" && m.json()["board"]["temperatures_c"]["enclosure"] == 58.0
            })
        },
    );
    assert_eq!(
        alerts(&sub, "temperature_ok").count(),
        0,
        "58 °C is inside the hysteresis"
    );
    write(&sim, "enclosure.temp", "54");
    sub.wait_until(
        Duration::from_secs(10),
        "temperature_ok",
        has_alert("temperature_ok"),
    );
    assert_eq!(
        alerts(&sub, "over_temperature").count(),
        1,
        "one alert, no storm"
    );

    // reboot_camera power-cycles cam01 through relay1: off (high), then on (low) again.
    let out = camgw_command(BIN)
        .args(["cmd", "--key"])
        .arg(st.path().join("ward.key"))
        .args([
            "--mqtt",
            &format!("mqtt://127.0.0.1:{}", broker.port),
            "--ward",
            WARD,
            "--gateway",
            GW,
            r#"{"op":"reboot_camera","camera":"cam01"}"#,
        ])
        .output()
        .unwrap();
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{result}");
    assert_eq!(result["method"], "relay", "{result}");
    assert_eq!(result["relay"], "relay1", "{result}");
    assert_eq!(result["off_s"], relay_off_s(), "{result}");
    assert_eq!(
        read(&sim, "relay1"),
        "1",
        "relay1 is off right after the command"
    );
    wait_file(&sim, "relay1", "0", "relay1 back on after the off time");
    sub.wait_until(
        Duration::from_secs(10),
        "camera_power_cycled",
        has_alert("camera_power_cycled"),
    );

    assert_eq!(agent.term().code(), Some(0));
    assert_eq!(
        read(&sim, "status_led"),
        "0",
        "the LED is off once the agent stopped"
    );
    assert_seq_order(&sub.seen, "alert");
}

#[test]
fn disk_low_is_raised_and_the_led_shows_a_fault() {
    let broker = Broker::start();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let sim = data.join("sim-board");
    std::fs::create_dir_all(&sim).unwrap();
    write(&sim, "enclosure.temp", "30");
    write(&sim, "ambient.temp", "28.5");
    let mut sub = Subscriber::new(broker.port, &format!("camgw/{WARD}/{GW}/#"));
    let ingest: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    // No disk has ten terabytes free: the bound is always crossed.
    // A regular file stands in for /dev/watchdog: pings are writes, the magic close is "V".
    let wd = tmp.path().join("watchdog");
    std::fs::write(&wd, b"").unwrap();
    let text = config(
        broker.port,
        ingest,
        &data,
        "disk_low_mb = 10000000",
        &format!("hardware_watchdog = \"{}\"", wd.display()),
    );
    let mut agent = Agent::from_text(tmp.path(), data.clone(), broker.port, ingest, &text, vec![]);
    sub.wait_until(Duration::from_secs(15), "disk_low", has_alert("disk_low"));
    let a = alerts(&sub, "disk_low").next().unwrap();
    assert_eq!(a["detail"]["bound_mb"], 10_000_000);
    assert!(a["detail"]["free_mb"].as_u64().unwrap() < 10_000_000);
    sub.wait_until(
        Duration::from_secs(15),
        "telemetry: fault LED, both sensors",
        |m| {
            m.iter().any(|m| {
                let t = m.json();
                m.leaf() == "telemetry"
                    && t["board"]["led"] == "fault"
                    && t["system"]["disk_low"] == true
                    && t["board"]["temperatures_c"]["ambient"]
                        .as_f64()
                        .is_some_and(|c| (c - 28.5).abs() < 0.01)
            })
        },
    );
    assert_eq!(alerts(&sub, "board_fault").count(), 0, "every part opened");
    let deadline = Instant::now() + scaled(Duration::from_secs(10));
    while std::fs::read(&wd).unwrap().len() < 2 {
        assert!(
            Instant::now() < deadline,
            "the hardware watchdog was never pinged"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(agent.term().code(), Some(0));
    let pings = std::fs::read(&wd).unwrap();
    assert_eq!(
        pings.last(),
        Some(&b'V'),
        "a clean stop disarms the hardware watchdog"
    );
    assert!(pings[..pings.len() - 1].iter().all(|b| *b == 0));
}
