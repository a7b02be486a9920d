//! Logs never carry a full phone number, a message body or an email address above debug level:
//! a whole conversation runs through the server while its info-level output is captured and searched.

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};

use onboard::stripe::signature;
use support::app::{spawn_sqlite, test_config};

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

#[tokio::test]
async fn info_logs_of_a_whole_conversation_hold_no_phone_body_or_email() {
    let capture = Capture::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .with_writer({
            let capture = capture.clone();
            move || capture.clone()
        })
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

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
    let event = serde_json::json!({
        "id": "evt_logs", "object": "event", "type": "checkout.session.completed",
        "data": {"object": {"payment_status": "paid", "client_reference_id": "c_0000000001",
            "customer_details": {"email": EMAIL, "phone": OWNER}}}
    })
    .to_string();
    let header = signature::sign(event.as_bytes(), "whsec_logs", app.engine.now().timestamp());
    app.http
        .post(format!("{}/webhooks/stripe", app.address))
        .header("Stripe-Signature", header)
        .body(event)
        .send()
        .await
        .unwrap();
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
