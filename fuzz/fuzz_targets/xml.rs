//! Every XML reader of camera replies: the bounded walker, ONVIF device answers (time,
//! identity, faults), Hikvision alerts.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = camgw::xml::texts(data);
    let _ = camgw::health::onvif::parse_system_date_time(data);
    let _ = camgw::health::onvif::parse_device_information(data);
    let _ = camgw::health::onvif::is_auth_fault(data);
    let _ = camgw::events::hikvision::parse(data);
});
