//! Ward-station benchmarks (issue 17), one run each, SQLite and PostgreSQL side by side:
//! - `store`: `Store::record` alone, batches of 2,000 events (the recorder's batch), median of
//!   three runs of 50,000.
//! - `ingest`: end to end: 90,000 events queued at a persistent Mosquitto for the station's
//!   session while it is down, then the time for `station serve` to record them all.
//! - `console`: 300 gateways and 3,000 cameras recorded; the console's first load and time to
//!   interactive (every camera card on the page) in headless Chromium, median of 5.
//! - `live`: MQTT publish to the change in that grid, 200 health changes at 10/s, p50/p95.
//! - `month`: one ward (3 gateways, 93 cameras) with a month of history (279,000 events,
//!   27,900 stills, 129,600 telemetry samples, 27,900 health transitions and alerts): the
//!   service's memory serving the console's queries, and how long those queries take.
//!
//! Run: `cargo bench --bench station` (all) or name parts: `-- store ingest`; `month` is
//! SQLite only unless `month-pg` is named too. The browser
//! parts need `cd tests/browser && npm ci` and Debian's chromium; PostgreSQL parts need the
//! server binaries (`apt-get install postgresql`).

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use camgw::station::serve::db::Target;
use camgw::station::serve::rows::{classify, Row};
use camgw::station::serve::store::Store;
use common::station::*;
use common::*;

const DAY: i64 = 86_400_000;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn ts(ms: i64) -> String {
    camgw::clock::rfc3339_ms(ms)
}

fn event(ward: &str, gw: &str, id: &str, seq: i64, ms: i64, cam: &str, state: &str) -> Row {
    classify(
        "camgw",
        &format!("camgw/{ward}/{gw}/event"),
        serde_json::json!({"id": id, "seq": seq, "ts": ts(ms), "clock_synced": true, "kind": "motion",
            "camera": cam, "source": "onvif", "state": state})
        .to_string()
        .as_bytes(),
    )
}

fn health(ward: &str, gw: &str, cam: &str, state: &str, ms: i64) -> Row {
    let problems: Vec<&str> = if state == "up" {
        vec![]
    } else {
        vec!["unreachable"]
    };
    classify(
        "camgw",
        &format!("camgw/{ward}/{gw}/camera/{cam}/health"),
        serde_json::json!({"camera": cam, "state": state, "problems": problems, "since": ts(ms), "ts": ts(ms)})
            .to_string()
            .as_bytes(),
    )
}

fn alert(ward: &str, gw: &str, id: &str, seq: i64, ms: i64, cam: &str, kind: &str) -> Row {
    classify(
        "camgw",
        &format!("camgw/{ward}/{gw}/alert"),
        serde_json::json!({"id": id, "seq": seq, "ts": ts(ms), "clock_synced": true, "kind": kind,
            "camera": cam, "detail": {"problems": ["unreachable"]}})
        .to_string()
        .as_bytes(),
    )
}

fn status(ward: &str, gw: &str, ms: i64) -> Row {
    classify(
        "camgw",
        &format!("camgw/{ward}/{gw}/status"),
        serde_json::json!({"online": true, "version": "0.1.0", "boot_id": "b", "ts": ts(ms)})
            .to_string()
            .as_bytes(),
    )
}

fn telemetry(ward: &str, gw: &str, ms: i64) -> Row {
    // The size of a real sample (docs/reference.md).
    classify("camgw", &format!("camgw/{ward}/{gw}/telemetry"), serde_json::json!({
        "ts": ts(ms), "boot_id": "9b2f6a3e-0000", "version": "0.1.0", "uptime_s": 3600, "clock_synced": true,
        "buffer": {"events": 0, "alerts": 0, "bytes": 16400, "segments": 2, "dropped_total": 0, "corrupt_total": 0},
        "delivered": 5230, "connects": 3,
        "commands": {"received": 4, "refused_oversize": 0, "refused_retained": 0, "dropped_flood": 0},
        "rss_kb": 9800,
        "system": {"cpu_temp_c": 51.2, "load": [0.3, 0.25, 0.2], "mem_total_kb": 3884096, "mem_available_kb": 2884096,
            "disk_free_mb": 24000, "disk_total_mb": 29000, "uptime_s": 86400, "disk_low": false},
        "board": {"board": "rpi4", "enclosure_open": false, "temperatures_c": {"enclosure": 38.5}, "over_temperature": false,
            "relays": {"relay1": true}, "inputs": {"pir1": false}, "led": "connected", "faults": []}})
        .to_string().as_bytes())
}

