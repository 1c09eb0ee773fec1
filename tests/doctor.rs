//! `camgw doctor` against a healthy simulated setup (every check ✓) and broken ones: a wrong
//! camera password, a dead broker, a broker certificate from another CA, a pin on a GPIO chip
//! that does not exist. Each is named, with what to do, and the exit code is 1.

mod common;

use std::path::Path;
use std::sync::Arc;

use camgw::clock::FixedClock;
use camgw::doctor::{self, Lang};
use camgw::sim::{SimCamera, SimControl};
use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_camgw");

fn config(data: &Path, mqtt: &str, board: &str, cam: &SimCamera, password: &str) -> String {
    format!(
        r#"[gateway]
id = "gw-doc"
ward = "w-doc"
data_dir = "{}"
board = "{board}"

[mqtt]
{mqtt}

[health]
timeout_ms = 3000

[[camera]]
id = "cam01"
vendor = "hikvision"
host = "127.0.0.1"
username = "admin"
password = "{password}"
http_base = "{}"
snapshot_url = "{}"
rtsp_url = "{}"
onvif_url = "{}"
events = ["hikvision", "onvif"]
"#,
        data.display(),
        cam.http_base(),
        cam.snapshot_url(),
        cam.rtsp_url(),
        cam.onvif_url()
    )
}

#[test]
fn a_healthy_gateway_passes_every_check() {
    let broker = Broker::start();
    let rt = rt();
    let cam = sim_camera(&rt, SimControl::new("pw"));
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let sim = data.join("sim-board");
    std::fs::create_dir_all(&sim).unwrap();
    std::fs::write(sim.join("enclosure.temp"), "38.5").unwrap();
    std::fs::write(sim.join("ambient.temp"), "31").unwrap();
    let path = dir.path().join("camgw.toml");
    let mqtt = format!("url = \"mqtt://127.0.0.1:{}\"", broker.port);
    std::fs::write(&path, config(&data, &mqtt, "sim", &cam, "pw")).unwrap();
    // This machine's kernel clock is not NTP-synchronised, so the clock is injected (synced)
    // and doctor runs in-process; the CLI path is exercised by the broken cases below.
    let clock = Arc::new(FixedClock::new(now_ms(), true));
    let report = rt.block_on(doctor::run(&path, Lang::En, clock.clone()));
    let text = report.text();
    assert!(report.ok, "{text}");
    for id in [
        "config",
        "data_dir",
        "software",
        "clock",
        "board",
        "board.tamper",
        "board.sensor.enclosure",
        "board.sensor.ambient",
        "mqtt.dns",
        "mqtt.tcp",
        "mqtt.auth",
        "mqtt.roundtrip",
        "camera.cam01.reachable",
        "camera.cam01.credentials",
        "camera.cam01.snapshot",
        "camera.cam01.rtsp",
        "camera.cam01.onvif",
        "camera.cam01.events.hikvision",
        "camera.cam01.events.onvif",
    ] {
        assert!(
            report.checks.iter().any(|c| c.id == id && c.ok),
            "{id} missing:\n{text}"
        );
    }
    assert!(text.contains("sensor enclosure (lm75): 38.5 °C"), "{text}");
    assert!(
        text.contains("snapshot decodes: 640×480") || text.contains("snapshot decodes:"),
        "{text}"
    );
    assert!(
        !text.contains("pw\"") && !text.contains("\"pw"),
        "no password in the output"
    );
    assert_eq!(text.matches('✓').count(), report.checks.len());
    // The same in Vietnamese.
    let vi = rt.block_on(doctor::run(&path, Lang::Vi, clock)).text();
    assert!(vi.contains("đồng hồ hệ thống đã đồng bộ"), "{vi}");
    assert!(vi.contains("kết nối được tại"), "{vi}");
    // Doctor leaves no buffer behind in the agent's data_dir.
    assert!(!data.join("buffer").exists());
}

fn doctor_cli(path: &Path, lang: &str) -> (i32, serde_json::Value, String) {
    let out = camgw_command(BIN)
        .args(["doctor", "--config"])
        .arg(path)
        .args(["--json", "--lang", lang])
        .output()
        .unwrap();
    let text = camgw_command(BIN)
        .args(["doctor", "--config"])
        .arg(path)
        .args(["--lang", lang])
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        serde_json::from_slice(&out.stdout).unwrap(),
        String::from_utf8_lossy(&text.stdout).into_owned(),
    )
}

fn check<'a>(r: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    r["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no check {id} in {r:#}"))
}

