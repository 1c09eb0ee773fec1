//! Config validation: any text gives a Config or a list of problems, and no problem message
//! ever carries a URL password (the seeds plant `user:Fuzz-S3cret@` in URLs).
#![no_main]
use libfuzzer_sys::fuzz_target;

const PW: &str = "Fuzz-S3cret";

/// Whether every occurrence of the planted password is in a URL's user info.
fn only_as_url_password(text: &str) -> bool {
    text.match_indices(PW).all(|(i, _)| {
        text[..i].ends_with(':')
            && text[i + PW.len()..].starts_with('@')
            && text[..i].rsplit('/').next().is_some_and(|ui| !ui.contains(['"', '\n']))
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Err(inv) = camgw::config::Config::parse(text) {
        if only_as_url_password(text) {
            for p in &inv.problems {
                let m = p.to_string();
                assert!(!m.contains(PW), "{m}");
            }
        }
    }
});
