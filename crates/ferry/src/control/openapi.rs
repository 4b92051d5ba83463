//! The control API's OpenAPI 3.1 description, generated from the handlers and types of
//! `control::api` (utoipa), served at `/api/v1/openapi.json` and kept in `docs/openapi.json`
//! (a test fails when the two differ: `FERRY_WRITE_OPENAPI=1 cargo test -p ferry-core openapi`
//! rewrites the copy).

use serde::Serialize;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoResponses, Modify, OpenApi, ToSchema};

/// Every error of the API: its kind and a message that says what to do.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// `not_found`, `conflict`, `invalid`, `snapshot_invalid`, `unavailable`, `unauthorized`,
    /// `forbidden` or `internal`.
    pub kind: String,
    pub message: String,
}

/// The errors any call can answer with (all with [`ErrorBody`]).
#[derive(IntoResponses)]
#[allow(dead_code)]
pub enum Errors {
    /// No or a wrong control token.
    #[response(status = 401)]
    Unauthorized(#[to_schema] ErrorBody),
    /// The credential is valid but not for this.
    #[response(status = 403)]
    Forbidden(ErrorBody),
    /// No such runtime, snapshot, host, image or webhook.
    #[response(status = 404)]
    NotFound(ErrorBody),
    /// The runtime is busy with another operation, or the name is taken, or there is no room.
    #[response(status = 409)]
    Conflict(ErrorBody),
    /// The request body is not JSON.
    #[response(status = 415)]
    UnsupportedMediaType(ErrorBody),
    /// Bad input: the message says what to send.
    #[response(status = 422)]
    Invalid(ErrorBody),
    /// Something failed on a host; the message says what.
    #[response(status = 500)]
    Internal(ErrorBody),
    /// A host or runtime does not answer now; retry.
    #[response(status = 503)]
    Unavailable(ErrorBody),
}

/// `{"removed": NAME}`.
#[derive(Serialize, ToSchema)]
pub struct Removed {
    pub removed: String,
}

/// `{"removed": ID}`.
#[derive(Serialize, ToSchema)]
pub struct RemovedId {
    pub removed: i64,
}

struct BearerToken;

impl Modify for BearerToken {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        let components = api.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "control_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "The control (operator) token: the `token` file in the state dir of `ferry serve`.",
                    ))
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "ferry control API",
        description = "Create, move, checkpoint, restore, hibernate and fork users' live Python runtimes. Every call needs the control token as a bearer, except this document and /metrics.",
        license(name = "Apache-2.0", identifier = "Apache-2.0")
    ),
    modifiers(&BearerToken),
    security(("control_token" = [])),
    paths(
        super::api::info,
        super::api::instances,
        super::api::hosts,
        super::api::add_host,
        super::api::cordon_host,
        super::api::uncordon_host,
        super::api::drain_host,
        super::api::remove_host,
        super::api::list,
        super::api::create,
        super::api::inspect,
        super::api::remove,
        super::api::exec,
        super::api::stop,
        super::api::checkpoint,
        super::api::migrate,
        super::api::hibernate,
        super::api::wake,
        super::api::baseline_migrate,
        super::api::policy,
        super::api::token,
        super::api::rotate_token,
        super::api::signed_token,
        super::api::signing_key,
        super::api::migrations,
        super::api::restore,
        super::api::snapshots,
        super::api::import,
        super::api::snapshot,
        super::api::remove_snapshot,
        super::api::export,
        super::api::images,
        super::api::import_image,
        super::api::remove_image,
        super::api::operations,
        super::api::events,
        super::api::event_stream,
        super::api::webhooks,
        super::api::add_webhook,
        super::api::remove_webhook,
        super::api::deliveries,
        super::api::metrics,
        super::api::openapi,
    ),
    components(schemas(ErrorBody, ErrorDetail))
)]
pub struct ApiDoc;

/// The document, with ferry's version.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.info.version = crate::VERSION.to_string();
    doc
}

/// The document as pretty JSON, ending in a newline (as kept in `docs/openapi.json`).
pub fn json() -> String {
    let mut s = document()
        .to_pretty_json()
        .expect("the document serializes");
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn openapi_copy_in_docs_matches_the_code() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");
        let now = super::json();
        if std::env::var_os("FERRY_WRITE_OPENAPI").is_some() {
            std::fs::write(path, &now).unwrap();
        }
        let kept = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            kept == now,
            "docs/openapi.json differs from the API the code serves: run `FERRY_WRITE_OPENAPI=1 cargo test -p ferry-core --lib openapi` and commit the file"
        );
    }

    #[test]
    fn every_route_of_the_router_is_described() {
        let doc = super::document();
        let src = include_str!("api.rs");
        let start = src.find("pub fn router").unwrap();
        let body = &src[start..start + src[start..].find("\n}\n").unwrap()];
        let routes: Vec<&str> = body
            .split('"')
            .skip(1)
            .step_by(2)
            .filter(|s| s.starts_with('/'))
            .collect();
        assert!(routes.len() > 25, "found only {routes:?}");
        for path in routes {
            let templated: String = path
                .split('/')
                .map(|seg| match seg.strip_prefix(':') {
                    Some(p) => format!("{{{p}}}"),
                    None => seg.to_string(),
                })
                .collect::<Vec<_>>()
                .join("/");
            assert!(
                doc.paths.paths.contains_key(&templated),
                "route {path} is not in the OpenAPI document"
            );
        }
    }

    #[test]
    fn calls_need_the_bearer_token_and_errors_have_one_shape() {
        let v: serde_json::Value = serde_json::from_str(&super::json()).unwrap();
        assert_eq!(v["openapi"], "3.1.0");
        assert_eq!(
            v["components"]["securitySchemes"]["control_token"]["scheme"],
            "bearer"
        );
        let create = &v["paths"]["/api/v1/runtimes"]["post"];
        assert!(create["requestBody"].is_object());
        assert_eq!(
            create["responses"]["422"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/ErrorBody"
        );
    }
}
