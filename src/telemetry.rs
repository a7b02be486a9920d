//! Metrics for ops: every named log event counted, request latency per route, outbound results,
//! and the owners in each state, the pool by status, and the purchases the pool keeper could not
//! confirm yet, read from the database at most once per [`GAUGE_MAX_AGE`] (see [`GaugeCache`]).
//!
//! Counting rides on the logs: a tracing layer counts each event carrying an `event` field, so a
//! business event is named once and both logged and counted.

use std::future::Future;
use std::sync::{Arc, OnceLock};
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

/// The database gauges in Prometheus text format (read at most every [`GAUGE_MAX_AGE`]).
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

/// How stale the database gauges may be. Counting owners and numbers is a full-table GROUP BY;
/// scraped every second by several Prometheus servers, on every replica, it would load the database
/// for nothing, so scrapes within this age share one reading.
pub const GAUGE_MAX_AGE: chrono::Duration = chrono::Duration::seconds(5);

/// The rendered database gauges, read again only when older than their maximum age.
///
/// Concurrent scrapes of a stale value wait for one reading instead of each starting their own.
/// Age is measured on the injected clock, so tests count readings without sleeping.
pub struct GaugeCache {
    clock: Arc<dyn crate::clock::Clock>,
    max_age: chrono::Duration,
    cached: tokio::sync::Mutex<Option<(chrono::DateTime<chrono::Utc>, String)>>,
}

impl GaugeCache {
    pub fn new(clock: Arc<dyn crate::clock::Clock>, max_age: chrono::Duration) -> Self {
        Self {
            clock,
            max_age,
            cached: tokio::sync::Mutex::new(None),
        }
    }

    /// The gauges, from `read` when the cached ones are too old (or the clock went back). When a
    /// reading fails, the last good one is served and the next try waits a full `max_age`, so a
    /// struggling database is not hammered by scrapes.
    pub async fn render<F, Fut, E>(&self, read: F) -> String
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<String, E>>,
        E: std::fmt::Display,
    {
        let mut cached = self.cached.lock().await;
        let now = self.clock.now();
        if let Some((at, text)) = cached.as_ref()
            && *at <= now
            && now - *at < self.max_age
        {
            return text.clone();
        }
        let text = match read().await {
            Ok(text) => text,
            Err(e) => {
                tracing::warn!(event = "METRICS_GAUGES_FAILED", error = %e);
                cached
                    .as_ref()
                    .map(|(_, text)| text.clone())
                    .unwrap_or_default()
            }
        };
        *cached = Some((now, text.clone()));
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use std::sync::atomic::{AtomicUsize, Ordering};

    async fn scrape(cache: &GaugeCache, reads: &AtomicUsize) -> String {
        cache
            .render(|| async {
                let n = reads.fetch_add(1, Ordering::SeqCst) + 1;
                Ok::<_, std::convert::Infallible>(format!("reading {n}\n"))
            })
            .await
    }

    #[tokio::test]
    async fn many_scrapes_read_the_database_once_per_interval() {
        let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
        let cache = Arc::new(GaugeCache::new(clock.clone(), GAUGE_MAX_AGE));
        let reads = Arc::new(AtomicUsize::new(0));
        let mut scrapes = tokio::task::JoinSet::new();
        for _ in 0..100 {
            let (cache, reads) = (cache.clone(), reads.clone());
            scrapes.spawn(async move { scrape(&cache, &reads).await });
        }
        for text in scrapes.join_all().await {
            assert_eq!(text, "reading 1\n");
        }
        assert_eq!(reads.load(Ordering::SeqCst), 1);

        clock.advance(GAUGE_MAX_AGE - chrono::Duration::milliseconds(1));
        scrape(&cache, &reads).await;
        assert_eq!(reads.load(Ordering::SeqCst), 1, "still fresh");

        clock.advance(chrono::Duration::milliseconds(1));
        for _ in 0..50 {
            assert_eq!(scrape(&cache, &reads).await, "reading 2\n");
        }
        assert_eq!(reads.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_failed_reading_serves_the_last_good_one_and_waits_an_interval() {
        let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
        let cache = GaugeCache::new(clock.clone(), GAUGE_MAX_AGE);
        let reads = AtomicUsize::new(0);
        scrape(&cache, &reads).await;
        clock.advance(GAUGE_MAX_AGE);
        let failed = cache
            .render(|| async { Err::<String, _>("database down") })
            .await;
        assert_eq!(failed, "reading 1\n");
        assert_eq!(scrape(&cache, &reads).await, "reading 1\n");
        assert_eq!(reads.load(Ordering::SeqCst), 1);
    }
}
