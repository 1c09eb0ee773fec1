//! The pure validator: raw TOML table → [`Config`] or every [`Problem`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use toml::{Table, Value};

use super::*;
use crate::boardmap::{self, BoardMap, BoardRef, Role};

/// Collects problems while reading the tables, and which keys it read: each key is named
/// once, where it is read, and a key that nothing read is an unknown one.
struct Walker<'a> {
    problems: &'a mut Vec<Problem>,
    /// The keys looked up, per table (by address: every table lives in the parsed document
    /// for the whole walk).
    read: std::collections::HashMap<usize, std::collections::BTreeSet<String>>,
    /// Tables whose every key must have been read: (path prefix, section, table address,
    /// the keys it holds).
    tables: Vec<(String, String, usize, Vec<String>)>,
}

fn addr(t: &Table) -> usize {
    t as *const Table as usize
}

impl Walker<'_> {
    fn new(problems: &mut Vec<Problem>) -> Walker<'_> {
        Walker {
            problems,
            read: Default::default(),
            tables: Vec::new(),
        }
    }

    /// Looks `key` up in `t`, noting that it was read.
    fn get<'t>(&mut self, t: &'t Table, key: &str) -> Option<&'t Value> {
        self.read
            .entry(addr(t))
            .or_default()
            .insert(key.to_string());
        t.get(key)
    }

    fn has(&mut self, t: &Table, key: &str) -> bool {
        self.get(t, key).is_some()
    }

    /// Every key of `t` must be read by the end of the walk ([`Walker::finish`]).
    fn keys_of(&mut self, prefix: &str, section: &str, t: &Table) {
        // An absent section stands in as an empty local table: nothing to check, and its
        // address may be another absent section's later.
        if t.is_empty() {
            return;
        }
        let keys = t.keys().cloned().collect();
        self.tables
            .push((prefix.to_string(), section.to_string(), addr(t), keys));
    }

    /// Reports the keys nothing read; returns the keys read per section.
    fn finish(&mut self) -> std::collections::BTreeMap<String, std::collections::BTreeSet<String>> {
        let mut sections: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> =
            Default::default();
        for (prefix, section, a, keys) in std::mem::take(&mut self.tables) {
            let known = self.read.get(&a).cloned().unwrap_or_default();
            for key in keys.iter().filter(|k| !known.contains(*k)) {
                let expected: Vec<&str> = known.iter().map(String::as_str).collect();
                self.problem(
                    join(&prefix, key),
                    format!("unknown key (expected one of: {})", expected.join(", ")),
                );
            }
            sections.entry(section).or_default().extend(known);
        }
        sections
    }
    /// Every message goes through [`redact_url`]: whatever a check echoes, a password
    /// written as user info never reaches the output.
    fn problem(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            path: path.into(),
            message: redact_url(&message.into()),
        });
    }

    fn section<'t>(&mut self, root: &'t Table, name: &str, required: bool) -> Option<&'t Table> {
        match self.get(root, name) {
            None => {
                if required {
                    self.problem(name, "missing section");
                }
                None
            }
            Some(Value::Table(t)) => Some(t),
            Some(other) => {
                self.problem(name, format!("must be a table, found {}", kind(other)));
                None
            }
        }
    }

    fn string(&mut self, t: &Table, prefix: &str, key: &str) -> Option<String> {
        match self.get(t, key)? {
            Value::String(s) => Some(s.clone()),
            other => {
                self.problem(
                    join(prefix, key),
                    format!("must be a string, found {}", kind(other)),
                );
                None
            }
        }
    }

    fn required_string(&mut self, t: &Table, prefix: &str, key: &str) -> Option<String> {
        if !self.has(t, key) {
            self.problem(join(prefix, key), "missing (required)");
            return None;
        }
        self.string(t, prefix, key)
    }

    /// An integer in `lo..=hi`, or the default when absent.
    fn int(&mut self, t: &Table, prefix: &str, key: &str, lo: i64, hi: i64, default: i64) -> i64 {
        match self.get(t, key) {
            None => default,
            Some(Value::Integer(i)) if (lo..=hi).contains(i) => *i,
            Some(Value::Integer(i)) => {
                self.problem(
                    join(prefix, key),
                    format!("{i} is out of range ({lo}..={hi})"),
                );
                default
            }
            Some(other) => {
                self.problem(
                    join(prefix, key),
                    format!("must be an integer, found {}", kind(other)),
                );
                default
            }
        }
    }

    fn choice<T: Copy>(
        &mut self,
        t: &Table,
        prefix: &str,
        key: &str,
        options: &[(&str, T)],
        default: Option<T>,
    ) -> Option<T> {
        let s = match (self.get(t, key), default) {
            (None, Some(d)) => return Some(d),
            (None, None) => {
                self.problem(join(prefix, key), "missing (required)");
                return None;
            }
            _ => self.string(t, prefix, key)?,
        };
        match options.iter().find(|(name, _)| *name == s) {
            Some((_, v)) => Some(*v),
            None => {
                let names: Vec<_> = options.iter().map(|(n, _)| format!("\"{n}\"")).collect();
                self.problem(
                    join(prefix, key),
                    format!("\"{s}\" is not one of {}", names.join(", ")),
                );
                None
            }
        }
    }

    fn name(&mut self, t: &Table, prefix: &str, key: &str) -> Option<String> {
        let s = self.required_string(t, prefix, key)?;
        if let Err(e) = check_name(&s) {
            self.problem(join(prefix, key), e);
            return None;
        }
        Some(s)
    }

    /// A camera URL, checked, then parsed once into the [`Url`] every consumer uses.
    fn camera_url(&mut self, t: &Table, prefix: &str, key: &str, schemes: &[&str]) -> Option<Url> {
        self.url(t, prefix, key, schemes)
    }

    fn parsed_url(&mut self, prefix: &str, key: &str, s: &str) -> Option<Url> {
        match Url::parse(s) {
            Ok(u) => Some(u),
            Err(e) => {
                self.problem(join(prefix, key), format!("\"{}\": {e}", redact_url(s)));
                None
            }
        }
    }

    /// A URL key, checked and parsed by the one URL parser.
    fn url(&mut self, t: &Table, prefix: &str, key: &str, schemes: &[&str]) -> Option<Url> {
        let s = self.string(t, prefix, key)?;
        match check_url(&s, schemes) {
            Ok(u) => Some(u),
            Err(e) => {
                self.problem(join(prefix, key), e);
                None
            }
        }
    }
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::String(_) => "a string",
        Value::Integer(_) => "an integer",
        Value::Float(_) => "a float",
        Value::Boolean(_) => "a boolean",
        Value::Datetime(_) => "a datetime",
        Value::Array(_) => "an array",
        Value::Table(_) => "a table",
    }
}

