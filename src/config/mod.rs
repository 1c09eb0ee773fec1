//! Configuration: TOML text → raw table → [`validate`] (pure) → typed [`Config`].
//!
//! Validation walks the raw TOML table itself rather than relying on serde, so that every
//! problem is reported at once with its key path (`mqtt.keep_alive_s: ...`,
//! `camera[1].id: ...`), unknown keys included. The typed config cannot hold an invalid value;
//! secrets are wrapped in [`Secret`], whose `Debug` and `Display` print `***`.

mod validate;
pub use validate::redact_url;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::proto::http::Creds;
pub use crate::proto::http::Url;

pub use validate::{check_name, check_url, keys_read, validate, Boards};

/// A password or key: never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// One thing wrong with a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// `mqtt.url`, `camera[0].id`, or `line 3` for a syntax error.
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every problem found in one config file.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{} problem(s) in the configuration", problems.len())]
pub struct Invalid {
    pub problems: Vec<Problem>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub events: Events,
    pub snapshot: Snapshot,
    pub board: BoardConfig,
    pub gateway: Gateway,
    pub mqtt: Mqtt,
    pub buffer: BufferConfig,
    pub health: Health,
    pub ingest: Option<Ingest>,
    /// `[metrics] listen`: Prometheus text on `GET /metrics` (off when absent).
    pub metrics: Option<Metrics>,
    pub security: Security,
    pub cameras: Vec<Camera>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Gateway {
    pub id: String,
    pub ward: String,
    pub data_dir: PathBuf,
    /// "none", "auto", a board shipped in `boards/`, or a path to a board file.
    pub board: crate::boardmap::BoardRef,
    /// Free space under `data_dir` below this raises `disk_low` (0: never).
    pub disk_low_mb: u64,
}

/// The gateway's own hardware (`[board]`); used when `gateway.board` is not "none".
#[derive(Debug, Clone, PartialEq)]
pub struct BoardConfig {
    /// How often inputs are sampled and the status LED updated.
    pub poll: Duration,
    /// How long an input must hold a level to count.
    pub debounce: Duration,
    /// `over_temperature` is raised at this enclosure temperature...
    pub over_temperature_c: f64,
    /// ...and cleared once it is this much below it again.
    pub temperature_hysteresis_c: f64,
    pub temperature_interval: Duration,
    /// A power-cycle keeps the camera's relay off this long.
    pub relay_off: Duration,
    /// A hardware watchdog device (`/dev/watchdog`) to ping while the agent is healthy.
    pub hardware_watchdog: Option<PathBuf>,
    /// Motion inputs (`pir1`, `door1`, ...) and the camera id their events carry.
    pub inputs: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Mqtt {
    /// `mqtt.url`, or the ordered `mqtt.urls`: tried in order on every reconnect.
    pub brokers: Brokers,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub keep_alive: Duration,
    pub topic_prefix: String,
    pub payload: PayloadFormat,
    /// Buffered records published but not yet acknowledged, at most.
    pub max_inflight: u16,
    /// Reconnect backoff starts here and doubles up to `reconnect_max`, with jitter.
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    pub telemetry_interval: Duration,
}

/// One broker address from `mqtt.url` / `mqtt.urls` (never with credentials: those are
/// refused by validation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
}

impl std::fmt::Display for BrokerUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

/// The brokers, in the order they are tried: never empty, at most [`Brokers::MAX`], no
/// duplicates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Brokers(Vec<BrokerUrl>);

impl Brokers {
    pub const MAX: usize = 8;

    /// None unless 1..=MAX distinct brokers.
    pub fn new(list: Vec<BrokerUrl>) -> Option<Brokers> {
        let distinct = list.iter().enumerate().all(|(i, b)| !list[..i].contains(b));
        (!list.is_empty() && list.len() <= Self::MAX && distinct).then_some(Brokers(list))
    }

    pub fn first(&self) -> &BrokerUrl {
        &self.0[0]
    }

