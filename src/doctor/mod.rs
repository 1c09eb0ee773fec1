//! `camgw doctor`: a checklist for the technician on the ladder. One line per check, ✓ or ✗,
//! and for every ✗ what to do about it; in English or Vietnamese (`--lang vi`, or a `vi_*`
//! locale). Exit 1 when any check fails; `--json` for scripts.
//!
//! It reads what the agent reads and never touches the agent's state: the buffer is not
//! opened (event-source checks feed a throw-away buffer in a temp directory), the MQTT round
//! trip uses its own client id, and board pins are only opened (a line the running agent
//! holds is reported as such).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::clock::Clock;
use crate::config::Config;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    En,
    Vi,
}

impl Lang {
    /// `--lang` when given, else the locale (`LC_ALL`, `LC_MESSAGES`, `LANG`).
    pub fn pick(flag: Option<&str>) -> Lang {
        let v = flag.map(String::from).or_else(|| {
            ["LC_ALL", "LC_MESSAGES", "LANG"]
                .iter()
                .filter_map(|k| std::env::var(k).ok())
                .find(|v| !v.is_empty())
        });
        match v {
            Some(v) if v.to_ascii_lowercase().starts_with("vi") => Lang::Vi,
            _ => Lang::En,
        }
    }
}

/// One line of the checklist.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Check {
    /// Stable id for scripts: "config", "data_dir", "software", "clock", "board", "board.sensor.enclosure",
    /// "mqtt.dns", "mqtt.tcp", "mqtt.tls", "mqtt.auth", "mqtt.roundtrip" (and
    /// "mqtt.urls[i].dns" ... for every further broker of `mqtt.urls`),
    /// "camera.cam01.reachable", "camera.cam01.snapshot", "camera.cam01.events.onvif", ...
    pub id: String,
    pub ok: bool,
    pub text: String,
    /// What to do, for a failed check.
    pub fix: Option<String>,
}

struct Out {
    lang: Lang,
    checks: Vec<Check>,
}

impl Out {
    fn t<'a>(&self, en: &'a str, vi: &'a str) -> &'a str {
        match self.lang {
            Lang::En => en,
            Lang::Vi => vi,
        }
    }
    fn ok(&mut self, id: impl Into<String>, text: String) {
        self.checks.push(Check {
            id: id.into(),
            ok: true,
            text,
            fix: None,
        });
    }
    fn fail(&mut self, id: impl Into<String>, text: String, fix: String) {
        self.checks.push(Check {
            id: id.into(),
            ok: false,
            text,
            fix: Some(fix),
        });
    }
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub ok: bool,
    pub checks: Vec<Check>,
}

impl Report {
    pub fn text(&self) -> String {
        let mut s = String::new();
        for c in &self.checks {
            s.push_str(&format!("{} {}\n", if c.ok { "✓" } else { "✗" }, c.text));
            if let Some(f) = &c.fix {
                s.push_str(&format!("    → {f}\n"));
            }
        }
        s
    }
}

/// Runs every check.
pub async fn run(config_path: &Path, lang: Lang, clock: Arc<dyn Clock>) -> Report {
    let mut o = Out {
        lang,
        checks: Vec::new(),
    };
    let file = config_path.display().to_string();
    let config = match Config::load(config_path) {
        Ok(c) => {
            o.ok(
                "config",
                format!(
                    "{} {file} {}",
                    o.t("config file", "tệp cấu hình"),
                    o.t("is valid", "hợp lệ")
                ),
            );
            c
        }
        Err(inv) => {
            let problems: Vec<String> = inv.problems.iter().map(|p| p.to_string()).collect();
            o.fail(
                "config",
                format!(
                    "{} {file}: {}",
                    o.t("config file", "tệp cấu hình"),
                    problems.join("; ")
                ),
                format!(
                    "{} camgw check-config {file}",
                    o.t("fix each problem, then run:", "sửa từng lỗi, rồi chạy:")
                ),
            );
            return finish(o);
        }
    };
    data_dir(&mut o, &config);
    software(&mut o, &config);
    if clock.synced() {
        o.ok(
            "clock",
            o.t(
                "system clock is synchronised (NTP)",
                "đồng hồ hệ thống đã đồng bộ (NTP)",
            )
            .into(),
        );
    } else {
        o.fail(
            "clock",
            o.t("system clock is NOT synchronised", "đồng hồ hệ thống CHƯA được đồng bộ").into(),
            o.t(
                "enable NTP (sudo timedatectl set-ntp true) and let the box reach an NTP server; alerts carry clock_synced=false until then",
                "bật NTP (sudo timedatectl set-ntp true) và cho thiết bị kết nối tới máy chủ NTP; trước đó các cảnh báo mang clock_synced=false",
            )
            .into(),
        );
    }
    board(&mut o, &config);
    broker(&mut o, &config).await;
    cameras(&mut o, &config, clock).await;
    finish(o)
}

