//! Liveness and readiness.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;

use super::AppState;
use crate::store::Store;

/// `GET /healthz`: the process answers.
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// How long the readiness probe waits for the database: a probe that hangs is no answer.
pub const READY_PING_TIMEOUT: Duration = Duration::from_secs(1);

/// `GET /readyz`: 200 when the database answers (within [`READY_PING_TIMEOUT`]) and every
/// background worker runs; 503 otherwise, naming what is down (`workers_down`). The detail also
/// says whether the circuit breaker around Twilio purchases is open: that is worth an alert, but
/// the server still serves, so it does not make it unready.
pub async fn readyz<S: Store>(
    State(app): State<AppState<S>>,
) -> (StatusCode, Json<serde_json::Value>) {
    let database = match tokio::time::timeout(READY_PING_TIMEOUT, app.engine.store().ping()).await {
        Ok(Ok(())) => "ok",
        Ok(Err(e)) => {
            tracing::warn!(event = "NOT_READY", error = %e);
            "unavailable"
        }
        Err(_) => {
            tracing::warn!(
                event = "NOT_READY",
                error = "the database did not answer in time"
            );
            "unavailable"
        }
    };
    let workers_down = app.workers.down();
    if !workers_down.is_empty() {
        tracing::warn!(event = "NOT_READY", workers_down = ?workers_down);
    }
    let twilio_circuit = match &app.twilio_breaker {
        None => "off",
        Some(breaker) if breaker.is_open() => "open",
        Some(_) => "closed",
    };
    let status = if database == "ok" && workers_down.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(serde_json::json!({
            "ready": status == StatusCode::OK,
            "database": database,
            "workers_down": workers_down,
            "twilio_circuit": twilio_circuit,
        })),
    )
}

/// `GET /metrics`: Prometheus text. Counters and histograms from the recorder; the database
/// gauges as read within the last few seconds (see [`crate::telemetry::GaugeCache`]).
pub async fn metrics<S: Store>(State(app): State<AppState<S>>) -> (StatusCode, String) {
    let store = app.engine.store();
    let mut body = crate::telemetry::install().render();
    let gauges = app
        .gauges
        .render(|| async {
            let owners = store.owners_by_state().await?;
            let pool = store.pool_stats().await?;
            let uncertain = store.uncertain_purchase_count().await?;
            Ok::<_, crate::store::StoreError>(crate::telemetry::render_gauges(
                &owners, &pool, uncertain,
            ))
        })
        .await;
    body.push_str(&gauges);
    if let Some(breaker) = &app.twilio_breaker {
        body.push_str(&format!(
            "# HELP onboard_twilio_circuit_open 1 while the breaker around Twilio purchases is open.\n\
             # TYPE onboard_twilio_circuit_open gauge\nonboard_twilio_circuit_open {}\n",
            u8::from(breaker.is_open())
        ));
    }
    (StatusCode::OK, body)
}
