//! The ward-station side, in the same binary: `camgw keygen` makes an Ed25519 key pair,
//! `camgw cmd` signs a command, publishes it on `T/cmd`, and waits for `T/cmd/result`;
//! `camgw station watch` ([`watch`]) is the live view, built on the pure [`view`] model;
//! `camgw station serve` ([`serve`]) is the recorder and web console.

pub mod fleet;
pub mod serve;
pub mod view;
pub mod watch;

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use base64::Engine as _;
use ed25519_dalek::SigningKey;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, Transport};

use crate::remote::envelope;
use crate::topics::{self, Leaf};

/// Writes `PREFIX.key` (base64 secret, mode 0600) and `PREFIX.pub` (one line, base64 public
/// key, the form `security.command_keys` takes). Returns the public key line.
pub fn keygen(prefix: &Path) -> anyhow::Result<String> {
    let secret: [u8; 32] = rand::random();
    let key = SigningKey::from_bytes(&secret);
    let b64 = base64::engine::general_purpose::STANDARD;
    let key_path = with_suffix(prefix, "key");
    let pub_path = with_suffix(prefix, "pub");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&key_path)
        .with_context(|| {
            format!(
                "cannot create {} (it must not exist yet)",
                key_path.display()
            )
        })?;
    f.write_all(format!("{}\n", b64.encode(secret)).as_bytes())?;
    f.sync_all()?;
    let public = b64.encode(key.verifying_key().to_bytes());
    std::fs::write(&pub_path, format!("{public}\n"))
        .with_context(|| format!("cannot write {}", pub_path.display()))?;
    Ok(public)
}

fn with_suffix(prefix: &Path, ext: &str) -> std::path::PathBuf {
    let mut s = prefix.as_os_str().to_owned();
    s.push(".");
    s.push(ext);
    s.into()
}

pub fn load_key(path: &Path) -> anyhow::Result<SigningKey> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|_| anyhow!("{} is not a camgw key (base64 expected)", path.display()))?;
    let secret: [u8; 32] = bytes
        .try_into()
        .map_err(|_| anyhow!("{} is not a camgw key (32 bytes expected)", path.display()))?;
    Ok(SigningKey::from_bytes(&secret))
}

/// `camgw release sign`: hashes FILE as it streams (never held in memory) and writes
/// `FILE.manifest.json` beside it (temp file, then rename). Returns its path.
pub fn release_sign(
    key: &Path,
    version: &str,
    target: &str,
    file: &Path,
) -> anyhow::Result<std::path::PathBuf> {
    use sha2::Digest as _;
    use std::io::Read;
    let key = load_key(key)?;
    let version = semver::Version::parse(version)
        .map_err(|e| anyhow!("--version {version:?} is not semver (like 1.2.0): {e}"))?;
    let mut f =
        std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
    let mut hasher = sha2::Sha256::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("cannot read {}", file.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    if size == 0 {
        bail!("{} is empty", file.display());
    }
    let sha: [u8; 32] = hasher.finalize().into();
    let manifest = crate::release::sign(&key, &version, target, &sha, size);
    // What a gateway will check, checked here first (a bad --target is said now, not there).
    crate::release::Manifest::parse(&manifest).map_err(|e| anyhow!("{e}"))?;
    let out = with_suffix(file, "manifest.json");
    let tmp = with_suffix(file, "manifest.json.tmp");
    std::fs::write(&tmp, serde_json::to_string_pretty(&manifest)? + "\n")
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &out).with_context(|| format!("cannot write {}", out.display()))?;
    Ok(out)
}

pub struct CmdArgs<'a> {
    pub key: &'a Path,
    pub mqtt: &'a str,
    pub ward: &'a str,
    pub gateway: &'a str,
    pub command: &'a str,
    pub timeout: Duration,
    pub topic_prefix: &'a str,
    pub ttl: Duration,
    pub username: Option<&'a str>,
    pub password: Option<&'a str>,
    pub ca_file: Option<&'a Path>,
}

