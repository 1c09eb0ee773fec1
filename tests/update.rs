//! Software updates (issue 16), first part: `camgw release sign` and the manifest checks a
//! gateway applies before it downloads anything.

mod common;
#[path = "common/release_server.rs"]
mod release_server;
#[path = "common/updates.rs"]
mod updates;

use common::*;
use release_server::{Behaviour, ReleaseServer};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use updates::*;

#[test]
fn release_sign_writes_a_manifest_a_gateway_accepts_and_refuses_what_it_should() {
    let tmp = tempfile::tempdir().unwrap();
    let public = keygen(&tmp.path().join("release"));
    let other = keygen(&tmp.path().join("other"));
    let file = tmp.path().join("camgw");
    let body: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&file, &body).unwrap();
    let key = tmp.path().join("release.key");
    let target = camgw::release::TARGET;
    let out = sign(&key, "9.1.0", target, &file);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = tmp.path().join("camgw.manifest.json");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        path.display().to_string()
    );
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    use sha2::Digest as _;
    let sha: [u8; 32] = sha2::Sha256::digest(&body).into();
    assert_eq!(m["sha256"], camgw::release::hex(&sha));
    assert_eq!(m["size"], body.len() as u64);
    assert_eq!(m["version"], "9.1.0");
    assert_eq!(m["target"], target);
    let running = camgw::release::running_version();
    let ok = camgw::release::Manifest::check(&m, &[public], &running, target).unwrap();
    assert_eq!(ok.size, body.len() as u64);
    // Another key, another target, an older version: refused, each with its reason.
    let e = camgw::release::Manifest::check(&m, &[other], &running, target).unwrap_err();
    assert_eq!(e.reason(), "bad_signature");
    let e =
        camgw::release::Manifest::check(&m, &[public], &running, "armv7-unknown-linux-gnueabihf")
            .unwrap_err();
    assert_eq!(e.reason(), "wrong_target");
    let newer = semver::Version::parse("9.1.0").unwrap();
    let e = camgw::release::Manifest::check(&m, &[public], &newer, target).unwrap_err();
    assert_eq!(e.reason(), "not_newer");
    // Bad input to the tool: a clear error, exit 1, no manifest.
    for (version, target, says) in [
        ("v2", "x86_64-unknown-linux-gnu", "not semver"),
        ("2.0.0", "Bad Target", "target triple"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("bin");
        std::fs::write(&f, b"x").unwrap();
        let out = sign(&key, version, target, &f);
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{err}");
        assert!(!dir.path().join("bin.manifest.json").exists());
    }
    let out = sign(&key, "2.0.0", target, &tmp.path().join("absent"));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot open"));
}

fn problems(e: &camgw::config::Invalid) -> String {
    e.problems
        .iter()
        .map(|p| format!("{}: {}", p.path, p.message))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn release_keys_are_checked_and_kept_apart_from_command_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let k = keygen(&tmp.path().join("k"));
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(k);
    let base = "[gateway]\nid = \"g\"\nward = \"w\"\n[mqtt]\nurl = \"mqtt://127.0.0.1:1\"\n";
    let ok = camgw::config::Config::parse(&format!(
        "{base}[security]\nrelease_keys = [\"{b64}\"]\nupdate_confirm_s = 60\n"
    ))
    .unwrap();
    assert_eq!(ok.security.release_keys, vec![k]);
    assert_eq!(ok.security.update_confirm.as_secs(), 60);
    let dflt = camgw::config::Config::parse(base).unwrap();
    assert!(dflt.security.release_keys.is_empty());
    assert_eq!(dflt.security.update_confirm.as_secs(), 300);
    let both = camgw::config::Config::parse(&format!(
        "{base}[security]\ncommand_keys = [\"{b64}\"]\nrelease_keys = [\"{b64}\"]\n"
    ))
    .unwrap_err();
    let both = problems(&both);
    assert!(
        both.contains("security.release_keys[0]") && both.contains("apart"),
        "{both}"
    );
    let short =
        camgw::config::Config::parse(&format!("{base}[security]\nrelease_keys = [\"AAAA\"]\n"))
            .unwrap_err();
    let short = problems(&short);
    assert!(short.contains("32 bytes"), "{short}");
}

