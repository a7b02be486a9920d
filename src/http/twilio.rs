//! Twilio's webhooks: inbound SMS, voice, and delivery and call status callbacks.

use axum::extract::{FromRequest, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::{AppState, RawBody, form};
use crate::domain::PhoneNumber;
use crate::engine::InboundCall;
use crate::engine::InboundSms;
use crate::engine::after::{RecordingOutcome, RecordingStatus};
use crate::outbox;
use crate::store::Store;
use crate::twilio::{signature, twiml};

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
        if app.config.signatures_checked() {
            // Checks on without a token (a hand-built config) fails closed: nothing validates.
            let token = app.config.twilio_auth_token.as_deref().unwrap_or_default();
            signature::validate(token, &url, &params, header.as_deref()).map_err(|e| match e {
                signature::SignatureError::Missing => ApiError::BadRequest(e.to_string()),
                signature::SignatureError::Mismatch => ApiError::Forbidden(e.to_string()),
            })?;
        }
        Ok(TwilioForm(params))
    }
}

/// A provider's id: what idempotency is keyed on, so it must be there, of a sane length and made
/// of the letters and digits Twilio uses (no byte the database or a log could choke on).
fn sid<'a>(params: &'a [(String, String)], name: &'static str) -> Result<&'a str, ApiError> {
    let sid = form::required(params, name)?;
    if sid.len() > 64 || !sid.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(ApiError::BadRequest(format!(
            "{name} must be 1 to 64 letters and digits"
        )));
    }
    Ok(sid)
}

/// Who a text or call is from or to, as Twilio reports it: usually an E.164 number, but Twilio
/// passes through caller ids it cannot normalise (`Anonymous`, short codes, sender names), so
/// anything printable up to 64 characters is kept; the engine decides what it can route.
fn caller_id<'a>(value: &'a str, name: &'static str) -> Result<&'a str, ApiError> {
    if value.chars().count() > 64 || value.chars().any(char::is_control) {
        return Err(ApiError::BadRequest(format!(
            "{name} must be a phone number or caller id of at most 64 printable characters"
        )));
    }
    Ok(value)
}

/// One of our own numbers, which Twilio always gives in E.164.
fn our_number<'a>(value: &'a str, name: &'static str) -> Result<&'a str, ApiError> {
    PhoneNumber::parse(value)
        .map(|_| value)
        .map_err(|e| ApiError::BadRequest(format!("{name}: {e}")))
}

/// A word from a fixed vocabulary: anything else is a 400 naming the field.
fn one_of<'a>(value: &'a str, name: &'static str, words: &[&str]) -> Result<&'a str, ApiError> {
    if words.contains(&value) {
        Ok(value)
    } else {
        Err(ApiError::BadRequest(format!(
            "{name} must be one of {}",
            words.join(", ")
        )))
    }
}

/// Twilio's call statuses (`CallStatus`).
const CALL_STATUSES: [&str; 9] = [
    "queued",
    "initiated",
    "ringing",
    "in-progress",
    "completed",
    "busy",
    "failed",
    "no-answer",
    "canceled",
];

/// Twilio's message statuses (`MessageStatus`).
const MESSAGE_STATUSES: [&str; 13] = [
    "accepted",
    "scheduled",
    "queued",
    "sending",
    "sent",
    "delivered",
    "undelivered",
    "failed",
    "read",
    "receiving",
    "received",
    "canceled",
    "partially_delivered",
];

/// Twilio's call directions (`Direction`).
const DIRECTIONS: [&str; 5] = [
    "inbound",
    "outbound-api",
    "outbound-dial",
    "trunking-originating",
    "trunking-terminating",
];

/// An optional count (`SequenceNumber`, `CallDuration`): a whole number that fits the column it
/// is stored in, or a 400. Junk must not quietly become "absent": a missing sequence number would
/// let a late callback overwrite a newer status.
fn optional_count(
    params: &[(String, String)],
    name: &'static str,
) -> Result<Option<i32>, ApiError> {
    form::optional(params, name)
        .map(|raw| {
            raw.parse::<u32>()
                .ok()
                .and_then(|n| i32::try_from(n).ok())
                .ok_or_else(|| {
                    ApiError::BadRequest(format!(
                        "{name} must be a whole number from 0 to {}",
                        i32::MAX
                    ))
                })
        })
        .transpose()
}

/// A Twilio error code: digits only.
fn error_code(params: &[(String, String)]) -> Result<Option<&str>, ApiError> {
    match form::optional(params, "ErrorCode") {
        Some(code) if code.len() > 10 || !code.bytes().all(|b| b.is_ascii_digit()) => Err(
            ApiError::BadRequest("ErrorCode must be up to 10 digits".into()),
        ),
        code => Ok(code),
    }
}

/// What a person typed, with control characters other than tab and line breaks removed: a stray
/// NUL from a handset is not a reason to ignore an owner (and PostgreSQL cannot store one).
pub fn clean_body(body: &str) -> String {
    body.chars()
        .filter(|c| matches!(c, '\t' | '\n' | '\r') || !c.is_control())
        .collect()
}

