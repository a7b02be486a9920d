//! Stripe's webhook.

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;

use super::error::ApiError;
use super::{AppState, RawBody};
use crate::engine::payments::{self, PaymentError};
use crate::store::Store;

/// `POST /webhooks/stripe`: verified over the raw body before anything is parsed or stored.
pub async fn webhook<S: Store>(
    State(app): State<AppState<S>>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Json<serde_json::Value>, ApiError> {
    let signature = headers
        .get("stripe-signature")
        .map(|v| v.to_str().unwrap_or_default());
    let secrets: &[String] = if app.config.signatures_checked() {
        // Checks on but no secret (a hand-built config): refuse rather than take the event unsigned.
        if app.config.stripe_webhook_secrets.is_empty() {
            return Err(ApiError::Forbidden(
                "Stripe-Signature cannot be checked: no webhook secret is configured".into(),
            ));
        }
        &app.config.stripe_webhook_secrets
    } else {
        &[]
    };
    let receipt = payments::receive(&app.engine, secrets, signature, &body)
        .await
        .map_err(|e| match e {
            PaymentError::BadSignature(e) => ApiError::BadRequest(e.to_string()),
            PaymentError::BadEvent(e) => ApiError::BadRequest(e.to_string()),
            PaymentError::Failed(e) => ApiError::Engine(e),
        })?;
    Ok(Json(
        serde_json::json!({ "received": true, "outcome": receipt.name() }),
    ))
}
