//! The outbox worker against a mock Twilio: sending, retries, rate limits, opt-outs, and the
//! reconciliation that keeps an ambiguous failure from becoming a double text.

use std::sync::Arc;
use std::time::Duration;

use onboard::clock::{Clock, ManualClock};
use onboard::domain::{ClientId, PhoneNumber};
use onboard::outbox::{CallSettings, Outbox, OutboxSettings, Sender};
use onboard::replay::fixture_epoch;
use onboard::store::{Client, NewOutbound, OutboundMessage, SqliteStore, Store, Tx};
use onboard::twilio::client::{Credentials, TwilioClient};
use serde_json::json;
use wiremock::matchers::{method, path, query_param, query_param_is_missing};
use wiremock::{Mock, MockServer, ResponseTemplate};

const OWNER: &str = "+447700900123";
const FROM: &str = "+447700900000";
const BODY: &str = "Your new business number is +447700900900.";
const MESSAGES: &str = "/2010-04-01/Accounts/AC123/Messages.json";

struct World {
    store: SqliteStore,
    clock: Arc<ManualClock>,
    outbox: Outbox<SqliteStore>,
}

async fn world(sender: Sender) -> World {
    let store = SqliteStore::in_memory().await.unwrap();
    store.migrate().await.unwrap();
    let clock = Arc::new(ManualClock::new(fixture_epoch()));
    let client_id = ClientId::new("c_1");
    let mut tx = store.begin().await.unwrap();
    tx.lock_or_create_client(&phone(OWNER), || {
        Client::new(client_id.clone(), phone(OWNER), clock.now())
    })
    .await
    .unwrap();
    tx.enqueue_outbound(&NewOutbound {
        client_id: &client_id,
        to: &phone(OWNER),
        body: BODY,
        created_at: clock.now(),
    })
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let settings = OutboxSettings {
        max_attempts: 3,
        ..OutboxSettings::default()
    };
    let outbox = Outbox::new(store.clone(), sender, clock.clone(), settings);
    World {
        store,
        clock,
        outbox,
    }
}

fn phone(raw: &str) -> PhoneNumber {
    raw.parse().unwrap()
}

fn calls() -> CallSettings {
    CallSettings {
        from: phone(FROM),
        status_callback: "https://onboard.example.com/webhooks/twilio/call-status".into(),
        ring_seconds: 30,
    }
}

fn twilio(server: &MockServer) -> Sender {
    Sender::Twilio {
        client: TwilioClient::new(
            &server.uri(),
            Credentials {
                account_sid: "AC123".into(),
                username: "AC123".into(),
                secret: "secret".into(),
            },
            Duration::from_millis(500),
        ),
        from: phone(FROM),
        status_callback: "https://onboard.example.com/webhooks/twilio/message-status".into(),
        calls: calls(),
    }
}

impl World {
    async fn message(&self) -> OutboundMessage {
        self.store.outbound_after(0).await.unwrap().remove(0)
    }

    async fn work(&self) -> usize {
        self.outbox.run_once(None).await.unwrap()
    }

    async fn client(&self) -> Client {
        self.store
            .client_by_phone(&phone(OWNER))
            .await
            .unwrap()
            .unwrap()
    }
}

fn created(sid: &str) -> ResponseTemplate {
    ResponseTemplate::new(201).set_body_json(json!({
        "sid": sid, "status": "queued", "to": OWNER, "from": FROM, "body": BODY,
        "date_created": "Mon, 05 Jan 2026 09:00:00 +0000", "error_code": null,
    }))
}

#[tokio::test]
async fn dev_mode_logs_instead_of_sending() {
    let w = world(Sender::Simulated).await;
    assert_eq!(w.work().await, 1);
    assert_eq!(w.message().await.status.as_str(), "simulated");
    assert_eq!(w.work().await, 0, "a simulated message is done");
}