    /// The broker at `i`, wrapping around.
    pub fn get(&self, i: usize) -> &BrokerUrl {
        &self.0[i % self.0.len()]
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    pub fn iter(&self) -> impl Iterator<Item = &BrokerUrl> {
        self.0.iter()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadFormat {
    Json,
    Postcard,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    /// Group commit: the caller is answered after the fsync that covers its record.
    Always,
    /// Written to the OS at once, fsynced every `sync_interval`.
    Interval,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BufferConfig {
    pub max_bytes: u64,
    pub sync: SyncMode,
    pub sync_interval: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    pub interval: Duration,
    pub timeout: Duration,
    pub fail_threshold: u32,
    pub recover_threshold: u32,
    /// A camera clock further off than this is `clock_drift` (judged only while the
    /// gateway's own clock is synchronised).
    pub clock_drift_max: Duration,
    /// Cameras probed at the same time, at most.
    pub max_concurrent: usize,
}

/// Event stills (`[snapshot]`): what is sent with each motion start.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// Stills are scaled down to at most this width.
    pub max_width: u16,
    /// JPEG quality of what is sent (1..=100).
    pub quality: u8,
    /// Bytes of stills per UTC day; past it, events go without stills (0: no budget).
    pub daily_budget_bytes: u64,
    /// A still request that has not answered within this is abandoned.
    pub timeout: Duration,
    /// Buffered stills may take at most this much of `buffer.max_bytes`.
    pub buffer_max_bytes: u64,
}

/// Motion-event handling (`[events]`).
#[derive(Debug, Clone, PartialEq)]
pub struct Events {
    /// Motion reported without an end (Hikvision VMD) ends after this much silence.
    pub motion_silence: Duration,
    /// Starts (and pulses) closer together than this are merged.
    pub min_spacing: Duration,
    /// An event stream silent this long (no event, no heartbeat) is reconnected.
    pub read_timeout: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Ingest {
    pub listen: SocketAddr,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Metrics {
    pub listen: SocketAddr,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Security {
    /// Raw 32-byte Ed25519 public keys.
    pub command_keys: Vec<[u8; 32]>,
    /// After a config change that touches `[mqtt]`, the new settings must reach a broker
    /// within this time, or the last good config comes back.
    pub rollback_timeout: Duration,
    /// A command issued further in the future than this (by the gateway's clock) is refused.
    pub max_clock_skew: Duration,
    /// Raw 32-byte Ed25519 public keys allowed to sign software releases (never a command
    /// key: validation refuses a key in both lists).
    pub release_keys: Vec<[u8; 32]>,
    /// A new version must connect and finish a health round within this, or the start counts
    /// as failed.
    pub update_confirm: Duration,
    /// The CA that release servers' HTTPS certificates are checked against (unset: the
    /// broker's `mqtt.ca_file`, else the system's roots).
    pub update_ca_file: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vendor {
    Onvif,
    Hikvision,
    Dahua,
    Generic,
}

/// An event stream the agent subscribes to on a camera (`events = [...]`): a subset of the
/// event sources, the ones a camera serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventSource {
    Onvif,
    Hikvision,
    Dahua,
}

impl EventSource {
    pub fn source(self) -> crate::record::Source {
        match self {
            EventSource::Onvif => crate::record::Source::Onvif,
            EventSource::Hikvision => crate::record::Source::Hikvision,
            EventSource::Dahua => crate::record::Source::Dahua,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Camera {
    pub id: String,
    pub vendor: Vendor,
    pub host: String,
    /// The `username` key, or a user name given in one of the camera's URLs (folded in at
    /// validation: the URLs hold none). Use [`Camera::creds`].
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// `http_base`, or `http://{host}`: the root of the vendor's event APIs.
    pub http_base: Url,
    pub snapshot_url: Option<Url>,
    pub rtsp_url: Option<Url>,
    pub onvif_url: Option<Url>,
    pub events: Vec<EventSource>,
    /// Whether the health monitor probes this camera (false for a camera that only sends
    /// events and has nothing to probe).
    pub probe: bool,
    /// The board relay that powers this camera (`reboot_camera` power-cycles it).
    pub relay: Option<String>,
    /// Whether the password may be sent with Basic auth (in clear) when the camera offers
    /// nothing else; off unless the config asks for it (`basic_auth = true`).
    pub basic_auth: bool,
    /// A still with each motion start (`snapshot`; on by default where the camera has a
    /// still source: `snapshot_url`, or a vendor with a known still URL).
    pub snapshot: bool,
}

impl Camera {
    /// The camera's credentials, by one rule for every probe, stream and command: a user name
    /// with the password (empty when none is configured: some cameras have none), or none
    /// without a user name. The password goes out with Basic auth only if `basic_auth`.
    pub fn creds(&self) -> Option<Creds<'_>> {
        Some(Creds {
            user: self.username.as_deref()?,
            password: self.password.as_ref().map_or("", |p| p.expose()),
            basic: self.basic_auth,
        })
    }
}

impl Config {
    /// Parses and validates TOML text; the board file it names (if any) is read from disk,
    /// and `auto` from this device's tree.
    pub fn parse(text: &str) -> Result<Config, Invalid> {
        validate(text, &|r| {
            crate::boardmap::resolve(r, std::path::Path::new(crate::boardmap::DEVICE_TREE))
        })
    }

    /// Parses and validates TOML text, with `boards` resolving a `gateway.board` reference
    /// (the validation itself does no I/O).
    pub fn parse_with(text: &str, boards: &Boards<'_>) -> Result<Config, Invalid> {
        validate(text, boards)
    }

    /// Reads and validates a file; I/O errors become a single problem.
    pub fn load(path: &Path) -> Result<Config, Invalid> {
        // A config is a few KiB; anything near this is not one (and is not read whole).
        const MAX_FILE: u64 = 1 << 20;
        if let Ok(m) = std::fs::metadata(path) {
            if m.len() > MAX_FILE {
                return Err(Invalid {
                    problems: vec![Problem {
                        path: "(file)".into(),
                        message: format!(
                            "{} is {} bytes, larger than any config ({MAX_FILE})",
                            path.display(),
                            m.len()
                        ),
                    }],
                });
            }
        }
        match std::fs::read_to_string(path) {
            Ok(text) => Config::parse(&text),
            Err(e) => Err(Invalid {
                problems: vec![Problem {
                    path: "(file)".into(),
                    message: format!("cannot read {}: {e}", path.display()),
                }],
            }),
        }
    }

    /// `{topic_prefix}/{ward}/{gateway.id}`.
    pub fn topic_root(&self) -> String {
        crate::topics::root(
            &self.mqtt.topic_prefix,
            &self.gateway.ward,
            &self.gateway.id,
        )
    }

    /// A topic below this gateway's root.
    pub fn topic(&self, leaf: crate::topics::Leaf<'_>) -> String {
        crate::topics::topic(&self.topic_root(), leaf)
    }

    pub fn camera(&self, id: &str) -> Option<&Camera> {
        self.cameras.iter().find(|c| c.id == id)
    }
}
