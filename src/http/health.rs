//! Liveness and readiness.

use axum::extract::State;
use axum::http::StatusCode;

use super::AppState;
use crate::store::Store;

/// `GET /healthz`: the process answers.
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// `GET /readyz`: the database answers too.
pub async fn readyz<S: Store>(State(app): State<AppState<S>>) -> (StatusCode, String) {
    match app.engine.store().ping().await {
        Ok(()) => (StatusCode::OK, "ready\n".to_owned()),
        Err(e) => {
            tracing::warn!(event = "NOT_READY", error = %e);
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "database unavailable\n".to_owned(),
            )
        }
    }
}