#[tokio::test]
async fn a_message_is_sent_once_with_a_status_callback() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(MESSAGES))
        .respond_with(created("SM1"))
        .expect(1)
        .mount(&server)
        .await;
    let w = world(twilio(&server)).await;
    w.work().await;
    let message = w.message().await;
    assert_eq!(message.status.as_str(), "queued");
    assert_eq!(message.twilio_sid.as_deref(), Some("SM1"));
    assert_eq!(w.work().await, 0);
    let request = &server.received_requests().await.unwrap()[0];
    let form: Vec<(String, String)> = serde_urlencoded::from_bytes(&request.body).unwrap();
    assert!(form.contains(&("To".into(), OWNER.into())));
    assert!(form.contains(&("From".into(), FROM.into())));
    assert!(form.contains(&("Body".into(), BODY.into())));
    assert!(
        form.iter()
            .any(|(k, v)| k == "StatusCallback" && v.ends_with("/message-status"))
    );
}

#[tokio::test]
async fn a_rate_limit_is_retried_after_retry_after() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("Retry-After", "30")
                .set_body_json(
                    json!({"code": 20429, "message": "Too Many Requests", "status": 429}),
                ),
        )
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(created("SM2"))
        .mount(&server)
        .await;
    let w = world(twilio(&server)).await;
    w.work().await;
    assert_eq!(w.message().await.status.as_str(), "pending");
    w.clock.advance(chrono::Duration::seconds(29));
    assert_eq!(w.work().await, 0, "not before Retry-After");
    w.clock.advance(chrono::Duration::seconds(1));
    assert_eq!(w.work().await, 1);
    assert_eq!(w.message().await.twilio_sid.as_deref(), Some("SM2"));
}

#[tokio::test]
async fn error_21610_fails_the_message_and_opts_the_owner_out() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({
            "code": 21610, "message": "Attempt to send to unsubscribed recipient", "status": 400
        })))
        .expect(1)
        .mount(&server)
        .await;
    let w = world(twilio(&server)).await;
    w.work().await;
    assert_eq!(w.message().await.status.as_str(), "failed");
    assert!(w.client().await.opted_out);
}

#[tokio::test]
async fn an_opted_out_owner_is_never_texted() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(created("SM1"))
        .expect(0)
        .mount(&server)
        .await;
    let w = world(twilio(&server)).await;
    let mut client = w.client().await;
    client.opted_out = true;
    let mut tx = w.store.begin().await.unwrap();
    tx.save_client(&client).await.unwrap();
    tx.commit().await.unwrap();
    w.work().await;
    assert_eq!(w.message().await.status.as_str(), "suppressed");
}

#[tokio::test]
async fn a_refusal_is_not_retried() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({
            "code": 21211, "message": "Invalid 'To' Phone Number", "status": 400
        })))
        .expect(1)
        .mount(&server)
        .await;
    let w = world(twilio(&server)).await;
    w.work().await;
    let message = w.message().await;
    assert_eq!(message.status.as_str(), "failed");
    assert!(message.last_error.unwrap().contains("21211"));
}

/// A 500 may have sent the text: the next attempt asks Twilio first, finds it, and does not resend.
#[tokio::test]
async fn an_ambiguous_failure_that_did_send_is_not_sent_twice() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(500).set_body_json(json!({
            "code": 20500, "message": "Internal Server Error", "status": 500
        })))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(MESSAGES))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "messages": [{
                "sid": "SMsent", "status": "delivered", "to": OWNER, "from": FROM, "body": BODY,
                "date_created": "Mon, 05 Jan 2026 09:00:01 +0000", "error_code": null
            }]
        })))
        .expect(1)
        .mount(&server)
        .await;
    let w = world(twilio(&server)).await;
    w.work().await;
    let message = w.message().await;
    assert_eq!(message.status.as_str(), "pending");
    assert!(message.needs_reconcile);

    w.clock.advance(chrono::Duration::minutes(1));
    w.work().await;
    let message = w.message().await;
    assert_eq!(message.twilio_sid.as_deref(), Some("SMsent"));
    assert_eq!(message.status.as_str(), "delivered");
    assert!(!message.needs_reconcile);
}

