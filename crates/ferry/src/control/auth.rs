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
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
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
}
