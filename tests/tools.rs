//! Technician and station tools: `camgw buffer inspect`, `camgw station watch --once --json`,
//! `camgw doctor`, `camgw discover`.

mod common;

use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_camgw");

fn run(args: &[&str]) -> (i32, String, String) {
    let out = camgw_command(BIN).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn buffer_inspect_reports_known_contents_while_the_agent_runs_and_finds_corruption() {
    // No broker: everything the agent accepts stays pending on disk.
    let dead = free_port();
    let mut agent = Agent::start(dead, "--\n[buffer]\nsync = \"always\"\n");
    let seqs: Vec<u64> = (0..25).map(|_| agent.accepted("cam01")).collect();
    let data = agent.data_dir.display().to_string();

    let (code, out, err) = run(&["buffer", "inspect", "--data-dir", &data, "--json"]);
    assert_eq!(code, 0, "{out}{err}");
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["events"]["pending"], 25, "{r}");
    assert_eq!(r["events"]["stored"], 25, "{r}");
    assert_eq!(r["events"]["oldest_pending_seq"], seqs[0], "{r}");
    assert_eq!(r["events"]["newest_seq"], seqs[24], "{r}");
    assert_eq!(r["events"]["corrupt"], 0);
    assert!(r["events"]["bytes"].as_u64().unwrap() > 25 * 20);
    assert!(r["events"]["oldest_pending_ts"]
        .as_str()
        .unwrap()
        .ends_with('Z'));
    assert!(r["next_seq"].as_u64().unwrap() > seqs[24]);
    let (code, text, _) = run(&["buffer", "inspect", "--data-dir", &data]);
    assert_eq!(code, 0);
    assert!(text.contains("events  25 pending of 25 stored"), "{text}");
    assert!(
        text.contains(&format!("oldest pending: seq {}", seqs[0])),
        "{text}"
    );

    // Stop the agent, flip bytes in the middle of the events segment.
    assert_eq!(agent.term().code(), Some(0));
    let seg = std::fs::read_dir(agent.data_dir.join("buffer/events"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 4] {
        *b ^= 0x5a;
    }
    std::fs::write(&seg, &bytes).unwrap();
    std::fs::write(agent.data_dir.join("buffer/notes.txt"), "x").unwrap();
    let (code, out, _) = run(&["buffer", "inspect", "--data-dir", &data, "--json"]);
    assert_eq!(code, 1, "corruption makes the exit code 1: {out}");
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(r["events"]["corrupt"].as_u64().unwrap() >= 1, "{r}");
    assert!(r["events"]["stored"].as_u64().unwrap() < 25, "{r}");
    assert!(
        r["events"]["stored"].as_u64().unwrap() >= 20,
        "the rest is still read: {r}"
    );
    assert_eq!(r["stray_files"], serde_json::json!(["notes.txt"]));
    let (_, text, _) = run(&["buffer", "inspect", "--data-dir", &data]);
    assert!(text.contains("CORRUPT"), "{text}");

    let (code, _, err) = run(&["buffer", "inspect", "--data-dir", "/nonexistent"]);
    assert_eq!(code, 2);
    assert!(err.contains("holds no buffer"), "{err}");
}

/// Publishes retained messages (QoS 1) and returns once the broker acknowledged them all.
fn publish_retained(port: u16, msgs: &[(&str, &str)]) {
    let mut o = rumqttc::MqttOptions::new(format!("script-{}", free_port()), "127.0.0.1", port);
    o.set_keep_alive(std::time::Duration::from_secs(5));
    let (client, mut conn) = rumqttc::Client::new(o, 64);
    for (t, p) in msgs {
        client
            .publish(*t, rumqttc::QoS::AtLeastOnce, true, p.as_bytes().to_vec())
            .unwrap();
    }
    let mut acked = 0;
    for ev in conn.iter() {
        if let rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)) =
            ev.expect("scripted publisher lost the broker")
        {
            acked += 1;
            if acked == msgs.len() {
                break;
            }
        }
    }
    let _ = client.disconnect();
}