/// The outcome of `camgw cmd`.
pub enum CmdOutcome {
    Result(serde_json::Value),
    Timeout,
}

pub async fn cmd(a: CmdArgs<'_>) -> anyhow::Result<CmdOutcome> {
    let key = load_key(a.key)?;
    let command: serde_json::Value =
        serde_json::from_str(a.command).context("the command is not valid JSON")?;
    if command.get("op").and_then(|o| o.as_str()).is_none() {
        bail!("the command must be a JSON object with an \"op\", like {{\"op\":\"get_config\"}}");
    }
    let id = crate::record::format_id(crate::record::new_id());
    let now = crate::clock::SystemClock;
    let signed = envelope::new_signed(
        &id,
        a.gateway,
        a.ward,
        crate::clock::Clock::now_ms(&now),
        a.ttl.as_millis() as i64,
        command,
    );
    let payload = envelope::sign(&key, &signed);
    let o = options(
        a.mqtt,
        &format!("camgw-cmd-{}", &id[..8]),
        a.username,
        a.password,
        a.ca_file,
    )?;
    let root = topics::root(a.topic_prefix, a.ward, a.gateway);
    let (client, mut el) = AsyncClient::new(o, 16);
    let deadline = tokio::time::Instant::now() + a.timeout;
    client
        .subscribe(topics::topic(&root, Leaf::CmdResult), QoS::AtLeastOnce)
        .await?;
    loop {
        let ev = match tokio::time::timeout_at(deadline, el.poll()).await {
            Err(_) => return Ok(CmdOutcome::Timeout),
            Ok(Err(e)) => bail!("MQTT connection to {} failed: {e}", a.mqtt),
            Ok(Ok(ev)) => ev,
        };
        match ev {
            Event::Incoming(Packet::SubAck(_)) => {
                client
                    .publish(
                        topics::topic(&root, Leaf::Cmd),
                        QoS::AtLeastOnce,
                        false,
                        payload.clone(),
                    )
                    .await?;
            }
            Event::Incoming(Packet::Publish(p)) => {
                if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&p.payload) {
                    if v["id"] == id.as_str() {
                        let _ = client.disconnect().await;
                        return Ok(CmdOutcome::Result(v));
                    }
                }
            }
            _ => {}
        }
    }
}

/// MQTT options for a station tool: `mqtt://` or `mqtts://` (with an optional CA file).
pub fn options(
    url: &str,
    client_id: &str,
    username: Option<&str>,
    password: Option<&str>,
    ca_file: Option<&Path>,
) -> anyhow::Result<MqttOptions> {
    let (tls, host, port) = parse_mqtt_url(url)?;
    let b = crate::config::BrokerUrl { tls, host, port };
    options_for(&b, client_id, username, password, ca_file)
}

/// The same for a URL already parsed.
fn options_for(
    b: &crate::config::BrokerUrl,
    client_id: &str,
    username: Option<&str>,
    password: Option<&str>,
    ca_file: Option<&Path>,
) -> anyhow::Result<MqttOptions> {
    let mut o = MqttOptions::new(client_id, b.host.clone(), b.port);
    o.set_keep_alive(Duration::from_secs(10));
    o.set_max_packet_size(1 << 20, 1 << 20);
    if let Some(u) = username {
        o.set_credentials(u, password.unwrap_or(""));
    }
    if b.tls {
        o.set_transport(Transport::Tls(crate::uplink::tls::client_config_from(
            ca_file, None, None,
        )?));
    }
    Ok(o)
}

