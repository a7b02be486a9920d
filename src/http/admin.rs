//! The admin API, behind `Authorization: Bearer $ADMIN_TOKEN`; not mounted when the token is unset.

use axum::Json;
use axum::extract::{Query, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use super::AppState;
use super::error::ApiError;
use crate::domain::PhoneNumber;
use crate::store::{Client, Store};

/// Rejects requests without the right bearer token, comparing in constant time.
pub async fn require_token<S: Store>(
    State(app): State<AppState<S>>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let expected = app.config.admin_token.as_deref().unwrap_or_default();
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    let ok = !expected.is_empty() && bool::from(given.as_bytes().ct_eq(expected.as_bytes()));
    if ok {
        Ok(next.run(request).await)
    } else {
        Err(ApiError::Unauthorized)
    }
}

#[derive(Debug, Deserialize)]
pub struct ClientQuery {
    phone: Option<String>,
}

/// One owner as the admin API shows it.
#[derive(Debug, Serialize)]
pub struct ClientView {
    pub id: String,
    pub owner_phone: String,
    pub state: &'static str,
    pub gate: Option<&'static str>,
    pub business_type: Option<String>,
    pub location: Option<String>,
    pub business_name: Option<String>,
    pub owner_name: Option<String>,
    pub notify: Option<String>,
    pub payment_active: bool,
    pub twilio_number: Option<String>,
    pub opted_out: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<Client> for ClientView {
    fn from(c: Client) -> Self {
        Self {
            id: c.id.to_string(),
            owner_phone: c.owner_phone.to_string(),
            state: c.state.as_str(),
            gate: c.gate.map(|g| g.as_str()),
            business_type: c.business_type,
            location: c.location,
            business_name: c.business_name,
            owner_name: c.owner_name,
            notify: c.notify.map(|n| n.to_stored()),
            payment_active: c.payment_active,
            twilio_number: c.twilio_number.map(|n| n.to_string()),
            opted_out: c.opted_out,
            created_at: c.created_at,
            updated_at: c.updated_at,
        }
    }
}

/// `GET /admin/api/clients?phone=<E.164>`
pub async fn client_by_phone<S: Store>(
    State(app): State<AppState<S>>,
    Query(query): Query<ClientQuery>,
) -> Result<Json<ClientView>, ApiError> {
    let raw = query
        .phone
        .ok_or_else(|| ApiError::BadRequest("query parameter phone is required".into()))?;
    let phone =
        PhoneNumber::parse(&raw).map_err(|e| ApiError::BadRequest(format!("phone: {e}")))?;
    let client = app
        .engine
        .client_by_phone(&phone)
        .await?
        .ok_or_else(|| ApiError::NotFound("no owner with that phone".into()))?;
    Ok(Json(client.into()))
}

/// `GET /admin/api/pool`: numbers by status and whether enough are free.
pub async fn pool<S: Store>(
    State(app): State<AppState<S>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let stats = app
        .engine
        .store()
        .pool_stats()
        .await
        .map_err(crate::engine::EngineError::from)?;
    let low_water = app.config.pool_low_water;
    Ok(Json(serde_json::json!({
        "total": stats.total,
        "by_status": {
            "AVAILABLE": stats.available,
            "RESERVED": stats.reserved,
            "ASSIGNED": stats.assigned,
            "QUARANTINED": stats.quarantined,
        },
        "available": stats.available,
        "low_water": low_water,
        "healthy": stats.available >= low_water,
    })))
}