/// `[a-z0-9-]`, 1..64 characters.
pub fn check_name(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 64 {
        return Err(format!(
            "\"{s}\" must be 1 to 64 characters long (it has {})",
            s.len()
        ));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(format!(
            "\"{s}\" may only contain a-z, 0-9 and '-' (found {c:?})"
        ));
    }
    Ok(())
}

/// `s` with every password in it replaced by `***`: for each `@`, the token before it (from
/// the last space, quote, comma or bracket, and after a `://` when there is one) is user
/// info, and what follows its first `:` is a password. Whatever the shape: a URL, a
/// malformed one (`rtsp//u:pw@h`), a password holding `/` or `?`, a URL pasted into the wrong
/// key, several in one message.
pub fn redact_url(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find('@') {
        let before = &rest[..at];
        let tok_start = before
            .char_indices()
            .rev()
            .find(|&(_, c)| c.is_whitespace() || "\"'(,[=<>".contains(c))
            .map_or(0, |(i, c)| i + c.len_utf8());
        let tok = &before[tok_start..];
        let ui_start = tok.find("://").map_or(0, |i| i + 3);
        match tok[ui_start..].find(':') {
            Some(c) => {
                out.push_str(&before[..tok_start + ui_start + c + 1]);
                out.push_str("***");
            }
            None => out.push_str(before),
        }
        out.push('@');
        rest = &rest[at + 1..];
    }
    out.push_str(rest);
    out
}

/// `scheme://host[:port][/path]` with one of the allowed schemes and no password inside.
/// Messages show the URL with any password replaced by `***`.
/// Checks a URL for the config (an allowed scheme, no password in it, a host, a port that is
/// not 0) with messages for a technician, and parses it with the one URL parser
/// ([`Url::parse`], which every consumer uses).
pub fn check_url(s: &str, schemes: &[&str]) -> Result<Url, String> {
    let shown = redact_url(s);
    let Some((scheme, rest)) = s.split_once("://") else {
        return Err(format!(
            "\"{shown}\" is not a URL (expected {}://...)",
            schemes[0]
        ));
    };
    if !schemes.contains(&scheme) {
        return Err(format!(
            "scheme \"{scheme}\" is not allowed here (expected {})",
            schemes.join(" or ")
        ));
    }
    // User info runs to the last `@` (a password may hold `/` or `?`): any `:` before it is
    // taken for a password, conservatively.
    if rest
        .rsplit_once('@')
        .is_some_and(|(ui, _)| ui.contains(':'))
    {
        return Err(
            "credentials do not belong in the URL (it carries a password): remove \
             user:password@ and set the username and password keys instead (the password is not \
             shown here)"
                .into(),
        );
    }
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    let hostport = authority.rsplit('@').next().unwrap_or("");
    let port = match hostport.strip_prefix('[') {
        Some(v6) => v6.split_once(']').and_then(|(_, a)| a.strip_prefix(':')),
        None => hostport.rsplit_once(':').map(|(_, p)| p),
    };
    if let Some(p) = port.filter(|p| p.parse::<u16>().map_or(true, |p| p == 0)) {
        return Err(format!("\"{shown}\" has an invalid port \"{p}\""));
    }
    Url::parse(s).map_err(|e| match e.as_str() {
        "no host" => format!("\"{shown}\" has no host"),
        _ => format!("\"{shown}\": {e}"),
    })
}

/// Resolves a board reference to its pin map (`Ok(None)`: no board, or not knowable before
/// start). The caller decides where board files come from: validation itself does no I/O.
pub type Boards<'a> = dyn Fn(&BoardRef) -> Result<Option<BoardMap>, String> + 'a;

/// Parses TOML text and validates every section; pure, with the board file behind `boards`.
pub fn validate(text: &str, boards: &Boards<'_>) -> Result<Config, Invalid> {
    walk(text, boards).0
}

/// The keys a config file may hold, per table (`camera` for every `[[camera]]`), as the
/// validator read them while checking `text`: the docs test checks that docs/reference.md
/// describes each of them, on a text that holds every table.
pub fn keys_read(
    text: &str,
) -> std::collections::BTreeMap<String, std::collections::BTreeSet<String>> {
    walk(text, &|_| Ok(None)).1
}

type Sections = std::collections::BTreeMap<String, std::collections::BTreeSet<String>>;

fn walk(text: &str, boards: &Boards<'_>) -> (Result<Config, Invalid>, Sections) {
    let root: Table = match text.parse::<Table>() {
        Ok(t) => t,
        Err(e) => {
            let path = e
                .span()
                .map(|sp| {
                    let line = text[..sp.start.min(text.len())].matches('\n').count() + 1;
                    format!("line {line}")
                })
                .unwrap_or_else(|| "(syntax)".into());
            let problems = vec![Problem {
                path,
                message: format!("TOML syntax error: {}", e.message()),
            }];
            return (Err(Invalid { problems }), Sections::new());
        }
    };
    let mut problems = Vec::new();
    let mut w = Walker::new(&mut problems);
    w.keys_of("", "", &root);

    let gateway = gateway(&mut w, &root);
    let mqtt = mqtt(&mut w, &root);
    let buffer = buffer(&mut w, &root);
    let health = health(&mut w, &root);
    let ingest =
        listen_section(&mut w, &root, "ingest", 8088).map(|o| o.map(|listen| Ingest { listen }));
    let metrics = listen_section(&mut w, &root, "metrics", 9108);
    let security = security(&mut w, &root);
    let cameras = cameras(&mut w, &root);
    let events = events(&mut w, &root);
    let snapshot = snapshot(&mut w, &root, buffer.as_ref());
    let board = board(&mut w, &root);
    if let (Some(g), Some(cams)) = (&gateway, &cameras) {
        cross_check_board(&mut w, g, &board, cams, boards);
    }
    let sections = w.finish();

    let result = match (
        gateway, mqtt, buffer, health, ingest, metrics, security, cameras,
    ) {
        (
            Some(gateway),
            Some(mqtt),
            Some(buffer),
            Some(health),
            Some(ingest),
            Some(metrics),
            Some(security),
            Some(cameras),
        ) if problems.is_empty() => Ok(Config {
            metrics: metrics.map(|listen| Metrics { listen }),
            events,
            snapshot,
            board,
            gateway,
            mqtt,
            buffer,
            health,
            ingest,
            security,
            cameras,
        }),
        _ => {
            if problems.is_empty() {
                problems.push(Problem {
                    path: "(config)".into(),
                    message: "invalid".into(),
                });
            }
            Err(Invalid { problems })
        }
    };
    (result, sections)
}

