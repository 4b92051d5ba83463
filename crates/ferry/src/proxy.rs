//! The proxy: one stable URL per runtime, `/r/{runtime}/...`, forwarded (HTTP/1.1, SSE streaming,
//! WebSocket upgrades) to wherever the runtime lives now.
//!
//! Each runtime has a route: `Open(addr)`, `Held` (a cut-over is under way) or `Down(reason)`.
//! While a route is held, new requests wait (bounded in number and time) and are released to the
//! new location when it opens again: a client sees a pause, not an error. Requests already sent to
//! a runtime that is then frozen and moved complete at the target (CRIU carries their TCP
//! connections). Connections to runtimes are never pooled.
//!
//! Before anything else a request must pass the credential check (`access.rs`); a route's address
//! must lie in the runtime networks ferry manages (`dest.rs`), or it is never connected to.

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::watch;

#[derive(Debug, Clone, PartialEq)]
pub enum Route {
    Open(SocketAddr),
    Held,
    Down(String),
    /// Hibernated: the next request wakes it (and waits, held, until it answers).
    Asleep,
}

/// Wakes a hibernated runtime (restores it); the route reopens when it runs.
pub type Waker = Arc<dyn Fn(String) + Send + Sync>;

/// Sees the code of every execution sent to a runtime (runtime name, code), for hints.
pub type Observer = Arc<dyn Fn(&str, &str) + Send + Sync>;

/// Looks a runtime up when the proxy has no route for it yet.
/// Looks a runtime up (in the database) when the proxy has no route for it yet.
pub type Resolver =
    Arc<dyn Fn(String) -> futures::future::BoxFuture<'static, Option<Route>> + Send + Sync>;

/// A route and its epoch: the epoch grows at every cut-over, so a request can tell that its
/// runtime moved while it was under way.
type Versioned = (Route, u64);

pub struct Proxy {
    routes: RwLock<HashMap<String, watch::Sender<Versioned>>>,
    waiting: AtomicUsize,
    pub hold_timeout: Duration,
    pub max_waiting: usize,
    resolver: RwLock<Option<Resolver>>,
    waker: RwLock<Option<Waker>>,
    observer: RwLock<Option<Observer>>,
    access: RwLock<Option<Arc<crate::access::Access>>>,
    managed: RwLock<Option<crate::dest::Managed>>,
}

