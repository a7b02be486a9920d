//! Metrics for ops: every named log event counted, request latency per route, outbound results,
//! and at scrape time the owners in each state, the pool by status, and the purchases the pool
//! keeper could not confirm yet.
//!
//! Counting rides on the logs: a tracing layer counts each event carrying an `event` field, so a
//! business event is named once and both logged and counted.

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::Context;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide Prometheus recorder once; later calls return the same handle.
pub fn install() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Suffix("duration_seconds".to_owned()),
                &[
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ],
            )
            .map(PrometheusBuilder::build_recorder)
            .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
        let handle = recorder.handle();
        // Another recorder already installed (a test harness): ours still renders what it has.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// Counts every tracing event that has an `event` field, as `onboard_events_total{event}`.
pub struct EventCounter;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for EventCounter {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let mut name = EventName(None);
        event.record(&mut name);
        if let Some(name) = name.0 {
            metrics::counter!("onboard_events_total", "event" => name).increment(1);
        }
    }
}

struct EventName(Option<String>);

impl Visit for EventName {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "event" {
            self.0 = Some(value.to_owned());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "event" && self.0.is_none() {
            self.0 = Some(format!("{value:?}").trim_matches('"').to_owned());
        }
    }
}

/// Records each request's latency by route template (never the raw URL) and status.
pub async fn track_latency(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let started = Instant::now();
    let response = next.run(request).await;
    metrics::histogram!(
        "onboard_http_request_duration_seconds",
        "route" => route,
        "status" => response.status().as_u16().to_string(),
    )
    .record(started.elapsed().as_secs_f64());
    response
}

/// Gauges read from the database at scrape time, in Prometheus text format.
pub fn render_gauges(
    owners: &[(String, i64)],
    pool: &crate::store::PoolStats,
    uncertain_purchases: i64,
) -> String {
    let mut out = String::from(
        "# HELP onboard_owners Owners in each conversation state.\n# TYPE onboard_owners gauge\n",
    );
    for state in crate::conversation::StateName::ALL {
        let n = owners
            .iter()
            .find(|(s, _)| s == state.as_str())
            .map_or(0, |(_, n)| *n);
        out.push_str(&format!("onboard_owners{{state=\"{state}\"}} {n}\n"));
    }
    out.push_str(
        "# HELP onboard_pool_numbers Pool numbers by status.\n# TYPE onboard_pool_numbers gauge\n",
    );
    for (status, n) in [
        ("AVAILABLE", pool.available),
        ("RESERVED", pool.reserved),
        ("ASSIGNED", pool.assigned),
        ("QUARANTINED", pool.quarantined),
    ] {
        out.push_str(&format!(
            "onboard_pool_numbers{{status=\"{status}\"}} {n}\n"
        ));
    }
    out.push_str(&format!(
        "# HELP onboard_pool_uncertain_purchases Numbers the pool keeper may have bought, not yet \
         found on Twilio or ruled out.\n# TYPE onboard_pool_uncertain_purchases gauge\n\
         onboard_pool_uncertain_purchases {uncertain_purchases}\n"
    ));
    out
}
