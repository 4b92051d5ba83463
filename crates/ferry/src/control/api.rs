//! The control plane's public HTTP API (`/api/v1/...`), used by the CLI and by platforms.
//! Every request must carry the control token (`Authorization: Bearer ...`), except the API's own
//! description, `/api/v1/openapi.json` (generated from these handlers: `control::openapi`).

use super::extract::{Json, Path, Query};
use super::openapi::{Errors, Removed, RemovedId};
use super::Control;
use crate::api::{CheckpointOptions, CreateRequest, ExecRequest, RestoreOptions};
use crate::{Error, Result};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa::{IntoParams, ToSchema};

type C = State<Arc<Control>>;

pub fn router(c: Arc<Control>) -> Router {
    Router::new()
        .route("/api/v1/info", get(info))
        .route("/api/v1/hosts", get(hosts).post(add_host))
        .route("/api/v1/hosts/:name", axum::routing::delete(remove_host))
        .route("/api/v1/hosts/:name/cordon", post(cordon_host))
        .route("/api/v1/hosts/:name/uncordon", post(uncordon_host))
        .route("/api/v1/hosts/:name/drain", post(drain_host))
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
        .route("/api/v1/openapi.json", get(openapi))
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

/// What `GET /api/v1/info` answers.
#[derive(Serialize, ToSchema)]
struct Info {
    version: String,
    hosts: Vec<crate::api::Host>,
    /// First address of the range runtimes' networks come from.
    subnet: String,
    /// The monitor's memory thresholds, as shares of a runtime's limit.
    thresholds: [f64; 4],
    /// The image runtimes run unless they name another.
    image: String,
}

#[utoipa::path(
    get,
    path = "/api/v1/info",
    tag = "system",
    summary = "This control plane: version, hosts, runtime subnet, thresholds, default image",
    responses((status = 200, description = "OK", body = Info), Errors)
)]
async fn info(State(c): C) -> Result<Json<Info>> {
    Ok(Json(Info {
        version: crate::VERSION.to_string(),
        hosts: c.hosts().await?,
        subnet: c.cfg.subnet.to_string(),
        thresholds: c.cfg.thresholds,
        image: c.cfg.default_image.clone(),
    }))
}

#[derive(Deserialize, ToSchema)]
struct AddHost {
    name: String,
    url: String,
    #[serde(default)]
    labels: Vec<String>,
    capacity_mb: Option<u64>,
}

/// A runtime with its 20 most recent operations and events.
#[derive(Serialize, ToSchema)]
struct RuntimeDetail {
    #[serde(flatten)]
    runtime: crate::api::Runtime,
    operations: Vec<crate::api::Operation>,
    events: Vec<crate::api::Event>,
}

