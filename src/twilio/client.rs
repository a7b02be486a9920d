//! Twilio REST client (API 2010-04-01), hand-rolled on reqwest because the Rust SDKs are stale.
//!
//! Errors are classified by what they mean for a retry, because `POST Messages.json` has no
//! idempotency key: only a request that never reached Twilio, or a rate-limit refusal, is safe to
//! send again; a timeout or 5xx may already have sent the message (reconcile with
//! [`TwilioClient::list_messages_since`]).

use std::fmt;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use reqwest::header::RETRY_AFTER;
use reqwest::{Method, StatusCode, Url};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::domain::{PhoneNumber, mask_pii};

const API_VERSION: &str = "2010-04-01";
const USER_AGENT: &str = concat!("onboard/", env!("CARGO_PKG_VERSION"));
/// Enough for a human to read, short enough that an HTML error page cannot flood a log line.
const MAX_ERROR_TEXT: usize = 500;
/// Twilio asks for a back-off but does not always say how long.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);
/// Twilio's default page size; most reconciliations end on the first page.
const LIST_PAGE_SIZE: &str = "50";
/// 1,000 messages to one owner since a single uncertain send is no conversation we hold; a list
/// that long is more likely a loop in Twilio's paging than history, so we stop rather than page
/// on forever.
const MAX_LIST_PAGES: usize = 20;
/// Call progress events we want; Twilio takes one form field per event.
const CALL_EVENTS: [&str; 4] = ["initiated", "ringing", "answered", "completed"];

/// Basic-auth credentials: the account SID for paths, and either that SID or an API key (SK...) to log in.
#[derive(Clone)]
pub struct Credentials {
    pub account_sid: String,
    /// `AC...` (with the auth token as secret) or an API key `SK...` (with its secret).
    pub username: String,
    pub secret: String,
}

/// Redacts the secret so a `{:?}` of a config or client cannot leak it.
impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("account_sid", &self.account_sid)
            .field("username", &self.username)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// Cheap to clone: the reqwest client shares its connection pool.
#[derive(Clone)]
pub struct TwilioClient {
    http: reqwest::Client,
    base_url: Url,
    credentials: Credentials,
}

/// Leaves the secret out.
impl fmt::Debug for TwilioClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TwilioClient")
            .field("base_url", &self.base_url.as_str())
            .field("credentials", &self.credentials)
            .finish_non_exhaustive()
    }
}

/// A message as Twilio reports it (send answer or list entry).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SentMessage {
    pub sid: String,
    pub status: String,
    pub to: String,
    pub from: Option<String>,
    pub body: Option<String>,
    /// RFC 2822, as Twilio sends it (`Wed, 01 May 2024 12:00:00 +0000`).
    pub date_created: Option<String>,
    pub error_code: Option<i64>,
}

/// What a message or call cost, as its resource reports it once final. Twilio gives the price as
/// a negative decimal string (`"-0.00830"`, money paid out), or null until it is known.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PricedResource {
    pub sid: String,
    pub status: String,
    pub price: Option<String>,
    pub price_unit: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PlacedCall {
    pub sid: String,
    pub status: String,
}

/// Filters for a local-number search; Twilio has no fallback, so callers widen step by step.
#[derive(Debug, Clone, Default)]
pub struct NumberSearch {
    /// US/CA only.
    pub area_code: Option<String>,
    pub in_region: Option<String>,
    /// E.164; used with `distance_miles`.
    pub near_number: Option<String>,
    pub distance_miles: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct AvailableNumber {
    pub phone_number: String,
    pub region: Option<String>,
    pub locality: Option<String>,
    pub iso_country: Option<String>,
}

#[derive(Debug, Clone)]
pub struct BuyNumber {
    pub phone_number: PhoneNumber,
    pub sms_url: String,
    pub voice_url: String,
    pub status_callback: String,
    pub friendly_name: String,
    /// Needed for most non-US numbers (error 21631 without it).
    pub address_sid: Option<String>,
    pub bundle_sid: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct IncomingNumber {
    pub sid: String,
    pub phone_number: String,
}

#[derive(Debug, thiserror::Error)]
pub enum TwilioError {
    /// Twilio answered with an error status. `code` is Twilio's error code, or 0 when the body
    /// was not Twilio's JSON error. `retry_after` is set on rate limits (1 s when no header).
    #[error("Twilio error {code} (HTTP {status}): {message}")]
    Api {
        status: u16,
        code: i64,
        message: String,
        retry_after: Option<Duration>,
    },
    /// The request never reached Twilio (connect/DNS failure): safe to retry.
    #[error("could not reach Twilio: {0}")]
    Unreachable(String),
    /// Sent, but no usable answer (timeout, connection reset, 5xx without a body we can parse):
    /// the request MAY have been processed.
    #[error("no clear answer from Twilio: {0}")]
    Ambiguous(String),
    /// A 2xx we could not use (a body we could not parse, a list we would not page to its end):
    /// Twilio did process the request, so do not resend.
    #[error("unexpected response from Twilio: {0}")]
    Unexpected(String),
}

impl TwilioError {
    /// Twilio's error code; None when there was none (transport errors, non-JSON bodies).
    pub fn code(&self) -> Option<i64> {
        match self {
            TwilioError::Api { code, .. } if *code != 0 => Some(*code),
            _ => None,
        }
    }