fn finish(o: Out) -> Report {
    Report {
        ok: o.checks.iter().all(|c| c.ok),
        checks: o.checks,
    }
}

/// Which version `camgw run` starts and what was installed over the air (informational: a
/// failed update leaves a working version running).
fn software(o: &mut Out, config: &Config) {
    let own = crate::release::running_version();
    let dir = crate::update::Dir::new(&config.gateway.data_dir);
    let st = dir.peek();
    let runs = match st.choice(&own) {
        Some(v) => format!(
            "{} {} ({}, {:?})",
            o.t("runs", "chạy"),
            v.version,
            o.t("over the air", "cập nhật từ xa"),
            v.state
        ),
        None => format!(
            "{} {own} ({})",
            o.t("runs", "chạy"),
            o.t("this binary", "tệp này")
        ),
    };
    let failed: Vec<String> = st
        .versions
        .iter()
        .filter(|v| v.state == crate::upgrade::State::Failed)
        .map(|v| {
            format!(
                "{} ({})",
                v.version,
                v.last_failure.as_deref().unwrap_or("?")
            )
        })
        .collect();
    let mut text = format!(
        "camgw {} ({}): {runs}",
        crate::release::VERSION,
        crate::release::TARGET
    );
    if !failed.is_empty() {
        text.push_str(&format!(
            "; {}: {}",
            o.t("failed updates", "bản cập nhật lỗi"),
            failed.join(", ")
        ));
    }
    o.ok("software", text);
}

fn data_dir(o: &mut Out, config: &Config) {
    let dir = &config.gateway.data_dir;
    let d = dir.display().to_string();
    let probe = dir.join(format!(".doctor-{}", std::process::id()));
    let writable = std::fs::create_dir_all(dir)
        .and_then(|_| std::fs::write(&probe, b"x"))
        .and_then(|_| std::fs::remove_file(&probe));
    if let Err(e) = writable {
        o.fail(
            "data_dir",
            format!(
                "data_dir {d} {}: {e}",
                o.t("is not writable", "không ghi được")
            ),
            format!(
                "{} sudo mkdir -p {d} && sudo chown camgw: {d}",
                o.t("give the agent its directory:", "cấp thư mục cho agent:")
            ),
        );
        return;
    }
    let bound = config.gateway.disk_low_mb;
    match crate::system::disk_space_mb(dir) {
        Some((free, _)) if bound > 0 && free < bound => o.fail(
            "data_dir",
            format!(
                "data_dir {d}: {} {free} MB {} ({bound} MB)",
                o.t("only", "chỉ còn"),
                o.t(
                    "free, below gateway.disk_low_mb",
                    "trống, dưới gateway.disk_low_mb"
                )
            ),
            o.t(
                "free space on the SD card, or lower buffer.max_bytes",
                "giải phóng dung lượng thẻ SD, hoặc giảm buffer.max_bytes",
            )
            .into(),
        ),
        Some((free, _)) => o.ok(
            "data_dir",
            format!(
                "data_dir {d} {} {free} MB",
                o.t("is writable, free:", "ghi được, còn trống:")
            ),
        ),
        None => o.ok(
            "data_dir",
            format!("data_dir {d} {}", o.t("is writable", "ghi được")),
        ),
    }
}