#[utoipa::path(
    get,
    path = "/api/v1/hosts",
    tag = "hosts",
    summary = "The hosts and their capacity",
    responses((status = 200, description = "OK", body = Vec<crate::api::Host>), Errors)
)]
async fn hosts(State(c): C) -> Result<impl IntoResponse> {
    Ok(Json(c.hosts().await?))
}
#[utoipa::path(
    post,
    path = "/api/v1/hosts",
    tag = "hosts",
    summary = "Register a host's agent",
    request_body = AddHost,
    responses((status = 200, description = "OK", body = crate::api::Host), Errors)
)]
async fn add_host(State(c): C, Json(h): Json<AddHost>) -> Result<impl IntoResponse> {
    Ok(Json(
        c.add_host(&h.name, &h.url, &h.labels, h.capacity_mb)
            .await?,
    ))
}
#[utoipa::path(
    post,
    path = "/api/v1/hosts/{name}/cordon",
    tag = "hosts",
    summary = "Cordon a host: creates, restores, wakes and automatic moves skip it; an explicit --to/--host naming it is refused",
    params(("name" = String, Path, description = "the host's name")),
    responses((status = 200, description = "OK", body = crate::api::Host), Errors)
)]
async fn cordon_host(State(c): C, Path(name): Path<String>) -> Result<impl IntoResponse> {
    Ok(Json(c.cordon(&name).await?))
}
#[utoipa::path(
    post,
    path = "/api/v1/hosts/{name}/uncordon",
    tag = "hosts",
    summary = "Uncordon a host: placement may use it again",
    params(("name" = String, Path, description = "the host's name")),
    responses((status = 200, description = "OK", body = crate::api::Host), Errors)
)]
async fn uncordon_host(State(c): C, Path(name): Path<String>) -> Result<impl IntoResponse> {
    Ok(Json(c.uncordon(&name).await?))
}
#[utoipa::path(
    post,
    path = "/api/v1/hosts/{name}/drain",
    tag = "hosts",
    summary = "Drain a host: cordon it, move every running runtime off (capacity and images respected), hibernate what cannot move (in time); answers when done",
    params(("name" = String, Path, description = "the host's name")),
    request_body = crate::api::DrainRequest,
    responses((status = 200, description = "OK", body = crate::api::DrainReport), Errors)
)]
async fn drain_host(
    State(c): C,
    Path(name): Path<String>,
    Json(req): Json<serde_json::Map<String, serde_json::Value>>,
) -> Result<impl IntoResponse> {
    // Read as an object first: serde would take a JSON array for the struct's fields in order.
    let req: crate::api::DrainRequest = serde_json::from_value(serde_json::Value::Object(req))
        .map_err(|e| {
            crate::Error::Invalid(format!(
                "the JSON body does not have the fields this call takes (see /api/v1/openapi.json): {e}"
            ))
        })?;
    Ok(Json(c.drain(&name, &req).await?))
}
#[utoipa::path(
    delete,
    path = "/api/v1/hosts/{name}",
    tag = "hosts",
    summary = "Remove a host: refused while runtimes or snapshots live there; with force (after a drain) their records are forgotten",
    params(("name" = String, Path, description = "the host's name"), RemoveQuery),
    responses((status = 200, description = "What was removed and forgotten"), Errors)
)]
async fn remove_host(
    State(c): C,
    Path(name): Path<String>,
    Query(q): Query<RemoveQuery>,
) -> Result<impl IntoResponse> {
    Ok(Json(c.remove_host(&name, q.force).await?))
}
#[utoipa::path(
    get,
    path = "/api/v1/runtimes",
    tag = "runtimes",
    summary = "Every runtime",
    responses((status = 200, description = "OK", body = Vec<crate::api::Runtime>), Errors)
)]
async fn list(State(c): C) -> Result<impl IntoResponse> {
    Ok(Json(c.list().await?))
}
#[utoipa::path(
    post,
    path = "/api/v1/runtimes",
    tag = "runtimes",
    summary = "Create a runtime (placed by free memory unless a host is given)",
    request_body = CreateRequest,
    responses((status = 200, description = "OK", body = crate::api::Runtime), Errors)
)]
async fn create(State(c): C, Json(r): Json<CreateRequest>) -> Result<impl IntoResponse> {
    Ok(Json(c.create(r).await?))
}
#[utoipa::path(
    get,
    path = "/api/v1/runtimes/{name}",
    tag = "runtimes",
    summary = "A runtime with its recent operations and events",
    params(("name" = String, Path, description = "the runtime's name")),
    responses((status = 200, description = "OK", body = RuntimeDetail), Errors)
)]
async fn inspect(State(c): C, Path(name): Path<String>) -> Result<Json<RuntimeDetail>> {
    Ok(Json(RuntimeDetail {
        runtime: c.inspect(&name).await?,
        operations: c.db.operations(Some(&name), 20).await?,
        events: c.db.events(Some(&name), 20).await?,
    }))
}

/// A runtime's access token for the proxy.
#[derive(Serialize, ToSchema)]
struct AccessToken {
    runtime: String,
    token: String,
}

/// A runtime's new access token: the old one (and cookies made from it) no longer pass.
#[derive(Serialize, ToSchema)]
struct RotatedToken {
    runtime: String,
    token: String,
    rotated: bool,
}

/// A signed, expiring token for one runtime (format in docs/ACCESS.md).
#[derive(Serialize, ToSchema)]
struct SignedToken {
    runtime: String,
    token: String,
    /// When it stops passing (Unix seconds).
    expires_at_unix: u64,
}

#[derive(Deserialize, ToSchema)]
struct SignedRequest {
    /// How long the token passes, in seconds (1 s to 366 days).
    #[schema(minimum = 1, maximum = 31622400)]
    #[serde(deserialize_with = "super::extract::integral_u64")]
    ttl_s: u64,
}

/// The key platforms mint signed tokens with, and the token format.
#[derive(Serialize, ToSchema)]
struct SigningKey {
    /// Hex of the key's 32 bytes.
    key: String,
    format: String,
}