    /// 429 or code 20429: never processed, retry after `retry_after`.
    pub fn is_rate_limited(&self) -> bool {
        matches!(self, TwilioError::Api { status, code, .. } if *status == 429 || *code == 20429)
    }

    /// 21610: the recipient replied STOP; Twilio blocks sends until they opt back in.
    pub fn is_opted_out(&self) -> bool {
        self.code() == Some(21610)
    }

    /// Safe to send again without risking a duplicate: Unreachable, rate limited.
    pub fn is_safe_to_retry(&self) -> bool {
        matches!(self, TwilioError::Unreachable(_)) || self.is_rate_limited()
    }

    /// The request may have been processed: Ambiguous, and any 5xx (even with an error body),
    /// because Twilio may fail after acting. A rate limit is never processed, whatever its status.
    pub fn is_ambiguous(&self) -> bool {
        match self {
            TwilioError::Ambiguous(_) => true,
            TwilioError::Api { status, .. } => *status >= 500 && !self.is_rate_limited(),
            _ => false,
        }
    }

    /// How long Twilio asked us to wait, if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            TwilioError::Api { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

#[derive(Deserialize)]
struct ErrorBody {
    code: Option<i64>,
    message: Option<String>,
}

#[derive(Deserialize)]
struct MessagePage {
    messages: Vec<SentMessage>,
    /// Path and query of the next page, relative to the API host; null on the last page.
    next_page_uri: Option<String>,
}

#[derive(Deserialize)]
struct AvailablePage {
    available_phone_numbers: Vec<AvailableNumber>,
}

#[derive(Deserialize)]
struct IncomingPage {
    incoming_phone_numbers: Vec<IncomingNumber>,
}

impl TwilioClient {
    /// `base_url` is e.g. `https://api.twilio.com` (tests point it at a mock). `timeout` bounds
    /// each whole request; connecting gets at most half of it (and 5 s), so a dead host is
    /// reported as [`TwilioError::Unreachable`] (safe to retry) before the overall deadline
    /// would make it [`TwilioError::Ambiguous`].
    ///
    /// # Panics
    /// If `base_url` is not an absolute URL, or the TLS backend cannot start: both are
    /// start-up configuration faults.
    pub fn new(base_url: &str, credentials: Credentials, timeout: Duration) -> Self {
        let base_url = Url::parse(base_url)
            .ok()
            .filter(|u| !u.cannot_be_a_base())
            .unwrap_or_else(|| panic!("Twilio API base {base_url:?} is not an absolute URL"));
        crate::tls::install_crypto_provider();
        let http = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .timeout(timeout)
            .connect_timeout((timeout / 2).min(Duration::from_secs(5)))
            // Twilio does not redirect; following one would replay a POST somewhere else.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("the HTTP client (TLS backend) could not be initialised");
        Self {
            http,
            base_url,
            credentials,
        }
    }

    /// Sends an SMS. On [`TwilioError::is_ambiguous`] the message may have gone out: reconcile
    /// with [`Self::list_messages_since`] before resending.
    pub async fn send_sms(
        &self,
        to: &PhoneNumber,
        from: &PhoneNumber,
        body: &str,
        status_callback: Option<&str>,
    ) -> Result<SentMessage, TwilioError> {
        let mut form = vec![("To", to.as_str()), ("From", from.as_str()), ("Body", body)];
        if let Some(url) = status_callback {
            form.push(("StatusCallback", url));
        }
        let url = self.account_url(&["Messages.json"]);
        parse_json(self.execute(Method::POST, url, Some(&form)).await?)
    }

