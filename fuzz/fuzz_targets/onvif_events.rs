//! ONVIF event-service answers: PullMessages, CreatePullPointSubscription, GetCapabilities.
#![no_main]
use camgw::proto::onvif::events as onvif;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = onvif::parse_pull(data) {
        assert!(p.notifications.len() <= onvif::MAX_NOTIFICATIONS);
        for n in &p.notifications {
            let _ = onvif::classify(n);
        }
    }
    let _ = onvif::subscription_address(data);
    let _ = onvif::events_xaddr(data);
});