#[utoipa::path(
    get,
    path = "/api/v1/runtimes/{name}/token",
    tag = "access",
    summary = "A runtime's access token for the proxy",
    params(("name" = String, Path, description = "the runtime's name")),
    responses((status = 200, description = "OK", body = AccessToken), Errors)
)]
async fn token(State(c): C, Path(name): Path<String>) -> Result<Json<AccessToken>> {
    let token = c.access_token(&name).await?;
    Ok(Json(AccessToken {
        runtime: name,
        token,
    }))
}
#[utoipa::path(
    post,
    path = "/api/v1/runtimes/{name}/token/rotate",
    tag = "access",
    summary = "Replace a runtime's access token (the old one stops passing at once)",
    params(("name" = String, Path, description = "the runtime's name")),
    responses((status = 200, description = "OK", body = RotatedToken), Errors)
)]
async fn rotate_token(State(c): C, Path(name): Path<String>) -> Result<Json<RotatedToken>> {
    let token = c.rotate_access_token(&name).await?;
    Ok(Json(RotatedToken {
        runtime: name,
        token,
        rotated: true,
    }))
}
#[utoipa::path(
    post,
    path = "/api/v1/runtimes/{name}/token/signed",
    tag = "access",
    summary = "A signed token for a runtime that expires after ttl_s",
    params(("name" = String, Path, description = "the runtime's name")),
    request_body = SignedRequest,
    responses((status = 200, description = "OK", body = SignedToken), Errors)
)]
async fn signed_token(
    State(c): C,
    Path(name): Path<String>,
    Json(r): Json<SignedRequest>,
) -> Result<Json<SignedToken>> {
    let (token, expires) = c
        .signed_token(&name, std::time::Duration::from_secs(r.ttl_s))
        .await?;
    Ok(Json(SignedToken {
        runtime: name,
        token,
        expires_at_unix: expires,
    }))
}
#[utoipa::path(
    get,
    path = "/api/v1/access/signing-key",
    tag = "access",
    summary = "The key a platform mints signed runtime tokens with (operator only)",
    responses((status = 200, description = "OK", body = SigningKey), Errors)
)]
async fn signing_key(State(c): C) -> Result<Json<SigningKey>> {
    Ok(Json(SigningKey {
        key: c.signing_key().await?,
        format: "v1.NAME.EXPIRY.MAC, MAC = hex(HMAC-SHA256(unhex(key), \"ferry-access-v1\\nNAME\\nEXPIRY\"))".into(),
    }))
}

