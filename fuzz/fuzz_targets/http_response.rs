//! The camera HTTP client's response reader: head, then chunked, sized or to-close body.
#![no_main]
use camgw::proto::http::{read_body, read_head};
use libfuzzer_sys::fuzz_target;

thread_local! {
    static RT: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
}

fuzz_target!(|data: &[u8]| {
    RT.with(|rt| {
        rt.block_on(async {
            let mut r = data;
            if let Ok((_, headers, rest)) = read_head(&mut r).await {
                if let Ok(body) = read_body(&mut r, &headers, rest, 64 * 1024).await {
                    assert!(body.len() <= 64 * 1024 + 16 * 1024);
                }
            }
        })
    })
});