fn board(o: &mut Out, config: &Config) {
    if config.gateway.board == crate::boardmap::BoardRef::None {
        o.ok(
            "board",
            o.t(
                "no board configured (gateway.board = \"none\")",
                "không cấu hình bo mạch (gateway.board = \"none\")",
            )
            .into(),
        );
        return;
    }
    let map = match crate::board::load_map(config) {
        Ok(Some(m)) => m,
        Ok(None) => return,
        Err(e) => {
            o.fail(
                "board",
                format!("{}: {e}", o.t("board", "bo mạch")),
                o.t(
                    "set gateway.board to the board in the box (see /usr/share/camgw/boards)",
                    "đặt gateway.board đúng bo mạch trong hộp (xem /usr/share/camgw/boards)",
                )
                .into(),
            );
            return;
        }
    };
    let name = map.name.clone();
    let (mut b, problems) = crate::board::Board::open(map, config);
    if problems.is_empty() {
        o.ok(
            "board",
            format!(
                "{} {name}: {}",
                o.t("board", "bo mạch"),
                o.t("every pin opens", "mọi chân GPIO mở được")
            ),
        );
    }
    for p in problems {
        o.fail(
            "board",
            format!("{} {name}: {p}", o.t("board", "bo mạch")),
            o.t(
                "check the wiring and the board file; a line \"in use by camgw\" is held by the running agent (sudo systemctl stop camgw, then run doctor again)",
                "kiểm tra dây nối và tệp bo mạch; chân \"in use by camgw\" đang được agent giữ (sudo systemctl stop camgw, rồi chạy lại doctor)",
            )
            .into(),
        );
    }
    match b.tamper_open() {
        Some(Ok(open)) => o.ok(
            "board.tamper",
            format!(
                "{}: {}",
                o.t("enclosure switch", "công tắc vỏ hộp"),
                if open {
                    o.t("OPEN", "ĐANG MỞ")
                } else {
                    o.t("closed", "đóng")
                }
            ),
        ),
        Some(Err(e)) => o.fail(
            "board.tamper",
            format!("{}: {e}", o.t("enclosure switch", "công tắc vỏ hộp")),
            o.t("check the switch's wiring", "kiểm tra dây công tắc")
                .into(),
        ),
        None => {}
    }
    for (sensor, kind, r) in b.sample_sensors() {
        let id = format!("board.sensor.{sensor}");
        match r {
            Ok(c) => o.ok(id, format!("{} {sensor} ({kind}): {c:.1} °C", o.t("sensor", "cảm biến"))),
            Err(e) => o.fail(
                id,
                format!("{} {sensor} ({kind}): {e}", o.t("sensor", "cảm biến")),
                o.t("check the sensor's wiring (SDA, SCL, 3.3 V, GND), its address straps, and that I2C is enabled", "kiểm tra dây cảm biến (SDA, SCL, 3.3 V, GND), chân địa chỉ, và I2C đã được bật").into(),
            ),
        }
    }
}

/// The broker checks for every broker of `mqtt.url` / `mqtt.urls`: the first under `mqtt.*`,
/// the others under `mqtt.urls[i].*`.
async fn broker(o: &mut Out, config: &Config) {
    for (i, b) in config.mqtt.brokers.iter().enumerate() {
        let name = |check: &str| {
            if i == 0 {
                format!("mqtt.{check}")
            } else {
                format!("mqtt.urls[{i}].{check}")
            }
        };
        broker_one(o, config, b, &name).await;
    }
}