#[derive(Deserialize, Default, IntoParams)]
#[into_params(parameter_in = Query)]
struct RemoveQuery {
    #[serde(default)]
    force: bool,
}
#[utoipa::path(
    delete,
    path = "/api/v1/runtimes/{name}",
    tag = "runtimes",
    summary = "Remove a runtime (its snapshots stay)",
    params(("name" = String, Path, description = "the runtime's name"), RemoveQuery),
    responses((status = 200, description = "OK", body = Removed), Errors)
)]
async fn remove(
    State(c): C,
    Path(name): Path<String>,
    Query(q): Query<RemoveQuery>,
) -> Result<impl IntoResponse> {
    c.remove(&name, q.force).await?;
    Ok(Json(Removed { removed: name }))
}
#[utoipa::path(
    post,
    path = "/api/v1/runtimes/{name}/exec",
    tag = "runtimes",
    summary = "Run code in a runtime; the answer is the MRP execute result",
    params(("name" = String, Path, description = "the runtime's name")),
    request_body = ExecRequest,
    responses((status = 200, description = "OK", body = serde_json::Value), Errors)
)]
async fn exec(
    State(c): C,
    Path(name): Path<String>,
    Json(r): Json<ExecRequest>,
) -> Result<impl IntoResponse> {
    Ok(Json(c.exec(&name, &r.code).await?))
}
#[utoipa::path(
    post,
    path = "/api/v1/runtimes/{name}/stop",
    tag = "runtimes",
    summary = "Stop a runtime",
    params(("name" = String, Path, description = "the runtime's name")),
    responses((status = 200, description = "OK", body = crate::api::Runtime), Errors)
)]
async fn stop(State(c): C, Path(name): Path<String>) -> Result<impl IntoResponse> {
    Ok(Json(c.stop(&name).await?))
}
#[utoipa::path(
    post,
    path = "/api/v1/runtimes/{name}/checkpoint",
    tag = "runtimes",
    summary = "Checkpoint a runtime (stops it unless leave_running)",
    params(("name" = String, Path, description = "the runtime's name")),
    request_body = CheckpointOptions,
    responses((status = 200, description = "OK", body = crate::api::Snapshot), Errors)
)]
async fn checkpoint(
    State(c): C,
    Path(name): Path<String>,
    Json(o): Json<CheckpointOptions>,
) -> Result<impl IntoResponse> {
    Ok(Json(c.checkpoint(&name, o.leave_running).await?))
}
#[utoipa::path(
    post,
    path = "/api/v1/runtimes/{name}/hibernate",
    tag = "runtimes",
    summary = "Checkpoint and stop a runtime; its next proxied request wakes it",
    params(("name" = String, Path, description = "the runtime's name")),
    responses((status = 200, description = "OK", body = crate::api::Runtime), Errors)
)]
async fn hibernate(State(c): C, Path(name): Path<String>) -> Result<impl IntoResponse> {
    Ok(Json(c.hibernate(&name, "hibernated by request").await?))
}
#[utoipa::path(
    post,
    path = "/api/v1/runtimes/{name}/wake",
    tag = "runtimes",
    summary = "Restore a hibernated runtime",
    params(("name" = String, Path, description = "the runtime's name")),
    responses((status = 200, description = "OK", body = crate::api::Runtime), Errors)
)]
async fn wake(State(c): C, Path(name): Path<String>) -> Result<impl IntoResponse> {
    Ok(Json(c.wake(&name).await?))
}
#[utoipa::path(
    post,
    path = "/api/v1/runtimes/{name}/migrate",
    tag = "runtimes",
    summary = "Move (stop-copy, lazy) or fork a runtime to another host",
    params(("name" = String, Path, description = "the runtime's name")),
    request_body = crate::api::MigrateRequest,
    responses((status = 200, description = "OK", body = crate::api::Migration), Errors)
)]
async fn migrate(
    State(c): C,
    Path(name): Path<String>,
    Json(r): Json<crate::api::MigrateRequest>,
) -> Result<impl IntoResponse> {
    Ok(Json(c.migrate(&name, &r).await?))
}
#[derive(Deserialize, ToSchema)]
struct To {
    to: String,
}
#[utoipa::path(
    post,
    path = "/api/v1/runtimes/{name}/baseline-migrate",
    tag = "runtimes",
    summary = "The published method (leave-running checkpoint, copy, restore), for comparison: loses what the runtime did after the checkpoint",
    params(("name" = String, Path, description = "the runtime's name")),
    request_body = To,
    responses((status = 200, description = "OK", body = crate::api::Migration), Errors)
)]
async fn baseline_migrate(
    State(c): C,
    Path(name): Path<String>,
    Json(r): Json<To>,
) -> Result<impl IntoResponse> {
    Ok(Json(c.baseline_migrate(&name, &r.to).await?))
}
#[utoipa::path(
    get,
    path = "/api/v1/migrations",
    tag = "operations",
    summary = "Recorded migrations and forks, newest first",
    params(ListQuery),
    responses((status = 200, description = "OK", body = Vec<crate::api::Operation>), Errors)
)]
async fn migrations(State(c): C, Query(q): Query<ListQuery>) -> Result<impl IntoResponse> {
    let ops = c.db.operations(q.runtime.as_deref(), q.limit()?).await?;
    Ok(Json(
        ops.into_iter()
            .filter(|o| o.kind == "migrate" || o.kind == "fork")
            .collect::<Vec<_>>(),
    ))
}
#[utoipa::path(
    get,
    path = "/api/v1/instances",
    tag = "system",
    summary = "The control-plane instances sharing this database",
    responses((status = 200, description = "OK", body = Vec<super::db::Instance>), Errors)
)]
async fn instances(State(c): C) -> Result<impl IntoResponse> {
    Ok(Json(c.db.instances().await?))
}
#[utoipa::path(
    post,
    path = "/api/v1/restore",
    tag = "snapshots",
    summary = "Restore a snapshot (under its runtime's name or a new one, with other limits)",
    request_body = RestoreOptions,
    responses((status = 200, description = "OK", body = crate::api::Runtime), Errors)
)]
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
#[utoipa::path(
    get,
    path = "/api/v1/snapshots",
    tag = "snapshots",
    summary = "Every snapshot",
    responses((status = 200, description = "OK", body = Vec<crate::api::Snapshot>), Errors)
)]
async fn snapshots(State(c): C) -> Result<impl IntoResponse> {
    Ok(Json(c.db.snapshots().await?))
}
#[utoipa::path(
    get,
    path = "/api/v1/snapshots/{id}",
    tag = "snapshots",
    summary = "One snapshot",
    params(("id" = String, Path, description = "the snapshot's id")),
    responses((status = 200, description = "OK", body = crate::api::Snapshot), Errors)
)]
async fn snapshot(State(c): C, Path(id): Path<String>) -> Result<impl IntoResponse> {
    Ok(Json(c.snapshot(&id).await?))
}
#[utoipa::path(
    delete,
    path = "/api/v1/snapshots/{id}",
    tag = "snapshots",
    summary = "Remove a snapshot",
    params(("id" = String, Path, description = "the snapshot's id")),
    responses((status = 200, description = "OK", body = Removed), Errors)
)]
async fn remove_snapshot(State(c): C, Path(id): Path<String>) -> Result<impl IntoResponse> {
    c.remove_snapshot(&id).await?;
    Ok(Json(Removed { removed: id }))
}

