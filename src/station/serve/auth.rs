//! Who may use the console: argon2id password hashes (PHC strings), random session tokens
//! (the browser holds the token in an HttpOnly cookie; the database holds only its SHA-256),
//! a CSRF token per session, the two roles, and the cookie header parser. Pure but for the
//! random numbers and argon2's CPU time (callers run [`verify`] off the async workers).

use argon2::password_hash::{phc::PasswordHash, PasswordHasher, PasswordVerifier};
use argon2::Argon2;
use base64::Engine as _;
use sha2::{Digest, Sha256};

pub const COOKIE: &str = "camgw_session";
/// How long a session lasts without a new login.
pub const SESSION_MS: i64 = 12 * 3600 * 1000;
/// Longest password accepted (argon2 takes any length; a megabyte would be a CPU attack).
pub const MAX_PASSWORD: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Officer,
    Admin,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "officer" => Some(Role::Officer),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Role::Officer => "officer",
            Role::Admin => "admin",
        }
    }
}

/// A user name: 1..=64 of letters, digits, `.`, `_`, `-`.
pub fn valid_name(n: &str) -> bool {
    (1..=64).contains(&n.len())
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

pub fn hash(password: &str) -> anyhow::Result<String> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("cannot hash the password: {e}"))
}

/// A hash of nothing in particular, checked when the user does not exist so that a wrong
/// name takes as long to refuse as a wrong password.
pub fn dummy_hash() -> &'static str {
    static H: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    H.get_or_init(|| hash(&token()).unwrap_or_default())
}

/// True when `password` matches the PHC string `stored`.
pub fn verify(password: &str, stored: &str) -> bool {
    if password.len() > MAX_PASSWORD {
        return false;
    }
    match PasswordHash::new(stored) {
        Ok(h) => Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok(),
        Err(_) => false,
    }
}

/// A fresh random token: 32 bytes, URL-safe base64.
pub fn token() -> String {
    let b: [u8; 32] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// What the database keeps of a session token.
pub fn digest(token: &str) -> String {
    let d = Sha256::digest(token.as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// The value of cookie `name` in a `Cookie:` header.
pub fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|kv| {
        let (k, v) = kv.trim().split_once('=')?;
        (k == name).then_some(v)
    })
}

/// Constant-time comparison of two tokens.
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The `Set-Cookie` value for a new session (`secure` when served over TLS behind a proxy).
pub fn set_cookie(token: &str) -> String {
    format!(
        "{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
        SESSION_MS / 1000
    )
}

pub fn clear_cookie() -> String {
    format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_refuse() {
        let h = hash("mật khẩu đúng").unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify("mật khẩu đúng", &h));
        assert!(!verify("mật khẩu sai", &h));
        assert!(!verify("x", "not a phc string"));
        assert!(!verify(&"a".repeat(MAX_PASSWORD + 1), &h));
        assert_ne!(hash("p").unwrap(), hash("p").unwrap(), "salted");
    }

    #[test]
    fn cookies_tokens_names() {
        assert_eq!(cookie("a=1; camgw_session=tok; b=2", COOKIE), Some("tok"));
        assert_eq!(cookie("camgw_sessionx=1", COOKIE), None);
        let t = token();
        assert_eq!(t.len(), 43);
        assert_ne!(t, token());
        assert_eq!(digest("x").len(), 64);
        assert!(same("abc", "abc") && !same("abc", "abd") && !same("ab", "abc"));
        assert!(valid_name("nguyen.van-a_1") && !valid_name("") && !valid_name("a b"));
        assert!(
            set_cookie("t").contains("HttpOnly") && set_cookie("t").contains("SameSite=Strict")
        );
        assert_eq!(Role::parse("admin"), Some(Role::Admin));
        assert_eq!(Role::parse("root"), None);
    }
}
