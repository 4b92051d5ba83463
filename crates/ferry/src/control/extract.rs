//! Request extractors of the control API: axum's `Json`, `Query` and `Path`, whose rejections
//! (malformed JSON, a missing field, a wrong content type, a bad query) answer with ferry's JSON
//! error shape (`{"error": {"kind": "invalid", "message": ...}}`, status 422 or 415) and say what
//! to send, instead of axum's plain-text bodies.

use crate::Error;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::FromRequest;
use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// A rejected request: ferry's error body with the status that fits the rejection.
pub struct Rejection(StatusCode, Error);

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        let mut r = self.1.into_response();
        *r.status_mut() = self.0;
        r
    }
}

impl From<JsonRejection> for Rejection {
    fn from(r: JsonRejection) -> Self {
        let (status, hint) = match &r {
            JsonRejection::MissingJsonContentType(_) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "send the body as JSON with `Content-Type: application/json`",
            ),
            JsonRejection::JsonSyntaxError(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "the body is not valid JSON",
            ),
            _ => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "the JSON body does not have the fields this call takes (see /api/v1/openapi.json)",
            ),
        };
        Rejection(status, Error::Invalid(format!("{hint}: {}", r.body_text())))
    }
}

impl From<QueryRejection> for Rejection {
    fn from(r: QueryRejection) -> Self {
        Rejection(
            StatusCode::UNPROCESSABLE_ENTITY,
            Error::Invalid(format!(
                "bad query parameters (see /api/v1/openapi.json for the ones this call takes): {}",
                r.body_text()
            )),
        )
    }
}

impl From<PathRejection> for Rejection {
    fn from(r: PathRejection) -> Self {
        Rejection(
            StatusCode::UNPROCESSABLE_ENTITY,
            Error::Invalid(format!("bad path parameter: {}", r.body_text())),
        )
    }
}

/// `axum::Json`, rejected with ferry's error shape.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(Rejection))]
pub struct Json<T>(pub T);

/// `axum::extract::Query`, rejected with ferry's error shape.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(Rejection))]
pub struct Query<T>(pub T);

/// `axum::extract::Path`, rejected with ferry's error shape.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(Rejection))]
pub struct Path<T>(pub T);

impl<T: serde::Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// Reads a JSON integer as a `u64`, accepting an integral number written with a fraction
/// (`5795.0`): JSON Schema, and so every generated client, calls that an integer too.
pub fn integral_u64<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let n = serde_json::Number::deserialize(d)?;
    if let Some(u) = n.as_u64() {
        return Ok(u);
    }
    match n.as_f64() {
        Some(f) if f.fract() == 0.0 && (0.0..=u64::MAX as f64).contains(&f) => Ok(f as u64),
        _ => Err(serde::de::Error::custom(format!(
            "{n} is not a whole number of 0 or more"
        ))),
    }
}

/// [`integral_u64`] for an optional field: absent or `null` is `None`.
pub fn opt_integral_u64<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    #[derive(serde::Deserialize)]
    struct Whole(#[serde(deserialize_with = "integral_u64")] u64);
    Ok(Option::<Whole>::deserialize(d)?.map(|w| w.0))
}

use serde::Deserialize as _;

#[cfg(test)]
mod tests {
    #[derive(serde::Deserialize)]
    struct T {
        #[serde(deserialize_with = "super::integral_u64")]
        n: u64,
    }

    #[test]
    fn integral_numbers_with_a_fraction_are_integers() {
        let v: T = serde_json::from_str(r#"{"n": 5795.0}"#).unwrap();
        assert_eq!(v.n, 5795);
        assert_eq!(serde_json::from_str::<T>(r#"{"n": 7}"#).unwrap().n, 7);
        assert!(serde_json::from_str::<T>(r#"{"n": 1.5}"#).is_err());
        assert!(serde_json::from_str::<T>(r#"{"n": -1}"#).is_err());
    }
}
