//! The Twilio REST client against a wiremock server: request shapes, and how each failure is
//! classified for retries (no idempotency key, so "maybe sent" must never look "safe to retry").

use std::time::Duration;

use chrono::{DateTime, Utc};
use onboard::domain::PhoneNumber;
use onboard::twilio::client::{BuyNumber, Credentials, NumberSearch, TwilioClient, TwilioError};
use serde_json::json;
use wiremock::matchers::{basic_auth, header, method, path, query_param, query_param_is_missing};
use wiremock::{Match, Mock, MockServer, Request, ResponseTemplate};

const ACCOUNT: &str = "AC0123456789abcdef0123456789abcdef";
const KEY: &str = "SK0123456789abcdef0123456789abcdef";
const SECRET: &str = "s3cret-token";
const TO: &str = "+14155550123";
const FROM: &str = "+14155550999";

fn credentials() -> Credentials {
    Credentials {
        account_sid: ACCOUNT.to_owned(),
        username: KEY.to_owned(),
        secret: SECRET.to_owned(),
    }
}

fn client_for(base: &str, timeout: Duration) -> TwilioClient {
    TwilioClient::new(base, credentials(), timeout)
}

fn client(server: &MockServer) -> TwilioClient {
    client_for(&server.uri(), Duration::from_secs(5))
}

fn phone(raw: &str) -> PhoneNumber {
    PhoneNumber::parse(raw).unwrap()
}

fn account_path(rest: &str) -> String {
    format!("/2010-04-01/Accounts/{ACCOUNT}/{rest}")
}

/// Matches when the form body holds exactly these fields (order-insensitive, repeats counted).
struct FormIs(Vec<(String, String)>);

fn form_is(fields: &[(&str, &str)]) -> FormIs {
    let mut fields: Vec<_> = fields
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    fields.sort();
    FormIs(fields)
}

impl Match for FormIs {
    fn matches(&self, request: &Request) -> bool {
        let content_type = request
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if content_type != "application/x-www-form-urlencoded" {
            return false;
        }
        let Ok(mut got) = serde_urlencoded::from_bytes::<Vec<(String, String)>>(&request.body)
        else {
            return false;
        };
        got.sort();
        got == self.0
    }
}

fn message_json(sid: &str, body: &str) -> serde_json::Value {
    json!({
        "account_sid": ACCOUNT,
        "api_version": "2010-04-01",
        "body": body,
        "date_created": "Wed, 01 May 2024 12:00:00 +0000",
        "date_sent": null,
        "direction": "outbound-api",
        "error_code": null,
        "error_message": null,
        "from": FROM,
        "num_segments": "1",
        "price": null,
        "sid": sid,
        "status": "queued",
        "to": TO,
        "uri": format!("/2010-04-01/Accounts/{ACCOUNT}/Messages/{sid}.json"),
    })
}

/// A list entry created at `date_created` (RFC 2822, or anything else to test unparsable dates).
fn message_at(sid: &str, body: &str, date_created: &str) -> serde_json::Value {
    let mut message = message_json(sid, body);
    message["date_created"] = json!(date_created);
    message
}

fn utc(rfc3339: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(rfc3339).unwrap().to_utc()
}

/// `next_page_uri` as Twilio writes it: a path on the API host, with the filters and a token.
fn next_page_uri(token: &str) -> String {
    format!(
        "/2010-04-01/Accounts/{ACCOUNT}/Messages.json?To=%2B14155550123&From=%2B14155550999&PageSize=50&Page=1&PageToken={token}"
    )
}

fn page(messages: Vec<serde_json::Value>, next: Option<String>) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "messages": messages,
        "next_page_uri": next,
        "page_size": 50,
    }))
}

fn twilio_error(status: u16, code: i64, message: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_json(json!({
        "code": code,
        "message": message,
        "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
        "status": status,
    }))
}

