//! WS-Discovery ProbeMatches from anything on the camera LAN.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((_, m)) = camgw::proto::wsdiscovery::parse_matches(data) {
        assert!(m.len() <= camgw::proto::wsdiscovery::MAX_MATCHES);
    }
});