async fn broker_one(
    o: &mut Out,
    config: &Config,
    b: &crate::config::BrokerUrl,
    name: &dyn Fn(&str) -> String,
) {
    let m = &config.mqtt;
    let hp = format!("{}:{}", b.host, b.port);
    let addrs: Vec<std::net::SocketAddr> = match tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::lookup_host((b.host.as_str(), b.port)),
    )
    .await
    {
        Ok(Ok(a)) => a.collect(),
        Ok(Err(e)) => {
            o.fail(
                name("dns"),
                format!(
                    "{} {}: {e}",
                    o.t(
                        "cannot resolve the broker's name",
                        "không phân giải được tên broker"
                    ),
                    b.host
                ),
                o.t(
                    "check mqtt.url and the DNS server in /etc/resolv.conf",
                    "kiểm tra mqtt.url và máy chủ DNS trong /etc/resolv.conf",
                )
                .into(),
            );
            return;
        }
        Err(_) => {
            o.fail(
                name("dns"),
                format!(
                    "{} {}",
                    o.t("no DNS answer for", "không có trả lời DNS cho"),
                    b.host
                ),
                o.t(
                    "check the uplink (4G/Ethernet) and /etc/resolv.conf",
                    "kiểm tra đường truyền (4G/Ethernet) và /etc/resolv.conf",
                )
                .into(),
            );
            return;
        }
    };
    o.ok(
        name("dns"),
        format!(
            "{} {} → {}",
            o.t("broker name resolves:", "tên broker phân giải được:"),
            b.host,
            addrs
                .iter()
                .map(|a| a.ip().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    );
    let tcp = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::TcpStream::connect(&addrs[..]),
    )
    .await;
    match tcp {
        Ok(Ok(_)) => o.ok(
            name("tcp"),
            format!(
                "{} {hp}",
                o.t(
                    "broker accepts TCP connections at",
                    "broker nhận kết nối TCP tại"
                )
            ),
        ),
        Ok(Err(e)) => {
            o.fail(name("tcp"), format!("{} {hp}: {e}", o.t("cannot connect to the broker at", "không kết nối được broker tại")), o.t("is the broker running, is the port right, does a firewall or the 4G APN block it?", "broker có đang chạy không, cổng có đúng không, tường lửa hoặc APN 4G có chặn không?").into());
            return;
        }
        Err(_) => {
            o.fail(
                name("tcp"),
                format!(
                    "{} {hp} {}",
                    o.t(
                        "no answer from the broker at",
                        "không có trả lời từ broker tại"
                    ),
                    o.t("within 5 s", "trong 5 giây")
                ),
                o.t(
                    "check the uplink and the firewall between the box and the ward station",
                    "kiểm tra đường truyền và tường lửa giữa thiết bị và trạm phường",
                )
                .into(),
            );
            return;
        }
    }
    if b.tls {
        match tls_handshake(m, &b.host, addrs[0]).await {
            Ok(()) => o.ok(
                name("tls"),
                format!(
                    "{} {}",
                    o.t(
                        "TLS handshake with the broker: certificate valid for",
                        "bắt tay TLS với broker: chứng chỉ hợp lệ cho"
                    ),
                    b.host
                ),
            ),
            Err(e) => {
                let fix = o.t(
                    "put the ward station's CA certificate in mqtt.ca_file, check the name in mqtt.url matches the certificate, and check the box's clock (a wrong clock makes certificates look expired)",
                    "đặt chứng chỉ CA của trạm phường vào mqtt.ca_file, kiểm tra tên trong mqtt.url khớp chứng chỉ, và kiểm tra đồng hồ thiết bị (đồng hồ sai làm chứng chỉ có vẻ hết hạn)",
                );
                o.fail(
                    name("tls"),
                    format!(
                        "{}: {e}",
                        o.t(
                            "TLS handshake with the broker failed",
                            "bắt tay TLS với broker thất bại"
                        )
                    ),
                    fix.into(),
                );
                return;
            }
        }
    }
    mqtt_session(o, config, b, name).await;
}

