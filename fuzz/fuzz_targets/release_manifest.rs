//! A release manifest as an `update` command carries it (JSON from the broker): parsing and
//! checking never panic, and nothing passes without a release key's signature.
#![no_main]
use camgw::release::{running_version, Manifest, TARGET};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    // The public key of the secret [7; 32]: no input carries its signature.
    let key = [
        0xea, 0x4a, 0x6c, 0x63, 0xe2, 0x9c, 0x52, 0x0a, 0xbe, 0xf5, 0x50, 0x7b, 0x13, 0x2e, 0xc5,
        0xf9, 0x95, 0x47, 0x76, 0xae, 0xbe, 0xbe, 0x7b, 0x92, 0x42, 0x1e, 0xea, 0x69, 0x14, 0x46,
        0xd2, 0x2c,
    ];
    match Manifest::check(&v, &[key], &running_version(), TARGET) {
        Ok(m) => panic!("accepted without a release key's signature: {m:?}"),
        Err(e) => {
            assert!(!e.reason().is_empty());
            let _ = e.to_string();
        }
    }
});
