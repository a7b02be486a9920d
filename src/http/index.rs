//! What a person (not a provider) finds at the server: `GET /`, unknown routes, and the admin
//! API when it is off. Short plain text that says what is there, instead of an empty 404.

use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::IntoResponse;

use super::AppState;
use crate::store::Store;

/// `GET /`: for whoever points a browser at the server.
pub async fn index<S: Store>(State(app): State<AppState<S>>) -> impl IntoResponse {
    let base = &app.config.public_url;
    let admin = if app.config.admin_token.is_some() {
        "on (Authorization: Bearer $ADMIN_TOKEN); console: GET /admin"
    } else {
        "off, and the console (/admin) with it (set ADMIN_TOKEN to turn them on)"
    };
    format!(
        "This is onboard: it onboards small-business owners over SMS and voice.\n\
         \n\
         Point Twilio and Stripe at these webhook URLs:\n\
         \x20 SMS (A message comes in)      POST {base}/webhooks/twilio/sms\n\
         \x20 SMS status callback           POST {base}/webhooks/twilio/message-status\n\
         \x20 Voice (A call comes in)       POST {base}/webhooks/twilio/voice\n\
         \x20 Call status callback          POST {base}/webhooks/twilio/call-status\n\
         \x20 Stripe events                 POST {base}/webhooks/stripe\n\
         \n\
         Health: GET /healthz, GET /readyz, GET /metrics\n\
         Admin API (/admin/api/...): {admin}\n"
    )
}

/// Any route we do not have.
pub async fn not_found(uri: Uri) -> impl IntoResponse {
    (
        StatusCode::NOT_FOUND,
        format!(
            "no route {}: this is onboard; GET / lists the webhook URLs, health and admin routes\n",
            uri.path()
        ),
    )
}

/// `/admin` and `/admin/api/*` while `ADMIN_TOKEN` is unset.
pub async fn admin_off() -> impl IntoResponse {
    (
        StatusCode::NOT_FOUND,
        "the admin API and the console are off: set ADMIN_TOKEN and restart to turn them on\n",
    )
}
