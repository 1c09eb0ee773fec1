//! Snapshot analysis and event-still scaling: the header is read first and a picture above
//! the pixel bound is refused undecoded; a still that decodes scales to at most the width
//! asked for.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = camgw::health::image::analyze(data);
    if let Ok(s) = camgw::proto::jpeg::scale(data, 64, 50) {
        assert!(s.width <= 64 && s.width >= 1 && s.height >= 1);
    }
});
