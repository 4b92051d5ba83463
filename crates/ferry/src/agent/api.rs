//! The agent's HTTP API (`/agent/v1/...`), used by the control plane. Every request must carry the
//! agent token (`Authorization: Bearer ...`). Snapshot archives stream in and out without staging.

use super::Agent;
use crate::api::{CheckpointRequest, RestoreRequest, RuntimeSpec};
use crate::{Error, Result};
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use std::io::Write;
use std::sync::Arc;

/// zstd level for archives: level 1 is the fastest that still shrinks idle runtimes ~4x.
pub const ARCHIVE_LEVEL: i32 = 1;

pub fn router(agent: Arc<Agent>) -> Router {
    Router::new()
        .route(
            "/agent/v1/info",
            get(|State(a): State<Arc<Agent>>| async move { Json(a.info()) }),
        )
        .route("/agent/v1/runtimes", get(list).post(create))
        .route("/agent/v1/runtimes/:id", get(get_one).delete(remove))
        .route("/agent/v1/runtimes/:id/settled", get(settled))
        .route("/agent/v1/runtimes/:id/stop", post(stop))
        .route("/agent/v1/runtimes/:id/freeze", post(freeze))
        .route("/agent/v1/runtimes/:id/thaw", post(thaw))
        .route("/agent/v1/runtimes/:id/checkpoint", post(checkpoint))
        .route("/agent/v1/restore", post(restore))
        .route("/agent/v1/prepare", post(prepare))
        .route("/agent/v1/runtimes/:id/send", post(send))
        .route("/agent/v1/runtimes/:id/precopy", post(precopy))
        .route(
            "/agent/v1/runtimes/:id/baseline-export",
            post(baseline_export),
        )
        .route(
            "/agent/v1/baseline/:snapshot",
            axum::routing::put(baseline_receive),
        )
        .route("/agent/v1/baseline/:snapshot/send", post(baseline_send))
        .route(
            "/agent/v1/baseline/:snapshot/restore",
            post(baseline_restore),
        )
        .route(
            "/agent/v1/precopy/:snapshot/pages",
            axum::routing::put(precopy_pages),
        )
        .route(
            "/agent/v1/precopy/:snapshot/dirty",
            axum::routing::put(precopy_dirty),
        )
        .route("/agent/v1/lazy/:snapshot", get(lazy_status))
        .route("/agent/v1/lazy/:snapshot/abort", post(lazy_abort))
        .route("/agent/v1/images", get(images))
        .route("/agent/v1/images/import", axum::routing::put(import_image))
        .route(
            "/agent/v1/images/:name",
            axum::routing::delete(remove_image),
        )
        .route("/agent/v1/images/:name/archive", get(export_image))
        .route("/agent/v1/images/:name/send", post(send_image))
        .route("/agent/v1/snapshots", get(snapshots))
        .route(
            "/agent/v1/snapshots/:id",
            get(snapshot).delete(remove_snapshot),
        )
        .route("/agent/v1/snapshots/:id/verify", post(verify_snapshot))
        .route("/agent/v1/snapshots/:id/archive", get(export).put(import))
        .layer(middleware::from_fn_with_state(agent.clone(), auth))
        .with_state(agent)
}

async fn auth(State(a): State<Arc<Agent>>, req: Request, next: Next) -> Response {
    if !crate::control::auth::bearer_ok(req.headers(), &a.token) {
        return Error::Unauthorized("missing or wrong agent token".into()).into_response();
    }
    next.run(req).await
}

type A = State<Arc<Agent>>;

/// Runs an operation to its end even if the caller goes away: a control plane that dies while a
/// checkpoint or a send runs must not leave a half-written snapshot or a runtime frozen by a
/// dropped future. The control plane's recovery reads the outcome afterwards.
async fn detached<T: Send + 'static>(
    op: impl std::future::Future<Output = Result<T>> + Send + 'static,
) -> Result<T> {
    tokio::spawn(op)
        .await
        .map_err(|e| Error::Internal(format!("agent operation panicked: {e}")))?
}

