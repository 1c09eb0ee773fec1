//! Signed remote commands on a real Mosquitto: every refusal changes nothing, set_config
//! applies as a whole or rolls back, and the station tool's exit codes.

mod common;

use std::time::{Duration, Instant};

use camgw::remote::envelope;
use camgw::sim::SimControl;
use common::*;
use ed25519_dalek::SigningKey;

const T: &str = "camgw/w-test/gw-test";

#[test]
fn keygen_writes_a_private_key_0600_and_a_one_line_public_key() {
    let st = station();
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(st.dir.path().join("ward.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let pubtext = std::fs::read_to_string(st.dir.path().join("ward.pub")).unwrap();
    assert_eq!(pubtext.lines().count(), 1);
    use base64::Engine as _;
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(pubtext.trim())
            .unwrap()
            .len(),
        32
    );
}

#[test]
fn every_refusal_changes_nothing_and_says_why_including_a_replay_after_restart() {
    let st = station();
    let broker = Broker::start();
    let mut agent = Agent::start(broker.port, &format!("--\n{}", security(&st)));
    let mut sub = Subscriber::new(broker.port, &format!("{T}/#"));
    let original = config_of(&st, broker.port);
    let evil = serde_json::json!({"op": "set_config", "config": "[gateway]\nid = \"x\"\n"});

    let other_key = SigningKey::from_bytes(&[7u8; 32]);
    let r = raw(
        broker.port,
        &mut sub,
        envelope::sign(&other_key, &signed("r1", evil.clone())),
        Some("r1"),
    );
    assert_eq!(r["ok"], false);
    assert!(r["error"].as_str().unwrap().contains("signature"), "{r}");

    let mut other_gw = signed("r2", evil.clone());
    other_gw.gateway = "gw-other".into();
    let r = raw(
        broker.port,
        &mut sub,
        envelope::sign(&st.key, &other_gw),
        Some("r2"),
    );
    assert!(r["error"].as_str().unwrap().contains("addressed to"), "{r}");

    let mut expired =
        envelope::new_signed("r3", GW, WARD, now_ms() - 120_000, 60_000, evil.clone());
    expired.issued = camgw::clock::rfc3339_ms(now_ms() - 120_000);
    let r = raw(
        broker.port,
        &mut sub,
        envelope::sign(&st.key, &expired),
        Some("r3"),
    );
    assert!(r["error"].as_str().unwrap().contains("expired"), "{r}");

    let future = envelope::new_signed("r4", GW, WARD, now_ms() + 3_600_000, 60_000, evil.clone());
    let r = raw(
        broker.port,
        &mut sub,
        envelope::sign(&st.key, &future),
        Some("r4"),
    );
    assert!(r["error"].as_str().unwrap().contains("future"), "{r}");

    let r = raw(
        broker.port,
        &mut sub,
        b"{\"v\":1,\"cmd\":\"not base64!\",\"sig\":\"\"}".to_vec(),
        None,
    );
    assert!(r["error"].as_str().unwrap().contains("malformed"), "{r}");
    let r = raw(broker.port, &mut sub, vec![b'x'; 300_000], None);
    assert!(r["error"].as_str().unwrap().contains("exceeds"), "{r}");

    let r = raw(
        broker.port,
        &mut sub,
        envelope::sign(
            &st.key,
            &signed("r5", serde_json::json!({"op": "format_disk"})),
        ),
        Some("r5"),
    );
    assert!(r["error"].as_str().unwrap().contains("unknown op"), "{r}");

    // A valid command, then the very same bytes again: a replay.
    let once = envelope::sign(
        &st.key,
        &signed("r6", serde_json::json!({"op": "buffer_stats"})),
    );
    assert_eq!(
        raw(broker.port, &mut sub, once.clone(), Some("r6"))["ok"],
        true
    );
    let r = raw(broker.port, &mut sub, once.clone(), Some("r6"));
    assert!(r["error"].as_str().unwrap().contains("replay"), "{r}");
    // ... and after a restart of the agent.
    assert_eq!(agent.term().code(), Some(0));
    agent.spawn();
    sub.wait_until(Duration::from_secs(10), "agent back", |m| {
        m.iter()
            .filter(|m| m.leaf() == "status" && m.json()["online"] == true)
            .count()
            >= 2
    });
    let r = raw(broker.port, &mut sub, once, Some("r6"));
    assert!(
        r["error"].as_str().unwrap().contains("replay"),
        "after restart: {r}"
    );

    assert_eq!(config_of(&st, broker.port), original, "nothing changed");
    assert!(std::fs::read_to_string(&agent.config_path)
        .unwrap()
        .contains("[[camera]]"));
}

#[test]
fn get_config_never_shows_a_password_and_neither_do_the_logs() {
    let st = station();
    let broker = Broker::start();
    let agent = Agent::start(broker.port, &format!("--\n{}", security(&st)));
    let config = config_of(&st, broker.port);
    assert!(
        config.contains("cam01") && config.contains("***"),
        "{config}"
    );
    assert!(!config.contains("pa55-SECRET-word"), "{config}");
    assert!(!agent.log().contains("pa55-SECRET-word"));
}

/// Remote diagnostics: the doctor's checklist run on the box, and the end of the agent's own
/// log, bounded and without secrets.
#[test]
fn doctor_and_log_tail_answer_remotely_without_secrets() {
    let st = station();
    let broker = Broker::start();
    let agent = Agent::start(broker.port, &format!("--\n{}", security(&st)));
    let (code, r) = cmd(&st, broker.port, r#"{"op":"log_tail","lines":5}"#, 10);
    assert_eq!(code, 0, "{r}");
    let lines = r["lines"].as_array().unwrap();
    assert!(!lines.is_empty() && lines.len() <= 5, "{r}");
    let (code, r) = cmd(&st, broker.port, r#"{"op":"log_tail","lines":1000}"#, 10);
    assert_eq!(code, 0, "{r}");
    let all = r["lines"].to_string();
    assert!(all.contains("command accepted"), "{all}");
    assert!(all.contains("connected to the broker"), "{all}");
    assert!(!all.contains("pa55-SECRET-word"));
    assert!(!all.contains('\u{1b}'), "colours are stripped");
    for bad in [
        r#"{"op":"log_tail","lines":0}"#,
        r#"{"op":"log_tail","lines":"all"}"#,
    ] {
        let (code, r) = cmd(&st, broker.port, bad, 10);
        assert_eq!(code, 1, "{r}");
        assert!(r["error"].as_str().unwrap().contains("1 to 1000"), "{r}");
    }
    let (code, r) = cmd(&st, broker.port, r#"{"op":"doctor"}"#, 60);
    assert_eq!(r["op"], "doctor", "{r}");
    assert_eq!(code, 0, "{r}");
    let checks = r["doctor"]["checks"].as_array().expect("a checklist");
    assert!(checks.len() >= 3, "{r}");
    assert!(r.to_string().contains("broker"), "{r}");
    assert!(!r.to_string().contains("pa55-SECRET-word"));
    drop(agent);
}

#[test]
fn set_config_adds_and_removes_cameras_live_and_clears_a_removed_cameras_health() {
    let st = station();
    let broker = Broker::start();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let sim = sim_camera(&rt, SimControl::new("pw"));
    let agent = Agent::start(
        broker.port,
        &format!(
            "--\n{}\n[health]\ninterval_s = 1\ntimeout_ms = 700\n",
            security(&st)
        ),
    );
    let mut sub = Subscriber::new(broker.port, &format!("{T}/#"));
    let base = std::fs::read_to_string(&agent.config_path).unwrap();
    let with_cam = format!(
        "{base}\n[[camera]]\nid = \"cam07\"\nvendor = \"onvif\"\nhost = \"127.0.0.1\"\nusername = \"admin\"\npassword = \"pw\"\nhttp_base = \"{}\"\nsnapshot_url = \"{}\"\n",
        sim.http_base(),
        sim.snapshot_url()
    );
    let (code, r) = cmd(
        &st,
        broker.port,
        &serde_json::json!({"op": "set_config", "config": with_cam}).to_string(),
        15,
    );
    assert_eq!(code, 0, "{r}");
    assert_eq!(r["applied"]["cameras_added"], serde_json::json!(["cam07"]));
    sub.wait_until(
        Duration::from_secs(15),
        "cam07 health and config_applied",
        |m| {
            m.iter()
                .any(|m| m.topic.ends_with("cam07/health") && m.json()["state"] == "up")
                && m.iter()
                    .any(|m| m.leaf() == "alert" && m.json()["kind"] == "config_applied")
        },
    );
    assert_eq!(
        std::fs::read_to_string(&agent.config_path).unwrap(),
        with_cam,
        "written to the config file"
    );
    let prev = format!("{}.prev", agent.config_path.display());
    assert_eq!(
        std::fs::read_to_string(prev).unwrap(),
        base,
        "the last good config is kept"
    );
    // Ingest still works after the live restart of the parts, and knows the new camera.
    assert_eq!(agent.motion("cam07", "start").0, 202);

    let (code, r) = cmd(
        &st,
        broker.port,
        &serde_json::json!({"op": "set_config", "config": base}).to_string(),
        15,
    );
    assert_eq!(code, 0, "{r}");
    assert_eq!(
        r["applied"]["cameras_removed"],
        serde_json::json!(["cam07"])
    );
    sub.wait_until(Duration::from_secs(10), "retained health cleared", |m| {
        m.iter()
            .any(|m| m.topic.ends_with("cam07/health") && m.payload.is_empty())
    });
    assert_eq!(agent.motion("cam07", "start").0, 404);
}

#[test]
fn an_invalid_config_is_rejected_with_every_problem_and_nothing_changes() {
    let st = station();
    let broker = Broker::start();
    let agent = Agent::start(broker.port, &format!("--\n{}", security(&st)));
    let mut sub = Subscriber::new(broker.port, &format!("{T}/alert"));
    let before = std::fs::read_to_string(&agent.config_path).unwrap();
    let bad = before.replace("keep_alive_s = 5", "keep_alive_s = 1\nbogus = 3");
    let (code, r) = cmd(
        &st,
        broker.port,
        &serde_json::json!({"op": "set_config", "config": bad}).to_string(),
        10,
    );
    assert_eq!(code, 1, "{r}");
    let e = r["error"].as_str().unwrap();
    assert!(
        e.contains("mqtt.keep_alive_s") && e.contains("mqtt.bogus"),
        "{e}"
    );
    sub.wait_until(Duration::from_secs(10), "config_rejected", |m| {
        m.iter().any(|m| m.json()["kind"] == "config_rejected")
    });
    let a = sub
        .on("alert")
        .into_iter()
        .find(|a| a["kind"] == "config_rejected")
        .unwrap();
    assert_eq!(a["detail"]["problems"].as_array().unwrap().len(), 2, "{a}");
    assert_eq!(std::fs::read_to_string(&agent.config_path).unwrap(), before);
}

#[test]
fn a_config_pointing_at_a_dead_broker_is_rolled_back_within_the_timeout() {
    let st = station();
    let broker = Broker::start();
    let agent = Agent::start(broker.port, &format!("--\n{}", security(&st)));
    let mut sub = Subscriber::new(broker.port, &format!("{T}/alert"));
    let before = std::fs::read_to_string(&agent.config_path).unwrap();
    let dead = free_port();
    let bad = before.replace(
        &format!("mqtt://127.0.0.1:{}", broker.port),
        &format!("mqtt://127.0.0.1:{dead}"),
    );
    assert_ne!(bad, before);
    let t = Instant::now();
    // The result comes back over the restored connection.
    let (code, r) = cmd(
        &st,
        broker.port,
        &serde_json::json!({"op": "set_config", "config": bad}).to_string(),
        20,
    );
    assert_eq!(code, 1, "{r}");
    assert!(r["error"].as_str().unwrap().contains("rolled back"), "{r}");
    assert!(
        t.elapsed() < scaled(Duration::from_secs(15)),
        "rollback_timeout_s = 3"
    );
    sub.wait_until(Duration::from_secs(10), "config_rolled_back", |m| {
        m.iter().any(|m| m.json()["kind"] == "config_rolled_back")
    });
    assert_eq!(
        std::fs::read_to_string(&agent.config_path).unwrap(),
        before,
        "the file is the last good config again"
    );
    assert!(
        agent.accepted("cam01") > 0,
        "ingest works with the restored config"
    );
}

#[test]
fn sighup_reloads_the_file_with_the_same_validation() {
    let st = station();
    let broker = Broker::start();
    let mut sub = Subscriber::new(broker.port, &format!("{T}/+"));
    let agent = Agent::start(broker.port, &format!("--\n{}", security(&st)));
    sub.wait_until(Duration::from_secs(10), "the agent's birth", |m| {
        m.iter().any(|m| m.leaf() == "status")
    });
    let before = std::fs::read_to_string(&agent.config_path).unwrap();
    std::fs::write(&agent.config_path, format!("{before}\n[[camera]]\nid = \"cam08\"\nvendor = \"generic\"\nhost = \"127.0.0.1\"\nprobe = false\n")).unwrap();
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(agent.pid() as i32, libc::SIGHUP) };
    sub.wait_until(Duration::from_secs(10), "config_applied", |m| {
        m.iter().any(|m| m.json()["kind"] == "config_applied")
    });
    assert_eq!(agent.motion("cam08", "pulse").0, 202);
    std::fs::write(&agent.config_path, "[gateway]\nid = 5\n").unwrap();
    unsafe { libc::kill(agent.pid() as i32, libc::SIGHUP) };
    sub.wait_until(Duration::from_secs(10), "config_rejected", |m| {
        m.iter().any(|m| m.json()["kind"] == "config_rejected")
    });
    assert_eq!(
        agent.motion("cam08", "pulse").0,
        202,
        "the running config is unchanged"
    );
}

#[test]
fn cmd_exits_0_when_ok_1_when_not_and_3_on_timeout() {
    let st = station();
    let broker = Broker::start();
    let _agent = Agent::start(broker.port, &format!("--\n{}", security(&st)));
    assert_eq!(cmd(&st, broker.port, r#"{"op":"buffer_stats"}"#, 10).0, 0);
    assert_eq!(
        cmd(
            &st,
            broker.port,
            r#"{"op":"reboot_camera","camera":"nope"}"#,
            10
        )
        .0,
        1
    );
    let quiet = Broker::start(); // no agent there
    assert_eq!(cmd(&st, quiet.port, r#"{"op":"buffer_stats"}"#, 1).0, 3);
}

#[test]
fn reboot_camera_uses_onvif_system_reboot() {
    let st = station();
    let broker = Broker::start();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let sim = sim_camera(&rt, SimControl::new("pw"));
    let cam = format!(
        "\n[[camera]]\nid = \"cam07\"\nvendor = \"onvif\"\nhost = \"127.0.0.1\"\nusername = \"admin\"\npassword = \"pw\"\nonvif_url = \"{}\"\nprobe = false\n",
        sim.onvif_url()
    );
    let _agent = Agent::start(broker.port, &format!("--\n{}{cam}", security(&st)));
    let (code, r) = cmd(
        &st,
        broker.port,
        r#"{"op":"reboot_camera","camera":"cam07"}"#,
        10,
    );
    assert_eq!(code, 0, "{r}");
    assert_eq!(r["method"], "onvif");
    assert_eq!(sim.control().reboots, 1);
}
