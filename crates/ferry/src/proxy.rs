//! The proxy: one stable URL per runtime, `/r/{runtime}/...`, forwarded (HTTP/1.1, SSE streaming,
//! WebSocket upgrades) to wherever the runtime lives now.
//!
//! Each runtime has a route: `Open(addr)`, `Held` (a cut-over is under way) or `Down(reason)`.
//! While a route is held, new requests wait (bounded in number and time) and are released to the
//! new location when it opens again: a client sees a pause, not an error. Requests already sent to
//! a runtime that is then frozen and moved complete at the target (CRIU carries their TCP
//! connections). Connections to runtimes are never pooled.
//!
//! When routes may be stale (the control plane lost its feed of other instances' changes), the
//! proxy is suspended: every open route is held until the routes have been read afresh.
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
    /// Routes cannot be trusted now (another instance's changes may be missed): every route is
    /// held, and so is any route resolved meanwhile, until [`Proxy::resume`].
    suspended: std::sync::atomic::AtomicBool,
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
            suspended: std::sync::atomic::AtomicBool::new(false),
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

    /// Fails safe while the routes may be stale: holds every open route (requests wait instead of
    /// going to a place a runtime may have left), and routes resolved from now on start held.
    pub fn suspend(&self) {
        self.suspend_except(&[])
    }

    /// As [`Proxy::suspend`], leaving the routes of `keep` as they are (this instance's own
    /// operations on them point them).
    pub fn suspend_except(&self, keep: &[String]) {
        self.suspended.store(true, Ordering::SeqCst);
        for (name, tx) in self.routes.read().unwrap().iter() {
            if keep.contains(name) {
                continue;
            }
            tx.send_modify(|(r, epoch)| {
                if matches!(r, Route::Open(_)) {
                    *r = Route::Held;
                    *epoch += 1;
                }
            });
        }
    }

    /// Ends [`Proxy::suspend`]: the caller has just set every route afresh.
    pub fn resume(&self) {
        self.suspended.store(false, Ordering::SeqCst);
    }

    pub fn suspended(&self) -> bool {
        self.suspended.load(Ordering::SeqCst)
    }

    /// The runtimes the proxy has a route for.
    pub fn names(&self) -> Vec<String> {
        self.routes.read().unwrap().keys().cloned().collect()
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
        let mut resolved = resolver(name.to_string()).await?;
        if self.suspended() && matches!(resolved, Route::Open(_)) {
            resolved = Route::Held;
        }
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
        let mut route = rx.borrow_and_update().0.clone();
        let mut woken = false;
        loop {
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
                // Hibernated (found so, or it went to sleep while this request was held): hold
                // everyone and wake it once.
                Route::Asleep => {
                    let waker = self.waker.read().unwrap().clone();
                    match waker {
                        Some(w) if !woken => {
                            woken = true;
                            self.hold(name);
                            tracing::info!(runtime = name, "waking on request");
                            w(name.to_string());
                        }
                        Some(_) => {
                            return Err(json_error(
                                StatusCode::SERVICE_UNAVAILABLE,
                                "unavailable",
                                format!(
                                    "runtime {name} could not be woken; see `ferry events --runtime {name}`"
                                ),
                            ))
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
            route = self.wait_held(name, &mut rx).await?;
        }
    }

    /// Waits (bounded in time and in the number waiting) until `name`'s route is not held.
    async fn wait_held(
        &self,
        name: &str,
        rx: &mut watch::Receiver<Versioned>,
    ) -> Result<Route, Response> {
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
            Ok(Ok(r)) => Ok(r.0.clone()),
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

/// A stream (SSE, `Accept: text/event-stream` or MRP's `/execute/stream`) or an upgrade
/// (WebSocket): sent once, never again, whatever happens to its connection.
fn streams(req: &Request) -> bool {
    req.headers().contains_key(header::UPGRADE)
        || req
            .headers()
            .get_all(header::ACCEPT)
            .iter()
            .any(|v| v.to_str().is_ok_and(|v| v.contains("text/event-stream")))
        || req.uri().path().ends_with("/stream")
}

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
    let small = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n <= RETRY_BODY_LIMIT)
        || (req.method() == axum::http::Method::GET
            && !req.headers().contains_key(header::TRANSFER_ENCODING));
    if streams(&req) || !small {
        let addr = match p.resolve(&name).await {
            Ok(a) => a,
            Err(r) => return r,
        };
        return match send(&name, addr, req).await {
            Ok(r) | Err((_, r)) => r,
        };
    }
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
    forward_with_resend(&p, &name, parts, body).await
}

/// Sends a buffered request, and sends it once more (at most twice more) only when the runtime
/// provably never read it (`Delivery::Unread`) and a cut-over happened meanwhile — the case of a
/// connection CRIU's `skip-in-flight` dropped from the runtime's accept queue at a dump. A request
/// the runtime may have read is never sent again: the client gets the error and decides.
async fn forward_with_resend(
    p: &Proxy,
    name: &str,
    parts: axum::http::request::Parts,
    body: axum::body::Bytes,
) -> Response {
    let mut attempt = 0;
    loop {
        let epoch = p.epoch(name);
        let addr = match p.resolve(name).await {
            Ok(a) => a,
            Err(r) => return r,
        };
        let req = Request::from_parts(parts.clone(), Body::from(body.clone()));
        match send(name, addr, req).await {
            Ok(r) => return r,
            Err((delivery, r)) => {
                attempt += 1;
                if !resend(delivery, attempt, epoch, p.epoch(name)) {
                    return r;
                }
                tracing::debug!(runtime = %name, "request cut by a cut-over before the runtime read it; sending it again");
            }
        }
    }
}

/// Whether a failed send is sent again: only what the runtime never read, only when the runtime
/// moved meanwhile (`epoch` changed), and at most three sends in all.
fn resend(delivery: Delivery, attempts: u32, epoch_before: u64, epoch_now: u64) -> bool {
    delivery == Delivery::Unread && attempts < 3 && epoch_now != epoch_before
}

/// What a failed send did to the runtime, as far as the proxy can prove it.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Delivery {
    /// The runtime never read the request: the connection was refused, hyper handed the request
    /// back unwritten, or the runtime's kernel reset the connection before any byte of an answer.
    /// Linux resets (rather than closes) a connection that is discarded with data still unread in
    /// it: one never accepted (the listener closed, or CRIU skipped it at a dump) or one whose
    /// owner exited without reading what was sent. Sending it again cannot run it twice.
    Unread,
    /// The request was written and the connection ended without an answer in a way that does not
    /// prove it unread (closed, timed out, malformed answer): it may have run.
    MaybeRead,
}

/// How a `send_request` error shows whether the runtime read the request: only a reset (or a
/// write into a connection already reset) proves it did not.
fn delivery_of(e: &hyper::Error) -> Delivery {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
            ) {
                return Delivery::Unread;
            }
        }
        source = s.source();
    }
    Delivery::MaybeRead
}

