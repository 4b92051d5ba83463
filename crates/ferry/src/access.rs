//! Who may reach a runtime through the proxy: every request to `/r/NAME/...` must carry a
//! credential for NAME, checked before its route is even looked up (so a refused request never
//! wakes a hibernated runtime and never tells whether NAME exists).
//!
//! Credentials, as `Authorization: Bearer`:
//! - NAME's access token (random, 128 bits, kept in the database, rotated with `ferry token`);
//! - a signed token `v1.NAME.EXPIRY.MAC` that a platform mints itself: MAC is the lowercase hex
//!   HMAC-SHA256, under the signing key (64 hex digits, decoded to 32 bytes), of the bytes
//!   `ferry-access-v1\nNAME\nEXPIRY` (EXPIRY: unix seconds, decimal);
//! - the control (operator) token.
//!
//! Browsers: `/r/NAME/...?ferry-token=T` checks T and answers a redirect to the same URL without
//! it, setting the cookie `ferry_access=v1.EXPIRY.MAC` (HttpOnly, SameSite=Strict,
//! `Path=/r/NAME/`, Secure under TLS). Its MAC covers NAME, EXPIRY and NAME's current access
//! token: it never holds a token, expires, and dies when the token is rotated.
//!
//! The check is in memory: the tokens are cached here, refreshed from the database every
//! [`REFRESH`] (and at once on this instance when it rotates one); only a name not cached yet
//! costs a database read. A credential is never forwarded to the runtime.
//!
//! Not done yet: revoking signed tokens before they expire (other than by a new signing key, which
//! needs a database edit and a restart).

use crate::proxy::json_error;
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use hmac::Mac;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How stale a cached token may be: a token rotated on another instance stops working on this
/// one within this time.
pub const REFRESH: Duration = Duration::from_secs(1);

/// How long an exchanged browser cookie lasts.
pub const COOKIE_TTL: Duration = Duration::from_secs(12 * 3600);

/// The cookie a browser gets from the exchange.
pub const COOKIE: &str = "ferry_access";

/// The query parameter of the browser exchange.
pub const EXCHANGE_PARAM: &str = "ferry-token";

/// The sub-path under `/r/NAME/` that the proxy serves itself and never forwards.
pub const RESERVED: &str = ".ferry/";

type Mac256 = hmac::Hmac<sha2::Sha256>;

/// Whether the proxy asks for credentials (`ferry serve --proxy-auth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Token,
    None,
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Mode, String> {
        match s {
            "token" => Ok(Mode::Token),
            "none" => Ok(Mode::None),
            _ => Err(format!(
                "--proxy-auth must be `token` (the default) or `none`, not {s:?}"
            )),
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mode::Token => "token",
            Mode::None => "none",
        })
    }
}

/// Reads one runtime's access token from the database (for names not cached yet).
pub type Lookup =
    Arc<dyn Fn(String) -> futures::future::BoxFuture<'static, Option<String>> + Send + Sync>;

/// Which credential let a request in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Control,
    Runtime,
    /// A signed token, valid until this unix time.
    Signed(u64),
    Cookie,
}

pub struct Access {
    pub mode: Mode,
    control_token: String,
    key: Vec<u8>,
    tokens: RwLock<Tokens>,
    lookup: RwLock<Option<Lookup>>,
    /// The proxy speaks TLS: cookies are `Secure`.
    pub secure: bool,
    /// Where the editor bundle is, for the notebook page under [`RESERVED`].
    pub editor_dir: Option<PathBuf>,
}

/// The cached tokens, and which names this instance changed when (so that a refresh read from
/// the database before a local rotation cannot bring the old token back).
#[derive(Default)]
struct Tokens {
    by_name: HashMap<String, String>,
    changed: HashMap<String, u64>,
    generation: u64,
}