async fn send(client: &TwilioClient) -> Result<onboard::twilio::client::SentMessage, TwilioError> {
    client
        .send_sms(&phone(TO), &phone(FROM), "Hello", None)
        .await
}

#[tokio::test]
async fn send_sms_posts_the_form_with_basic_auth_and_parses_the_message() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(account_path("Messages.json")))
        .and(basic_auth(KEY, SECRET))
        .and(header(
            "user-agent",
            concat!("onboard/", env!("CARGO_PKG_VERSION")),
        ))
        .and(form_is(&[
            ("To", TO),
            ("From", FROM),
            ("Body", "Hi & welcome + 100% ✓"),
            (
                "StatusCallback",
                "https://example.com/twilio/status?x=1&y=2",
            ),
        ]))
        .respond_with(
            ResponseTemplate::new(201)
                .set_body_json(message_json("SM123", "Hi & welcome + 100% ✓")),
        )
        .expect(1)
        .mount(&server)
        .await;

    let sent = client(&server)
        .send_sms(
            &phone(TO),
            &phone(FROM),
            "Hi & welcome + 100% ✓",
            Some("https://example.com/twilio/status?x=1&y=2"),
        )
        .await
        .unwrap();

    assert_eq!(sent.sid, "SM123");
    assert_eq!(sent.status, "queued");
    assert_eq!(sent.to, TO);
    assert_eq!(sent.from.as_deref(), Some(FROM));
    assert_eq!(sent.body.as_deref(), Some("Hi & welcome + 100% ✓"));
    assert_eq!(
        sent.date_created.as_deref(),
        Some("Wed, 01 May 2024 12:00:00 +0000")
    );
    assert_eq!(sent.error_code, None);
}

#[tokio::test]
async fn send_sms_without_a_callback_sends_no_status_callback_field() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(account_path("Messages.json")))
        .and(form_is(&[("To", TO), ("From", FROM), ("Body", "Hello")]))
        .respond_with(ResponseTemplate::new(201).set_body_json(message_json("SM1", "Hello")))
        .expect(1)
        .mount(&server)
        .await;

    assert_eq!(send(&client(&server)).await.unwrap().sid, "SM1");
}

#[tokio::test]
async fn a_twilio_error_body_becomes_an_api_error_with_its_code() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(twilio_error(
            400,
            21211,
            "The 'To' number is not a valid phone number.",
        ))
        .mount(&server)
        .await;

    let error = send(&client(&server)).await.unwrap_err();
    match &error {
        TwilioError::Api {
            status,
            code,
            message,
            retry_after,
        } => {
            assert_eq!(*status, 400);
            assert_eq!(*code, 21211);
            assert!(message.contains("not a valid phone number"));
            assert_eq!(*retry_after, None);
        }
        other => panic!("expected Api, got {other:?}"),
    }
    assert_eq!(error.code(), Some(21211));
    assert!(!error.is_safe_to_retry());
    assert!(!error.is_ambiguous());
    assert!(!error.is_rate_limited());
    assert!(!error.is_opted_out());
}

#[tokio::test]
async fn code_21610_means_the_recipient_opted_out() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(twilio_error(
            400,
            21610,
            "Attempt to send to unsubscribed recipient",
        ))
        .mount(&server)
        .await;

    let error = send(&client(&server)).await.unwrap_err();
    assert!(error.is_opted_out());
    assert!(!error.is_safe_to_retry());
    assert!(!error.is_ambiguous());
}

#[tokio::test]
async fn a_4xx_without_json_is_an_api_error_with_code_0_and_truncated_text() {
    let server = MockServer::start().await;
    let page = format!("<html>{}</html>", "x".repeat(2_000));
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(403).set_body_string(page))
        .mount(&server)
        .await;

    let error = send(&client(&server)).await.unwrap_err();
    match &error {
        TwilioError::Api {
            status,
            code,
            message,
            ..
        } => {
            assert_eq!((*status, *code), (403, 0));
            assert!(message.starts_with("<html>xxx"));
            assert!(message.chars().count() <= 501, "{}", message.len());
        }
        other => panic!("expected Api, got {other:?}"),
    }
    assert_eq!(error.code(), None);
    assert!(!error.is_safe_to_retry() && !error.is_ambiguous());
}