/// Records rows in batches of 2,000 (as the recorder does); returns rows per second.
fn record_all(store: &mut Store, rows: Vec<Row>, now: i64) -> f64 {
    let t0 = Instant::now();
    let n = rows.len();
    let mut batch = Vec::with_capacity(2000);
    for r in rows {
        batch.push((r, now));
        if batch.len() == 2000 {
            store.record(&batch).unwrap();
            batch.clear();
        }
    }
    if !batch.is_empty() {
        store.record(&batch).unwrap();
    }
    n as f64 / t0.elapsed().as_secs_f64()
}

fn targets(dir: &Path, pg: &Option<Postgres>, name: &str) -> Vec<(&'static str, Target, String)> {
    let mut v = vec![(
        "SQLite",
        Target::Sqlite(dir.join(format!("{name}.db"))),
        dir.join(format!("{name}.db")).display().to_string(),
    )];
    if let Some(pg) = pg {
        // A database per part, so the parts do not see each other's rows.
        let mut c = postgres::Client::connect(&pg.url(), postgres::NoTls).unwrap();
        c.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
        let url = pg.url().replace("/postgres", &format!("/{name}"));
        v.push(("PostgreSQL", Target::Postgres(url.clone()), url));
    }
    v
}

fn store_part(dir: &Path, pg: &Option<Postgres>) {
    println!("\n## store: Store::record, batches of 2,000 events (median of 3 runs of 50,000)");
    for (name, target, _) in targets(dir, pg, "bench_store") {
        let mut store = Store::open(&target).unwrap();
        let mut rates = Vec::new();
        for run in 0..3 {
            let now = camgw::clock::Clock::now_ms(&camgw::clock::SystemClock);
            let rows: Vec<Row> = (0..50_000)
                .map(|i| {
                    let seq = run * 50_000 + i;
                    event(
                        "w1",
                        &format!("gw{}", i % 3),
                        &format!("s-{seq}"),
                        seq,
                        now - i,
                        &format!("cam{:02}", i % 31),
                        "pulse",
                    )
                })
                .collect();
            rates.push(record_all(&mut store, rows, now));
        }
        println!(
            "{name}: {:.0} events/s (runs: {:?})",
            median(rates.clone()),
            rates.iter().map(|r| *r as u64).collect::<Vec<_>>()
        );
    }
}

