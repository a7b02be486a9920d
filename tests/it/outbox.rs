//! The outbox worker against a mock Twilio: sending, retries, rate limits, opt-outs, giving up,
//! and the reconciliation that keeps an uncertain attempt (a timeout, a 5xx, a worker that died
//! mid-send) from becoming a double text. Every test runs on both back ends.

use crate::support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use onboard::clock::{Clock, ManualClock};
use onboard::domain::{OwnerId, PhoneNumber};
use onboard::outbox::{CallSettings, MAX_RETRY_WAIT, Outbox, OutboxSettings, Sender};
use onboard::replay::fixture_epoch;
use onboard::store::{NewOutbound, OutboundMessage, Owner, PgStore, SqliteStore, Store, Tx};
use onboard::twilio::client::{Credentials, TwilioClient};
use serde_json::json;
use wiremock::matchers::{method, path, query_param, query_param_is_missing};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

const OWNER: &str = "+447700900123";
const FROM: &str = "+447700900000";
const BODY: &str = "Your new business number is +447700900900.";
const MESSAGES: &str = "/2010-04-01/Accounts/AC123/Messages.json";

async fn sqlite() -> SqliteStore {
    let store = SqliteStore::in_memory().await.unwrap();
    store.migrate().await.unwrap();
    store
}

async fn postgres() -> PgStore {
    let store = PgStore::connect(&support::fresh_postgres_database().await, 5)
        .await
        .unwrap();
    store.migrate().await.unwrap();
    store
}

/// Runs each named test body on both back ends: `sqlite::name` and `postgres::name`.
macro_rules! on_both_back_ends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test]
            async fn $name() {
                super::$name(super::sqlite().await).await;
            })*
        }
        mod postgres {
            $(#[tokio::test]
            async fn $name() {
                super::$name(super::postgres().await).await;
            })*
        }
    };
}

on_both_back_ends!(
    dev_mode_logs_instead_of_sending,
    a_message_is_sent_once_with_a_status_callback,
    a_rate_limit_is_retried_after_retry_after,
    a_burst_of_rate_limits_longer_than_any_attempt_budget_only_delays_the_text,
    a_huge_retry_after_is_capped_and_the_worker_lives_on,
    error_21610_fails_the_message_and_opts_the_owner_out,
    an_opted_out_owner_is_never_texted,
    a_refusal_is_not_retried,
    an_ambiguous_failure_that_did_send_is_not_sent_twice,
    an_ambiguous_send_found_only_on_the_second_page_is_not_sent_twice,
    an_ambiguous_failure_that_did_not_send_is_sent_again,
    when_twilio_cannot_say_whether_it_sent_nothing_is_sent,
    a_timeout_on_the_last_attempt_before_the_deadline_is_reconciled_not_failed,
    an_uncertain_text_twilio_never_got_is_given_up_at_the_deadline_without_a_resend,
    retries_stop_at_the_deadline_not_after_a_number_of_attempts,
    an_expired_sending_lease_is_reconciled_before_any_resend,
    an_expired_sending_lease_with_no_trace_at_twilio_is_sent_once,
    a_verification_call_taken_over_from_a_dead_worker_is_not_placed_again,
    a_batch_that_outlives_its_lease_sends_nothing_another_worker_took_over,
    a_worker_shutting_down_puts_its_batch_back,
    an_idle_worker_is_rung_by_a_text_queued_meanwhile,
);

struct World<S: Store> {
    store: S,
    clock: Arc<ManualClock>,
    outbox: Outbox<S>,
    sender: Sender,
}

async fn world<S: Store>(store: S, sender: Sender) -> World<S> {
    world_with(store, sender, OutboxSettings::default()).await
}

