//! Logs never carry a full phone number, a message body, an email address or a password above
//! debug level: a whole conversation runs through the server while its info-level output is
//! captured and searched, and so do the error paths (a text Twilio refuses, an answer it garbles,
//! a number purchase it refuses, a database URL we cannot use).

use crate::support;

use std::io::Write;
use std::sync::{Arc, Mutex};

use onboard::clock::{Clock, SystemClock};
use onboard::domain::{Country, OwnerId, PhoneNumber};
use onboard::outbox::{CallSettings, Outbox, OutboxSettings, Sender};
use onboard::replenish::{CircuitBreaker, ReplenishSettings, Replenisher};
use onboard::store::{NewOutbound, Owner, Store, Tx};
use onboard::twilio::client::{Credentials, TwilioClient};
use support::app::{spawn_sqlite, test_config};
use wiremock::matchers::{body_string_contains, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const OWNER: &str = "+447700900123";
const EMAIL: &str = "jo.smith@example.com";
const NUMBER: &str = "+447700900900";

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Capture {
    /// Captures this thread's log lines at info and above until the guard is dropped.
    fn info() -> (Capture, tracing::subscriber::DefaultGuard) {
        let capture = Capture::default();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_ansi(false)
            .with_writer({
                let capture = capture.clone();
                move || capture.clone()
            })
            .finish();
        (capture, tracing::subscriber::set_default(subscriber))
    }

    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }

    fn assert_holds_none_of(&self, secrets: &[&str]) {
        let logs = self.text();
        for secret in secrets {
            assert!(
                !logs.contains(secret),
                "{secret:?} leaked into info logs:\n{logs}"
            );
        }
    }
}

#[tokio::test]
async fn info_logs_of_a_whole_conversation_hold_no_phone_body_or_email() {
    let (capture, _guard) = Capture::info();

    let app = spawn_sqlite(test_config(&[("STRIPE_WEBHOOK_SECRET", "whsec_logs")])).await;
    app.engine
        .add_numbers(&[NUMBER.parse().unwrap()])
        .await
        .unwrap();
    let texts = [
        "Hi",
        "Plumber in Leeds",
        "Secret Plumbing Ltd",
        "Jonathan Smithers",
        EMAIL,
        "help",
        "yes",
    ];
    for (i, body) in texts.iter().enumerate() {
        app.text(&format!("SM{i}"), OWNER, body).await;
    }
    app.post_stripe(&serde_json::json!({
        "id": "evt_logs", "object": "event", "type": "checkout.session.completed",
        "data": {"object": {"payment_status": "paid", "client_reference_id": "c_0000000001",
            "customer_details": {"email": EMAIL, "phone": OWNER}}}
    }))
    .await;
    for (i, body) in ["2", "done", "STOP", "START"].iter().enumerate() {
        app.text(&format!("SMlate{i}"), OWNER, body).await;
    }
    app.post_twilio(
        "/webhooks/twilio/voice",
        &[
            ("CallSid", "CA1"),
            ("From", "+447700900555"),
            ("To", NUMBER),
        ],
    )
    .await;
    // Bad input is logged too: it must not echo what it was given.
    app.post_twilio(
        "/webhooks/twilio/sms",
        &[("From", OWNER), ("Body", "Secret Plumbing Ltd")],
    )
    .await;

    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("INBOUND_SMS"), "the capture works:\n{logs}");
    assert!(
        logs.contains("+44*******123"),
        "phones appear masked:\n{logs}"
    );
    for secret in [
        OWNER,
        NUMBER,
        "+447700900555",
        "7700900123",
        EMAIL,
        "Secret Plumbing",
        "Jonathan Smithers",
        "Plumber in Leeds",
    ] {
        assert!(
            !logs.contains(secret),
            "{secret:?} leaked into info logs:\n{logs}"
        );
    }
}

const OWNER_2: &str = "+447700905599";
const OWNER_2_DIGITS: &str = "7700905599";
const TWILIO_ACCOUNT: &str = "AC123";