#[derive(Deserialize, Default, IntoParams)]
#[into_params(parameter_in = Query)]
struct ImportQuery {
    host: Option<String>,
}
#[utoipa::path(
    post,
    path = "/api/v1/snapshots/import",
    tag = "snapshots",
    summary = "Import (and verify) a snapshot archive",
    params(ImportQuery),
    request_body(content = Vec<u8>, content_type = "application/x-ferry-snapshot", description = "an archive written by export"),
    responses((status = 200, description = "OK", body = crate::api::Snapshot), Errors)
)]
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
#[utoipa::path(
    get,
    path = "/api/v1/snapshots/{id}/export",
    tag = "snapshots",
    summary = "A snapshot as an archive (the versioned ferry snapshot format)",
    params(("id" = String, Path, description = "the snapshot's id")),
    responses((status = 200, description = "the archive", content_type = "application/x-ferry-snapshot", body = Vec<u8>), Errors)
)]
async fn export(State(c): C, Path(id): Path<String>) -> Result<Response> {
    let r = c.export(&id).await?;
    let stream = r.bytes_stream().map_err(std::io::Error::other);
    Ok((
        [("content-type", "application/x-ferry-snapshot")],
        Body::from_stream(stream),
    )
        .into_response())
}

#[derive(Deserialize, Default, IntoParams)]
#[into_params(parameter_in = Query)]
struct ImageQuery {
    host: Option<String>,
    name: Option<String>,
}
#[utoipa::path(
    get,
    path = "/api/v1/images",
    tag = "images",
    summary = "Images on the hosts",
    params(ImageQuery),
    responses((status = 200, description = "OK", body = Vec<crate::api::HostImage>), Errors)
)]
async fn images(State(c): C, Query(q): Query<ImageQuery>) -> Result<impl IntoResponse> {
    Ok(Json(c.images(q.host.as_deref()).await?))
}
#[utoipa::path(
    post,
    path = "/api/v1/images/import",
    tag = "images",
    summary = "Import an image (an OCI layout or a docker save tarball) onto a host",
    params(ImageQuery),
    request_body(content = Vec<u8>, content_type = "application/x-tar", description = "the tarball"),
    responses((status = 200, description = "OK", body = Vec<crate::api::HostImage>), Errors)
)]
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
#[utoipa::path(
    delete,
    path = "/api/v1/images/{name}",
    tag = "images",
    summary = "Remove an image from a host (refused while a runtime uses it)",
    params(("name" = String, Path, description = "the image's name"), ImageQuery),
    responses((status = 200, description = "OK", body = Vec<crate::api::HostImage>), Errors)
)]
async fn remove_image(
    State(c): C,
    Path(name): Path<String>,
    Query(q): Query<ImageQuery>,
) -> Result<impl IntoResponse> {
    Ok(Json(c.remove_image(&name, q.host.as_deref()).await?))
}

#[derive(Deserialize, Default, IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Only these of this runtime.
    runtime: Option<String>,
    /// How many, newest first (default 50).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

