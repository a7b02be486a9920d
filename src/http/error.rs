//! The HTTP boundary's one error type, mapped to a response in one place.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::domain::mask_pii;
use crate::engine::EngineError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("missing or wrong bearer token")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    /// The request is valid but the resource's state refuses it (409).
    #[error("{0}")]
    Conflict(String),
    #[error("request body over {0} bytes")]
    PayloadTooLarge(usize),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

impl From<super::form::MissingField> for ApiError {
    fn from(missing: super::form::MissingField) -> Self {
        ApiError::BadRequest(missing.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Engine(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let message = if status.is_server_error() {
            // Details go to the log, not to whoever called.
            // Masked: an error can carry a provider's text or a value it was given.
            tracing::error!(event = "REQUEST_FAILED", error = %mask_pii(&self.to_string()));
            "internal error".to_owned()
        } else {
            tracing::warn!(event = "WEBHOOK_REJECTED", status = status.as_u16(), reason = %mask_pii(&self.to_string()));
            self.to_string()
        };
        let mut response = (status, format!("{message}\n")).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}
