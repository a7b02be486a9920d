//! Twilio's webhooks: inbound SMS, voice, and delivery and call status callbacks.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Uri, header};
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::{AppState, form};
use crate::engine::InboundSms;
use crate::outbox;
use crate::store::Store;
use crate::twilio::{signature, twiml};
use crate::voice::{InboundCall, optional_int};

/// `POST /webhooks/twilio/sms`: one inbound text, answered with TwiML.
pub async fn sms<S: Store>(
    State(app): State<AppState<S>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let params = verified_params(&app, &uri, &headers, &body)?;
    let sms = InboundSms {
        message_sid: form::required(&params, "MessageSid")?.to_owned(),
        from: form::required(&params, "From")?.to_owned(),
        body: form::present(&params, "Body")?.to_owned(),
        to: form::optional(&params, "To").unwrap_or_default().to_owned(),
    };
    if sms.message_sid.len() > 64 {
        return Err(ApiError::BadRequest(
            "MessageSid must be 1 to 64 characters".into(),
        ));
    }
    let response = app.engine.handle_sms(&sms).await?;
    Ok(([(header::CONTENT_TYPE, twiml::CONTENT_TYPE)], response).into_response())
}

/// Parses the form and checks `X-Twilio-Signature` against the public URL (never the Host header).
pub(super) fn verified_params<S: Store>(
    app: &AppState<S>,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Vec<(String, String)>, ApiError> {
    let params = form::parse(body).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    if let Some(token) = &app.config.twilio_auth_token {
        let url = match uri.path_and_query() {
            Some(pq) => format!("{}{}", app.config.public_url, pq.as_str()),
            None => format!("{}{}", app.config.public_url, uri.path()),
        };
        let header = headers
            .get("x-twilio-signature")
            .map(|v| v.to_str().unwrap_or_default());
        signature::validate(token, &url, &params, header).map_err(|e| match e {
            signature::SignatureError::Missing => ApiError::BadRequest(e.to_string()),
            signature::SignatureError::Mismatch => ApiError::Forbidden(e.to_string()),
        })?;
    }
    Ok(params)
}

/// `POST /webhooks/twilio/message-status`: delivery reports for the texts we sent.
pub async fn message_status<S: Store>(
    State(app): State<AppState<S>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let params = verified_params(&app, &uri, &headers, &body)?;
    let sid = form::required(&params, "MessageSid")?;
    let status = outbox::twilio_status(form::required(&params, "MessageStatus")?);
    let error_code = form::optional(&params, "ErrorCode");
    let known = app.engine.message_status(sid, status, error_code).await?;
    if !known {
        tracing::info!(event = "MESSAGE_STATUS_UNKNOWN_SID", message_sid = %sid);
    }
    Ok(axum::http::StatusCode::NO_CONTENT.into_response())
}

/// `POST /webhooks/twilio/voice`: a call to one of our numbers, answered with TwiML.
pub async fn voice<S: Store>(
    State(app): State<AppState<S>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let params = verified_params(&app, &uri, &headers, &body)?;
    let call = InboundCall {
        call_sid: form::required(&params, "CallSid")?.to_owned(),
        from: form::required(&params, "From")?.to_owned(),
        to: form::required(&params, "To")?.to_owned(),
        forwarded_from: form::optional(&params, "ForwardedFrom").map(str::to_owned),
        direction: form::optional(&params, "Direction")
            .unwrap_or("inbound")
            .to_owned(),
        status: form::optional(&params, "CallStatus")
            .unwrap_or("ringing")
            .to_owned(),
    };
    if call.call_sid.len() > 64 {
        return Err(ApiError::BadRequest(
            "CallSid must be 1 to 64 characters".into(),
        ));
    }
    let response = app.engine.handle_call(&call).await?;
    Ok(([(header::CONTENT_TYPE, twiml::CONTENT_TYPE)], response).into_response())
}

/// `POST /webhooks/twilio/call-status`: call progress, applied in `SequenceNumber` order.
pub async fn call_status<S: Store>(
    State(app): State<AppState<S>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let params = verified_params(&app, &uri, &headers, &body)?;
    let sid = form::required(&params, "CallSid")?;
    let status = form::required(&params, "CallStatus")?;
    let known = app
        .engine
        .call_status(
            sid,
            status,
            optional_int(form::optional(&params, "SequenceNumber")),
            optional_int(form::optional(&params, "CallDuration")),
        )
        .await?;
    if !known {
        tracing::info!(event = "CALL_STATUS_UNKNOWN_SID", call_sid = %sid);
    }
    Ok(axum::http::StatusCode::NO_CONTENT.into_response())
}
