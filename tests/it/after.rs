//! After onboarding over HTTP and against a real SMTP server: the recording-status webhook
//! (signed, idempotent, strict about its fields), missed-call alerts by text and by email, the
//! plain alert's timer claimed once, and usage in the admin API. Storage runs on both back ends.

use crate::support;

use std::sync::Arc;

use chrono::Duration;
use onboard::clock::Clock;
use onboard::conversation::{Event, StateName};
use onboard::domain::PhoneNumber;
use onboard::email::Mailer;
use onboard::engine::{Engine, InboundCall, InboundSms};
use onboard::outbox::{Outbox, OutboxSettings, Sender};
use onboard::store::after::AfterTx as _;
use onboard::store::ledger::{GroupBy, LedgerTx as _, NewCost};
use onboard::store::{
    OutboundKind, OutboundMessage, OutboundStatus, Owner, Store, TestTx as _, Tx as _,
};
use reqwest::StatusCode;
use support::app::{ADMIN_TOKEN, BackEnd, TestApp, spawn_postgres, spawn_sqlite, test_config};
use support::smtp::SmtpSink;

const OWNER: &str = "+447700900301";
const NUMBER: &str = "+447700900970";
const CALLER: &str = "+447700900555";

/// Takes an owner through onboarding to COMPLETE with `notify` as their S4 answer.
pub(crate) async fn live_owner<S: Store>(engine: &Engine<S>, notify: &str) -> Owner {
    let owner: PhoneNumber = OWNER.parse().unwrap();
    engine
        .add_numbers(&[NUMBER.parse().unwrap()])
        .await
        .unwrap();
    let text = |n: usize, body: &str| InboundSms {
        message_sid: format!("SMlive{n}"),
        from: OWNER.into(),
        to: "+447700900000".into(),
        body: body.into(),
    };
    for (n, body) in [
        "Hi",
        "Plumber in Leeds",
        "Smith Plumbing",
        "Jo Smith",
        notify,
    ]
    .into_iter()
    .enumerate()
    {
        engine.handle_sms(&text(n, body)).await.unwrap();
    }
    let id = engine.owner_by_phone(&owner).await.unwrap().unwrap().id;
    engine.apply(&id, Event::PaymentConfirmed).await.unwrap();
    for (n, body) in ["yes", "2", "done"].into_iter().enumerate() {
        engine.handle_sms(&text(10 + n, body)).await.unwrap();
    }
    engine
        .handle_call(&call("CAverify", "+447700900999"))
        .await
        .unwrap();
    let owner = engine.owner_by_phone(&owner).await.unwrap().unwrap();
    assert_eq!(owner.state, StateName::Complete);
    owner
}

pub(crate) fn call(sid: &str, from: &str) -> InboundCall {
    InboundCall {
        call_sid: sid.into(),
        from: from.into(),
        to: NUMBER.into(),
        forwarded_from: None,
        direction: "inbound".into(),
        status: "ringing".into(),
    }
}

async fn outbox_since<S: Store>(app: &TestApp<S>, bookmark: i64) -> Vec<OutboundMessage> {
    app.engine.store().outbound_after(bookmark).await.unwrap()
}

async fn recording<S: Store>(
    app: &TestApp<S>,
    recording_sid: &str,
    call_sid: &str,
) -> reqwest::Response {
    app.post_twilio(
        "/webhooks/twilio/recording-status",
        &[
            ("AccountSid", "AC00000000000000000000000000000000"),
            ("CallSid", call_sid),
            ("RecordingSid", recording_sid),
            (
                "RecordingUrl",
                "https://api.twilio.com/2010-04-01/Accounts/AC00000000000000000000000000000000/Recordings/RE0001",
            ),
            ("RecordingStatus", "completed"),
            ("RecordingDuration", "42"),
            ("RecordingChannels", "1"),
            ("RecordingSource", "RecordVerb"),
        ],
    )
    .await
}

