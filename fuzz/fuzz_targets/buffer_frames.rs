//! Buffer segment frames as recovery reads them from disk: scan never panics and every
//! record it yields lies inside the input.
#![no_main]
use camgw::buffer::frame;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = frame::parse_header(data);
    let end = frame::scan(data, |off, _, len| assert!(off + len <= data.len()));
    assert!(end.valid_end <= data.len());
    let _ = frame::decode_frame(data);
});