/// One owner with one text queued at the fixture epoch.
async fn world_with<S: Store>(store: S, sender: Sender, settings: OutboxSettings) -> World<S> {
    let clock = Arc::new(ManualClock::new(fixture_epoch()));
    let owner_id = OwnerId::new("c_1");
    let mut tx = store.begin().await.unwrap();
    tx.lock_or_create_owner(&phone(OWNER), || {
        Owner::new(owner_id.clone(), phone(OWNER), clock.now())
    })
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let outbox = Outbox::new(store.clone(), sender.clone(), clock.clone(), settings);
    let world = World {
        store,
        clock,
        outbox,
        sender,
    };
    world.queue(BODY).await;
    world
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

fn twilio_at(uri: &str) -> Sender {
    Sender::Twilio {
        client: TwilioClient::new(
            uri,
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

fn twilio(server: &MockServer) -> Sender {
    twilio_at(&server.uri())
}

impl<S: Store> World<S> {
    async fn queue(&self, body: &str) {
        let mut tx = self.store.begin().await.unwrap();
        tx.enqueue_outbound(&NewOutbound {
            owner_id: &OwnerId::new("c_1"),
            to: &phone(OWNER),
            body,
            created_at: self.clock.now(),
        })
        .await
        .unwrap();
        tx.commit().await.unwrap();
    }

    async fn message(&self) -> OutboundMessage {
        self.store.outbound_after(0).await.unwrap().remove(0)
    }

    async fn messages(&self) -> Vec<OutboundMessage> {
        self.store.outbound_after(0).await.unwrap()
    }

    async fn work(&self) -> usize {
        self.outbox.run_once(None).await.unwrap()
    }

    /// Another replica's worker on the same database and clock.
    fn other_worker(&self) -> Outbox<S> {
        Outbox::new(
            self.store.clone(),
            self.sender.clone(),
            self.clock.clone(),
            OutboxSettings::default(),
        )
    }

    async fn owner(&self) -> Owner {
        self.store
            .owner_by_phone(&phone(OWNER))
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

/// Twilio's list of messages, holding one of ours sent a second after the fixture epoch.
fn listed(sid: &str, status: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "messages": [{
            "sid": sid, "status": status, "to": OWNER, "from": FROM, "body": BODY,
            "date_created": "Mon, 05 Jan 2026 09:00:01 +0000", "error_code": null
        }]
    }))
}

fn nothing_listed() -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({ "messages": [] }))
}

fn rate_limited(retry_after: &str) -> ResponseTemplate {
    ResponseTemplate::new(429)
        .insert_header("Retry-After", retry_after)
        .set_body_json(json!({"code": 20429, "message": "Too Many Requests", "status": 429}))
}

/// Twilio answers every send (a POST) with `response`, and must be asked exactly `times` times.
async fn on_send(
    server: &MockServer,
    response: impl Respond + 'static,
    times: impl Into<wiremock::Times>,
) {
    Mock::given(method("POST"))
        .respond_with(response)
        .expect(times)
        .mount(server)
        .await;
}

/// Twilio answers every look-up in its message list with `response`, asked exactly `times` times.
async fn on_list(
    server: &MockServer,
    response: impl Respond + 'static,
    times: impl Into<wiremock::Times>,
) {
    Mock::given(method("GET"))
        .and(path(MESSAGES))
        .respond_with(response)
        .expect(times)
        .mount(server)
        .await;
}

async fn posts(server: &MockServer) -> usize {
    server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.method.as_str() == "POST")
        .count()
}

async fn dev_mode_logs_instead_of_sending<S: Store>(store: S) {
    let w = world(store, Sender::Simulated).await;
    assert_eq!(w.work().await, 1);
    assert_eq!(w.message().await.status.as_str(), "simulated");
    assert_eq!(w.work().await, 0, "a simulated message is done");
}

async fn a_message_is_sent_once_with_a_status_callback<S: Store>(store: S) {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(MESSAGES))
        .respond_with(created("SM1"))
        .expect(1)
        .mount(&server)
        .await;
    let w = world(store, twilio(&server)).await;
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

async fn a_rate_limit_is_retried_after_retry_after<S: Store>(store: S) {
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
    let w = world(store, twilio(&server)).await;
    w.work().await;
    assert_eq!(w.message().await.status.as_str(), "pending");
    w.clock.advance(chrono::Duration::seconds(29));
    assert_eq!(w.work().await, 0, "not before Retry-After");
    w.clock.advance(chrono::Duration::seconds(1));
    assert_eq!(w.work().await, 1);
    assert_eq!(w.message().await.twilio_sid.as_deref(), Some("SM2"));
}

