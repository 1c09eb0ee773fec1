//! Software releases (issue 16): the manifest `camgw release sign` writes, and the checks an
//! offered update must pass before anything of it is downloaded or installed. Pure: no I/O, no
//! clock. The manifest is signed over the contract's text
//! `camgw-release\n{version}\n{target}\n{sha256}\n{size}` by a release key, kept apart from the
//! command keys (`security.release_keys`).

use base64::Engine as _;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

/// The target triple this binary was built for (from build.rs).
pub const TARGET: &str = env!("CAMGW_TARGET");

/// This binary's version (from build.rs: the package version unless the build set another).
pub const VERSION: &str = env!("CAMGW_VERSION");

/// Largest release file accepted (the firmware is a few MiB; a debug build about 100).
pub const MAX_SIZE: u64 = 256 << 20;

/// A manifest that parsed: every field well formed (not yet verified).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub version: semver::Version,
    pub target: String,
    pub sha256: [u8; 32],
    pub size: u64,
    pub signature: [u8; 64],
}

/// Why an update is refused: `reason()` goes into `update_failed`'s `detail.reason`, the
/// Display text into the command result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the manifest is malformed: {0}")]
    Malformed(String),
    #[error("no release key is configured (security.release_keys): updates are off")]
    NoReleaseKeys,
    #[error("the manifest's signature is not by any key in security.release_keys")]
    BadSignature,
    #[error("the release is for {offered}, this gateway runs {own}")]
    WrongTarget { offered: String, own: String },
    #[error("version {offered} is not newer than the running {running}")]
    NotNewer {
        offered: semver::Version,
        running: semver::Version,
    },
    #[error("the release is {size} bytes, more than the {max} accepted")]
    TooLarge { size: u64, max: u64 },
}

impl Refusal {
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Malformed(_) => "malformed_manifest",
            Refusal::NoReleaseKeys => "no_release_keys",
            Refusal::BadSignature => "bad_signature",
            Refusal::WrongTarget { .. } => "wrong_target",
            Refusal::NotNewer { .. } => "not_newer",
            Refusal::TooLarge { .. } => "too_large",
        }
    }
}

