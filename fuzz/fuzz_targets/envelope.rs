//! The signed command envelope: never panics, never verifies without the key's signature,
//! and a result label is always of the id grammar.
#![no_main]
use camgw::remote::envelope::{valid_id, verify};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = [7u8; 32];
    match verify(data, &[key], "gw1", "w1", 1_796_000_000_000, 300_000) {
        Ok(_) => panic!("verified without a signature by the key"),
        Err((Some(id), _)) => assert!(valid_id(&id)),
        Err((None, _)) => {}
    }
});