async fn error_21610_fails_the_message_and_opts_the_owner_out<S: Store>(store: S) {
    let server = MockServer::start().await;
    on_send(
        &server,
        ResponseTemplate::new(400).set_body_json(json!({
            "code": 21610, "message": "Attempt to send to unsubscribed recipient", "status": 400
        })),
        1,
    )
    .await;
    let w = world(store, twilio(&server)).await;
    w.work().await;
    assert_eq!(w.message().await.status.as_str(), "failed");
    assert!(w.owner().await.opted_out);
}

async fn an_opted_out_owner_is_never_texted<S: Store>(store: S) {
    let server = MockServer::start().await;
    on_send(&server, created("SM1"), 0).await;
    let w = world(store, twilio(&server)).await;
    let mut owner = w.owner().await;
    owner.opted_out = true;
    let mut tx = w.store.begin().await.unwrap();
    tx.save_owner(&owner).await.unwrap();
    tx.commit().await.unwrap();
    w.work().await;
    assert_eq!(w.message().await.status.as_str(), "suppressed");
}

async fn a_refusal_is_not_retried<S: Store>(store: S) {
    let server = MockServer::start().await;
    on_send(
        &server,
        ResponseTemplate::new(400).set_body_json(json!({
            "code": 21211, "message": "Invalid 'To' Phone Number", "status": 400
        })),
        1,
    )
    .await;
    let w = world(store, twilio(&server)).await;
    w.work().await;
    let message = w.message().await;
    assert_eq!(message.status.as_str(), "failed");
    assert!(message.last_error.unwrap().contains("21211"));
}

/// A 500 may have sent the text: the next attempt asks Twilio first, finds it, and does not resend.
async fn an_ambiguous_failure_that_did_send_is_not_sent_twice<S: Store>(store: S) {
    let server = MockServer::start().await;
    on_send(
        &server,
        ResponseTemplate::new(500).set_body_json(json!({
            "code": 20500, "message": "Internal Server Error", "status": 500
        })),
        1,
    )
    .await;
    on_list(
        &server,
        ResponseTemplate::new(200).set_body_json(json!({
            "messages": [{
                "sid": "SMsent", "status": "delivered", "to": OWNER, "from": FROM, "body": BODY,
                "date_created": "Mon, 05 Jan 2026 09:00:01 +0000", "error_code": null
            }]
        })),
        1,
    )
    .await;
    let w = world(store, twilio(&server)).await;
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
async fn an_ambiguous_send_found_only_on_the_second_page_is_not_sent_twice<S: Store>(store: S) {
    let server = MockServer::start().await;
    on_send(
        &server,
        ResponseTemplate::new(500).set_body_json(json!({
            "code": 20500, "message": "Internal Server Error", "status": 500
        })),
        1,
    )
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
    let w = world(store, twilio(&server)).await;
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
async fn an_ambiguous_failure_that_did_not_send_is_sent_again<S: Store>(store: S) {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(created("SMlate").set_delay(Duration::from_secs(2)))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    on_list(
        &server,
        ResponseTemplate::new(200).set_body_json(json!({ "messages": [] })),
        1,
    )
    .await;
    Mock::given(method("POST"))
        .respond_with(created("SM2"))
        .mount(&server)
        .await;
    let w = world(store, twilio(&server)).await;
    w.work().await;
    assert!(w.message().await.needs_reconcile);
    w.clock.advance(chrono::Duration::minutes(1));
    w.work().await;
    let message = w.message().await;
    assert_eq!(message.twilio_sid.as_deref(), Some("SM2"));
    assert_eq!(message.status.as_str(), "queued");
}

async fn when_twilio_cannot_say_whether_it_sent_nothing_is_sent<S: Store>(store: S) {
    let server = MockServer::start().await;
    on_send(&server, ResponseTemplate::new(503), 1).await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&server)
        .await;
    let w = world(store, twilio(&server)).await;
    w.work().await;
    w.clock.advance(chrono::Duration::minutes(1));
    w.work().await;
    let message = w.message().await;
    assert_eq!(message.status.as_str(), "pending");
    assert!(message.needs_reconcile, "still unknown, still not resent");
}

/// Twilio cannot be reached for a day: the text is retried with backoff for as long as the
/// deadline allows, however many attempts that takes, and then given up, with the reason kept.
async fn retries_stop_at_the_deadline_not_after_a_number_of_attempts<S: Store>(store: S) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let settings = OutboxSettings {
        give_up_after: Duration::from_secs(3600),
        ..OutboxSettings::default()
    };
    let w = world_with(store, twilio_at(&closed), settings).await;
    for _ in 0..5 {
        w.work().await;
        w.clock.advance(chrono::Duration::minutes(10));
    }
    let message = w.message().await;
    assert_eq!(
        message.status.as_str(),
        "pending",
        "5 attempts (the old budget), still within the hour"
    );
    assert_eq!(message.attempts, 5);
    w.clock.advance(chrono::Duration::hours(1));
    assert_eq!(w.work().await, 1);
    let message = w.message().await;
    assert_eq!(message.status.as_str(), "failed");
    let reason = message.last_error.unwrap();
    assert!(reason.contains("not sent within 3600 s"), "{reason}");
    assert_eq!(w.work().await, 0);
}