/// The earlier send is behind a full page of newer texts: reconciliation pages back to it rather
/// than concluding from the first page that it never went out.
#[tokio::test]
async fn an_ambiguous_send_found_only_on_the_second_page_is_not_sent_twice() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(500).set_body_json(json!({
            "code": 20500, "message": "Internal Server Error", "status": 500
        })))
        .expect(1)
        .mount(&server)
        .await;
    let newer: Vec<_> = (0..50)
        .map(|i| {
            json!({
                "sid": format!("SMother{i}"), "status": "delivered", "to": OWNER, "from": FROM,
                "body": "Something else", "date_created": "Mon, 05 Jan 2026 09:00:30 +0000",
            })
        })
        .collect();
    Mock::given(method("GET"))
        .and(path(MESSAGES))
        .and(query_param_is_missing("PageToken"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "messages": newer,
            "next_page_uri": format!("{MESSAGES}?To=%2B447700900123&From=%2B447700900000&PageSize=50&Page=1&PageToken=PA2"),
        })))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(MESSAGES))
        .and(query_param("PageToken", "PA2"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "messages": [{
                "sid": "SMsent", "status": "delivered", "to": OWNER, "from": FROM, "body": BODY,
                "date_created": "Mon, 05 Jan 2026 09:00:01 +0000", "error_code": null
            }],
            "next_page_uri": null,
        })))
        .expect(1)
        .mount(&server)
        .await;
    let w = world(twilio(&server)).await;
    w.work().await;
    assert!(w.message().await.needs_reconcile);

    w.clock.advance(chrono::Duration::minutes(1));
    w.work().await;
    let message = w.message().await;
    assert_eq!(message.twilio_sid.as_deref(), Some("SMsent"));
    assert_eq!(message.status.as_str(), "delivered");
    assert!(!message.needs_reconcile);
}

/// A timeout that did not send: Twilio has no such message, so it is sent again, once.
#[tokio::test]
async fn an_ambiguous_failure_that_did_not_send_is_sent_again() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(created("SMlate").set_delay(Duration::from_secs(2)))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(MESSAGES))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "messages": [] })))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(created("SM2"))
        .mount(&server)
        .await;
    let w = world(twilio(&server)).await;
    w.work().await;
    assert!(w.message().await.needs_reconcile);
    w.clock.advance(chrono::Duration::minutes(1));
    w.work().await;
    let message = w.message().await;
    assert_eq!(message.twilio_sid.as_deref(), Some("SM2"));
    assert_eq!(message.status.as_str(), "queued");
}

#[tokio::test]
async fn when_twilio_cannot_say_whether_it_sent_nothing_is_sent() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&server)
        .await;
    let w = world(twilio(&server)).await;
    w.work().await;
    w.clock.advance(chrono::Duration::minutes(1));
    w.work().await;
    let message = w.message().await;
    assert_eq!(message.status.as_str(), "pending");
    assert!(message.needs_reconcile, "still unknown, still not resent");
}

#[tokio::test]
async fn retries_stop_after_max_attempts() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let sender = Sender::Twilio {
        client: TwilioClient::new(
            &closed,
            Credentials {
                account_sid: "AC123".into(),
                username: "AC123".into(),
                secret: "secret".into(),
            },
            Duration::from_millis(500),
        ),
        from: phone(FROM),
        status_callback: "https://onboard.example.com/webhooks/twilio/message-status".into(),
        calls: calls(),
    };
    let w = world(sender).await;
    for _ in 0..3 {
        w.work().await;
        w.clock.advance(chrono::Duration::hours(1));
    }
    let message = w.message().await;
    assert_eq!(message.status.as_str(), "failed");
    assert!(
        message
            .last_error
            .unwrap()
            .contains("gave up after 3 attempts")
    );
    assert_eq!(w.work().await, 0);
}

/// On shutdown the worker sends nothing more: what it had claimed goes straight back to the outbox.
#[tokio::test]
async fn a_worker_shutting_down_puts_its_batch_back() {
    let server = MockServer::start().await;
    // Sent once: by the next worker, not the one shutting down.
    Mock::given(method("POST"))
        .respond_with(created("SM1"))
        .expect(1)
        .mount(&server)
        .await;
    let w = world(twilio(&server)).await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    stop.send(true).unwrap();
    assert_eq!(w.outbox.run_once(Some(&stopped)).await.unwrap(), 1);
    let message = w.message().await;
    assert_eq!(message.status.as_str(), "pending");
    assert!(server.received_requests().await.unwrap().is_empty());
    assert_eq!(w.work().await, 1, "the next worker picks it up at once");
}
