//! What the REST API and the task socket share: JSON errors and bodies.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use weft_protocol::api::{ErrorBody, error_code};
use weft_store::StoreError;

use crate::error::RunError;

/// An error answer: a status and `{"message"}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // A full or unreachable database is said once where it is found
        // (the store's warnings), not once per refused request.
        let id = format!("err-{}", uuid::Uuid::new_v4().simple());
        match self.status {
            StatusCode::INSUFFICIENT_STORAGE | StatusCode::SERVICE_UNAVAILABLE => {
                tracing::debug!("{id}: {}", self.message)
            }
            s if s.is_server_error() => tracing::error!("{id}: {}", self.message),
            _ => {}
        }
        (
            self.status,
            Json(ErrorBody {
                id,
                code: error_code(self.status.as_u16()).to_string(),
                message: self.message,
            }),
        )
            .into_response()
    }
}

impl From<RunError> for ApiError {
    fn from(e: RunError) -> Self {
        let status = match &e {
            RunError::UnknownTask(_) | RunError::UnknownRun(_) => StatusCode::NOT_FOUND,
            RunError::AlreadyEnded { .. } | RunError::AttemptEnded => StatusCode::CONFLICT,
            RunError::BadInput(_) | RunError::TooDeep { .. } => StatusCode::BAD_REQUEST,
            RunError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            RunError::Fenced => StatusCode::SERVICE_UNAVAILABLE,
            RunError::Store(e) => store_status(e),
        };
        Self::new(status, e.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        Self::new(store_status(&e), e.to_string())
    }
}

/// A full disk is 507 Insufficient Storage and a database that cannot
/// answer now is 503, so clients (and the SDKs, which retry 5xx) know to
/// try again; anything else is the server's fault.
fn store_status(e: &StoreError) -> StatusCode {
    match e {
        StoreError::Full { .. } => StatusCode::INSUFFICIENT_STORAGE,
        StoreError::TooBroad(_) => StatusCode::BAD_REQUEST,
        StoreError::Unavailable { .. } | StoreError::ReadOnly { .. } => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// A JSON body whose every failure is a JSON error naming the problem
/// (axum's own `Json` answers in plain text).
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "request body is over the size limit (see --max-payload-bytes)",
                )
            } else {
                ApiError::bad_request(format!("could not read the request body: {e}"))
            }
        })?;
        if bytes.is_empty() {
            return Err(ApiError::bad_request(
                "request body is empty; expected JSON",
            ));
        }
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| ApiError::bad_request(format!("malformed JSON body: {e}")))
    }
}

/// Answer for unknown paths.
/// A browser asking for a page gets the dashboard's "not found" page with
/// a way back; anything else the JSON error.
pub async fn not_found(uri: axum::http::Uri, headers: axum::http::HeaderMap) -> Response {
    let page = headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/html"));
    if page && !uri.path().starts_with("/v1/") && !uri.path().starts_with("/weft/") {
        return weft_dashboard::not_found_page(&format!("There is no page at {}.", uri.path()));
    }
    ApiError::not_found(format!("no such endpoint: {}", uri.path())).into_response()
}

/// Answer for known paths with the wrong method.
pub async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not allowed on {}", uri.path()),
    )
}

/// The one `{id}` of a path, with a JSON error when it is not text (axum's
/// own answers in plain text).
pub struct PathId(pub String);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for PathId {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        let axum::extract::Path(id) =
            axum::extract::Path::<String>::from_request_parts(parts, state)
                .await
                .map_err(|e| {
                    ApiError::bad_request(format!(
                        "the id in {} is not valid: {e}",
                        parts.uri.path()
                    ))
                })?;
        if id.contains('\0') {
            return Err(ApiError::bad_request(
                "the id in the path holds a NUL byte (%00), which no id does",
            ));
        }
        Ok(PathId(id))
    }
}
