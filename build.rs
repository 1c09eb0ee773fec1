//! Tells the code which target triple it is built for (`camgw::release::TARGET`): an update
//! for another triple is refused. And its version (`camgw::release::VERSION`): Cargo's
//! package version, or `CAMGW_BUILD_VERSION` when set (semver; the update tests build a
//! second, newer binary this way).
fn main() {
    let target = std::env::var("TARGET").unwrap_or_else(|_| "unknown".into());
    println!("cargo:rustc-env=CAMGW_TARGET={target}");
    let version = std::env::var("CAMGW_BUILD_VERSION")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| std::env::var("CARGO_PKG_VERSION").unwrap());
    println!("cargo:rustc-env=CAMGW_VERSION={version}");
    println!("cargo:rerun-if-env-changed=CAMGW_BUILD_VERSION");
    println!("cargo:rerun-if-changed=build.rs");
}