fn recorded(port: u16) -> u64 {
    Web::new(port)
        .get("/metrics")
        .text()
        .lines()
        .find_map(|l| l.strip_prefix("camgw_station_messages_recorded_total "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn ingest_part(dir: &Path, pg: &Option<Postgres>) {
    const N: usize = 90_000;
    println!("\n## ingest: {N} events queued at Mosquitto for the station's persistent session, then recorded");
    for (name, _, db) in targets(dir, pg, "bench_ingest") {
        let broker = Broker::start_persistent();
        let mut st = StationServer::start(broker.port, &db, &[]);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !Web::new(st.port)
            .get("/metrics")
            .text()
            .contains("camgw_station_mqtt_connected 1")
        {
            assert!(Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(50));
        }
        st.term();
        let pub_rate = publish_events(broker.port, N);
        let t0 = Instant::now();
        st.spawn();
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            let n = recorded(st.port);
            if n >= N as u64 {
                break;
            }
            assert!(Instant::now() < deadline, "only {n} recorded");
            std::thread::sleep(Duration::from_millis(20));
        }
        let secs = t0.elapsed().as_secs_f64();
        let (cpu, hwm) = usage(st.pid());
        println!(
            "{name}: {:.0} messages/s recorded ({N} in {secs:.2} s, station CPU {cpu:.1} s, peak RSS {:.1} MiB); the publisher queued them at {pub_rate:.0}/s",
            N as f64 / secs,
            hwm as f64 / 1024.0
        );
    }
}

/// (node, chromium) for the browser parts, when present.
fn browser() -> Option<(String, String)> {
    let dir =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/node_modules/playwright-core");
    let node = ["/usr/bin/node", "/usr/local/bin/node"]
        .into_iter()
        .find(|p| Path::new(p).exists())?;
    let chromium = "/usr/bin/chromium";
    (dir.exists() && Path::new(chromium).exists()).then(|| (node.to_string(), chromium.to_string()))
}

/// 300 gateways of 10 cameras, online, with health, a telemetry sample and a few alerts.
fn populate_city(store: &mut Store, now: i64) {
    let mut rows = Vec::new();
    for g in 0..300 {
        let gw = format!("gw{g:03}");
        let ward = format!("w{:02}", g / 10);
        rows.push(status(&ward, &gw, now - 3_600_000));
        rows.push(telemetry(&ward, &gw, now - 60_000));
        for c in 0..10 {
            let st = if (g * 10 + c) % 37 == 0 { "down" } else { "up" };
            rows.push(health(&ward, &gw, &format!("cam{c:02}"), st, now - 600_000));
        }
        for a in 0..3 {
            rows.push(alert(
                &ward,
                &gw,
                &format!("a-{g}-{a}"),
                a,
                now - a * 3_600_000,
                "cam00",
                "camera_down",
            ));
        }
    }
    record_all(store, rows, now);
}

fn run_node(script: &str, env: &[(&str, String)]) -> std::process::Child {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    let (node, chromium) = browser().unwrap();
    let mut c = Command::new(node);
    c.arg(dir.join(script))
        .current_dir(&dir)
        .env("CHROMIUM", chromium);
    for (k, v) in env {
        c.env(k, v);
    }
    c.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

fn console_part(dir: &Path, live: bool, load: bool) {
    if browser().is_none() {
        println!("\n## console: skipped (needs chromium and `npm ci` in tests/browser)");
        return;
    }
    let broker = Broker::start();
    let db = dir.join("bench_console.db");
    let now = camgw::clock::Clock::now_ms(&camgw::clock::SystemClock);
    populate_city(&mut Store::open(&Target::Sqlite(db.clone())).unwrap(), now);
    let db = db.display().to_string();
    user_add(&db, "bench", "officer", "bench pw");
    let st = StationServer::start(broker.port, &db, &[]);
    let env = |bench: &str| {
        vec![
            ("CONSOLE_URL", st.url()),
            ("CONSOLE_USER", "bench".to_string()),
            ("CONSOLE_PASS", "bench pw".to_string()),
            ("CAMERAS", "3000".to_string()),
            ("BENCH", bench.to_string()),
        ]
    };
    if load {
        println!("\n## console: first load with 300 gateways and 3,000 cameras (median of 5, headless Chromium, loopback)");
        let mut child = run_node("bench.mjs", &env("load"));
        let out = BufReader::new(child.stdout.take().unwrap());
        for l in out.lines().map_while(Result::ok) {
            println!("{l}");
        }
        assert!(child.wait().unwrap().success());
    }
    if live {
        println!("\n## live: MQTT publish to the grid (200 health changes at 10/s, 3,000 cameras on the page)");
        let mut child = run_node("bench.mjs", &env("live"));
        let mut stdin = child.stdin.take().unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
        for l in out.by_ref() {
            let l = l.unwrap();
            if l == "READY" {
                break;
            }
        }
        for i in 0..200 {
            let g = i % 300;
            let gw = format!("gw{g:03}");
            let ward = format!("w{:02}", g / 10);
            let sent = camgw::clock::Clock::now_ms(&camgw::clock::SystemClock);
            let body = serde_json::json!({"camera": "cam05", "state": "down", "problems": [format!("t{sent}")],
                "since": ts(sent), "ts": ts(sent + i as i64)});
            publish(
                broker.port,
                &format!("camgw/{ward}/{gw}/camera/cam05/health"),
                body.to_string().as_bytes(),
                true,
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        writeln!(stdin, "END").unwrap();
        drop(stdin);
        for l in out.map_while(Result::ok) {
            println!("{l}");
        }
        assert!(child.wait().unwrap().success());
        println!("(each publish opens its own MQTT connection; the figure includes that connect)");
    }
    let (_, hwm) = usage(st.pid());
    println!(
        "station peak RSS during the console parts: {:.1} MiB",
        hwm as f64 / 1024.0
    );
}

fn dir_bytes(p: &Path) -> u64 {
    std::fs::read_dir(p)
        .map(|d| {
            d.flatten()
                .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
                .sum()
        })
        .unwrap_or(0)
}

fn month_part(dir: &Path, pg: &Option<Postgres>) {
    println!("\n## month: one ward (3 gateways, 93 cameras), 30 days of history");
    let jpeg = camgw::sim::jpeg::still(640, 360);
    for (name, target, db) in targets(dir, pg, "bench_month") {
        let mut store = Store::open(&target).unwrap();
        let now = camgw::clock::Clock::now_ms(&camgw::clock::SystemClock);
        let start = now - 30 * DAY;
        let t0 = Instant::now();
        let mut rows = Vec::new();
        let mut seq = 0i64;
        let mut total = 0usize;
        let mut flush = |rows: &mut Vec<Row>, store: &mut Store| {
            total += rows.len();
            record_all(store, std::mem::take(rows), now);
        };
        for day in 0..30 {
            for g in 0..3 {
                let gw = format!("gw{g}");
                // Telemetry once a minute.
                for m in 0..1440 {
                    rows.push(telemetry("w1", &gw, start + day * DAY + m * 60_000));
                }
                for c in 0..31 {
                    let cam = format!("cam{c:02}");
                    for e in 0..100 {
                        seq += 1;
                        let ms = start + day * DAY + (e * DAY / 100) + c * 1000;
                        let id = format!("e-{g}-{seq}");
                        let state = if e % 2 == 0 { "start" } else { "end" };
                        rows.push(event("w1", &gw, &id, seq, ms, &cam, state));
                        if e % 10 == 0 {
                            rows.push(classify(
                                "camgw",
                                &format!("camgw/w1/{gw}/camera/{cam}/snapshot/{id}"),
                                &jpeg,
                            ));
                        }
                    }
                    for h in 0..10 {
                        seq += 1;
                        let ms = start + day * DAY + h * DAY / 10 + c * 1000;
                        let st = if h % 2 == 0 { "down" } else { "up" };
                        rows.push(health("w1", &gw, &cam, st, ms));
                        rows.push(alert(
                            "w1",
                            &gw,
                            &format!("a-{g}-{seq}"),
                            seq,
                            ms,
                            &cam,
                            if st == "down" {
                                "camera_down"
                            } else {
                                "camera_up"
                            },
                        ));
                    }
                }
                flush(&mut rows, &mut store);
            }
        }
        for g in 0..3 {
            rows.push(status("w1", &format!("gw{g}"), now));
        }
        flush(&mut rows, &mut store);
        drop(store);
        let size = match &target {
            Target::Sqlite(p) => {
                let db = std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
                let stills = dir_bytes(&target.stills_dir().unwrap());
                format!(
                    "database {:.0} MiB, stills {:.0} MiB",
                    db as f64 / 1048576.0,
                    stills as f64 / 1048576.0
                )
            }
            Target::Postgres(_) => "in PostgreSQL".into(),
        };
        println!(
            "{name}: wrote {total} messages' rows in {:.0} s ({size})",
            t0.elapsed().as_secs_f64()
        );
        let broker = Broker::start();
        user_add(&db, "bench", "officer", "bench pw");
        let st = StationServer::start(broker.port, &db, &[]);
        std::thread::sleep(Duration::from_millis(500));
        let rss = |pid: u32| -> (u64, u64) {
            let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
            let f = |k: &str| {
                s.lines()
                    .find(|l| l.starts_with(k))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0)
            };
            (f("VmRSS:"), f("VmHWM:"))
        };
        let idle = rss(st.pid());
        let mut web = st.web();
        assert_eq!(web.login("bench", "bench pw"), 200);
        let week = ts(now - 7 * DAY);
        let day_ago = ts(now - DAY);
        let queries = [
            ("cameras", "/api/cameras".to_string()),
            ("gateways", "/api/gateways".to_string()),
            (
                "alerts, last 7 days",
                format!("/api/alerts?since={week}&limit=1000"),
            ),
            ("events, newest 500", "/api/events".to_string()),
            (
                "events of one camera, the month",
                "/api/events?camera=cam07&limit=5000".to_string(),
            ),
            (
                "events of one camera, one day",
                format!("/api/events?camera=cam07&since={day_ago}"),
            ),
            ("metrics", "/metrics".to_string()),
        ];
        for (what, q) in &queries {
            let mut times = Vec::new();
            let mut n = 0;
            for _ in 0..5 {
                let t = Instant::now();
                let a = web.get(q);
                times.push(t.elapsed().as_secs_f64() * 1000.0);
                assert_eq!(a.status, 200, "{q}");
                n = a.json().as_array().map_or(0, |a| a.len());
            }
            println!("  {what}: median {:.1} ms ({n} rows)", median(times));
        }
        let busy = rss(st.pid());
        println!(
            "  station RSS: {:.1} MiB after start, {:.1} MiB after the queries, peak {:.1} MiB",
            idle.0 as f64 / 1024.0,
            busy.0 as f64 / 1024.0,
            busy.1 as f64 / 1024.0
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let want = |p: &str| args.is_empty() || args.iter().any(|a| a == p);
    let dir = tempfile::tempdir().unwrap();
    let pg = match Postgres::start() {
        Ok(p) => Some(p),
        Err(why) => {
            println!("PostgreSQL parts skipped: {why}");
            None
        }
    };
    if want("store") {
        store_part(dir.path(), &pg);
    }
    if want("ingest") {
        ingest_part(dir.path(), &pg);
    }
    if want("console") || want("live") {
        console_part(dir.path(), want("live"), want("console"));
    }
    if want("month") {
        // A ward runs SQLite; a month of stills into PostgreSQL (bytea) takes the better part
        // of an hour here, so only on request: `-- month month-pg`.
        let pg = if args.iter().any(|a| a == "month-pg") {
            pg
        } else {
            None
        };
        month_part(dir.path(), &pg);
    }
}
