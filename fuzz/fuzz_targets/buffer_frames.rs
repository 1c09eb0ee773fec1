//! Buffer segment frames as recovery reads them from disk: scan never panics and every
//! record it yields lies inside the input. Also still files and their names (buffer/stills/):
//! a name parses only if it is exactly the one its meta writes, a file decodes only whole.
#![no_main]
use camgw::buffer::frame;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = frame::parse_header(data);
    let end = frame::scan(data, |off, _, len| assert!(off + len <= data.len()));
    assert!(end.valid_end <= data.len());
    let _ = frame::decode_frame(data);
    use camgw::buffer::stills;
    if let Some(jpeg) = stills::decode(data) {
        assert!(jpeg.len() + stills::HEAD_LEN == data.len());
    }
    if let Ok(name) = std::str::from_utf8(data) {
        if let Some(m) = stills::StillMeta::parse_name(name, 0) {
            assert_eq!(m.file_name(), name);
        }
    }
});
