//! The agent under attack, one attack class at a time: CPU, peak RSS and ingest latency while
//! four hostile cameras (src/sim/hostile.rs) attack, beside a baseline with none, plus a
//! hostile broker client and a flood of half-sent ingest requests. Firmware build, one good
//! simulated camera probed every second in every run.
//! Run: `cargo bench --bench hostile` (`-- quick` for 6 s per class). Needs Mosquitto.

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use camgw::sim::hostile::{Attack, HostileCamera};
use camgw::sim::{SimCamera, SimControl};
use common::*;

fn percentile(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() - 1) as f64 * p).round() as usize]
}

enum Class {
    None,
    Camera(Attack),
    BrokerFlood,
    HalfSent,
}

fn main() {
    use_firmware_binary();
    let quick = std::env::args().any(|a| a == "quick");
    let run_for = Duration::from_secs(if quick { 6 } else { 20 });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let good = rt
        .block_on(SimCamera::start(SimControl::new("pw")))
        .unwrap();
    let good_block = format!(
        "\n[[camera]]\nid = \"good\"\nvendor = \"onvif\"\nhost = \"127.0.0.1\"\nusername = \"admin\"\npassword = \"pw\"\nhttp_base = \"{}\"\nsnapshot_url = \"{}\"\nrtsp_url = \"{}\"\nonvif_url = \"{}\"\n",
        good.http_base(),
        good.snapshot_url(),
        good.rtsp_url(),
        good.onvif_url()
    );
    let key = {
        use base64::Engine as _;
        let k = ed25519_dalek::SigningKey::from_bytes(&[1u8; 32]);
        base64::engine::general_purpose::STANDARD.encode(k.verifying_key().to_bytes())
    };
    let classes = [
        ("none (baseline)", Class::None),
        (
            "boundary without newline",
            Class::Camera(Attack::BoundaryNoNewline),
        ),
        ("junk event stream", Class::Camera(Attack::JunkStream)),
        ("JPEG bomb 65000x65000", Class::Camera(Attack::JpegBomb)),
        ("1 MiB nested XML", Class::Camera(Attack::DeepXml)),
        (
            "chunk size ffffffffffffffff",
            Class::Camera(Attack::ChunkOverflow),
        ),
        ("Basic auth only", Class::Camera(Attack::BasicOnly)),
        ("slow drip", Class::Camera(Attack::SlowDrip)),
        ("reset mid-body", Class::Camera(Attack::ResetMidBody)),
        (
            "wrong content type",
            Class::Camera(Attack::WrongContentType),
        ),
        (
            "endless RTSP interleave",
            Class::Camera(Attack::RtspInterleave),
        ),
        ("endless headers", Class::Camera(Attack::EndlessHeaders)),
        (
            "broker: 2 MiB retained + 200 x 253 KB on T/cmd",
            Class::BrokerFlood,
        ),
        ("ingest: half-sent requests, 200/s", Class::HalfSent),
    ];
    println!(
        "| attack ({} s each, 4 hostile cameras where a camera attacks) | CPU (% of one core) | peak RSS | ingest POST median / p99 / max |",
        run_for.as_secs()
    );
    println!("| --- | --- | --- | --- |");
    for (name, class) in classes {
        let broker = Broker::start();
        let hostiles: Vec<HostileCamera> = match class {
            Class::Camera(a) => (0..4).map(|_| HostileCamera::start(a).unwrap()).collect(),
            _ => Vec::new(),
        };
        let mut cams = good_block.clone();
        cams.push_str(
            "\n[[camera]]\nid = \"cam01\"\nvendor = \"generic\"\nhost = \"127.0.0.1\"\nprobe = false\n",
        );
        for (i, h) in hostiles.iter().enumerate() {
            cams.push_str(&h.camera_block(&format!("h{i}"), "pw"));
        }
        let tmp = tempfile::tempdir().unwrap();
        let ingest: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let text = format!(
            "[gateway]\nid = \"{GW}\"\nward = \"{WARD}\"\ndata_dir = \"{}\"\n[mqtt]\nurl = \"mqtt://127.0.0.1:{}\"\nreconnect_min_ms = 50\nreconnect_max_s = 1\n[ingest]\nlisten = \"{ingest}\"\n[health]\ninterval_s = 1\ntimeout_ms = 800\n[security]\ncommand_keys = [\"{key}\"]\n{cams}",
            tmp.path().join("data").display(),
            broker.port
        );
        let agent = Agent::from_text(
            tmp.path(),
            tmp.path().join("data"),
            broker.port,
            ingest,
            &text,
            vec![],
        );
        std::thread::sleep(Duration::from_millis(500));
        if let Class::BrokerFlood = class {
            let port = broker.port;
            std::thread::spawn(move || {
                let mut o = rumqttc::MqttOptions::new("attacker", "127.0.0.1", port);
                o.set_max_packet_size(8 << 20, 8 << 20);
                let (c, mut conn) = rumqttc::Client::new(o, 1000);
                let t = camgw::topics::topic(
                    &camgw::topics::root("camgw", WARD, GW),
                    camgw::topics::Leaf::Cmd,
                );
                let _ = c.publish(&t, rumqttc::QoS::AtLeastOnce, true, vec![b'{'; 2 << 20]);
                for i in 0..200 {
                    let p = format!(r#"{{"v":1,"cmd":"{i}{}","sig":""}}"#, "x".repeat(253_000));
                    let _ = c.publish(&t, rumqttc::QoS::AtLeastOnce, false, p);
                }
                for _ in conn.iter().take(2000) {}
            });
        }
        let mut held = Vec::new();
        let u0 = usage(agent.pid());
        let start = Instant::now();
        let mut lat = Vec::new();
        while start.elapsed() < run_for {
            let t = Instant::now();
            let (code, _) = agent.motion("cam01", "pulse");
            lat.push(t.elapsed());
            assert!(code == 202 || code == 503, "{code}");
            if let Class::HalfSent = class {
                for _ in 0..20 {
                    if let Ok(mut s) = std::net::TcpStream::connect(ingest) {
                        let _ = s.write_all(b"POST /v1/events HTTP/1.1\r\nContent-Le");
                        held.push(s);
                    }
                }
                if held.len() > 600 {
                    held.drain(..held.len() - 600);
                }
            }
            std::thread::sleep(Duration::from_millis(100).saturating_sub(t.elapsed()));
        }
        let u1 = usage(agent.pid());
        let secs = start.elapsed().as_secs_f64();
        let (p50, p99) = (percentile(&mut lat, 0.5), percentile(&mut lat, 0.99));
        let max = *lat.iter().max().unwrap();
        println!(
            "| {name} | {:.1} % | {:.1} MiB | {:.1} / {:.1} / {:.1} ms |",
            (u1.0 - u0.0) / secs * 100.0,
            u1.1 as f64 / 1024.0,
            p50.as_secs_f64() * 1000.0,
            p99.as_secs_f64() * 1000.0,
            max.as_secs_f64() * 1000.0
        );
        drop(held);
        drop(agent);
    }
}
