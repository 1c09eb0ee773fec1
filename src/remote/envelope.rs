//! Pure command verification (no I/O, `now` passed in).
//!
//! On `T/cmd` the station publishes an envelope:
//! ```text
//! {"v":1, "cmd":"<base64 of the signed command bytes>", "sig":"<base64 Ed25519 signature>"}
//! signed command = {"id":"…","gateway":"q1-p05-gw03","ward":"q1-p05",
//!                   "issued":"RFC 3339","expires":"RFC 3339","command":{"op":"…",…}}
//! ```
//! The signature covers the exact command bytes, so nothing is re-serialised before checking.
//! A command is obeyed only when signed by a key in `security.command_keys`, addressed to this
//! gateway and ward, within its validity window (issued not too far in the future, not
//! expired, window at most [`MAX_WINDOW_MS`]) and not seen before (see `replay`).

use base64::Engine as _;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::clock::{parse_rfc3339_ms, rfc3339_ms};

/// Envelopes larger than this are refused unread (a config file fits easily).
pub const MAX_ENVELOPE: usize = 256 * 1024;
/// A command may be valid for at most a day, which bounds the replay memory.
pub const MAX_WINDOW_MS: i64 = 24 * 3600 * 1000;
/// The longest command id.
pub const MAX_ID: usize = 128;

/// The command id grammar: 1 to [`MAX_ID`] characters from `A-Z a-z 0-9 . _ : -`. One
/// canonical form, so the id checked against the replay memory is the id stored there, byte
/// for byte (no normalisation anywhere), and it can label a result or a log line safely.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    pub v: u32,
    pub cmd: String,
    pub sig: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Signed {
    pub id: String,
    pub gateway: String,
    pub ward: String,
    pub issued: String,
    pub expires: String,
    pub command: serde_json::Value,
}

/// Why a command was refused; the text goes into `T/cmd/result`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("payload of {0} bytes exceeds {MAX_ENVELOPE}")]
    Oversize(usize),
    #[error("malformed envelope: {0}")]
    Malformed(String),
    #[error("signature does not verify with any trusted key")]
    BadSignature,
    #[error("no command keys are configured: every command is refused")]
    NoKeys,
    #[error("addressed to {0}, not to this gateway")]
    WrongGateway(String),
    #[error("expired at {0}")]
    Expired(String),
    #[error("issued at {0}, too far in the future (gateway clock {1})")]
    FromTheFuture(String, String),
    #[error("validity window longer than 24 h")]
    WindowTooLong,
    #[error("command id {0} was already received (replay)")]
    Replayed(String),
    #[error("the command id must be 1 to {MAX_ID} characters of A-Z a-z 0-9 . _ : -")]
    BadId,
}

/// A verified command.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    pub id: String,
    /// The trusted key that signed it.
    pub key: [u8; 32],
    pub expires_ms: i64,
    pub command: serde_json::Value,
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