/// The exact bytes a release key signs.
pub fn signed_text(version: &semver::Version, target: &str, sha256_hex: &str, size: u64) -> String {
    format!("camgw-release\n{version}\n{target}\n{sha256_hex}\n{size}")
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64
        || !s
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
    {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// A target triple: 1..=64 of `a-z 0-9 _ . -`.
fn check_target(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 64
        && t.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"_.-".contains(&c))
}

/// The manifest JSON `camgw release sign` writes.
pub fn sign(
    key: &SigningKey,
    version: &semver::Version,
    target: &str,
    sha256: &[u8; 32],
    size: u64,
) -> serde_json::Value {
    let sha = hex(sha256);
    let sig = key.sign(signed_text(version, target, &sha, size).as_bytes());
    serde_json::json!({
        "version": version.to_string(),
        "target": target,
        "sha256": sha,
        "size": size,
        "signature": base64::engine::general_purpose::STANDARD.encode(sig.to_bytes()),
    })
}

impl Manifest {
    /// Every field present and well formed; fields beyond these are ignored.
    pub fn parse(v: &serde_json::Value) -> Result<Manifest, Refusal> {
        let bad = |m: &str| Refusal::Malformed(m.to_string());
        let obj = v.as_object().ok_or_else(|| bad("not a JSON object"))?;
        let text = |k: &str| -> Result<&str, Refusal> {
            obj.get(k)
                .and_then(|x| x.as_str())
                .ok_or_else(|| Refusal::Malformed(format!("\"{k}\" is missing or not a string")))
        };
        let version = semver::Version::parse(text("version")?)
            .map_err(|e| Refusal::Malformed(format!("\"version\" is not semver: {e}")))?;
        if !version.build.is_empty() {
            // Versions are compared by precedence, where build metadata does not count: two
            // releases that differ only there could not be told apart.
            return Err(Refusal::Malformed(
                "\"version\" carries build metadata (+…): use a pre-release or a new version"
                    .into(),
            ));
        }
        let target = text("target")?.to_string();
        if !check_target(&target) {
            return Err(bad("\"target\" is not a target triple"));
        }
        let sha256 = unhex32(text("sha256")?)
            .ok_or_else(|| bad("\"sha256\" is not 64 lowercase hex digits"))?;
        let size = obj
            .get("size")
            .and_then(|x| x.as_u64())
            .filter(|s| *s > 0)
            .ok_or_else(|| bad("\"size\" is not a positive integer"))?;
        let sig = base64::engine::general_purpose::STANDARD
            .decode(text("signature")?)
            .map_err(|_| bad("\"signature\" is not base64"))?;
        let signature: [u8; 64] = sig
            .try_into()
            .map_err(|_| bad("\"signature\" is not 64 bytes"))?;
        Ok(Manifest {
            version,
            target,
            sha256,
            size,
            signature,
        })
    }

    /// Signed by one of `keys` (raw Ed25519 public keys), over the contract's text.
    pub fn verify(&self, keys: &[[u8; 32]]) -> Result<(), Refusal> {
        if keys.is_empty() {
            return Err(Refusal::NoReleaseKeys);
        }
        let text = signed_text(&self.version, &self.target, &hex(&self.sha256), self.size);
        let sig = Signature::from_bytes(&self.signature);
        let ok = keys.iter().any(|k| {
            VerifyingKey::from_bytes(k)
                .map(|vk| vk.verify_strict(text.as_bytes(), &sig).is_ok())
                .unwrap_or(false)
        });
        if ok {
            Ok(())
        } else {
            Err(Refusal::BadSignature)
        }
    }

    /// Everything the manifest alone decides, in order: well formed, signed by a release key,
    /// for this target, newer than what runs, not too large. The download then has to match
    /// `size` and `sha256`.
    pub fn check(
        v: &serde_json::Value,
        keys: &[[u8; 32]],
        running: &semver::Version,
        own_target: &str,
    ) -> Result<Manifest, Refusal> {
        let m = Manifest::parse(v)?;
        m.verify(keys)?;
        if m.target != own_target {
            return Err(Refusal::WrongTarget {
                offered: m.target,
                own: own_target.to_string(),
            });
        }
        // By precedence: build metadata (`+…`) does not make a version newer.
        if m.version.cmp_precedence(running) != std::cmp::Ordering::Greater {
            return Err(Refusal::NotNewer {
                offered: m.version,
                running: running.clone(),
            });
        }
        if m.size > MAX_SIZE {
            return Err(Refusal::TooLarge {
                size: m.size,
                max: MAX_SIZE,
            });
        }
        Ok(m)
    }
}

/// The running version ([`VERSION`], always semver).
pub fn running_version() -> semver::Version {
    semver::Version::parse(VERSION).expect("the build version is semver")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> SigningKey {
        SigningKey::from_bytes(&[n; 32])
    }

    fn v(s: &str) -> semver::Version {
        semver::Version::parse(s).unwrap()
    }

    fn manifest(k: &SigningKey, version: &str, target: &str) -> serde_json::Value {
        sign(k, &v(version), target, &[7u8; 32], 1234)
    }

    #[test]
    fn the_signature_covers_exactly_the_contract_text() {
        let k = key(1);
        let m = manifest(&k, "0.2.0", "aarch64-unknown-linux-musl");
        assert_eq!(m["sha256"], "07".repeat(32));
        let text = "camgw-release\n0.2.0\naarch64-unknown-linux-musl\n".to_string()
            + &"07".repeat(32)
            + "\n1234";
        let sig = base64::engine::general_purpose::STANDARD
            .decode(m["signature"].as_str().unwrap())
            .unwrap();
        let sig = Signature::from_bytes(&sig.try_into().unwrap());
        k.verifying_key()
            .verify_strict(text.as_bytes(), &sig)
            .unwrap();
    }

    #[test]
    fn a_good_manifest_passes_and_each_fault_is_refused_with_its_reason() {
        let (k, other) = (key(1), key(2));
        let keys = [k.verifying_key().to_bytes()];
        let t = "x86_64-unknown-linux-gnu";
        let running = v("0.1.0");
        let ok = manifest(&k, "0.2.0", t);
        let m = Manifest::check(&ok, &keys, &running, t).unwrap();
        assert_eq!((m.version, m.size), (v("0.2.0"), 1234));
        let reason = |m: &serde_json::Value, keys: &[[u8; 32]]| {
            Manifest::check(m, keys, &running, t).unwrap_err().reason()
        };
        assert_eq!(
            reason(&manifest(&other, "0.2.0", t), &keys),
            "bad_signature"
        );
        assert_eq!(reason(&ok, &[]), "no_release_keys");
        assert_eq!(
            reason(
                &manifest(&k, "0.2.0", "armv7-unknown-linux-gnueabihf"),
                &keys
            ),
            "wrong_target"
        );
        for old in ["0.1.0", "0.0.9", "0.1.0-rc.1"] {
            assert_eq!(reason(&manifest(&k, old, t), &keys), "not_newer", "{old}");
        }
        let big = sign(&k, &v("0.2.0"), t, &[7u8; 32], MAX_SIZE + 1);
        assert_eq!(reason(&big, &keys), "too_large");
        // A field changed after signing: the signature no longer holds.
        let mut tampered = ok.clone();
        tampered["size"] = 1235.into();
        assert_eq!(reason(&tampered, &keys), "bad_signature");
        let mut tampered = ok.clone();
        tampered["version"] = "9.0.0".into();
        assert_eq!(reason(&tampered, &keys), "bad_signature");
    }

    #[test]
    fn malformed_manifests_say_what_is_wrong() {
        let k = key(1);
        let keys = [k.verifying_key().to_bytes()];
        let ok = manifest(&k, "0.2.0", "t");
        let cases: Vec<(serde_json::Value, &str)> = vec![
            (serde_json::json!([1]), "not a JSON object"),
            (
                {
                    let mut m = ok.clone();
                    m.as_object_mut().unwrap().remove("sha256");
                    m
                },
                "\"sha256\" is missing",
            ),
            (
                {
                    let mut m = ok.clone();
                    m["sha256"] = "AB".repeat(32).into();
                    m
                },
                "lowercase hex",
            ),
            (
                {
                    let mut m = ok.clone();
                    m["version"] = "v2".into();
                    m
                },
                "not semver",
            ),
            (
                {
                    let mut m = ok.clone();
                    m["size"] = 0.into();
                    m
                },
                "positive integer",
            ),
            (
                {
                    let mut m = ok.clone();
                    m["signature"] = "!!".into();
                    m
                },
                "not base64",
            ),
            (
                {
                    let mut m = ok.clone();
                    m["signature"] = "AAAA".into();
                    m
                },
                "not 64 bytes",
            ),
            (
                {
                    let mut m = ok.clone();
                    m["target"] = "../../etc".into();
                    m
                },
                "not a target triple",
            ),
        ];
        for (m, says) in cases {
            let e = Manifest::check(&m, &keys, &v("0.1.0"), "t").unwrap_err();
            assert_eq!(e.reason(), "malformed_manifest");
            assert!(e.to_string().contains(says), "{m}: {e}");
        }
    }

    #[test]
    fn the_build_knows_its_target_and_version() {
        assert!(check_target(TARGET), "{TARGET}");
        assert_eq!(running_version().to_string(), VERSION);
    }

    #[test]
    fn build_metadata_is_refused_and_a_pre_release_is_older_than_its_release() {
        let k = key(1);
        let pk = k.verifying_key().to_bytes();
        let v = semver::Version::parse("0.2.0+rebuilt").unwrap();
        let m = sign(&k, &v, TARGET, &[7; 32], 10);
        let older = semver::Version::parse("0.1.9").unwrap();
        let e = Manifest::check(&m, &[pk], &older, TARGET).unwrap_err();
        assert_eq!(e.reason(), "malformed_manifest");
        assert!(e.to_string().contains("build metadata"), "{e}");
        let rc = semver::Version::parse("0.2.0-rc.1").unwrap();
        let m = sign(&k, &rc, TARGET, &[7; 32], 10);
        let running = semver::Version::parse("0.2.0").unwrap();
        assert_eq!(
            Manifest::check(&m, &[pk], &running, TARGET)
                .unwrap_err()
                .reason(),
            "not_newer"
        );
        assert!(Manifest::check(&m, &[pk], &older, TARGET).is_ok());
    }
}