    /// Every message from `from` to `to` created at or after `since`, newest first, to find out
    /// whether an ambiguous send went through. Messages whose `date_created` is missing or
    /// unparsable are kept: they may be the one we look for.
    ///
    /// No date filter in the query: Twilio's `DateSent` filter skips messages still queued (they
    /// have no send date yet), which are exactly the ones we look for. So we page back instead,
    /// newest first, and stop at the first page wholly older than `since`.
    ///
    /// More than `MAX_LIST_PAGES` pages is a [`TwilioError::Unexpected`], not a shorter list:
    /// the message we look for could be on the pages not read, and an incomplete answer would
    /// read as "never sent" and send the text twice. As an error, the outbox sends nothing and
    /// asks again later, and after its last attempt leaves the message for a person.
    pub async fn list_messages_since(
        &self,
        to: &PhoneNumber,
        from: &PhoneNumber,
        since: DateTime<Utc>,
    ) -> Result<Vec<SentMessage>, TwilioError> {
        let mut url = self.account_url(&["Messages.json"]);
        url.query_pairs_mut()
            .append_pair("To", to.as_str())
            .append_pair("From", from.as_str())
            .append_pair("PageSize", LIST_PAGE_SIZE);
        let list_path = url.path().to_owned();
        let mut found = Vec::new();
        for _ in 0..MAX_LIST_PAGES {
            let page: MessagePage = parse_json(self.execute(Method::GET, url, None).await?)?;
            // Only a page older than `since` throughout ends the search: the list's order need
            // not be `date_created`'s (a queued message gets its send date late), so a page
            // that merely reaches past `since` may still be followed by one of ours.
            let mut all_older = !page.messages.is_empty();
            for message in page.messages {
                match created_at(&message) {
                    Some(created) if created < since => {}
                    _ => {
                        all_older = false;
                        found.push(message);
                    }
                }
            }
            match page.next_page_uri {
                Some(next) if !all_older => url = self.next_page_url(&list_path, &next)?,
                _ => return Ok(found),
            }
        }
        Err(TwilioError::Unexpected(format!(
            "more than {MAX_LIST_PAGES} pages of messages since {since}; not read to the end"
        )))
    }

    /// A message's resource, for its final price.
    pub async fn fetch_message(&self, message_sid: &str) -> Result<PricedResource, TwilioError> {
        let file = format!("{message_sid}.json");
        let url = self.account_url(&["Messages", &file]);
        parse_json(self.execute(Method::GET, url, None).await?)
    }

    /// A call's resource, for its final price.
    pub async fn fetch_call(&self, call_sid: &str) -> Result<PricedResource, TwilioError> {
        let file = format!("{call_sid}.json");
        let url = self.account_url(&["Calls", &file]);
        parse_json(self.execute(Method::GET, url, None).await?)
    }

    /// Places an outbound call running `twiml`, ringing for `ring_timeout_secs`.
    pub async fn place_call(
        &self,
        to: &PhoneNumber,
        from: &PhoneNumber,
        twiml: &str,
        ring_timeout_secs: u32,
        status_callback: Option<&str>,
    ) -> Result<PlacedCall, TwilioError> {
        let timeout = ring_timeout_secs.to_string();
        let mut form = vec![
            ("To", to.as_str()),
            ("From", from.as_str()),
            ("Twiml", twiml),
            ("Timeout", timeout.as_str()),
        ];
        if let Some(url) = status_callback {
            form.push(("StatusCallback", url));
            // Without a callback URL the events would go nowhere.
            form.extend(CALL_EVENTS.map(|event| ("StatusCallbackEvent", event)));
        }
        let url = self.account_url(&["Calls.json"]);
        parse_json(self.execute(Method::POST, url, Some(&form)).await?)
    }

