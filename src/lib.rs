//! camgw: the edge agent for neighbourhood camera gateways.
//!
//! Layout (one module per concern; data flows source → `buffer` → `uplink` → broker):
//! - [`clock`]: the `Clock` trait (now, and whether the kernel clock is synchronised).
//! - [`config`]: TOML → raw table → pure validation → typed `Config`.
//! - [`record`]: the alert/event `Record` and its wire encodings (JSON, postcard).
//! - [`buffer`]: the durable, crash-safe segment buffer (its module doc is the spec).
//! - [`bus`]: retained latest values, the outbox and telemetry gauges the parts share with
//!   the uplink.
//! - [`uplink`]: the MQTT session: pure in-flight/packet-id state, backoff, the rumqttc task.
//! - [`events`]: camera event streams (Hikvision, Dahua), pure multipart parser and coalescer.
//! - [`health`]: camera probes (TCP, snapshot, RTSP, ONVIF), pure image checks and hysteresis.
//! - [`faults`]: fault injection for the containment tests (`sim` builds only).
//! - [`heavy`]: CPU-heavy work on peer bytes (JPEG, large XML) in a bounded pool with a deadline.
//! - [`snapshot`]: event stills: fetched per motion start, scaled, budgeted, buffered.
//! - [`ingest`]: the HTTP ingest server (`POST /v1/events`).
//! - [`proto`]: the protocol layer, where peer bytes are parsed: camera HTTP and Digest,
//!   multipart, ONVIF SOAP, RTSP, Hikvision/Dahua bodies, WS-Discovery, XML, backoff.
//! - [`logs`]: outside values clipped for logs; repeated warnings rate-limited.
//! - [`release`]: software releases: the signed manifest and the checks an update must pass.
//! - [`remote`]: signed commands (Ed25519 envelope, replay memory), ops, config apply/rollback.
//! - [`metrics`]: the gateway's optional `GET /metrics` (Prometheus text).
//! - [`station`]: the ward-station side: `keygen`, `cmd`, `station watch`, `station serve`.
//! - [`boardmap`]: board pin maps from `boards/` (data), typed, and the board reference.
//! - [`board`]: the gateway's hardware: embedded-hal drivers (inputs,
//!   LED, relays, I2C temperature), Linux and simulated backends, the board task.
//! - [`system`]: the gateway's self-health (CPU temperature, load, memory, disk) for telemetry.
//! - [`topics`]: topic names, built and parsed in one place.
//! - [`upgrade`]: which installed version runs, and the trial of a new one (pure).
//! - [`trial`]: the durable trial of a config from `set_config` (crash-safe rollback).
//! - [`watchdog`]: systemd notify and the hardware watchdog, pinged only while every loop
//!   progresses.
//! - [`agent`]: `camgw run`: wires config, buffer, uplink and ingest; signals and shutdown.
//! - [`sim`]: simulated cameras speaking the real wire formats (tests, demo).
//! - [`demo`]: `camgw demo`: embedded broker, simulated cameras, station view.
//! - [`doctor`]: `camgw doctor`: the technician's checklist (English and Vietnamese).

pub mod agent;
pub mod board;
pub mod boardmap;
pub mod buffer;
pub mod bus;
pub mod clock;
pub mod config;
#[cfg(feature = "demo")]
pub mod demo;
pub mod discover;
pub mod doctor;
pub mod durable;
pub mod events;
pub mod faults;
pub mod health;
pub mod heavy;
pub mod ingest;
pub mod logs;
pub mod metrics;
pub mod proto;
pub mod record;
pub mod release;
pub mod remote;
#[cfg(feature = "sim")]
pub mod sim;
pub mod snapshot;
#[cfg(feature = "station")]
pub mod station;
pub mod system;
pub mod topics;
pub mod trial;
pub mod update;
pub mod upgrade;
pub mod uplink;
pub mod watchdog;

/// Test data shared by the unit tests.
#[cfg(test)]
pub(crate) mod testdata {
    /// One of our own captures in `testdata/` (see testdata/README.md). Always there: a
    /// missing one fails the test.
    pub fn own(name: &str) -> Vec<u8> {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("testdata")
            .join(name);
        std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    /// A third-party capture from `../shared/fixtures/` (see its SOURCES.md; not copied
    /// into the repository), or `None` with a message when that folder is absent.
    pub fn fixture(name: &str) -> Option<Vec<u8>> {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../shared/fixtures")
            .join(name);
        std::fs::read(&p)
            .map_err(|_| eprintln!("fixture {} absent: skipped", p.display()))
            .ok()
    }
}
