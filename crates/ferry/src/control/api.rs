//! The control plane's public HTTP API (`/api/v1/...`), used by the CLI and by platforms.
//! Every request must carry the control token (`Authorization: Bearer ...`).

use super::Control;
use crate::api::{CheckpointOptions, CreateRequest, ExecRequest, RestoreOptions};
use crate::{Error, Result};
use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::{StreamExt, TryStreamExt};
use serde::Deserialize;
use std::sync::Arc;

type C = State<Arc<Control>>;

pub fn router(c: Arc<Control>) -> Router {
    Router::new()
        .route("/api/v1/info", get(info))
        .route("/api/v1/hosts", get(hosts).post(add_host))
        .route("/api/v1/runtimes", get(list).post(create))
        .route("/api/v1/runtimes/:name", get(inspect).delete(remove))
        .route("/api/v1/runtimes/:name/exec", post(exec))
        .route("/api/v1/runtimes/:name/stop", post(stop))
        .route("/api/v1/runtimes/:name/checkpoint", post(checkpoint))
        .route("/api/v1/runtimes/:name/migrate", post(migrate))
        .route("/api/v1/runtimes/:name/hibernate", post(hibernate))
        .route("/api/v1/runtimes/:name/wake", post(wake))
        .route(
            "/api/v1/runtimes/:name/baseline-migrate",
            post(baseline_migrate),
        )
        .route("/api/v1/migrations", get(migrations))
        .route("/api/v1/instances", get(instances))
        .route("/api/v1/restore", post(restore))
        .route("/api/v1/snapshots", get(snapshots))
        .route("/api/v1/snapshots/import", post(import))
        .route(
            "/api/v1/snapshots/:id",
            get(snapshot).delete(remove_snapshot),
        )
        .route("/api/v1/snapshots/:id/export", get(export))
        .route("/api/v1/images", get(images))
        .route("/api/v1/images/import", post(import_image))
        .route("/api/v1/images/:name", axum::routing::delete(remove_image))
        .route("/api/v1/operations", get(operations))
        .route("/api/v1/events", get(events))
        .route("/api/v1/events/stream", get(event_stream))
        .route("/api/v1/webhooks", get(webhooks).post(add_webhook))
        .route(
            "/api/v1/webhooks/:id",
            axum::routing::delete(remove_webhook),
        )
        .route("/api/v1/webhooks/:id/deliveries", get(deliveries))
        .route("/api/v1/runtimes/:name/policy", post(policy))
        .route("/api/v1/runtimes/:name/token", get(token))
        .route("/api/v1/runtimes/:name/token/rotate", post(rotate_token))
        .route("/api/v1/runtimes/:name/token/signed", post(signed_token))
        .route("/api/v1/access/signing-key", get(signing_key))
        .layer(middleware::from_fn_with_state(c.clone(), auth))
        .route("/metrics", get(metrics))
        .with_state(c)
}

/// The CLI and platforms send the token as a bearer; the dashboard (`/ui`) has a session cookie
/// (HttpOnly, SameSite=Strict) and must add `X-Ferry-UI` to anything but a read, which a page
/// of another site cannot send without CORS, which this API does not grant.
async fn auth(State(c): C, req: Request, next: Next) -> Response {
    let read = matches!(
        *req.method(),
        axum::http::Method::GET | axum::http::Method::HEAD
    );
    let by_cookie = super::auth::cookie_ok(req.headers(), &c.cfg.token)
        && (read || req.headers().contains_key("x-ferry-ui"));
    if !(by_cookie || super::auth::bearer_ok(req.headers(), &c.cfg.token)) {
        return Error::Unauthorized("missing or wrong token: the CLI reads it from the state dir (run as root) or FERRY_TOKEN".into()).into_response();
    }
    next.run(req).await
}

async fn info(State(c): C) -> Result<impl IntoResponse> {
    Ok(Json(
        serde_json::json!({"version": crate::VERSION, "hosts": c.hosts().await?, "subnet": c.cfg.subnet.to_string(), "thresholds": c.cfg.thresholds, "image": c.cfg.default_image}),
    ))
}

