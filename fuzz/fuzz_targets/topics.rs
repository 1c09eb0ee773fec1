//! Topic names from the broker (the station tools parse every topic they receive): parsing
//! never panics, and whatever parses builds back to the same topic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(t) = std::str::from_utf8(data) {
        if let Some((ward, gw, leaf)) = camgw::topics::parse("camgw", t) {
            let root = camgw::topics::root("camgw", ward, gw);
            assert_eq!(camgw::topics::topic(&root, leaf), t);
        }
    }
});
