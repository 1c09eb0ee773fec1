//! The update state file as a damaged SD card may return it (`data_dir/update/state.json`):
//! parsing never panics, and whatever it says, the launcher never hands over to a version
//! marked failed, and a start of a handed-over version never runs one marked failed.
#![no_main]
use camgw::upgrade::{Installed, Plan, State};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(mut st) = serde_json::from_slice::<Installed>(data) else {
        return;
    };
    let own = semver::Version::new(0, 1, 0);
    let before = st.clone();
    match st.on_start(&own, true) {
        Plan::Exec { version, .. } => {
            let v = st.versions.iter().find(|v| v.version == version).expect("chosen from the list");
            assert_ne!(v.state, State::Failed, "{before:?}");
            assert!(v.version > own);
        }
        Plan::Run { trial } => assert!(!trial),
        Plan::Fallback => panic!("the launcher never falls back: {before:?}"),
    }
    for v in before.versions.iter().map(|v| v.version.clone()) {
        let mut s = before.clone();
        if let Plan::Run { trial: true } = s.on_start(&v, false) {
            let x = s.versions.iter().find(|x| x.version == v).unwrap();
            assert_eq!(x.state, State::Trial);
        }
    }
    let _ = st.pending_reports();
    let _ = st.removable();
});