#[test]
fn an_update_to_a_second_build_resumes_a_cut_download_is_confirmed_and_loses_no_event() {
    if !exec_works(
        "an_update_to_a_second_build_resumes_a_cut_download_is_confirmed_and_loses_no_event",
    ) {
        return;
    }
    let v2 = second_build();
    let body = std::fs::read(&v2).unwrap();
    let mut rig = Rig::new();
    // systemd's notify socket: the hand-over must look like a reload to it, not a stop.
    let sock_path = rig.tmp.path().join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    let notes: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
    {
        let notes = notes.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 256];
            while let Ok(n) = sock.recv(&mut buf) {
                notes
                    .lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&buf[..n]).to_string());
            }
        });
    }
    let svc = rig.service(
        60,
        "",
        vec![("NOTIFY_SOCKET".into(), sock_path.display().to_string())],
    );
    rig.wait_online(&own(), 0, Duration::from_secs(20));
    let manifest = rig.manifest(&v2, V2, camgw::release::TARGET);
    // The first connection is cut at 40 %: the agent resumes with Range.
    let server = ReleaseServer::start(
        body.clone(),
        Behaviour {
            cut_after: body.len() as u64 * 2 / 5,
            cut_connections: 1,
            ..Default::default()
        },
    );
    let poster = Feeder::start(svc.ingest);
    poster.wait_for(20);
    let mark = rig.sub.seen.len();
    let t0 = Instant::now();
    let r = rig.update("u1", &server.url(), &manifest);
    assert_eq!(r["ok"], true, "{r}\n{}", svc.log());
    assert_eq!(r["version"], V2);
    assert_eq!(r["from"], own());
    assert!(r["resumed"].as_u64().unwrap() >= 1, "{r}");
    let applied = rig.wait_alert("update_applied", Duration::from_secs(60));
    let to_confirmed = t0.elapsed();
    assert_eq!(applied["detail"]["from"], own());
    assert_eq!(applied["detail"]["to"], V2);
    let status = rig.wait_online(V2, mark, Duration::from_secs(10));
    assert_eq!(status["software"]["source"], "over_the_air", "{status}");
    // Once confirmed, the status says so again (retained, for fleet update).
    rig.sub
        .wait_until(Duration::from_secs(10), "a confirmed status", |m| {
            m[mark..].iter().any(|m| {
                let v = m.json();
                m.leaf() == "status" && v["version"] == V2 && v["software"]["trial"] == false
            })
        });
    // The confirmed version takes the next update (refused here only as not newer, not busy).
    let r = rig.update("u2", &server.url(), &manifest);
    assert_eq!(r["ok"], false, "{r}");
    assert!(r["error"].as_str().unwrap().contains("not_newer"), "{r}");
    assert!(server.ranged.load(Ordering::SeqCst) >= 1);
    // Every byte went over the wire once: the cut part was not fetched again.
    let wire = server.sent.load(Ordering::SeqCst);
    assert_eq!(wire, body.len() as u64, "bytes on the wire");
    let before_after = poster.count();
    poster.wait_for(before_after + 20);
    let ids = poster.stop();
    wait_delivered(&mut [&mut rig.sub], &ids, "across the update");
    let st = rig.installed();
    assert_eq!(st.versions.len(), 1);
    assert_eq!(st.versions[0].state, camgw::upgrade::State::Confirmed);
    let seen: Vec<String> = notes
        .lock()
        .unwrap()
        .iter()
        .filter(|m| !m.starts_with("WATCHDOG"))
        .cloned()
        .collect();
    assert_eq!(
        seen,
        ["READY=1", "RELOADING=1", "READY=1"],
        "what systemd was told"
    );
    // A restart (systemd, a power cut) lands on the new version again, with no new report.
    let mark = rig.sub.seen.len();
    svc.kill9();
    rig.wait_online(V2, mark, Duration::from_secs(20));
    rig.sub.drain_for(Duration::from_millis(500));
    assert_eq!(rig.alerts("update_applied").len(), 1, "reported once");
    // --version says what runs and from where.
    let out = camgw_command(BIN)
        .arg("--version")
        .env("CAMGW_CONFIG", rig.tmp.path().join("camgw.toml"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("`camgw run` starts {V2}")), "{text}");
    assert!(text.contains("Confirmed"), "{text}");
    // A config written for the newer version (here: a key neither knows) is checked, and run,
    // by the version installed over the air, not refused by the packaged binary alone.
    let future = rig.tmp.path().join("future.toml");
    let cfg = std::fs::read_to_string(rig.tmp.path().join("camgw.toml")).unwrap();
    std::fs::write(
        &future,
        cfg.replacen("[gateway]\n", "[gateway]\nfuture_key = 1\n", 1),
    )
    .unwrap();
    let out = camgw_command(BIN)
        .arg("check-config")
        .arg(&future)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("checking with {V2}, installed over the air")),
        "{err}"
    );
    assert!(
        err.contains("gateway.future_key: unknown key"),
        "the installed version said why: {err}"
    );
    println!(
        "update: command to confirmed {} ms, {} bytes on the wire for a {} byte release, {} events accepted",
        to_confirmed.as_millis(),
        wire,
        body.len(),
        ids.len()
    );
    // With the service stopped, `camgw run` on that config starts the newer version, which
    // then says what is wrong with the file by its own rules.
    drop(svc);
    let out = camgw_command(BIN)
        .args(["run", "--config"])
        .arg(&future)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("starting the newer version installed over the air"),
        "{err}"
    );
    assert!(err.contains("gateway.future_key: unknown key"), "{err}");
}

