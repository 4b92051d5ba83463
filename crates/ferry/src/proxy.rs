//! The proxy: one stable URL per runtime, `/r/{runtime}/...`, forwarded (HTTP/1.1, SSE streaming,
//! WebSocket upgrades) to wherever the runtime lives now.
//!
//! Each runtime has a route: `Open(addr)`, `Held` (a cut-over is under way) or `Down(reason)`.
//! While a route is held, new requests wait (bounded in number and time) and are released to the
//! new location when it opens again: a client sees a pause, not an error. Requests already sent to
//! a runtime that is then frozen and moved complete at the target (CRIU carries their TCP
//! connections). Connections to runtimes are never pooled.

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
}

/// Looks a runtime up when the proxy has no route for it yet.
pub type Resolver = Arc<dyn Fn(&str) -> Option<Route> + Send + Sync>;

pub struct Proxy {
    routes: RwLock<HashMap<String, watch::Sender<Route>>>,
    waiting: AtomicUsize,
    pub hold_timeout: Duration,
    pub max_waiting: usize,
    resolver: RwLock<Option<Resolver>>,
}

fn json_error(status: StatusCode, kind: &str, msg: String) -> Response {
    let mut r = (status, axum::Json(serde_json::json!({"error": {"kind": kind, "message": msg}}))).into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    r
}

impl Proxy {
    pub fn new(hold_timeout: Duration) -> Arc<Proxy> {
        Arc::new(Proxy { routes: RwLock::new(HashMap::new()), waiting: AtomicUsize::new(0), hold_timeout, max_waiting: 10_000, resolver: RwLock::new(None) })
    }

    pub fn set_resolver(&self, r: Resolver) {
        *self.resolver.write().unwrap() = Some(r);
    }

    pub fn set(&self, name: &str, route: Route) {
        let mut routes = self.routes.write().unwrap();
        match routes.get(name) {
            Some(tx) => {
                tx.send_replace(route);
            }
            None => {
                routes.insert(name.to_string(), watch::channel(route).0);
            }
        }
    }

    pub fn hold(&self, name: &str) {
        self.set(name, Route::Held)
    }

    pub fn remove(&self, name: &str) {
        if let Some(tx) = self.routes.write().unwrap().remove(name) {
            tx.send_replace(Route::Down(format!("runtime {name} was removed")));
        }
    }

    pub fn route(&self, name: &str) -> Option<Route> {
        self.routes.read().unwrap().get(name).map(|tx| tx.borrow().clone())
    }

    fn receiver(&self, name: &str) -> Option<watch::Receiver<Route>> {
        if let Some(tx) = self.routes.read().unwrap().get(name) {
            return Some(tx.subscribe());
        }
        let resolved = self.resolver.read().unwrap().as_ref().and_then(|r| r(name))?;
        self.set(name, resolved);
        self.routes.read().unwrap().get(name).map(|tx| tx.subscribe())
    }

    /// Where to send a request for `name` now, waiting out a cut-over.
    async fn resolve(&self, name: &str) -> Result<SocketAddr, Response> {
        let Some(mut rx) = self.receiver(name) else {
            return Err(json_error(StatusCode::NOT_FOUND, "not_found", format!("no runtime named {name:?}")));
        };
        let route = rx.borrow_and_update().clone();
        match route {
            Route::Open(a) => return Ok(a),
            Route::Down(why) => return Err(json_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", why)),
            Route::Held => {}
        }
        if self.waiting.fetch_add(1, Ordering::SeqCst) >= self.max_waiting {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            return Err(json_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", format!("runtime {name} is moving and too many requests are waiting; retry")));
        }
        let waited = tokio::time::timeout(self.hold_timeout, rx.wait_for(|r| *r != Route::Held)).await;
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        match waited {
            Ok(Ok(r)) => match r.clone() {
                Route::Open(a) => Ok(a),
                Route::Down(why) => Err(json_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", why)),
                Route::Held => unreachable!(),
            },
            Ok(Err(_)) => Err(json_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", format!("runtime {name} was removed"))),
            Err(_) => Err(json_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", format!("runtime {name} is still moving after {:?}; retry", self.hold_timeout))),
        }
    }
}

pub fn router(p: Arc<Proxy>) -> Router {
    Router::new().route("/r/:name", any(forward_root)).route("/r/:name/*rest", any(forward)).with_state(p)
}

async fn forward_root(State(p): State<Arc<Proxy>>, Path(name): Path<String>, req: Request) -> Response {
    forward_to(p, name, String::new(), req).await
}

async fn forward(State(p): State<Arc<Proxy>>, Path((name, rest)): Path<(String, String)>, req: Request) -> Response {
    forward_to(p, name, rest, req).await
}

async fn forward_to(p: Arc<Proxy>, name: String, rest: String, mut req: Request) -> Response {
    let addr = match p.resolve(&name).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let path_q = match req.uri().query() {
        Some(q) => format!("/{rest}?{q}"),
        None => format!("/{rest}"),
    };
    *req.uri_mut() = Uri::try_from(path_q).unwrap_or_else(|_| Uri::from_static("/"));
    req.headers_mut().insert(header::HOST, HeaderValue::from_str(&addr.to_string()).expect("addr is a valid header"));
    let upgrade = req.headers().contains_key(header::UPGRADE);
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));

    let stream = match tokio::net::TcpStream::connect(addr).await {
        Ok(s) => s,
        Err(e) => return json_error(StatusCode::BAD_GATEWAY, "unavailable", format!("runtime {name} at {addr} does not answer: {e}")),
    };
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await {
        Ok(x) => x,
        Err(e) => return json_error(StatusCode::BAD_GATEWAY, "unavailable", format!("runtime {name}: {e}")),
    };
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    let mut resp = match sender.send_request(req).await {
        Ok(r) => r,
        Err(e) => return json_error(StatusCode::BAD_GATEWAY, "unavailable", format!("runtime {name} broke off the request: {e}")),
    };
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(client_up) = client_upgrade {
            let server_up = hyper::upgrade::on(&mut resp);
            tokio::spawn(async move {
                if let (Ok(c), Ok(s)) = (client_up.await, server_up.await) {
                    let _ = tokio::io::copy_bidirectional(&mut TokioIo::new(c), &mut TokioIo::new(s)).await;
                }
            });
        }
    }
    resp.map(Body::new)
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

    #[tokio::test]
    async fn hold_times_out_with_a_retryable_status() {
        let p = Proxy::new(Duration::from_millis(50));
        p.hold("rt");
        let r = p.resolve("rt").await.unwrap_err();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(r.headers().contains_key(header::RETRY_AFTER));
        assert_eq!(p.resolve("nope").await.unwrap_err().status(), StatusCode::NOT_FOUND);
    }
}
