//! URLs a camera hands back (ONVIF XAddrs, subscription and snapshot URIs, RTSP
//! Content-Base) and the SDP control lines joined against them: parsing and joining never
//! panic, and a parsed URL's host:port prints back without a password.
#![no_main]
use camgw::proto::http::Url;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let base = Url::parse("http://192.168.1.64:80/onvif/device_service").unwrap();
    let _ = base.join(s);
    if let Ok(u) = Url::parse(s) {
        let _ = u.host_port();
        let _ = u.absolute();
        let _ = u.join(s);
        let _ = base.rebased(&u);
        let _ = camgw::proto::rtsp::video_control(s, &u);
    }
    let _ = camgw::proto::rtsp::video_control(s, &base);
});