fn twilio(server: &MockServer) -> TwilioClient {
    TwilioClient::new(
        &server.uri(),
        Credentials {
            account_sid: TWILIO_ACCOUNT.into(),
            username: TWILIO_ACCOUNT.into(),
            secret: "secret".into(),
        },
        std::time::Duration::from_secs(2),
    )
}

/// Sends one text to `OWNER_2` through a Twilio that answers `answer`; the app is returned for
/// its metrics.
async fn send_one_text(
    answer: ResponseTemplate,
) -> support::app::TestApp<onboard::store::SqliteStore> {
    let app = spawn_sqlite(test_config(&[])).await;
    let store = app.engine.store().clone();
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(answer)
        .expect(1)
        .mount(&server)
        .await;
    let owner: PhoneNumber = OWNER_2.parse().unwrap();
    let id = OwnerId::new("c_logs");
    let mut tx = store.begin().await.unwrap();
    tx.lock_or_create_owner(&owner, || {
        Owner::new(id.clone(), owner.clone(), SystemClock.now())
    })
    .await
    .unwrap();
    tx.enqueue_outbound(&NewOutbound {
        owner_id: &id,
        to: &owner,
        body: "Secret Plumbing Ltd: your number is ready",
        created_at: SystemClock.now(),
    })
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let from: PhoneNumber = "+447700900000".parse().unwrap();
    let sender = Sender::Twilio {
        client: twilio(&server),
        from: from.clone(),
        status_callback: "https://onboard.example.com/webhooks/twilio/message-status".into(),
        calls: CallSettings {
            from,
            status_callback: "https://onboard.example.com/webhooks/twilio/call-status".into(),
            ring_seconds: 30,
        },
    };
    let outbox = Outbox::new(
        store.clone(),
        sender,
        Arc::new(SystemClock),
        OutboxSettings::default(),
    );
    assert_eq!(outbox.run_once(None).await.unwrap(), 1);
    let sent = store.outbound_after(0).await.unwrap();
    assert_eq!(sent[0].status.as_str(), "failed");
    app
}

#[tokio::test]
async fn a_text_twilio_refuses_is_counted_and_logged_without_the_number_twilio_names() {
    let (capture, _guard) = Capture::info();
    let app = send_one_text(ResponseTemplate::new(400).set_body_json(serde_json::json!({
        "code": 21211,
        "message": format!("The 'To' number {OWNER_2} is not valid"),
        "status": 400,
    })))
    .await;
    let logs = capture.text();
    assert!(
        logs.contains("OUTBOUND_FAILED"),
        "the failure is logged:\n{logs}"
    );
    assert!(logs.contains("21211"), "with Twilio's code:\n{logs}");
    capture.assert_holds_none_of(&[OWNER_2_DIGITS, "Secret Plumbing"]);
    let metrics = app
        .http
        .get(format!("{}/metrics", app.address))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let given_up = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix(r#"onboard_outbound_given_up_total{kind="sms",reason="refused"} "#)
        })
        .and_then(|v| v.trim().parse::<f64>().ok());
    assert!(given_up >= Some(1.0), "counted:\n{metrics}");
}

#[tokio::test]
async fn an_answer_twilio_garbles_is_logged_without_its_body() {
    let (capture, _guard) = Capture::info();
    send_one_text(ResponseTemplate::new(201).set_body_string(format!(
        "{{\"to\": \"{OWNER_2}\", \"body\": \"Secret Plumbing Ltd: your number is ready\", \"email\": \"jo.smith@example.com\""
    )))
    .await;
    let logs = capture.text();
    assert!(
        logs.contains("OUTBOUND_FAILED"),
        "the failure is logged:\n{logs}"
    );
    capture.assert_holds_none_of(&[OWNER_2_DIGITS, "Secret Plumbing", EMAIL]);
}

