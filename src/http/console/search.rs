//! `GET /admin/search?q=`: one box for phone digits, owner names and business names. Without
//! JavaScript the form submits; with it, results replace themselves as you type (the same URL
//! with `partial=1` answers the results alone). Phones are masked.

use axum::Extension;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use serde::Deserialize;

use super::{ConsoleError, Nav, Page, Result, Session, layout, path_segment, when};
use crate::http::AppState;
use crate::store::{Owner, Store};

/// Results shown at once.
pub const RESULTS: i64 = 25;

#[derive(Debug, Deserialize)]
pub struct SearchQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    partial: Option<String>,
}

fn results(q: &str, owners: &[Owner], total: i64) -> Markup {
    html! {
        div #results aria-live="polite" {
            @if q.is_empty() {
                p.muted { "Type the last digits of a phone, or part of a name or business name." }
            } @else if owners.is_empty() {
                p.muted { "No owner matches " strong { (q) } "." }
            } @else {
                p.muted { (total) " found" @if total > owners.len() as i64 { ", the newest " (owners.len()) " shown" } }
                ul.results {
                    @for owner in owners {
                        li {
                            a.result href={ "/admin/owners/" (path_segment(owner.id.as_str())) } {
                                span.name {
                                    (owner.business_name.as_deref().unwrap_or("(no business name yet)"))
                                }
                                span.who {
                                    (owner.owner_name.as_deref().unwrap_or("(no name yet)"))
                                    " · " span.phone { (owner.owner_phone.masked()) }
                                }
                                span.meta {
                                    span.state { (owner.state.as_str()) }
                                    " · since " (when(owner.created_at))
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

pub async fn page<S: Store>(
    State(app): State<AppState<S>>,
    Extension(session): Extension<Session>,
    params: std::result::Result<Query<SearchQuery>, QueryRejection>,
) -> Result<Response> {
    let Query(params) = params.map_err(|e| ConsoleError::BadRequest(e.body_text()))?;
    let q = params.q.trim();
    if q.chars().count() > 100 {
        return Err(ConsoleError::BadRequest(
            "the search is over 100 characters".into(),
        ));
    }
    let (owners, total) = if q.is_empty() {
        (Vec::new(), 0)
    } else {
        let found = app.engine.store().search_owners(q, RESULTS, 0).await?;
        (found.items, found.total)
    };
    let found = results(q, &owners, total);
    if params.partial.is_some() {
        return Ok(Page(found).into_response());
    }
    let body = html! {
        h1 { "Search" }
        form.search method="get" action="/admin/search" role="search" {
            label for="q" { "Phone digits, name or business" }
            input #q type="search" name="q" value=(q) autocomplete="off" autofocus
                inputmode="search" placeholder="e.g. 0123 or Smith";
            button type="submit" { "Search" }
        }
        (found)
    };
    Ok(layout("Search", Nav::Search, &session, body).into_response())
}
