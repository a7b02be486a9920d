//! The HTTP shell: one file per webhook family, errors mapped in [`error`].

pub mod admin;
pub mod console;
pub mod error;
pub mod form;
pub mod health;
pub mod index;
pub mod stripe;
pub mod twilio;

use std::any::Any;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, MatchedPath, Request};
use axum::http::{HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::config::{Config, HttpLimits};
use crate::engine::Engine;
use crate::replenish::CircuitBreaker;
use crate::store::Store;
use crate::telemetry::GaugeCache;
use crate::workers::Workers;

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
    /// The background workers' health, for `/readyz`.
    pub workers: Workers,
    /// The database gauges `/metrics` shows, read at most every few seconds.
    pub gauges: Arc<GaugeCache>,
}

impl<S: Store> Clone for AppState<S> {
    fn clone(&self) -> Self {
        Self {
            engine: self.engine.clone(),
            config: self.config.clone(),
            twilio_breaker: self.twilio_breaker.clone(),
            workers: self.workers.clone(),
            gauges: self.gauges.clone(),
        }
    }
}

/// `/metrics` alone, for its own listener (`METRICS_ADDR`).
pub fn metrics_router<S: Store>(state: AppState<S>) -> Router {
    Router::new()
        .route("/metrics", get(health::metrics::<S>))
        .layer(catch_panics())
        .with_state(state)
}

/// A URL carrying a NUL byte (`%00`, in its path or query) is refused here, once for every route:
/// no field takes one, and PostgreSQL rejects it in any text, so it would otherwise reach the
/// database as an error (a 500) wherever a path segment or query value is passed on. Bodies are
/// parsed by each webhook, which strips or refuses NUL itself.
async fn refuse_nul_in_url(request: Request, next: axum::middleware::Next) -> Response {
    let has_nul = |part: &str| {
        part.as_bytes()
            .windows(3)
            .any(|w| w[0] == b'%' && w[1] == b'0' && w[2] == b'0')
    };
    let uri = request.uri();
    if has_nul(uri.path()) || uri.query().is_some_and(has_nul) {
        return (
            StatusCode::BAD_REQUEST,
            "the URL contains a NUL byte (%00), which no field accepts\n",
        )
            .into_response();
    }
    next.run(request).await
}

pub fn router<S: Store>(state: AppState<S>) -> Router {
    let request_id = HeaderName::from_static("x-request-id");
    let mut app = Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz::<S>))
        .route("/webhooks/twilio/sms", post(twilio::sms::<S>))
        .route(
            "/webhooks/twilio/message-status",
            post(twilio::message_status::<S>),
        )
        .route("/webhooks/twilio/voice", post(twilio::voice::<S>))
        .route(
            "/webhooks/twilio/recording-status",
            post(twilio::recording_status::<S>),
        )
        .route(
            "/webhooks/twilio/voicemail-done",
            post(twilio::voicemail_done::<S>),
        )
        .route(
            "/webhooks/twilio/call-status",
            post(twilio::call_status::<S>),
        )
        .route("/webhooks/stripe", post(stripe::webhook::<S>))
        .route("/", get(index::index::<S>))
        .fallback(index::not_found);
    // With its own listener, /metrics (and what it reveals) stays off the public one.
    if state.config.metrics_addr.is_none() {
        app = app.route("/metrics", get(health::metrics::<S>));
    }
    if state.config.admin_token.is_some() {
        let admin = admin::routes::<S>().route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            admin::require_token::<S>,
        ));
        app = app.merge(admin).merge(console::routes(state.clone()));
    } else {
        app = app
            .route("/admin", axum::routing::any(index::admin_off))
            .route("/admin/{*rest}", axum::routing::any(index::admin_off));
    }
    app.route_layer(axum::middleware::from_fn(crate::telemetry::track_latency))
        .layer(axum::middleware::from_fn(refuse_nul_in_url))
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
        .layer(catch_panics())
        .with_state(state)
}

/// Turns a panic in a handler into a logged 500, so a bug costs one request an error, not its
/// connection (and Twilio a retry storm). The panic's message is not logged: it may quote an
/// owner's text or number. The default panic hook has already printed it to stderr.
pub fn catch_panics() -> CatchPanicLayer<fn(Box<dyn Any + Send>) -> Response> {
    CatchPanicLayer::custom(answer_panic as fn(Box<dyn Any + Send>) -> Response)
}