fn gateway(w: &mut Walker, root: &Table) -> Option<Gateway> {
    let t = w.section(root, "gateway", true)?;
    w.keys_of("gateway", "gateway", t);
    let id = w.name(t, "gateway", "id");
    let ward = w.name(t, "gateway", "ward");
    let data_dir = match w.string(t, "gateway", "data_dir") {
        Some(s) if s.is_empty() => {
            w.problem("gateway.data_dir", "must not be empty");
            None
        }
        Some(s) => Some(PathBuf::from(s)),
        None if !w.has(t, "data_dir") => Some(PathBuf::from("/var/lib/camgw")),
        None => None,
    };
    let board = match w.string(t, "gateway", "board") {
        None if !w.has(t, "board") => Some(BoardRef::None),
        None => None,
        Some(b) => match boardmap::reference(&b) {
            Ok(r) => Some(r),
            Err(e) => {
                w.problem("gateway.board", e);
                None
            }
        },
    };
    let disk_low_mb = w.int(t, "gateway", "disk_low_mb", 0, 10_000_000, 100) as u64;
    Some(Gateway {
        id: id?,
        ward: ward?,
        data_dir: data_dir?,
        board: board?,
        disk_low_mb,
    })
}

fn board(w: &mut Walker, root: &Table) -> BoardConfig {
    let empty = Table::new();
    let t = w.section(root, "board", false).unwrap_or(&empty);
    let p = "board";
    w.keys_of(p, "board", t);
    let float = |w: &mut Walker, key: &str, lo: f64, hi: f64, default: f64| -> f64 {
        let v = match w.get(t, key) {
            None => return default,
            Some(Value::Float(f)) => *f,
            Some(Value::Integer(i)) => *i as f64,
            Some(other) => {
                w.problem(
                    join(p, key),
                    format!("must be a number, found {}", kind(other)),
                );
                return default;
            }
        };
        if !(lo..=hi).contains(&v) {
            w.problem(join(p, key), format!("{v} is out of range ({lo}..={hi})"));
            return default;
        }
        v
    };
    let poll = w.int(t, p, "poll_ms", 5, 1000, 20);
    let debounce = w.int(t, p, "debounce_ms", 0, 10_000, 50);
    let over = float(w, "over_temperature_c", -40.0, 150.0, 70.0);
    let hyst = float(w, "temperature_hysteresis_c", 0.5, 50.0, 5.0);
    let interval = w.int(t, p, "temperature_interval_s", 1, 3600, 10);
    let relay_off = w.int(t, p, "relay_off_s", 1, 600, 10);
    let hardware_watchdog = match w.string(t, p, "hardware_watchdog") {
        Some(s) if s.is_empty() => {
            w.problem(
                "board.hardware_watchdog",
                "must not be empty (leave it out for none)",
            );
            None
        }
        s => s.map(PathBuf::from),
    };
    let mut inputs = std::collections::BTreeMap::new();
    match w.get(t, "inputs") {
        None => {}
        Some(Value::Table(m)) => {
            for (pin, cam) in m {
                let at = format!("board.inputs.{pin}");
                if Role::of(pin) != Some(Role::Motion) {
                    w.problem(&at, "not a motion input pin name (pirN, doorN or inputN)");
                    continue;
                }
                match cam {
                    Value::String(c) => match check_name(c) {
                        Ok(()) => {
                            inputs.insert(pin.clone(), c.clone());
                        }
                        Err(e) => w.problem(&at, e),
                    },
                    other => w.problem(
                        &at,
                        format!("must be a camera id string, found {}", kind(other)),
                    ),
                }
            }
        }
        Some(other) => w.problem(
            "board.inputs",
            format!("must be a table of pin = \"camera\", found {}", kind(other)),
        ),
    }
    BoardConfig {
        poll: Duration::from_millis(poll as u64),
        debounce: Duration::from_millis(debounce as u64),
        over_temperature_c: over,
        temperature_hysteresis_c: hyst,
        temperature_interval: Duration::from_secs(interval as u64),
        relay_off: Duration::from_secs(relay_off as u64),
        hardware_watchdog,
        inputs,
    }
}

/// Checks the config against the board file it names (when the board can be known without
/// the device: a shipped name or a file): inputs and relays must exist on the board, and no
/// relay may power two cameras.
fn cross_check_board(
    w: &mut Walker,
    g: &Gateway,
    b: &BoardConfig,
    cams: &[Camera],
    boards: &Boards<'_>,
) {
    let r = &g.board;
    let uses_board = !b.inputs.is_empty() || cams.iter().any(|c| c.relay.is_some());
    if *r == BoardRef::None {
        if uses_board {
            w.problem(
                "gateway.board",
                "board.inputs and camera relays need a board (gateway.board is \"none\")",
            );
        }
        return;
    }
    if *r == BoardRef::Auto {
        return; // checked at start, once the device is known
    }
    let m = match boards(r) {
        Ok(Some(m)) => m,
        Ok(None) => return,
        Err(e) => {
            w.problem("gateway.board", e);
            return;
        }
    };
    for pin in b.inputs.keys() {
        if m.pin(pin).map(|p| p.role) != Some(Role::Motion) {
            w.problem(
                format!("board.inputs.{pin}"),
                format!("board {} has no input {pin}", m.name),
            );
        }
    }
    let mut seen: Vec<(&str, &str)> = Vec::new();
    for (i, c) in cams.iter().enumerate() {
        let Some(relay) = &c.relay else { continue };
        if m.pin(relay).map(|p| p.role) != Some(Role::Relay) {
            w.problem(
                format!("camera[{i}].relay"),
                format!("board {} has no relay {relay}", m.name),
            );
        }
        if let Some((_, other)) = seen.iter().find(|(r, _)| r == relay) {
            w.problem(
                format!("camera[{i}].relay"),
                format!("{relay} already powers camera {other}"),
            );
        }
        seen.push((relay, &c.id));
    }
}

