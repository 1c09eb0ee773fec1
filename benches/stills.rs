//! Event-still benchmarks (issue 15), one run each, medians and percentiles:
//! - `cpu`: decode + scale + re-encode of a 1920x1080 still to 640 wide (`proto::jpeg::scale`,
//!   DCT-scaled decode), beside the plain way (full-size decode, then the same filter and
//!   encoder), and the bytes per still at the defaults. Runs alone under qemu-aarch64
//!   (`cargo bench --bench stills --target aarch64-unknown-linux-gnu -- cpu`).
//! - `latency`: motion start to still at the station, cameras answering in 200 ms.
//! - `link`: event latency on a 256 kbit/s link with and without stills flowing.
//! - `rss`: the agent's peak RSS with 60 cameras all sending motion at once.
//!
//! Run: `cargo bench --bench stills` (all parts) or name parts: `-- cpu latency`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use camgw::sim::{SimCamera, SimControl};
use common::*;

const T: &str = "camgw/w-test/gw-test";

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// The plain way: decode the whole picture, then the same box filter and encoder.
fn plain_scale(jpeg: &[u8], max_w: u16, q: u8) -> Vec<u8> {
    let mut d = jpeg_decoder::Decoder::new(jpeg);
    let px = d.decode().unwrap();
    let i = d.info().unwrap();
    let (w, h) = (i.width as usize, i.height as usize);
    let tw = max_w as usize;
    let th = h * tw / w;
    let mut out = Vec::with_capacity(tw * th * 3);
    for ty in 0..th {
        let (y0, y1) = (ty * h / th, ((ty + 1) * h / th).max(ty * h / th + 1));
        for tx in 0..tw {
            let (x0, x1) = (tx * w / tw, ((tx + 1) * w / tw).max(tx * w / tw + 1));
            let mut s = [0u32; 3];
            for y in y0..y1 {
                for x in x0..x1 {
                    for c in 0..3 {
                        s[c] += px[(y * w + x) * 3 + c] as u32;
                    }
                }
            }
            let n = ((y1 - y0) * (x1 - x0)) as u32;
            out.extend(s.iter().map(|v| (v / n) as u8));
        }
    }
    let mut j = Vec::new();
    jpeg_encoder::Encoder::new(&mut j, q)
        .encode(&out, tw as u16, th as u16, jpeg_encoder::ColorType::Rgb)
        .unwrap();
    j
}

fn cpu() {
    let runs = 15;
    println!("== cpu: one still, 1920x1080 -> 640 wide, quality 70 (median of {runs}, this process's CPU)");
    for (w, h) in [(1920u16, 1080u16), (1280, 720)] {
        let src = camgw::sim::jpeg::still(w, h);
        let time = |f: &dyn Fn() -> usize| {
            let mut v: Vec<f64> = (0..runs)
                .map(|_| {
                    let t = cpu_time();
                    assert!(f() > 0);
                    (cpu_time() - t) * 1000.0
                })
                .collect();
            pct(&mut v, 0.5)
        };
        let ours = time(&|| camgw::proto::jpeg::scale(&src, 640, 70).unwrap().jpeg.len());
        let plain = time(&|| plain_scale(&src, 640, 70).len());
        let out = camgw::proto::jpeg::scale(&src, 640, 70).unwrap();
        println!(
            "  {w}x{h} source {} bytes: DCT-scaled {ours:.1} ms, full decode {plain:.1} ms ({:.2}x); sent {}x{} {} bytes",
            src.len(),
            ours / plain,
            out.width,
            out.height,
            out.jpeg.len()
        );
    }
}

/// This process's CPU seconds (user + system).
fn cpu_time() -> f64 {
    let mut r = std::mem::MaybeUninit::<libc::rusage>::uninit();
    // SAFETY: getrusage writes the struct it is given.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, r.as_mut_ptr()) };
    let r = unsafe { r.assume_init() };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(r.ru_utime) + tv(r.ru_stime)
}

struct Rig {
    _rt: tokio::runtime::Runtime,
    _broker: Broker,
    _cams: Vec<SimCamera>,
    agent: Agent,
    sub: Subscriber,
    _tmp: tempfile::TempDir,
    _throttle: Option<ThrottleProxy>,
}

fn rig(n: usize, delay_ms: u64, snapshot: bool, throttle: Option<u64>) -> Rig {
    let rt = rt();
    let broker = Broker::start();
    let th = throttle.map(|r| ThrottleProxy::start(broker.port, r));
    let port = th.as_ref().map_or(broker.port, |t| t.port);
    let tmp = tempfile::tempdir().unwrap();
    let ingest: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut c = TestConfig::new(port, ingest, &tmp.path().join("data"));
    let mut cams = Vec::new();
    for i in 0..n {
        let mut ctl = SimControl::new("bench-pw");
        ctl.still_size = (1920, 1080);
        ctl.still_delay_ms = delay_ms;
        let sim = sim_camera(&rt, ctl);
        let vendor = ["hikvision", "dahua"][i % 2];
        c = c.camera(
            CameraToml::new(&format!("cam{i:02}"), vendor)
                .login("bench-pw")
                .set("http_base", sim.http_base())
                .set("probe", false)
                .set("snapshot", snapshot),
        );
        cams.push(sim);
    }
    let sub = Subscriber::new(broker.port, &format!("{T}/#"));
    let agent = Agent::from_text(
        tmp.path(),
        tmp.path().join("data"),
        port,
        ingest,
        &c.text(),
        vec![],
    );
    let mut r = Rig {
        _rt: rt,
        _broker: broker,
        _cams: cams,
        agent,
        sub,
        _tmp: tmp,
        _throttle: th,
    };
    r.sub.wait_until(Duration::from_secs(30), "online", |m| {
        m.iter()
            .any(|x| x.topic.ends_with("/status") && x.json()["online"] == true)
    });
    r
}