/// `--mqtt` for the station's own long-running tools (`station serve`, `station watch`): one
/// URL, or several separated by commas, tried in order on every reconnect like `mqtt.urls`.
pub fn broker_list(
    urls: &str,
    client_id: &str,
    username: Option<&str>,
    password: Option<&str>,
    ca_file: Option<&Path>,
) -> anyhow::Result<Brokers> {
    let list: Vec<&str> = urls.split(',').map(str::trim).collect();
    if list.iter().any(|u| u.is_empty()) {
        bail!("--mqtt: an empty URL in the list (URLs are separated by single commas)");
    }
    if list.len() > crate::config::Brokers::MAX {
        bail!(
            "--mqtt: at most {} brokers (it lists {})",
            crate::config::Brokers::MAX,
            list.len()
        );
    }
    let mut shown = Vec::new();
    let mut opts = Vec::new();
    for u in &list {
        let (tls, host, port) = parse_mqtt_url(u)?;
        let b = crate::config::BrokerUrl { tls, host, port };
        if shown.contains(&b) {
            bail!("--mqtt: {b} is listed twice");
        }
        opts.push(options_for(&b, client_id, username, password, ca_file)?);
        shown.push(b);
    }
    Ok(Brokers {
        opts,
        shown,
        failover: crate::uplink::failover::Failover::new(list.len()),
        connected: false,
    })
}

/// Several brokers behind one rumqttc event loop: after a connection error the loop is
/// pointed at the next one by the uplink's rule ([`crate::uplink::failover`]). A persistent
/// session stays in the event loop, so what was unacknowledged is resent to the new broker.
pub struct Brokers {
    opts: Vec<MqttOptions>,
    shown: Vec<crate::config::BrokerUrl>,
    failover: crate::uplink::failover::Failover,
    connected: bool,
}

impl Brokers {
    /// Changes the options of every broker alike.
    pub fn set(&mut self, f: impl Fn(&mut MqttOptions)) {
        self.opts.iter_mut().for_each(f);
    }

    /// Options for the broker to try first.
    pub fn first(&self) -> MqttOptions {
        self.opts[0].clone()
    }

    /// The broker the loop is on (or trying), as a URL.
    pub fn current(&self) -> String {
        self.shown[self.failover.attempt()].to_string()
    }

    pub fn on_connected(&mut self) {
        self.connected = true;
    }

    /// After a poll error: points `el` at the broker to try next, and says how long to wait
    /// before polling again (nothing while a round of brokers is still being tried).
    pub fn on_error(&mut self, el: &mut rumqttc::EventLoop) -> Duration {
        let then = if std::mem::take(&mut self.connected) {
            self.failover.lost()
        } else {
            self.failover.failed()
        };
        el.mqtt_options = self.opts[self.failover.attempt()].clone();
        match then {
            crate::uplink::failover::Then::TryNext => Duration::ZERO,
            crate::uplink::failover::Then::BackOff => Duration::from_secs(1),
        }
    }
}

/// `--mqtt URL`, by the same rules and parser as `mqtt.url` in the config.
fn parse_mqtt_url(url: &str) -> anyhow::Result<(bool, String, u16)> {
    let u =
        crate::config::check_url(url, &["mqtt", "mqtts"]).map_err(|e| anyhow!("--mqtt: {e}"))?;
    if u.userinfo.is_some() {
        bail!("--mqtt: credentials do not belong in the URL: use --username and --password");
    }
    Ok((u.scheme == "mqtts", u.host, u.port))
}

#[cfg(test)]
mod tests {
    use super::parse_mqtt_url;

    #[test]
    fn mqtt_urls_follow_the_config_rules() {
        assert_eq!(
            parse_mqtt_url("mqtt://127.0.0.1:1884/").unwrap(),
            (false, "127.0.0.1".into(), 1884)
        );
        assert_eq!(
            parse_mqtt_url("mqtts://[::1]").unwrap(),
            (true, "::1".into(), 8883)
        );
        for (bad, says) in [
            ("http://x", "scheme \"http\""),
            ("mqtt://u:secret@x", "credentials"),
            ("mqtt://x:0", "invalid port"),
            ("mqtt://:1883", "no host"),
        ] {
            let e = parse_mqtt_url(bad).unwrap_err().to_string();
            assert!(e.contains(says) && !e.contains("secret"), "{bad}: {e}");
        }
    }
}