fn mqtt(w: &mut Walker, root: &Table) -> Option<Mqtt> {
    let t = w.section(root, "mqtt", true)?;
    let p = "mqtt";
    w.keys_of(p, "mqtt", t);
    let brokers = brokers(w, t);
    let username = w.string(t, p, "username");
    let password = w.string(t, p, "password").map(Secret::new);
    if password.is_some() && username.is_none() {
        w.problem("mqtt.password", "set without mqtt.username");
    }
    let file =
        |w: &mut Walker, key: &str| -> Option<PathBuf> { w.string(t, p, key).map(PathBuf::from) };
    let ca_file = file(w, "ca_file");
    let cert_file = file(w, "cert_file");
    let key_file = file(w, "key_file");
    if cert_file.is_some() != key_file.is_some() {
        w.problem(
            "mqtt.cert_file",
            "cert_file and key_file go together (mutual TLS needs both)",
        );
    }
    if let Some(b) = &brokers {
        if (ca_file.is_some() || cert_file.is_some()) && !b.iter().any(|b| b.tls) {
            w.problem(
                if b.len() == 1 {
                    "mqtt.url"
                } else {
                    "mqtt.urls"
                },
                "TLS files are set but no URL is mqtts:// (use mqtts://)",
            );
        }
    }
    let keep_alive = w.int(t, p, "keep_alive_s", 5, 65535, 30);
    let topic_prefix = w
        .string(t, p, "topic_prefix")
        .unwrap_or_else(|| "camgw".into());
    if topic_prefix.is_empty()
        || topic_prefix.starts_with('/')
        || topic_prefix.ends_with('/')
        || topic_prefix.contains(['+', '#', '\0'])
    {
        w.problem(
            "mqtt.topic_prefix",
            format!(
                "\"{topic_prefix}\" must be non-empty, without '+', '#' or a leading/trailing '/'"
            ),
        );
    }
    let payload = w.choice(
        t,
        p,
        "payload",
        &[
            ("json", PayloadFormat::Json),
            ("postcard", PayloadFormat::Postcard),
        ],
        Some(PayloadFormat::Json),
    );
    let max_inflight = w.int(t, p, "max_inflight", 1, 1000, 64);
    let reconnect_min = w.int(t, p, "reconnect_min_ms", 10, 60_000, 500);
    let reconnect_max = w.int(t, p, "reconnect_max_s", 1, 3600, 30);
    let telemetry = w.int(t, p, "telemetry_interval_s", 1, 86_400, 60);
    Some(Mqtt {
        brokers: brokers?,
        username,
        password,
        ca_file,
        cert_file,
        key_file,
        keep_alive: Duration::from_secs(keep_alive as u64),
        topic_prefix,
        payload: payload?,
        max_inflight: max_inflight as u16,
        reconnect_min: Duration::from_millis(reconnect_min as u64),
        reconnect_max: Duration::from_secs(reconnect_max as u64),
        telemetry_interval: Duration::from_secs(telemetry as u64),
    })
}

/// `mqtt.url`, or `mqtt.urls` (an ordered list): exactly one of the two.
fn brokers(w: &mut Walker, t: &Table) -> Option<Brokers> {
    let p = "mqtt";
    let one = |w: &mut Walker, key: &str, u: Option<Url>| -> Option<BrokerUrl> {
        let u = u?;
        if u.userinfo.is_some() {
            w.problem(
                key,
                "credentials do not belong in the URL: use mqtt.username and mqtt.password",
            );
            return None;
        }
        Some(BrokerUrl {
            tls: u.scheme == "mqtts",
            host: u.host,
            port: u.port,
        })
    };
    match (w.has(t, "url"), w.has(t, "urls")) {
        (true, true) => {
            w.problem("mqtt.urls", "set either mqtt.url or mqtt.urls, not both");
            None
        }
        (false, false) => {
            w.problem("mqtt.url", "missing (required; or mqtt.urls, a list)");
            None
        }
        (true, false) => {
            let u = w.url(t, p, "url", &["mqtt", "mqtts"]);
            let b = one(w, "mqtt.url", u)?;
            Brokers::new(vec![b])
        }
        (false, true) => {
            let list = match t.get("urls") {
                Some(Value::Array(a)) => a,
                Some(other) => {
                    w.problem(
                        "mqtt.urls",
                        format!("must be a list of URLs, found {}", kind(other)),
                    );
                    return None;
                }
                None => return None,
            };
            if list.is_empty() || list.len() > Brokers::MAX {
                w.problem(
                    "mqtt.urls",
                    format!(
                        "must list 1 to {} brokers (it lists {})",
                        Brokers::MAX,
                        list.len()
                    ),
                );
                return None;
            }
            let mut out = Vec::new();
            let mut ok = true;
            for (i, v) in list.iter().enumerate() {
                let key = format!("mqtt.urls[{i}]");
                let Value::String(s) = v else {
                    w.problem(key, format!("must be a string, found {}", kind(v)));
                    ok = false;
                    continue;
                };
                let u = match check_url(s, &["mqtt", "mqtts"]) {
                    Ok(u) => Some(u),
                    Err(e) => {
                        w.problem(key.clone(), e);
                        None
                    }
                };
                match one(w, &key, u) {
                    Some(b) if out.contains(&b) => {
                        w.problem(key, format!("{b} is listed twice"));
                        ok = false;
                    }
                    Some(b) => out.push(b),
                    None => ok = false,
                }
            }
            if ok {
                Brokers::new(out)
            } else {
                None
            }
        }
    }
}

fn buffer(w: &mut Walker, root: &Table) -> Option<BufferConfig> {
    let empty = Table::new();
    let t = w.section(root, "buffer", false).unwrap_or(&empty);
    w.keys_of("buffer", "buffer", t);
    let max_bytes = w.int(t, "buffer", "max_bytes", 65_536, i64::MAX, 64 << 20);
    let sync = w.choice(
        t,
        "buffer",
        "sync",
        &[
            ("interval", SyncMode::Interval),
            ("always", SyncMode::Always),
        ],
        Some(SyncMode::Interval),
    );
    let interval = w.int(t, "buffer", "sync_interval_ms", 1, 60_000, 200);
    Some(BufferConfig {
        max_bytes: max_bytes as u64,
        sync: sync?,
        sync_interval: Duration::from_millis(interval as u64),
    })
}

fn events(w: &mut Walker, root: &Table) -> Events {
    let empty = Table::new();
    let t = w.section(root, "events", false).unwrap_or(&empty);
    let p = "events";
    w.keys_of(p, "events", t);
    Events {
        motion_silence: Duration::from_secs(w.int(t, p, "motion_silence_s", 1, 3600, 10) as u64),
        min_spacing: Duration::from_millis(w.int(t, p, "min_spacing_ms", 0, 600_000, 1000) as u64),
        read_timeout: Duration::from_secs(w.int(t, p, "read_timeout_s", 2, 3600, 30) as u64),
    }
}

