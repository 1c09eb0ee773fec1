//! Software updates (issue 16), first part: `camgw release sign` and the manifest checks a
//! gateway applies before it downloads anything.

mod common;

use common::*;

fn keygen(prefix: &std::path::Path) -> [u8; 32] {
    let out = camgw_command(BIN)
        .args(["keygen", "--out"])
        .arg(prefix)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = String::from_utf8(out.stdout).unwrap();
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(line.trim())
        .unwrap()
        .try_into()
        .unwrap()
}

fn sign(
    key: &std::path::Path,
    version: &str,
    target: &str,
    file: &std::path::Path,
) -> std::process::Output {
    camgw_command(BIN)
        .args(["release", "sign", "--key"])
        .arg(key)
        .args(["--version", version, "--target", target])
        .arg(file)
        .output()
        .unwrap()
}

#[test]
fn release_sign_writes_a_manifest_a_gateway_accepts_and_refuses_what_it_should() {
    let tmp = tempfile::tempdir().unwrap();
    let public = keygen(&tmp.path().join("release"));
    let other = keygen(&tmp.path().join("other"));
    let file = tmp.path().join("camgw");
    let body: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&file, &body).unwrap();
    let key = tmp.path().join("release.key");
    let target = camgw::release::TARGET;
    let out = sign(&key, "9.1.0", target, &file);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = tmp.path().join("camgw.manifest.json");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        path.display().to_string()
    );
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    use sha2::Digest as _;
    let sha: [u8; 32] = sha2::Sha256::digest(&body).into();
    assert_eq!(m["sha256"], camgw::release::hex(&sha));
    assert_eq!(m["size"], body.len() as u64);
    assert_eq!(m["version"], "9.1.0");
    assert_eq!(m["target"], target);
    let running = camgw::release::running_version();
    let ok = camgw::release::Manifest::check(&m, &[public], &running, target).unwrap();
    assert_eq!(ok.size, body.len() as u64);
    // Another key, another target, an older version: refused, each with its reason.
    let e = camgw::release::Manifest::check(&m, &[other], &running, target).unwrap_err();
    assert_eq!(e.reason(), "bad_signature");
    let e =
        camgw::release::Manifest::check(&m, &[public], &running, "armv7-unknown-linux-gnueabihf")
            .unwrap_err();
    assert_eq!(e.reason(), "wrong_target");
    let newer = semver::Version::parse("9.1.0").unwrap();
    let e = camgw::release::Manifest::check(&m, &[public], &newer, target).unwrap_err();
    assert_eq!(e.reason(), "not_newer");
    // Bad input to the tool: a clear error, exit 1, no manifest.
    for (version, target, says) in [
        ("v2", "x86_64-unknown-linux-gnu", "not semver"),
        ("2.0.0", "Bad Target", "target triple"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("bin");
        std::fs::write(&f, b"x").unwrap();
        let out = sign(&key, version, target, &f);
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{err}");
        assert!(!dir.path().join("bin.manifest.json").exists());
    }
    let out = sign(&key, "2.0.0", target, &tmp.path().join("absent"));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot open"));
}

fn problems(e: &camgw::config::Invalid) -> String {
    e.problems
        .iter()
        .map(|p| format!("{}: {}", p.path, p.message))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn release_keys_are_checked_and_kept_apart_from_command_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let k = keygen(&tmp.path().join("k"));
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(k);
    let base = "[gateway]\nid = \"g\"\nward = \"w\"\n[mqtt]\nurl = \"mqtt://127.0.0.1:1\"\n";
    let ok = camgw::config::Config::parse(&format!(
        "{base}[security]\nrelease_keys = [\"{b64}\"]\nupdate_confirm_s = 60\n"
    ))
    .unwrap();
    assert_eq!(ok.security.release_keys, vec![k]);
    assert_eq!(ok.security.update_confirm.as_secs(), 60);
    let dflt = camgw::config::Config::parse(base).unwrap();
    assert!(dflt.security.release_keys.is_empty());
    assert_eq!(dflt.security.update_confirm.as_secs(), 300);
    let both = camgw::config::Config::parse(&format!(
        "{base}[security]\ncommand_keys = [\"{b64}\"]\nrelease_keys = [\"{b64}\"]\n"
    ))
    .unwrap_err();
    let both = problems(&both);
    assert!(
        both.contains("security.release_keys[0]") && both.contains("apart"),
        "{both}"
    );
    let short =
        camgw::config::Config::parse(&format!("{base}[security]\nrelease_keys = [\"AAAA\"]\n"))
            .unwrap_err();
    let short = problems(&short);
    assert!(short.contains("32 bytes"), "{short}");
}