/// A release that is not camgw at all (never run: every case here is refused first).
fn junk(dir: &Path, name: &str, len: usize, salt: u8) -> PathBuf {
    let p = dir.join(name);
    let body: Vec<u8> = (0..len).map(|i| (i % 251) as u8 ^ salt).collect();
    std::fs::write(&p, body).unwrap();
    p
}

/// The refusal says why in the result and in `update_failed`, and nothing changed: the same
/// version runs, nothing is installed, no download is left behind.
fn assert_refused(rig: &mut Rig, r: &serde_json::Value, reason: &str, says: &str) {
    assert_eq!(r["ok"], false, "{r}");
    let error = r["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(says) && error.contains(reason),
        "{reason}: {r}"
    );
    rig.sub.wait_until(Duration::from_secs(10), reason, |m| {
        m.iter().any(|m| {
            m.leaf() == "alert"
                && m.json()["kind"] == "update_failed"
                && m.json()["detail"]["reason"] == reason
        })
    });
    assert!(
        rig.installed().versions.is_empty(),
        "{reason}: something was installed"
    );
    let incoming = rig.tmp.path().join("data/update/incoming");
    let left: Vec<_> = std::fs::read_dir(&incoming)
        .map(|d| d.flatten().collect())
        .unwrap_or_default();
    assert!(
        left.is_empty(),
        "{reason}: a download was left behind: {left:?}"
    );
}

#[test]
fn every_refusal_says_why_and_changes_nothing() {
    let mut rig = Rig::new();
    let full = rig.tmp.path().join("disk-full");
    let svc = rig.service(
        30,
        "",
        vec![(
            "CAMGW_FAULTS".into(),
            format!("disk_full={}", full.display()),
        )],
    );
    rig.wait_online(&own(), 0, Duration::from_secs(20));
    let dir = rig.tmp.path().to_path_buf();
    let a = junk(&dir, "a", 600_000, 0);
    let target = camgw::release::TARGET;
    let good = rig.manifest(&a, V2, target);
    let server = ReleaseServer::start(std::fs::read(&a).unwrap(), Behaviour::default());
    let url = server.url();

    // Signed by a key that is not a release key (the station's command key, say).
    let other = dir.join("other");
    keygen(&other);
    let out = sign(&dir.join("other.key"), V2, target, &a);
    assert!(out.status.success());
    let foreign: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("a.manifest.json")).unwrap()).unwrap();
    let r = rig.update("r-key", &url, &foreign);
    assert_refused(&mut rig, &r, "bad_signature", "signature");
    // A manifest changed after signing (a bigger size).
    let mut tampered = good.clone();
    tampered["size"] = (600_001u64).into();
    let r = rig.update("r-tamper", &url, &tampered);
    assert_refused(&mut rig, &r, "bad_signature", "signature");
    let other_target = if target.starts_with("aarch64") {
        "x86_64-unknown-linux-gnu"
    } else {
        "aarch64-unknown-linux-musl"
    };
    let r = rig.update("r-target", &url, &rig.manifest(&a, V2, other_target));
    assert_refused(&mut rig, &r, "wrong_target", other_target);
    let r = rig.update("r-down", &url, &rig.manifest(&a, "0.0.1", target));
    assert_refused(&mut rig, &r, "not_newer", "not newer");
    let r = rig.update("r-same", &url, &rig.manifest(&a, &own(), target));
    assert_refused(&mut rig, &r, "not_newer", "not newer");
    let r = rig.update("r-url", "ftp://127.0.0.1/camgw", &good);
    assert_refused(&mut rig, &r, "bad_url", "url");
    assert_eq!(
        server.requests.load(Ordering::SeqCst),
        0,
        "nothing was downloaded for a refused manifest"
    );

    // 404.
    let r = rig.update(
        "r-404",
        &format!("http://127.0.0.1:{}/nope", server.port),
        &good,
    );
    assert_refused(&mut rig, &r, "download_failed", "HTTP 404");
    // The same size, other bytes: the hash gives it away.
    let b = junk(&dir, "b", 600_000, 7);
    let evil = ReleaseServer::start(std::fs::read(&b).unwrap(), Behaviour::default());
    let r = rig.update("r-sha", &evil.url(), &good);
    assert_refused(&mut rig, &r, "bad_sha256", "sha256");
    // More bytes than the manifest says: cut off at the size, refused.
    let longer = ReleaseServer::start(
        [std::fs::read(&a).unwrap(), vec![0; 1000]].concat(),
        Behaviour::default(),
    );
    let r = rig.update("r-long", &longer.url(), &good);
    assert_refused(&mut rig, &r, "bad_size", "bytes");
    // Cut every time by a server that cannot resume: a bounded number of attempts.
    let cutting = ReleaseServer::start(
        std::fs::read(&a).unwrap(),
        Behaviour {
            cut_after: 200_000,
            cut_connections: 1000,
            ignore_range: true,
            ..Default::default()
        },
    );
    let r = rig.update("r-cut", &cutting.url(), &good);
    assert_refused(&mut rig, &r, "download_failed", "after 6 attempts");
    assert_eq!(cutting.requests.load(Ordering::SeqCst), 6);
    // The disk fills up half-way through the download.
    let filling = ReleaseServer::start(
        std::fs::read(&a).unwrap(),
        Behaviour {
            drip: Some(Duration::from_millis(5)),
            ..Default::default()
        },
    );
    let flag = full.clone();
    filling.on_sent(300_000, move || std::fs::write(&flag, b"full").unwrap());
    let r = rig.update("r-full", &filling.url(), &good);
    // The alert waits for room on the disk as well.
    std::fs::remove_file(&full).unwrap();
    assert_refused(&mut rig, &r, "no_space", "full");
    // The agent runs on as before: the same version, accepting and delivering events.
    let id = try_post(svc.ingest).expect("202 after the refusals");
    rig.sub.wait_until(
        Duration::from_secs(10),
        "an event after the refusals",
        |m| {
            m.iter()
                .any(|m| m.leaf() == "event" && m.json()["id"] == id.as_str())
        },
    );
    assert!(!svc.log().contains("handing over"), "{}", svc.log());
}