fn answer_panic(_panic: Box<dyn Any + Send>) -> Response {
    tracing::error!(
        event = "HANDLER_PANICKED",
        "a request handler panicked; answered 500"
    );
    (StatusCode::INTERNAL_SERVER_ERROR, "internal error\n").into_response()
}

/// Serves the app on `listener`, with the configured [`HttpLimits`], until `shutdown` completes,
/// then lets in-flight requests finish.
pub async fn serve<S: Store>(
    listener: TcpListener,
    state: AppState<S>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = state.config.http;
    serve_router(listener, router(state), limits, shutdown).await
}

/// Serves `router` on `listener`, one task per connection, at most `limits.max_connections` at
/// once. On `shutdown` it stops accepting, asks every connection to finish its request in hand
/// and close, and returns when all have.
pub async fn serve_router(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    // Dropped to tell connections to wind down; each holds a receiver until it has closed.
    let (stop, stopping) = watch::channel(());
    let (closed, all_closed) = watch::channel(());
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    tracing::warn!(event = "ACCEPT_FAILED", error = %e);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let service = TowerToHyperService::new(router.clone());
        let mut stopping = stopping.clone();
        let all_closed = all_closed.clone();
        tokio::spawn(async move {
            let mut builder = auto::Builder::new(TokioExecutor::new()).http1_only();
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout);
            let io = TokioIo::new(IdleTimeout::new(stream, limits.idle_timeout));
            let conn = builder.serve_connection(io, service);
            tokio::pin!(conn);
            let mut winding_down = false;
            loop {
                tokio::select! {
                    result = conn.as_mut() => {
                        if let Err(e) = result {
                            tracing::debug!(error = %e, "connection ended with an error");
                        }
                        break;
                    }
                    _ = stopping.changed(), if !winding_down => {
                        winding_down = true;
                        conn.as_mut().graceful_shutdown();
                    }
                }
            }
            drop(all_closed);
            drop(permit);
        });
    }
    drop(listener);
    // The console's live streams never end by themselves: end them, or they would hold their
    // connections (and this shutdown) open.
    console::live::close_streams();
    drop(stop);
    drop(all_closed);
    closed.closed().await;
    Ok(())
}

/// Closes a connection on which no byte has moved either way for `timeout`: a client that stalls
/// mid-body, or stops reading its answer, gives up its connection slot.
struct IdleTimeout<T> {
    inner: T,
    timeout: Duration,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl<T> IdleTimeout<T> {
    fn new(inner: T, timeout: Duration) -> Self {
        Self {
            inner,
            timeout,
            deadline: Box::pin(tokio::time::sleep(timeout)),
        }
    }

    fn moved(&mut self) {
        let next = tokio::time::Instant::now() + self.timeout;
        self.deadline.as_mut().reset(next);
    }

    /// Called when the inner stream is not ready: an error once the deadline has passed.
    fn check(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Error> {
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "connection idle",
            )),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for IdleTimeout<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(result) => {
                self.moved();
                Poll::Ready(result)
            }
            Poll::Pending => self.check(cx).map(Err),
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for IdleTimeout<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, buf) {
            Poll::Ready(result) => {
                self.moved();
                Poll::Ready(result)
            }
            Poll::Pending => self.check(cx).map(Err),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match Pin::new(&mut self.inner).poll_flush(cx) {
            Poll::Pending => self.check(cx).map(Err),
            ready => ready,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    #[tokio::test]
    async fn a_panicking_handler_answers_500() {
        async fn boom() -> &'static str {
            panic!("owner +447700900123 said something")
        }
        let app = Router::new()
            .route("/boom", get(boom))
            .route("/fine", get(|| async { "ok" }))
            .layer(catch_panics());
        let request = |uri: &str| {
            axum::http::Request::builder()
                .uri(uri)
                .body(axum::body::Body::empty())
                .unwrap()
        };
        let response = app.clone().oneshot(request("/boom")).await.unwrap();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::body::to_bytes(response.into_body(), 1024)
            .await
            .unwrap();
        assert_eq!(&body[..], b"internal error\n");
        let response = app.oneshot(request("/fine")).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
}
