//! The HTTP shell: one file per webhook family, errors mapped in [`error`].

pub mod admin;
pub mod error;
pub mod form;
pub mod health;
pub mod index;
pub mod stripe;
pub mod twilio;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, MatchedPath, Request};
use axum::http::{HeaderName, StatusCode};
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::config::Config;
use crate::engine::Engine;
use crate::replenish::CircuitBreaker;
use crate::store::Store;

/// Twilio's bodies are a few KiB; Stripe's rarely more than 20.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// A webhook's raw body, as signatures are computed over it; over [`MAX_BODY_BYTES`] it is refused
/// through [`error::ApiError`] like every other bad request.
pub struct RawBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = error::ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, error::ApiError> {
        match Bytes::from_request(req, state).await {
            Ok(body) => Ok(RawBody(body)),
            Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Err(error::ApiError::PayloadTooLarge(MAX_BODY_BYTES))
            }
            Err(rejection) => Err(error::ApiError::BadRequest(rejection.body_text())),
        }
    }
}

/// Twilio gives up after 15 s; answer (even with an error) before that.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(12);

pub struct AppState<S: Store> {
    pub engine: Arc<Engine<S>>,
    pub config: Arc<Config>,
    /// The breaker around Twilio purchases, when numbers are bought (`POOL_TARGET`).
    pub twilio_breaker: Option<Arc<CircuitBreaker>>,
}

impl<S: Store> Clone for AppState<S> {
    fn clone(&self) -> Self {
        Self {
            engine: self.engine.clone(),
            config: self.config.clone(),
            twilio_breaker: self.twilio_breaker.clone(),
        }
    }
}

pub fn router<S: Store>(state: AppState<S>) -> Router {
    let request_id = HeaderName::from_static("x-request-id");
    let mut app = Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz::<S>))
        .route("/metrics", get(health::metrics::<S>))
        .route("/webhooks/twilio/sms", post(twilio::sms::<S>))
        .route(
            "/webhooks/twilio/message-status",
            post(twilio::message_status::<S>),
        )
        .route("/webhooks/twilio/voice", post(twilio::voice::<S>))
        .route(
            "/webhooks/twilio/call-status",
            post(twilio::call_status::<S>),
        )
        .route("/webhooks/stripe", post(stripe::webhook::<S>))
        .route("/", get(index::index::<S>))
        .fallback(index::not_found);
    if state.config.admin_token.is_some() {
        let admin = admin::routes::<S>().route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            admin::require_token::<S>,
        ));
        app = app.merge(admin);
    } else {
        app = app
            .route("/admin/api", axum::routing::any(index::admin_off))
            .route("/admin/api/{*rest}", axum::routing::any(index::admin_off));
    }
    app.route_layer(axum::middleware::from_fn(crate::telemetry::track_latency))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            REQUEST_TIMEOUT,
        ))
        .layer(
            TraceLayer::new_for_http().make_span_with(|request: &Request| {
                // The route template, never the raw URL: query strings can carry phone numbers.
                let route = request
                    .extensions()
                    .get::<MatchedPath>()
                    .map(MatchedPath::as_str)
                    .unwrap_or("unmatched");
                let request_id = request
                    .headers()
                    .get("x-request-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                tracing::info_span!("request", method = %request.method(), route, request_id)
            }),
        )
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
        .with_state(state)
}

/// Serves until `shutdown` completes, then lets in-flight requests finish.
pub async fn serve<S: Store>(
    listener: TcpListener,
    state: AppState<S>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}
