//! Dahua eventManager fields (`Code=VideoMotion;action=Start;index=0`).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(e) = camgw::proto::dahua::parse(data) {
        let _ = camgw::proto::dahua::classify(&e);
    }
});
