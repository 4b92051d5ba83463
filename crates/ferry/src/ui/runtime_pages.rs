//! The pages the proxy serves itself under a runtime's own path, `/r/NAME/.ferry/...`: the
//! notebook page (the MRMD editor), its script and style, and the editor bundle. Served from the
//! proxy's origin, the editor's own `fetch` and `EventSource` calls to `/r/NAME/mrp/v1` are
//! same-origin and carry the runtime's access cookie. The proxy checks the credential before it
//! gets here; nothing under `.ferry/` is ever forwarded to the runtime.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use std::path::Path;

/// The notebook page's path under `/r/NAME/`.
pub const NOTEBOOK_PATH: &str = ".ferry/notebook";

fn page_headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("frame-ancestors 'none'; object-src 'none'; base-uri 'none'"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

/// Answers `/r/NAME/.ferry/PAGE`.
pub async fn serve(name: &str, page: &str, editor_dir: Option<&Path>) -> Response {
    match page {
        "notebook" => notebook(name, editor_dir),
        "editor/mrmd.iife.js" => bundle(editor_dir).await,
        "assets/notebook.js" | "assets/style.css" => {
            let file = page.trim_start_matches("assets/");
            let (_, mime, body) = super::ASSETS
                .iter()
                .find(|a| a.0 == file)
                .expect("listed asset");
            page_headers(
                (
                    [
                        (header::CONTENT_TYPE, *mime),
                        (header::CACHE_CONTROL, "no-cache"),
                    ],
                    *body,
                )
                    .into_response(),
            )
        }
        _ => crate::proxy::json_error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!(
                "/r/{name}/.ferry/ holds only the notebook page: open /r/{name}/{NOTEBOOK_PATH}"
            ),
        ),
    }
}

fn notebook(name: &str, editor_dir: Option<&Path>) -> Response {
    let installed = editor_dir.and_then(crate::editor::installed);
    let Some(inst) = installed else {
        let dir = editor_dir
            .map(|d| d.display().to_string())
            .unwrap_or_default();
        let msg = format!("The notebook editor is not installed in {dir}: run `ferry editor install` (or start `ferry serve --editor-dir DIR` where it is).");
        return page_headers(
            (
                StatusCode::NOT_FOUND,
                Html(format!(
                    "<!doctype html><meta charset=utf-8><title>ferry notebook</title><p>{}</p>",
                    super::escape(&msg)
                )),
            )
                .into_response(),
        );
    };
    let page = super::NOTEBOOK
        .replace("{{NAME}}", &super::escape(name))
        .replace("{{EDITOR_VERSION}}", &super::escape(&inst.version));
    page_headers(([(header::CACHE_CONTROL, "no-store")], Html(page)).into_response())
}

async fn bundle(editor_dir: Option<&Path>) -> Response {
    let read = match editor_dir {
        Some(d) => tokio::fs::read(crate::editor::bundle_path(d)).await.ok(),
        None => None,
    };
    match read {
        Some(b) => page_headers(
            (
                [
                    (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
                    (header::CACHE_CONTROL, "max-age=3600"),
                ],
                b,
            )
                .into_response(),
        ),
        None => crate::proxy::json_error(
            StatusCode::NOT_FOUND,
            "not_found",
            "the editor bundle is not installed: run `ferry editor install`".into(),
        ),
    }
}
