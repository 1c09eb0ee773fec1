//! Health-probe cost on 64 simulated cameras, side by side with Prometheus
//! blackbox_exporter doing the same 64 HTTP snapshot probes at the same rate, in the same run.
//! Then the agent alone with all four probe kinds (TCP, snapshot, RTSP, ONVIF).
//! Run: `cargo bench --bench health` (`-- quick` for a 20 s smoke run). Needs Mosquitto and
//! the Debian package prometheus-blackbox-exporter.

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use camgw::sim::{SimCamera, SimControl};
use common::*;

const CAMERAS: usize = 64;
const INTERVAL_S: u64 = 10;

fn http_get(addr: &str, path: &str) -> String {
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    );
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

fn camera_toml(i: usize, c: &SimCamera, all: bool) -> String {
    let mut t = format!(
        "\n[[camera]]\nid = \"bench{i:02}\"\nvendor = \"onvif\"\nhost = \"127.0.0.1\"\nusername = \"admin\"\npassword = \"pw\"\nhttp_base = \"{}\"\nsnapshot_url = \"{}\"\n",
        c.http_base(),
        c.snapshot_url()
    );
    if all {
        t.push_str(&format!(
            "rtsp_url = \"{}\"\nonvif_url = \"{}\"\n",
            c.rtsp_url(),
            c.onvif_url()
        ));
    }
    t
}

fn main() {
    use_firmware_binary();
    let quick = std::env::args().any(|a| a == "quick");
    let run_for = Duration::from_secs(if quick { 20 } else { 120 });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let cams: Vec<SimCamera> = (0..CAMERAS)
        .map(|_| {
            let mut ctl = SimControl::new("pw");
            ctl.open_snapshots = true; // blackbox_exporter has no Digest auth
            rt.block_on(SimCamera::start(ctl)).unwrap()
        })
        .collect();
    let broker = Broker::start();
    let health =
        format!("--\n[health]\ninterval_s = {INTERVAL_S}\ntimeout_ms = 3000\nmax_concurrent = 8\n");

    // 1. Snapshot probes: camgw and blackbox_exporter side by side.
    let snap_cfg: String = cams
        .iter()
        .enumerate()
        .map(|(i, c)| camera_toml(i, c, false))
        .collect();
    let agent = Agent::start(broker.port, &format!("{health}{snap_cfg}"));
    let bb_port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let bb_cfg = dir.path().join("blackbox.yml");
    std::fs::write(&bb_cfg, "modules:\n  http_2xx:\n    prober: http\n    timeout: 3s\n    http:\n      valid_status_codes: [200]\n").unwrap();
    let bb = Command::new("/usr/bin/prometheus-blackbox-exporter")
        .arg(format!("--config.file={}", bb_cfg.display()))
        .arg(format!("--web.listen-address=127.0.0.1:{bb_port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let Ok(mut bb) = bb else {
        eprintln!("*** prometheus-blackbox-exporter is not installed (apt-get install prometheus-blackbox-exporter): comparison skipped ***");
        return;
    };
    assert!(wait_port(bb_port, Duration::from_secs(10)));
    let urls: Vec<String> = cams.iter().map(|c| c.snapshot_url()).collect();
    let a0 = usage(agent.pid());
    let b0 = usage(bb.id());
    let start = Instant::now();
    let bb_addr = format!("127.0.0.1:{bb_port}");
    let mut probes = 0;
    let mut ok = 0;
    // The scraper spreads the 64 probes evenly over each interval, like the agent's jitter.
    'outer: loop {
        for (i, u) in urls.iter().enumerate() {
            let due = Duration::from_millis(
                probes / CAMERAS as u64 * INTERVAL_S * 1000
                    + i as u64 * INTERVAL_S * 1000 / CAMERAS as u64,
            );
            if due >= run_for {
                break 'outer;
            }
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                std::thread::sleep(wait);
            }
            let body = http_get(&bb_addr, &format!("/probe?module=http_2xx&target={u}"));
            probes += 1;
            if body.contains("probe_success 1") {
                ok += 1;
            }
        }
    }
    std::thread::sleep(run_for.saturating_sub(start.elapsed()));
    let a1 = usage(agent.pid());
    let b1 = usage(bb.id());
    let rss_parts = |pid: u32| {
        let st = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        st.lines()
            .filter(|l| l.starts_with("RssAnon") || l.starts_with("RssFile"))
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "  (now: camgw {}; blackbox_exporter {})",
        rss_parts(agent.pid()),
        rss_parts(bb.id())
    );
    let _ = bb.kill();
    drop(agent);
    let secs = start.elapsed().as_secs_f64();
    println!("64 cameras, snapshot probe every {INTERVAL_S} s, {secs:.0} s (one run):");
    println!("  camgw (TCP + snapshot + JPEG decode, black/frozen checks): CPU {:.2} s, peak RSS {:.1} MiB", a1.0 - a0.0, a1.1 as f64 / 1024.0);
    println!("  blackbox_exporter (HTTP probe, {ok}/{probes} ok):           CPU {:.2} s, peak RSS {:.1} MiB", b1.0 - b0.0, b1.1 as f64 / 1024.0);
    println!(
        "  ratio camgw / blackbox_exporter: CPU {:.2}, RSS {:.2} (target <= 0.5 each)",
        (a1.0 - a0.0) / (b1.0 - b0.0).max(0.01),
        a1.1 as f64 / b1.1 as f64
    );

    // 2. All four probe kinds.
    let all_cfg: String = cams
        .iter()
        .enumerate()
        .map(|(i, c)| camera_toml(i, c, true))
        .collect();
    let agent = Agent::start(broker.port, &format!("{health}{all_cfg}"));
    let a0 = usage(agent.pid());
    let start = Instant::now();
    std::thread::sleep(run_for);
    let a1 = usage(agent.pid());
    println!(
        "64 cameras, all four probes (TCP, snapshot, RTSP, ONVIF) every {INTERVAL_S} s, {:.0} s: camgw CPU {:.2} s ({:.2} % of one core), peak RSS {:.1} MiB",
        start.elapsed().as_secs_f64(),
        a1.0 - a0.0,
        (a1.0 - a0.0) / start.elapsed().as_secs_f64() * 100.0,
        a1.1 as f64 / 1024.0
    );
}
