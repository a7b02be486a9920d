//! `GET /admin/owners/{id}`: one owner. The conversation as a phone shows it (their texts on the
//! left, ours on the right with delivery status), state and gate, answers, history, calls and
//! payments; buttons to reset them, release their number and resend a failed text, each behind a
//! confirmation.
//!
//! Like the JSON API's owner record, this page is one owner's own record for an operator working
//! on them: their phone is shown in full. Provider payloads are still masked.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use chrono::{DateTime, Utc};
use maud::{Markup, html};
use serde::Deserialize;

use super::session::CsrfOnly;
use super::{ConsoleError, Nav, Page, Result, Session, confirm, layout, path_segment, when};
use crate::domain::{OwnerId, PhoneNumber};
use crate::engine::EngineError;
use crate::http::AppState;
use crate::http::admin::mask_pii;
use crate::replay::message_text;
use crate::store::Store;
use crate::store::admin::{OutboundRecord, OwnerRecord};
use crate::store::console::Resend;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    /// From the owner.
    In,
    /// From us.
    Out,
}

/// One message of the conversation.
struct Bubble<'a> {
    side: Side,
    at: DateTime<Utc>,
    text: String,
    /// Delivery, for texts we sent first; `reply` for our answers to theirs.
    status: &'a str,
    /// A failed text we may resend.
    resend: Option<i64>,
}

fn bubbles(record: &OwnerRecord) -> Vec<Bubble<'_>> {
    let mut all = Vec::new();
    for text in &record.inbound {
        all.push(Bubble {
            side: Side::In,
            at: text.received_at,
            text: text.body.clone(),
            status: "received",
            resend: None,
        });
        if let Some(reply) = text.response.as_deref().and_then(message_text) {
            all.push(Bubble {
                side: Side::Out,
                at: text.received_at,
                text: reply,
                status: "reply",
                resend: None,
            });
        }
    }
    for message in &record.outbound {
        let text = if message.kind == "verify_call" {
            "(forwarding test call)".to_owned()
        } else {
            message.body.clone()
        };
        all.push(Bubble {
            side: Side::Out,
            at: message.created_at,
            text,
            status: &message.status,
            resend: (message.kind == "sms" && message.status == "failed").then_some(message.id),
        });
    }
    // Stable: a text and our reply to it keep their order.
    all.sort_by_key(|b| b.at);
    all
}

fn chat(record: &OwnerRecord) -> Markup {
    let id = path_segment(record.owner.id.as_str());
    html! {
        ol.chat aria-label="Conversation" {
            @for b in bubbles(record) {
                @let class = if b.side == Side::In { "bubble in" } else { "bubble out" };
                li class=(class) {
                    p.text { (b.text) }
                    p.meta {
                        (when(b.at))
                        @if b.side == Side::Out { " · " span.status.bad[b.status == "failed" || b.status == "undelivered"] { (b.status) } }
                        @if let Some(outbound) = b.resend {
                            " · " a href={ "/admin/owners/" (id) "/resend/" (outbound) } { "Resend…" }
                        }
                    }
                }
            }
        }
    }
}

fn optional(value: Option<&str>) -> Markup {
    html! {
        @match value {
            Some(v) => (v),
            None => span.muted { "–" },
        }
    }
}

fn pretty_masked(payload: &serde_json::Value) -> String {
    let mut payload = payload.clone();
    mask_pii(&mut payload);
    serde_json::to_string_pretty(&payload).unwrap_or_default()
}

#[derive(Debug, Deserialize)]
pub struct Done {
    done: Option<String>,
}

fn owner_id(raw: &str) -> Result<OwnerId> {
    OwnerId::parse(raw)
        .ok_or_else(|| ConsoleError::BadRequest(format!("{raw:?} is not an owner id (c_...)")))
}

async fn record<S: Store>(app: &AppState<S>, id: &OwnerId) -> Result<OwnerRecord> {
    app.engine
        .store()
        .owner_record(id)
        .await?
        .ok_or_else(|| ConsoleError::NotFound(format!("No owner with id {id}.")))
}