async fn tls_handshake(
    m: &crate::config::Mqtt,
    host: &str,
    addr: std::net::SocketAddr,
) -> Result<(), String> {
    let cfg = match crate::uplink::tls::client_config(m).map_err(|e| format!("{e:#}"))? {
        rumqttc::TlsConfiguration::Rustls(c) => c,
        _ => return Err("unexpected TLS configuration".into()),
    };
    let host = host.to_string();
    tokio::task::spawn_blocking(move || {
        use rustls::pki_types::ServerName;
        let name = ServerName::try_from(host.clone()).map_err(|e| format!("{host}: {e}"))?;
        let mut conn = rustls::ClientConnection::new(cfg, name).map_err(|e| e.to_string())?;
        let mut sock = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .map_err(|e| e.to_string())?;
        sock.set_read_timeout(Some(Duration::from_secs(5))).ok();
        sock.set_write_timeout(Some(Duration::from_secs(5))).ok();
        while conn.is_handshaking() {
            if let Err(e) = conn.complete_io(&mut sock) {
                return Err(describe_tls(&e));
            }
        }
        Ok(())
    })
    .await
    .map_err(|e| e.to_string())?
}

/// Names the certificate problem behind a failed handshake.
fn describe_tls(e: &std::io::Error) -> String {
    use rustls::{CertificateError, Error};
    let inner = e.get_ref().and_then(|i| i.downcast_ref::<Error>());
    match inner {
        Some(Error::InvalidCertificate(c)) => match c {
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "the broker's certificate has expired (or this box's clock is wrong)".into()
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "the broker's certificate is not valid yet (is this box's clock wrong?)".into()
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                "the broker's certificate is not valid for the name in mqtt.url".into()
            }
            CertificateError::UnknownIssuer => {
                "the broker's certificate is signed by a CA that is not in mqtt.ca_file".into()
            }
            CertificateError::BadSignature => "the broker's certificate has a bad signature".into(),
            CertificateError::Revoked => "the broker's certificate was revoked".into(),
            other => format!("the broker's certificate was refused: {other:?}"),
        },
        Some(other) => format!("TLS error: {other}"),
        None => e.to_string(),
    }
}