#[derive(Deserialize)]
struct AddHost {
    name: String,
    url: String,
    #[serde(default)]
    labels: Vec<String>,
    capacity_mb: Option<u64>,
}

async fn hosts(State(c): C) -> Result<impl IntoResponse> {
    Ok(Json(c.hosts().await?))
}
async fn add_host(State(c): C, Json(h): Json<AddHost>) -> Result<impl IntoResponse> {
    Ok(Json(
        c.add_host(&h.name, &h.url, &h.labels, h.capacity_mb)
            .await?,
    ))
}
async fn list(State(c): C) -> Result<impl IntoResponse> {
    Ok(Json(c.list().await?))
}
async fn create(State(c): C, Json(r): Json<CreateRequest>) -> Result<impl IntoResponse> {
    Ok(Json(c.create(r).await?))
}
async fn inspect(State(c): C, Path(name): Path<String>) -> Result<impl IntoResponse> {
    let rt = c.inspect(&name).await?;
    let ops = c.db.operations(Some(&name), 20).await?;
    let events = c.db.events(Some(&name), 20).await?;
    let mut v = serde_json::to_value(rt).unwrap();
    v["operations"] = serde_json::to_value(ops).unwrap();
    v["events"] = serde_json::to_value(events).unwrap();
    Ok(Json(v))
}

async fn token(State(c): C, Path(name): Path<String>) -> Result<impl IntoResponse> {
    let token = c.access_token(&name).await?;
    Ok(Json(serde_json::json!({"runtime": name, "token": token})))
}
async fn rotate_token(State(c): C, Path(name): Path<String>) -> Result<impl IntoResponse> {
    let token = c.rotate_access_token(&name).await?;
    Ok(Json(
        serde_json::json!({"runtime": name, "token": token, "rotated": true}),
    ))
}
#[derive(Deserialize)]
struct SignedRequest {
    ttl_s: u64,
}
async fn signed_token(
    State(c): C,
    Path(name): Path<String>,
    Json(r): Json<SignedRequest>,
) -> Result<impl IntoResponse> {
    let (token, expires) = c
        .signed_token(&name, std::time::Duration::from_secs(r.ttl_s))
        .await?;
    Ok(Json(
        serde_json::json!({"runtime": name, "token": token, "expires_at_unix": expires}),
    ))
}
async fn signing_key(State(c): C) -> Result<impl IntoResponse> {
    Ok(Json(serde_json::json!({
        "key": c.signing_key().await?,
        "format": "v1.NAME.EXPIRY.MAC, MAC = hex(HMAC-SHA256(unhex(key), \"ferry-access-v1\\nNAME\\nEXPIRY\"))",
    })))
}

