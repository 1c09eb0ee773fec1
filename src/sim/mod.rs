//! Simulated cameras for tests and `camgw demo`, speaking the real wire formats: HTTP with
//! Digest auth serving JPEG snapshots, an ONVIF device service (SOAP with WS-UsernameToken),
//! and an RTSP server sending RTP over TCP-interleaved. Each failure a real camera shows can be
//! switched on at run time: down, frozen, black, password changed, accepting TCP but never
//! answering, a stream that plays without frames, a drifting clock.

pub mod camera;
pub mod discovery;
pub mod hostile;
pub mod jpeg;

pub use camera::{SimCamera, SimControl};