#[tokio::test]
async fn a_429_is_rate_limited_and_safe_to_retry_after_the_header() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            twilio_error(429, 20429, "Too Many Requests").insert_header("Retry-After", "3"),
        )
        .mount(&server)
        .await;

    let error = send(&client(&server)).await.unwrap_err();
    assert!(error.is_rate_limited());
    assert!(error.is_safe_to_retry());
    assert!(!error.is_ambiguous());
    assert_eq!(error.code(), Some(20429));
    assert!(matches!(
        error,
        TwilioError::Api { status: 429, retry_after: Some(d), .. } if d == Duration::from_secs(3)
    ));
}

#[tokio::test]
async fn a_429_without_retry_after_waits_one_second() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(twilio_error(429, 20429, "Too Many Requests"))
        .mount(&server)
        .await;

    let error = send(&client(&server)).await.unwrap_err();
    assert!(error.is_rate_limited());
    assert_eq!(error.retry_after(), Some(Duration::from_secs(1)));
}

#[tokio::test]
async fn a_500_with_a_twilio_body_is_ambiguous_and_not_safe_to_retry() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(twilio_error(500, 20500, "Internal Server Error"))
        .mount(&server)
        .await;

    let error = send(&client(&server)).await.unwrap_err();
    assert!(matches!(
        error,
        TwilioError::Api {
            status: 500,
            code: 20500,
            ..
        }
    ));
    assert!(error.is_ambiguous());
    assert!(!error.is_safe_to_retry());
}

#[tokio::test]
async fn a_5xx_without_a_twilio_body_is_ambiguous() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(502).set_body_string("Bad Gateway"))
        .mount(&server)
        .await;

    let error = send(&client(&server)).await.unwrap_err();
    assert!(matches!(&error, TwilioError::Ambiguous(m) if m.contains("502")));
    assert!(error.is_ambiguous());
    assert!(!error.is_safe_to_retry());
}

#[tokio::test]
async fn a_response_slower_than_the_timeout_is_ambiguous_and_does_not_leak_numbers() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({ "messages": [] }))
                .set_delay(Duration::from_secs(2)),
        )
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(201)
                .set_body_json(message_json("SM1", "Hello"))
                .set_delay(Duration::from_secs(2)),
        )
        .mount(&server)
        .await;
    let client = client_for(&server.uri(), Duration::from_millis(200));

    let error = send(&client).await.unwrap_err();
    assert!(matches!(error, TwilioError::Ambiguous(_)), "{error:?}");
    assert!(error.is_ambiguous());
    assert!(!error.is_safe_to_retry());

    // The list query carries both numbers; reqwest would put the URL in its error text.
    let error = client
        .list_messages_since(&phone(TO), &phone(FROM), utc("2024-05-01T00:00:00Z"))
        .await
        .unwrap_err();
    assert!(matches!(error, TwilioError::Ambiguous(_)), "{error:?}");
    let text = error.to_string();
    assert!(!text.contains("4155550"), "{text}");
    assert!(!text.contains(SECRET), "{text}");
}

#[tokio::test]
async fn a_closed_port_is_unreachable_and_safe_to_retry() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let client = client_for(&format!("http://127.0.0.1:{port}"), Duration::from_secs(2));

    let error = send(&client).await.unwrap_err();
    assert!(matches!(error, TwilioError::Unreachable(_)), "{error:?}");
    assert!(error.is_safe_to_retry());
    assert!(!error.is_ambiguous());
    assert!(!error.to_string().contains("4155550"));
}

