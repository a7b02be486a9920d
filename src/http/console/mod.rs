//! The ops console at `/admin`: server-rendered pages for the people who run onboarding, one file
//! per page family. Signed in with `ADMIN_TOKEN` through a form ([`session`]); every page works
//! without JavaScript except search-as-you-type and the live feed. Mounted only when
//! `ADMIN_TOKEN` is set, like the JSON API.

pub mod live;
pub mod owner;
pub mod pool;
pub mod search;
pub mod session;
pub mod today;
pub mod webhooks;

use std::sync::LazyLock;

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use maud::{DOCTYPE, Markup, html};
use sha2::{Digest, Sha256};

use super::AppState;
use crate::engine::EngineError;
use crate::store::{Store, StoreError};
pub use session::Session;

/// Every console route. Sign-in and the assets are open; the rest needs a session.
pub fn routes<S: Store>(state: AppState<S>) -> Router<AppState<S>> {
    let signed_in = Router::new()
        .route("/admin", get(today::page::<S>))
        .route("/admin/search", get(search::page::<S>))
        .route("/admin/owners/{id}", get(owner::page::<S>))
        .route(
            "/admin/owners/{id}/reset",
            get(owner::confirm_reset::<S>).post(owner::reset::<S>),
        )
        .route(
            "/admin/owners/{id}/release-number",
            get(owner::confirm_release_number::<S>).post(owner::release_number::<S>),
        )
        .route(
            "/admin/owners/{id}/resend/{outbound_id}",
            get(owner::confirm_resend::<S>).post(owner::resend::<S>),
        )
        .route("/admin/webhooks", get(webhooks::page::<S>))
        .route(
            "/admin/webhooks/{provider}/{event_id}/reprocess",
            get(webhooks::confirm_reprocess::<S>).post(webhooks::reprocess::<S>),
        )
        .route("/admin/pool", get(pool::page::<S>))
        .route(
            "/admin/pool/add",
            get(pool::confirm_add::<S>).post(pool::add::<S>),
        )
        .route(
            "/admin/pool/release",
            get(pool::confirm_release::<S>).post(pool::release::<S>),
        )
        .route("/admin/live", get(live::page::<S>))
        .route("/admin/sign-out", post(session::sign_out::<S>))
        .route_layer(axum::middleware::from_fn_with_state(
            state,
            session::require_session::<S>,
        ));
    Router::new()
        .route(
            "/admin/sign-in",
            get(session::sign_in_form::<S>).post(session::sign_in::<S>),
        )
        .route("/admin/assets/{name}", get(asset))
        .merge(signed_in)
}

// --- errors -----------------------------------------------------------------------------------

/// What can go wrong on a console page, mapped to a page (and a status) in one place.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("this form has expired or did not come from the console: open the page again")]
    Csrf,
    #[error(transparent)]
    Engine(#[from] EngineError),
}

impl From<StoreError> for ConsoleError {
    fn from(e: StoreError) -> Self {
        ConsoleError::Engine(e.into())
    }
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        let status = match &self {
            ConsoleError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ConsoleError::NotFound(_) => StatusCode::NOT_FOUND,
            ConsoleError::Conflict(_) => StatusCode::CONFLICT,
            ConsoleError::Csrf => StatusCode::FORBIDDEN,
            ConsoleError::Engine(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let message = match &self {
            // The engine's errors can quote a database message: logged, never shown.
            ConsoleError::Engine(e) => {
                tracing::error!(event = "CONSOLE_ERROR", error = %e);
                "Something went wrong on the server; it has been logged. Try again.".to_owned()
            }
            other => other.to_string(),
        };
        let title = status.canonical_reason().unwrap_or("Error");
        let body = html! {
            h1 { (title) }
            p.notice.bad { (message) }
            p { a href="/admin" { "Back to Today" } }
        };
        (status, bare_page(title, body)).into_response()
    }
}

pub type Result<T, E = ConsoleError> = std::result::Result<T, E>;

// --- layout -----------------------------------------------------------------------------------

/// The pages of the navigation bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Today,
    Search,
    Webhooks,
    Pool,
    Live,
    /// A page reached from another (an owner, a confirmation).
    None,
}