/// `POST /webhooks/twilio/sms`: one inbound text, answered with TwiML.
pub async fn sms<S: Store>(
    State(app): State<AppState<S>>,
    TwilioForm(params): TwilioForm,
) -> Result<Response, ApiError> {
    let to = match form::optional(&params, "To") {
        Some(to) => our_number(to, "To")?,
        None => "",
    };
    let sms = InboundSms {
        message_sid: sid(&params, "MessageSid")?.to_owned(),
        from: caller_id(form::required(&params, "From")?, "From")?.to_owned(),
        body: clean_body(form::present(&params, "Body")?),
        to: to.to_owned(),
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
    let status = one_of(
        form::required(&params, "MessageStatus")?,
        "MessageStatus",
        &MESSAGE_STATUSES,
    )?;
    let status = outbox::twilio_status(status);
    let error_code = error_code(&params)?;
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
    let forwarded_from = form::optional(&params, "ForwardedFrom")
        .map(|v| caller_id(v, "ForwardedFrom"))
        .transpose()?;
    let call = InboundCall {
        call_sid: sid(&params, "CallSid")?.to_owned(),
        from: caller_id(form::required(&params, "From")?, "From")?.to_owned(),
        to: our_number(form::required(&params, "To")?, "To")?.to_owned(),
        forwarded_from: forwarded_from.map(str::to_owned),
        direction: one_of(
            form::optional(&params, "Direction").unwrap_or("inbound"),
            "Direction",
            &DIRECTIONS,
        )?
        .to_owned(),
        status: one_of(
            form::optional(&params, "CallStatus").unwrap_or("ringing"),
            "CallStatus",
            &CALL_STATUSES,
        )?
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
    let status = one_of(
        form::required(&params, "CallStatus")?,
        "CallStatus",
        &CALL_STATUSES,
    )?;
    let known = app
        .engine
        .call_status(
            call_sid,
            status,
            optional_count(&params, "SequenceNumber")?,
            optional_count(&params, "CallDuration")?,
        )
        .await?;
    if !known {
        tracing::info!(event = "CALL_STATUS_UNKNOWN_SID", call_sid);
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Twilio's recording statuses (`RecordingStatus`).
const RECORDING_STATUSES: [&str; 4] = ["in-progress", "completed", "absent", "failed"];

/// A recording's URL: Twilio's own HTTPS address, nothing a text or an email could be tricked
/// into pointing elsewhere with.
fn recording_url<'a>(value: &'a str, name: &'static str) -> Result<&'a str, ApiError> {
    let ok = value.len() <= 300
        && value.starts_with("https://")
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/:.-_".contains(&b));
    if ok {
        Ok(value)
    } else {
        Err(ApiError::BadRequest(format!(
            "{name} must be an https:// URL of at most 300 letters, digits and / : . - _"
        )))
    }
}

/// `POST /webhooks/twilio/recording-status`: a voicemail is stored (or none was left). Attaches
/// it to the missed call and alerts the owner; a retried `RecordingSid` changes nothing.
pub async fn recording_status<S: Store>(
    State(app): State<AppState<S>>,
    TwilioForm(params): TwilioForm,
) -> Result<Response, ApiError> {
    let status = one_of(
        form::required(&params, "RecordingStatus")?,
        "RecordingStatus",
        &RECORDING_STATUSES,
    )?;
    let recording = RecordingStatus {
        recording_sid: sid(&params, "RecordingSid")?.to_owned(),
        call_sid: sid(&params, "CallSid")?.to_owned(),
        status: status.to_owned(),
        url: form::optional(&params, "RecordingUrl")
            .map(|url| recording_url(url, "RecordingUrl"))
            .transpose()?
            .map(str::to_owned),
        duration_secs: optional_count(&params, "RecordingDuration")?,
    };
    if recording.status == "completed" && recording.url.is_none() {
        return Err(ApiError::BadRequest(
            "RecordingUrl is required when RecordingStatus is completed".into(),
        ));
    }
    if recording.status == "in-progress" {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    match app.engine.recording_status(&recording).await? {
        RecordingOutcome::Attached => {}
        RecordingOutcome::Duplicate => {
            tracing::info!(event = "RECORDING_STATUS_DUPLICATE", recording_sid = %recording.recording_sid);
        }
        RecordingOutcome::UnknownCall => {
            tracing::info!(event = "RECORDING_STATUS_UNKNOWN_CALL", call_sid = %recording.call_sid);
        }
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /webhooks/twilio/voicemail-done`: where a caller goes when their message ends: goodbye.
pub async fn voicemail_done<S: Store>(
    State(_app): State<AppState<S>>,
    TwilioForm(_params): TwilioForm,
) -> Result<Response, ApiError> {
    let response = twiml::Response::new().hangup().to_xml();
    Ok(([(header::CONTENT_TYPE, twiml::CONTENT_TYPE)], response).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_keeps_text_and_line_breaks_but_loses_control_characters() {
        assert_eq!(clean_body("Plumber\0 in\u{1b} Leeds"), "Plumber in Leeds");
        assert_eq!(clean_body("a\tb\r\nc\u{7f}\u{85}"), "a\tb\r\nc");
        assert_eq!(
            clean_body("K\u{212a}\u{202e}é\u{301}"),
            "K\u{212a}\u{202e}é\u{301}"
        );
    }
}
