//! `GET /admin/live`: business events as they happen. A browser asking for `text/event-stream`
//! gets server-sent events; anything else the page, with the latest events already in it.
//!
//! Events reach every replica through the database: triggers (migration 0016) write each text
//! in, state change, payment, allocation, call and failure to `live_events`, and each stream
//! polls that table by id every [`POLL`]. Every event carries its id, so a browser that
//! reconnects sends `Last-Event-ID` and misses nothing (events are kept for [`KEEP_HOURS`]).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::LazyLock;
use std::time::Duration;

use axum::Extension;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use serde::Deserialize;
use tokio::sync::watch;

use super::{Nav, Result, Session, layout, path_segment, when};
use crate::http::AppState;
use crate::store::Store;
use crate::store::console::LiveEvent;

/// How often a stream looks for new events: the most an event waits before it is shown.
pub const POLL: Duration = Duration::from_millis(500);
/// A comment line this often keeps proxies (and the server's idle timeout) from closing a quiet
/// stream.
pub const HEARTBEAT: Duration = Duration::from_secs(15);
/// A stream ends after this long and the browser reconnects from its last id: no connection is
/// held forever.
pub const STREAM_LIFETIME: Duration = Duration::from_secs(10 * 60);
/// Events read at once.
const BATCH: i64 = 200;
/// Events shown when the page opens.
pub const RECENT: i64 = 50;
/// How long events are kept for streams that reconnect.
pub const KEEP_HOURS: i64 = 24;

/// Bumped when the server shuts down, so open streams end and the connections can close.
static CLOSING: LazyLock<watch::Sender<u64>> = LazyLock::new(|| watch::channel(0).0);

/// Ends the streams open now (on shutdown: otherwise a stream would hold its connection open).
pub fn close_streams() {
    CLOSING.send_modify(|generation| *generation += 1);
}

#[derive(Debug, Deserialize)]
pub struct After {
    after: Option<i64>,
}

fn event_item(e: &LiveEvent) -> Markup {
    html! {
        li.live-event data-kind=(e.kind) {
            time { (when(e.at)) } " "
            span.kind { (e.kind) } " "
            span.detail { (e.detail) }
            @if let Some(id) = &e.owner_id {
                " " a href={ "/admin/owners/" (path_segment(id)) } { (id) }
            }
        }
    }
}

pub async fn page<S: Store>(
    State(app): State<AppState<S>>,
    Extension(session): Extension<Session>,
    headers: HeaderMap,
    after: std::result::Result<Query<After>, QueryRejection>,
) -> Result<Response> {
    let wants_stream = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"));
    if wants_stream {
        // A reconnecting browser says where it was; a new one says where its page ended.
        let last_id = headers
            .get("last-event-id")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<i64>().ok())
            .or(after.ok().and_then(|Query(a)| a.after))
            .unwrap_or(0)
            .max(0);
        return Ok(stream(app.engine.store().clone(), last_id));
    }
    let recent = app.engine.store().recent_live_events(RECENT).await?;
    let last = recent.last().map_or(0, |e| e.id);
    let body = html! {
        h1 { "Live" }
        p #live-status.muted role="status" { "Events as they happen (needs JavaScript); the latest are below." }
        ol #feed.feed data-after=(last) reversed {
            @for e in recent.iter().rev() { (event_item(e)) }
        }
    };
    Ok(layout("Live", Nav::Live, &session, body).into_response())
}

struct Cursor<S> {
    store: S,
    last_id: i64,
    ready: VecDeque<LiveEvent>,
    closing: watch::Receiver<u64>,
    until: tokio::time::Instant,
}

fn stream<S: Store>(store: S, last_id: i64) -> Response {
    let cursor = Cursor {
        store,
        last_id,
        ready: VecDeque::new(),
        closing: CLOSING.subscribe(),
        until: tokio::time::Instant::now() + STREAM_LIFETIME,
    };
    let events = futures_util::stream::unfold(cursor, |mut c| async move {
        loop {
            if let Some(e) = c.ready.pop_front() {
                let data = serde_json::to_string(&e).unwrap_or_default();
                let event = Event::default()
                    .id(e.id.to_string())
                    .event("live")
                    .data(data);
                return Some((Ok::<_, Infallible>(event), c));
            }
            match c.store.live_events_after(c.last_id, BATCH).await {
                Ok(batch) if !batch.is_empty() => {
                    c.last_id = batch.last().map_or(c.last_id, |e| e.id);
                    c.ready.extend(batch);
                    continue;
                }
                Ok(_) => {}
                Err(e) => {
                    // The browser reconnects from its last id; nothing is lost.
                    tracing::warn!(event = "CONSOLE_LIVE_READ_FAILED", error = %e);
                    return None;
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(POLL) => {}
                _ = tokio::time::sleep_until(c.until) => return None,
                _ = c.closing.changed() => return None,
            }
        }
    });
    let mut response = Sse::new(events)
        .keep_alive(KeepAlive::new().interval(HEARTBEAT))
        .into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // Proxies such as nginx would otherwise hold events back in a buffer.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// Deletes live events (and sign-in failures) older than [`KEEP_HOURS`], every `period`, until
/// `shutdown`.
pub async fn keep_pruned<S: Store>(
    engine: &crate::engine::Engine<S>,
    period: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    while !*shutdown.borrow() {
        let before = engine.now() - chrono::Duration::hours(KEEP_HOURS);
        match engine.store().prune_console(before).await {
            Ok(n) if n > 0 => tracing::debug!(event = "CONSOLE_PRUNED", rows = n),
            Ok(_) => {}
            Err(e) => tracing::error!(event = "CONSOLE_PRUNE_ERROR", error = %e),
        }
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = shutdown.changed() => {}
        }
    }
}