async fn mqtt_session(
    o: &mut Out,
    config: &Config,
    b: &crate::config::BrokerUrl,
    name: &dyn Fn(&str) -> String,
) {
    use rumqttc::{ConnectReturnCode, ConnectionError, Event, Packet, QoS};
    let nonce: u32 = rand::random();
    let id = format!("camgw-doctor-{}-{nonce:08x}", config.gateway.id);
    let mut opts = match crate::uplink::mqtt_options(&config.mqtt, b, id) {
        Ok(x) => x,
        Err(e) => {
            o.fail(
                name("auth"),
                format!("{e:#}"),
                o.t(
                    "check mqtt.ca_file, cert_file and key_file",
                    "kiểm tra mqtt.ca_file, cert_file và key_file",
                )
                .into(),
            );
            return;
        }
    };
    opts.set_clean_session(true);
    let (client, mut el) = rumqttc::AsyncClient::new(opts, 10);
    let leaf = format!("doctor/{nonce:08x}");
    let topic = config.topic(crate::topics::Leaf::Other(&leaf));
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut authed = false;
    loop {
        let ev = match tokio::time::timeout_at(deadline, el.poll()).await {
            Err(_) => {
                if authed {
                    o.fail(name("roundtrip"), format!("{} {topic} {}", o.t("a message published to", "tin nhắn gửi tới"), o.t("did not come back within 10 s", "không quay lại trong 10 giây")), o.t("the broker's access rules (ACL) must let this gateway publish and subscribe under its own topics", "quy tắc truy cập (ACL) của broker phải cho phép thiết bị này gửi và đăng ký các chủ đề của chính nó").into());
                } else {
                    o.fail(
                        name("auth"),
                        o.t(
                            "the broker did not answer the MQTT CONNECT within 10 s",
                            "broker không trả lời MQTT CONNECT trong 10 giây",
                        )
                        .into(),
                        o.t(
                            "is it an MQTT broker on that port? mqtts:// needs the TLS port (8883)",
                            "cổng đó có phải của broker MQTT không? mqtts:// cần cổng TLS (8883)",
                        )
                        .into(),
                    );
                }
                break;
            }
            Ok(Err(ConnectionError::ConnectionRefused(code))) => {
                let why = match code {
                    ConnectReturnCode::BadUserNamePassword => o.t(
                        "bad username or password",
                        "sai tên đăng nhập hoặc mật khẩu",
                    ),
                    ConnectReturnCode::NotAuthorized => o.t("not authorised", "không được phép"),
                    ConnectReturnCode::BadClientId => {
                        o.t("client id refused", "client id bị từ chối")
                    }
                    _ => o.t("connection refused", "kết nối bị từ chối"),
                };
                o.fail(
                    name("auth"),
                    format!(
                        "{}: {why}",
                        o.t(
                            "the broker refused this gateway",
                            "broker từ chối thiết bị này"
                        )
                    ),
                    o.t(
                        "check mqtt.username and mqtt.password with the ward station",
                        "kiểm tra mqtt.username và mqtt.password với trạm phường",
                    )
                    .into(),
                );
                break;
            }
            Ok(Err(e)) => {
                o.fail(
                    name("auth"),
                    format!("{}: {e}", o.t("MQTT session failed", "phiên MQTT thất bại")),
                    o.t(
                        "check mqtt.url and the broker's logs",
                        "kiểm tra mqtt.url và nhật ký của broker",
                    )
                    .into(),
                );
                break;
            }
            Ok(Ok(ev)) => ev,
        };
        match ev {
            Event::Incoming(Packet::ConnAck(_)) => {
                authed = true;
                o.ok(
                    name("auth"),
                    o.t(
                        "the broker accepted this gateway's credentials",
                        "broker chấp nhận thông tin đăng nhập của thiết bị",
                    )
                    .into(),
                );
                let _ = client.subscribe(topic.clone(), QoS::AtLeastOnce).await;
            }
            Event::Incoming(Packet::SubAck(_)) => {
                let _ = client
                    .publish(topic.clone(), QoS::AtLeastOnce, false, b"doctor".to_vec())
                    .await;
            }
            Event::Incoming(Packet::Publish(p)) if p.topic == topic => {
                o.ok(
                    name("roundtrip"),
                    format!(
                        "{} {} ms",
                        o.t(
                            "publish/subscribe round trip through the broker:",
                            "gửi/nhận vòng qua broker:"
                        ),
                        started.elapsed().as_millis()
                    ),
                );
                let _ = client.disconnect().await;
                break;
            }
            _ => {}
        }
    }
}