#[test]
fn free_space_is_checked_before_anything_is_downloaded() {
    let mut rig = Rig::new();
    // Keeps more free than any disk has: no update fits.
    let _svc = rig.service(30, "", vec![]);
    let text = std::fs::read_to_string(rig.tmp.path().join("camgw.toml")).unwrap();
    assert!(text.contains("[gateway]"));
    drop(_svc);
    std::fs::remove_file(rig.tmp.path().join("agent.log")).unwrap();
    let text = text.replacen("[gateway]\n", "[gateway]\ndisk_low_mb = 9000000\n", 1);
    let svc = Service::start(rig.tmp.path(), &text, rig.ingest, vec![]);
    svc.wait_log("listening for commands", Duration::from_secs(20));
    let a = junk(rig.tmp.path(), "a", 100_000, 0);
    let m = rig.manifest(&a, V2, camgw::release::TARGET);
    let server = ReleaseServer::start(std::fs::read(&a).unwrap(), Behaviour::default());
    let r = rig.update("r-space", &server.url(), &m);
    assert_refused(&mut rig, &r, "no_space", "MB free");
    assert_eq!(server.requests.load(Ordering::SeqCst), 0);
}

/// A release signed and offered as V2 that exits at once: each start by the launcher counts;
/// after two the previous version runs again and says why.
#[test]
fn a_release_that_exits_at_once_is_rolled_back_after_two_starts() {
    if !exec_works("a_release_that_exits_at_once_is_rolled_back_after_two_starts") {
        return;
    }
    let mut rig = Rig::new();
    let svc = rig.service(30, "", vec![]);
    rig.wait_online(&own(), 0, Duration::from_secs(20));
    let script = rig.tmp.path().join("bad-release");
    std::fs::write(
        &script,
        "#!/bin/sh\necho 'bad release: exiting' >&2\nexit 3\n",
    )
    .unwrap();
    let m = rig.manifest(&script, V2, camgw::release::TARGET);
    let server = ReleaseServer::start(std::fs::read(&script).unwrap(), Behaviour::default());
    let feeder = Feeder::start(svc.ingest);
    feeder.wait_for(10);
    let mark = rig.sub.seen.len();
    let r = rig.update("x1", &server.url(), &m);
    assert_eq!(r["ok"], true, "{r}");
    let failed = rig.wait_alert("update_failed", Duration::from_secs(30));
    assert_eq!(failed["detail"]["reason"], "trial_failed", "{failed}");
    assert_eq!(failed["detail"]["version"], V2);
    assert!(
        failed["detail"]["why"]
            .as_str()
            .unwrap()
            .contains("2 starts in a row"),
        "{failed}"
    );
    rig.wait_online(&own(), mark, Duration::from_secs(10));
    assert_eq!(
        svc.log().matches("bad release: exiting").count(),
        2,
        "{}",
        svc.log()
    );
    assert_eq!(
        svc.starts.load(Ordering::SeqCst),
        3,
        "started, and started again after each exit"
    );
    let st = rig.installed();
    assert_eq!(st.versions[0].state, camgw::upgrade::State::Failed);
    assert!(
        !rig.tmp.path().join("data/update/versions/9.0.0").exists(),
        "a reported failure's file is removed"
    );
    let n = feeder.count();
    feeder.wait_for(n + 10);
    let ids = feeder.stop();
    wait_delivered(&mut [&mut rig.sub], &ids, "across the failed update");
    // It is not tried again.
    let mark = rig.sub.seen.len();
    svc.kill9();
    rig.wait_online(&own(), mark, Duration::from_secs(20));
    assert_eq!(svc.log().matches("bad release: exiting").count(), 2);
}