#[tokio::test]
async fn a_2xx_with_an_unparseable_body_is_unexpected() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(201).set_body_string("not json"))
        .mount(&server)
        .await;

    let error = send(&client(&server)).await.unwrap_err();
    assert!(matches!(error, TwilioError::Unexpected(_)), "{error:?}");
    assert!(!error.is_safe_to_retry());
    assert!(!error.is_ambiguous());
}

#[tokio::test]
async fn list_messages_since_filters_by_numbers_and_parses_the_page() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(account_path("Messages.json")))
        .and(basic_auth(KEY, SECRET))
        .and(query_param("To", TO))
        .and(query_param("From", FROM))
        .and(query_param("PageSize", "50"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "messages": [message_json("SM2", "second"), message_json("SM1", "first")],
            "end": 1,
            "first_page_uri": "/2010-04-01/Accounts/AC/Messages.json?PageSize=50&Page=0",
            "next_page_uri": null,
            "page": 0,
            "page_size": 50,
            "previous_page_uri": null,
            "start": 0,
            "uri": "/2010-04-01/Accounts/AC/Messages.json?PageSize=50&Page=0",
        })))
        .expect(1)
        .mount(&server)
        .await;

    let messages = client(&server)
        .list_messages_since(&phone(TO), &phone(FROM), utc("2024-05-01T11:00:00Z"))
        .await
        .unwrap();

    let sids: Vec<_> = messages.iter().map(|m| m.sid.as_str()).collect();
    assert_eq!(sids, ["SM2", "SM1"]);
    assert_eq!(messages[1].body.as_deref(), Some("first"));

    // No date filter: a message still queued has no send date, and it is the one we look for.
    let requests = server.received_requests().await.unwrap();
    let query = requests[0].url.query().unwrap_or_default();
    assert!(!query.contains("DateSent"), "{query}");
    assert!(query.contains("To=%2B14155550123"), "{query}");
}

#[tokio::test]
async fn list_messages_since_follows_next_page_uri_to_a_match_on_page_two() {
    let server = MockServer::start().await;
    let newer: Vec<_> = (0..50)
        .map(|i| {
            message_at(
                &format!("SMn{i}"),
                "other",
                "Wed, 01 May 2024 12:30:00 +0000",
            )
        })
        .collect();
    Mock::given(method("GET"))
        .and(path(account_path("Messages.json")))
        .and(query_param_is_missing("PageToken"))
        .respond_with(page(newer, Some(next_page_uri("PA2"))))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(account_path("Messages.json")))
        .and(basic_auth(KEY, SECRET))
        .and(query_param("To", TO))
        .and(query_param("From", FROM))
        .and(query_param("PageToken", "PA2"))
        .respond_with(page(
            vec![
                message_at("SMmatch", "Hello", "Wed, 01 May 2024 12:00:00 +0000"),
                message_at("SMold", "Hello", "Wed, 01 May 2024 11:00:00 +0000"),
            ],
            Some(next_page_uri("PA3")),
        ))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(query_param("PageToken", "PA3"))
        .respond_with(page(vec![], None))
        .expect(1)
        .mount(&server)
        .await;

    let messages = client(&server)
        .list_messages_since(&phone(TO), &phone(FROM), utc("2024-05-01T11:59:00Z"))
        .await
        .unwrap();

    assert_eq!(messages.len(), 51, "every page, without the older message");
    assert_eq!(messages[0].sid, "SMn0");
    assert_eq!(messages[50].sid, "SMmatch");
}