async fn cameras(o: &mut Out, config: &Config, clock: Arc<dyn Clock>) {
    // Event-source checks feed a throw-away buffer, never the agent's.
    let tmp = std::env::temp_dir().join(format!("camgw-doctor-{}", std::process::id()));
    let hub = if config.cameras.iter().any(|c| !c.events.is_empty()) {
        let opts = crate::buffer::Options::new(
            1 << 20,
            crate::config::SyncMode::Interval,
            Duration::from_secs(1),
        );
        crate::buffer::Buffer::open(&tmp, opts, clock.clone())
            .ok()
            .map(|(b, _)| crate::events::Hub::new(Arc::new(config.clone()), b, clock.clone()))
    } else {
        None
    };
    for cam in &config.cameras {
        let id = &cam.id;
        let mut mem = crate::health::Memory::default();
        let round = crate::health::probe_round(
            cam,
            &mut mem,
            config.health.timeout,
            clock.as_ref(),
            config.health.clock_drift_max,
        )
        .await;
        let why = |p: crate::health::Problem| {
            round
                .detail
                .get(p.name())
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_string()
        };
        use crate::health::Problem as P;
        if round.problems.contains(&P::Unreachable) {
            o.fail(
                format!("camera.{id}.reachable"),
                format!(
                    "{id}: {} ({})",
                    o.t("unreachable", "không kết nối được"),
                    why(P::Unreachable)
                ),
                o.t(
                    "check the camera's power, cable and IP address (host in the config)",
                    "kiểm tra nguồn, cáp mạng và địa chỉ IP của camera (host trong cấu hình)",
                )
                .into(),
            );
            continue;
        }
        o.ok(
            format!("camera.{id}.reachable"),
            format!(
                "{id}: {} {}",
                o.t("reachable at", "kết nối được tại"),
                cam.host
            ),
        );
        if round.problems.contains(&P::BasicAuthOnly) {
            o.fail(
                format!("camera.{id}.auth"),
                format!(
                    "{id}: {} ({})",
                    o.t(
                        "the camera offers only Basic auth (the password in clear); the agent did not send it",
                        "camera chỉ hỗ trợ xác thực Basic (mật khẩu không mã hoá); agent không gửi mật khẩu"
                    ),
                    why(P::BasicAuthOnly)
                ),
                o.t(
                    "enable Digest authentication in the camera's web page, or set basic_auth = true for this camera",
                    "bật xác thực Digest trong trang web của camera, hoặc đặt basic_auth = true cho camera này",
                )
                .into(),
            );
        }
        if round.problems.contains(&P::AuthFailed) {
            o.fail(
                format!("camera.{id}.credentials"),
                format!(
                    "{id}: {} ({})",
                    o.t("credentials refused", "thông tin đăng nhập bị từ chối"),
                    why(P::AuthFailed)
                ),
                o.t(
                    "the username/password in the config are not the camera's",
                    "tên đăng nhập/mật khẩu trong cấu hình không đúng với camera",
                )
                .into(),
            );
        } else if cam.username.is_some() {
            o.ok(
                format!("camera.{id}.credentials"),
                format!(
                    "{id}: {}",
                    o.t("credentials accepted", "thông tin đăng nhập được chấp nhận")
                ),
            );
        }
        if cam.snapshot_url.is_some()
            && !round.problems.contains(&P::AuthFailed)
            && !round.problems.contains(&P::BasicAuthOnly)
        {
            match round.detail.get("snapshot") {
                Some(s) if !round.problems.contains(&P::Black) => o.ok(
                    format!("camera.{id}.snapshot"),
                    format!(
                        "{id}: {} {}×{}",
                        o.t("snapshot decodes:", "ảnh chụp giải mã được:"),
                        s["width"],
                        s["height"]
                    ),
                ),
                Some(_) => o.fail(
                    format!("camera.{id}.snapshot"),
                    format!(
                        "{id}: {} ({})",
                        o.t("the picture is black", "hình ảnh bị đen"),
                        why(P::Black)
                    ),
                    o.t(
                        "is the lens covered, or the camera's night mode/IR broken?",
                        "ống kính có bị che không, hay chế độ ban đêm/hồng ngoại bị hỏng?",
                    )
                    .into(),
                ),
                None => o.fail(
                    format!("camera.{id}.snapshot"),
                    format!(
                        "{id}: {} ({})",
                        o.t("snapshot failed", "chụp ảnh thất bại"),
                        why(P::HttpError)
                    ),
                    o.t(
                        "check snapshot_url (the vendor's snapshot path) in the config",
                        "kiểm tra snapshot_url (đường dẫn chụp ảnh của hãng) trong cấu hình",
                    )
                    .into(),
                ),
            }
        }
        if cam.rtsp_url.is_some() {
            match round.detail.get("rtsp_first_packet_ms") {
                Some(ms) => o.ok(
                    format!("camera.{id}.rtsp"),
                    format!(
                        "{id}: {} {ms} ms",
                        o.t(
                            "RTSP delivers video, first packet after",
                            "RTSP có hình, gói đầu tiên sau"
                        )
                    ),
                ),
                // Refused credentials are already on the credentials line.
                None if !round.problems.contains(&P::RtspError)
                    && !round.problems.contains(&P::NoFrames) => {}
                None => {
                    let w = [why(P::RtspError), why(P::NoFrames)].join(" ");
                    o.fail(format!("camera.{id}.rtsp"), format!("{id}: {} ({})", o.t("RTSP delivers no video", "RTSP không có hình"), w.trim()), o.t("check rtsp_url (stream path and port) and that the camera's stream is enabled", "kiểm tra rtsp_url (đường dẫn luồng và cổng) và luồng video của camera đã bật").into());
                }
            }
        }
        if cam.onvif_url.is_some() {
            match round.detail.get("clock_offset_ms").and_then(|v| v.as_i64()) {
                Some(off) if round.problems.contains(&P::ClockDrift) => o.fail(
                    format!("camera.{id}.onvif"),
                    format!(
                        "{id}: {} {:+.1} s",
                        o.t("camera clock is off by", "đồng hồ camera lệch"),
                        off as f64 / 1000.0
                    ),
                    o.t(
                        "set the camera's NTP server (or its time) in its web page",
                        "đặt máy chủ NTP (hoặc giờ) cho camera trong trang web của nó",
                    )
                    .into(),
                ),
                Some(off) => o.ok(
                    format!("camera.{id}.onvif"),
                    format!(
                        "{id}: {} {:+.1} s",
                        o.t(
                            "ONVIF answers, camera clock offset",
                            "ONVIF trả lời, độ lệch đồng hồ camera"
                        ),
                        off as f64 / 1000.0
                    ),
                ),
                None => o.fail(
                    format!("camera.{id}.onvif"),
                    format!(
                        "{id}: {} ({})",
                        o.t("ONVIF does not answer", "ONVIF không trả lời"),
                        why(P::HttpError)
                    ),
                    o.t(
                        "enable ONVIF on the camera and check onvif_url",
                        "bật ONVIF trên camera và kiểm tra onvif_url",
                    )
                    .into(),
                ),
            }
        }
        for src in &cam.events {
            let name = src.source().name();
            let cid = format!("camera.{id}.events.{name}");
            let Some(hub) = &hub else {
                o.fail(
                    cid,
                    format!(
                        "{id}: {name}: {}",
                        o.t(
                            "cannot make a temporary buffer",
                            "không tạo được bộ đệm tạm"
                        )
                    ),
                    o.t("check the temp directory", "kiểm tra thư mục tạm")
                        .into(),
                );
                continue;
            };
            match hub
                .clone()
                .check_source(cam.clone(), *src, config.health.timeout * 2)
                .await
            {
                Ok(()) => o.ok(
                    cid,
                    format!(
                        "{id}: {name} {}",
                        o.t("events: subscribed", "sự kiện: đã đăng ký")
                    ),
                ),
                Err(e) => o.fail(
                    cid,
                    format!(
                        "{id}: {name} {}: {e}",
                        o.t("events: cannot subscribe", "sự kiện: không đăng ký được")
                    ),
                    o.t(
                        "enable the camera's event notifications and check its credentials",
                        "bật thông báo sự kiện trên camera và kiểm tra thông tin đăng nhập",
                    )
                    .into(),
                ),
            }
        }
    }
    if let Some(h) = hub {
        h.buffer.close();
    }
    let _ = std::fs::remove_dir_all(&tmp);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn language_from_flag_or_locale() {
        assert_eq!(Lang::pick(Some("vi")), Lang::Vi);
        assert_eq!(Lang::pick(Some("en")), Lang::En);
        assert_eq!(Lang::pick(Some("vi_VN.UTF-8")), Lang::Vi);
    }

    #[test]
    fn the_report_marks_and_explains_failures() {
        let r = finish(Out {
            lang: Lang::En,
            checks: vec![
                Check {
                    id: "a".into(),
                    ok: true,
                    text: "fine".into(),
                    fix: None,
                },
                Check {
                    id: "b".into(),
                    ok: false,
                    text: "broken".into(),
                    fix: Some("mend it".into()),
                },
            ],
        });
        assert!(!r.ok);
        assert_eq!(r.text(), "✓ fine\n✗ broken\n    → mend it\n");
    }
}