fn start(a: &Agent, cam: &str) -> String {
    let (code, body) = a.motion(cam, "start");
    assert_eq!(code, 202, "{body}");
    body["id"].as_str().unwrap().to_string()
}

/// Arrival time of the message whose topic ends with `/snapshot/{id}`, or of the event `id`.
fn arrival(sub: &Subscriber, id: &str, still: bool) -> Option<Instant> {
    sub.seen.iter().zip(&sub.arrived).find_map(|(m, t)| {
        let hit = if still {
            m.topic.ends_with(&format!("/snapshot/{id}"))
        } else {
            m.topic.ends_with("/event") && m.json()["id"] == id
        };
        hit.then_some(*t)
    })
}

fn latency() {
    let n = 40;
    println!("== latency: motion start (ingest 202) to still at the station, cameras answer in 200 ms, 1920x1080 -> 640, loopback, {n} starts over 8 cameras");
    let mut r = rig(8, 200, true, None);
    let mut sent = Vec::new();
    for i in 0..n {
        let id = start(&r.agent, &format!("cam{:02}", i % 8));
        sent.push((id, Instant::now()));
        r.sub.drain_for(Duration::from_millis(250)); // the offered pace
    }
    r.sub
        .wait_until(Duration::from_secs(60), "every still", |m| {
            sent.iter().all(|(id, _)| {
                m.iter()
                    .any(|x| x.topic.ends_with(&format!("/snapshot/{id}")))
            })
        });
    let mut v: Vec<f64> = sent
        .iter()
        .map(|(id, t)| {
            arrival(&r.sub, id, true)
                .unwrap()
                .duration_since(*t)
                .as_secs_f64()
                * 1000.0
        })
        .collect();
    let sizes: Vec<usize> = r
        .sub
        .seen
        .iter()
        .filter(|m| m.topic.contains("/snapshot/"))
        .map(|m| m.payload.len())
        .collect();
    println!(
        "  p50 {:.0} ms, p95 {:.0} ms, max {:.0} ms; bytes per still median {}",
        pct(&mut v, 0.5),
        pct(&mut v, 0.95),
        pct(&mut v, 1.0),
        {
            let mut s = sizes.clone();
            s.sort();
            s[s.len() / 2]
        }
    );
}

fn link_run(snapshot: bool) -> (f64, f64, usize) {
    let mut r = rig(4, 0, snapshot, Some(32_000));
    let mut sent = Vec::new();
    for i in 0..60 {
        let id = start(&r.agent, &format!("cam{:02}", i % 4));
        sent.push((id, Instant::now()));
        r.sub.drain_for(Duration::from_millis(750)); // one motion start every 750 ms
    }
    r.sub
        .wait_until(Duration::from_secs(60), "every event", |m| {
            sent.iter().all(|(id, _)| {
                m.iter()
                    .any(|x| x.topic.ends_with("/event") && x.json()["id"] == id.as_str())
            })
        });
    let mut v: Vec<f64> = sent
        .iter()
        .map(|(id, t)| {
            arrival(&r.sub, id, false)
                .unwrap()
                .duration_since(*t)
                .as_secs_f64()
                * 1000.0
        })
        .collect();
    let stills = r
        .sub
        .seen
        .iter()
        .filter(|m| m.topic.contains("/snapshot/"))
        .count();
    (pct(&mut v, 0.5), pct(&mut v, 0.95), stills)
}

fn link() {
    println!("== link: event latency (ingest 202 to the station) through a 256 kbit/s link, 4 cameras, one motion start every 750 ms for 45 s");
    let (b50, b95, _) = link_run(false);
    let (w50, w95, stills) = link_run(true);
    println!("  without stills: p50 {b50:.0} ms, p95 {b95:.0} ms");
    println!("  with stills ({stills} delivered in the window): p50 {w50:.0} ms, p95 {w95:.0} ms; added p95 {:.0} ms", w95 - b95);
}

fn rss() {
    println!("== rss: 60 cameras (1920x1080 stills), all sending a motion start at once");
    let mut r = rig(60, 0, true, None);
    let before = usage(r.agent.pid()).1;
    let ids: Vec<String> = (0..60)
        .map(|i| start(&r.agent, &format!("cam{i:02}")))
        .collect();
    let t0 = Instant::now();
    r.sub
        .wait_until(Duration::from_secs(120), "60 stills", |m| {
            ids.iter().all(|id| {
                m.iter()
                    .any(|x| x.topic.ends_with(&format!("/snapshot/{id}")))
            })
        });
    let took = t0.elapsed();
    let (cpu, hwm) = usage(r.agent.pid());
    println!(
        "  all 60 stills at the station in {:.1} s; agent peak RSS (VmHWM) {:.1} MiB (before the burst {:.1} MiB), CPU {cpu:.2} s in all",
        took.as_secs_f64(),
        hwm as f64 / 1024.0,
        before as f64 / 1024.0
    );
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let want = |p: &str| args.is_empty() || args.iter().any(|a| a == p);
    if want("cpu") {
        cpu();
    }
    if want("latency") || want("link") || want("rss") {
        use_firmware_binary();
    }
    if want("latency") {
        latency();
    }
    if want("link") {
        link();
    }
    if want("rss") {
        rss();
    }
}