#[tokio::test]
async fn a_number_purchase_twilio_refuses_is_logged_without_the_number() {
    let (capture, _guard) = Capture::info();
    let app = spawn_sqlite(test_config(&[])).await;
    let server = MockServer::start().await;
    let wanted = "+447700905511";
    Mock::given(method("GET"))
        .and(path(format!(
            "/2010-04-01/Accounts/{TWILIO_ACCOUNT}/AvailablePhoneNumbers/GB/Local.json"
        )))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "available_phone_numbers": [{"phone_number": wanted, "iso_country": "GB"}]
        })))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(format!(
            "/2010-04-01/Accounts/{TWILIO_ACCOUNT}/IncomingPhoneNumbers.json"
        )))
        .and(body_string_contains("PhoneNumber"))
        .respond_with(ResponseTemplate::new(400).set_body_json(serde_json::json!({
            "code": 21631,
            "message": format!("Phone Number {wanted} requires an Address; ask jo.smith@example.com"),
            "status": 400,
        })))
        .mount(&server)
        .await;
    let keeper = Replenisher::new(
        app.engine.clone(),
        twilio(&server),
        Arc::new(CircuitBreaker::with_defaults(Arc::new(SystemClock))),
        ReplenishSettings::new(1, 10, Country::Gb, "https://onboard.example.com"),
    );
    let _ = keeper.run_once().await;
    let logs = capture.text();
    assert!(logs.contains("21631"), "the refusal is logged:\n{logs}");
    capture.assert_holds_none_of(&["7700905511", EMAIL]);
}

#[tokio::test]
async fn a_database_url_we_cannot_use_is_reported_without_its_password() {
    for url in [
        "mysql://onboard:hunter2@db.example.com/onboard",
        "onboard:hunter2@db.example.com",
        "hunter2",
        "postgres://onboard:hunter2@127.0.0.1:1/onboard",
        "postgres://onboard:hunter2@127.0.0.1:notaport/onboard",
        "sqlite://onboard:hunter2@/no/such/dir/onboard.db",
    ] {
        let error = match onboard::app::Database::connect(url, 2).await {
            Err(e) => e.to_string(),
            Ok(_) => panic!("{url} is not a database we use"),
        };
        assert!(!error.contains("hunter2"), "{url}: {error}");
    }
}

/// After onboarding: a missed call, its voicemail alert by email, a customer's text relayed and
/// a customer's STOP log no caller's number, no body and no address at info level.
#[tokio::test]
async fn info_logs_after_onboarding_hold_no_caller_body_or_email() {
    const CALLER: &str = "+447700900555";
    const SECRET_TEXT: &str = "my door code is 4417";
    let (capture, _guard) = Capture::info();
    let app = spawn_sqlite(test_config(&[])).await;
    crate::after::live_owner(&app.engine, EMAIL).await;
    app.engine
        .handle_call(&crate::after::call("CAcustomer1", CALLER))
        .await
        .unwrap();
    app.engine
        .recording_status(&onboard::engine::after::RecordingStatus {
            recording_sid: "RE1".into(),
            call_sid: "CAcustomer1".into(),
            status: "completed".into(),
            url: Some("https://api.twilio.com/Recordings/RE1".into()),
            duration_secs: Some(12),
        })
        .await
        .unwrap();
    for (sid, body) in [("SMc1", SECRET_TEXT), ("SMc2", "STOP")] {
        app.engine
            .handle_sms(&onboard::engine::InboundSms {
                message_sid: sid.into(),
                from: CALLER.into(),
                to: "+447700900970".into(),
                body: body.into(),
            })
            .await
            .unwrap();
    }
    let clock: Arc<dyn Clock> = app.clock.clone();
    Outbox::new(
        app.engine.store().clone(),
        Sender::Simulated,
        clock,
        OutboxSettings::default(),
    )
    .with_mailer(None)
    .run_once(None)
    .await
    .unwrap();
    let logs = capture.text();
    for event in [
        "MISSED_CALL",
        "TEXT_RELAYED",
        "CUSTOMER_OPTED_OUT",
        "OUTBOUND_FAILED",
    ] {
        assert!(logs.contains(event), "{event} not logged:\n{logs}");
    }
    capture.assert_holds_none_of(&[CALLER, SECRET_TEXT, EMAIL, "jo.smith@"]);
}