#[derive(Deserialize, Default)]
struct RemoveQuery {
    #[serde(default)]
    force: bool,
}
async fn remove(
    State(c): C,
    Path(name): Path<String>,
    Query(q): Query<RemoveQuery>,
) -> Result<impl IntoResponse> {
    c.remove(&name, q.force).await?;
    Ok(Json(serde_json::json!({"removed": name})))
}
async fn exec(
    State(c): C,
    Path(name): Path<String>,
    Json(r): Json<ExecRequest>,
) -> Result<impl IntoResponse> {
    Ok(Json(c.exec(&name, &r.code).await?))
}
async fn stop(State(c): C, Path(name): Path<String>) -> Result<impl IntoResponse> {
    Ok(Json(c.stop(&name).await?))
}
async fn checkpoint(
    State(c): C,
    Path(name): Path<String>,
    Json(o): Json<CheckpointOptions>,
) -> Result<impl IntoResponse> {
    Ok(Json(c.checkpoint(&name, o.leave_running).await?))
}
async fn hibernate(State(c): C, Path(name): Path<String>) -> Result<impl IntoResponse> {
    Ok(Json(c.hibernate(&name, "hibernated by request").await?))
}
async fn wake(State(c): C, Path(name): Path<String>) -> Result<impl IntoResponse> {
    Ok(Json(c.wake(&name).await?))
}
async fn migrate(
    State(c): C,
    Path(name): Path<String>,
    Json(r): Json<crate::api::MigrateRequest>,
) -> Result<impl IntoResponse> {
    Ok(Json(c.migrate(&name, &r).await?))
}
#[derive(Deserialize)]
struct To {
    to: String,
}
async fn baseline_migrate(
    State(c): C,
    Path(name): Path<String>,
    Json(r): Json<To>,
) -> Result<impl IntoResponse> {
    Ok(Json(c.baseline_migrate(&name, &r.to).await?))
}
async fn migrations(State(c): C, Query(q): Query<ListQuery>) -> Result<impl IntoResponse> {
    let ops =
        c.db.operations(q.runtime.as_deref(), q.limit.unwrap_or(50))
            .await?;
    Ok(Json(
        ops.into_iter()
            .filter(|o| o.kind == "migrate" || o.kind == "fork")
            .collect::<Vec<_>>(),
    ))
}
async fn instances(State(c): C) -> Result<impl IntoResponse> {
    Ok(Json(c.db.instances().await?))
}
async fn restore(State(c): C, Json(o): Json<RestoreOptions>) -> Result<impl IntoResponse> {
    let plan = if o.plan.is_some() || o.memory.is_some() || o.cpus.is_some() {
        Some(crate::plan::Plan::resolve(
            o.plan.as_deref(),
            o.memory.as_deref(),
            o.cpus,
        )?)
    } else {
        None
    };
    Ok(Json(c.restore(&o.snapshot, o.name.as_deref(), plan).await?))
}
async fn snapshots(State(c): C) -> Result<impl IntoResponse> {
    Ok(Json(c.db.snapshots().await?))
}
async fn snapshot(State(c): C, Path(id): Path<String>) -> Result<impl IntoResponse> {
    Ok(Json(c.snapshot(&id).await?))
}
async fn remove_snapshot(State(c): C, Path(id): Path<String>) -> Result<impl IntoResponse> {
    c.remove_snapshot(&id).await?;
    Ok(Json(serde_json::json!({"removed": id})))
}

#[derive(Deserialize, Default)]
struct ImportQuery {
    host: Option<String>,
}
async fn import(
    State(c): C,
    Query(q): Query<ImportQuery>,
    body: Body,
) -> Result<impl IntoResponse> {
    let stream = body.into_data_stream().map_err(std::io::Error::other);
    Ok(Json(
        c.import(reqwest::Body::wrap_stream(stream), q.host.as_deref())
            .await?,
    ))
}
async fn export(State(c): C, Path(id): Path<String>) -> Result<Response> {
    let r = c.export(&id).await?;
    let stream = r.bytes_stream().map_err(std::io::Error::other);
    Ok((
        [("content-type", "application/x-ferry-snapshot")],
        Body::from_stream(stream),
    )
        .into_response())
}

#[derive(Deserialize, Default)]
struct ImageQuery {
    host: Option<String>,
    name: Option<String>,
}
async fn images(State(c): C, Query(q): Query<ImageQuery>) -> Result<impl IntoResponse> {
    Ok(Json(c.images(q.host.as_deref()).await?))
}
async fn import_image(
    State(c): C,
    Query(q): Query<ImageQuery>,
    body: Body,
) -> Result<impl IntoResponse> {
    let stream = body.into_data_stream().map_err(std::io::Error::other);
    Ok(Json(
        c.import_image(
            reqwest::Body::wrap_stream(stream),
            q.host.as_deref(),
            q.name.as_deref(),
        )
        .await?,
    ))
}
async fn remove_image(
    State(c): C,
    Path(name): Path<String>,
    Query(q): Query<ImageQuery>,
) -> Result<impl IntoResponse> {
    Ok(Json(c.remove_image(&name, q.host.as_deref()).await?))
}