/// Newest first, but not strictly by creation: only a page wholly older than the cutoff ends the search.
#[tokio::test]
async fn list_messages_since_stops_at_the_first_page_wholly_older_than_the_cutoff() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(account_path("Messages.json")))
        .and(query_param_is_missing("PageToken"))
        .respond_with(page(
            vec![
                message_at("SM3", "new", "Wed, 01 May 2024 12:00:00 +0000"),
                message_at("SM2", "old", "Wed, 01 May 2024 09:00:00 +0000"),
                // No date we can read: it might be ours, so it is kept.
                message_at("SM1", "undated", "sometime"),
            ],
            Some(next_page_uri("PA2")),
        ))
        .expect(1)
        .mount(&server)
        .await;
    // One older message is no proof the rest are older (a late-sent one may sort lower); a page
    // of nothing but older ones is.
    Mock::given(method("GET"))
        .and(query_param("PageToken", "PA2"))
        .respond_with(page(
            vec![
                message_at("SM0", "older", "Wed, 01 May 2024 08:00:00 +0000"),
                message_at("SMz", "oldest", "Wed, 01 May 2024 07:00:00 +0000"),
            ],
            Some(next_page_uri("PA3")),
        ))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(query_param("PageToken", "PA3"))
        .respond_with(page(vec![], None))
        .expect(0)
        .mount(&server)
        .await;

    let messages = client(&server)
        .list_messages_since(&phone(TO), &phone(FROM), utc("2024-05-01T11:00:00Z"))
        .await
        .unwrap();

    let sids: Vec<_> = messages.iter().map(|m| m.sid.as_str()).collect();
    assert_eq!(sids, ["SM3", "SM1"]);
}

/// A page of messages with no readable date says nothing about what is older: keep paging.
#[tokio::test]
async fn list_messages_since_pages_past_messages_without_a_readable_date() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(query_param_is_missing("PageToken"))
        .respond_with(page(
            vec![
                message_at("SM3", "a", "not a date"),
                json!({ "sid": "SM2", "status": "queued", "to": TO, "body": "b" }),
            ],
            Some(next_page_uri("PA2")),
        ))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(query_param("PageToken", "PA2"))
        .respond_with(page(
            vec![message_at(
                "SM1",
                "Hello",
                "Wed, 01 May 2024 12:00:00 +0000",
            )],
            None,
        ))
        .expect(1)
        .mount(&server)
        .await;

    let messages = client(&server)
        .list_messages_since(&phone(TO), &phone(FROM), utc("2024-05-01T11:00:00Z"))
        .await
        .unwrap();

    let sids: Vec<_> = messages.iter().map(|m| m.sid.as_str()).collect();
    assert_eq!(sids, ["SM3", "SM2", "SM1"]);
}

/// A list that never ends must not read as "not sent": that would send the text twice.
#[tokio::test]
async fn list_messages_since_gives_up_with_an_error_after_the_page_cap() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(account_path("Messages.json")))
        .respond_with(page(
            vec![message_at(
                "SMn",
                "other",
                "Wed, 01 May 2024 12:00:00 +0000",
            )],
            Some(next_page_uri("PAnext")),
        ))
        .expect(20)
        .mount(&server)
        .await;

    let error = client(&server)
        .list_messages_since(&phone(TO), &phone(FROM), utc("2024-05-01T11:00:00Z"))
        .await
        .unwrap_err();

    assert!(matches!(error, TwilioError::Unexpected(_)), "{error:?}");
    assert!(!error.to_string().contains("4155550"), "{error}");
}

/// Tests (and proxies) put the API under a path: the next page is requested there too, never
/// on the host `next_page_uri` might name.
#[tokio::test]
async fn list_messages_since_follows_next_page_uri_on_the_configured_base() {
    let server = MockServer::start().await;
    let prefixed = |rest: &str| format!("/proxy{}", account_path(rest));
    Mock::given(method("GET"))
        .and(path(prefixed("Messages.json")))
        .and(query_param_is_missing("PageToken"))
        .respond_with(page(vec![], Some(next_page_uri("PA2"))))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(prefixed("Messages.json")))
        .and(basic_auth(KEY, SECRET))
        .and(query_param("PageToken", "PA2"))
        .and(query_param("To", TO))
        .respond_with(page(
            vec![message_at(
                "SM1",
                "Hello",
                "Wed, 01 May 2024 12:00:00 +0000",
            )],
            Some(format!("https://api.twilio.com{}", next_page_uri("PA3"))),
        ))
        .expect(1)
        .mount(&server)
        .await;
    let client = client_for(&format!("{}/proxy/", server.uri()), Duration::from_secs(5));

    let error = client
        .list_messages_since(&phone(TO), &phone(FROM), utc("2024-05-01T11:00:00Z"))
        .await
        .unwrap_err();

    // Page 2 came from our base; its absolute next page is refused, not fetched.
    assert!(matches!(error, TwilioError::Unexpected(_)), "{error:?}");
    assert_eq!(server.received_requests().await.unwrap().len(), 2);
}

