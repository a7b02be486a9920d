//! Signing in to the console. The session is a signed, expiring cookie, so any replica can check
//! it without shared memory: `v1.<issued>.<expires>.<mac>`, the MAC an HMAC-SHA256 under a key
//! derived from `ADMIN_TOKEN` (changing the token signs everyone out). Each POST form carries a
//! CSRF token, an HMAC of the session under the same key, so it is bound to the session. Failed
//! sign-ins are counted in the database, across replicas, and refused past a limit.

use axum::Form;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Duration, Utc};
use hmac::{Hmac, Mac};
use maud::html;
use serde::Deserialize;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::{ConsoleError, bare_page};
use crate::http::AppState;
use crate::store::Store;

pub const COOKIE: &str = "onboard_console";
/// How long a session lasts: a working day.
pub const SESSION_HOURS: i64 = 12;
/// Failed sign-ins allowed in [`FAILURE_WINDOW_MINUTES`], across every replica, before sign-in
/// is refused until the window has passed.
pub const MAX_FAILURES: i64 = 10;
pub const FAILURE_WINDOW_MINUTES: i64 = 15;

type HmacSha256 = Hmac<Sha256>;

/// A checked session, handed to the pages through the request's extensions.
#[derive(Debug, Clone)]
pub struct Session {
    payload: String,
    key: [u8; 32],
}

fn session_key(admin_token: &str) -> [u8; 32] {
    let mut mac =
        HmacSha256::new_from_slice(admin_token.as_bytes()).expect("HMAC takes any key length");
    mac.update(b"onboard console session v1");
    mac.finalize().into_bytes().into()
}

fn mac(key: &[u8; 32], purpose: &str, payload: &str) -> String {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(purpose.as_bytes());
    mac.update(b"\0");
    mac.update(payload.as_bytes());
    URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
}

impl Session {
    fn issue(admin_token: &str, now: DateTime<Utc>) -> (Session, String) {
        let key = session_key(admin_token);
        let expires = now + Duration::hours(SESSION_HOURS);
        let payload = format!(
            "v1.{}.{}",
            now.timestamp_nanos_opt().unwrap_or_default(),
            expires.timestamp()
        );
        let cookie = format!("{payload}.{}", mac(&key, "session", &payload));
        (Session { payload, key }, cookie)
    }

    /// The session a cookie value carries, if its MAC is right and it has not expired.
    fn check(admin_token: &str, cookie: &str, now: DateTime<Utc>) -> Option<Session> {
        let key = session_key(admin_token);
        let (payload, given) = cookie.rsplit_once('.')?;
        let expected = mac(&key, "session", payload);
        if !bool::from(given.as_bytes().ct_eq(expected.as_bytes())) {
            return None;
        }
        let mut parts = payload.split('.');
        let (Some("v1"), Some(_issued), Some(expires), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        let expires: i64 = expires.parse().ok()?;
        (now.timestamp() < expires).then(|| Session {
            payload: payload.to_owned(),
            key,
        })
    }

    /// The CSRF token of this session's forms.
    pub fn csrf_token(&self) -> String {
        mac(&self.key, "csrf", &self.payload)
    }

    /// Refuses a form whose token is not this session's.
    pub fn check_csrf(&self, given: &str) -> Result<(), ConsoleError> {
        let expected = self.csrf_token();
        if bool::from(given.as_bytes().ct_eq(expected.as_bytes())) {
            Ok(())
        } else {
            tracing::warn!(event = "CONSOLE_CSRF_REFUSED");
            Err(ConsoleError::Csrf)
        }
    }
}

fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn secure<S: Store>(app: &AppState<S>) -> bool {
    app.config.public_url.starts_with("https://")
}

fn set_cookie(value: &str, max_age: i64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    let cookie = format!(
        "{COOKIE}={value}; Path=/admin; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}"
    );
    HeaderValue::from_str(&cookie).expect("a cookie of base64 and digits is a valid header")
}

/// Lets a request with a valid session through, with its [`Session`]; sends a browser without
/// one to the sign-in page (and refuses anything but a GET).
pub async fn require_session<S: Store>(
    State(app): State<AppState<S>>,
    mut request: Request,
    next: Next,
) -> Response {
    let token = app.config.admin_token.as_deref().unwrap_or_default();
    let session = cookie_value(request.headers(), COOKIE)
        .filter(|_| !token.is_empty())
        .and_then(|cookie| Session::check(token, cookie, app.engine.now()));
    match session {
        Some(session) => {
            request.extensions_mut().insert(session);
            next.run(request).await
        }
        None if request.method() == Method::GET => Redirect::to("/admin/sign-in").into_response(),
        None => (
            StatusCode::UNAUTHORIZED,
            bare_page(
                "Signed out",
                html! {
                    h1 { "Signed out" }
                    p.notice.bad { "Your session has ended: sign in again, then repeat this." }
                    p { a href="/admin/sign-in" { "Sign in" } }
                },
            ),
        )
            .into_response(),
    }
}

fn sign_in_page(error: Option<&str>) -> super::Page {
    bare_page(
        "Sign in",
        html! {
            h1 { "Sign in" }
            @if let Some(error) = error {
                p.notice.bad role="alert" { (error) }
            }
            form.signin method="post" action="/admin/sign-in" {
                label for="token" { "Admin token" }
                input #token type="password" name="token" autocomplete="current-password"
                    required autofocus;
                button type="submit" { "Sign in" }
            }
        },
    )
}

/// `GET /admin/sign-in`
pub async fn sign_in_form<S: Store>() -> super::Page {
    sign_in_page(None)
}

#[derive(Debug, Deserialize)]
pub struct SignIn {
    #[serde(default)]
    token: String,
}

/// `POST /admin/sign-in`: the token from the form; a session cookie when it is right.
pub async fn sign_in<S: Store>(
    State(app): State<AppState<S>>,
    form: Result<Form<SignIn>, axum::extract::rejection::FormRejection>,
) -> Result<Response, ConsoleError> {
    let Form(form) = form.map_err(|e| ConsoleError::BadRequest(e.body_text()))?;
    let now = app.engine.now();
    let store = app.engine.store();
    let since = now - Duration::minutes(FAILURE_WINDOW_MINUTES);
    if store.signin_failures_since(since).await? >= MAX_FAILURES {
        tracing::warn!(event = "CONSOLE_SIGNIN_LOCKED");
        let message =
            format!("Too many failed sign-ins: try again in {FAILURE_WINDOW_MINUTES} minutes.");
        return Ok((StatusCode::TOO_MANY_REQUESTS, sign_in_page(Some(&message))).into_response());
    }
    let expected = app.config.admin_token.as_deref().unwrap_or_default();
    let given = form.token.trim();
    if expected.is_empty() || !bool::from(given.as_bytes().ct_eq(expected.as_bytes())) {
        store.record_signin_failure(now).await?;
        // Never the token given: it may be the real one mistyped.
        tracing::warn!(event = "CONSOLE_SIGNIN_FAILED");
        return Ok((
            StatusCode::UNAUTHORIZED,
            sign_in_page(Some("That is not the admin token.")),
        )
            .into_response());
    }
    let (_, cookie) = Session::issue(expected, now);
    tracing::info!(event = "CONSOLE_SIGNED_IN");
    let mut response = Redirect::to("/admin").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        set_cookie(&cookie, SESSION_HOURS * 3600, secure(&app)),
    );
    Ok(response)
}