pub async fn page<S: Store>(
    State(app): State<AppState<S>>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
    done: std::result::Result<Query<Done>, QueryRejection>,
) -> Result<Page> {
    let id = owner_id(&id)?;
    let r = record(&app, &id).await?;
    let missed = app.engine.missed_calls(&id, 50).await?;
    let usage = app.engine.usage(&id).await?;
    let c = &r.owner;
    let done = done.ok().and_then(|Query(d)| d.done);
    let title = c
        .business_name
        .clone()
        .unwrap_or_else(|| "Owner".to_owned());
    let segment = path_segment(c.id.as_str());
    let costs = app.engine.owner_costs(&c.id).await?;
    let body = html! {
        @match done.as_deref() {
            Some("reset") => p.notice.good role="status" { "Reset: back to the first question, answers cleared." },
            Some("resent") => p.notice.good role="status" { "The text is queued again." },
            Some("released") => p.notice.good role="status" {
                "Number released. "
                @match &c.twilio_number {
                    Some(number) => { "Their new number is " span.phone { (number.as_str()) } "; forwarding instructions for it are queued." }
                    None => { "No number is free: they are on the waitlist, and told so." }
                }
            },
            _ => {},
        }
        h1 { (title) }
        p.lead {
            span.phone { (c.owner_phone.as_str()) } " · "
            span.state { (c.state.as_str()) }
            @if let Some(gate) = c.gate { " · gate " span.gate { (gate.as_str()) } }
            @if c.opted_out { " · " span.bad { "opted out" } }
        }
        div.columns {
            section.card.phone-screen {
                h2 { "Conversation" }
                (chat(&r))
            }
            div {
                section.card #answers {
                    h2 { "Answers" }
                    dl {
                        dt { "Business" } dd { (optional(c.business_type.as_deref())) }
                        dt { "Location" } dd { (optional(c.location.as_deref())) }
                        dt { "Business name" } dd { (optional(c.business_name.as_deref())) }
                        dt { "Owner name" } dd { (optional(c.owner_name.as_deref())) }
                        dt { "Notify by" } dd { (optional(c.notify.as_ref().map(|n| n.to_stored()).as_deref())) }
                        dt { "Phone type" } dd { (optional(c.phone_type.map(|p| p.as_str()))) }
                        dt { "Paid" } dd { @if c.payment_active { "yes" @if let Some(at) = c.paid_at { ", " (when(at)) } } @else { "no" } }
                        dt { "Number" } dd { (optional(c.twilio_number.as_ref().map(PhoneNumber::as_str))) }
                        dt { "Started" } dd { (when(c.created_at)) }
                    }
                    div.actions {
                        a.button.danger href={ "/admin/owners/" (segment) "/reset" } { "Reset…" }
                        @if c.twilio_number.is_some() {
                            a.button.danger href={ "/admin/owners/" (segment) "/release-number" } { "Release number…" }
                        }
                    }
                }
                section.card #history {
                    h2 { "History" }
                    ol.timeline {
                        @for h in &r.history {
                            li { time { (when(h.at)) } " " (h.from_state) " → " strong { (h.to_state) } " " span.muted { "(" (h.cause) ")" } }
                        }
                    }
                }
                section.card #calls {
                    h2 { "Calls" }
                    @if let Some(u) = &usage {
                        p.muted { "Missed calls this billing month (since " (when(u.period_start)) "): " (u.calls_this_month) " of " (u.included) " included." }
                    }
                    @if !missed.is_empty() {
                        h3 { "Missed calls" }
                        ul #missed-calls {
                            @for m in &missed {
                                li {
                                    (when(m.at)) " · from " (crate::domain::mask_phone(&m.caller))
                                    @if let Some(d) = m.duration_secs { " · " (d) " s" }
                                    @if let Some(url) = &m.recording_url {
                                        " · " a href=(url) rel="noreferrer" { "voicemail" }
                                        @if let Some(s) = m.recording_secs { " (" (s) " s)" }
                                    }
                                    " · alert: " (m.alert.as_deref().unwrap_or("pending"))
                                }
                            }
                        }
                    }
                    @if r.calls.is_empty() { p.muted { "No calls." } }
                    ul {
                        @for call in &r.calls {
                            li {
                                (when(call.created_at)) " · " (call.direction) " · " (call.status)
                                @if let Some(d) = call.duration_secs { " · " (d) " s" }
                                @if call.is_test_call { " · " strong { "forwarding test" } }
                            }
                        }
                    }
                }
                section.card #payments {
                    h2 { "Payments" }
                    @if r.payment_events.is_empty() { p.muted { "No payment events." } }
                    @for e in &r.payment_events {
                        details {
                            summary { (when(e.received_at)) " · " (e.event_type) " · " span.bad[e.status == "failed"] { (e.status) } }
                            pre { (pretty_masked(&e.payload.0)) }
                        }
                    }
                }
                section.card #costs {
                    h2 { "Costs" }
                    table {
                        tbody {
                            tr { th scope="row" { "This month (" (costs.month) ")" } td.num { (costs.this_month.to_string()) " " (costs.currency) } }
                            tr { th scope="row" { "All time" } td.num { (costs.all_time.to_string()) " " (costs.currency) } }
                        }
                    }
                }
            }
        }
    };
    Ok(layout(&title, Nav::None, &session, body))
}

