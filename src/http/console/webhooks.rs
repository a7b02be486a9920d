//! `GET /admin/webhooks`: what Stripe and Twilio sent, with the outcome. Stripe's events are read
//! from `webhook_events`; Twilio's callbacks from where they are stored (inbound texts, calls,
//! delivery statuses). Filters by provider, status, date and id; payloads pretty-printed with
//! phones and emails masked; a failed Stripe event can be reprocessed, behind a confirmation.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::Value;

use super::session::CsrfOnly;
use super::{ConsoleError, Nav, Page, Result, Session, confirm, layout, path_segment, when};
use crate::engine::payments::{self, PaymentError, Receipt};
use crate::http::AppState;
use crate::http::admin::mask_pii;
use crate::store::Store;
use crate::store::console::{ProviderEvent, ProviderEventFilter};

/// Events listed at once.
pub const LIMIT: i64 = 100;

const PROVIDERS: [&str; 2] = ["stripe", "twilio"];

/// The statuses the filter offers: an event's outcome (Stripe, inbound texts) or its delivery or
/// call status (Twilio).
const STATUSES: [&str; 7] = [
    "received",
    "processed",
    "ignored",
    "failed",
    "delivered",
    "undelivered",
    "completed",
];

/// A filter value from the form's list, or none: anything else is a 400 naming the field (a
/// mistyped filter must not look like "no events").
fn one_of<'a>(name: &str, raw: &'a str, allowed: &[&str]) -> Result<Option<&'a str>> {
    if raw.is_empty() {
        return Ok(None);
    }
    if allowed.contains(&raw) {
        return Ok(Some(raw));
    }
    Err(ConsoleError::BadRequest(format!(
        "{name}: {raw:?} is not one of {}",
        allowed.join(", ")
    )))
}

#[derive(Debug, Default, Deserialize)]
pub struct Filters {
    #[serde(default)]
    provider: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    id: String,
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
    #[serde(default)]
    done: String,
}

fn day(name: &str, raw: &str, end_of_day: bool) -> Result<Option<DateTime<Utc>>> {
    if raw.is_empty() {
        return Ok(None);
    }
    let date = NaiveDate::parse_from_str(raw, "%Y-%m-%d").map_err(|_| {
        ConsoleError::BadRequest(format!("{name}: {raw:?} is not a date like 2026-01-05"))
    })?;
    let time = if end_of_day {
        NaiveTime::from_hms_milli_opt(23, 59, 59, 999).unwrap_or(NaiveTime::MIN)
    } else {
        NaiveTime::MIN
    };
    Ok(Some(date.and_time(time).and_utc()))
}

/// The payload shown: Stripe's as stored, Twilio's from its columns; masked either way.
fn payload(event: &ProviderEvent) -> String {
    let mut value = match event.payload.as_deref() {
        Some(text) => serde_json::from_str(text).unwrap_or(Value::String(text.to_owned())),
        None => {
            let mut fields = serde_json::Map::new();
            for (key, v) in [
                ("From", &event.from_addr),
                ("To", &event.to_addr),
                ("Body", &event.body),
            ] {
                if let Some(v) = v {
                    fields.insert(key.to_owned(), Value::String(v.clone()));
                }
            }
            Value::Object(fields)
        }
    };
    mask_pii(&mut value);
    serde_json::to_string_pretty(&value).unwrap_or_default()
}

fn select(name: &str, label: &str, options: &[&str], chosen: &str) -> Markup {
    html! {
        label {
            (label)
            select name=(name) {
                option value="" selected[chosen.is_empty()] { "any" }
                @for o in options {
                    option value=(o) selected[*o == chosen] { (o) }
                }
            }
        }
    }
}