fn snapshot(w: &mut Walker, root: &Table, buffer: Option<&BufferConfig>) -> Snapshot {
    let empty = Table::new();
    let t = w.section(root, "snapshot", false).unwrap_or(&empty);
    let p = "snapshot";
    w.keys_of(p, "snapshot", t);
    let max_bytes = buffer.map_or(64 << 20, |b| b.max_bytes) as i64;
    Snapshot {
        max_width: w.int(t, p, "max_width", 64, 4096, 640) as u16,
        quality: w.int(t, p, "quality", 1, 100, 70) as u8,
        daily_budget_bytes: w.int(t, p, "daily_budget_mb", 0, 1_000_000, 0) as u64 * 1_000_000,
        timeout: Duration::from_millis(w.int(t, p, "timeout_ms", 100, 60_000, 3000) as u64),
        buffer_max_bytes: w.int(
            t,
            p,
            "buffer_max_bytes",
            16 * 1024,
            max_bytes.max(16 * 1024),
            max_bytes / 4,
        ) as u64,
    }
}

fn health(w: &mut Walker, root: &Table) -> Option<Health> {
    let empty = Table::new();
    let t = w.section(root, "health", false).unwrap_or(&empty);
    let p = "health";
    w.keys_of(p, "health", t);
    Some(Health {
        interval: Duration::from_secs(w.int(t, p, "interval_s", 1, 86_400, 10) as u64),
        timeout: Duration::from_millis(w.int(t, p, "timeout_ms", 50, 600_000, 3000) as u64),
        fail_threshold: w.int(t, p, "fail_threshold", 1, 1000, 3) as u32,
        recover_threshold: w.int(t, p, "recover_threshold", 1, 1000, 2) as u32,
        clock_drift_max: Duration::from_secs(w.int(t, p, "clock_drift_max_s", 1, 86_400, 30) as u64),
        max_concurrent: w.int(t, p, "max_concurrent", 1, 256, 8) as usize,
    })
}

/// A section whose one key is `listen = "IP:port"` (`[ingest]`, `[metrics]`): None when the
/// value is invalid, Some(None) when the section or key is absent.
fn listen_section(
    w: &mut Walker,
    root: &Table,
    name: &str,
    example_port: u16,
) -> Option<Option<SocketAddr>> {
    let Some(t) = w.section(root, name, false) else {
        return Some(None);
    };
    w.keys_of(name, name, t);
    let Some(listen) = w.string(t, name, "listen") else {
        return Some(None);
    };
    match listen.parse::<SocketAddr>() {
        Ok(listen) => Some(Some(listen)),
        Err(_) => {
            w.problem(
                format!("{name}.listen"),
                format!("\"{listen}\" is not an address like 127.0.0.1:{example_port}"),
            );
            None
        }
    }
}

/// A list of base64 Ed25519 public keys at `security.{key}`.
fn public_keys(w: &mut Walker, t: &Table, key: &str) -> Vec<[u8; 32]> {
    let mut keys = Vec::new();
    match w.get(t, key) {
        None => {}
        Some(Value::Array(a)) => {
            for (i, v) in a.iter().enumerate() {
                let path = format!("security.{key}[{i}]");
                let Value::String(s) = v else {
                    w.problem(path, format!("must be a string, found {}", kind(v)));
                    continue;
                };
                match base64::engine::general_purpose::STANDARD.decode(s.trim()) {
                    Ok(b) if b.len() == 32 => {
                        let mut k = [0u8; 32];
                        k.copy_from_slice(&b);
                        keys.push(k);
                    }
                    Ok(b) => w.problem(
                        path,
                        format!("an Ed25519 public key is 32 bytes, this is {}", b.len()),
                    ),
                    Err(_) => w.problem(path, "not valid base64"),
                }
            }
        }
        Some(other) => w.problem(
            format!("security.{key}"),
            format!("must be an array of strings, found {}", kind(other)),
        ),
    }
    keys
}

fn security(w: &mut Walker, root: &Table) -> Option<Security> {
    let empty = Table::new();
    let t = w.section(root, "security", false).unwrap_or(&empty);
    w.keys_of("security", "security", t);
    let keys = public_keys(w, t, "command_keys");
    let release_keys = public_keys(w, t, "release_keys");
    if let Some(i) = release_keys.iter().position(|k| keys.contains(k)) {
        w.problem(
            format!("security.release_keys[{i}]"),
            "is also a command key: keep release keys apart from command keys",
        );
    }
    let rollback = w.int(t, "security", "rollback_timeout_s", 1, 3600, 60);
    let skew = w.int(t, "security", "max_clock_skew_s", 0, 86_400, 300);
    let confirm = w.int(t, "security", "update_confirm_s", 10, 86_400, 300);
    let update_ca_file = w.string(t, "security", "update_ca_file").map(PathBuf::from);
    Some(Security {
        command_keys: keys,
        rollback_timeout: Duration::from_secs(rollback as u64),
        max_clock_skew: Duration::from_secs(skew as u64),
        release_keys,
        update_confirm: Duration::from_secs(confirm as u64),
        update_ca_file,
    })
}

fn cameras(w: &mut Walker, root: &Table) -> Option<Vec<Camera>> {
    let arr = match w.get(root, "camera") {
        None => return Some(Vec::new()),
        Some(Value::Array(a)) => a,
        Some(other) => {
            w.problem(
                "camera",
                format!(
                    "must be an array of tables ([[camera]]), found {}",
                    kind(other)
                ),
            );
            return None;
        }
    };
    let mut out = Vec::new();
    let mut ok = true;
    for (i, v) in arr.iter().enumerate() {
        let p = format!("camera[{i}]");
        let Value::Table(t) = v else {
            w.problem(p, format!("must be a table, found {}", kind(v)));
            ok = false;
            continue;
        };
        match camera(w, t, &p) {
            Some(c) => {
                if out.iter().any(|o: &Camera| o.id == c.id) {
                    w.problem(
                        format!("{p}.id"),
                        format!("duplicate camera id \"{}\"", c.id),
                    );
                    ok = false;
                }
                out.push(c);
            }
            None => ok = false,
        }
    }
    ok.then_some(out)
}