/// The second build on trial while the broker is away: it cannot connect, its own timer ends
/// each trial, and after two the previous version runs and reports it once the broker is back.
#[test]
fn a_release_that_cannot_connect_is_rolled_back_by_its_own_confirm_timer() {
    if !exec_works("a_release_that_cannot_connect_is_rolled_back_by_its_own_confirm_timer") {
        return;
    }
    let v2 = second_build();
    let mut rig = Rig::with(true);
    let svc = rig.service(10, "", vec![]);
    rig.wait_online(&own(), 0, Duration::from_secs(20));
    let m = rig.manifest(&v2, V2, camgw::release::TARGET);
    let body = std::fs::read(&v2).unwrap();
    let server = ReleaseServer::start(body.clone(), Behaviour::default());
    // The broker goes away (gracefully, keeping sessions) once the last byte went out: the
    // new version never reaches it.
    let pid = rig.broker.pid().unwrap() as i32;
    server.on_sent(body.len() as u64, move || unsafe {
        libc::kill(pid, libc::SIGTERM);
    });
    let c = serde_json::json!({"op": "update", "url": server.url(), "manifest": m});
    let payload = camgw::remote::envelope::sign(&rig.st.key, &signed("h1", c));
    publish_cmd(rig.broker.port, payload);
    svc.wait_log(
        "did not connect to a broker within update_confirm_s (10 s)",
        Duration::from_secs(40),
    );
    svc.wait_log("update report", Duration::from_secs(40));
    assert_eq!(
        svc.log().matches("update trial ended").count(),
        2,
        "{}",
        svc.log()
    );
    rig.broker.stop();
    rig.broker.restart();
    let failed = rig.wait_alert("update_failed", Duration::from_secs(30));
    assert_eq!(failed["detail"]["reason"], "trial_failed");
    assert!(
        failed["detail"]["why"]
            .as_str()
            .unwrap()
            .contains("did not connect"),
        "{failed}"
    );
    rig.wait_online(&own(), 0, Duration::from_secs(10));
    assert_eq!(
        rig.installed().versions[0].state,
        camgw::upgrade::State::Failed
    );
}

/// kill -9 (an abort, no clean-up) at each stage of an update: the next start always runs a
/// version that works, and the update either never happened or completes.
#[test]
fn a_kill_at_any_stage_of_an_update_ends_on_a_working_version() {
    if !exec_works("a_kill_at_any_stage_of_an_update_ends_on_a_working_version") {
        return;
    }
    let v2 = second_build();
    let body = std::fs::read(&v2).unwrap();
    for (stage, applied) in [
        ("update_downloaded", false),
        ("update_installed", true),
        ("update_handover", true),
    ] {
        let mut rig = Rig::new();
        let svc = rig.service(
            30,
            "",
            vec![("CAMGW_FAULTS".into(), format!("die={stage}"))],
        );
        rig.wait_online(&own(), 0, Duration::from_secs(20));
        let m = rig.manifest(&v2, V2, camgw::release::TARGET);
        let server = ReleaseServer::start(body.clone(), Behaviour::default());
        let feeder = Feeder::start(svc.ingest);
        feeder.wait_for(10);
        let mark = rig.sub.seen.len();
        let c = serde_json::json!({"op": "update", "url": server.url(), "manifest": m});
        publish_cmd(
            rig.broker.port,
            camgw::remote::envelope::sign(&rig.st.key, &signed(stage, c)),
        );
        svc.wait_log(&format!("dying at {stage}"), Duration::from_secs(30));
        if applied {
            let a = rig.wait_alert("update_applied", Duration::from_secs(30));
            assert_eq!(a["detail"]["to"], V2, "{stage}");
            rig.wait_online(V2, mark, Duration::from_secs(10));
        } else {
            rig.wait_online(&own(), mark, Duration::from_secs(20));
            assert!(rig.installed().versions.is_empty(), "{stage}");
            assert!(
                !rig.tmp.path().join("data/update/incoming").exists(),
                "{stage}: the partial download is removed"
            );
        }
        let n = feeder.count();
        feeder.wait_for(n + 10);
        let ids = feeder.stop();
        wait_delivered(&mut [&mut rig.sub], &ids, stage);
        rig.sub.drain_for(Duration::from_millis(300));
        // A kill before the buffer closed is reported; at the hand-over it had closed cleanly.
        let unclean = rig.alerts("unclean_shutdown").len();
        assert_eq!(
            unclean >= 1,
            stage != "update_handover",
            "{stage}: {unclean} unclean_shutdown"
        );
    }
}