async fn list(State(a): A) -> impl IntoResponse {
    Json(a.list().await)
}
async fn create(State(a): A, Json(spec): Json<RuntimeSpec>) -> Result<impl IntoResponse> {
    Ok(Json(detached(async move { a.create(spec).await }).await?))
}
async fn get_one(State(a): A, Path(id): Path<String>) -> Result<impl IntoResponse> {
    Ok(Json(a.get(&id).await?))
}
/// The runtime once no operation runs on it (waits for the one under way, if any).
async fn settled(State(a): A, Path(id): Path<String>) -> Result<impl IntoResponse> {
    drop(a.lock(&id).await);
    Ok(Json(a.get(&id).await?))
}
async fn remove(State(a): A, Path(id): Path<String>) -> Result<impl IntoResponse> {
    let removed = id.clone();
    detached(async move { a.remove(&id).await }).await?;
    Ok(Json(serde_json::json!({"removed": removed})))
}
async fn stop(State(a): A, Path(id): Path<String>) -> Result<impl IntoResponse> {
    Ok(Json(detached(async move { a.stop(&id).await }).await?))
}
async fn freeze(State(a): A, Path(id): Path<String>) -> Result<impl IntoResponse> {
    Ok(Json(
        detached(async move { a.freeze(&id, true).await }).await?,
    ))
}
async fn thaw(State(a): A, Path(id): Path<String>) -> Result<impl IntoResponse> {
    Ok(Json(
        detached(async move { a.freeze(&id, false).await }).await?,
    ))
}
async fn checkpoint(
    State(a): A,
    Path(id): Path<String>,
    Json(r): Json<CheckpointRequest>,
) -> Result<impl IntoResponse> {
    Ok(Json(
        detached(async move { a.checkpoint(&id, &r.snapshot_id, r.leave_running).await }).await?,
    ))
}
async fn prepare(State(a): A, Json(spec): Json<RuntimeSpec>) -> Result<impl IntoResponse> {
    Ok(Json(detached(async move { a.prepare(spec).await }).await?))
}
async fn restore(State(a): A, Json(r): Json<RestoreRequest>) -> Result<impl IntoResponse> {
    Ok(Json(
        detached(async move {
            a.restore(&r.snapshot_id, r.spec, r.verify, r.lazy_from.as_deref())
                .await
        })
        .await?,
    ))
}
async fn send(
    State(a): A,
    Path(id): Path<String>,
    Json(r): Json<crate::api::SendRequest>,
) -> Result<impl IntoResponse> {
    Ok(Json(detached(async move { a.send(&id, &r).await }).await?))
}
async fn precopy(
    State(a): A,
    Path(id): Path<String>,
    Json(r): Json<crate::api::SendRequest>,
) -> Result<impl IntoResponse> {
    Ok(Json(
        detached(async move { a.precopy(&id, &r).await }).await?,
    ))
}
async fn baseline_export(
    State(a): A,
    Path(id): Path<String>,
    Json(snap): Json<String>,
) -> Result<impl IntoResponse> {
    let (bytes, timings) = a.baseline_export(&id, &snap).await?;
    Ok(Json(
        serde_json::json!({"archive_bytes": bytes, "timings": timings}),
    ))
}
async fn baseline_send(
    State(a): A,
    Path(snap): Path<String>,
    Json(r): Json<(String, String)>,
) -> Result<impl IntoResponse> {
    Ok(Json(a.baseline_send(&snap, &r.0, &r.1).await?))
}
async fn baseline_receive(
    State(a): A,
    Path(snap): Path<String>,
    body: Body,
) -> Result<impl IntoResponse> {
    Ok(Json(a.baseline_receive(&snap, body).await?))
}
async fn baseline_restore(
    State(a): A,
    Path(snap): Path<String>,
    Json(spec): Json<RuntimeSpec>,
) -> Result<impl IntoResponse> {
    Ok(Json(a.baseline_restore(&snap, spec).await?))
}
#[derive(serde::Deserialize)]
struct PrecopyQuery {
    runtime: String,
}