/// What to do with a request: forward it, or answer it here.
pub enum Gate {
    Forward,
    Answer(Response),
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn mac(key: &[u8], parts: &[&[u8]]) -> Mac256 {
    let mut m = Mac256::new_from_slice(key).expect("any key length");
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            m.update(b"\n");
        }
        m.update(p);
    }
    m
}

/// Whether `hex_mac` is the MAC of `parts`, compared in constant time.
fn mac_ok(key: &[u8], parts: &[&[u8]], hex_mac: &str) -> bool {
    if hex_mac.len() != 64 || hex_mac.bytes().any(|b| b.is_ascii_uppercase()) {
        return false;
    }
    match hex::decode(hex_mac) {
        Ok(b) => mac(key, parts).verify_slice(&b).is_ok(),
        Err(_) => false,
    }
}

/// Decimal digits only (no sign, no spaces), as the formats say.
fn parse_expiry(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 19 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// A signed token for runtime `name`, valid until `expiry` (unix seconds), under `key`.
pub fn sign(key: &[u8], name: &str, expiry: u64) -> String {
    let e = expiry.to_string();
    let m = mac(key, &[b"ferry-access-v1", name.as_bytes(), e.as_bytes()]);
    format!("v1.{name}.{e}.{}", hex::encode(m.finalize().into_bytes()))
}

/// The expiry of `token` if it is a valid, unexpired signed token for `name`.
pub fn verify_signed(key: &[u8], name: &str, token: &str, now: u64) -> Option<u64> {
    let rest = token.strip_prefix("v1.")?;
    let mut it = rest.rsplitn(3, '.');
    let (m, e, n) = (it.next()?, it.next()?, it.next()?);
    let expiry = parse_expiry(e)?;
    let ok = n == name && mac_ok(key, &[b"ferry-access-v1", n.as_bytes(), e.as_bytes()], m);
    (ok && expiry > now).then_some(expiry)
}

fn cookie_value(key: &[u8], name: &str, expiry: u64, runtime_token: &str) -> String {
    let e = expiry.to_string();
    let m = mac(
        key,
        &[
            b"ferry-cookie-v1",
            name.as_bytes(),
            e.as_bytes(),
            runtime_token.as_bytes(),
        ],
    );
    format!("v1.{e}.{}", hex::encode(m.finalize().into_bytes()))
}

fn cookie_ok(key: &[u8], name: &str, value: &str, runtime_token: &str, now: u64) -> bool {
    let Some((e, m)) = value.strip_prefix("v1.").and_then(|v| v.split_once('.')) else {
        return false;
    };
    let Some(expiry) = parse_expiry(e) else {
        return false;
    };
    expiry > now
        && mac_ok(
            key,
            &[
                b"ferry-cookie-v1",
                name.as_bytes(),
                e.as_bytes(),
                runtime_token.as_bytes(),
            ],
            m,
        )
}

fn bearer(req: &Request) -> Option<&str> {
    req.headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
}

fn cookie(req: &Request) -> Option<String> {
    crate::control::auth::cookie_pairs(req.headers())
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string())
}

/// The exchange parameter's value and the query without it.
fn exchange_param(query: &str) -> Option<(String, String)> {
    let mut token = None;
    let mut kept = Vec::new();
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some((k, v)) if k == EXCHANGE_PARAM => token = Some(v.to_string()),
            _ if pair == EXCHANGE_PARAM => token = Some(String::new()),
            _ => kept.push(pair),
        }
    }
    token.map(|t| (t, kept.join("&")))
}

/// Takes ferry's own credentials off a request before it goes to the (untrusted) runtime.
fn strip_credentials(req: &mut Request) {
    req.headers_mut().remove(header::AUTHORIZATION);
    let rest: Vec<String> = req
        .headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|kv| !kv.is_empty() && kv.split_once('=').is_none_or(|(k, _)| k != COOKIE))
        .map(String::from)
        .collect();
    req.headers_mut().remove(header::COOKIE);
    if !rest.is_empty() {
        if let Ok(v) = HeaderValue::from_str(&rest.join("; ")) {
            req.headers_mut().insert(header::COOKIE, v);
        }
    }
}