/// A kill -9 of the new version during its trial counts as one failed start; the next start
/// runs it again and it is confirmed.
#[test]
fn a_kill_during_the_trial_counts_one_failed_start_and_the_next_start_confirms() {
    if !exec_works("a_kill_during_the_trial_counts_one_failed_start_and_the_next_start_confirms") {
        return;
    }
    let v2 = second_build();
    let mut rig = Rig::new();
    // A camera that accepts connections and never answers: a health round takes the probe's
    // whole timeout, so the trial lasts that long after connecting.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let extra = format!(
        "{}\n[[camera]]\nid = \"cam03\"\nvendor = \"generic\"\nhost = \"127.0.0.1\"\nsnapshot_url = \"http://127.0.0.1:{silent_port}/snap.jpg\"\nsnapshot = false\n",
        health_block(60, 4000, 1, 1)
    );
    let svc = rig.service(60, &extra, vec![]);
    rig.wait_online(&own(), 0, Duration::from_secs(20));
    let m = rig.manifest(&v2, V2, camgw::release::TARGET);
    let server = ReleaseServer::start(std::fs::read(&v2).unwrap(), Behaviour::default());
    let mark = rig.sub.seen.len();
    let r = rig.update("k1", &server.url(), &m);
    assert_eq!(r["ok"], true, "{r}");
    // Online as V2, not yet confirmed: kill it.
    rig.wait_online(V2, mark, Duration::from_secs(20));
    assert!(rig.alerts("update_applied").is_empty());
    // A technician's `camgw run` beside the service neither counts a start nor touches a thing.
    let out = camgw_command(BIN)
        .args(["run", "--config"])
        .arg(rig.tmp.path().join("camgw.toml"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("another camgw run holds"), "{err}");
    assert_eq!(rig.installed().versions[0].starts, 1, "{err}");
    svc.kill9();
    let a = rig.wait_alert("update_applied", Duration::from_secs(40));
    assert_eq!(a["detail"]["to"], V2);
    let st = rig.installed();
    assert_eq!(st.versions[0].state, camgw::upgrade::State::Confirmed);
    assert_eq!(st.versions[0].failed_starts, 1, "{st:?}");
    assert_eq!(st.versions[0].starts, 2, "{st:?}");
    drop(silent);
}

