//! The web console in a real browser (issue 17): Playwright's core (npm, tests/browser)
//! driving Debian's headless Chromium against `camgw station serve`, with a real Mosquitto,
//! the agent and simulated cameras behind it. Log in; the grid shows a camera going down
//! without a reload; acknowledge its alert; filter the history and open a still; switch the
//! language; hostile text from the broker stays text; the page asks nothing of any other
//! host; a phone screen. The screenshots land in docs/console/.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::station::*;
use common::*;

const CAM_PW: &str = "console-SECRET-pw";

/// (node, chromium, the tests/browser folder) or why the browser test cannot run here.
fn browser_tools() -> Result<(PathBuf, PathBuf, PathBuf), String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    let node = which("node").ok_or("node is not installed")?;
    let chromium = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .or_else(|| which("chromium"))
        .ok_or("chromium is not installed (apt-get install chromium)")?;
    if !dir.join("node_modules/playwright-core").exists() {
        return Err("playwright-core is not installed (cd tests/browser && npm ci)".into());
    }
    Ok((node, chromium, dir))
}

fn which(prog: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(prog))
        .find(|p| p.exists())
}

#[test]
fn the_console_in_a_real_browser() {
    if emulated_suite() {
        eprintln!("skipped under emulation: the station and its browser run natively");
        return;
    }
    let (node, chromium, dir) = match browser_tools() {
        Ok(t) => t,
        Err(why) if std::env::var_os("CAMGW_REQUIRE_BROWSER").is_none() => {
            eprintln!("*** the_console_in_a_real_browser: skipped: {why} ***");
            return;
        }
        Err(why) => panic!("the browser test is required (CAMGW_REQUIRE_BROWSER): {why}"),
    };
    let rt = rt();
    let broker = Broker::start();
    let tmp = tempfile::tempdir().unwrap();
    let cam1 = sim_camera(&rt, camgw::sim::SimControl::new(CAM_PW));
    let cam2 = sim_camera(&rt, camgw::sim::SimControl::new(CAM_PW));
    let ingest: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let data = tmp.path().join("data");
    let c = TestConfig::new(broker.port, ingest, &data)
        .set("mqtt", "telemetry_interval_s", 1)
        .merge(&health_block(1, 1000, 2, 1))
        .camera(
            CameraToml::new("cam01", "generic")
                .login(CAM_PW)
                .set("snapshot_url", cam1.snapshot_url()),
        )
        .camera(
            CameraToml::new("cam02", "generic")
                .login(CAM_PW)
                .set("snapshot_url", cam2.snapshot_url()),
        );
    let agent = Agent::from_text(tmp.path(), data, broker.port, ingest, &c.text(), Vec::new());
    let db = tmp.path().join("station.db").display().to_string();
    user_add(&db, "officer1", "officer", "mật khẩu 1");
    let station = StationServer::start(broker.port, &db, &[]);

    // History with stills: motion starts on cam01, a few seconds apart (one still request
    // is in flight per camera).
    let mut web = station.web();
    assert_eq!(web.login("officer1", "mật khẩu 1"), 200);
    web.wait_json(
        "/api/cameras",
        Duration::from_secs(20),
        "both cameras",
        |v| v.as_array().unwrap().len() == 2,
    );
    for _ in 0..3 {
        let (code, body) = agent.motion("cam01", "start");
        assert_eq!(code, 202);
        let id = body["id"].as_str().unwrap().to_string();
        web.wait_json(
            "/api/events?camera=cam01",
            Duration::from_secs(20),
            "this start's still",
            |v| {
                v.as_array()
                    .unwrap()
                    .iter()
                    .any(|e| e["id"] == id.as_str() && e["snapshot"].is_string())
            },
        );
    }
    agent.motion("cam02", "pulse");
    // Hostile text, as another "gateway" on the broker would send it.
    let evil = "camgw/w-test/gw-evil";
    publish(
        broker.port,
        &format!("{evil}/camera/<img src=x onerror=window.__xss=1>/health"),
        br#"{"camera":"x","state":"degraded","problems":["<script>window.__xss=2</script>"],"since":"2026-12-02T00:00:00Z","ts":"2026-12-02T00:00:00.000Z"}"#,
        true,
    );
    publish(
        broker.port,
        &format!("{evil}/alert"),
        br#"{"id":"evil-1","seq":1,"ts":"2026-12-02T00:00:00.000Z","clock_synced":true,"kind":"<svg onload=window.__xss=3>","camera":null,"detail":{}}"#,
        false,
    );

    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/console");
    std::fs::create_dir_all(&shots).unwrap();
    let mut child = Command::new(node)
        .arg(dir.join("console.mjs"))
        .current_dir(&dir)
        .env("CONSOLE_URL", station.url())
        .env("CONSOLE_USER", "officer1")
        .env("CONSOLE_PASS", "mật khẩu 1")
        .env("CONSOLE_SHOTS", &shots)
        .env("CHROMIUM", chromium)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node");
    let mut stdin = child.stdin.take().unwrap();
    let out = BufReader::new(child.stdout.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in out.lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    let mut transcript = Vec::new();
    let mut done = false;
    while let Ok(line) = rx.recv_timeout(scaled(Duration::from_secs(120))) {
        eprintln!("browser: {line}");
        transcript.push(line.clone());
        match line.as_str() {
            "STEP take-cam02-down" => {
                cam2.set_down();
                writeln!(stdin, "go").unwrap();
            }
            "STEP acked" => {
                let alerts = web.json("/api/alerts");
                let a = alerts
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|a| a["kind"] == "camera_down")
                    .expect("the alert");
                assert_eq!(a["acked_by"], "officer1", "recorded who: {a}");
                assert!(a["acked_at"].is_string(), "and when: {a}");
                writeln!(stdin, "go").unwrap();
            }
            "DONE" => {
                done = true;
                break;
            }
            l if l.starts_with("FAIL") => break,
            _ => {}
        }
    }
    let status = child.wait().unwrap();
    assert!(
        done && status.success(),
        "the browser checks failed:\n{}\n--- station log ---\n{}",
        transcript.join("\n"),
        station.log()
    );
    for name in [
        "login",
        "cameras",
        "camera-down",
        "alerts",
        "history",
        "gateways",
        "phone",
    ] {
        assert!(shots.join(format!("{name}.png")).exists(), "{name}.png");
    }
    drop(agent);
}