pub async fn confirm_reset<S: Store>(
    State(app): State<AppState<S>>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
) -> Result<Page> {
    let id = owner_id(&id)?;
    let r = record(&app, &id).await?;
    let name = r.owner.business_name.as_deref().unwrap_or("this owner");
    let back = format!("/admin/owners/{}", path_segment(id.as_str()));
    let action = format!("{back}/reset");
    Ok(confirm(
        &session,
        "Reset this owner?",
        html! {
            p { "Reset " strong { (name) } " (now " (r.owner.state.as_str()) ") to the first question, clearing every answer. Payment, number and opt-out stay. Nothing is texted: their next text answers the first question." }
        },
        &action,
        &[],
        "Reset",
        &back,
    ))
}

pub async fn reset<S: Store>(
    State(app): State<AppState<S>>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
    form: std::result::Result<Form<CsrfOnly>, axum::extract::rejection::FormRejection>,
) -> Result<Response> {
    let Form(form) = form.map_err(|e| ConsoleError::BadRequest(e.body_text()))?;
    session.check_csrf(&form.csrf)?;
    let id = owner_id(&id)?;
    match app.engine.admin_reset(&id).await {
        Ok(_) => {}
        Err(EngineError::UnknownOwner(id)) => {
            return Err(ConsoleError::NotFound(format!("No owner with id {id}.")));
        }
        Err(e) => return Err(e.into()),
    }
    tracing::info!(event = "CONSOLE_OWNER_RESET", owner_id = %id);
    let to = format!("/admin/owners/{}?done=reset", path_segment(id.as_str()));
    Ok(Redirect::to(&to).into_response())
}

pub async fn confirm_release_number<S: Store>(
    State(app): State<AppState<S>>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
) -> Result<Page> {
    let id = owner_id(&id)?;
    let r = record(&app, &id).await?;
    let Some(number) = r.owner.twilio_number.as_ref() else {
        return Err(ConsoleError::Conflict(
            "This owner holds no number: nothing to release.".into(),
        ));
    };
    let name = r.owner.business_name.as_deref().unwrap_or("this owner");
    let back = format!("/admin/owners/{}", path_segment(id.as_str()));
    let action = format!("{back}/release-number");
    Ok(confirm(
        &session,
        "Release this owner's number?",
        html! {
            p { "Take " span.phone { (number.as_str()) } " from " strong { (name) } " (now " (r.owner.state.as_str()) "). It goes to quarantine and never back to them: calls forwarded to it stop reaching them." }
            @if r.owner.payment_active {
                p { "They stay paid and get a new number at once (or wait for one, first come first served), with forwarding instructions for it. They are texted that their number was retired, after their quiet hours." }
            } @else {
                p { "They have not paid, so no new number is given: they are asked to pay again." }
            }
        },
        &action,
        &[],
        "Release number",
        &back,
    ))
}

