//! The protocol layer: the one place where bytes from peers are parsed and peers' wire
//! formats are written. Cameras (HTTP with Basic/Digest, multipart event streams, ONVIF SOAP,
//! RTSP, Hikvision ISAPI and Dahua event bodies, WS-Discovery), their timestamps, and the
//! backoff every reconnect loop uses.
//!
//! Layering rule: `proto` imports only the foundation below it (`clock`, `logs`, `heavy`),
//! never a module above (config, buffer, health, events, uplink, agent...). Every decoder
//! here is bounded in memory and linear in time whatever it is fed, has a fuzz target in
//! `fuzz/`, and returns a typed error or a message, never a panic.

pub mod backoff;
pub mod camtime;
pub mod dahua;
pub mod hikvision;
pub mod http;
pub mod jpeg;
pub mod multipart;
pub mod onvif;
pub mod rtsp;
pub mod wsdiscovery;
pub mod xml;