fn missing(name: &str) -> Response {
    let mut r = json_error(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        format!("runtime {name} needs a credential: send `Authorization: Bearer TOKEN` with its access token (`ferry token {name}` prints it) or a signed token, or open /r/{name}/?{EXCHANGE_PARAM}=TOKEN once in a browser"),
    );
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"ferry\""),
    );
    r
}

fn wrong(name: &str) -> Response {
    let mut r = json_error(
        StatusCode::FORBIDDEN,
        "forbidden",
        format!("the credential sent is not valid for runtime {name} (wrong, expired, rotated, or another runtime's): get a current one with `ferry token {name}`"),
    );
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"ferry\", error=\"invalid_token\""),
    );
    r
}

impl Access {
    /// `signing_key`: the hex key kept in the database.
    pub fn new(mode: Mode, control_token: &str, signing_key: &str) -> Access {
        Access {
            mode,
            control_token: control_token.to_string(),
            key: hex::decode(signing_key).unwrap_or_else(|_| signing_key.as_bytes().to_vec()),
            tokens: RwLock::new(Tokens::default()),
            lookup: RwLock::new(None),
            secure: false,
            editor_dir: None,
        }
    }

    /// Where to read a token the cache does not hold yet.
    pub fn set_lookup(&self, l: Lookup) {
        *self.lookup.write().unwrap() = Some(l);
    }

    /// A mark to take before reading every token from the database, for [`Access::refresh`].
    pub fn generation(&self) -> u64 {
        self.tokens.read().unwrap().generation
    }

    /// Replaces the cache with every runtime's token as read from the database after `since`
    /// (from [`Access::generation`]); what this instance changed after that mark is kept.
    pub fn refresh(&self, since: u64, tokens: Vec<(String, String)>) {
        let mut t = self.tokens.write().unwrap();
        let mut fresh: HashMap<String, String> = tokens.into_iter().collect();
        for (name, at) in &t.changed {
            if *at > since {
                match t.by_name.get(name) {
                    Some(v) => fresh.insert(name.clone(), v.clone()),
                    None => fresh.remove(name),
                };
            }
        }
        t.by_name = fresh;
        t.changed.retain(|_, at| *at > since);
    }

    /// Replaces the cache with `tokens`.
    pub fn replace_all(&self, tokens: Vec<(String, String)>) {
        let since = self.generation();
        self.refresh(since, tokens);
    }

    fn change(&self, name: &str, token: Option<&str>) {
        let mut t = self.tokens.write().unwrap();
        t.generation += 1;
        let g = t.generation;
        t.changed.insert(name.to_string(), g);
        match token {
            Some(v) => t.by_name.insert(name.to_string(), v.to_string()),
            None => t.by_name.remove(name),
        };
    }

    /// Records `name`'s current token (made or rotated here: effective at once).
    pub fn set(&self, name: &str, token: &str) {
        self.change(name, Some(token));
    }

    pub fn forget(&self, name: &str) {
        self.change(name, None);
    }

    /// A signed token for `name` valid for `ttl`.
    pub fn mint(&self, name: &str, ttl: Duration) -> (String, u64) {
        let expiry = now_unix() + ttl.as_secs().max(1);
        (sign(&self.key, name, expiry), expiry)
    }

    async fn runtime_token(&self, name: &str) -> Option<String> {
        if let Some(t) = self.tokens.read().unwrap().by_name.get(name) {
            return Some(t.clone());
        }
        let lookup = self.lookup.read().unwrap().clone()?;
        let t = lookup(name.to_string()).await?;
        self.tokens
            .write()
            .unwrap()
            .by_name
            .entry(name.to_string())
            .or_insert(t.clone());
        Some(t)
    }