    /// Local numbers that can both text and take calls. An empty list is a normal answer.
    pub async fn search_local_numbers(
        &self,
        country_iso: &str,
        query: &NumberSearch,
    ) -> Result<Vec<AvailableNumber>, TwilioError> {
        let mut url = self.account_url(&["AvailablePhoneNumbers", country_iso, "Local.json"]);
        {
            let mut pairs = url.query_pairs_mut();
            if let Some(v) = &query.area_code {
                pairs.append_pair("AreaCode", v);
            }
            if let Some(v) = &query.in_region {
                pairs.append_pair("InRegion", v);
            }
            if let Some(v) = &query.near_number {
                pairs.append_pair("NearNumber", v);
            }
            if let Some(v) = query.distance_miles {
                pairs.append_pair("Distance", &v.to_string());
            }
            pairs
                .append_pair("SmsEnabled", "true")
                .append_pair("VoiceEnabled", "true");
        }
        let page: AvailablePage = parse_json(self.execute(Method::GET, url, None).await?)?;
        Ok(page.available_phone_numbers)
    }

    /// Buys a number and points its webhooks at us. 21422 means it was taken meanwhile.
    pub async fn buy_number(&self, request: &BuyNumber) -> Result<IncomingNumber, TwilioError> {
        let mut form = vec![
            ("PhoneNumber", request.phone_number.as_str()),
            ("SmsUrl", request.sms_url.as_str()),
            ("VoiceUrl", request.voice_url.as_str()),
            ("StatusCallback", request.status_callback.as_str()),
            ("FriendlyName", request.friendly_name.as_str()),
        ];
        if let Some(sid) = &request.address_sid {
            form.push(("AddressSid", sid));
        }
        if let Some(sid) = &request.bundle_sid {
            form.push(("BundleSid", sid));
        }
        let url = self.account_url(&["IncomingPhoneNumbers.json"]);
        parse_json(self.execute(Method::POST, url, Some(&form)).await?)
    }

