//! The `camgw` binary: parse the command line, run, print the error chain.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "camgw",
    version,
    about = "Edge agent for neighbourhood camera gateways"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once at start
enum Command {
    /// Run the agent in the foreground until SIGTERM or SIGINT.
    Run {
        #[arg(long)]
        config: PathBuf,
    },
    /// Validate a config file: exit 0 when valid, 1 with one line per problem otherwise.
    CheckConfig { file: PathBuf },
    /// A checklist of everything the gateway needs: config, disk, clock, board, broker, every
    /// camera and event source. Exit 1 when anything fails.
    Doctor {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        json: bool,
        /// en or vi (default: from the locale).
        #[arg(long)]
        lang: Option<String>,
    },
    /// Find ONVIF cameras (WS-Discovery) and print a ready-to-paste [[camera]] block for each.
    Discover {
        /// The interface (eth0) or local IPv4 address to probe from.
        #[arg(long)]
        interface: Option<String>,
        /// Also probe this address directly (a camera on another subnet); repeatable.
        #[arg(long)]
        to: Vec<std::net::SocketAddr>,
        /// How long to wait for answers.
        #[arg(long, default_value_t = 3)]
        timeout_s: u64,
        /// Credentials to read each camera's model (GetDeviceInformation).
        #[arg(long)]
        username: Option<String>,
        #[arg(long, env = "CAMGW_CAMERA_PASSWORD", hide_env_values = true)]
        password: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Look at the on-box event buffer.
    Buffer {
        #[command(subcommand)]
        command: BufferCommand,
    },
    /// The whole system on this machine: broker, simulated cameras, agent, station view.
    #[cfg(feature = "demo")]
    Demo {
        /// Stop after this many seconds (default: when the script has run).
        #[arg(long)]
        seconds: Option<u64>,
    },
    /// Write an Ed25519 key pair for signing commands: PREFIX.key (secret) and PREFIX.pub.
    #[cfg(feature = "station")]
    Keygen {
        #[arg(long)]
        out: PathBuf,
    },
    /// Software releases (city IT's side): sign a release file for over-the-air updates.
    #[cfg(feature = "station")]
    Release {
        #[command(subcommand)]
        command: ReleaseCommand,
    },
    /// Station side: sign a command, publish it, wait for and print the result.
    #[cfg(feature = "station")]
    Cmd {
        /// The secret key from `camgw keygen`.
        #[arg(long)]
        key: PathBuf,
        /// Broker URL, mqtt://host:port or mqtts://host:port.
        #[arg(long)]
        mqtt: String,
        #[arg(long)]
        ward: String,
        #[arg(long)]
        gateway: String,
        /// Seconds to wait for the result (exit 3 after that).
        #[arg(long, default_value_t = 10)]
        timeout_s: u64,
        /// How long the signed command stays valid.
        #[arg(long, default_value_t = 300)]
        ttl_s: u64,
        #[command(flatten)]
        broker: BrokerLogin,
        /// The command, e.g. '{"op":"get_config"}'.
        command: String,
    },
    /// Fleet operations from the station: signed over-the-air updates in rings.
    #[cfg(feature = "station")]
    Fleet {
        #[command(subcommand)]
        command: FleetCommand,
    },
    /// The ward station's tools.
    #[cfg(feature = "station")]
    Station {
        #[command(subcommand)]
        command: StationCommand,
    },
    /// An embedded MQTT broker on 127.0.0.1 (used by the demo, and by tests where Mosquitto is absent).
    #[cfg(feature = "demo")]
    #[command(hide = true)]
    EmbeddedBroker {
        #[arg(long)]
        port: u16,
    },
}

#[cfg(feature = "station")]
#[derive(Subcommand)]
enum ReleaseCommand {
    /// Write FILE.manifest.json: version, target, sha256, size and an Ed25519 signature by a
    /// release key (a key from `camgw keygen`, kept apart from the command keys).
    Sign {
        #[arg(long)]
        key: PathBuf,
        /// The release's version (semver), newer than what the gateways run.
        #[arg(long)]
        version: String,
        /// The target triple the file was built for, e.g. aarch64-unknown-linux-musl.
        #[arg(long)]
        target: String,
        file: PathBuf,
    },
}

#[cfg(feature = "station")]
#[derive(Subcommand)]
enum FleetCommand {
    /// Roll a release out to a ward's gateways, N at a time: each ring must confirm
    /// (`update_applied`) before the next is sent; the first failure stops the rollout. Prints
    /// a table (exit 0 when every gateway applied it or already ran it, 1 otherwise).
    Update {
        /// The command key (from `camgw keygen`) the gateways trust.
        #[arg(long)]
        key: PathBuf,
        /// Broker URL, mqtt://host:port or mqtts://host:port.
        #[arg(long)]
        mqtt: String,
        #[arg(long)]
        ward: String,
        /// The manifest `camgw release sign` wrote.
        #[arg(long)]
        manifest: PathBuf,
        /// Where the gateways download the release (http:// or https://).
        #[arg(long)]
        url: String,
        /// Gateway ids, comma-separated, in rollout order (default: every gateway of the ward
        /// with an online status, by id).
        #[arg(long, value_delimiter = ',')]
        gateways: Option<Vec<String>>,
        /// Gateways per ring.
        #[arg(long, default_value_t = 5)]
        ring: usize,
        /// Per ring: seconds to wait for every gateway's outcome (download, trial, confirm).
        #[arg(long, default_value_t = 900)]
        wait_s: u64,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        broker: BrokerLogin,
    },
}

#[derive(Subcommand)]
enum BufferCommand {
    /// Records per class, oldest and newest pending, bytes, corruption. Read-only: safe while
    /// the agent runs. Exit 0, or 1 when the buffer holds corrupt data.
    Inspect {
        /// The agent's gateway.data_dir.
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

/// How the station tools log in to the ward broker (the same flags for `cmd` and `station`).
#[cfg(feature = "station")]
#[derive(clap::Args)]
struct BrokerLogin {
    #[arg(long, default_value = "camgw")]
    topic_prefix: String,
    #[arg(long)]
    username: Option<String>,
    #[arg(long, env = "CAMGW_MQTT_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    #[arg(long)]
    ca_file: Option<PathBuf>,
}

#[cfg(feature = "station")]
#[derive(Subcommand)]
enum StationCommand {
    /// Live view of every gateway and camera of a ward, and a log of alerts and events.
    Watch {
        /// Broker URL, mqtt://host:port or mqtts://host:port.
        #[arg(long)]
        mqtt: String,
        /// Only this ward (default: every ward on the broker).
        #[arg(long)]
        ward: Option<String>,
        #[command(flatten)]
        broker: BrokerLogin,
        /// Print a snapshot of the current (retained) state and exit.
        #[arg(long)]
        once: bool,
        /// JSON: the snapshot with --once, otherwise one JSON line per alert or event.
        #[arg(long)]
        json: bool,
        /// --once: wait at most this long for the broker.
        #[arg(long, default_value_t = 5)]
        wait_s: u64,
        /// Save every event still received to this folder
        /// (`{gateway}-{camera}-{event id}.jpg`).
        #[arg(long, value_name = "DIR")]
        save_snapshots: Option<PathBuf>,
    },
    /// The station service: records the ward's gateways in a database and serves the web
    /// console, its API and /metrics.
    Serve {
        /// Broker URL, mqtt://host:port or mqtts://host:port.
        #[arg(long)]
        mqtt: String,
        /// The database: a SQLite file (created when absent; stills go in DB.stills/ beside
        /// it), or a postgres:// URL.
        #[arg(long, value_name = "PATH")]
        db: String,
        /// Where the console listens, like 0.0.0.0:8080.
        #[arg(long)]
        listen: std::net::SocketAddr,
        /// Only this ward (default: every ward on the broker).
        #[arg(long)]
        ward: Option<String>,
        #[command(flatten)]
        broker: BrokerLogin,
        /// The MQTT client id of the persistent session [camgw-station-{ward|all}].
        #[arg(long)]
        client_id: Option<String>,
        /// Days of history kept (alerts, events, stills, health, telemetry).
        #[arg(long, default_value_t = 90)]
        retention_days: u32,
        /// The time zone the console shows times in.
        #[arg(long, default_value = "Asia/Ho_Chi_Minh")]
        tz: String,
        /// A key from `camgw keygen`: admins may then send check_now and reboot_camera from
        /// the console, signed with it (the key never leaves the station).
        #[arg(long, value_name = "PREFIX.key")]
        command_key: Option<PathBuf>,
    },
    /// The console's users.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
}

#[cfg(feature = "station")]
#[derive(Subcommand)]
enum UserCommand {
    /// Create a user, or give an existing one a new password and role (ending their
    /// sessions). The password is read from stdin (one trailing newline is stripped).
    Add {
        #[arg(long, value_name = "PATH")]
        db: String,
        #[arg(long)]
        name: String,
        #[arg(long, value_parser = ["officer", "admin"])]
        role: String,
    },
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CAMGW_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| camgw::logs::Tee)
        .init();
}

/// Execs `path` with this process's command line; `launcher` set means the new process was
/// handed over to (not the launcher). Returns only when the exec failed.
fn exec(path: &std::path::Path, launcher: Option<&std::path::Path>) -> std::io::Error {
    exec_version(path, launcher, None)
}

/// [`exec`], telling the new process which installed version it was started as.
fn exec_version(
    path: &std::path::Path,
    launcher: Option<&std::path::Path>,
    version: Option<&semver::Version>,
) -> std::io::Error {
    use std::os::unix::process::CommandExt as _;
    let mut c = std::process::Command::new(path);
    c.args(std::env::args_os().skip(1));
    match launcher {
        Some(l) => c.env(camgw::update::LAUNCHER_ENV, l),
        None => c.env_remove(camgw::update::LAUNCHER_ENV),
    };
    match version {
        Some(v) => c.env(camgw::update::VERSION_ENV, v.to_string()),
        None => c.env_remove(camgw::update::VERSION_ENV),
    };
    c.exec()
}

/// `gateway.data_dir` of a config file, read leniently (for a file this binary cannot
/// validate): the path, or the default when the key is absent.
fn lenient_data_dir(file: &std::path::Path) -> Option<PathBuf> {
    let t: toml::Table = std::fs::read_to_string(file).ok()?.parse().ok()?;
    match t.get("gateway").and_then(|g| g.get("data_dir")) {
        Some(v) => v.as_str().map(PathBuf::from),
        None => Some(PathBuf::from("/var/lib/camgw")),
    }
}

/// The installed version `camgw run` would hand over to for this config, when this binary is
/// the launcher (not itself handed over to) and one is newer: (its file, its version).
fn newer_installed(file: &std::path::Path) -> Option<(PathBuf, semver::Version)> {
    if std::env::var_os(camgw::update::LAUNCHER_ENV).is_some() {
        return None;
    }
    let data_dir = lenient_data_dir(file)?;
    camgw::update::chosen(&data_dir, &camgw::release::running_version())
}

/// The start of `camgw run`: hands over to the installed version that should run (execs it,
/// so this returns only when this binary runs), and says what this start is.
fn choose_version(data_dir: &std::path::Path) -> camgw::update::Local {
    use camgw::update::{start, Start, LAUNCHER_ENV};
    let own = camgw::release::running_version();
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/usr/bin/camgw"));
    let launcher = std::env::var_os(LAUNCHER_ENV)
        .filter(|l| !l.is_empty())
        .map(PathBuf::from);
    // Started as an installed version whose binary says it is another one: it would escape
    // its trial. It is marked failed and the launcher chooses again.
    if let (Some(l), Some(want)) = (&launcher, std::env::var(camgw::update::VERSION_ENV).ok()) {
        if let Ok(want) = semver::Version::parse(&want) {
            if want != own {
                let why = format!("its binary says it is version {own}, not {want}");
                tracing::error!("{why}: handing back to {}", l.display());
                camgw::update::exec_failed(data_dir, &want, &why);
                let e = exec(l, None);
                tracing::error!("cannot exec {}: {e}", l.display());
            }
        }
    }
    let mut trial = false;
    for _ in 0..8 {
        match start(data_dir, &own, launcher.as_deref()) {
            Start::Run { trial: t } => {
                trial = t;
                break;
            }
            Start::Busy => {
                eprintln!(
                    "camgw: another camgw run holds {} (the service?): not starting a second agent on it",
                    data_dir.display()
                );
                std::process::exit(1);
            }
            Start::Exec { path, version } => {
                tracing::info!(binary = %path.display(), version = ?version.as_ref().map(|v| v.to_string()), "handing over");
                camgw::watchdog::notify("WATCHDOG=1");
                // The new process is handed over to unless it is the launcher itself.
                let e = match &version {
                    Some(v) => {
                        exec_version(&path, Some(launcher.as_deref().unwrap_or(&exe)), Some(v))
                    }
                    None => exec(&path, None),
                };
                tracing::error!("cannot exec {}: {e}", path.display());
                match version {
                    Some(v) => {
                        camgw::update::exec_failed(data_dir, &v, &format!("cannot exec it: {e}"))
                    }
                    None => break,
                }
            }
        }
    }
    let launcher = launcher.unwrap_or_else(|| exe.clone());
    camgw::update::Local::new(data_dir, own, trial, launcher, exe)
}

fn print_problems(file: &std::path::Path, invalid: &camgw::config::Invalid) {
    for p in &invalid.problems {
        eprintln!("{}: {}", file.display(), p);
    }
}

fn runtime() -> tokio::runtime::Runtime {
    // Gateways have 1-4 small cores and little memory: two workers are plenty, and glibc's
    // per-thread malloc arenas would otherwise cost megabytes of RSS for nothing.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only tunes the allocator; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        // A fixed mmap threshold: snapshot-sized buffers go back to the kernel when freed
        // instead of raising the threshold and staying resident in the heap.
        libc::mallopt(libc::M_MMAP_THRESHOLD, 64 * 1024);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 * 1024);
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(4)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// `camgw --version`: this binary's version and target, where it runs from, and (from the
/// config at `CAMGW_CONFIG` or /etc/camgw/camgw.toml, when readable) what is installed over
/// the air and which version `camgw run` starts.
fn print_version() {
    let own = camgw::release::running_version();
    let exe = std::env::current_exe().unwrap_or_default();
    println!(
        "camgw {} ({})",
        camgw::release::VERSION,
        camgw::release::TARGET
    );
    let from = if std::env::var_os(camgw::update::LAUNCHER_ENV).is_some() {
        "installed over the air"
    } else {
        "as started"
    };
    println!("binary: {} ({from})", exe.display());
    let path = std::env::var_os("CAMGW_CONFIG")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/etc/camgw/camgw.toml"));
    let Ok(cfg) = camgw::config::Config::load(&path) else {
        return;
    };
    let dir = camgw::update::Dir::new(&cfg.gateway.data_dir);
    let st = dir.peek();
    for v in &st.versions {
        println!(
            "over the air: {} {:?} (from {}; {})",
            v.version,
            v.state,
            v.from,
            dir.path_of(&v.file).display()
        );
    }
    match st.choice(&own) {
        Some(v) => println!(
            "`camgw run` starts {} ({})",
            v.version,
            dir.path_of(&v.file).display()
        ),
        None => println!("`camgw run` starts this binary"),
    }
}

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    if args.len() == 1 && (args[0] == "--version" || args[0] == "-V") {
        print_version();
        return ExitCode::SUCCESS;
    }
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { file } => match camgw::config::Config::load(&file) {
            Ok(_) => {
                println!("{}: ok", file.display());
                ExitCode::SUCCESS
            }
            Err(invalid) => {
                // A newer version installed over the air may know keys this one does not:
                // it checks the file instead (systemd's ExecStartPre runs this binary).
                if let Some((path, version)) = newer_installed(&file) {
                    eprintln!(
                        "{}: not valid for camgw {}; checking with {version}, installed over the air",
                        file.display(),
                        camgw::release::VERSION
                    );
                    let e = exec(&path, Some(&std::env::current_exe().unwrap_or_default()));
                    eprintln!("camgw: cannot exec {}: {e}", path.display());
                }
                print_problems(&file, &invalid);
                ExitCode::from(1)
            }
        },
        Command::Buffer {
            command: BufferCommand::Inspect { data_dir, json },
        } => match camgw::buffer::inspect::inspect(&data_dir) {
            Ok(r) => {
                if json {
                    println!("{}", serde_json::to_string_pretty(&r).unwrap());
                } else {
                    print!("{}", r.text());
                }
                let damaged = r.events.corrupt + r.alerts.corrupt > 0
                    || !r.events.bad_segments.is_empty()
                    || !r.alerts.bad_segments.is_empty();
                if damaged {
                    ExitCode::from(1)
                } else {
                    ExitCode::SUCCESS
                }
            }
            Err(e) => {
                eprintln!("camgw buffer inspect: {e}");
                ExitCode::from(2)
            }
        },
        Command::Discover {
            interface,
            to,
            timeout_s,
            username,
            password,
            json,
        } => {
            let args = camgw::discover::Args {
                interface: interface.as_deref(),
                to,
                timeout: std::time::Duration::from_secs(timeout_s),
                username: username.as_deref(),
                password: password.as_deref(),
            };
            match runtime().block_on(camgw::discover::discover(args)) {
                Ok(found) => {
                    if json {
                        println!("{}", serde_json::to_string_pretty(&found).unwrap());
                    } else {
                        for f in &found {
                            println!("{}", camgw::discover::camera_block(f, username.as_deref()));
                            if let Some(e) = &f.info_error {
                                eprintln!("{}: device information: {e}", f.host);
                            }
                        }
                    }
                    eprintln!("found {} camera(s)", found.len());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("camgw discover: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Doctor { config, json, lang } => {
            let lang = camgw::doctor::Lang::pick(lang.as_deref());
            let clock = Arc::new(camgw::clock::SystemClock);
            let report = runtime().block_on(camgw::doctor::run(&config, lang, clock));
            if json {
                println!("{}", serde_json::to_string_pretty(&report).unwrap());
            } else {
                print!("{}", report.text());
            }
            if report.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Command::Run { config } => {
            // A config trial that a crash interrupted ends on the last good config, before
            // anything reads the file.
            let recovered = match camgw::trial::recover(&config) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!(
                        "camgw: {}: a config trial was interrupted and the last good config \
                         cannot be restored: {e}",
                        config.display()
                    );
                    None
                }
            };
            let cfg = match camgw::config::Config::load(&config) {
                Ok(c) => c,
                Err(invalid) => {
                    // Written for a newer version installed over the air (a set_config that
                    // used its new keys): let that version start, with its own rules.
                    if newer_installed(&config).is_some() {
                        if let Some(data_dir) = lenient_data_dir(&config) {
                            init_logging();
                            tracing::warn!(
                                "{}: not valid for camgw {}: starting the newer version installed over the air",
                                config.display(),
                                camgw::release::VERSION
                            );
                            choose_version(&data_dir);
                        }
                    }
                    print_problems(&config, &invalid);
                    return ExitCode::from(2);
                }
            };
            init_logging();
            let local = choose_version(&cfg.gateway.data_dir);
            let clock = Arc::new(camgw::clock::SystemClock);
            let ran = runtime().block_on(camgw::agent::run(
                config,
                cfg,
                clock,
                recovered,
                Some(local),
            ));
            match ran {
                Ok(None) => ExitCode::SUCCESS,
                Ok(Some(launcher)) => {
                    // The runtime is gone: hand over to the launcher, which chooses again. A
                    // last ping first: the next version's first comes only after its start.
                    camgw::watchdog::notify("WATCHDOG=1");
                    let e = exec(&launcher, None);
                    eprintln!("camgw: cannot exec {}: {e}", launcher.display());
                    ExitCode::from(1)
                }
                Err(e) => {
                    eprintln!("camgw: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
        #[cfg(feature = "station")]
        Command::Station {
            command:
                StationCommand::Watch {
                    mqtt,
                    ward,
                    broker,
                    once,
                    json,
                    wait_s,
                    save_snapshots,
                },
        } => {
            let args = camgw::station::watch::WatchArgs {
                mqtt: &mqtt,
                ward: ward.as_deref(),
                topic_prefix: &broker.topic_prefix,
                username: broker.username.as_deref(),
                password: broker.password.as_deref(),
                ca_file: broker.ca_file.as_deref(),
                once,
                json,
                wait: std::time::Duration::from_secs(wait_s),
                save_snapshots: save_snapshots.as_deref(),
            };
            match runtime().block_on(camgw::station::watch::watch(args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("camgw station watch: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
        #[cfg(feature = "station")]
        Command::Station {
            command:
                StationCommand::Serve {
                    mqtt,
                    db,
                    listen,
                    ward,
                    broker,
                    client_id,
                    retention_days,
                    tz,
                    command_key,
                },
        } => {
            init_logging();
            let args = camgw::station::serve::ServeArgs {
                mqtt,
                db,
                listen,
                ward,
                topic_prefix: broker.topic_prefix,
                username: broker.username,
                password: broker.password,
                ca_file: broker.ca_file,
                client_id,
                retention_days,
                tz,
                command_key,
            };
            match runtime().block_on(camgw::station::serve::serve(args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("camgw station serve: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
        #[cfg(feature = "station")]
        Command::Station {
            command:
                StationCommand::User {
                    command: UserCommand::Add { db, name, role },
                },
        } => {
            let mut input = String::new();
            if let Err(e) = std::io::Read::read_to_string(&mut std::io::stdin(), &mut input) {
                eprintln!("camgw station user add: cannot read the password from stdin: {e}");
                return ExitCode::from(1);
            }
            let password = camgw::station::serve::password_from(&input);
            match camgw::station::serve::user_add(&db, &name, &role, password) {
                Ok(replaced) => {
                    eprintln!(
                        "{} {name} ({role})",
                        if replaced { "updated" } else { "added" }
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("camgw station user add: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
        #[cfg(feature = "station")]
        Command::Release {
            command:
                ReleaseCommand::Sign {
                    key,
                    version,
                    target,
                    file,
                },
        } => match camgw::station::release_sign(&key, &version, &target, &file) {
            Ok(path) => {
                println!("{}", path.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("camgw release sign: {e:#}");
                ExitCode::from(1)
            }
        },
        #[cfg(feature = "station")]
        Command::Keygen { out } => {
            match camgw::station::keygen(&out) {
                Ok(public) => {
                    println!("{public}");
                    eprintln!("wrote {0}.key (keep it secret) and {0}.pub (put it in security.command_keys)", out.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("camgw keygen: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
        #[cfg(feature = "station")]
        Command::Fleet {
            command:
                FleetCommand::Update {
                    key,
                    mqtt,
                    ward,
                    manifest,
                    url,
                    gateways,
                    ring,
                    wait_s,
                    json,
                    broker,
                },
        } => {
            let args = camgw::station::fleet::Args {
                key: &key,
                mqtt: &mqtt,
                ward: &ward,
                topic_prefix: &broker.topic_prefix,
                manifest: &manifest,
                url: &url,
                gateways,
                ring,
                wait: std::time::Duration::from_secs(wait_s),
                username: broker.username.as_deref(),
                password: broker.password.as_deref(),
                ca_file: broker.ca_file.as_deref(),
            };
            match runtime().block_on(camgw::station::fleet::update(args)) {
                Ok(r) => {
                    if json {
                        println!("{}", serde_json::to_string_pretty(&r.rows).unwrap());
                    } else {
                        print!("{}", r.table());
                    }
                    if r.ok() {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::from(1)
                    }
                }
                Err(e) => {
                    eprintln!("camgw fleet update: {e:#}");
                    ExitCode::from(2)
                }
            }
        }
        #[cfg(feature = "station")]
        Command::Cmd {
            key,
            mqtt,
            ward,
            gateway,
            timeout_s,
            ttl_s,
            broker,
            command,
        } => {
            let args = camgw::station::CmdArgs {
                key: &key,
                mqtt: &mqtt,
                ward: &ward,
                gateway: &gateway,
                command: &command,
                timeout: std::time::Duration::from_secs(timeout_s),
                topic_prefix: &broker.topic_prefix,
                ttl: std::time::Duration::from_secs(ttl_s),
                username: broker.username.as_deref(),
                password: broker.password.as_deref(),
                ca_file: broker.ca_file.as_deref(),
            };
            match runtime().block_on(camgw::station::cmd(args)) {
                Ok(camgw::station::CmdOutcome::Result(v)) => {
                    println!("{v}");
                    if v["ok"] == true {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::from(1)
                    }
                }
                Ok(camgw::station::CmdOutcome::Timeout) => {
                    eprintln!("camgw cmd: no result within {timeout_s} s");
                    ExitCode::from(3)
                }
                Err(e) => {
                    eprintln!("camgw cmd: {e:#}");
                    ExitCode::from(2)
                }
            }
        }
        #[cfg(feature = "demo")]
        Command::EmbeddedBroker { port } => match camgw::demo::embedded_broker(port) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("camgw embedded-broker: {e:#}");
                ExitCode::from(1)
            }
        },
        #[cfg(feature = "demo")]
        Command::Demo { seconds } => match runtime().block_on(camgw::demo::run(seconds)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("camgw demo: {e:#}");
                ExitCode::from(1)
            }
        },
    }
}
