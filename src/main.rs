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
enum Command {
    /// Run the agent in the foreground until SIGTERM or SIGINT.
    Run {
        #[arg(long)]
        config: PathBuf,
    },
    /// Validate a config file: exit 0 when valid, 1 with one line per problem otherwise.
    CheckConfig { file: PathBuf },
    /// The whole system on this machine: broker, simulated cameras, agent, station view.
    #[cfg(feature = "demo")]
    Demo {
        /// Stop after this many seconds (default: when the script has run).
        #[arg(long)]
        seconds: Option<u64>,
    },
    /// An embedded MQTT broker on 127.0.0.1 (used by the demo, and by tests where Mosquitto is absent).
    #[cfg(feature = "demo")]
    #[command(hide = true)]
    EmbeddedBroker {
        #[arg(long)]
        port: u16,
    },
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CAMGW_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { file } => match camgw::config::Config::load(&file) {
            Ok(_) => {
                println!("{}: ok", file.display());
                ExitCode::SUCCESS
            }
            Err(invalid) => {
                print_problems(&file, &invalid);
                ExitCode::from(1)
            }
        },
        Command::Run { config } => {
            let cfg = match camgw::config::Config::load(&config) {
                Ok(c) => c,
                Err(invalid) => {
                    print_problems(&config, &invalid);
                    return ExitCode::from(2);
                }
            };
            init_logging();
            let clock = Arc::new(camgw::clock::SystemClock);
            match runtime().block_on(camgw::agent::run(cfg, clock)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("camgw: {e:#}");
                    ExitCode::from(1)
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