/// A signed recording callback attaches the voicemail and queues exactly one alert, from the
/// owner's own number; a retry changes nothing and answers the same.
async fn a_voicemail_is_attached_and_alerted_once<S: Store>(app: TestApp<S>) {
    live_owner(&app.engine, "text").await;
    let answer = app
        .engine
        .handle_call(&call("CAcustomer1", CALLER))
        .await
        .unwrap();
    assert!(answer.contains("<Record maxLength=\"120\""), "{answer}");
    assert!(
        answer.contains(
            "recordingStatusCallback=\"https://onboard.example.com/webhooks/twilio/recording-status\""
        ),
        "{answer}"
    );
    let bookmark = app.engine.store().latest_outbound_id().await.unwrap();

    let response = recording(&app, "RE0001", "CAcustomer1").await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let queued = outbox_since(&app, bookmark).await;
    assert_eq!(queued.len(), 1, "{queued:?}");
    let alert = &queued[0];
    assert_eq!(alert.kind, OutboundKind::Sms);
    assert_eq!(alert.to.as_str(), OWNER);
    assert_eq!(alert.from.as_ref().map(|f| f.as_str()), Some(NUMBER));
    assert_eq!(alert.topic.as_deref(), Some("missed_call_alert"));
    assert_eq!(
        alert.body,
        "Missed call to Smith Plumbing from +447700900555 at 09:00 on Mon 5 Jan. Voicemail (42s): \
         https://api.twilio.com/2010-04-01/Accounts/AC00000000000000000000000000000000/Recordings/RE0001.mp3"
    );

    let retry = recording(&app, "RE0001", "CAcustomer1").await;
    assert_eq!(retry.status(), StatusCode::NO_CONTENT);
    assert_eq!(outbox_since(&app, bookmark).await.len(), 1);

    // The 150 s timer finds nothing left to do.
    app.clock.advance(Duration::seconds(151));
    assert_eq!(app.engine.send_due_alerts().await.unwrap(), 0);
    assert_eq!(outbox_since(&app, bookmark).await.len(), 1);
}

#[tokio::test]
async fn sqlite_a_voicemail_is_attached_and_alerted_once() {
    a_voicemail_is_attached_and_alerted_once(spawn_sqlite(test_config(&[])).await).await;
}

#[tokio::test]
async fn postgres_a_voicemail_is_attached_and_alerted_once() {
    a_voicemail_is_attached_and_alerted_once(spawn_postgres(test_config(&[])).await).await;
}

