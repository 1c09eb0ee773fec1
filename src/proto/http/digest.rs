//! HTTP (and RTSP) authentication, pure: parsing `WWW-Authenticate` challenges and computing
//! `Authorization` headers for Basic and Digest (RFC 7616: MD5, SHA-256, their `-sess`
//! variants, `qop=auth` or none). Cameras answer the first request with 401 and a challenge.

use base64::Engine as _;
use md5::Digest as _;

/// One challenge from a `WWW-Authenticate` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Basic {
        realm: String,
    },
    Digest {
        realm: String,
        nonce: String,
        opaque: Option<String>,
        algorithm: String,
        /// Whether the server offered `qop=auth`.
        qop_auth: bool,
        stale: bool,
    },
}

/// Parses every challenge in one header value (`Digest realm="x", nonce="y", Basic realm="z"`
/// is legal, though cameras send one per header).
pub fn parse_challenges(value: &str) -> Vec<Challenge> {
    let mut out = Vec::new();
    let mut rest = value.trim();
    while !rest.is_empty() {
        let (scheme, after) = match rest.find(|c: char| c.is_whitespace()) {
            Some(i) => (&rest[..i], rest[i..].trim_start()),
            None => (rest, ""),
        };
        let (params, next) = parse_params(after);
        let get = |k: &str| {
            params
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(k))
                .map(|(_, v)| v.clone())
        };
        if scheme.eq_ignore_ascii_case("basic") {
            out.push(Challenge::Basic {
                realm: get("realm").unwrap_or_default(),
            });
        } else if scheme.eq_ignore_ascii_case("digest") {
            if let Some(nonce) = get("nonce") {
                out.push(Challenge::Digest {
                    realm: get("realm").unwrap_or_default(),
                    nonce,
                    opaque: get("opaque"),
                    algorithm: get("algorithm").unwrap_or_else(|| "MD5".into()),
                    qop_auth: get("qop").is_some_and(|q| {
                        q.split(',').any(|t| t.trim().eq_ignore_ascii_case("auth"))
                    }),
                    stale: get("stale").is_some_and(|s| s.eq_ignore_ascii_case("true")),
                });
            }
        }
        if next.len() == rest.len() {
            break;
        }
        rest = next.trim_start_matches([',', ' ']);
    }
    out
}

/// Parses `k=v, k="v", ...` until a token that is not followed by `=` (the next scheme).
fn parse_params(s: &str) -> (Vec<(String, String)>, &str) {
    let mut params = Vec::new();
    let mut rest = s;
    loop {
        let r = rest.trim_start_matches([',', ' ', '\t']);
        let Some(eq) = r.find('=') else {
            return (params, r);
        };
        let name = r[..eq].trim();
        if name.is_empty() || name.contains(|c: char| c.is_whitespace() || c == ',') {
            return (params, r);
        }
        let after = r[eq + 1..].trim_start();
        let (value, remaining) = if let Some(q) = after.strip_prefix('"') {
            let mut v = String::new();
            let mut chars = q.char_indices();
            let mut end = q.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            v.push(n);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    _ => v.push(c),
                }
            }
            (v, &q[end.min(q.len())..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_string(), &after[end..])
        };
        params.push((name.to_string(), value));
        rest = remaining;
        if rest.trim().is_empty() {
            return (params, "");
        }
    }
}

fn hex_hash(algorithm: &str, data: &str) -> String {
    let bytes: Vec<u8> = if algorithm.to_ascii_uppercase().starts_with("SHA-256") {
        sha2::Sha256::digest(data.as_bytes()).to_vec()
    } else {
        md5::Md5::digest(data.as_bytes()).to_vec()
    };
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The Digest `response` value (RFC 7616 section 3.4.1); `qop` is `(nc, cnonce)` when
/// `qop=auth` is in use. The `-sess` variants need the cnonce, so they require `qop`.
#[allow(clippy::too_many_arguments)]
fn response(
    algorithm: &str,
    user: &str,
    realm: &str,
    password: &str,
    nonce: &str,
    method: &str,
    uri: &str,
    qop: Option<(&str, &str)>,
) -> String {
    let mut ha1 = hex_hash(algorithm, &format!("{user}:{realm}:{password}"));
    if let (true, Some((_, cnonce))) = (algorithm.to_ascii_lowercase().ends_with("-sess"), qop) {
        ha1 = hex_hash(algorithm, &format!("{ha1}:{nonce}:{cnonce}"));
    }
    let ha2 = hex_hash(algorithm, &format!("{method}:{uri}"));
    match qop {
        Some((nc, cnonce)) => hex_hash(
            algorithm,
            &format!("{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}"),
        ),
        None => hex_hash(algorithm, &format!("{ha1}:{nonce}:{ha2}")),
    }
}

/// The `Authorization` header value answering `challenge`.
pub fn authorization(
    challenge: &Challenge,
    user: &str,
    password: &str,
    method: &str,
    uri: &str,
    nc: u32,
    cnonce: &str,
) -> String {
    match challenge {
        Challenge::Basic { .. } => format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        ),
        Challenge::Digest {
            realm,
            nonce,
            opaque,
            algorithm,
            qop_auth,
            ..
        } => {
            let nc = format!("{nc:08x}");
            let qop = qop_auth.then_some((nc.as_str(), cnonce));
            let response = response(algorithm, user, realm, password, nonce, method, uri, qop);
            let mut h = format!(
                "Digest username=\"{user}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", algorithm={algorithm}, response=\"{response}\""
            );
            if *qop_auth {
                h.push_str(&format!(", qop=auth, nc={nc}, cnonce=\"{cnonce}\""));
            }
            if let Some(o) = opaque {
                h.push_str(&format!(", opaque=\"{o}\""));
            }
            h
        }
    }
}