fn camera(w: &mut Walker, t: &Table, p: &str) -> Option<Camera> {
    w.keys_of(p, "camera", t);
    let id = w.name(t, p, "id");
    let vendor = w.choice(
        t,
        p,
        "vendor",
        &[
            ("onvif", Vendor::Onvif),
            ("hikvision", Vendor::Hikvision),
            ("dahua", Vendor::Dahua),
            ("generic", Vendor::Generic),
        ],
        None,
    );
    let host = w.required_string(t, p, "host");
    if let Some(h) = &host {
        if h.is_empty() || h.contains(['/', ' ', '@']) {
            w.problem(
                join(p, "host"),
                format!("\"{}\" is not a host name or address", redact_url(h)),
            );
        }
    }
    let mut username = w.string(t, p, "username");
    let password = w.string(t, p, "password").map(Secret::new);
    let http_base = if w.has(t, "http_base") {
        w.camera_url(t, p, "http_base", &["http", "https"])
    } else {
        host.as_ref()
            .and_then(|h| w.parsed_url(p, "host", &format!("http://{h}")))
    };
    let http = &["http", "https"];
    let mut snapshot_url = w.camera_url(t, p, "snapshot_url", http);
    let mut rtsp_url = w.camera_url(t, p, "rtsp_url", &["rtsp", "rtsps"]);
    let mut onvif_url = w.camera_url(t, p, "onvif_url", http);
    // Credentials are resolved here, once: a user name in a URL (a password there is refused
    // above) stands in for a missing `username`, and the URLs keep none.
    let mut http_base = http_base;
    for u in [
        &mut http_base,
        &mut snapshot_url,
        &mut rtsp_url,
        &mut onvif_url,
    ]
    .into_iter()
    .flatten()
    {
        if let Some((user, _)) = u.userinfo.take() {
            if username.is_none() && !user.is_empty() {
                username = Some(user);
            }
        }
    }
    let mut events = Vec::new();
    match w.get(t, "events") {
        None => {}
        Some(Value::Array(a)) => {
            for (i, v) in a.iter().enumerate() {
                let ep = format!("{p}.events[{i}]");
                let src = match v.as_str() {
                    Some("onvif") => EventSource::Onvif,
                    Some("hikvision") => EventSource::Hikvision,
                    Some("dahua") => EventSource::Dahua,
                    _ => {
                        w.problem(
                            ep,
                            format!("{v} is not one of \"onvif\", \"hikvision\", \"dahua\""),
                        );
                        continue;
                    }
                };
                if events.contains(&src) {
                    w.problem(ep, format!("{v} is listed twice"));
                } else {
                    events.push(src);
                }
            }
        }
        Some(other) => w.problem(
            join(p, "events"),
            format!("must be an array of strings, found {}", kind(other)),
        ),
    }
    let probe = match w.get(t, "probe") {
        None => true,
        Some(Value::Boolean(b)) => *b,
        Some(other) => {
            w.problem(
                join(p, "probe"),
                format!("must be true or false, found {}", kind(other)),
            );
            true
        }
    };
    let basic_auth = match w.get(t, "basic_auth") {
        None => false,
        Some(Value::Boolean(b)) => *b,
        Some(other) => {
            w.problem(
                join(p, "basic_auth"),
                format!("must be true or false, found {}", kind(other)),
            );
            false
        }
    };
    let has_still_source = snapshot_url.is_some()
        || matches!(
            vendor,
            Some(Vendor::Hikvision | Vendor::Dahua | Vendor::Onvif)
        );
    let snapshot = match w.get(t, "snapshot") {
        None => has_still_source,
        Some(Value::Boolean(true)) if !has_still_source => {
            w.problem(
                join(p, "snapshot"),
                "a generic camera has no still URL of its own: set snapshot_url, or snapshot = false",
            );
            false
        }
        Some(Value::Boolean(b)) => *b,
        Some(other) => {
            w.problem(
                join(p, "snapshot"),
                format!("must be true or false, found {}", kind(other)),
            );
            false
        }
    };
    let relay = w.string(t, p, "relay");
    if let Some(r) = &relay {
        if Role::of(r) != Some(Role::Relay) {
            w.problem(
                join(p, "relay"),
                format!("\"{r}\" is not a relay pin name (relayN or relay_<name>)"),
            );
        }
    }
    Some(Camera {
        snapshot,
        relay,
        probe,
        basic_auth,
        id: id?,
        vendor: vendor?,
        host: host?,
        username,
        password,
        http_base: http_base?,
        snapshot_url,
        rtsp_url,
        onvif_url,
        events,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The edge's resolver, minus the device: board files are read, `auto` is not known.
    fn validate(text: &str) -> Result<Config, Invalid> {
        super::validate(text, &|r| {
            boardmap::resolve(r, std::path::Path::new("/nonexistent/device-tree"))
        })
    }

    const GOOD: &str = r#"
[gateway]
id = "q1-p05-gw03"
ward = "q1-p05"
data_dir = "/tmp/camgw"

[mqtt]
url = "mqtt://127.0.0.1:1883"

[[camera]]
id = "cam01"
vendor = "hikvision"
host = "192.168.1.64"
username = "admin"
password = "secret"
events = ["hikvision"]
"#;

    fn problems(text: &str) -> Vec<String> {
        validate(text)
            .unwrap_err()
            .problems
            .iter()
            .map(|p| p.to_string())
            .collect()
    }

    #[test]
    fn camera_urls_are_typed_and_credentials_resolved_by_one_rule() {
        let c = validate(&format!(
            "{GOOD}snapshot_url = \"http://192.168.1.64/ISAPI/Streaming/channels/101/picture\"\nrtsp_url = \"rtsp://192.168.1.64/Streaming/Channels/101\"\n"
        ))
        .unwrap();
        let cam = &c.cameras[0];
        assert_eq!(cam.rtsp_url.as_ref().unwrap().port, 554);
        assert_eq!(
            cam.snapshot_url.as_ref().unwrap().path,
            "/ISAPI/Streaming/channels/101/picture"
        );
        let cr = cam.creds().unwrap();
        assert_eq!((cr.user, cr.password, cr.basic), ("admin", "secret", false));
        // A user name in a URL stands in for `username`; the URL keeps none; no password
        // configured means an empty one, for every consumer alike.
        let text = GOOD.replace(
            "username = \"admin\"\npassword = \"secret\"\n",
            "basic_auth = true\n",
        ) + "rtsp_url = \"rtsp://viewer@192.168.1.64/live\"\n";
        let c = validate(&text).unwrap();
        let cam = &c.cameras[0];
        assert_eq!(cam.rtsp_url.as_ref().unwrap().userinfo, None);
        let cr = cam.creds().unwrap();
        assert_eq!((cr.user, cr.password, cr.basic), ("viewer", "", true));
        // No user name anywhere: no credentials.
        let c = validate(&GOOD.replace("username = \"admin\"\n", "")).unwrap();
        assert!(c.cameras[0].creds().is_none());
    }

    #[test]
    fn good_config_gets_contract_defaults() {
        let c = validate(GOOD).unwrap();
        assert_eq!(c.mqtt.brokers.first().port, 1883);
        assert!(!c.mqtt.brokers.first().tls);
        assert_eq!(c.mqtt.keep_alive, Duration::from_secs(30));
        assert_eq!(c.mqtt.topic_prefix, "camgw");
        assert_eq!(c.buffer.max_bytes, 64 << 20);
        assert_eq!(c.buffer.sync, SyncMode::Interval);
        assert_eq!(c.buffer.sync_interval, Duration::from_millis(200));
        assert_eq!(c.health.fail_threshold, 3);
        assert_eq!(c.health.recover_threshold, 2);
        assert_eq!(c.gateway.board, BoardRef::None);
        assert_eq!(c.ingest, None);
        assert_eq!(c.cameras[0].http_base.absolute(), "http://192.168.1.64:80/");
        assert_eq!(c.topic_root(), "camgw/q1-p05/q1-p05-gw03");
    }

    #[test]
    fn validation_reads_no_board_file_itself() {
        // The board file named is not on disk: only the resolver the caller passes is asked.
        let text = GOOD.replace(
            "data_dir = \"/tmp/camgw\"",
            "data_dir = \"/tmp/camgw\"\nboard = \"/nowhere/box.toml\"",
        ) + "relay = \"relay1\"\n";
        let asked = std::cell::Cell::new(0);
        let board = boardmap::parse(
            "name = \"box\"\nbackend = \"sim\"\n[pins]\nrelay1 = { chip = \"sim\", line = 5 }\n",
        )
        .unwrap();
        let c = super::validate(&text, &|r| {
            asked.set(asked.get() + 1);
            assert_eq!(*r, BoardRef::File("/nowhere/box.toml".into()));
            Ok(Some(board.clone()))
        })
        .unwrap();
        assert_eq!(asked.get(), 1);
        assert_eq!(c.gateway.board.to_string(), "/nowhere/box.toml");
        let e = super::validate(&text, &|_| Err("the resolver's own words".into())).unwrap_err();
        let p: Vec<String> = e.problems.iter().map(|p| p.to_string()).collect();
        assert!(
            p.iter()
                .any(|l| l.contains("gateway.board: the resolver's own words")),
            "{p:?}"
        );
    }

    #[test]
    fn board_settings_are_checked_against_the_board_file() {
        let base = GOOD.replace(
            "data_dir = \"/tmp/camgw\"",
            "data_dir = \"/tmp/camgw\"\nboard = \"rpi4\"",
        );
        let ok = format!("{base}relay = \"relay2\"\n[board]\nover_temperature_c = 65.5\ninputs = {{ pir1 = \"cam01\", door1 = \"gate\" }}\n");
        let c = validate(&ok).unwrap();
        assert_eq!(c.cameras[0].relay.as_deref(), Some("relay2"));
        assert_eq!(c.board.over_temperature_c, 65.5);
        assert_eq!(c.board.inputs["door1"], "gate");
        assert_eq!(c.gateway.disk_low_mb, 100);
        let bad = format!("{base}relay = \"relay9\"\n[board]\ninputs = {{ pir7 = \"cam01\", status_led = \"x\" }}\nhardware_watchdog = \"\"\nover_temperature_c = 500\ncolour = 1\n");
        let p = problems(&bad);
        for want in [
            "board.inputs.pir7: board rpi4 has no input pir7",
            "board.inputs.status_led: not a motion input",
            "camera[0].relay: board rpi4 has no relay relay9",
            "board.hardware_watchdog: must not be empty",
            "board.over_temperature_c: 500 is out of range",
            "board.colour: unknown key",
        ] {
            assert!(p.iter().any(|l| l.contains(want)), "{want} in {p:?}");
        }
        let none = format!("{GOOD}relay = \"relay1\"\n");
        assert!(problems(&none).iter().any(|l| l.contains("need a board")));
        let p = problems(&GOOD.replace(
            "data_dir = \"/tmp/camgw\"",
            "board = \"/nonexistent/box.toml\"",
        ));
        assert!(
            p.iter()
                .any(|l| l.contains("gateway.board: cannot read board file /nonexistent/box.toml")),
            "{p:?}"
        );
        let p = problems(&GOOD.replace("data_dir = \"/tmp/camgw\"", "board = \"rpi9\""));
        assert!(
            p.iter().any(|l| l.contains("unknown board \"rpi9\"")),
            "{p:?}"
        );
    }

    #[test]
    fn every_problem_is_reported_with_its_key_path() {
        let text = GOOD
            .replace("id = \"q1-p05-gw03\"", "id = \"Q1 GW\"\nfoo = 1")
            .replace(
                "url = \"mqtt://127.0.0.1:1883\"",
                "url = \"http://x\"\nkeep_alive_s = \"30\"",
            )
            + "\n[buffer]\nsync = \"sometimes\"\n";
        let p = problems(&text);
        let joined = p.join("\n");
        assert!(
            joined.contains("gateway.id: \"Q1 GW\" may only contain"),
            "{joined}"
        );
        assert!(joined.contains("gateway.foo: unknown key"), "{joined}");
        assert!(joined.contains("mqtt.url: scheme \"http\""), "{joined}");
        assert!(
            joined.contains("mqtt.keep_alive_s: must be an integer"),
            "{joined}"
        );
        assert!(
            joined.contains("buffer.sync: \"sometimes\" is not one of"),
            "{joined}"
        );
        assert_eq!(p.len(), 5, "{joined}");
    }

    #[test]
    fn duplicate_camera_ids_and_unknown_camera_keys_are_refused() {
        let text = format!(
            "{GOOD}\n[[camera]]\nid = \"cam01\"\nvendor = \"dahua\"\nhost = \"h\"\nwhatever = true\n"
        );
        let joined = problems(&text).join("\n");
        assert!(
            joined.contains("camera[1].id: duplicate camera id"),
            "{joined}"
        );
        assert!(
            joined.contains("camera[1].whatever: unknown key"),
            "{joined}"
        );
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let p = problems("[gateway]\nid = \n");
        assert!(p[0].starts_with("line 2: TOML syntax error"), "{p:?}");
    }

    #[test]
    fn secrets_never_show_in_debug() {
        let c = validate(GOOD).unwrap();
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("secret"), "{dbg}");
        assert!(dbg.contains("***"));
    }

    #[test]
    fn mqtt_urls_is_an_ordered_list_and_excludes_url() {
        let list = GOOD.replace(
            "url = \"mqtt://127.0.0.1:1883\"",
            "urls = [\"mqtt://ward-a:1883\", \"mqtts://city-b\", \"mqtt://[::1]:1884\"]",
        );
        let c = validate(&list).unwrap();
        let shown: Vec<String> = c.mqtt.brokers.iter().map(|b| b.to_string()).collect();
        assert_eq!(
            shown,
            [
                "mqtt://ward-a:1883",
                "mqtts://city-b:8883",
                "mqtt://[::1]:1884"
            ]
        );
        let both = GOOD.replace(
            "url = \"mqtt://127.0.0.1:1883\"",
            "url = \"mqtt://a:1\"\nurls = [\"mqtt://b:1\"]",
        );
        assert!(problems(&both)
            .join("\n")
            .contains("mqtt.urls: set either mqtt.url or mqtt.urls, not both"));
        for (urls, says) in [
            ("[]", "mqtt.urls: must list 1 to 8 brokers (it lists 0)"),
            (
                "\"mqtt://a:1\"",
                "mqtt.urls: must be a list of URLs, found a string",
            ),
            (
                "[\"mqtt://a:1\", 5]",
                "mqtt.urls[1]: must be a string, found an integer",
            ),
            ("[\"mqtt://a:1\", \"http://b\"]", "mqtt.urls[1]: "),
            (
                "[\"mqtt://a:1\", \"mqtt://a:1\"]",
                "mqtt.urls[1]: mqtt://a:1 is listed twice",
            ),
            (
                "[\"mqtt://u:hunter2@a:1\"]",
                "mqtt.urls[0]: credentials do not belong in the URL",
            ),
        ] {
            let text = GOOD.replace("url = \"mqtt://127.0.0.1:1883\"", &format!("urls = {urls}"));
            let joined = problems(&text).join("\n");
            assert!(joined.contains(says), "{urls}: {joined}");
            assert!(!joined.contains("hunter2"), "{joined}");
        }
        let tls_files = list.replace("mqtts://city-b", "mqtt://city-b") + "";
        let tls_files = tls_files.replace("[mqtt]\n", "[mqtt]\nca_file = \"/etc/camgw/ca.pem\"\n");
        assert!(problems(&tls_files)
            .join("\n")
            .contains("mqtt.urls: TLS files are set but no URL is mqtts://"));
    }

    #[test]
    fn mqtts_defaults_to_8883_and_credentials_in_url_are_refused() {
        let c = validate(&GOOD.replace("mqtt://127.0.0.1:1883", "mqtts://broker.example")).unwrap();
        assert!(c.mqtt.brokers.first().tls);
        assert_eq!(c.mqtt.brokers.first().port, 8883);
        let joined = problems(&GOOD.replace("mqtt://127.0.0.1:1883", "mqtt://u:p@h")).join("\n");
        assert!(
            joined.contains("credentials do not belong in the URL"),
            "{joined}"
        );
        assert!(!joined.contains("u:p"), "{joined}");
    }

    #[test]
    fn a_camera_url_carrying_a_password_is_refused_without_printing_it() {
        for key in ["rtsp_url", "snapshot_url", "onvif_url", "http_base"] {
            let scheme = if key == "rtsp_url" { "rtsp" } else { "http" };
            let extra = format!("{key} = \"{scheme}://admin:Sup3rS3cret@10.0.0.9:8554/x\"");
            let p = problems(&GOOD.replace(
                "[[camera]]\nid = \"cam01\"",
                &format!("[[camera]]\nid = \"cam01\"\n{extra}"),
            ));
            let joined = p.join("\n");
            assert!(
                joined.contains(&format!("camera[0].{key}: credentials do not belong")),
                "{joined}"
            );
            assert!(!joined.contains("Sup3rS3cret"), "{joined}");
        }
        // A bad port in a URL that also carries a password: still not printed.
        let p = problems(&GOOD.replace(
            "[[camera]]\nid = \"cam01\"",
            "[[camera]]\nid = \"cam01\"\nrtsp_url = \"rtsp//admin:Sup3rS3cret@h\"",
        ));
        assert!(!p.join("\n").contains("Sup3rS3cret"), "{p:?}");
        assert_eq!(redact_url("rtsp://u:pw@h:1/x?y"), "rtsp://u:***@h:1/x?y");
        assert_eq!(redact_url("rtsp://u@h/x"), "rtsp://u@h/x");
        // The reviewer's cases: a password holding `/` or `?`, a URL in an id.
        assert_eq!(
            redact_url("rtsp://admin:Secr/et@10.0.0.9/x"),
            "rtsp://admin:***@10.0.0.9/x"
        );
        assert_eq!(
            redact_url("\"rtsp://a:Se?cret@h\" and x:y@z"),
            "\"rtsp://a:***@h\" and x:***@z"
        );
        for url in [
            "rtsp://admin:Secr/et@10.0.0.9/x",
            "rtsp://admin:Se?cret@10.0.0.9/x",
        ] {
            let e = check_url(url, &["rtsp"]).unwrap_err();
            assert!(
                e.contains("credentials") && !e.contains("Secr") && !e.contains("Se?"),
                "{e}"
            );
        }
        let p = problems(&GOOD.replace("id = \"cam01\"", "id = \"rtsp://admin:Sup3rS3cret@h/x\""));
        assert!(!p.join("\n").contains("Sup3rS3cret"), "{p:?}");
        // A user name alone is allowed.
        assert!(check_url("rtsp://admin@h/x", &["rtsp"]).is_ok());
    }

    #[test]
    fn camera_urls_honour_ports_and_schemes() {
        let text = GOOD.replace(
            "events = [\"hikvision\"]",
            "events = [\"hikvision\"]\nrtsp_url = \"http://x:554/\"\nsnapshot_url = \"http://x:99999/\"",
        );
        let joined = problems(&text).join("\n");
        assert!(
            joined.contains("camera[0].rtsp_url: scheme \"http\""),
            "{joined}"
        );
        assert!(
            joined.contains("camera[0].snapshot_url: \"http://x:99999/\" has an invalid port"),
            "{joined}"
        );
    }

    #[test]
    fn command_keys_must_be_32_byte_base64() {
        let text = format!("{GOOD}\n[security]\ncommand_keys = [\"AAAA\", \"!!\"]\n")
            .replace("[[camera]]", "[[camera]]");
        // [security] after [[camera]] would nest under camera; put it first.
        let text = text.replace("\n[security]\ncommand_keys = [\"AAAA\", \"!!\"]\n", "");
        let text = format!("[security]\ncommand_keys = [\"AAAA\", \"!!\"]\n{text}");
        let joined = problems(&text).join("\n");
        assert!(
            joined
                .contains("security.command_keys[0]: an Ed25519 public key is 32 bytes, this is 3"),
            "{joined}"
        );
        assert!(
            joined.contains("security.command_keys[1]: not valid base64"),
            "{joined}"
        );
    }
}