/// A pre-copy round's page runs, appended to the store of a migration this host prepared.
async fn precopy_pages(
    State(a): A,
    Path(snap): Path<String>,
    axum::extract::Query(q): axum::extract::Query<PrecopyQuery>,
    body: Body,
) -> Result<impl IntoResponse> {
    a.precopy_target(&q.runtime, &snap).await?;
    let stream = stall_guard(
        body.into_data_stream().map_err(std::io::Error::other),
        crate::sys::inns::STALL * 2,
    );
    let reader = tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(stream));
    let answer =
        tokio::task::spawn_blocking(move || a.precopy_receive_blocking(&q.runtime, &snap, reader))
            .await
            .map_err(|e| Error::Internal(e.to_string()))??;
    Ok(Json(answer))
}

/// The dirty list sent at the freeze.
async fn precopy_dirty(
    State(a): A,
    Path(snap): Path<String>,
    axum::extract::Query(q): axum::extract::Query<PrecopyQuery>,
    body: Body,
) -> Result<impl IntoResponse> {
    a.precopy_target(&q.runtime, &snap).await?;
    let body = axum::body::to_bytes(body, 256 << 20)
        .await
        .map_err(|e| Error::Invalid(format!("the dirty list: {e}")))?;
    a.precopy_dirty(&q.runtime, &snap, &body)?;
    Ok(Json(serde_json::json!({"dirty": snap})))
}

async fn lazy_status(State(a): A, Path(snap): Path<String>) -> Result<impl IntoResponse> {
    Ok(Json(a.lazy_status(&snap)?))
}
async fn lazy_abort(
    State(a): A,
    Path(snap): Path<String>,
    Json(id): Json<String>,
) -> Result<impl IntoResponse> {
    a.lazy_abort(&id, &snap).await?;
    Ok(Json(serde_json::json!({"aborted": snap})))
}
async fn snapshots(State(a): A) -> impl IntoResponse {
    Json(a.snapshots())
}
async fn snapshot(State(a): A, Path(id): Path<String>) -> Result<impl IntoResponse> {
    Ok(Json(a.snapshot(&id)?))
}
async fn verify_snapshot(State(a): A, Path(id): Path<String>) -> Result<impl IntoResponse> {
    Ok(Json(a.verify_snapshot(&id).await?))
}
async fn remove_snapshot(State(a): A, Path(id): Path<String>) -> Result<impl IntoResponse> {
    a.remove_snapshot(&id)?;
    Ok(Json(serde_json::json!({"removed": id})))
}

/// A `Write` that hands its bytes to an async body stream in chunks of [`CHUNK`] bytes: each byte
/// is copied once, into the chunk that is then sent as it is. Whatever is left is sent on `flush`
/// and on drop.
pub struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<std::io::Result<Bytes>>,
    buf: bytes::BytesMut,
}

/// The size of the chunks a [`ChannelWriter`] sends.
pub const CHUNK: usize = 1 << 20;

impl ChannelWriter {
    pub fn new(tx: tokio::sync::mpsc::Sender<std::io::Result<Bytes>>) -> ChannelWriter {
        ChannelWriter {
            tx,
            buf: bytes::BytesMut::with_capacity(CHUNK),
        }
    }

    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = self.buf.split().freeze();
        self.buf.reserve(CHUNK);
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "receiver went away"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

impl Drop for ChannelWriter {
    fn drop(&mut self) {
        let _ = self.send();
    }
}

/// Streams snapshot dir `dir` as an archive body, produced on a blocking thread as it is sent.
/// The receiver yields the archive's figures once the stream is complete. `trust_stored`: see
/// [`ferry_snapshot::write_archive_with`] (a fresh dump's follower-made sums, never a stored snapshot).
pub fn archive_body(
    dir: std::path::PathBuf,
    trust_stored: bool,
) -> (
    Body,
    tokio::sync::oneshot::Receiver<ferry_snapshot::ArchiveStats>,
) {
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(16);
    let (stats_tx, stats_rx) = tokio::sync::oneshot::channel();
    tokio::task::spawn_blocking(move || {
        let w = ChannelWriter::new(tx.clone());
        let codec = ferry_snapshot::Codec::for_dir(&dir, ARCHIVE_LEVEL);
        match ferry_snapshot::write_archive_with(&dir, w, codec, trust_stored) {
            Ok(stats) => {
                let _ = stats_tx.send(stats);
            }
            Err(e) => {
                tracing::warn!(error = %e, "archive stream failed");
                let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
            }
        }
    });
    (
        Body::from_stream(futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|x| (x, rx))
        })),
        stats_rx,
    )
}