#[tokio::test]
async fn an_unsigned_or_forged_recording_callback_is_refused() {
    let app = spawn_sqlite(test_config(&[])).await;
    let url = format!("{}/webhooks/twilio/recording-status", app.address);
    let form = [
        ("CallSid", "CA1"),
        ("RecordingSid", "RE1"),
        ("RecordingStatus", "absent"),
    ];
    let unsigned = app.http.post(&url).form(&form).send().await.unwrap();
    assert_eq!(unsigned.status(), StatusCode::BAD_REQUEST);
    let forged = app
        .http
        .post(&url)
        .header("X-Twilio-Signature", "bm90IGEgc2lnbmF0dXJl")
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_bad_recording_field_is_a_400_naming_it() {
    let app = spawn_sqlite(test_config(&[])).await;
    let good = [
        ("CallSid", "CA1"),
        ("RecordingSid", "RE1"),
        ("RecordingStatus", "completed"),
        ("RecordingUrl", "https://api.twilio.com/Recordings/RE1"),
        ("RecordingDuration", "12"),
    ];
    let cases: [(&str, Option<&str>); 8] = [
        ("CallSid", None),
        ("RecordingSid", None),
        ("RecordingStatus", None),
        ("RecordingSid", Some("RE 1; DROP")),
        ("RecordingStatus", Some("exploded")),
        ("RecordingDuration", Some("-3")),
        ("RecordingUrl", Some("javascript:alert(1)")),
        ("RecordingUrl", Some("https://evil.example/<script>")),
    ];
    for (field, value) in cases {
        let params: Vec<(&str, &str)> = good
            .iter()
            .filter(|(k, _)| *k != field)
            .copied()
            .chain(value.map(|v| (field, v)))
            .collect();
        let response = app
            .post_twilio("/webhooks/twilio/recording-status", &params)
            .await;
        assert_eq!(
            response.status(),
            StatusCode::BAD_REQUEST,
            "{field}={value:?}"
        );
        let text = response.text().await.unwrap();
        assert!(text.contains(field), "{field}={value:?}: {text}");
    }
}

/// An owner who chose email gets the alert from a real SMTP server: headers, both parts, the
/// recipient, and the credentials of `SMTP_URL`.
async fn an_email_alert_reaches_the_smtp_server<S: Store>(app: TestApp<S>, sink: SmtpSink) {
    live_owner(&app.engine, "jo.smith@example.com").await;
    app.engine
        .handle_call(&call("CAcustomer1", CALLER))
        .await
        .unwrap();
    let response = recording(&app, "RE0001", "CAcustomer1").await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);

    let clock: Arc<dyn Clock> = app.clock.clone();
    let mailer = Mailer::from_config(&app.config).unwrap();
    let outbox = Outbox::new(
        app.engine.store().clone(),
        Sender::Simulated,
        clock,
        OutboxSettings::default(),
    )
    .with_mailer(mailer);
    outbox.run_once(None).await.unwrap();

    let messages = sink.messages();
    assert_eq!(messages.len(), 1, "{messages:?}");
    let mail = &messages[0];
    assert_eq!(mail.auth, Some(("alerts".into(), "s3cret".into())));
    assert_eq!(mail.mail_from, "alerts@onboard.example");
    assert_eq!(mail.rcpt_to, vec!["jo.smith@example.com".to_owned()]);
    assert_eq!(mail.header("To").as_deref(), Some("jo.smith@example.com"));
    assert_eq!(
        mail.header("From").as_deref(),
        Some("Onboard <alerts@onboard.example>")
    );
    assert_eq!(
        mail.header("Subject").as_deref(),
        Some("Missed call from +447700900555")
    );
    assert!(
        mail.header("Message-ID")
            .is_some_and(|id| id.starts_with("<outbound-"))
    );
    assert!(
        mail.header("Content-Type")
            .is_some_and(|t| t.starts_with("multipart/alternative")),
        "{}",
        mail.data
    );
    let plain = mail.part("text/plain").expect("a plain-text part");
    assert!(
        plain.contains("Missed call to Smith Plumbing from +447700900555 at 09:00 on Mon 5 Jan. Voicemail (42s): https://api.twilio.com/"),
        "{plain}"
    );
    let html = mail.part("text/html").expect("an HTML part");
    assert!(html.contains("from +447700900555 at 09:00"), "{html}");
    assert!(
        html.contains("<a href=\"https://api.twilio.com/2010-04-01/Accounts/AC00000000000000000000000000000000/Recordings/RE0001.mp3\">"),
        "{html}"
    );

    let sent = outbox_since(&app, 0).await;
    let email: Vec<_> = sent
        .iter()
        .filter(|m| m.kind == OutboundKind::Email)
        .collect();
    assert_eq!(email.len(), 1);
    assert_eq!(email[0].status, OutboundStatus::Sent);
    // Sent once: a second pass of the worker has nothing to send.
    outbox.run_once(None).await.unwrap();
    assert_eq!(sink.messages().len(), 1);
    // On the cost ledger once, as it went out.
    assert_eq!(ledger_quantity(&app.engine, "email").await, 1);

    // Counted per channel and result (counters are process-wide: at least this one).
    let metrics = app
        .http
        .get(format!("{}/metrics", app.address))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let sent = metrics
        .lines()
        .find(|l| l.starts_with(r#"onboard_alerts_total{channel="email",result="sent"}"#))
        .unwrap_or_else(|| panic!("no email alert counted in:\n{metrics}"));
    let count: f64 = sent.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(count >= 1.0, "{sent}");
}

/// How many of a kind the cost ledger holds.
async fn ledger_quantity<S: Store>(engine: &Engine<S>, kind: &str) -> i64 {
    engine
        .cost_report(
            chrono::DateTime::<chrono::Utc>::UNIX_EPOCH,
            engine.now() + Duration::days(400),
            GroupBy::Kind,
        )
        .await
        .unwrap()
        .into_iter()
        .find(|g| g.key.as_deref() == Some(kind))
        .map_or(0, |g| g.quantity)
}

fn smtp_config(sink: &SmtpSink) -> onboard::config::Config {
    test_config(&[("SMTP_URL", &sink.url("alerts", "s3cret"))])
}

#[tokio::test]
async fn sqlite_an_email_alert_reaches_the_smtp_server() {
    let sink = SmtpSink::start().await;
    let app = spawn_sqlite(smtp_config(&sink)).await;
    an_email_alert_reaches_the_smtp_server(app, sink).await;
}

#[tokio::test]
async fn postgres_an_email_alert_reaches_the_smtp_server() {
    let sink = SmtpSink::start().await;
    let app = spawn_postgres(smtp_config(&sink)).await;
    an_email_alert_reaches_the_smtp_server(app, sink).await;
}

/// Two replicas sweeping at once: the due alert is claimed by one; the other skips it.
#[tokio::test]
async fn postgres_a_due_alert_is_claimed_by_one_replica_only() {
    let app = spawn_postgres(test_config(&[])).await;
    live_owner(&app.engine, "text").await;
    app.engine
        .handle_call(&call("CAcustomer1", CALLER))
        .await
        .unwrap();
    let later = app.clock.now() + Duration::seconds(151);
    let store = app.engine.store();
    let mut first = store.begin().await.unwrap();
    let claimed = first.claim_due_alert(later).await.unwrap();
    assert_eq!(claimed.map(|c| c.call_sid).as_deref(), Some("CAcustomer1"));
    let mut second = store.begin().await.unwrap();
    assert_eq!(second.claim_due_alert(later).await.unwrap(), None);
    second.rollback().await.unwrap();
    first.rollback().await.unwrap();
    // Not yet due: nobody claims it.
    let mut early = store.begin().await.unwrap();
    assert_eq!(early.claim_due_alert(app.clock.now()).await.unwrap(), None);
    early.rollback().await.unwrap();
}

/// The database keeps "once": a usage level once per billing month, a text-back once per caller
/// per day, an opt-out per business number.
async fn once_is_kept_by_the_database<S: Store>(app: TestApp<S>) {
    let owner = live_owner(&app.engine, "text").await;
    let now = app.clock.now();
    let caller: PhoneNumber = CALLER.parse().unwrap();
    let number: PhoneNumber = NUMBER.parse().unwrap();
    let store = app.engine.store();
    let mut tx = store.begin().await.unwrap();
    assert!(tx.note_usage_alert(&owner.id, now, 80, now).await.unwrap());
    assert!(!tx.note_usage_alert(&owner.id, now, 80, now).await.unwrap());
    assert!(tx.note_usage_alert(&owner.id, now, 100, now).await.unwrap());
    let next_month = now + Duration::days(31);
    assert!(
        tx.note_usage_alert(&owner.id, next_month, 80, now)
            .await
            .unwrap()
    );
    assert!(
        tx.note_text_back(&owner.id, &caller, "2026-01-05", now)
            .await
            .unwrap()
    );
    assert!(
        !tx.note_text_back(&owner.id, &caller, "2026-01-05", now)
            .await
            .unwrap()
    );
    assert!(
        tx.note_text_back(&owner.id, &caller, "2026-01-06", now)
            .await
            .unwrap()
    );
    assert!(!tx.customer_opted_out(&number, &caller).await.unwrap());
    tx.set_customer_opted_out(&number, &caller, true, now)
        .await
        .unwrap();
    tx.set_customer_opted_out(&number, &caller, true, now)
        .await
        .unwrap();
    assert!(tx.customer_opted_out(&number, &caller).await.unwrap());
    assert!(
        !tx.customer_opted_out(&"+447700900999".parse().unwrap(), &caller)
            .await
            .unwrap()
    );
    tx.set_customer_opted_out(&number, &caller, false, now)
        .await
        .unwrap();
    assert!(!tx.customer_opted_out(&number, &caller).await.unwrap());
    assert!(!tx.alerts_paused(&owner.id).await.unwrap());
    tx.set_alerts_paused(&owner.id, true, now).await.unwrap();
    tx.set_alerts_paused(&owner.id, true, now).await.unwrap();
    assert!(tx.alerts_paused(&owner.id).await.unwrap());
    tx.set_alerts_paused(&owner.id, false, now).await.unwrap();
    assert!(!tx.alerts_paused(&owner.id).await.unwrap());
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn sqlite_once_is_kept_by_the_database() {
    once_is_kept_by_the_database(spawn_sqlite(test_config(&[])).await).await;
}

#[tokio::test]
async fn postgres_once_is_kept_by_the_database() {
    once_is_kept_by_the_database(spawn_postgres(test_config(&[])).await).await;
}

async fn the_admin_api_shows_an_owner_s_usage<B: BackEnd>() {
    let app = B::spawn(test_config(&[("PLAN_CALLS_INCLUDED", "25")])).await;
    let owner = live_owner(&app.engine, "text").await;
    app.engine
        .handle_call(&call("CAcustomer1", CALLER))
        .await
        .unwrap();
    app.engine
        .handle_call(&call("CAcustomer2", "+447700900666"))
        .await
        .unwrap();
    for path in ["owners", "clients"] {
        let body: serde_json::Value = app
            .http
            .get(format!("{}/admin/api/{path}/{}", app.address, owner.id))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(body["usage"]["calls_this_month"], 2, "{body}");
        assert_eq!(body["usage"]["included"], 25, "{body}");
        assert_eq!(
            body["usage"]["period_start"], "2026-01-05T09:00:00Z",
            "{body}"
        );
    }
}

async fn a_customer_s_text_to_the_business_number_is_relayed_not_onboarded<B: BackEnd>() {
    let app = B::spawn(test_config(&[])).await;
    live_owner(&app.engine, "text").await;
    let bookmark = app.engine.store().latest_outbound_id().await.unwrap();
    let response = app
        .post_twilio(
            "/webhooks/twilio/sms",
            &[
                ("MessageSid", "SMcustomer1"),
                ("From", CALLER),
                ("To", NUMBER),
                ("Body", "Can you come on Tuesday?"),
            ],
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.text().await.unwrap(),
        r#"<?xml version="1.0" encoding="UTF-8"?><Response/>"#
    );
    let queued = outbox_since(&app, bookmark).await;
    assert_eq!(queued.len(), 1);
    assert_eq!(
        queued[0].body,
        "Text from +447700900555 to Smith Plumbing: Can you come on Tuesday?"
    );
    assert_eq!(queued[0].from.as_ref().map(|f| f.as_str()), Some(NUMBER));
    assert!(
        app.engine
            .owner_by_phone(&CALLER.parse().unwrap())
            .await
            .unwrap()
            .is_none(),
        "a customer is never an owner"
    );
}

/// The email rules of the outbox against a real server: a 4xx (or a server that cannot be
/// reached) is tried again later; a 5xx is given up, never retried.
async fn an_smtp_refusal_is_retried_when_temporary_and_given_up_when_permanent<B: BackEnd>() {
    for (reply, status, retried) in [
        ("451 4.3.0 try again later", OutboundStatus::Pending, true),
        ("550 5.7.1 sender refused", OutboundStatus::Failed, false),
    ] {
        let sink = SmtpSink::refusing(reply).await;
        let app = B::spawn(smtp_config(&sink)).await;
        live_owner(&app.engine, "jo.smith@example.com").await;
        app.engine
            .handle_call(&call("CAcustomer1", CALLER))
            .await
            .unwrap();
        app.clock.advance(Duration::seconds(151));
        assert_eq!(app.engine.send_due_alerts().await.unwrap(), 1);
        let clock: Arc<dyn Clock> = app.clock.clone();
        let outbox = Outbox::new(
            app.engine.store().clone(),
            Sender::Simulated,
            clock,
            OutboxSettings::default(),
        )
        .with_mailer(Mailer::from_config(&app.config).unwrap());
        outbox.run_once(None).await.unwrap();
        let email: Vec<_> = outbox_since(&app, 0)
            .await
            .into_iter()
            .filter(|m| m.kind == OutboundKind::Email)
            .collect();
        assert_eq!(email.len(), 1);
        assert_eq!(email[0].status, status, "{reply}: {:?}", email[0]);
        assert_eq!(email[0].attempts, 1);
        assert!(
            email[0]
                .last_error
                .as_deref()
                .is_some_and(|e| e.contains(&reply[..3])),
            "{reply}: {:?}",
            email[0].last_error
        );
        // Due again after the backoff only if it was temporary.
        app.clock.advance(Duration::seconds(10));
        outbox.run_once(None).await.unwrap();
        let again = outbox_since(&app, 0)
            .await
            .into_iter()
            .find(|m| m.kind == OutboundKind::Email)
            .unwrap();
        assert_eq!(again.attempts, if retried { 2 } else { 1 }, "{reply}");
        assert!(sink.messages().is_empty());
    }
}

#[tokio::test]
async fn a_finished_voicemail_says_goodbye() {
    let app = spawn_sqlite(test_config(&[])).await;
    let response = app
        .post_twilio(
            "/webhooks/twilio/voicemail-done",
            &[
                ("CallSid", "CA1"),
                ("RecordingUrl", "https://api.twilio.com/x"),
            ],
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.text().await.unwrap(),
        r#"<?xml version="1.0" encoding="UTF-8"?><Response><Hangup/></Response>"#
    );
}

/// The console's live feed hears of a missed call and of how its owner was told (database
/// triggers, so every replica's console sees them).
async fn the_live_feed_gets_missed_calls_and_alerts<S: Store>(app: TestApp<S>) {
    let owner = live_owner(&app.engine, "text").await;
    let store = app.engine.store();
    let bookmark = store
        .recent_live_events(1)
        .await
        .unwrap()
        .last()
        .map_or(0, |e| e.id);
    app.engine
        .handle_call(&call("CAcustomer1", CALLER))
        .await
        .unwrap();
    app.clock.advance(Duration::seconds(151));
    app.engine.send_due_alerts().await.unwrap();
    let events: Vec<(String, String)> = store
        .live_events_after(bookmark, 50)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.owner_id.as_deref() == Some(owner.id.as_str()))
        .map(|e| (e.kind, e.detail))
        .collect();
    for wanted in ["missed call", "missed call alert: sms"] {
        assert!(
            events
                .iter()
                .any(|(kind, detail)| kind == "call" && detail == wanted),
            "{wanted}: {events:?}"
        );
    }
}

#[tokio::test]
async fn sqlite_the_live_feed_gets_missed_calls_and_alerts() {
    the_live_feed_gets_missed_calls_and_alerts(spawn_sqlite(test_config(&[])).await).await;
}

#[tokio::test]
async fn postgres_the_live_feed_gets_missed_calls_and_alerts() {
    the_live_feed_gets_missed_calls_and_alerts(spawn_postgres(test_config(&[])).await).await;
}

/// The recording callback and the 150 s timer racing for one call: whichever holds the call's
/// row first tells the owner; the other finds it told. Here the timer's claim comes first and
/// the callback waits for it, then only attaches the voicemail.
#[tokio::test]
async fn postgres_a_voicemail_arriving_as_the_timer_fires_is_not_alerted_twice() {
    let app = spawn_postgres(test_config(&[])).await;
    live_owner(&app.engine, "text").await;
    app.engine
        .handle_call(&call("CAcustomer1", CALLER))
        .await
        .unwrap();
    let bookmark = app.engine.store().latest_outbound_id().await.unwrap();
    let later = app.clock.now() + Duration::seconds(151);
    let store = app.engine.store().clone();
    let mut timer = store.begin().await.unwrap();
    let claimed = timer.claim_due_alert(later).await.unwrap().unwrap();

    let engine = app.engine.clone();
    let callback = tokio::spawn(async move {
        engine
            .recording_status(&onboard::engine::after::RecordingStatus {
                recording_sid: "RE1".into(),
                call_sid: "CAcustomer1".into(),
                status: "completed".into(),
                url: Some("https://api.twilio.com/Recordings/RE1".into()),
                duration_secs: Some(9),
            })
            .await
    });
    timer
        .mark_alerted(&claimed.call_sid, "sms", later)
        .await
        .unwrap();
    timer.commit().await.unwrap();
    callback.await.unwrap().unwrap();

    let mut tx = store.begin().await.unwrap();
    let call = tx.lock_missed_call("CAcustomer1").await.unwrap().unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(call.alert.as_deref(), Some("sms"));
    assert_eq!(call.recording_sid.as_deref(), Some("RE1"));
    // The timer here only marked the call (its alert is the sweep's to queue): the callback
    // queued nothing of its own.
    assert!(outbox_since(&app, bookmark).await.is_empty());
}

/// SMTP has no idempotency key: when the connection drops after the message went (the server
/// kept it but never said so), the email is not sent again: it is given up, loudly.
async fn an_email_whose_send_may_have_gone_through_is_never_sent_twice<B: BackEnd>() {
    let sink = SmtpSink::dropping_after_data().await;
    let app = B::spawn(smtp_config(&sink)).await;
    live_owner(&app.engine, "jo.smith@example.com").await;
    app.engine
        .handle_call(&call("CAcustomer1", CALLER))
        .await
        .unwrap();
    app.clock.advance(Duration::seconds(151));
    assert_eq!(app.engine.send_due_alerts().await.unwrap(), 1);
    let clock: Arc<dyn Clock> = app.clock.clone();
    let outbox = Outbox::new(
        app.engine.store().clone(),
        Sender::Simulated,
        clock,
        OutboxSettings::default(),
    )
    .with_mailer(Mailer::from_config(&app.config).unwrap());
    let email = || async {
        outbox_since(&app, 0)
            .await
            .into_iter()
            .find(|m| m.kind == OutboundKind::Email)
            .unwrap()
    };
    outbox.run_once(None).await.unwrap();
    let first = email().await;
    assert_eq!(first.status, OutboundStatus::Pending);
    assert!(first.needs_reconcile, "{first:?}");
    assert_eq!(sink.messages().len(), 1);

    app.clock.advance(Duration::seconds(60));
    outbox.run_once(None).await.unwrap();
    let second = email().await;
    assert_eq!(second.status, OutboundStatus::Failed, "{second:?}");
    assert!(
        second
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("not sent again")),
        "{second:?}"
    );
    assert_eq!(sink.messages().len(), 1, "sent once, never twice");
}

/// A mail server that cannot be reached has taken nothing: the email waits for the next try,
/// with nothing to reconcile.
async fn an_unreachable_smtp_server_is_tried_again_later<B: BackEnd>() {
    // A port that was free a moment ago: nothing listens there now.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("smtp://alerts:s3cret@127.0.0.1:{port}");
    let app = B::spawn(test_config(&[("SMTP_URL", &url)])).await;
    live_owner(&app.engine, "jo.smith@example.com").await;
    app.engine
        .handle_call(&call("CAcustomer1", CALLER))
        .await
        .unwrap();
    app.clock.advance(Duration::seconds(151));
    app.engine.send_due_alerts().await.unwrap();
    let clock: Arc<dyn Clock> = app.clock.clone();
    Outbox::new(
        app.engine.store().clone(),
        Sender::Simulated,
        clock,
        OutboxSettings::default(),
    )
    .with_mailer(Mailer::from_config(&app.config).unwrap())
    .run_once(None)
    .await
    .unwrap();
    let email = outbox_since(&app, 0)
        .await
        .into_iter()
        .find(|m| m.kind == OutboundKind::Email)
        .unwrap();
    assert_eq!(email.status, OutboundStatus::Pending, "{email:?}");
    assert!(!email.needs_reconcile, "{email:?}");
    assert_eq!(email.attempts, 1);
}

/// Through Twilio, an alert goes from the owner's own business number, not the onboarding one.
async fn a_text_alert_goes_from_the_owner_s_business_number_through_twilio<B: BackEnd>() {
    use onboard::outbox::CallSettings;
    use onboard::twilio::client::{Credentials, TwilioClient};
    use wiremock::matchers::{body_string_contains, method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    const ACCOUNT: &str = "AC00000000000000000000000000000000";
    let twilio = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(format!(
            "/2010-04-01/Accounts/{ACCOUNT}/Messages.json"
        )))
        .and(body_string_contains("From=%2B447700900970"))
        .and(body_string_contains("To=%2B447700900301"))
        .and(body_string_contains("Missed+call+to+Smith+Plumbing"))
        .respond_with(ResponseTemplate::new(201).set_body_json(serde_json::json!({
            "sid": "SMalert1", "status": "queued", "to": OWNER, "from": NUMBER
        })))
        .expect(1)
        .mount(&twilio)
        .await;
    let app = B::spawn(test_config(&[])).await;
    live_owner(&app.engine, "text").await;
    let bookmark = app.engine.store().latest_outbound_id().await.unwrap();
    app.engine
        .handle_call(&call("CAcustomer1", CALLER))
        .await
        .unwrap();
    recording(&app, "RE0001", "CAcustomer1").await;
    // Only the alert is sent here: the onboarding texts before it are done with.
    {
        let store = app.engine.store();
        let earlier = store.outbound_after(0).await.unwrap();
        let mut tx = store.begin().await.unwrap();
        for m in earlier {
            if m.id <= bookmark {
                tx.finish_outbound(
                    m.id,
                    OutboundStatus::Simulated,
                    None,
                    None,
                    None,
                    app.clock.now(),
                )
                .await
                .unwrap();
            }
        }
        tx.commit().await.unwrap();
    }
    let clock: Arc<dyn Clock> = app.clock.clone();
    let onboarding: PhoneNumber = "+447700900000".parse().unwrap();
    let outbox = Outbox::new(
        app.engine.store().clone(),
        Sender::Twilio {
            client: TwilioClient::new(
                &twilio.uri(),
                Credentials {
                    account_sid: ACCOUNT.into(),
                    username: ACCOUNT.into(),
                    secret: support::app::AUTH_TOKEN.into(),
                },
                std::time::Duration::from_secs(5),
            ),
            from: onboarding.clone(),
            status_callback: "https://onboard.example.com/webhooks/twilio/message-status".into(),
            calls: CallSettings {
                from: onboarding,
                status_callback: "https://onboard.example.com/webhooks/twilio/call-status".into(),
                ring_seconds: 30,
            },
        },
        clock,
        OutboxSettings::default(),
    );
    assert_eq!(outbox.run_once(None).await.unwrap(), 1);
    let alert = outbox_since(&app, bookmark).await;
    assert_eq!(
        alert[0].twilio_sid.as_deref(),
        Some("SMalert1"),
        "{alert:?}"
    );
    twilio.verify().await;
}

/// A caller text-back is spend we choose to make: while a budget is used up the caller is not
/// texted; once the period turns, the next missed call is texted back as usual.
async fn no_caller_text_back_while_a_budget_is_exceeded<S: Store>(app: TestApp<S>) {
    let owner = live_owner(&app.engine, "text").await;
    let store = app.engine.store();
    let now = app.engine.now();
    let mut tx = store.begin().await.unwrap();
    let spent = onboard::prices::Amount(25_000_000);
    tx.record_cost(&NewCost {
        source_key: "buy:big".into(),
        owner_id: None,
        kind: onboard::prices::CostKind::NumberPurchase,
        quantity: 1,
        country: onboard::domain::Country::Gb,
        currency: "GBP",
        estimated: spent,
        reporting: spent,
        provider_id: None,
        at: now,
    })
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let texted_back = |sent: Vec<OutboundMessage>| {
        sent.iter()
            .filter(|m| m.to.as_str() == CALLER && m.owner_id == owner.id)
            .count()
    };

    app.engine
        .handle_call(&call("CAbudget1", CALLER))
        .await
        .unwrap();
    assert_eq!(texted_back(outbox_since(&app, 0).await), 0);

    app.clock.advance(Duration::days(1));
    app.engine
        .handle_call(&call("CAbudget2", CALLER))
        .await
        .unwrap();
    assert_eq!(texted_back(outbox_since(&app, 0).await), 1);
}

fn budget_config() -> onboard::config::Config {
    test_config(&[("CALLER_TEXT_BACK", "1"), ("BUDGET_DAILY", "10")])
}

#[tokio::test]
async fn sqlite_no_caller_text_back_while_a_budget_is_exceeded() {
    no_caller_text_back_while_a_budget_is_exceeded(spawn_sqlite(budget_config()).await).await;
}

#[tokio::test]
async fn postgres_no_caller_text_back_while_a_budget_is_exceeded() {
    no_caller_text_back_while_a_budget_is_exceeded(spawn_postgres(budget_config()).await).await;
}

support::on_both_back_ends!(
    the_admin_api_shows_an_owner_s_usage,
    a_customer_s_text_to_the_business_number_is_relayed_not_onboarded,
    an_smtp_refusal_is_retried_when_temporary_and_given_up_when_permanent,
    an_email_whose_send_may_have_gone_through_is_never_sent_twice,
    an_unreachable_smtp_server_is_tried_again_later,
    a_text_alert_goes_from_the_owner_s_business_number_through_twilio,
);