/// Eight seconds of 429s: the text waits each one out and then goes, with one attempt spent.
async fn a_burst_of_rate_limits_longer_than_any_attempt_budget_only_delays_the_text<S: Store>(
    store: S,
) {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(rate_limited("1"))
        .up_to_n_times(8)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(created("SM9"))
        .mount(&server)
        .await;
    let w = world(store, twilio(&server)).await;
    for _ in 0..12 {
        w.work().await;
        w.clock.advance(chrono::Duration::seconds(1));
    }
    let message = w.message().await;
    assert_eq!(message.status.as_str(), "queued");
    assert_eq!(message.twilio_sid.as_deref(), Some("SM9"));
    assert_eq!(
        message.attempts, 1,
        "waits for a rate limit spend no attempt"
    );
    assert_eq!(posts(&server).await, 9);
}

/// `Retry-After: 100000000000000` once overflowed the date arithmetic and killed the worker.
async fn a_huge_retry_after_is_capped_and_the_worker_lives_on<S: Store>(store: S) {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(rate_limited("100000000000000"))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(created("SM2"))
        .mount(&server)
        .await;
    let w = world(store, twilio(&server)).await;
    assert_eq!(w.work().await, 1);
    assert_eq!(w.message().await.status.as_str(), "pending");
    w.clock.advance(
        chrono::Duration::from_std(MAX_RETRY_WAIT).unwrap() - chrono::Duration::seconds(1),
    );
    assert_eq!(w.work().await, 0, "it does wait");
    w.clock.advance(chrono::Duration::seconds(1));
    assert_eq!(w.work().await, 1, "but no longer than the cap");
    assert_eq!(w.message().await.twilio_sid.as_deref(), Some("SM2"));
}

fn ten_minutes_to_live() -> OutboxSettings {
    OutboxSettings {
        give_up_after: Duration::from_secs(600),
        ..OutboxSettings::default()
    }
}

/// The last attempt before the deadline times out, but the owner did get the text: asked once the
/// deadline has passed, Twilio shows it, and the message is adopted, never called failed.
async fn a_timeout_on_the_last_attempt_before_the_deadline_is_reconciled_not_failed<S: Store>(
    store: S,
) {
    let server = MockServer::start().await;
    on_send(
        &server,
        created("SMlate").set_delay(Duration::from_secs(2)),
        1,
    )
    .await;
    on_list(&server, listed("SMlate", "delivered"), 1).await;
    let w = world_with(store, twilio(&server), ten_minutes_to_live()).await;
    w.work().await;
    assert!(w.message().await.needs_reconcile);
    w.clock.advance(chrono::Duration::minutes(11));
    w.work().await;
    let message = w.message().await;
    assert_eq!(message.status.as_str(), "delivered");
    assert_eq!(message.twilio_sid.as_deref(), Some("SMlate"));
}

/// The same timeout, but Twilio never got the text: past the deadline it is given up, and not
/// sent again.
async fn an_uncertain_text_twilio_never_got_is_given_up_at_the_deadline_without_a_resend<
    S: Store,