/// Picks the strongest challenge we can answer: Digest SHA-256, Digest MD5, then Basic.
pub fn best(challenges: &[Challenge]) -> Option<&Challenge> {
    let rank = |c: &Challenge| match c {
        Challenge::Digest { algorithm, .. }
            if algorithm.to_ascii_uppercase().starts_with("SHA-256") =>
        {
            3
        }
        Challenge::Digest { .. } => 2,
        Challenge::Basic { .. } => 1,
    };
    challenges.iter().max_by_key(|c| rank(c))
}

/// Verifies a Digest `Authorization` header (for the simulated cameras in tests and the demo).
pub fn verify(header: &str, password: &str, method: &str) -> bool {
    let Some(rest) = header.strip_prefix("Digest ") else {
        return false;
    };
    let (params, _) = parse_params(rest);
    let get = |k: &str| {
        params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.as_str())
    };
    let (Some(user), Some(realm), Some(nonce), Some(uri), Some(resp)) = (
        get("username"),
        get("realm"),
        get("nonce"),
        get("uri"),
        get("response"),
    ) else {
        return false;
    };
    let algorithm = get("algorithm").unwrap_or("MD5");
    let qop = match (get("qop"), get("nc"), get("cnonce")) {
        (Some(_), Some(nc), Some(cnonce)) => Some((nc, cnonce)),
        _ => None,
    };
    response(algorithm, user, realm, password, nonce, method, uri, qop) == resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7616_md5_example_gives_the_published_response() {
        // RFC 7616 section 3.9.1 (MD5).
        let c = parse_challenges(
            r#"Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm=MD5, nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS""#,
        );
        let h = authorization(
            &c[0],
            "Mufasa",
            "Circle of Life",
            "GET",
            "/dir/index.html",
            1,
            "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
        );
        assert!(
            h.contains(r#"response="8ca523f5e9506fed4657c9700eebdbec""#),
            "{h}"
        );
        assert!(h.contains(r#"opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS""#));
    }

    #[test]
    fn rfc7616_sha256_example_gives_the_published_response() {
        let c = parse_challenges(
            r#"Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm=SHA-256, nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS""#,
        );
        let h = authorization(
            &c[0],
            "Mufasa",
            "Circle of Life",
            "GET",
            "/dir/index.html",
            1,
            "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
        );
        assert!(
            h.contains(
                r#"response="753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1""#
            ),
            "{h}"
        );
    }

    #[test]
    fn several_schemes_in_one_header_and_unquoted_values_parse() {
        let c = parse_challenges(r#"Basic realm="cam", Digest realm="cam", nonce=abc, stale=TRUE"#);
        assert_eq!(c.len(), 2);
        assert!(
            matches!(&c[1], Challenge::Digest { nonce, stale: true, qop_auth: false, .. } if nonce == "abc")
        );
        assert!(matches!(best(&c), Some(Challenge::Digest { .. })));
    }

    #[test]
    fn our_own_header_verifies_and_a_wrong_password_does_not() {
        let c = parse_challenges(r#"Digest realm="r", nonce="n", qop="auth""#);
        let h = authorization(&c[0], "admin", "pw", "GET", "/snap.jpg", 1, "c");
        assert!(verify(&h, "pw", "GET"));
        assert!(!verify(&h, "wrong", "GET"));
        assert!(!verify(&h, "pw", "POST"));
    }

    proptest::proptest! {
        #[test]
        fn challenge_parsing_never_panics(s in ".{0,200}") {
            let _ = parse_challenges(&s);
        }
    }
}