pub(crate) fn json_error(status: StatusCode, kind: &str, msg: String) -> Response {
    let mut r = (
        status,
        axum::Json(serde_json::json!({"error": {"kind": kind, "message": msg}})),
    )
        .into_response();
    // As the runtime's own answers do: a notebook page served from elsewhere can read why.
    r.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    if status == StatusCode::SERVICE_UNAVAILABLE {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    r
}

impl Proxy {
    pub fn new(hold_timeout: Duration) -> Arc<Proxy> {
        Arc::new(Proxy {
            routes: RwLock::new(HashMap::new()),
            waiting: AtomicUsize::new(0),
            hold_timeout,
            max_waiting: 10_000,
            resolver: RwLock::new(None),
            waker: RwLock::new(None),
            observer: RwLock::new(None),
            access: RwLock::new(None),
            managed: RwLock::new(None),
        })
    }

    /// Every request must then pass `a`'s credential check.
    pub fn set_access(&self, a: Arc<crate::access::Access>) {
        *self.access.write().unwrap() = Some(a);
    }

    /// Routes outside `m` are refused, never connected to.
    pub fn set_managed(&self, m: crate::dest::Managed) {
        *self.managed.write().unwrap() = Some(m);
    }

    /// The refusal, if the proxy may not connect to `a`.
    fn outside(&self, name: &str, a: SocketAddr) -> Option<Response> {
        let m = (*self.managed.read().unwrap())?;
        if m.contains(a) {
            return None;
        }
        tracing::error!(runtime = name, addr = %a, managed = %m, "refusing to forward outside the runtime networks");
        Some(json_error(
            StatusCode::BAD_GATEWAY,
            "unavailable",
            format!("runtime {name}'s address is outside the runtime networks this control plane manages; nothing was sent (check `ferry serve --subnet`)"),
        ))
    }

    pub fn set_observer(&self, o: Observer) {
        *self.observer.write().unwrap() = Some(o);
    }

    pub fn set_waker(&self, w: Waker) {
        *self.waker.write().unwrap() = Some(w);
    }

    pub fn set_resolver(&self, r: Resolver) {
        *self.resolver.write().unwrap() = Some(r);
    }

    pub fn set(&self, name: &str, route: Route) {
        let mut routes = self.routes.write().unwrap();
        match routes.get(name) {
            Some(tx) => {
                tx.send_modify(|(r, epoch)| {
                    if route == Route::Held && *r != Route::Held {
                        *epoch += 1;
                    }
                    *r = route;
                });
            }
            None => {
                routes.insert(name.to_string(), watch::channel((route, 0)).0);
            }
        }
    }

    fn epoch(&self, name: &str) -> u64 {
        self.routes
            .read()
            .unwrap()
            .get(name)
            .map(|tx| tx.borrow().1)
            .unwrap_or(0)
    }

    pub fn hold(&self, name: &str) {
        self.set(name, Route::Held)
    }

    pub fn remove(&self, name: &str) {
        if let Some(tx) = self.routes.write().unwrap().remove(name) {
            tx.send_modify(|(r, _)| *r = Route::Down(format!("runtime {name} was removed")));
        }
    }

    pub fn route(&self, name: &str) -> Option<Route> {
        self.routes
            .read()
            .unwrap()
            .get(name)
            .map(|tx| tx.borrow().0.clone())
    }

    async fn receiver(&self, name: &str) -> Option<watch::Receiver<Versioned>> {
        if let Some(tx) = self.routes.read().unwrap().get(name) {
            return Some(tx.subscribe());
        }
        let resolver = self.resolver.read().unwrap().clone()?;
        let resolved = resolver(name.to_string()).await?;
        self.set(name, resolved);
        self.routes
            .read()
            .unwrap()
            .get(name)
            .map(|tx| tx.subscribe())
    }

    /// Where to send a request for `name` now, waiting out a cut-over.
    async fn resolve(&self, name: &str) -> Result<SocketAddr, Response> {
        let Some(mut rx) = self.receiver(name).await else {
            return Err(json_error(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no runtime named {name:?}"),
            ));
        };
        let route = rx.borrow_and_update().0.clone();
        match route {
            Route::Open(a) => return self.outside(name, a).map_or(Ok(a), Err),
            Route::Down(why) => {
                return Err(json_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    why,
                ))
            }
            Route::Held => {}
            Route::Asleep => {
                // First request for a hibernated runtime: hold everyone and wake it once.
                let waker = self.waker.read().unwrap().clone();
                match waker {
                    Some(w) => {
                        self.hold(name);
                        tracing::info!(runtime = name, "waking on request");
                        w(name.to_string());
                    }
                    None => {
                        return Err(json_error(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "unavailable",
                            format!("runtime {name} is hibernated"),
                        ))
                    }
                }
            }
        }
        if self.waiting.fetch_add(1, Ordering::SeqCst) >= self.max_waiting {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            return Err(json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                format!("runtime {name} is moving and too many requests are waiting; retry"),
            ));
        }
        let waited =
            tokio::time::timeout(self.hold_timeout, rx.wait_for(|r| r.0 != Route::Held)).await;
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        match waited {
            Ok(Ok(r)) => match r.0.clone() {
                Route::Open(a) => self.outside(name, a).map_or(Ok(a), Err),
                Route::Down(why) => Err(json_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    why,
                )),
                Route::Asleep => Err(json_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    format!(
                        "runtime {name} could not be woken; see `ferry events --runtime {name}`"
                    ),
                )),
                Route::Held => unreachable!(),
            },
            Ok(Err(_)) => Err(json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                format!("runtime {name} was removed"),
            )),
            Err(_) => Err(json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                format!(
                    "runtime {name} is still moving after {:?}; retry",
                    self.hold_timeout
                ),
            )),
        }
    }
}