    /// Which credential `token` is for runtime `name`, if it is one.
    pub async fn check_token(&self, name: &str, token: &str) -> Option<Kind> {
        if crate::control::auth::constant_eq(token, &self.control_token) {
            return Some(Kind::Control);
        }
        if token.starts_with("v1.") {
            return verify_signed(&self.key, name, token, now_unix()).map(Kind::Signed);
        }
        let current = self.runtime_token(name).await?;
        crate::control::auth::constant_eq(token, &current).then_some(Kind::Runtime)
    }

    async fn check_cookie(&self, name: &str, value: &str) -> bool {
        match self.runtime_token(name).await {
            Some(t) => cookie_ok(&self.key, name, value, &t, now_unix()),
            None => false,
        }
    }

    /// Decides about a request for `/r/NAME/REST` before its route is looked up: refuses it,
    /// answers the browser exchange or a reserved page, or lets it through (without ferry's own
    /// credentials on it).
    pub async fn gate(&self, name: &str, rest: &str, req: &mut Request) -> Gate {
        let exchange = req.uri().query().and_then(exchange_param);
        if self.mode == Mode::Token {
            if let Some((t, kept)) = exchange {
                return Gate::Answer(self.exchange(name, rest, &t, &kept).await);
            }
            let ok = match (bearer(req), cookie(req)) {
                (Some(t), _) => self.check_token(name, t).await.is_some(),
                (None, Some(c)) => self.check_cookie(name, &c).await,
                (None, None) => return Gate::Answer(missing(name)),
            };
            if !ok {
                return Gate::Answer(wrong(name));
            }
        } else if let Some((_, kept)) = exchange {
            return Gate::Answer(redirect(name, rest, &kept, None));
        }
        strip_credentials(req);
        match rest.strip_prefix(RESERVED) {
            Some(page) => Gate::Answer(
                crate::ui::runtime_pages::serve(name, page, self.editor_dir.as_deref()).await,
            ),
            None if rest == RESERVED.trim_end_matches('/') => Gate::Answer(
                crate::ui::runtime_pages::serve(name, "", self.editor_dir.as_deref()).await,
            ),
            None => Gate::Forward,
        }
    }

    async fn exchange(&self, name: &str, rest: &str, token: &str, kept: &str) -> Response {
        if token.is_empty() {
            return missing(name);
        }
        let token = percent_decode(token);
        if self.check_token(name, &token).await.is_none() {
            return wrong(name);
        }
        let Some(current) = self.runtime_token(name).await else {
            return wrong(name);
        };
        // The session lasts COOKIE_TTL whichever credential started it (a signed token only has
        // to be valid when it is exchanged), or until NAME's token is rotated.
        let expiry = now_unix() + COOKIE_TTL.as_secs();
        let value = cookie_value(&self.key, name, expiry, &current);
        let max_age = expiry.saturating_sub(now_unix());
        let secure = if self.secure { "; Secure" } else { "" };
        let cookie = format!(
            "{COOKIE}={value}; Path=/r/{name}/; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}"
        );
        redirect(name, rest, kept, Some(cookie))
    }
}

