//! Snapshot analysis: the header is read first and a picture above the pixel bound is
//! refused undecoded.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = camgw::health::image::analyze(data);
});
