//! ONVIF event- and media-service answers: PullMessages, CreatePullPointSubscription,
//! GetCapabilities (Events and Media), GetProfiles, GetSnapshotUri.
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
    let _ = camgw::proto::onvif::media::media_xaddr(data);
    let _ = camgw::proto::onvif::media::first_profile(data);
    let _ = camgw::proto::onvif::media::snapshot_uri(data);
});