fn watch_once(port: u16, ward: &str) -> serde_json::Value {
    let url = format!("mqtt://127.0.0.1:{port}");
    let (code, out, err) = run(&[
        "station", "watch", "--mqtt", &url, "--ward", ward, "--once", "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap()
}

fn gateway<'a>(snap: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    snap["gateways"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["id"] == id)
        .unwrap_or_else(|| panic!("no gateway {id} in {snap}"))
}

#[test]
fn station_watch_once_reflects_a_scripted_sequence() {
    let broker = Broker::start();
    let p = broker.port;
    let health = |cam: &str, state: &str, problems: &str, since: &str| {
        format!(
            r#"{{"camera":"{cam}","state":"{state}","problems":[{problems}],"since":"{since}","ts":"{since}"}}"#
        )
    };
    // Step 1: gw1 online with one camera up and one down; gw2 went offline (its Last Will);
    // a gateway of another ward must not show.
    let h1 = health("cam01", "up", "", "2026-11-29T10:00:00.000Z");
    let h2 = health(
        "cam02",
        "down",
        r#""unreachable""#,
        "2026-11-29T10:05:00.000Z",
    );
    publish_retained(
        p,
        &[
            (
                "camgw/q1/gw1/status",
                r#"{"online":true,"version":"0.1.0","boot_id":"b1","ts":"2026-11-29T10:00:00.000Z"}"#,
            ),
            ("camgw/q1/gw1/camera/cam01/health", &h1),
            ("camgw/q1/gw1/camera/cam02/health", &h2),
            ("camgw/q1/gw2/status", r#"{"online":false,"boot_id":"b2"}"#),
            (
                "camgw/q9/gw9/status",
                r#"{"online":true,"ts":"2026-11-29T10:00:00.000Z"}"#,
            ),
        ],
    );
    let s = watch_once(p, "q1");
    assert_eq!(s["gateways"].as_array().unwrap().len(), 2, "{s}");
    let g1 = gateway(&s, "gw1");
    assert_eq!(g1["online"], true);
    assert_eq!(g1["cameras"]["cam01"]["state"], "up");
    assert_eq!(g1["cameras"]["cam02"]["state"], "down");
    assert_eq!(
        g1["cameras"]["cam02"]["problems"],
        serde_json::json!(["unreachable"])
    );
    assert_eq!(g1["cameras"]["cam02"]["since"], "2026-11-29T10:05:00.000Z");
    assert_eq!(gateway(&s, "gw2")["online"], false);

    // Step 2: cam02 answers again but its picture is frozen (degraded), gw2 is back, and
    // cam01 was removed from gw1's config (its retained health cleared).
    let h2 = health(
        "cam02",
        "degraded",
        r#""frozen""#,
        "2026-11-29T10:20:00.000Z",
    );
    publish_retained(
        p,
        &[
            ("camgw/q1/gw1/camera/cam01/health", ""),
            ("camgw/q1/gw1/camera/cam02/health", &h2),
            (
                "camgw/q1/gw2/status",
                r#"{"online":true,"version":"0.1.0","boot_id":"b3","ts":"2026-11-29T10:21:00.000Z"}"#,
            ),
        ],
    );
    let s = watch_once(p, "q1");
    let g1 = gateway(&s, "gw1");
    assert!(g1["cameras"].get("cam01").is_none(), "{g1}");
    assert_eq!(g1["cameras"]["cam02"]["state"], "degraded");
    assert_eq!(
        g1["cameras"]["cam02"]["problems"],
        serde_json::json!(["frozen"])
    );
    let g2 = gateway(&s, "gw2");
    assert_eq!(g2["online"], true);
    assert_eq!(g2["last_seen"], "2026-11-29T10:21:00.000Z");

    // Every ward when --ward is left out; plain text too.
    let url = format!("mqtt://127.0.0.1:{p}");
    let (code, out, _) = run(&["station", "watch", "--mqtt", &url, "--once"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("q9/gw9  ONLINE") && out.contains("q1/gw2  ONLINE"),
        "{out}"
    );
    // A dead broker is an error, not a hang.
    let (code, _, err) = run(&[
        "station",
        "watch",
        "--mqtt",
        &format!("mqtt://127.0.0.1:{}", free_port()),
        "--once",
        "--wait-s",
        "2",
    ]);
    assert_eq!(code, 1);
    assert!(
        err.contains("MQTT connection") || err.contains("no answer"),
        "{err}"
    );
}
