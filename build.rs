//! Tells the code which target triple it is built for (`camgw::release::TARGET`): an update
//! for another triple is refused.
fn main() {
    let target = std::env::var("TARGET").unwrap_or_else(|_| "unknown".into());
    println!("cargo:rustc-env=CAMGW_TARGET={target}");
    println!("cargo:rerun-if-changed=build.rs");
}
