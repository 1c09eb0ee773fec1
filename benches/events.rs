//! Event benchmarks: parser throughput per vendor format (MB/s), then end to end: 64
//! simulated cameras each sending a motion start/end pair every second, every event checked
//! at a real Mosquitto, with the agent's CPU and peak RSS.
//! Run: `cargo bench --bench events` (`-- quick` for a 20 s smoke run).

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use camgw::proto::{dahua, hikvision, multipart};
use camgw::sim::{SimCamera, SimControl};
use common::*;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn mbps(bytes: usize, runs: usize, f: impl Fn() -> usize) -> f64 {
    let v: Vec<f64> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            let n = f();
            assert!(n > 0);
            bytes as f64 / t.elapsed().as_secs_f64() / 1e6
        })
        .collect();
    median(v)
}

fn hik_stream(n: usize) -> Vec<u8> {
    let xml = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n<EventNotificationAlert version=\"2.0\" xmlns=\"http://www.hikvision.com/ver20/XMLSchema\">\r\n<ipAddress>192.168.1.64</ipAddress>\r\n<portNo>80</portNo>\r\n<protocol>HTTP</protocol>\r\n<macAddress>8c:e7:48:da:94:8f</macAddress>\r\n<channelID>1</channelID>\r\n<dateTime>2026-11-29T15:22:34+07:00</dateTime>\r\n<activePostCount>1</activePostCount>\r\n<eventType>VMD</eventType>\r\n<eventState>active</eventState>\r\n<eventDescription>Motion alarm</eventDescription>\r\n</EventNotificationAlert>\r\n";
    let part = format!("--boundary\r\nContent-Type: application/xml; charset=\"UTF-8\"\r\nContent-Length: {}\r\n\r\n{xml}", xml.len());
    part.repeat(n).into_bytes()
}

fn dahua_stream(n: usize) -> Vec<u8> {
    let body = "Code=VideoMotion;action=Start;index=0;data={\n   \"Id\" : [ 0 ],\n   \"RegionName\" : [ \"Region1\" ]\n}";
    format!(
        "--myboundary\r\nContent-Type: text/plain\r\nContent-Length:{}\r\n\r\n{body}\r\n\r\n",
        body.len()
    )
    .repeat(n)
    .into_bytes()
}