pub fn router(p: Arc<Proxy>) -> Router {
    Router::new()
        .route("/r/:name", any(forward_root))
        .route("/r/:name/", any(forward_root))
        .route("/r/:name/*rest", any(forward))
        .layer(axum::middleware::from_fn(sandbox))
        .with_state(p)
}

/// Every runtime shares the proxy's origin, so a page a (hostile) runtime serves must not run as
/// that origin: its answers get a sandbox policy (an opaque origin: no access to the origin's
/// storage, and other runtimes' SameSite=Strict cookies never go with its requests), added to any
/// policy it sets itself, and are never sniffed. ferry's own pages under `.ferry/` are not.
async fn sandbox(req: Request, next: axum::middleware::Next) -> Response {
    let own_page = req
        .uri()
        .path()
        .splitn(4, '/')
        .nth(3)
        .is_some_and(|rest| rest.starts_with(crate::access::RESERVED));
    let mut r = next.run(req).await;
    if !own_page {
        let h = r.headers_mut();
        h.append(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("sandbox allow-scripts"),
        );
        h.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
    }
    r
}

async fn forward_root(
    State(p): State<Arc<Proxy>>,
    Path(name): Path<String>,
    req: Request,
) -> Response {
    forward_to(p, name, String::new(), req).await
}

async fn forward(
    State(p): State<Arc<Proxy>>,
    Path((name, rest)): Path<(String, String)>,
    req: Request,
) -> Response {
    forward_to(p, name, rest, req).await
}

/// Bodies up to this size are kept so that a request cut off by a cut-over can be sent again.
const RETRY_BODY_LIMIT: u64 = 1 << 20;

async fn forward_to(p: Arc<Proxy>, name: String, rest: String, mut req: Request) -> Response {
    let access = p.access.read().unwrap().clone();
    if let Some(a) = access {
        if let crate::access::Gate::Answer(r) = a.gate(&name, &rest, &mut req).await {
            return r;
        }
    }
    let path_q = match req.uri().query() {
        Some(q) => format!("/{rest}?{q}"),
        None => format!("/{rest}"),
    };
    *req.uri_mut() = Uri::try_from(path_q).unwrap_or_else(|_| Uri::from_static("/"));
    let upgrade = req.headers().contains_key(header::UPGRADE);
    let small = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n <= RETRY_BODY_LIMIT)
        || (req.method() == axum::http::Method::GET
            && !req.headers().contains_key(header::TRANSFER_ENCODING));
    if upgrade || !small {
        let addr = match p.resolve(&name).await {
            Ok(a) => a,
            Err(r) => return r,
        };
        return match send(&name, addr, req).await {
            Ok(r) | Err((_, r)) => r,
        };
    }
    // A request whose connection was cut by a cut-over (CRIU drops connections the runtime had not
    // accepted yet) never reached the runtime: send it once more to where the runtime is now.
    let (parts, body) = req.into_parts();
    let body = match http_body_util::BodyExt::collect(body).await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                "invalid",
                format!("reading the request body: {e}"),
            )
        }
    };
    if parts.uri.path().contains("/execute") {
        let observer = p.observer.read().unwrap().clone();
        if let (Some(o), Ok(v)) = (observer, serde_json::from_slice::<serde_json::Value>(&body)) {
            if let Some(code) = v["code"].as_str() {
                o(&name, code);
            }
        }
    }
    let mut attempt = 0;
    loop {
        let epoch = p.epoch(&name);
        let addr = match p.resolve(&name).await {
            Ok(a) => a,
            Err(r) => return r,
        };
        let req = Request::from_parts(parts.clone(), Body::from(body.clone()));
        match send(&name, addr, req).await {
            Ok(r) => return r,
            Err((unsent, r)) => {
                attempt += 1;
                if !(unsent && attempt < 3 && p.epoch(&name) != epoch) {
                    return r;
                }
                tracing::debug!(runtime = %name, "request cut by a cut-over; sending it again");
            }
        }
    }
}