/// `%XX` escapes decoded (a token pasted into a URL may have been encoded).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
            if let Ok(v) = u8::from_str_radix(hex, 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// 303 to `/r/NAME/REST?KEPT` (the exchange parameter gone), optionally setting `cookie`.
fn redirect(name: &str, rest: &str, kept: &str, cookie: Option<String>) -> Response {
    let mut to = format!("/r/{name}/{rest}");
    if !kept.is_empty() {
        to.push('?');
        to.push_str(kept);
    }
    let mut r = Response::builder()
        .status(StatusCode::SEE_OTHER)
        .header(header::CACHE_CONTROL, "no-store")
        .header(header::REFERRER_POLICY, "no-referrer");
    if let Ok(v) = HeaderValue::from_str(&to) {
        r = r.header(header::LOCATION, v);
    }
    if let Some(c) = cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        r = r.header(header::SET_COOKIE, c);
    }
    r.body(axum::body::Body::empty())
        .unwrap_or_else(|_| Response::new(axum::body::Body::empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    fn access() -> Access {
        let a = Access::new(Mode::Token, "control-tok", KEY);
        a.set("alice", "alice-tok");
        a.set("bob", "bob-tok");
        a
    }

    fn req(uri: &str, auth: Option<&str>, cookie: Option<&str>) -> Request {
        let mut b = axum::http::Request::builder().uri(uri);
        if let Some(a) = auth {
            b = b.header("authorization", format!("Bearer {a}"));
        }
        if let Some(c) = cookie {
            b = b.header("cookie", c);
        }
        b.body(axum::body::Body::empty()).unwrap()
    }

    async fn status(a: &Access, name: &str, mut r: Request) -> u16 {
        match a.gate(name, "mrp/v1/capabilities", &mut r).await {
            Gate::Forward => 200,
            Gate::Answer(r) => r.status().as_u16(),
        }
    }

    #[test]
    fn the_signed_format_is_the_documented_one() {
        // The same bytes as the Python example in docs/ACCESS.md.
        let key = hex::decode(KEY).unwrap();
        let t = sign(&key, "alice", 1_900_000_000);
        let m = mac(&key, &[b"ferry-access-v1", b"alice", b"1900000000"]);
        assert_eq!(
            t,
            format!(
                "v1.alice.1900000000.{}",
                hex::encode(m.finalize().into_bytes())
            )
        );
        let mut direct = Mac256::new_from_slice(&key).unwrap();
        direct.update(b"ferry-access-v1\nalice\n1900000000");
        assert!(t.ends_with(&hex::encode(direct.finalize().into_bytes())));
        assert_eq!(
            verify_signed(&key, "alice", &t, 1_800_000_000),
            Some(1_900_000_000)
        );
        assert_eq!(
            verify_signed(&key, "alice", &t, 1_900_000_000),
            None,
            "expired"
        );
        assert_eq!(verify_signed(&key, "bob", &t, 0), None, "another runtime's");
        let dotted = sign(&key, "a.b", 1_900_000_000);
        assert!(
            verify_signed(&key, "a.b", &dotted, 0).is_some(),
            "names may hold dots"
        );
        let tampered = t.replace("1900000000", "1900000001");
        assert_eq!(verify_signed(&key, "alice", &tampered, 0), None);
        assert_eq!(verify_signed(&key, "alice", &t.to_uppercase(), 0), None);
        assert_eq!(verify_signed(b"other key", "alice", &t, 0), None);
    }

    #[tokio::test]
    async fn missing_is_401_wrong_is_403_right_passes() {
        let a = access();
        let u = "/mrp/v1/capabilities";
        assert_eq!(status(&a, "alice", req(u, None, None)).await, 401);
        assert_eq!(status(&a, "alice", req(u, Some("nope"), None)).await, 403);
        assert_eq!(
            status(&a, "alice", req(u, Some("bob-tok"), None)).await,
            403
        );
        assert_eq!(
            status(&a, "ghost", req(u, Some("bob-tok"), None)).await,
            403
        );
        assert_eq!(
            status(&a, "alice", req(u, Some("alice-tok"), None)).await,
            200
        );
        assert_eq!(
            status(&a, "alice", req(u, Some("control-tok"), None)).await,
            200
        );
        let (signed, _) = a.mint("alice", Duration::from_secs(60));
        assert_eq!(status(&a, "alice", req(u, Some(&signed), None)).await, 200);
        assert_eq!(status(&a, "bob", req(u, Some(&signed), None)).await, 403);
        a.set("alice", "rotated");
        assert_eq!(
            status(&a, "alice", req(u, Some("alice-tok"), None)).await,
            403
        );
    }

    #[tokio::test]
    async fn refusals_never_echo_the_credential() {
        let a = access();
        let mut r = req("/x", Some("secret-guess-123"), None);
        let Gate::Answer(resp) = a.gate("alice", "x", &mut r).await else {
            panic!("refused")
        };
        assert_eq!(resp.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        let body = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .unwrap()
            .to_bytes();
        let body = String::from_utf8_lossy(&body);
        assert!(!body.contains("secret-guess-123") && !body.contains("alice-tok"));
        assert!(body.contains("ferry token alice"), "{body}");
    }

    #[tokio::test]
    async fn the_exchange_sets_a_scoped_cookie_that_dies_with_the_token() {
        let a = access();
        let mut r = req("/r/alice/?x=1&ferry-token=alice-tok", None, None);
        let Gate::Answer(resp) = a.gate("alice", "", &mut r).await else {
            panic!("answered")
        };
        assert_eq!(resp.status(), StatusCode::SEE_OTHER);
        assert_eq!(resp.headers()[header::LOCATION], "/r/alice/?x=1");
        let c = resp.headers()[header::SET_COOKIE]
            .to_str()
            .unwrap()
            .to_string();
        assert!(c.contains("Path=/r/alice/") && c.contains("HttpOnly"));
        assert!(c.contains("SameSite=Strict") && !c.contains("alice-tok"));
        let pair = c.split(';').next().unwrap().to_string();
        let u = "/mrp/v1/capabilities";
        assert_eq!(status(&a, "alice", req(u, None, Some(&pair))).await, 200);
        assert_eq!(status(&a, "bob", req(u, None, Some(&pair))).await, 403);
        a.set("alice", "rotated");
        assert_eq!(status(&a, "alice", req(u, None, Some(&pair))).await, 403);
        let mut bad = req("/r/alice/?ferry-token=bob-tok", None, None);
        let Gate::Answer(resp) = a.gate("alice", "", &mut bad).await else {
            panic!("answered")
        };
        assert_eq!(resp.status(), StatusCode::FORBIDDEN);
        assert!(!resp.headers().contains_key(header::SET_COOKIE));
    }

    #[tokio::test]
    async fn credentials_are_not_forwarded_to_the_runtime() {
        let a = access();
        let mut r = req(
            "/x",
            Some("control-tok"),
            Some("theme=dark; ferry_access=v1.1.ab"),
        );
        assert!(matches!(a.gate("alice", "x", &mut r).await, Gate::Forward));
        assert!(!r.headers().contains_key(header::AUTHORIZATION));
        assert_eq!(r.headers()[header::COOKIE], "theme=dark");
    }

    #[tokio::test]
    async fn mode_none_lets_everything_through() {
        let a = Access::new(Mode::None, "c", KEY);
        assert_eq!(status(&a, "alice", req("/x", None, None)).await, 200);
    }

    #[tokio::test]
    async fn a_refresh_read_before_a_local_rotation_does_not_bring_the_old_token_back() {
        let a = access();
        let since = a.generation();
        let stale = vec![("alice".to_string(), "alice-tok".to_string())];
        a.set("alice", "rotated");
        a.refresh(since, stale.clone());
        assert_eq!(a.check_token("alice", "alice-tok").await, None);
        assert_eq!(a.check_token("alice", "rotated").await, Some(Kind::Runtime));
        assert_eq!(
            a.check_token("bob", "bob-tok").await,
            None,
            "bob is gone from the DB"
        );
        // A later refresh is the database's word again.
        let since = a.generation();
        a.refresh(since, stale);
        assert_eq!(
            a.check_token("alice", "alice-tok").await,
            Some(Kind::Runtime)
        );
    }

    #[test]
    fn percent_escapes_are_decoded() {
        assert_eq!(percent_decode("v1.a%2Eb.1.ff"), "v1.a.b.1.ff");
        assert_eq!(percent_decode("abc%"), "abc%");
        assert_eq!(percent_decode("a%zz"), "a%zz");
        assert_eq!(
            percent_decode("%aé%é"),
            "%aé%é",
            "no panic inside a character"
        );
    }
}