/// Checks everything but replay. On refusal, returns the command id when it could be read.
pub fn verify(
    payload: &[u8],
    keys: &[[u8; 32]],
    gateway: &str,
    ward: &str,
    now_ms: i64,
    max_skew_ms: i64,
) -> Result<Verified, (Option<String>, Refusal)> {
    if payload.len() > MAX_ENVELOPE {
        return Err((None, Refusal::Oversize(payload.len())));
    }
    let env: Envelope =
        serde_json::from_slice(payload).map_err(|e| (None, Refusal::Malformed(e.to_string())))?;
    if env.v != 1 {
        return Err((
            None,
            Refusal::Malformed(format!("unsupported version {}", env.v)),
        ));
    }
    let bytes = b64()
        .decode(env.cmd.as_bytes())
        .map_err(|_| (None, Refusal::Malformed("cmd is not base64".into())))?;
    // Read the id first (unverified!) only to label the result, and only when it is of the
    // id grammar (bounded, printable).
    let unverified_id = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| v["id"].as_str().map(str::to_string))
        .filter(|id| valid_id(id));
    let sig = b64()
        .decode(env.sig.as_bytes())
        .ok()
        .and_then(|s| <[u8; 64]>::try_from(s.as_slice()).ok())
        .ok_or_else(|| {
            (
                unverified_id.clone(),
                Refusal::Malformed("sig is not a base64 64-byte signature".into()),
            )
        })?;
    let sig = Signature::from_bytes(&sig);
    if keys.is_empty() {
        return Err((unverified_id, Refusal::NoKeys));
    }
    let Some(signer) = keys.iter().find(|k| {
        VerifyingKey::from_bytes(k)
            .map(|vk| vk.verify_strict(&bytes, &sig).is_ok())
            .unwrap_or(false)
    }) else {
        return Err((unverified_id, Refusal::BadSignature));
    };
    let signed: Signed = serde_json::from_slice(&bytes).map_err(|e| {
        (
            unverified_id.clone(),
            Refusal::Malformed(format!("signed command: {e}")),
        )
    })?;
    if !valid_id(&signed.id) {
        return Err((None, Refusal::BadId));
    }
    let id = Some(signed.id.clone());
    if signed.gateway != gateway || signed.ward != ward {
        return Err((
            id,
            Refusal::WrongGateway(format!("{}/{}", signed.ward, signed.gateway)),
        ));
    }
    let issued = parse_rfc3339_ms(&signed.issued).ok_or_else(|| {
        (
            id.clone(),
            Refusal::Malformed("issued is not an RFC 3339 time".into()),
        )
    })?;
    let expires = parse_rfc3339_ms(&signed.expires).ok_or_else(|| {
        (
            id.clone(),
            Refusal::Malformed("expires is not an RFC 3339 time".into()),
        )
    })?;
    if expires - issued > MAX_WINDOW_MS || expires < issued {
        return Err((id, Refusal::WindowTooLong));
    }
    if now_ms >= expires {
        return Err((id, Refusal::Expired(signed.expires)));
    }
    if issued > now_ms + max_skew_ms {
        return Err((
            id,
            Refusal::FromTheFuture(signed.issued, rfc3339_ms(now_ms)),
        ));
    }
    if !signed.command.is_object() || signed.command.get("op").and_then(|o| o.as_str()).is_none() {
        return Err((
            id,
            Refusal::Malformed("command must be an object with a string \"op\"".into()),
        ));
    }
    Ok(Verified {
        id: signed.id,
        key: *signer,
        expires_ms: expires,
        command: signed.command,
    })
}

/// Signs a command for `ward/gateway` (the station side, and tests).
pub fn sign(key: &SigningKey, signed: &Signed) -> Vec<u8> {
    let bytes = serde_json::to_vec(signed).expect("serialisable");
    let sig = key.sign(&bytes);
    serde_json::to_vec(&Envelope {
        v: 1,
        cmd: b64().encode(&bytes),
        sig: b64().encode(sig.to_bytes()),
    })
    .expect("serialisable")
}