pub async fn release_number<S: Store>(
    State(app): State<AppState<S>>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
    form: std::result::Result<Form<CsrfOnly>, axum::extract::rejection::FormRejection>,
) -> Result<Response> {
    let Form(form) = form.map_err(|e| ConsoleError::BadRequest(e.body_text()))?;
    session.check_csrf(&form.csrf)?;
    let id = owner_id(&id)?;
    match app.engine.admin_release_number(&id).await {
        Ok(released) => {
            tracing::info!(
                event = "CONSOLE_NUMBER_RELEASED",
                owner_id = %id,
                number = %released.number.masked(),
            );
        }
        Err(EngineError::UnknownOwner(id)) => {
            return Err(ConsoleError::NotFound(format!("No owner with id {id}.")));
        }
        Err(EngineError::NoNumber(_)) => {
            return Err(ConsoleError::Conflict(
                "This owner holds no number: nothing to release.".into(),
            ));
        }
        Err(e) => return Err(e.into()),
    }
    let to = format!("/admin/owners/{}?done=released", path_segment(id.as_str()));
    Ok(Redirect::to(&to).into_response())
}

fn failed_text(r: &OwnerRecord, outbound_id: i64) -> Result<&OutboundRecord> {
    r.outbound
        .iter()
        .find(|m| m.id == outbound_id && m.kind == "sms" && m.status == "failed")
        .ok_or_else(|| {
            ConsoleError::NotFound(format!(
                "This owner has no failed text {outbound_id} to resend."
            ))
        })
}

pub async fn confirm_resend<S: Store>(
    State(app): State<AppState<S>>,
    Extension(session): Extension<Session>,
    Path((id, outbound_id)): Path<(String, i64)>,
) -> Result<Page> {
    let id = owner_id(&id)?;
    let r = record(&app, &id).await?;
    let message = failed_text(&r, outbound_id)?;
    let back = format!("/admin/owners/{}", path_segment(id.as_str()));
    let action = format!("{back}/resend/{outbound_id}");
    Ok(confirm(
        &session,
        "Resend this text?",
        html! {
            p { "This text failed" @if let Some(e) = message.error_code.as_deref().or(message.last_error.as_deref()) { " (" (e) ")" } ". Send it again, as a new message? Outside the owner's quiet hours it goes at once; inside them, when they end." }
            blockquote.bubble.out { (message.body) }
        },
        &action,
        &[],
        "Resend",
        &back,
    ))
}

pub async fn resend<S: Store>(
    State(app): State<AppState<S>>,
    Extension(session): Extension<Session>,
    Path((id, outbound_id)): Path<(String, i64)>,
    form: std::result::Result<Form<CsrfOnly>, axum::extract::rejection::FormRejection>,
) -> Result<Response> {
    let Form(form) = form.map_err(|e| ConsoleError::BadRequest(e.body_text()))?;
    session.check_csrf(&form.csrf)?;
    let id = owner_id(&id)?;
    let r = record(&app, &id).await?;
    failed_text(&r, outbound_id)?;
    let now = app.engine.now();
    // Not an answer to the owner: it waits for the end of their quiet hours.
    let zone = app.engine.reminders.zones.zone_of(&r.owner.owner_phone);
    let send_at = app.engine.reminders.config.quiet.release(now, zone);
    match app
        .engine
        .store()
        .resend_failed_text(outbound_id, send_at, now)
        .await?
    {
        Resend::Queued(new_id) => {
            tracing::info!(event = "CONSOLE_TEXT_RESENT", outbound_id, new_id);
        }
        Resend::AlreadyResent => {
            return Err(ConsoleError::Conflict(
                "This text has been resent already.".into(),
            ));
        }
        Resend::NotFailed => {
            return Err(ConsoleError::Conflict(
                "This text is no longer a failed text: not resent.".into(),
            ));
        }
    }
    let to = format!("/admin/owners/{}?done=resent", path_segment(id.as_str()));
    Ok(Redirect::to(&to).into_response())
}