/// Sends `req` to `addr`. On failure before any answer: `Err((true, response))`.
async fn send(
    name: &str,
    addr: SocketAddr,
    mut req: Request,
) -> Result<Response, (bool, Response)> {
    req.headers_mut().insert(
        header::HOST,
        HeaderValue::from_str(&addr.to_string()).expect("addr is a valid header"),
    );
    let client_upgrade = req
        .headers()
        .contains_key(header::UPGRADE)
        .then(|| hyper::upgrade::on(&mut req));
    let stream = match tokio::net::TcpStream::connect(addr).await {
        Ok(s) => s,
        Err(e) => {
            return Err((
                true,
                json_error(
                    StatusCode::BAD_GATEWAY,
                    "unavailable",
                    format!("runtime {name} at {addr} does not answer: {e}"),
                ),
            ))
        }
    };
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
    {
        Ok(x) => x,
        Err(e) => {
            return Err((
                true,
                json_error(
                    StatusCode::BAD_GATEWAY,
                    "unavailable",
                    format!("runtime {name}: {e}"),
                ),
            ))
        }
    };
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    let mut resp = match sender.send_request(req).await {
        Ok(r) => r,
        Err(e) => {
            return Err((
                true,
                json_error(
                    StatusCode::BAD_GATEWAY,
                    "unavailable",
                    format!("runtime {name} broke off the request: {e}"),
                ),
            ))
        }
    };
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(client_up) = client_upgrade {
            let server_up = hyper::upgrade::on(&mut resp);
            tokio::spawn(async move {
                if let (Ok(c), Ok(s)) = (client_up.await, server_up.await) {
                    let _ =
                        tokio::io::copy_bidirectional(&mut TokioIo::new(c), &mut TokioIo::new(s))
                            .await;
                }
            });
        }
    }
    Ok(resp.map(Body::new))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn held_requests_wait_and_are_released_to_the_new_route() {
        let p = Proxy::new(Duration::from_secs(5));
        let a: SocketAddr = "10.0.0.2:8888".parse().unwrap();
        p.set("rt", Route::Open(a));
        assert_eq!(p.resolve("rt").await.unwrap(), a);
        p.hold("rt");
        let p2 = p.clone();
        let waiter = tokio::spawn(async move { p2.resolve("rt").await.map_err(|r| r.status()) });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "a held request must wait");
        let b: SocketAddr = "10.0.0.6:8888".parse().unwrap();
        p.set("rt", Route::Open(b));
        assert_eq!(waiter.await.unwrap().unwrap(), b);
    }

    #[test]
    fn every_cut_over_starts_a_new_epoch() {
        let p = Proxy::new(Duration::from_secs(1));
        let a: SocketAddr = "10.0.0.2:8888".parse().unwrap();
        p.set("rt", Route::Open(a));
        let e0 = p.epoch("rt");
        p.hold("rt");
        p.hold("rt");
        p.set("rt", Route::Open(a));
        assert_eq!(p.epoch("rt"), e0 + 1, "one cut-over, one epoch");
        p.hold("rt");
        assert_eq!(p.epoch("rt"), e0 + 2);
    }

    #[tokio::test]
    async fn hold_times_out_with_a_retryable_status() {
        let p = Proxy::new(Duration::from_millis(50));
        p.hold("rt");
        let r = p.resolve("rt").await.unwrap_err();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(r.headers().contains_key(header::RETRY_AFTER));
        assert_eq!(
            r.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "*",
            "a browser page can read the reason"
        );
        assert_eq!(
            p.resolve("nope").await.unwrap_err().status(),
            StatusCode::NOT_FOUND
        );
    }
}