impl ListQuery {
    fn limit(&self) -> Result<u32> {
        match self.limit {
            None => Ok(50),
            Some(n @ 1..=1000) => Ok(n),
            Some(n) => Err(Error::Invalid(format!(
                "limit={n} is out of range: give 1 to 1000 (default 50)"
            ))),
        }
    }
}
#[utoipa::path(
    get,
    path = "/api/v1/operations",
    tag = "operations",
    summary = "Recorded operations with their timings, newest first",
    params(ListQuery),
    responses((status = 200, description = "OK", body = Vec<crate::api::Operation>), Errors)
)]
async fn operations(State(c): C, Query(q): Query<ListQuery>) -> Result<impl IntoResponse> {
    Ok(Json(
        c.db.operations(q.runtime.as_deref(), q.limit()?).await?,
    ))
}
#[derive(Deserialize, ToSchema)]
struct NewWebhook {
    url: String,
    secret: String,
    #[serde(default)]
    kinds: Vec<String>,
}
#[utoipa::path(
    post,
    path = "/api/v1/webhooks",
    tag = "webhooks",
    summary = "Register a webhook (HMAC-signed deliveries)",
    request_body = NewWebhook,
    responses((status = 200, description = "OK", body = WebhookCreated), Errors)
)]
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
    Ok(Json(WebhookCreated {
        id,
        url: url.to_string(),
        kinds: w.kinds,
    }))
}

/// A registered webhook (its secret is never sent back).
#[derive(Serialize, ToSchema)]
struct WebhookCreated {
    id: i64,
    url: String,
    kinds: Vec<String>,
}
#[utoipa::path(
    get,
    path = "/api/v1/webhooks",
    tag = "webhooks",
    summary = "Registered webhooks",
    responses((status = 200, description = "OK", body = Vec<super::db::Webhook>), Errors)
)]
async fn webhooks(State(c): C) -> Result<impl IntoResponse> {
    Ok(Json(c.db.webhooks().await?))
}
#[utoipa::path(
    delete,
    path = "/api/v1/webhooks/{id}",
    tag = "webhooks",
    summary = "Remove a webhook",
    params(("id" = i64, Path, description = "the webhook's id")),
    responses((status = 200, description = "OK", body = RemovedId), Errors)
)]
async fn remove_webhook(State(c): C, Path(id): Path<i64>) -> Result<impl IntoResponse> {
    if !c.db.remove_webhook(id).await? {
        return Err(Error::NotFound(format!(
            "no webhook {id}: see `ferry webhook ls`"
        )));
    }
    Ok(Json(serde_json::json!({"removed": id})))
}
#[utoipa::path(
    get,
    path = "/api/v1/webhooks/{id}/deliveries",
    tag = "webhooks",
    summary = "A webhook's delivery log",
    params(("id" = i64, Path, description = "the webhook's id")),
    responses((status = 200, description = "OK", body = Vec<super::db::Delivery>), Errors)
)]
async fn deliveries(State(c): C, Path(id): Path<i64>) -> Result<impl IntoResponse> {
    Ok(Json(c.db.deliveries(id, 200).await?))
}

#[derive(Deserialize, ToSchema)]
struct Policy {
    auto: bool,
}
#[utoipa::path(
    post,
    path = "/api/v1/runtimes/{name}/policy",
    tag = "runtimes",
    summary = "Allow or forbid the monitor's automatic moves and hibernation",
    params(("name" = String, Path, description = "the runtime's name")),
    request_body = Policy,
    responses((status = 200, description = "OK", body = crate::api::Runtime), Errors)
)]
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

#[utoipa::path(
    get,
    path = "/metrics",
    tag = "system",
    summary = "Prometheus metrics (no token needed)",
    security(()),
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String))
)]
async fn metrics(State(c): C) -> impl IntoResponse {
    (
        [("content-type", "text/plain; version=0.0.4")],
        c.metrics().await,
    )
}

#[derive(Deserialize, Default, IntoParams)]
#[into_params(parameter_in = Query)]
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
#[utoipa::path(
    get,
    path = "/api/v1/events/stream",
    tag = "events",
    summary = "Events as they are recorded (server-sent events), and operations' progress",
    params(StreamQuery),
    responses((status = 200, description = "an SSE stream of events (JSON data of Event)", content_type = "text/event-stream", body = String), Errors)
)]
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

#[utoipa::path(
    get,
    path = "/api/v1/events",
    tag = "events",
    summary = "Recorded events, newest first",
    params(ListQuery),
    responses((status = 200, description = "OK", body = Vec<crate::api::Event>), Errors)
)]
async fn events(State(c): C, Query(q): Query<ListQuery>) -> Result<impl IntoResponse> {
    Ok(Json(c.db.events(q.runtime.as_deref(), q.limit()?).await?))
}

#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    tag = "system",
    summary = "This document (no token needed)",
    security(()),
    responses((status = 200, description = "the OpenAPI 3.1 document", body = serde_json::Value))
)]
async fn openapi() -> impl IntoResponse {
    (
        [("content-type", "application/json")],
        super::openapi::json(),
    )
}