pub async fn page<S: Store>(
    State(app): State<AppState<S>>,
    Extension(session): Extension<Session>,
    params: std::result::Result<Query<Filters>, QueryRejection>,
) -> Result<Page> {
    let Query(f) = params.map_err(|e| ConsoleError::BadRequest(e.body_text()))?;
    let (provider, status, id) = (f.provider.trim(), f.status.trim(), f.id.trim());
    let filter = ProviderEventFilter {
        provider: one_of("provider", provider, &PROVIDERS)?,
        status: one_of("status", status, &STATUSES)?,
        event_id: (!id.is_empty()).then_some(id),
        from: day("from", f.from.trim(), false)?,
        to: day("to", f.to.trim(), true)?,
    };
    let events = app.engine.store().provider_events(&filter, LIMIT).await?;
    let body = html! {
        @if f.done == "reprocessed" {
            p.notice.good role="status" { "Reprocessed." }
        }
        h1 { "Webhooks" }
        form.filters method="get" action="/admin/webhooks" {
            (select("provider", "Provider", &PROVIDERS, provider))
            (select("status", "Status", &STATUSES, status))
            label { "Id" input type="search" name="id" value=(id) placeholder="evt_… or SM…"; }
            label { "From" input type="date" name="from" value=(f.from.trim()); }
            label { "To" input type="date" name="to" value=(f.to.trim()); }
            button type="submit" { "Filter" }
        }
        p.muted { (events.len()) " shown, newest first" @if events.len() as i64 == LIMIT { " (the newest " (LIMIT) ": narrow the filters to see older ones)" } "." }
        ol.events {
            @for e in &events {
                li.event {
                    details {
                        summary {
                            span.provider { (e.provider) } " "
                            span.event-type { (e.event_type) } " "
                            span.status.bad[e.status == "failed" || e.status == "undelivered"] { (e.status) } " "
                            time { (when(e.received_at)) } " "
                            code.id { (e.event_id) }
                        }
                        @if let Some(error) = &e.error { p.bad { (error) } }
                        pre { (payload(e)) }
                    }
                    @if e.provider == "stripe" && e.status == "failed" {
                        a.button href={ "/admin/webhooks/stripe/" (path_segment(&e.event_id)) "/reprocess" } { "Reprocess…" }
                    }
                }
            }
        }
    };
    Ok(layout("Webhooks", Nav::Webhooks, &session, body))
}

async fn failed_stripe_event<S: Store>(
    app: &AppState<S>,
    provider: &str,
    event_id: &str,
) -> Result<crate::store::admin::WebhookEventRecord> {
    if provider != "stripe" {
        return Err(ConsoleError::Conflict(format!(
            "{provider} events cannot be reprocessed: only Stripe's can."
        )));
    }
    let event = app
        .engine
        .store()
        .webhook_event(provider, event_id)
        .await?
        .ok_or_else(|| ConsoleError::NotFound(format!("No {provider} event {event_id}.")))?;
    if event.status != "failed" {
        return Err(ConsoleError::Conflict(format!(
            "Event {event_id} is {}: only a failed event can be reprocessed.",
            event.status
        )));
    }
    Ok(event)
}

pub async fn confirm_reprocess<S: Store>(
    State(app): State<AppState<S>>,
    Extension(session): Extension<Session>,
    Path((provider, event_id)): Path<(String, String)>,
) -> Result<Page> {
    let event = failed_stripe_event(&app, &provider, &event_id).await?;
    let action = format!(
        "/admin/webhooks/stripe/{}/reprocess",
        path_segment(&event_id)
    );
    let back = format!(
        "/admin/webhooks?provider=stripe&id={}",
        path_segment(&event_id)
    );
    Ok(confirm(
        &session,
        "Reprocess this event?",
        html! {
            p { "Run Stripe event " code { (event_id) } " (" (event.event_type) ") through payment processing again, as if it had just arrived." }
            @if let Some(error) = &event.error { p { "It failed with: " span.bad { (error) } } }
        },
        &action,
        &[],
        "Reprocess",
        &back,
    ))
}

pub async fn reprocess<S: Store>(
    State(app): State<AppState<S>>,
    Extension(session): Extension<Session>,
    Path((provider, event_id)): Path<(String, String)>,
    form: std::result::Result<Form<CsrfOnly>, axum::extract::rejection::FormRejection>,
) -> Result<Response> {
    let Form(form) = form.map_err(|e| ConsoleError::BadRequest(e.body_text()))?;
    session.check_csrf(&form.csrf)?;
    let event = failed_stripe_event(&app, &provider, &event_id).await?;
    if event.payload.0.get("id").and_then(Value::as_str) != Some(event_id.as_str()) {
        return Err(ConsoleError::Conflict(format!(
            "The stored payload of event {event_id} carries another id: not reprocessed."
        )));
    }
    let receipt = payments::reprocess(&app.engine, &event.payload.0)
        .await
        .map_err(|e| match e {
            PaymentError::BadSignature(e) => ConsoleError::Conflict(e.to_string()),
            PaymentError::BadEvent(e) => ConsoleError::Conflict(format!(
                "The stored payload of event {event_id} is not an event: {e}"
            )),
            PaymentError::Failed(e) => ConsoleError::Engine(e),
        })?;
    if receipt == Receipt::Duplicate {
        return Err(ConsoleError::Conflict(format!(
            "Event {event_id} was processed meanwhile: not reprocessed."
        )));
    }
    tracing::info!(event = "CONSOLE_EVENT_REPROCESSED", event_id = %event_id, outcome = receipt.name());
    let to = format!(
        "/admin/webhooks?provider=stripe&id={}&done=reprocessed",
        path_segment(&event_id)
    );
    Ok(Redirect::to(&to).into_response())
}
