//! Every XML reader of camera replies: the bounded walker, ONVIF device answers (time,
//! identity, faults), Hikvision alerts.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = camgw::proto::xml::texts(data);
    let _ = camgw::proto::onvif::device::parse_system_date_time(data);
    let _ = camgw::proto::onvif::device::parse_device_information(data);
    let _ = camgw::proto::onvif::is_auth_fault(data);
    let _ = camgw::proto::hikvision::parse(data);
});