fn main() {
    use_firmware_binary();
    let quick = std::env::args().any(|a| a == "quick");
    let runs = if quick { 3 } else { 9 };
    let n = if quick { 2_000 } else { 20_000 };

    let hik = hik_stream(n);
    let dh = dahua_stream(n);
    println!("parser throughput (median of {runs} runs, 16 KiB reads like the socket):");
    let split = |bytes: &[u8], boundary: &str, f: &dyn Fn(&[u8]) -> bool| {
        let mut p = multipart::Parser::new(boundary);
        let mut ok = 0;
        for chunk in bytes.chunks(16 * 1024) {
            p.push(chunk);
            while let Some(part) = p.pull() {
                ok += f(&part.body) as usize;
            }
        }
        ok
    };
    let r = mbps(hik.len(), runs, || split(&hik, "boundary", &|_| true));
    println!("  multipart framing only, Hikvision alertStream: {r:8.1} MB/s");
    let r = mbps(hik.len(), runs, || {
        split(&hik, "boundary", &|b| hikvision::parse(b).is_ok())
    });
    println!(
        "  Hikvision alertStream (multipart + XML):       {r:8.1} MB/s ({} bytes/part)",
        hik.len() / n
    );
    let r = mbps(dh.len(), runs, || {
        split(&dh, "myboundary", &|b| dahua::parse(b).is_ok())
    });
    println!(
        "  Dahua attach stream (multipart + fields):      {r:8.1} MB/s ({} bytes/part)",
        dh.len() / n
    );

    // ONVIF: one PullMessagesResponse per long-poll, holding a batch of notifications.
    let note = |v: &str| {
        format!(
            r#"<wsnt:NotificationMessage><wsnt:Topic Dialect="http://www.onvif.org/ver10/tev/topicExpression/ConcreteSet">tns1:RuleEngine/CellMotionDetector/Motion</wsnt:Topic><wsnt:Message><tt:Message UtcTime="2026-11-29T08:22:34Z" PropertyOperation="Changed"><tt:Source><tt:SimpleItem Name="VideoSourceConfigurationToken" Value="00000"/><tt:SimpleItem Name="Rule" Value="MyMotionDetectorRule"/></tt:Source><tt:Data><tt:SimpleItem Name="IsMotion" Value="{v}"/></tt:Data></tt:Message></wsnt:Message></wsnt:NotificationMessage>"#
        )
    };
    let batch: String = (0..10)
        .map(|i| note(if i % 2 == 0 { "true" } else { "false" }))
        .collect();
    let pull = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><SOAP-ENV:Envelope xmlns:SOAP-ENV="http://www.w3.org/2003/05/soap-envelope" xmlns:tt="http://www.onvif.org/ver10/schema" xmlns:wsnt="http://docs.oasis-open.org/wsn/b-2" xmlns:tev="http://www.onvif.org/ver10/events/wsdl"><SOAP-ENV:Body><tev:PullMessagesResponse><tev:CurrentTime>2026-11-29T08:22:35Z</tev:CurrentTime><tev:TerminationTime>2026-11-29T08:23:35Z</tev:TerminationTime>{batch}</tev:PullMessagesResponse></SOAP-ENV:Body></SOAP-ENV:Envelope>"#
    );
    let reps = n / 10;
    let r = mbps(pull.len() * reps, runs, || {
        let mut ok = 0;
        for _ in 0..reps {
            ok += camgw::proto::onvif::events::parse_pull(pull.as_bytes())
                .map(|p| p.notifications.len())
                .unwrap_or(0);
        }
        ok
    });
    println!(
        "  ONVIF PullMessagesResponse (SOAP, 10 notifications per response): {r:8.1} MB/s ({} bytes/notification)",
        pull.len() / 10
    );

    // End to end.
    let cams = 64;
    let run_for = Duration::from_secs(if quick { 20 } else { 120 });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let sims: Vec<SimCamera> = (0..cams)
        .map(|_| {
            rt.block_on(SimCamera::start(SimControl::new("pw")))
                .unwrap()
        })
        .collect();
    let broker = Broker::start();
    let mut cfg = String::from("--\n[events]\nmin_spacing_ms = 200\n");
    let vendor_of = |i: usize| ["dahua", "hikvision", "onvif"][i % 3];
    for (i, s) in sims.iter().enumerate() {
        let vendor = vendor_of(i);
        cfg.push_str(&format!(
            "\n[[camera]]\nid = \"ev{i:02}\"\nvendor = \"{vendor}\"\nhost = \"127.0.0.1\"\nusername = \"admin\"\npassword = \"pw\"\nhttp_base = \"{}\"\nonvif_url = \"{}\"\nevents = [\"{vendor}\"]\nprobe = false\n",
            s.http_base(),
            s.onvif_url()
        ));
    }
    let mut sub = Subscriber::new(
        broker.port,
        &camgw::topics::topic(
            &camgw::topics::root("camgw", "+", "+"),
            camgw::topics::Leaf::Event,
        ),
    );
    let agent = Agent::start(broker.port, &cfg);
    let deadline = Instant::now() + Duration::from_secs(30);
    while sims.iter().enumerate().any(|(i, s)| {
        s.event_listeners() == (0, 0) && !(vendor_of(i) == "onvif" && s.control().subscriptions > 0)
    }) {
        assert!(
            Instant::now() < deadline,
            "not every camera's stream attached"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Dahua cameras send Start then Stop; Hikvision cameras send VMD active then (after the
    // silence) the agent ends it. Pairs every second.
    let cpu0 = cpu_s(agent.pid());
    let start = Instant::now();
    let mut sent = 0u64;
    let mut tick = 0u64;
    while start.elapsed() < run_for {
        for (i, s) in sims.iter().enumerate() {
            match vendor_of(i) {
                "dahua" => {
                    s.dahua_event("VideoMotion", "Start");
                    s.dahua_event("VideoMotion", "Stop");
                    sent += 2;
                }
                "onvif" => {
                    let topic = "tns1:RuleEngine/CellMotionDetector/Motion";
                    s.onvif_event(topic, "IsMotion", "true", false);
                    s.onvif_event(topic, "IsMotion", "false", false);
                    sent += 2;
                }
                _ if tick % 12 == 0 => {
                    s.hik_event("VMD", "active");
                    sent += 2; // start, and the end the agent infers after 10 s of silence
                }
                _ => {}
            }
        }
        tick += 1;
        if let Some(wait) =
            (start + Duration::from_secs(tick)).checked_duration_since(Instant::now())
        {
            std::thread::sleep(wait);
        }
    }
    std::thread::sleep(Duration::from_secs(11));
    sub.wait_until(Duration::from_secs(30), "every event", |m| {
        m.len() as u64 >= sent
    });
    let cpu = cpu_s(agent.pid()) - cpu0;
    let (_, hwm) = agent.rss_kb();
    let ids: HashSet<String> = sub
        .seen
        .iter()
        .map(|m| m.json()["id"].as_str().unwrap().to_string())
        .collect();
    println!(
        "64 cameras (22 Dahua and 21 ONVIF start/end pairs every second, 21 Hikvision VMD with inferred ends), {:.0} s: {} events expected, {} delivered ({} distinct), agent CPU {:.2} s ({:.1} % of one core), peak RSS {:.1} MiB",
        start.elapsed().as_secs_f64(),
        sent,
        sub.seen.len(),
        ids.len(),
        cpu,
        cpu / start.elapsed().as_secs_f64() * 100.0,
        hwm as f64 / 1024.0
    );
}

fn cpu_s(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let f: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..]
        .split_whitespace()
        .collect();
    (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / 100.0
}