/// `camgw fleet update` over five gateways in rings of two: the first ring is applied, the
/// second holds a gateway that refuses (it has no release key), so the third is not tried.
#[test]
fn a_fleet_rollout_goes_ring_by_ring_and_stops_at_the_first_failed_ring() {
    if !exec_works("a_fleet_rollout_goes_ring_by_ring_and_stops_at_the_first_failed_ring") {
        return;
    }
    let v2 = second_build();
    let rig = Rig::new();
    let names = ["g1", "g2", "g3", "g4", "g5"];
    let mut services = Vec::new();
    let mut dirs = Vec::new();
    for g in names {
        let dir = tempfile::tempdir().unwrap();
        let ingest = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let release = if g == "g3" {
            String::new()
        } else {
            format!("release_keys = [\"{}\"]\n", rig.release_pub)
        };
        let text = default_cameras(
            TestConfig::new(rig.broker.port, ingest, &dir.path().join("data"))
                .set("gateway", "id", g)
                .merge(&format!(
                    "[security]\ncommand_keys = [\"{}\"]\n{release}update_confirm_s = 60\n",
                    rig.st.public
                )),
        )
        .text();
        services.push(Service::start(dir.path(), &text, ingest, vec![]));
        dirs.push(dir);
    }
    for s in &services {
        s.wait_log("listening for commands", Duration::from_secs(20));
    }
    let m = rig.manifest(&v2, V2, camgw::release::TARGET);
    let mpath = rig.tmp.path().join("release.manifest.json");
    std::fs::write(&mpath, m.to_string()).unwrap();
    let server = ReleaseServer::start(std::fs::read(&v2).unwrap(), Behaviour::default());
    let out = camgw_command(BIN)
        .args(["fleet", "update", "--key"])
        .arg(rig.st.dir.path().join("ward.key"))
        .args([
            "--mqtt",
            &format!("mqtt://127.0.0.1:{}", rig.broker.port),
            "--ward",
            WARD,
            "--manifest",
        ])
        .arg(&mpath)
        .args([
            "--url",
            &server.url(),
            "--gateways",
            &names.join(","),
            "--ring",
            "2",
            "--wait-s",
            "60",
            "--json",
        ])
        .output()
        .unwrap();
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(out.status.code(), Some(1), "{rows}");
    let state = |g: &str| {
        rows.as_array()
            .unwrap()
            .iter()
            .find(|r| r["gateway"] == g)
            .unwrap()
            .clone()
    };
    for g in ["g1", "g2", "g4"] {
        assert_eq!(state(g)["state"], "applied", "{g}: {rows}");
    }
    assert_eq!(state("g3")["state"], "failed", "{rows}");
    assert!(
        state("g3")["detail"]
            .as_str()
            .unwrap()
            .contains("no_release_keys"),
        "{rows}"
    );
    assert_eq!(state("g5")["state"], "not_tried", "{rows}");
    assert_eq!(state("g1")["ring"], 1);
    assert_eq!(state("g4")["ring"], 2);
    // g5 still runs what it ran: nothing was sent to it.
    assert!(
        !services[4].log().contains("command accepted"),
        "{}",
        services[4].log()
    );
    // The table for people: a second run sees g1, g2, g4 current and stops at g3 again.
    let out = camgw_command(BIN)
        .args(["fleet", "update", "--key"])
        .arg(rig.st.dir.path().join("ward.key"))
        .args([
            "--mqtt",
            &format!("mqtt://127.0.0.1:{}", rig.broker.port),
            "--ward",
            WARD,
            "--manifest",
        ])
        .arg(&mpath)
        .args(["--url", &server.url(), "--ring", "2", "--wait-s", "60"])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{table}");
    assert_eq!(table.matches("already current").count(), 3, "{table}");
    assert!(
        table.contains("g3") && table.contains("no_release_keys"),
        "{table}"
    );
}

/// A CA and a `localhost` server certificate from it: (CA PEM, rustls server config).
fn tls_pair() -> (String, std::sync::Arc<rustls::ServerConfig>) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "camgw test release CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    (ca.pem(), std::sync::Arc::new(cfg))
}

/// HTTPS: the release server's certificate is checked against `security.update_ca_file`; one
/// from another CA is refused before a byte of the body is taken, the right one updates.
#[test]
fn an_https_download_checks_the_servers_certificate() {
    if !exec_works("an_https_download_checks_the_servers_certificate") {
        return;
    }
    let v2 = second_build();
    let body = std::fs::read(&v2).unwrap();
    let mut rig = Rig::new();
    let (ca, tls) = tls_pair();
    let ca_path = rig.tmp.path().join("release-ca.pem");
    std::fs::write(&ca_path, ca).unwrap();
    let svc = rig.service(
        60,
        &format!("update_ca_file = \"{}\"\n", ca_path.display()),
        vec![],
    );
    rig.wait_online(&own(), 0, Duration::from_secs(20));
    let m = rig.manifest(&v2, V2, camgw::release::TARGET);
    let (_, other_tls) = tls_pair();
    let impostor = ReleaseServer::start(
        body.clone(),
        Behaviour {
            tls: Some(other_tls),
            ..Default::default()
        },
    );
    let r = rig.update("tls-bad", &impostor.https_url(), &m);
    assert_eq!(r["ok"], false, "{r}");
    assert!(r["error"].as_str().unwrap().contains("TLS"), "{r}");
    assert_eq!(impostor.sent.load(Ordering::SeqCst), 0);
    let server = ReleaseServer::start(
        body.clone(),
        Behaviour {
            tls: Some(tls),
            ..Default::default()
        },
    );
    let mark = rig.sub.seen.len();
    let r = rig.update("tls-ok", &server.https_url(), &m);
    assert_eq!(r["ok"], true, "{r}\n{}", svc.log());
    rig.wait_alert("update_applied", Duration::from_secs(60));
    rig.wait_online(V2, mark, Duration::from_secs(10));
}

