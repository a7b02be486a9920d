//! `GET /admin/pool`: numbers by status and country, owners waiting for one (in the order they
//! will be served), purchases not confirmed yet, adding numbers (a pasted list, checked as
//! `onboard pool add` checks a file) and releasing one, each behind a confirmation.

use std::collections::BTreeMap;

use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use maud::html;
use serde::Deserialize;

use super::{ConsoleError, Nav, Page, Result, Session, confirm, layout, path_segment, when};
use crate::domain::PhoneNumber;
use crate::engine::EngineError;
use crate::http::AppState;
use crate::store::Store;

/// Waiting owners and recent numbers listed at once.
pub const LIMIT: i64 = 50;
/// The most numbers one paste may add.
pub const MAX_PASTE: usize = 1000;

#[derive(Debug, Default, Deserialize)]
pub struct Done {
    #[serde(default)]
    done: String,
    #[serde(default)]
    added: Option<u64>,
    #[serde(default)]
    already: Option<u64>,
    #[serde(default)]
    served: Option<u64>,
}

pub async fn page<S: Store>(
    State(app): State<AppState<S>>,
    Extension(session): Extension<Session>,
    done: std::result::Result<Query<Done>, QueryRejection>,
) -> Result<Page> {
    let done = done.map(|Query(d)| d).unwrap_or_default();
    let store = app.engine.store();
    let mut by_country: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
    for (country, status, n) in store.pool_by_country().await? {
        by_country.entry(country).or_default().insert(status, n);
    }
    let waiting = store.waitlist(LIMIT).await?;
    let uncertain = store.unconfirmed_purchases().await?;
    let numbers = store.pool_numbers(LIMIT).await?;
    let statuses = ["AVAILABLE", "RESERVED", "ASSIGNED", "QUARANTINED"];
    let body = html! {
        @match done.done.as_str() {
            "added" => p.notice.good role="status" {
                "Added " (done.added.unwrap_or(0)) "; " (done.already.unwrap_or(0))
                " were in the pool already; " (done.served.unwrap_or(0)) " waiting owners served."
            },
            "released" => p.notice.good role="status" { "Released: the number is in quarantine." },
            _ => {},
        }
        h1 { "Pool" }
        section.card #by-country {
            h2 { "Numbers by country" }
            @if by_country.is_empty() { p.bad { "The pool is empty." } } @else {
                table {
                    thead { tr { th { "Country" } @for s in statuses { th.num { (s) } } } }
                    tbody {
                        @for (country, counts) in &by_country {
                            tr {
                                th scope="row" { (country) }
                                @for s in statuses { td.num { (counts.get(s).copied().unwrap_or(0)) } }
                            }
                        }
                    }
                }
            }
        }
        div.grid {
            section.card #waiting {
                h2 { "Waiting for a number" }
                @if waiting.is_empty() { p.muted { "Nobody is waiting." } }
                ol {
                    @for owner in &waiting {
                        li {
                            a href={ "/admin/owners/" (path_segment(owner.id.as_str())) } {
                                span.phone { (owner.owner_phone.masked()) }
                            }
                            " · " (owner.owner_phone.country().code())
                            @if let Some(at) = owner.waitlisted_at { " · since " (when(at)) }
                        }
                    }
                }
            }
            section.card #uncertain {
                h2 { "Uncertain purchases" }
                @if uncertain.is_empty() { p.muted { "None: every purchase is confirmed or ruled out." } }
                ul {
                    @for u in &uncertain {
                        li.bad {
                            (u.e164) " · tried " (when(u.attempted_at)) " · checked " (u.checks) " times"
                            @if let Some(at) = u.last_checked_at { ", last " (when(at)) }
                        }
                    }
                }
            }
        }
        section.card #add {
            h2 { "Add numbers" }
            form method="get" action="/admin/pool/add" {
                label for="numbers" { "One E.164 number a line (# starts a comment)" }
                textarea #numbers name="numbers" rows="5" placeholder="+447700900901" {}
                button type="submit" { "Check and add…" }
            }
        }
        section.card #release {
            h2 { "Release a number" }
            form method="get" action="/admin/pool/release" {
                label for="number" { "Number" }
                input #number type="text" name="number" inputmode="tel" placeholder="+447700900901";
                button type="submit" { "Release…" }
            }
            h3 { "Numbers changed last" }
            table.compact {
                thead { tr { th { "Number" } th { "Status" } th { "Country" } th { "Owner" } th { "Since" } th {} } }
                tbody {
                    @for n in &numbers {
                        tr {
                            td { (n.e164) }
                            td { (n.status) }
                            td { (n.country) }
                            td {
                                @if let Some(id) = &n.owner_id {
                                    a href={ "/admin/owners/" (path_segment(id)) } { (id) }
                                }
                            }
                            td { (when(n.updated_at)) }
                            td {
                                @if n.owner_id.is_none() && n.status == "AVAILABLE" {
                                    a href={ "/admin/pool/release?number=" (path_segment(&n.e164)) } { "Release…" }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(layout("Pool", Nav::Pool, &session, body))
}

#[derive(Debug, Default, Deserialize)]
pub struct Numbers {
    #[serde(default)]
    numbers: String,
    #[serde(default)]
    csrf: String,
}

/// The pasted list, checked as the CLI checks a file: every bad line named, nothing used
/// unless all are good.
fn parse(raw: &str) -> Result<Vec<PhoneNumber>> {
    let numbers = crate::pool::parse_numbers(raw.lines()).map_err(|bad| {
        let lines: Vec<String> = bad.iter().map(|b| b.describe("line")).collect();
        ConsoleError::BadRequest(format!("{}; nothing was added.", lines.join("; ")))
    })?;
    if numbers.is_empty() {
        return Err(ConsoleError::BadRequest(
            "Paste at least one number.".into(),
        ));
    }
    if numbers.len() > MAX_PASTE {
        return Err(ConsoleError::BadRequest(format!(
            "{} numbers: at most {MAX_PASTE} at once.",
            numbers.len()
        )));
    }
    Ok(numbers)
}

pub async fn confirm_add<S: Store>(
    Extension(session): Extension<Session>,
    params: std::result::Result<Query<Numbers>, QueryRejection>,
) -> Result<Page> {
    let Query(params) = params.map_err(|e| ConsoleError::BadRequest(e.body_text()))?;
    let numbers = parse(&params.numbers)?;
    let list: Vec<&str> = numbers.iter().map(PhoneNumber::as_str).collect();
    let joined = list.join("\n");
    Ok(confirm(
        &session,
        "Add these numbers?",
        html! {
            p { "Add " (numbers.len()) " numbers to the pool as AVAILABLE (numbers already in it are left as they are). Owners waiting for a number are served at once." }
            pre { (joined) }
        },
        "/admin/pool/add",
        &[("numbers", &joined)],
        "Add",
        "/admin/pool",
    ))
}

pub async fn add<S: Store>(
    State(app): State<AppState<S>>,
    Extension(session): Extension<Session>,
    form: std::result::Result<Form<Numbers>, FormRejection>,
) -> Result<Response> {
    let Form(form) = form.map_err(|e| ConsoleError::BadRequest(e.body_text()))?;
    session.check_csrf(&form.csrf)?;
    let numbers = parse(&form.numbers)?;
    let (added, served) = app.engine.add_numbers(&numbers).await?;
    tracing::info!(event = "CONSOLE_POOL_ADDED", added, served = served.len());
    let to = format!(
        "/admin/pool?done=added&added={added}&already={}&served={}",
        numbers.len() as u64 - added,
        served.len()
    );
    Ok(Redirect::to(&to).into_response())
}

#[derive(Debug, Default, Deserialize)]
pub struct Release {
    #[serde(default)]
    number: String,
    #[serde(default)]
    csrf: String,
}

fn number(raw: &str) -> Result<PhoneNumber> {
    PhoneNumber::parse(raw.trim()).map_err(|e| {
        ConsoleError::BadRequest(format!(
            "number: {:?} is not an E.164 number ({e})",
            raw.trim()
        ))
    })
}

pub async fn confirm_release<S: Store>(
    Extension(session): Extension<Session>,
    params: std::result::Result<Query<Release>, QueryRejection>,
) -> Result<Page> {
    let Query(params) = params.map_err(|e| ConsoleError::BadRequest(e.body_text()))?;
    let number = number(&params.number)?;
    Ok(confirm(
        &session,
        "Release this number?",
        html! {
            p { "Send " strong { (number.as_str()) } " to quarantine: no owner gets it until the quarantine ends. A number an owner holds is refused." }
        },
        "/admin/pool/release",
        &[("number", number.as_str())],
        "Release",
        "/admin/pool",
    ))
}

pub async fn release<S: Store>(
    State(app): State<AppState<S>>,
    Extension(session): Extension<Session>,
    form: std::result::Result<Form<Release>, FormRejection>,
) -> Result<Response> {
    let Form(form) = form.map_err(|e| ConsoleError::BadRequest(e.body_text()))?;
    session.check_csrf(&form.csrf)?;
    let number = number(&form.number)?;
    match app.engine.release_number(&number).await {
        Ok(()) => {}
        Err(EngineError::NumberInUse(..)) => {
            return Err(ConsoleError::Conflict(format!(
                "{} is held by an owner: taking it from them is a payment decision, not a pool one.",
                number.as_str()
            )));
        }
        Err(EngineError::UnknownNumber(_)) => {
            return Err(ConsoleError::NotFound(format!(
                "{} is not in the pool.",
                number.as_str()
            )));
        }
        Err(e) => return Err(e.into()),
    }
    tracing::info!(event = "CONSOLE_NUMBER_RELEASED", number = %number.masked());
    Ok(Redirect::to("/admin/pool?done=released").into_response())
}