/// Sends `req` to `addr`. On failure before any answer: `Err((delivery, response))`.
async fn send(
    name: &str,
    addr: SocketAddr,
    mut req: Request,
) -> Result<Response, (Delivery, Response)> {
    req.headers_mut().insert(
        header::HOST,
        HeaderValue::from_str(&addr.to_string()).expect("addr is a valid header"),
    );
    let client_upgrade = req
        .headers()
        .contains_key(header::UPGRADE)
        .then(|| hyper::upgrade::on(&mut req));
    let unread = |e: &dyn std::fmt::Display| {
        (
            Delivery::Unread,
            json_error(
                StatusCode::BAD_GATEWAY,
                "unavailable",
                format!("runtime {name} at {addr} does not answer ({e}); the request did not reach it: retry"),
            ),
        )
    };
    let stream = match tokio::net::TcpStream::connect(addr).await {
        Ok(s) => s,
        Err(e) => return Err(unread(&e)),
    };
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
    {
        Ok(x) => x,
        Err(e) => return Err(unread(&e)),
    };
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    let mut resp = match sender.try_send_request(req).await {
        Ok(r) => r,
        Err(mut e) => {
            if e.take_message().is_some() {
                return Err(unread(e.error()));
            }
            let e = e.into_error();
            return Err(match delivery_of(&e) {
                Delivery::Unread => unread(&e),
                Delivery::MaybeRead => (
                    Delivery::MaybeRead,
                    json_error(
                        StatusCode::BAD_GATEWAY,
                        "interrupted",
                        format!("runtime {name} broke off the request after receiving it ({e}): it may have run, so ferry did not send it again; check the runtime's state (or `ferry events --runtime {name}`) before you retry it"),
                    ),
                ),
            });
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

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    fn post(path: &str, extra: &[(&str, &str)]) -> (axum::http::request::Parts, axum::body::Bytes) {
        let body = axum::body::Bytes::from_static(br#"{"code":"x.append(1)"}"#);
        let mut b = Request::builder()
            .method("POST")
            .uri(path)
            .header(header::CONTENT_LENGTH, body.len());
        for (k, v) in extra {
            b = b.header(*k, *v);
        }
        (b.body(Body::empty()).unwrap().into_parts().0, body)
    }

    /// Reads one request (headers and a content-length body) from `s`.
    async fn read_request(s: &mut tokio::net::TcpStream) -> Vec<u8> {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = s.read(&mut chunk).await.unwrap();
            if n == 0 {
                return buf;
            }
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf).to_string();
            if let Some(end) = text.find("\r\n\r\n") {
                let len = text[..end]
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap())
                    })
                    .unwrap_or(0);
                if buf.len() >= end + 4 + len {
                    return buf;
                }
            }
        }
    }

    /// A runtime that answers every request with 200 and counts them.
    async fn answering() -> (SocketAddr, Arc<AtomicUsize>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let n = Arc::new(AtomicUsize::new(0));
        let count = n.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                read_request(&mut s).await;
                count.fetch_add(1, Ordering::SeqCst);
                let _ = s
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                    )
                    .await;
            }
        });
        (addr, n)
    }

    /// A runtime frozen with the request in its accept queue, then moved (the route switches to
    /// `to`) and its listener closed, as CRIU's `skip-in-flight` does at a dump: the kernel resets
    /// the connection the runtime never accepted.
    async fn dropped_from_the_backlog(p: &Arc<Proxy>, to: SocketAddr) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let p = p.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            p.hold("rt");
            p.set("rt", Route::Open(to));
            drop(l);
        });
        addr
    }

    async fn error_kind(r: Response) -> String {
        let b = http_body_util::BodyExt::collect(r.into_body())
            .await
            .unwrap()
            .to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        v["error"]["kind"].as_str().unwrap_or_default().to_string()
    }

    #[tokio::test]
    async fn a_request_the_runtime_read_is_never_sent_again() {
        let p = Proxy::new(Duration::from_secs(5));
        let (elsewhere, answered) = answering().await;
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        p.set("rt", Route::Open(l.local_addr().unwrap()));
        let reads = Arc::new(AtomicUsize::new(0));
        let (p2, r2) = (p.clone(), reads.clone());
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                read_request(&mut s).await;
                r2.fetch_add(1, Ordering::SeqCst);
                // The runtime moved while it ran the request, then its connection closed.
                p2.hold("rt");
                p2.set("rt", Route::Open(elsewhere));
                drop(s);
            }
        });
        let (parts, body) = post("/mrp/v1/execute", &[]);
        let r = forward_with_resend(&p, "rt", parts, body).await;
        assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(error_kind(r).await, "interrupted");
        assert_eq!(reads.load(Ordering::SeqCst), 1, "read once");
        assert_eq!(answered.load(Ordering::SeqCst), 0, "and never sent again");
    }

    #[tokio::test]
    async fn a_request_dropped_unaccepted_at_a_cut_over_is_sent_again() {
        let p = Proxy::new(Duration::from_secs(5));
        let (target, answered) = answering().await;
        let source = dropped_from_the_backlog(&p, target).await;
        p.set("rt", Route::Open(source));
        let (parts, body) = post("/mrp/v1/execute", &[]);
        let r = forward_with_resend(&p, "rt", parts, body).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(
            answered.load(Ordering::SeqCst),
            1,
            "sent once more, to the target"
        );
    }

    #[tokio::test]
    async fn a_refused_connection_is_unread_and_resent_only_after_a_cut_over() {
        let refused = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let (parts, body) = post("/mrp/v1/execute", &[]);
        let req = Request::from_parts(parts.clone(), Body::from(body.clone()));
        let (delivery, r) = send("rt", refused, req).await.unwrap_err();
        assert_eq!(delivery, Delivery::Unread);
        assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
        assert!(resend(Delivery::Unread, 1, 0, 1));
        assert!(!resend(Delivery::Unread, 1, 1, 1), "no cut-over: no resend");
        assert!(!resend(Delivery::MaybeRead, 1, 0, 1), "maybe read: never");
        assert!(!resend(Delivery::Unread, 3, 0, 1), "bounded");
        // Refused with no cut-over: the runtime is down, the client hears so at once.
        let p = Proxy::new(Duration::from_secs(5));
        p.set("rt", Route::Open(refused));
        let r = forward_with_resend(&p, "rt", parts, body).await;
        assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(error_kind(r).await, "unavailable");
    }

    #[tokio::test]
    async fn streams_and_upgrades_are_never_sent_again() {
        for extra in [
            vec![("accept", "text/event-stream")],
            vec![("connection", "upgrade"), ("upgrade", "websocket")],
        ] {
            let p = Proxy::new(Duration::from_secs(5));
            let (target, answered) = answering().await;
            let source = dropped_from_the_backlog(&p, target).await;
            p.set("rt", Route::Open(source));
            let (parts, body) = post("/mrp/v1/execute", &extra);
            let r = forward_to(
                p.clone(),
                "rt".into(),
                "mrp/v1/execute".into(),
                Request::from_parts(parts, Body::from(body)),
            )
            .await;
            assert_eq!(r.status(), StatusCode::BAD_GATEWAY, "{extra:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert_eq!(answered.load(Ordering::SeqCst), 0, "{extra:?} sent again");
        }
        let p = Proxy::new(Duration::from_secs(5));
        let (target, answered) = answering().await;
        let source = dropped_from_the_backlog(&p, target).await;
        p.set("rt", Route::Open(source));
        let (parts, body) = post("/mrp/v1/execute/stream", &[]);
        let r = forward_to(
            p.clone(),
            "rt".into(),
            "mrp/v1/execute/stream".into(),
            Request::from_parts(parts, Body::from(body)),
        )
        .await;
        assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(
            answered.load(Ordering::SeqCst),
            0,
            "a streamed execute is sent once"
        );
    }

    #[tokio::test]
    async fn a_suspended_proxy_holds_every_open_route_until_they_are_set_again() {
        let p = Proxy::new(Duration::from_secs(5));
        let a: SocketAddr = "10.0.0.2:8888".parse().unwrap();
        p.set("rt", Route::Open(a));
        p.set("gone", Route::Down("stopped".into()));
        let e0 = p.epoch("rt");
        p.suspend();
        assert_eq!(p.route("rt"), Some(Route::Held));
        assert_eq!(p.epoch("rt"), e0 + 1, "a suspension is a cut-over");
        assert_eq!(p.route("gone"), Some(Route::Down("stopped".into())));
        // Resolved while suspended: held too.
        p.set_resolver(Arc::new(move |_| {
            Box::pin(async move { Some(Route::Open("10.0.0.6:8888".parse().unwrap())) })
        }));
        let p2 = p.clone();
        let waiter = tokio::spawn(async move { p2.resolve("new").await.map_err(|r| r.status()) });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !waiter.is_finished(),
            "a route resolved while suspended must wait"
        );
        let b: SocketAddr = "10.0.0.6:8888".parse().unwrap();
        p.set("new", Route::Open(b));
        p.set("rt", Route::Open(a));
        p.resume();
        assert_eq!(waiter.await.unwrap().unwrap(), b);
        assert_eq!(p.resolve("rt").await.unwrap(), a);
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
