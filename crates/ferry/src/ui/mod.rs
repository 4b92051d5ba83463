//! The browser side of `ferry serve`: the operators' dashboard (`/ui`) and a notebook page with
//! the real MRMD editor. Both are static files embedded in the binary (`ui/assets/`) whose scripts
//! consume the public API (fetch + EventSource) or the proxy; this module only serves them and
//! turns the control token into a session cookie. The notebook page is served by the proxy under
//! the runtime's own path (`runtime_pages.rs`); `/notebook/NAME` here hands a signed-in operator a
//! short-lived signed token for that runtime and redirects there.
//!
//! Signing in: the page POSTs the token once to `/ui/login`; the answer sets an HttpOnly,
//! SameSite=Strict cookie holding an HMAC derived from the token (never the token), so no secret
//! ever appears in a URL, a log or page script. Writes made with the cookie also need the
//! `X-Ferry-UI` header (see `control/api.rs`).

use crate::control::{auth, Control};
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

pub mod runtime_pages;

/// How long the signed token `/notebook/NAME` puts in its redirect is valid: long enough to follow
/// a redirect, short enough that a URL left in a history or a log is soon worthless.
pub const NOTEBOOK_TOKEN_TTL: std::time::Duration = std::time::Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct UiConfig {
    /// Where `ferry editor install` put the editor bundle.
    pub editor_dir: PathBuf,
    /// The proxy's bound address.
    pub proxy_addr: SocketAddr,
    /// The proxy and this API speak TLS (`ferry serve --tls-cert`): https URLs, Secure cookie.
    pub proxy_tls: bool,
    /// The proxy's URL as browsers reach it, when its listen address is not it.
    pub public_proxy_url: Option<String>,
    /// Where `ferry bench --out` wrote its reports; the dashboard shows their SVG plots.
    pub bench_dir: PathBuf,
}

struct Ui {
    c: Arc<Control>,
    cfg: UiConfig,
}

type S = State<Arc<Ui>>;

const DASHBOARD: &str = include_str!("assets/dashboard.html");
const NOTEBOOK: &str = include_str!("assets/notebook.html");
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "dashboard.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/dashboard.js"),
    ),
    (
        "notebook.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/notebook.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("assets/style.css"),
    ),
];

pub fn router(c: Arc<Control>, cfg: UiConfig) -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui") }))
        .route("/ui", get(dashboard))
        .route("/ui/login", post(login))
        .route("/ui/logout", post(logout))
        .route("/ui/assets/:file", get(asset))
        .route("/ui/bench", get(bench_list))
        .route("/ui/bench/:file", get(bench_plot))
        .route("/notebook/:name", get(notebook))
        .with_state(Arc::new(Ui { c, cfg }))
}

fn no_framing(mut r: Response) -> Response {
    r.headers_mut()
        .insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    r.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

async fn dashboard() -> Response {
    let mut r = no_framing(Html(DASHBOARD).into_response());
    r.headers_mut().insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"));
    r
}

async fn asset(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|a| a.0 == file) {
        Some((_, mime, body)) => no_framing(
            (
                [
                    (header::CONTENT_TYPE, *mime),
                    (header::CACHE_CONTROL, "no-cache"),
                ],
                *body,
            )
                .into_response(),
        ),
        None => (StatusCode::NOT_FOUND, "no such asset").into_response(),
    }
}

#[derive(serde::Deserialize)]
struct Login {
    token: String,
}

async fn login(State(ui): S, Json(l): Json<Login>) -> Response {
    if !auth::constant_eq(l.token.trim(), &ui.c.cfg.token) {
        tracing::warn!("dashboard sign-in with a wrong token");
        return crate::Error::Unauthorized("wrong token: it is in the state dir of `ferry serve` (`sudo cat /var/lib/ferry/token`)".into()).into_response();
    }
    let secure = if ui.cfg.proxy_tls { "; Secure" } else { "" };
    let cookie = format!(
        "{}={}; Path=/; HttpOnly; SameSite=Strict{secure}",
        auth::UI_COOKIE,
        auth::ui_session(&ui.c.cfg.token)
    );
    (
        [(header::SET_COOKIE, cookie)],
        Json(serde_json::json!({"signed_in": true})),
    )
        .into_response()
}

async fn logout() -> Response {
    let cookie = format!(
        "{}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0",
        auth::UI_COOKIE
    );
    (
        [(header::SET_COOKIE, cookie)],
        Json(serde_json::json!({"signed_in": false})),
    )
        .into_response()
}

fn signed_in(ui: &Ui, headers: &axum::http::HeaderMap) -> bool {
    auth::cookie_ok(headers, &ui.c.cfg.token) || auth::bearer_ok(headers, &ui.c.cfg.token)
}

fn sign_in_first() -> Response {
    crate::Error::Unauthorized("sign in at /ui first".into()).into_response()
}