/// An HTML page with the console's headers: never cached (it shows owners' data), never framed,
/// and no script or style from anywhere but the console itself.
pub struct Page(pub Markup);

impl IntoResponse for Page {
    fn into_response(self) -> Response {
        let mut response = (
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            self.0.into_string(),
        )
            .into_response();
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; \
                 form-action 'self'; base-uri 'none'",
            ),
        );
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        headers.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("same-origin"),
        );
        response
    }
}

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) " · onboard console" }
            link rel="stylesheet" href=(asset_url("console.css"));
            script src=(asset_url("console.js")) defer {}
        }
    }
}

/// A page of the signed-in console: navigation, sign-out, then `body`.
pub fn layout(title: &str, nav: Nav, session: &Session, body: Markup) -> Page {
    let item = |name: &str, href: &str, this: Nav| {
        html! {
            a href=(href) aria-current=[(nav == this).then_some("page")] { (name) }
        }
    };
    Page(html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                header.top {
                    a.brand href="/admin" { "onboard" }
                    nav {
                        (item("Today", "/admin", Nav::Today))
                        (item("Search", "/admin/search", Nav::Search))
                        (item("Webhooks", "/admin/webhooks", Nav::Webhooks))
                        (item("Pool", "/admin/pool", Nav::Pool))
                        (item("Live", "/admin/live", Nav::Live))
                    }
                    form.signout method="post" action="/admin/sign-out" {
                        (csrf_field(session))
                        button type="submit" { "Sign out" }
                    }
                }
                main { (body) }
            }
        }
    })
}

/// A page without navigation: sign-in and errors.
pub fn bare_page(title: &str, body: Markup) -> Page {
    Page(html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                header.top { a.brand href="/admin" { "onboard" } }
                main.narrow { (body) }
            }
        }
    })
}

/// The hidden field every POST form carries.
pub fn csrf_field(session: &Session) -> Markup {
    html! { input type="hidden" name="csrf" value=(session.csrf_token()); }
}

/// The confirmation step in front of every button that changes something: a page saying what
/// will happen, with the one form that does it.
pub fn confirm(
    session: &Session,
    title: &str,
    what: Markup,
    action: &str,
    fields: &[(&str, &str)],
    button: &str,
    back: &str,
) -> Page {
    layout(
        title,
        Nav::None,
        session,
        html! {
            h1 { (title) }
            div.confirm {
                (what)
                form method="post" action=(action) {
                    (csrf_field(session))
                    @for (name, value) in fields {
                        input type="hidden" name=(name) value=(value);
                    }
                    button.danger type="submit" { (button) }
                    " "
                    a.button href=(back) { "Cancel" }
                }
            }
        },
    )
}

/// A time as the console shows it: UTC, to the second.
pub fn when(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// The path segment for `raw`, percent-encoded (sids and ids are plain, but a stored id is data).
pub fn path_segment(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for b in raw.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

// --- assets -----------------------------------------------------------------------------------

const CSS: &str = include_str!("console.css");
const JS: &str = include_str!("console.js");

/// The first hex digits of an asset's SHA-256, so its URL changes when it does and browsers may
/// keep it for a year.
fn content_hash(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect()
}

static CSS_URL: LazyLock<String> =
    LazyLock::new(|| format!("/admin/assets/console.css?v={}", content_hash(CSS)));
static JS_URL: LazyLock<String> =
    LazyLock::new(|| format!("/admin/assets/console.js?v={}", content_hash(JS)));

fn asset_url(name: &str) -> &'static str {
    if name.ends_with(".css") {
        &CSS_URL
    } else {
        &JS_URL
    }
}

/// `GET /admin/assets/{name}`: the stylesheet and the script, embedded in the binary.
async fn asset(Path(name): Path<String>) -> Response {
    let (body, kind) = match name.as_str() {
        "console.css" => (CSS, "text/css; charset=utf-8"),
        "console.js" => (JS, "text/javascript; charset=utf-8"),
        _ => return (StatusCode::NOT_FOUND, "no such asset\n").into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
        ],
        body,
    )
        .into_response()
}
