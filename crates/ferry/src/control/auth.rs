//! Tokens: the control API and the agents' API refuse requests without the right bearer token.

/// Compares without an early exit, so that timing does not reveal how much of a token matched.
pub fn constant_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether `headers` carry `Authorization: Bearer <token>`.
pub fn bearer_ok(headers: &axum::http::HeaderMap, token: &str) -> bool {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| constant_eq(t, token))
}

/// Name of the dashboard's session cookie.
pub const UI_COOKIE: &str = "ferry_ui";

/// The dashboard's session value: an HMAC of a fixed label under the control token. The cookie
/// never holds the token itself, needs no server-side state, and stops working when the token
/// changes.
pub fn ui_session(token: &str) -> String {
    use hmac::Mac;
    let mut m =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(token.as_bytes()).expect("any key length");
    m.update(b"ferry-ui-session-v1");
    hex::encode(m.finalize().into_bytes())
}

/// The `name=value` pairs of every `Cookie` header in `headers`.
pub fn cookie_pairs(headers: &axum::http::HeaderMap) -> impl Iterator<Item = (&str, &str)> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
}

/// Whether `headers` carry the dashboard's session cookie for `token`.
pub fn cookie_ok(headers: &axum::http::HeaderMap, token: &str) -> bool {
    let want = ui_session(token);
    cookie_pairs(headers).any(|(k, v)| k == UI_COOKIE && constant_eq(v, &want))
}

/// A new random token (128 bits, hex).
pub fn new_token() -> String {
    use rand::RngCore;
    let mut b = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut b);
    hex::encode(b)
}

/// Reads the token stored at `path`, creating it (mode 0600) on first use.
pub fn load_or_create(path: &std::path::Path) -> std::io::Result<String> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Ok(t) = std::fs::read_to_string(path) {
        let t = t.trim().to_string();
        if !t.is_empty() {
            return Ok(t);
        }
    }
    let t = new_token();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    std::io::Write::write_all(&mut f, t.as_bytes())?;
    Ok(t)
}

#[cfg(test)]
mod tests {
    #[test]
    fn eq() {
        assert!(super::constant_eq("abc", "abc"));
        assert!(!super::constant_eq("abc", "abd"));
        assert!(!super::constant_eq("abc", "ab"));
    }

    #[test]
    fn ui_cookie() {
        let mut h = axum::http::HeaderMap::new();
        assert!(!super::cookie_ok(&h, "t0k"));
        h.insert(
            "cookie",
            format!("a=b; {}={}", super::UI_COOKIE, super::ui_session("t0k"))
                .parse()
                .unwrap(),
        );
        assert!(super::cookie_ok(&h, "t0k"));
        assert!(
            !super::cookie_ok(&h, "other"),
            "a new token ends old sessions"
        );
        assert!(!super::ui_session("t0k").contains("t0k"));
    }
}