#[derive(Deserialize, Default)]
struct ListQuery {
    runtime: Option<String>,
    limit: Option<u32>,
}
async fn operations(State(c): C, Query(q): Query<ListQuery>) -> Result<impl IntoResponse> {
    Ok(Json(
        c.db.operations(q.runtime.as_deref(), q.limit.unwrap_or(50))
            .await?,
    ))
}
#[derive(Deserialize)]
struct NewWebhook {
    url: String,
    secret: String,
    #[serde(default)]
    kinds: Vec<String>,
}
async fn add_webhook(State(c): C, Json(w): Json<NewWebhook>) -> Result<impl IntoResponse> {
    let url: reqwest::Url = w
        .url
        .parse()
        .map_err(|e| Error::Invalid(format!("bad webhook URL {:?}: {e}", w.url)))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(Error::Invalid(
            "a webhook URL must be http:// or https://".into(),
        ));
    }
    if w.secret.len() < 16 {
        return Err(Error::Invalid(
            "a webhook secret must have at least 16 characters".into(),
        ));
    }
    let id = c.db.add_webhook(url.as_str(), &w.secret, &w.kinds).await?;
    Ok(Json(
        serde_json::json!({"id": id, "url": url.as_str(), "kinds": w.kinds}),
    ))
}
async fn webhooks(State(c): C) -> Result<impl IntoResponse> {
    Ok(Json(c.db.webhooks().await?))
}
async fn remove_webhook(State(c): C, Path(id): Path<i64>) -> Result<impl IntoResponse> {
    if !c.db.remove_webhook(id).await? {
        return Err(Error::NotFound(format!(
            "no webhook {id}: see `ferry webhook ls`"
        )));
    }
    Ok(Json(serde_json::json!({"removed": id})))
}
async fn deliveries(State(c): C, Path(id): Path<i64>) -> Result<impl IntoResponse> {
    Ok(Json(c.db.deliveries(id, 200).await?))
}

#[derive(Deserialize)]
struct Policy {
    auto: bool,
}
async fn policy(
    State(c): C,
    Path(name): Path<String>,
    Json(p): Json<Policy>,
) -> Result<impl IntoResponse> {
    let row = c.runtime_row(&name).await?;
    c.db.set_auto(&row.id, p.auto).await?;
    c.event(
        Some(&name),
        "policy.changed",
        if p.auto {
            "automatic moves and hibernation on"
        } else {
            "automatic moves and hibernation off"
        },
        serde_json::json!({"auto": p.auto}),
    )
    .await;
    Ok(Json(c.inspect(&name).await?))
}

async fn metrics(State(c): C) -> impl IntoResponse {
    (
        [("content-type", "text/plain; version=0.0.4")],
        c.metrics().await,
    )
}

#[derive(Deserialize, Default)]
struct StreamQuery {
    runtime: Option<String>,
    kind: Option<String>,
    /// Send every event as a plain `message` (for `EventSource.onmessage`) instead of naming it
    /// with its kind.
    #[serde(default)]
    plain: bool,
}

/// Server-sent events: every event as it is recorded, filtered by runtime and kind (prefix);
/// also operations' progress (`operation.phase`, id 0, not stored).
async fn event_stream(State(c): C, Query(q): Query<StreamQuery>) -> impl IntoResponse {
    use axum::response::sse::{Event as Sse, KeepAlive};
    let rx = c.events.subscribe();
    let plain = q.plain;
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(ev) => return Some((ev, rx)),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => return None,
            }
        }
    })
    .filter(move |ev| {
        let ok = q
            .runtime
            .as_deref()
            .is_none_or(|r| ev.runtime.as_deref() == Some(r))
            && q.kind.as_deref().is_none_or(|k| ev.kind.starts_with(k));
        futures::future::ready(ok)
    })
    .map(move |ev| {
        let sse = Sse::default().json_data(&ev).unwrap_or_default();
        let sse = if plain {
            sse
        } else {
            sse.event(ev.kind.clone())
        };
        Ok::<_, std::convert::Infallible>(if ev.id > 0 {
            sse.id(ev.id.to_string())
        } else {
            sse
        })
    });
    axum::response::sse::Sse::new(stream).keep_alive(KeepAlive::default())
}

async fn events(State(c): C, Query(q): Query<ListQuery>) -> Result<impl IntoResponse> {
    Ok(Json(
        c.db.events(q.runtime.as_deref(), q.limit.unwrap_or(50))
            .await?,
    ))
}