/// The download alone, against servers that cannot resume: a cut followed by a whole new
/// answer (200) starts the file over, and what is on disk is exactly the release.
#[test]
fn a_download_cut_by_a_server_without_range_starts_over_and_is_exact() {
    use camgw::update::download::{fetch, Limits};
    use sha2::Digest as _;
    let body: Vec<u8> = (0..700_000u32).map(|i| (i * 7 % 253) as u8).collect();
    let sha: [u8; 32] = sha2::Sha256::digest(&body).into();
    let server = ReleaseServer::start(
        body.clone(),
        Behaviour {
            cut_after: 300_000,
            cut_connections: 2,
            ignore_range: true,
            ..Default::default()
        },
    );
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("x.part");
    let url = camgw::proto::http::Url::parse(&server.url()).unwrap();
    let limits = Limits {
        pause: Duration::from_millis(10),
        ..Limits::for_size(body.len() as u64)
    };
    let got = rt()
        .block_on(fetch(
            &url,
            None,
            &camgw::durable::Os,
            &dest,
            body.len() as u64,
            &sha,
            limits,
        ))
        .unwrap();
    let on_disk = std::fs::read(&dest).unwrap();
    assert_eq!(on_disk.len(), body.len());
    assert!(on_disk == body, "the file is the release, with no hole");
    assert_eq!(got.attempts, 3);
    assert_eq!(got.resumed, 0);
    assert_eq!(got.received, 300_000 * 2 + body.len() as u64);
    assert_eq!(
        server.ranged.load(Ordering::SeqCst),
        2,
        "it asked to resume, and was refused"
    );
}

/// A release whose binary says it is another version than its manifest would escape its trial:
/// it is marked failed at once and the previous version runs.
#[test]
fn a_binary_that_is_not_the_version_its_manifest_says_is_refused_at_its_start() {
    if !exec_works("a_binary_that_is_not_the_version_its_manifest_says_is_refused_at_its_start") {
        return;
    }
    let v2 = second_build();
    let mut rig = Rig::new();
    let svc = rig.service(30, "", vec![]);
    rig.wait_online(&own(), 0, Duration::from_secs(20));
    let m = rig.manifest(&v2, "9.5.0", camgw::release::TARGET);
    let server = ReleaseServer::start(std::fs::read(&v2).unwrap(), Behaviour::default());
    let mark = rig.sub.seen.len();
    let r = rig.update("m1", &server.url(), &m);
    assert_eq!(r["ok"], true, "{r}");
    let failed = rig.wait_alert("update_failed", Duration::from_secs(30));
    assert_eq!(failed["detail"]["version"], "9.5.0", "{failed}");
    assert!(
        failed["detail"]["why"]
            .as_str()
            .unwrap()
            .contains("says it is version 9.0.0, not 9.5.0"),
        "{failed}"
    );
    rig.wait_online(&own(), mark, Duration::from_secs(10));
    assert!(
        !svc.log().contains("update trial ended"),
        "it never ran as a trial"
    );
}

/// SIGTERM while a release downloads: the command's result and `update_failed` say it was
/// interrupted, and the next start runs the same version with nothing left behind.
#[test]
fn a_stop_during_the_download_says_so_and_changes_nothing() {
    let mut rig = Rig::new();
    let svc = rig.service(30, "", vec![]);
    rig.wait_online(&own(), 0, Duration::from_secs(20));
    let a = junk(rig.tmp.path(), "a", 2_000_000, 3);
    let m = rig.manifest(&a, V2, camgw::release::TARGET);
    let server = ReleaseServer::start(
        std::fs::read(&a).unwrap(),
        Behaviour {
            drip: Some(Duration::from_millis(20)),
            ..Default::default()
        },
    );
    let mark = rig.sub.seen.len();
    let c = serde_json::json!({"op": "update", "url": server.url(), "manifest": m});
    publish_cmd(
        rig.broker.port,
        camgw::remote::envelope::sign(&rig.st.key, &signed("s1", c)),
    );
    let deadline = Instant::now() + scaled(Duration::from_secs(20));
    while server.sent.load(Ordering::SeqCst) < 100_000 {
        assert!(
            Instant::now() < deadline,
            "the download never started:\n{}",
            svc.log()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    svc.term();
    rig.sub
        .wait_until(Duration::from_secs(20), "the update's result", |m| {
            m.iter()
                .any(|m| m.leaf() == "result" && m.json()["id"] == "s1")
        });
    let r = rig
        .sub
        .seen
        .iter()
        .find(|m| m.leaf() == "result" && m.json()["id"] == "s1")
        .unwrap()
        .json();
    assert_eq!(r["ok"], false, "{r}");
    assert!(r["error"].as_str().unwrap().contains("interrupted"), "{r}");
    let f = rig.wait_alert("update_failed", Duration::from_secs(20));
    assert_eq!(f["detail"]["reason"], "interrupted", "{f}");
    rig.wait_online(&own(), mark + 1, Duration::from_secs(20));
    assert!(rig.installed().versions.is_empty());
    assert!(!rig.tmp.path().join("data/update/incoming").exists());
    assert!(
        server.sent.load(Ordering::SeqCst) < 2_000_000,
        "stopped before the end"
    );
}
