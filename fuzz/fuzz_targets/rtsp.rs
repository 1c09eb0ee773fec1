//! The RTSP reader (responses and interleaved frames), fed in chunks.
#![no_main]
use camgw::proto::rtsp::Reader;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else { return };
    let mut r = Reader::default();
    for chunk in rest.chunks(split as usize % 32 + 1) {
        r.push(chunk);
        loop {
            match r.pull() {
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
    }
});
