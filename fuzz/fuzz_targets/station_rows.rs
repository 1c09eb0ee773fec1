//! What the station recorder parses from the broker (`station::serve::rows::classify`): a
//! topic and a payload from anyone on the ward broker. It never panics, and every text it
//! keeps is within its bounds.
#![no_main]
use camgw::station::serve::rows::{classify, Row, MAX_PROBLEMS, MAX_RAW, MAX_TEXT};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first line is the topic, the rest the payload.
    let (topic, payload) = match data.iter().position(|b| *b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let topic = String::from_utf8_lossy(topic);
    match classify("camgw", &topic, payload) {
        Row::Health {
            camera, state, problems, ..
        } => {
            assert!(camera.len() <= MAX_TEXT && state.len() <= MAX_TEXT);
            assert!(problems.len() <= MAX_PROBLEMS);
            assert!(problems.iter().all(|p| p.len() <= MAX_TEXT));
        }
        Row::Alert { id, kind, detail, .. } => {
            assert!(id.len() <= MAX_TEXT && kind.len() <= MAX_TEXT && detail.len() <= MAX_RAW);
        }
        Row::Event { id, camera, .. } => assert!(id.len() <= MAX_TEXT && camera.len() <= MAX_TEXT),
        Row::Unreadable { topic, payload, .. } => {
            assert!(topic.len() <= MAX_TEXT && payload.len() <= MAX_RAW)
        }
        Row::Telemetry { body, .. } => assert!(body.len() <= MAX_RAW),
        _ => {}
    }
});