    /// Releases a number. Already gone (404 / 20404) counts as done, so a retry is harmless.
    pub async fn release_number(&self, number_sid: &str) -> Result<(), TwilioError> {
        let file = format!("{number_sid}.json");
        let url = self.account_url(&["IncomingPhoneNumbers", &file]);
        match self.execute(Method::DELETE, url, None).await {
            Ok(_) => Ok(()),
            Err(TwilioError::Api { status, code, .. }) if status == 404 || code == 20404 => {
                tracing::debug!(number_sid, "Twilio number already released");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// The number of ours equal to `phone_number`, if we own it: tells whether a purchase whose
    /// answer was lost ([`TwilioError::is_ambiguous`]) went through.
    pub async fn find_incoming_number(
        &self,
        phone_number: &PhoneNumber,
    ) -> Result<Option<IncomingNumber>, TwilioError> {
        let mut url = self.account_url(&["IncomingPhoneNumbers.json"]);
        url.query_pairs_mut()
            .append_pair("PhoneNumber", phone_number.as_str());
        let page: IncomingPage = parse_json(self.execute(Method::GET, url, None).await?)?;
        Ok(page
            .incoming_phone_numbers
            .into_iter()
            .find(|n| n.phone_number == phone_number.as_str()))
    }

    /// `{base}/2010-04-01/Accounts/{AC}/{segments...}`, each segment percent-encoded.
    fn account_url(&self, segments: &[&str]) -> Url {
        let mut url = self.base_url.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty()
                .extend([API_VERSION, "Accounts", &self.credentials.account_sid])
                .extend(segments);
        }
        url
    }

    /// Twilio's `next_page_uri`, resolved against our base URL (which may have a path, as in
    /// tests). Only a path to the same list is followed: anything else (another host, another
    /// resource) would send our credentials where we never meant to.
    fn next_page_url(&self, list_path: &str, next: &str) -> Result<Url, TwilioError> {
        let (path, query) = next.split_once('?').unwrap_or((next, ""));
        let mut url = self.base_url.clone();
        let base_path = url.path().trim_end_matches('/').to_owned();
        url.set_path(&format!("{base_path}{path}"));
        url.set_query(Some(query).filter(|q| !q.is_empty()));
        if !path.starts_with('/') || url.path() != list_path {
            // The query would carry phone numbers: only the path goes in the error.
            return Err(TwilioError::Unexpected(format!(
                "next page {path:?} is not on the list we asked for"
            )));
        }
        Ok(url)
    }

    /// Sends the request and returns the body of a 2xx; anything else becomes a classified error.
    async fn execute(
        &self,
        method: Method,
        url: Url,
        form: Option<&[(&str, &str)]>,
    ) -> Result<Vec<u8>, TwilioError> {
        // The path carries no phone numbers (the query may), so only it is logged.
        let path = url.path().to_owned();
        let started = Instant::now();
        let mut request = self
            .http
            .request(method.clone(), url)
            .basic_auth(&self.credentials.username, Some(&self.credentials.secret));
        if let Some(form) = form {
            request = request.form(form);
        }
        let response = request.send().await.map_err(|e| {
            let error = classify_transport(e);
            tracing::debug!(%method, path, error = %error, "Twilio request failed");
            error
        })?;
        let status = response.status();
        let retry_after = retry_after_header(&response);
        let body = response.bytes().await;
        tracing::debug!(
            %method,
            path,
            status = status.as_u16(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "Twilio request"
        );
        if status.is_success() {
            return body
                .map(|b| b.to_vec())
                // Twilio acted but we lost the answer: as unclear as a timeout.
                .map_err(|e| TwilioError::Ambiguous(format!("HTTP {status}, {}", describe(e))));
        }
        match body {
            Ok(bytes) => Err(classify_status(status, &bytes, retry_after)),
            Err(e) if status.is_server_error() => Err(TwilioError::Ambiguous(format!(
                "HTTP {status}, {}",
                describe(e)
            ))),
            // The status line alone says Twilio refused the request.
            Err(e) => Err(api_error(status, 0, describe(e), retry_after)),
        }
    }
}

/// When Twilio created the message; None when it did not say in a form we read.
fn created_at(message: &SentMessage) -> Option<DateTime<Utc>> {
    let text = message.date_created.as_deref()?;
    DateTime::parse_from_rfc2822(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// A body we cannot read is reported by its size only: a 2xx body holds the message text and the
/// owner's number, and the error ends up in logs and the outbox. It is kept at debug level.
fn parse_json<T: DeserializeOwned>(body: Vec<u8>) -> Result<T, TwilioError> {
    serde_json::from_slice(&body).map_err(|e| {
        tracing::debug!(body = %truncate(&String::from_utf8_lossy(&body)), "unreadable Twilio body");
        // serde's message may quote a value ("invalid type: string \"+44...\"").
        TwilioError::Unexpected(format!(
            "{} (a body of {} bytes)",
            mask_pii(&e.to_string()),
            body.len()
        ))
    })
}

/// Connect (and DNS) failures happen before any byte is sent; everything else may have been
/// received by Twilio.
fn classify_transport(error: reqwest::Error) -> TwilioError {
    if error.is_connect() {
        TwilioError::Unreachable(describe(error))
    } else if error.is_builder() {
        // Never sent, but resending the same request would fail the same way.
        TwilioError::Unexpected(describe(error))
    } else {
        TwilioError::Ambiguous(describe(error))
    }
}

fn classify_status(status: StatusCode, body: &[u8], retry_after: Option<Duration>) -> TwilioError {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(ErrorBody {
            code: Some(code),
            message,
        }) => api_error(status, code, message.unwrap_or_default(), retry_after),
        // A proxy or load balancer answered, not Twilio's API.
        _ if status.is_server_error() => TwilioError::Ambiguous(format!(
            "HTTP {status}: {}",
            mask_pii(&truncate(&String::from_utf8_lossy(body)))
        )),
        _ => api_error(
            status,
            0,
            truncate(&String::from_utf8_lossy(body)),
            retry_after,
        ),
    }
}

fn api_error(
    status: StatusCode,
    code: i64,
    message: String,
    retry_after: Option<Duration>,
) -> TwilioError {
    let rate_limited = status == StatusCode::TOO_MANY_REQUESTS || code == 20429;
    TwilioError::Api {
        status: status.as_u16(),
        code,
        // Twilio's messages name numbers (`The 'To' number +44... is not valid`).
        message: mask_pii(&message),
        retry_after: if rate_limited {
            Some(retry_after.unwrap_or(DEFAULT_RETRY_AFTER))
        } else {
            retry_after
        },
    }
}

/// `Retry-After` in seconds; the HTTP-date form is ignored (Twilio sends seconds). Any value is
/// taken: the outbox caps the wait ([`crate::outbox::MAX_RETRY_WAIT`]).
fn retry_after_header(response: &reqwest::Response) -> Option<Duration> {
    let value = response.headers().get(RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// The error and its causes, without the URL: its query can hold phone numbers.
fn describe(error: reqwest::Error) -> String {
    let error = error.without_url();
    let mut text = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Error texts are cut to [`MAX_ERROR_TEXT`] characters; callers mask what they keep.
fn truncate(text: &str) -> String {
    let text = text.trim();
    match text.char_indices().nth(MAX_ERROR_TEXT) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_follows_retry_safety() {
        let ok = StatusCode::BAD_REQUEST;
        let invalid = classify_status(ok, br#"{"code":21211,"message":"bad To"}"#, None);
        assert_eq!(invalid.code(), Some(21211));
        assert!(!invalid.is_safe_to_retry() && !invalid.is_ambiguous());

        let limited = classify_status(StatusCode::TOO_MANY_REQUESTS, b"slow down", None);
        assert!(limited.is_rate_limited() && limited.is_safe_to_retry());
        assert_eq!(limited.retry_after(), Some(Duration::from_secs(1)));
        assert_eq!(limited.code(), None);

        let proxy = classify_status(StatusCode::BAD_GATEWAY, b"<html>bad gateway</html>", None);
        assert!(matches!(proxy, TwilioError::Ambiguous(_)));
        let twilio_500 = classify_status(
            StatusCode::INTERNAL_SERVER_ERROR,
            br#"{"code":20500,"message":"oops"}"#,
            None,
        );
        assert!(twilio_500.is_ambiguous() && !twilio_500.is_safe_to_retry());
    }

    #[test]
    fn long_error_text_is_cut_on_a_char_boundary() {
        let long = "é".repeat(MAX_ERROR_TEXT + 10);
        let cut = truncate(&long);
        assert_eq!(cut.chars().count(), MAX_ERROR_TEXT + 1);
        assert_eq!(truncate(" short "), "short");
    }

    #[test]
    fn debug_output_hides_the_secret() {
        let credentials = Credentials {
            account_sid: "AC1".into(),
            username: "SK1".into(),
            secret: "hunter2".into(),
        };
        let client = TwilioClient::new(
            "https://api.twilio.com",
            credentials.clone(),
            Duration::from_secs(1),
        );
        assert!(!format!("{credentials:?}").contains("hunter2"));
        assert!(!format!("{client:?}").contains("hunter2"));
    }

    /// A client whose base URL has a path, as in tests behind a proxy.
    fn prefixed_client() -> TwilioClient {
        TwilioClient::new(
            "http://localhost:9/prefix/",
            Credentials {
                account_sid: "AC1".into(),
                username: "AC1".into(),
                secret: "x".into(),
            },
            Duration::from_secs(1),
        )
    }

    #[test]
    fn only_a_next_page_of_the_same_list_on_our_base_is_followed() {
        let client = prefixed_client();
        let list = client.account_url(&["Messages.json"]);
        let next = client
            .next_page_url(
                list.path(),
                "/2010-04-01/Accounts/AC1/Messages.json?To=%2B1&PageSize=50&Page=1&PageToken=PA1",
            )
            .unwrap();
        assert_eq!(
            next.as_str(),
            "http://localhost:9/prefix/2010-04-01/Accounts/AC1/Messages.json?To=%2B1&PageSize=50&Page=1&PageToken=PA1"
        );
        for elsewhere in [
            "https://evil.example/2010-04-01/Accounts/AC1/Messages.json?Page=1",
            "//evil.example/2010-04-01/Accounts/AC1/Messages.json?Page=1",
            "/2010-04-01/Accounts/AC2/Messages.json?Page=1",
            "/2010-04-01/Accounts/AC1/Calls.json?Page=1",
            "2010-04-01/Accounts/AC1/Messages.json?Page=1",
        ] {
            let error = client.next_page_url(list.path(), elsewhere).unwrap_err();
            assert!(matches!(error, TwilioError::Unexpected(_)), "{elsewhere}");
        }
    }

    #[test]
    fn urls_keep_a_base_path_and_encode_segments() {
        let client = prefixed_client();
        let url = client.account_url(&["IncomingPhoneNumbers", "PN/../x.json"]);
        assert_eq!(
            url.as_str(),
            "http://localhost:9/prefix/2010-04-01/Accounts/AC1/IncomingPhoneNumbers/PN%2F..%2Fx.json"
        );
    }
}
