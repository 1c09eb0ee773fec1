//! Software updates (issue 16): the firmware build updating itself to a second firmware build
//! (`CAMGW_BUILD_VERSION=9.0.0`, its own target dir) over loopback, with the default confirm
//! rules, 5 runs. Reports the medians of command → result (download verified, install
//! begun), command → `update_applied` (confirmed), the bytes on the wire against the release's
//! size, and the agent's memory: VmRSS idle before the command and its VmHWM just before the
//! hand-over (the peak of download and verify; the file is streamed, never held). Beside it,
//! the peer: `curl -o` plus `sha256sum` of the same file from the same server, under
//! `/usr/bin/time` (elapsed, max RSS).
//!
//! Run: `cargo bench --bench update`.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/common/release_server.rs"]
mod release_server;
#[path = "../tests/common/updates.rs"]
mod updates;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use release_server::{Behaviour, ReleaseServer};
use updates::*;

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn firmware_v2() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join("target/firmware-v2");
    let status = std::process::Command::new(env!("CARGO"))
        .args([
            "build",
            "--release",
            "--no-default-features",
            "--target-dir",
        ])
        .arg(&dir)
        .env("CAMGW_BUILD_VERSION", V2)
        .current_dir(root)
        .status()
        .unwrap();
    assert!(status.success());
    dir.join("release/camgw")
}

fn status_kb(pid: u32, key: &str) -> u64 {
    proc_status_kb(pid, key)
}

fn main() {
    use_firmware_binary();
    let v1 = PathBuf::from(agent_bin());
    let v2 = firmware_v2();
    let body = std::fs::read(&v2).unwrap();
    let runs = 5;
    let (mut to_result, mut to_confirmed, mut idle, mut peak) = (vec![], vec![], vec![], vec![]);
    let mut wire = Vec::new();
    for run in 0..runs {
        let mut rig = Rig::new();
        let svc = rig.service(300, "", vec![]);
        rig.wait_online(camgw::release::VERSION, 0, Duration::from_secs(20));
        let m = rig.manifest(&v2, V2, camgw::release::TARGET);
        let server = ReleaseServer::start(body.clone(), Behaviour::default());
        let pid = svc.child.lock().unwrap().as_ref().unwrap().id();
        std::thread::sleep(Duration::from_millis(500));
        let rss0 = status_kb(pid, "VmRSS:");
        // The old process's high-water mark, read until the exec replaces it.
        let sampler = {
            let v1 = v1.clone();
            std::thread::spawn(move || {
                let mut hwm = 0;
                let exe = format!("/proc/{pid}/exe");
                while std::fs::read_link(&exe).is_ok_and(|p| p == v1) {
                    hwm = hwm.max(status_kb(pid, "VmHWM:"));
                    std::thread::sleep(Duration::from_millis(2));
                }
                hwm
            })
        };
        let t0 = Instant::now();
        let r = rig.update(&format!("b{run}"), &server.url(), &m);
        let t_result = t0.elapsed();
        assert_eq!(r["ok"], true, "{r}");
        rig.wait_alert("update_applied", Duration::from_secs(60));
        let t_ok = t0.elapsed();
        to_result.push(t_result.as_secs_f64() * 1000.0);
        to_confirmed.push(t_ok.as_secs_f64() * 1000.0);
        idle.push(rss0 as f64);
        peak.push(sampler.join().unwrap() as f64);
        wire.push(server.sent.load(std::sync::atomic::Ordering::SeqCst));
        println!(
            "run {run}: result {:.0} ms, confirmed {:.0} ms, idle RSS {rss0} KiB, peak {} KiB",
            t_result.as_secs_f64() * 1000.0,
            t_ok.as_secs_f64() * 1000.0,
            peak.last().unwrap()
        );
    }
    // The peer: curl and sha256sum of the same file from the same kind of server.
    let (mut peer_ms, mut peer_kb) = (vec![], vec![]);
    for _ in 0..runs {
        let server = ReleaseServer::start(body.clone(), Behaviour::default());
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("camgw");
        let o = std::process::Command::new("/usr/bin/time")
            .args(["-f", "%e %M", "sh", "-c"])
            .arg(format!(
                "curl -s -o {} {} && sha256sum {} >/dev/null",
                out.display(),
                server.url(),
                out.display()
            ))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&o.stderr);
        let mut it = text.split_whitespace();
        peer_ms.push(it.next().unwrap().parse::<f64>().unwrap() * 1000.0);
        peer_kb.push(it.next().unwrap().parse::<f64>().unwrap());
    }
    let size = body.len();
    println!(
        "\nrelease: {size} bytes ({} firmware build), {runs} runs, medians:",
        camgw::release::TARGET
    );
    println!("| | camgw update | curl + sha256sum |");
    println!("| --- | --- | --- |");
    println!(
        "| command → verified and installed (result) | {:.0} ms | {:.0} ms (download and hash only) |",
        median(&mut to_result),
        median(&mut peer_ms)
    );
    println!(
        "| command → confirmed (`update_applied`) | {:.0} ms | |",
        median(&mut to_confirmed)
    );
    println!(
        "| bytes on the wire | {} ({:.3} × the size) | |",
        wire[wire.len() / 2],
        wire[wire.len() / 2] as f64 / size as f64
    );
    println!(
        "| RSS idle → peak during download and verify | {:.0} → {:.0} KiB | max {:.0} KiB (the larger of the two tools) |",
        median(&mut idle),
        median(&mut peak),
        median(&mut peer_kb)
    );
}
