//! The multipart event-stream parser (Hikvision alertStream, Dahua attach), fed in the
//! chunks the first bytes choose: it never panics and never holds more than its bound.
#![no_main]
use camgw::proto::multipart::{Parser, MAX_HEADERS, MAX_LINE, MAX_PART};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else { return };
    let split = (split as usize % 64) + 1;
    let mut p = Parser::new("boundary");
    for chunk in rest.chunks(split) {
        p.push(chunk);
        while let Some(part) = p.pull() {
            assert!(part.body.len() <= MAX_PART);
        }
        assert!(p.buffered() <= MAX_PART + MAX_HEADERS + MAX_LINE + 2 * split + 64);
    }
});
