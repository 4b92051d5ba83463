//! ferry's error type: every error says what went wrong and, where it can, what to do about it.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error(transparent)]
    Snapshot(#[from] ferry_snapshot::SnapshotError),
    #[error("{0}")]
    Internal(String),
    /// A restored copy's processes were continued (they may have run requests) and then the copy
    /// failed and was destroyed: whatever it was restored from is no longer the runtime's state,
    /// so nothing may resume from it silently (see the migration module).
    #[error("{0}")]
    Diverged(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn status(&self) -> StatusCode {
        match self {
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::Conflict(_) => StatusCode::CONFLICT,
            Error::Invalid(_) | Error::Snapshot(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Error::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Error::Internal(_) | Error::Diverged(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Error::NotFound(_) => "not_found",
            Error::Conflict(_) => "conflict",
            Error::Invalid(_) => "invalid",
            Error::Snapshot(_) => "snapshot_invalid",
            Error::Unavailable(_) => "unavailable",
            Error::Unauthorized(_) => "unauthorized",
            Error::Internal(_) => "internal",
            Error::Diverged(_) => "diverged",
        }
    }

    /// The same kind of error, its message prefixed with `context`.
    pub fn context(self, context: &str) -> Error {
        let msg = format!("{context}: {self}");
        match self {
            Error::NotFound(_) => Error::NotFound(msg),
            Error::Conflict(_) => Error::Conflict(msg),
            Error::Invalid(_) | Error::Snapshot(_) => Error::Invalid(msg),
            Error::Unavailable(_) => Error::Unavailable(msg),
            Error::Unauthorized(_) => Error::Unauthorized(msg),
            Error::Internal(_) => Error::Internal(msg),
            Error::Diverged(_) => Error::Diverged(msg),
        }
    }

    /// Rebuilds an error received from another ferry API (agent → control → CLI keep their kind).
    pub fn from_api(status: u16, kind: &str, message: String) -> Error {
        match (kind, status) {
            ("not_found", _) | (_, 404) => Error::NotFound(message),
            ("conflict", _) | (_, 409) => Error::Conflict(message),
            ("invalid", _) | ("snapshot_invalid", _) | (_, 422) | (_, 400) => {
                Error::Invalid(message)
            }
            ("unavailable", _) | (_, 503) => Error::Unavailable(message),
            ("unauthorized", _) | (_, 401) => Error::Unauthorized(message),
            ("diverged", _) => Error::Diverged(message),
            _ => Error::Internal(message),
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Internal(e.to_string())
    }
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        Error::Internal(format!("database: {e}"))
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": {"kind": self.kind(), "message": self.to_string()}});
        (self.status(), axum::Json(body)).into_response()
    }
}

/// Shorthand for `Error::Internal(format!(...))`.
#[macro_export]
macro_rules! internal {
    ($($t:tt)*) => { $crate::error::Error::Internal(format!($($t)*)) };
}
