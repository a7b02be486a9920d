//! Twilio's webhooks: inbound SMS, voice, and delivery and call status callbacks.

use axum::extract::{FromRequest, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::{AppState, RawBody, form};
use crate::engine::InboundSms;
use crate::outbox;
use crate::store::Store;
use crate::twilio::{signature, twiml};
use crate::voice::{InboundCall, optional_int};

/// A Twilio webhook's form fields, `X-Twilio-Signature` checked against the public URL (never
/// the Host header) when the server has an auth token.
pub struct TwilioForm(Vec<(String, String)>);

impl<S: Store> FromRequest<AppState<S>> for TwilioForm {
    type Rejection = ApiError;

    async fn from_request(req: Request, app: &AppState<S>) -> Result<Self, ApiError> {
        let path = req
            .uri()
            .path_and_query()
            .map_or(req.uri().path(), |pq| pq.as_str());
        let url = format!("{}{}", app.config.public_url, path);
        // A JSON body would fail later as "missing form field"; say what is wrong instead.
        if req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.to_ascii_lowercase().contains("json"))
        {
            return Err(ApiError::BadRequest(
                "a form is expected (application/x-www-form-urlencoded, as Twilio sends), not JSON"
                    .into(),
            ));
        }
        let header = req
            .headers()
            .get("x-twilio-signature")
            .map(|v| v.to_str().unwrap_or_default().to_owned());
        let RawBody(body) = RawBody::from_request(req, app).await?;
        let params = form::parse(&body).map_err(|e| ApiError::BadRequest(e.to_string()))?;
        if let Some(token) = &app.config.twilio_auth_token {
            signature::validate(token, &url, &params, header.as_deref()).map_err(|e| match e {
                signature::SignatureError::Missing => ApiError::BadRequest(e.to_string()),
                signature::SignatureError::Mismatch => ApiError::Forbidden(e.to_string()),
            })?;
        }
        Ok(TwilioForm(params))
    }
}

/// A provider's id: what idempotency is keyed on, so it must be there and of a sane length.
fn sid<'a>(params: &'a [(String, String)], name: &'static str) -> Result<&'a str, ApiError> {
    let sid = form::required(params, name)?;
    if sid.len() > 64 {
        return Err(ApiError::BadRequest(format!(
            "{name} must be 1 to 64 characters"
        )));
    }
    Ok(sid)
}

/// `POST /webhooks/twilio/sms`: one inbound text, answered with TwiML.
pub async fn sms<S: Store>(
    State(app): State<AppState<S>>,
    TwilioForm(params): TwilioForm,
) -> Result<Response, ApiError> {
    let sms = InboundSms {
        message_sid: sid(&params, "MessageSid")?.to_owned(),
        from: form::required(&params, "From")?.to_owned(),
        body: form::present(&params, "Body")?.to_owned(),
        to: form::optional(&params, "To").unwrap_or_default().to_owned(),
    };
    let response = app.engine.handle_sms(&sms).await?;
    if !app.config.signatures_checked() {
        // Dev mode only (no TWILIO_AUTH_TOKEN, so never production): show the conversation, so a
        // newcomer trying the server with curl sees what the bot says.
        tracing::info!(event = "DEV_SMS_IN", from = %crate::domain::mask_phone(&sms.from), text = %sms.body);
        tracing::info!(
            event = "DEV_SMS_REPLY",
            to = %crate::domain::mask_phone(&sms.from),
            text = %crate::replay::message_text(&response).unwrap_or_default(),
        );
    }
    Ok(([(header::CONTENT_TYPE, twiml::CONTENT_TYPE)], response).into_response())
}

/// `POST /webhooks/twilio/message-status`: delivery reports for the texts we sent.
pub async fn message_status<S: Store>(
    State(app): State<AppState<S>>,
    TwilioForm(params): TwilioForm,
) -> Result<Response, ApiError> {
    let message_sid = sid(&params, "MessageSid")?;
    let status = outbox::twilio_status(form::required(&params, "MessageStatus")?);
    let error_code = form::optional(&params, "ErrorCode");
    let known = app
        .engine
        .message_status(message_sid, status, error_code)
        .await?;
    if !known {
        tracing::info!(event = "MESSAGE_STATUS_UNKNOWN_SID", message_sid);
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /webhooks/twilio/voice`: a call to one of our numbers, answered with TwiML.
pub async fn voice<S: Store>(
    State(app): State<AppState<S>>,
    TwilioForm(params): TwilioForm,
) -> Result<Response, ApiError> {
    let call = InboundCall {
        call_sid: sid(&params, "CallSid")?.to_owned(),
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
    let response = app.engine.handle_call(&call).await?;
    Ok(([(header::CONTENT_TYPE, twiml::CONTENT_TYPE)], response).into_response())
}

/// `POST /webhooks/twilio/call-status`: call progress, applied in `SequenceNumber` order.
pub async fn call_status<S: Store>(
    State(app): State<AppState<S>>,
    TwilioForm(params): TwilioForm,
) -> Result<Response, ApiError> {
    let call_sid = sid(&params, "CallSid")?;
    let status = form::required(&params, "CallStatus")?;
    let known = app
        .engine
        .call_status(
            call_sid,
            status,
            optional_int(form::optional(&params, "SequenceNumber")),
            optional_int(form::optional(&params, "CallDuration")),
        )
        .await?;
    if !known {
        tracing::info!(event = "CALL_STATUS_UNKNOWN_SID", call_sid);
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}