#[tokio::test]
async fn place_call_sends_twiml_timeout_and_every_status_event() {
    let server = MockServer::start().await;
    let twiml = r#"<?xml version="1.0" encoding="UTF-8"?><Response><Say voice="alice">Hi &amp; bye</Say><Hangup/></Response>"#;
    Mock::given(method("POST"))
        .and(path(account_path("Calls.json")))
        .and(basic_auth(KEY, SECRET))
        .and(form_is(&[
            ("To", TO),
            ("From", FROM),
            ("Twiml", twiml),
            ("Timeout", "25"),
            ("StatusCallback", "https://example.com/twilio/call-status"),
            ("StatusCallbackEvent", "initiated"),
            ("StatusCallbackEvent", "ringing"),
            ("StatusCallbackEvent", "answered"),
            ("StatusCallbackEvent", "completed"),
        ]))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({
            "sid": "CA123",
            "status": "queued",
            "to": TO,
            "from": FROM,
            "direction": "outbound-api",
        })))
        .expect(1)
        .mount(&server)
        .await;

    let call = client(&server)
        .place_call(
            &phone(TO),
            &phone(FROM),
            twiml,
            25,
            Some("https://example.com/twilio/call-status"),
        )
        .await
        .unwrap();

    assert_eq!(call.sid, "CA123");
    assert_eq!(call.status, "queued");
}

#[tokio::test]
async fn search_local_numbers_sends_the_filters_and_parses_the_numbers() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(account_path("AvailablePhoneNumbers/US/Local.json")))
        .and(basic_auth(KEY, SECRET))
        .and(query_param("AreaCode", "415"))
        .and(query_param("SmsEnabled", "true"))
        .and(query_param("VoiceEnabled", "true"))
        .and(query_param_is_missing("InRegion"))
        .and(query_param_is_missing("NearNumber"))
        .and(query_param_is_missing("Distance"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "available_phone_numbers": [{
                "phone_number": "+14155550100",
                "friendly_name": "(415) 555-0100",
                "locality": "San Francisco",
                "region": "CA",
                "iso_country": "US",
                "capabilities": { "SMS": true, "voice": true, "MMS": true },
            }],
            "uri": "/2010-04-01/Accounts/AC/AvailablePhoneNumbers/US/Local.json?AreaCode=415",
        })))
        .expect(1)
        .mount(&server)
        .await;

    let query = NumberSearch {
        area_code: Some("415".to_owned()),
        ..NumberSearch::default()
    };
    let numbers = client(&server)
        .search_local_numbers("US", &query)
        .await
        .unwrap();

    assert_eq!(numbers.len(), 1);
    assert_eq!(numbers[0].phone_number, "+14155550100");
    assert_eq!(numbers[0].locality.as_deref(), Some("San Francisco"));
    assert_eq!(numbers[0].region.as_deref(), Some("CA"));
    assert_eq!(numbers[0].iso_country.as_deref(), Some("US"));
}