#[test]
fn a_wrong_password_a_dead_broker_and_a_missing_pin_are_each_named() {
    let rt = rt();
    let cam = sim_camera(&rt, SimControl::new("pw"));
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let board = dir.path().join("box.toml");
    std::fs::write(
        &board,
        "name = \"box\"\ncompatible = [\"acme,box\"]\n[pins]\ntamper = { chip = \"/dev/gpiochip-missing\", line = 27 }\n",
    )
    .unwrap();
    let path = dir.path().join("camgw.toml");
    let mqtt = format!("url = \"mqtt://127.0.0.1:{}\"", free_port());
    std::fs::write(
        &path,
        config(
            &data,
            &mqtt,
            &board.display().to_string(),
            &cam,
            "wrong-password",
        ),
    )
    .unwrap();
    let (code, r, text) = doctor_cli(&path, "en");
    assert_eq!(code, 1, "{text}");
    assert_eq!(r["ok"], false);
    let c = check(&r, "camera.cam01.credentials");
    assert_eq!(c["ok"], false, "{c}");
    assert!(
        c["text"].as_str().unwrap().contains("credentials refused"),
        "{c}"
    );
    assert!(c["fix"].as_str().unwrap().contains("password"), "{c}");
    let c = check(&r, "mqtt.tcp");
    assert_eq!(c["ok"], false, "{c}");
    assert!(
        c["text"]
            .as_str()
            .unwrap()
            .contains("cannot connect to the broker"),
        "{c}"
    );
    let pin = r["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "board" && c["ok"] == false)
        .unwrap_or_else(|| panic!("no failed board check: {r:#}"));
    assert!(
        pin["text"]
            .as_str()
            .unwrap()
            .contains("pin tamper (line 27 on /dev/gpiochip-missing)"),
        "{pin}"
    );
    assert!(
        pin["text"].as_str().unwrap().contains("does not exist"),
        "{pin}"
    );
    assert!(check(&r, "camera.cam01.reachable")["ok"] == true);
    assert!(text.contains("✗ ") && text.contains("    → "), "{text}");
    assert!(
        !text.contains("wrong-password"),
        "the password never shows: {text}"
    );
    // Vietnamese fixes for the technicians.
    let (code, _, vi) = doctor_cli(&path, "vi");
    assert_eq!(code, 1);
    assert!(vi.contains("không kết nối được broker"), "{vi}");
    assert!(vi.contains("mật khẩu trong cấu hình không đúng"), "{vi}");
}

#[test]
fn a_broker_certificate_from_another_ca_is_named() {
    if !Broker::is_mosquitto() {
        eprintln!("*** SKIPPED: TLS test needs Mosquitto ***");
        return;
    }
    let rt = rt();
    let cam = sim_camera(&rt, SimControl::new("pw"));
    let dir = tempfile::tempdir().unwrap();
    let make_ca = |cn: &str| {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        let cert = p.self_signed(&key).unwrap();
        (cert.pem(), rcgen::Issuer::new(p, key))
    };
    let (ward_ca, issuer) = make_ca("ward CA");
    let (other_ca, _) = make_ca("some other CA");
    let skey = rcgen::KeyPair::generate().unwrap();
    let server = rcgen::CertificateParams::new(vec!["127.0.0.1".into()])
        .unwrap()
        .signed_by(&skey, &issuer)
        .unwrap();
    let w = |n: &str, t: &str| {
        let p = dir.path().join(n);
        std::fs::write(&p, t).unwrap();
        p.display().to_string()
    };
    let tls_port = free_port();
    let _broker = Broker::start_with(&format!(
        "listener {tls_port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\n",
        w("ward-ca.pem", &ward_ca),
        w("server.pem", &server.pem()),
        w("server.key", &skey.serialize_pem())
    ));
    assert!(wait_port(tls_port, std::time::Duration::from_secs(10)));
    let mqtt = format!(
        "url = \"mqtts://127.0.0.1:{tls_port}\"\nca_file = \"{}\"",
        w("wrong-ca.pem", &other_ca)
    );
    let path = dir.path().join("camgw.toml");
    std::fs::write(
        &path,
        config(&dir.path().join("data"), &mqtt, "none", &cam, "pw"),
    )
    .unwrap();
    let (code, r, _) = doctor_cli(&path, "en");
    assert_eq!(code, 1);
    assert_eq!(check(&r, "mqtt.tcp")["ok"], true);
    let c = check(&r, "mqtt.tls");
    assert_eq!(c["ok"], false, "{c}");
    assert!(
        c["text"]
            .as_str()
            .unwrap()
            .contains("signed by a CA that is not in mqtt.ca_file"),
        "{c}"
    );
    assert!(c["fix"].as_str().unwrap().contains("mqtt.ca_file"), "{c}");

    // With the right CA the handshake passes and the session works.
    let mqtt = format!(
        "url = \"mqtts://127.0.0.1:{tls_port}\"\nca_file = \"{}\"",
        w("ward-ca2.pem", &ward_ca)
    );
    std::fs::write(
        &path,
        config(&dir.path().join("data"), &mqtt, "none", &cam, "pw"),
    )
    .unwrap();
    let (_, r, _) = doctor_cli(&path, "en");
    assert_eq!(check(&r, "mqtt.tls")["ok"], true, "{r:#}");
    assert_eq!(check(&r, "mqtt.roundtrip")["ok"], true, "{r:#}");
}