#[derive(Debug, Deserialize)]
pub struct CsrfOnly {
    #[serde(default)]
    pub csrf: String,
}

/// `POST /admin/sign-out`: clears the cookie.
pub async fn sign_out<S: Store>(
    State(app): State<AppState<S>>,
    axum::Extension(session): axum::Extension<Session>,
    form: Result<Form<CsrfOnly>, axum::extract::rejection::FormRejection>,
) -> Result<Response, ConsoleError> {
    let Form(form) = form.map_err(|e| ConsoleError::BadRequest(e.body_text()))?;
    session.check_csrf(&form.csrf)?;
    tracing::info!(event = "CONSOLE_SIGNED_OUT");
    let mut response = Redirect::to("/admin/sign-in").into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, set_cookie("", 0, secure(&app)));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).unwrap()
    }

    #[test]
    fn a_session_checks_until_it_expires_and_only_under_its_token() {
        let (session, cookie) = Session::issue("token-a", at(1_000_000));
        let checked = Session::check("token-a", &cookie, at(1_000_000 + 3600)).unwrap();
        assert_eq!(checked.csrf_token(), session.csrf_token());
        assert!(Session::check("token-b", &cookie, at(1_000_000)).is_none());
        let later = at(1_000_000 + SESSION_HOURS * 3600);
        assert!(Session::check("token-a", &cookie, later).is_none());
    }

    #[test]
    fn a_tampered_cookie_is_refused() {
        let (_, cookie) = Session::issue("token-a", at(1_000_000));
        let (payload, mac) = cookie.rsplit_once('.').unwrap();
        let longer = payload.replace(".1000", ".9000");
        assert!(Session::check("token-a", &format!("{longer}.{mac}"), at(1_000_000)).is_none());
        assert!(Session::check("token-a", "v1.1.2", at(1)).is_none());
        assert!(Session::check("token-a", "", at(1)).is_none());
    }

    #[test]
    fn the_csrf_token_is_bound_to_the_session() {
        let (first, _) = Session::issue("token-a", at(1_000_000));
        let (second, _) = Session::issue("token-a", at(1_000_001));
        assert!(first.check_csrf(&first.csrf_token()).is_ok());
        assert!(first.check_csrf(&second.csrf_token()).is_err());
        assert!(first.check_csrf("").is_err());
    }
}
