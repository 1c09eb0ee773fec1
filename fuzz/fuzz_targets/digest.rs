//! WWW-Authenticate challenges from cameras (Basic, Digest MD5/SHA-256, -sess, odd quoting).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(v) = std::str::from_utf8(data) else { return };
    let c = camgw::proto::http::digest::parse_challenges(v);
    if let Some(best) = camgw::proto::http::digest::best(&c) {
        let _ = camgw::proto::http::digest::authorization(best, "admin", "pw", "GET", "/x", 1, "0123");
    }
    let _ = camgw::proto::http::digest::verify(v, "pw", "GET");
});