#[tokio::test]
async fn search_local_numbers_with_nothing_available_is_an_empty_list() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(account_path("AvailablePhoneNumbers/GB/Local.json")))
        .and(query_param("InRegion", "London"))
        .and(query_param("NearNumber", "+447700900123"))
        .and(query_param("Distance", "25"))
        .and(query_param_is_missing("AreaCode"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({ "available_phone_numbers": [] })),
        )
        .expect(1)
        .mount(&server)
        .await;

    let query = NumberSearch {
        area_code: None,
        in_region: Some("London".to_owned()),
        near_number: Some("+447700900123".to_owned()),
        distance_miles: Some(25),
    };
    let numbers = client(&server)
        .search_local_numbers("GB", &query)
        .await
        .unwrap();
    assert!(numbers.is_empty());
}

#[tokio::test]
async fn buy_number_posts_the_webhooks_and_optional_sids() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(account_path("IncomingPhoneNumbers.json")))
        .and(basic_auth(KEY, SECRET))
        .and(form_is(&[
            ("PhoneNumber", "+447700900555"),
            ("SmsUrl", "https://example.com/twilio/sms"),
            ("VoiceUrl", "https://example.com/twilio/voice"),
            ("StatusCallback", "https://example.com/twilio/status"),
            ("FriendlyName", "onboard client c_42"),
            ("AddressSid", "AD123"),
            ("BundleSid", "BU456"),
        ]))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({
            "sid": "PN789",
            "phone_number": "+447700900555",
            "friendly_name": "onboard client c_42",
        })))
        .expect(1)
        .mount(&server)
        .await;

    let bought = client(&server)
        .buy_number(&BuyNumber {
            phone_number: phone("+447700900555"),
            sms_url: "https://example.com/twilio/sms".to_owned(),
            voice_url: "https://example.com/twilio/voice".to_owned(),
            status_callback: "https://example.com/twilio/status".to_owned(),
            friendly_name: "onboard client c_42".to_owned(),
            address_sid: Some("AD123".to_owned()),
            bundle_sid: Some("BU456".to_owned()),
        })
        .await
        .unwrap();

    assert_eq!(bought.sid, "PN789");
    assert_eq!(bought.phone_number, "+447700900555");
}

#[tokio::test]
async fn buy_number_taken_meanwhile_is_a_21422_api_error() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(account_path("IncomingPhoneNumbers.json")))
        .and(form_is(&[
            ("PhoneNumber", "+14155550100"),
            ("SmsUrl", "https://example.com/sms"),
            ("VoiceUrl", "https://example.com/voice"),
            ("StatusCallback", "https://example.com/status"),
            ("FriendlyName", "x"),
        ]))
        .respond_with(twilio_error(400, 21422, "PhoneNumber is not available"))
        .expect(1)
        .mount(&server)
        .await;

    let error = client(&server)
        .buy_number(&BuyNumber {
            phone_number: phone("+14155550100"),
            sms_url: "https://example.com/sms".to_owned(),
            voice_url: "https://example.com/voice".to_owned(),
            status_callback: "https://example.com/status".to_owned(),
            friendly_name: "x".to_owned(),
            address_sid: None,
            bundle_sid: None,
        })
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(21422));
}

#[tokio::test]
async fn release_number_accepts_204_and_already_gone() {
    let server = MockServer::start().await;
    Mock::given(method("DELETE"))
        .and(path(account_path("IncomingPhoneNumbers/PN1.json")))
        .and(basic_auth(KEY, SECRET))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("DELETE"))
        .and(path(account_path("IncomingPhoneNumbers/PN2.json")))
        .respond_with(twilio_error(
            404,
            20404,
            "The requested resource was not found",
        ))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("DELETE"))
        .and(path(account_path("IncomingPhoneNumbers/PN3.json")))
        .respond_with(twilio_error(401, 20003, "Authenticate"))
        .expect(1)
        .mount(&server)
        .await;
    let client = client(&server);

    client.release_number("PN1").await.unwrap();
    client.release_number("PN2").await.unwrap();
    let error = client.release_number("PN3").await.unwrap_err();
    assert_eq!(error.code(), Some(20003));
}