/// A command valid from `now_ms` for `ttl_ms`.
pub fn new_signed(
    id: &str,
    gateway: &str,
    ward: &str,
    now_ms: i64,
    ttl_ms: i64,
    command: serde_json::Value,
) -> Signed {
    Signed {
        id: id.into(),
        gateway: gateway.into(),
        ward: ward.into(),
        issued: rfc3339_ms(now_ms),
        expires: rfc3339_ms(now_ms + ttl_ms),
        command,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_796_000_000_000;

    fn key(n: u8) -> SigningKey {
        SigningKey::from_bytes(&[n; 32])
    }

    fn cmd(id: &str) -> Signed {
        new_signed(
            id,
            "gw1",
            "w1",
            NOW,
            60_000,
            serde_json::json!({"op": "get_config"}),
        )
    }

    fn check(payload: &[u8]) -> Result<Verified, (Option<String>, Refusal)> {
        verify(
            payload,
            &[key(1).verifying_key().to_bytes()],
            "gw1",
            "w1",
            NOW + 1000,
            300_000,
        )
    }

    #[test]
    fn a_command_signed_by_a_trusted_key_verifies() {
        let v = check(&sign(&key(1), &cmd("a"))).unwrap();
        assert_eq!(v.id, "a");
        assert_eq!(v.command["op"], "get_config");
    }

    #[test]
    fn each_refusal_names_its_reason() {
        let r = |p: &[u8]| check(p).unwrap_err().1;
        assert_eq!(r(&sign(&key(2), &cmd("a"))), Refusal::BadSignature);
        let mut other = cmd("a");
        other.gateway = "gw2".into();
        assert!(matches!(
            r(&sign(&key(1), &other)),
            Refusal::WrongGateway(_)
        ));
        let mut old = cmd("a");
        old.expires = rfc3339_ms(NOW);
        assert!(matches!(r(&sign(&key(1), &old)), Refusal::Expired(_)));
        let mut future = new_signed(
            "a",
            "gw1",
            "w1",
            NOW + 3_600_000,
            60_000,
            serde_json::json!({"op": "get_config"}),
        );
        future.issued = rfc3339_ms(NOW + 3_600_000);
        assert!(matches!(
            r(&sign(&key(1), &future)),
            Refusal::FromTheFuture(..)
        ));
        let long = new_signed(
            "a",
            "gw1",
            "w1",
            NOW,
            2 * MAX_WINDOW_MS,
            serde_json::json!({"op": "x"}),
        );
        assert_eq!(r(&sign(&key(1), &long)), Refusal::WindowTooLong);
        assert!(matches!(r(b"{not json"), Refusal::Malformed(_)));
        assert!(matches!(
            r(&vec![b' '; MAX_ENVELOPE + 1]),
            Refusal::Oversize(_)
        ));
        let no_op = new_signed(
            "a",
            "gw1",
            "w1",
            NOW,
            60_000,
            serde_json::json!(["get_config"]),
        );
        assert!(matches!(r(&sign(&key(1), &no_op)), Refusal::Malformed(_)));
    }

    #[test]
    fn ids_off_the_grammar_are_refused_even_when_signed() {
        for bad in ["", "a b", " a", "a\n", &"x".repeat(MAX_ID + 1), "ü", "a/b"] {
            let env = sign(&key(1), &cmd(bad));
            let (id, why) = check(&env).unwrap_err();
            assert_eq!(why, Refusal::BadId, "{bad:?}");
            assert_eq!(id, None, "an id off the grammar never labels a result");
        }
        assert!(check(&sign(&key(1), &cmd(&"x".repeat(MAX_ID)))).is_ok());
    }

    #[test]
    fn a_flipped_byte_in_the_signed_command_breaks_the_signature() {
        let p = sign(&key(1), &cmd("a"));
        let mut env: Envelope = serde_json::from_slice(&p).unwrap();
        let mut bytes = b64().decode(&env.cmd).unwrap();
        let i = bytes.iter().position(|&b| b == b'g').unwrap();
        bytes[i] = b'G';
        env.cmd = b64().encode(&bytes);
        let (id, why) = check(&serde_json::to_vec(&env).unwrap()).unwrap_err();
        assert_eq!(why, Refusal::BadSignature);
        assert_eq!(
            id.as_deref(),
            Some("a"),
            "the (unverified) id labels the result"
        );
    }

    #[test]
    fn no_configured_keys_refuses_everything() {
        let e = verify(&sign(&key(1), &cmd("a")), &[], "gw1", "w1", NOW, 0).unwrap_err();
        assert_eq!(e.1, Refusal::NoKeys);
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_payloads_never_panic(p in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            let _ = check(&p);
        }

        #[test]
        fn arbitrary_signed_text_never_panics_and_never_verifies_unsigned(s in ".{0,300}") {
            let env = serde_json::json!({"v": 1, "cmd": b64().encode(s.as_bytes()), "sig": b64().encode([0u8; 64])});
            proptest::prop_assert!(check(env.to_string().as_bytes()).is_err());
        }
    }
}