>(
    store: S,
) {
    let server = MockServer::start().await;
    on_send(
        &server,
        created("SMlate").set_delay(Duration::from_secs(2)),
        1,
    )
    .await;
    on_list(&server, nothing_listed(), 1).await;
    let w = world_with(store, twilio(&server), ten_minutes_to_live()).await;
    w.work().await;
    w.clock.advance(chrono::Duration::minutes(11));
    w.work().await;
    let message = w.message().await;
    assert_eq!(message.status.as_str(), "failed");
    assert!(message.last_error.unwrap().contains("gave up"));
    assert_eq!(posts(&server).await, 1);
}

/// A replica claims the text and dies mid-send. When its lease runs out, the next worker asks
/// Twilio first, finds the text went out, and does not send it again.
async fn an_expired_sending_lease_is_reconciled_before_any_resend<S: Store>(store: S) {
    let server = MockServer::start().await;
    on_send(&server, created("SMtwice"), 0).await;
    on_list(&server, listed("SMfirst", "sent"), 1).await;
    let w = world(store, twilio(&server)).await;
    a_replica_claims_and_dies(&w).await;
    w.clock.advance(chrono::Duration::seconds(30));
    assert_eq!(w.work().await, 0, "not while the lease lasts");
    w.clock.advance(chrono::Duration::seconds(31));
    assert_eq!(w.work().await, 1);
    let message = w.message().await;
    assert_eq!(message.twilio_sid.as_deref(), Some("SMfirst"));
    assert_eq!(message.status.as_str(), "sent");
    assert_eq!(posts(&server).await, 0);
}

/// The dead replica had not sent it yet: Twilio has no trace, so it is sent, once.
async fn an_expired_sending_lease_with_no_trace_at_twilio_is_sent_once<S: Store>(store: S) {
    let server = MockServer::start().await;
    on_send(&server, created("SM1"), 1).await;
    on_list(&server, nothing_listed(), 1).await;
    let w = world(store, twilio(&server)).await;
    a_replica_claims_and_dies(&w).await;
    w.clock.advance(chrono::Duration::minutes(2));
    w.work().await;
    assert_eq!(w.message().await.twilio_sid.as_deref(), Some("SM1"));
    assert_eq!(w.work().await, 0);
}

/// A call cannot be looked up the way a text can, and a second one would ring the owner twice:
/// a call whose worker died mid-call is given up (the owner can ask for another).
async fn a_verification_call_taken_over_from_a_dead_worker_is_not_placed_again<S: Store>(store: S) {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/2010-04-01/Accounts/AC123/Calls.json"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({
            "sid": "CAtwice", "status": "queued"
        })))
        .expect(0)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(MESSAGES))
        .respond_with(listed("SMfirst", "sent"))
        .mount(&server)
        .await;
    let w = world(store, twilio(&server)).await;
    let mut tx = w.store.begin().await.unwrap();
    tx.enqueue_verify_call(&NewOutbound {
        owner_id: &OwnerId::new("c_1"),
        to: &phone(OWNER),
        body: "<Response><Say>Forwarding works.</Say></Response>",
        created_at: w.clock.now(),
    })
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let now = w.clock.now();
    let mut tx = w.store.begin().await.unwrap();
    let claimed = tx
        .claim_outbound(now, now + chrono::Duration::minutes(1), 10)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(claimed.len(), 2);
    w.clock.advance(chrono::Duration::minutes(2));
    assert_eq!(w.work().await, 2);
    let messages = w.messages().await;
    assert_eq!(
        messages[0].twilio_sid.as_deref(),
        Some("SMfirst"),
        "the text is adopted"
    );
    assert_eq!(messages[1].status.as_str(), "failed");
    assert!(
        messages[1]
            .last_error
            .as_deref()
            .unwrap()
            .contains("not placed again")
    );
}

/// Claims everything due under a one-minute lease, as a worker does, and never comes back.
async fn a_replica_claims_and_dies<S: Store>(w: &World<S>) {
    let now = w.clock.now();
    let mut tx = w.store.begin().await.unwrap();
    let claimed = tx
        .claim_outbound(now, now + chrono::Duration::minutes(1), 10)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(claimed.len(), 1);
}

/// A Twilio whose every send takes 25 s of the test clock (and a moment of real time), each
/// answered with a new sid.
struct SlowTwilio {
    clock: Arc<ManualClock>,
    sent: AtomicUsize,
}