fn is_plot_name(f: &str) -> bool {
    f.ends_with(".svg")
        && f.len() < 100
        && !f.starts_with('.')
        && f.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// The benchmark plots (`*.svg`) in the bench dir, by name.
async fn bench_list(State(ui): S, headers: axum::http::HeaderMap) -> Response {
    if !signed_in(&ui, &headers) {
        return sign_in_first();
    }
    let mut names: Vec<String> = std::fs::read_dir(&ui.cfg.bench_dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| is_plot_name(n))
        .collect();
    names.sort();
    Json(serde_json::json!({"dir": ui.cfg.bench_dir, "plots": names})).into_response()
}

async fn bench_plot(
    State(ui): S,
    headers: axum::http::HeaderMap,
    Path(file): Path<String>,
) -> Response {
    if !signed_in(&ui, &headers) {
        return sign_in_first();
    }
    if !is_plot_name(&file) {
        return (StatusCode::NOT_FOUND, "no such plot").into_response();
    }
    match tokio::fs::read(ui.cfg.bench_dir.join(&file)).await {
        // Shown with <img>, where an SVG's scripts never run; the CSP says so again.
        Ok(b) => no_framing(
            (
                [
                    (header::CONTENT_TYPE, "image/svg+xml"),
                    (
                        header::CONTENT_SECURITY_POLICY,
                        "default-src 'none'; style-src 'unsafe-inline'",
                    ),
                ],
                b,
            )
                .into_response(),
        ),
        Err(_) => (StatusCode::NOT_FOUND, "no such plot").into_response(),
    }
}

/// The proxy's base URL for a browser, or "" to let the page use its own host name with the
/// proxy's port (when the proxy listens on every address).
fn proxy_base(cfg: &UiConfig) -> String {
    match &cfg.public_proxy_url {
        Some(u) => u.trim_end_matches('/').to_string(),
        None if cfg.proxy_addr.ip().is_unspecified() => String::new(),
        None => format!(
            "{}://{}",
            if cfg.proxy_tls { "https" } else { "http" },
            cfg.proxy_addr
        ),
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// `/notebook/NAME`: for a signed-in operator, a redirect to the notebook page the proxy serves
/// under `/r/NAME/.ferry/notebook`, through the browser exchange with a short-lived signed token
/// for NAME alone (the page never sees the control token).
async fn notebook(
    State(ui): S,
    headers: axum::http::HeaderMap,
    Path(name): Path<String>,
) -> Response {
    if let Err(e) = crate::control::check_name(&name) {
        return (StatusCode::NOT_FOUND, e.to_string()).into_response();
    }
    if !signed_in(&ui, &headers) {
        return no_framing(
            (
                StatusCode::UNAUTHORIZED,
                Html("<!doctype html><meta charset=utf-8><title>ferry notebook</title><p>Sign in at <a href=\"/ui\">/ui</a> first, then open the notebook again.</p>"),
            )
                .into_response(),
        );
    }
    if let Err(e) = ui.c.runtime_row(&name).await {
        return e.into_response();
    }
    let (token, _) = ui.c.access.mint(&name, NOTEBOOK_TOKEN_TTL);
    let mut base = proxy_base(&ui.cfg);
    if base.is_empty() {
        // The proxy listens on every address: the host name the browser used, the proxy's port.
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| {
                h.rsplit_once(':')
                    .map(|(h, _)| h.to_string())
                    .or(Some(h.to_string()))
            })
            .unwrap_or_else(|| "localhost".into());
        let scheme = if ui.cfg.proxy_tls { "https" } else { "http" };
        base = format!("{scheme}://{host}:{}", ui.cfg.proxy_addr.port());
    }
    let to = format!(
        "{base}/r/{name}/{}?{}={token}",
        runtime_pages::NOTEBOOK_PATH,
        crate::access::EXCHANGE_PARAM
    );
    let mut r = Redirect::to(&to).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r.headers_mut().insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_base_follows_the_listen_address() {
        let mut cfg = UiConfig {
            editor_dir: PathBuf::new(),
            proxy_addr: "127.0.0.1:7780".parse().unwrap(),
            proxy_tls: false,
            public_proxy_url: None,
            bench_dir: PathBuf::new(),
        };
        assert_eq!(proxy_base(&cfg), "http://127.0.0.1:7780");
        cfg.proxy_tls = true;
        assert_eq!(proxy_base(&cfg), "https://127.0.0.1:7780");
        cfg.proxy_addr = "0.0.0.0:7780".parse().unwrap();
        assert_eq!(proxy_base(&cfg), "");
        cfg.public_proxy_url = Some("https://rt.example/".into());
        assert_eq!(proxy_base(&cfg), "https://rt.example");
    }

    #[test]
    fn only_plain_svg_names_are_plots() {
        assert!(is_plot_name("migrate.svg"));
        for bad in ["../x.svg", "x.json", ".hidden.svg", "a/b.svg", "x.svg\0"] {
            assert!(!is_plot_name(bad), "{bad}");
        }
    }

    #[test]
    fn names_are_escaped() {
        assert_eq!(
            escape("<a href='x'>&\""),
            "&lt;a href=&#39;x&#39;&gt;&amp;&quot;"
        );
    }
}