async fn export(State(a): A, Path(id): Path<String>) -> Result<Response> {
    let dir = a.snapshot_dir(&id)?;
    Ok((
        [("content-type", "application/x-ferry-snapshot")],
        archive_body(dir, false).0,
    )
        .into_response())
}

#[derive(serde::Deserialize, Default)]
struct SnapshotImportQuery {
    /// `later`: a migration's stream, whose target verifies the content while it restores.
    verify: Option<String>,
}

async fn import(
    State(a): A,
    Path(id): Path<String>,
    axum::extract::Query(q): axum::extract::Query<SnapshotImportQuery>,
    body: Body,
) -> Result<impl IntoResponse> {
    let when = match q.verify.as_deref() {
        None | Some("now") => ferry_snapshot::Verify::Now,
        Some("later") => ferry_snapshot::Verify::Later,
        Some(other) => {
            return Err(Error::Invalid(format!(
                "verify={other:?}: use now (the default) or later"
            )))
        }
    };
    let stream = stall_guard(
        body.into_data_stream().map_err(std::io::Error::other),
        crate::sys::inns::STALL * 2,
    );
    let reader = tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(stream));
    let info = tokio::task::spawn_blocking(move || a.import_blocking(&id, reader, when))
        .await
        .map_err(|e| Error::Internal(e.to_string()))??;
    Ok(Json(info))
}

/// Ends an incoming stream with an error when nothing arrives for `idle`: a sender cut off by a
/// dead link never closes its connection, and the import must not wait for it forever.
fn stall_guard<S>(
    s: S,
    idle: std::time::Duration,
) -> impl futures::Stream<Item = std::io::Result<bytes::Bytes>> + Send + Unpin
where
    S: futures::Stream<Item = std::io::Result<bytes::Bytes>> + Send + 'static,
{
    let s = Box::pin(s);
    Box::pin(futures::stream::unfold(Some(s), move |s| async move {
        let mut s = s?;
        match tokio::time::timeout(idle, s.next()).await {
            Ok(Some(item)) => Some((item, Some(s))),
            Ok(None) => None,
            Err(_) => Some((
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "the stream stalled: nothing arrived for {} s",
                        idle.as_secs()
                    ),
                )),
                None,
            )),
        }
    }))
}

async fn images(State(a): A) -> impl IntoResponse {
    Json(a.image_list())
}

#[derive(serde::Deserialize)]
struct ImportQuery {
    name: Option<String>,
}

async fn import_image(
    State(a): A,
    axum::extract::Query(q): axum::extract::Query<ImportQuery>,
    body: Body,
) -> Result<impl IntoResponse> {
    let stream = stall_guard(
        body.into_data_stream().map_err(std::io::Error::other),
        crate::sys::inns::STALL * 2,
    );
    let reader = tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(stream));
    let rec =
        tokio::task::spawn_blocking(move || a.import_image_blocking(reader, q.name.as_deref()))
            .await
            .map_err(|e| Error::Internal(e.to_string()))??;
    Ok(Json(rec))
}

async fn remove_image(State(a): A, Path(name): Path<String>) -> Result<impl IntoResponse> {
    Ok(Json(a.remove_image(&name)?))
}

async fn export_image(State(a): A, Path(name): Path<String>) -> Result<Response> {
    Ok((
        [("content-type", "application/x-tar")],
        a.image_body(&name)?,
    )
        .into_response())
}

async fn send_image(
    State(a): A,
    Path(name): Path<String>,
    Json(r): Json<crate::api::SendImageRequest>,
) -> Result<impl IntoResponse> {
    Ok(Json(a.send_image(&name, &r).await?))
}