impl Respond for SlowTwilio {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        self.clock.advance(chrono::Duration::seconds(25));
        let n = self.sent.fetch_add(1, Ordering::SeqCst);
        created(&format!("SMslow{n}")).set_delay(Duration::from_millis(300))
    }
}

/// A worker claims four texts under one 60 s lease, and each send takes 25 s. Another replica
/// takes over whatever the first has let run past its lease; the first must not then send those
/// too. Every text goes out exactly once.
async fn a_batch_that_outlives_its_lease_sends_nothing_another_worker_took_over<S: Store>(
    store: S,
) {
    let server = MockServer::start().await;
    let w = world(store, twilio(&server)).await;
    Mock::given(method("POST"))
        .respond_with(SlowTwilio {
            clock: w.clock.clone(),
            sent: AtomicUsize::new(0),
        })
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(MESSAGES))
        .respond_with(nothing_listed())
        .mount(&server)
        .await;
    w.queue("Second").await;
    w.queue("Third").await;
    w.queue("Fourth").await;
    let first_done = AtomicBool::new(false);
    let first = async {
        w.work().await;
        first_done.store(true, Ordering::SeqCst);
    };
    let other = w.other_worker();
    let second = async {
        // Steps in while the first worker is on its third send (past its lease), or once it
        // stopped early.
        while posts(&server).await < 3 && !first_done.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        other.run_once(None).await.unwrap();
    };
    tokio::join!(first, second);
    w.work().await;

    let requests = server.received_requests().await.unwrap();
    for body in ["Body=Your", "Body=Second", "Body=Third", "Body=Fourth"] {
        let sends = requests
            .iter()
            .filter(|r| r.method.as_str() == "POST")
            .filter(|r| String::from_utf8_lossy(&r.body).contains(body))
            .count();
        assert_eq!(sends, 1, "{body} sent {sends} times");
    }
    for message in w.messages().await {
        assert_eq!(message.status.as_str(), "queued", "{}", message.body);
    }
}

/// On shutdown the worker sends nothing more: what it had claimed goes straight back to the outbox.
async fn a_worker_shutting_down_puts_its_batch_back<S: Store>(store: S) {
    let server = MockServer::start().await;
    // Sent once: by the next worker, not the one shutting down.
    on_send(&server, created("SM1"), 1).await;
    let w = world(store, twilio(&server)).await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    stop.send(true).unwrap();
    assert_eq!(w.outbox.run_once(Some(&stopped)).await.unwrap(), 1);
    let message = w.message().await;
    assert_eq!(message.status.as_str(), "pending");
    assert!(server.received_requests().await.unwrap().is_empty());
    assert_eq!(w.work().await, 1, "the next worker picks it up at once");
}

/// An idle worker is rung when a transaction that queued a text commits: the text goes out at
/// once, not at the worker's next look, an hour away here.
async fn an_idle_worker_is_rung_by_a_text_queued_meanwhile<S: Store>(store: S) {
    let server = MockServer::start().await;
    for sid in ["SM1", "SM2"] {
        Mock::given(method("POST"))
            .respond_with(created(sid))
            .up_to_n_times(1)
            .expect(1)
            .mount(&server)
            .await;
    }
    let hourly = OutboxSettings {
        poll: Duration::from_secs(3600),
        ..OutboxSettings::default()
    };
    let w = world_with(store, twilio(&server), hourly).await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let meanwhile = async {
        // The first text is found at the worker's first look; then it idles.
        sends_reach(&server, 1).await;
        w.queue("And a second text.").await;
        sends_reach(&server, 2).await;
        stop.send(true).unwrap();
    };
    tokio::time::timeout(Duration::from_secs(30), async {
        tokio::join!(w.outbox.run(stopped), meanwhile)
    })
    .await
    .expect("the second text waited for the worker's next look");
    let statuses: Vec<_> = w
        .messages()
        .await
        .iter()
        .map(|m| m.status.as_str())
        .collect();
    assert_eq!(statuses, ["queued", "queued"], "both accepted by Twilio");
}

/// Waits until Twilio has been asked to send `n` messages.
async fn sends_reach(server: &MockServer, n: usize) {
    loop {
        let sends = server
            .received_requests()
            .await
            .unwrap()
            .iter()
            .filter(|r| r.method == wiremock::http::Method::POST)
            .count();
        if sends >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
