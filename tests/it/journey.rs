//! The whole journey over HTTP on PostgreSQL, every request signed as Twilio and Stripe sign them:
//! first text, the answers, YES, the payment webhook, S6, S7 with the allocated number in the
//! instructions, DONE, the verification call placed through Twilio's Calls API, the call arriving
//! back at the allocated number from our caller id, COMPLETE.

use crate::support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use onboard::outbox::{CallSettings, Outbox, OutboxSettings, Sender};
use onboard::replay::message_text;
use onboard::store::PgStore;
use onboard::twilio::client::{Credentials, TwilioClient};
use reqwest::StatusCode;
use serde_json::json;
use support::app::{TestApp, spawn_postgres, test_config};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const OWNER: &str = "+447700900123";
const ONBOARDING: &str = "+447700900000";
const NUMBER: &str = "+447700900900";
const STRIPE_SECRET: &str = "whsec_journey";

async fn say(app: &TestApp<PgStore>, n: usize, body: &str) -> String {
    let response = app.text(&format!("SMjourney{n}"), OWNER, body).await;
    assert_eq!(response.status(), StatusCode::OK, "text {n}: {body}");
    message_text(&response.text().await.unwrap()).unwrap_or_default()
}

async fn state(app: &TestApp<PgStore>) -> String {
    app.engine
        .owner_by_phone(&OWNER.parse().unwrap())
        .await
        .unwrap()
        .unwrap()
        .state
        .to_string()
}

fn form(request: &wiremock::Request) -> Vec<(String, String)> {
    serde_urlencoded::from_bytes(&request.body).unwrap()
}

#[tokio::test]
async fn from_first_text_to_complete_over_http_on_postgres() {
    let twilio = MockServer::start().await;
    let app = Arc::new(
        spawn_postgres(test_config(&[
            ("STRIPE_WEBHOOK_SECRET", STRIPE_SECRET),
            ("TWILIO_API_BASE", &twilio.uri()),
            ("ONBOARDING_NUMBER", ONBOARDING),
        ]))
        .await,
    );
    app.engine
        .add_numbers(&[NUMBER.parse().unwrap()])
        .await
        .unwrap();
    let outbox = Outbox::new(
        app.engine.store().clone(),
        Sender::Twilio {
            client: TwilioClient::new(
                &twilio.uri(),
                Credentials {
                    account_sid: "AC00000000000000000000000000000000".into(),
                    username: "AC00000000000000000000000000000000".into(),
                    secret: support::app::AUTH_TOKEN.into(),
                },
                Duration::from_secs(5),
            ),
            from: ONBOARDING.parse().unwrap(),
            status_callback: format!("{}/webhooks/twilio/message-status", app.config.public_url),
            calls: CallSettings {
                from: ONBOARDING.parse().unwrap(),
                status_callback: format!("{}/webhooks/twilio/call-status", app.config.public_url),
                ring_seconds: 30,
            },
        },
        app.clock.clone(),
        OutboxSettings::default(),
    );
    Mock::given(method("POST"))
        .and(path(
            "/2010-04-01/Accounts/AC00000000000000000000000000000000/Messages.json",
        ))
        .respond_with({
            let sent = AtomicUsize::new(0);
            move |_: &wiremock::Request| {
                let n = sent.fetch_add(1, Ordering::SeqCst);
                ResponseTemplate::new(201).set_body_json(json!({
                    "sid": format!("SMout{n}"), "status": "queued", "to": OWNER, "from": ONBOARDING
                }))
            }
        })
        .mount(&twilio)
        .await;
    Mock::given(method("POST"))
        .and(path(
            "/2010-04-01/Accounts/AC00000000000000000000000000000000/Calls.json",
        ))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({
            "sid": "CAverify1", "status": "queued"
        })))
        .expect(1)
        .mount(&twilio)
        .await;

    assert!(say(&app, 1, "Hi there").await.contains("What's your trade"));
    assert!(
        say(&app, 2, "Plumber in Leeds")
            .await
            .contains("name of your business")
    );
    say(&app, 3, "Smith & Sons").await;
    say(&app, 4, "Jo Smith").await;
    assert!(say(&app, 5, "jo@smith.example").await.contains("Reply YES"));
    let pay = say(&app, 6, "YES").await;
    let owner = app
        .engine
        .owner_by_phone(&OWNER.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(
        pay.contains(&format!("client_reference_id={}", owner.id)),
        "{pay}"
    );

    // Stripe tells us about the payment; the owner does not have to text again.
    let paid = app.pay("evt_journey", owner.id.as_str()).await;
    assert_eq!(paid.status(), StatusCode::OK);
    assert_eq!(state(&app).await, "S6_PHONE_TYPE");

    // The outbox texts them their number.
    assert_eq!(outbox.run_once(None).await.unwrap(), 1);
    let sent = twilio.received_requests().await.unwrap();
    let text = form(&sent[0]);
    assert!(text.contains(&("To".into(), OWNER.into())));
    assert!(
        // Shown to read in its national form; the codes below dial it in E.164.
        text.iter()
            .any(|(k, v)| k == "Body" && v.contains("07700 900900")),
        "{text:?}"
    );

    let instructions = say(&app, 7, "1").await;
    assert!(
        instructions.contains(&format!("**004*{NUMBER}#")),
        "{instructions}"
    );
    assert_eq!(state(&app).await, "S7_FWD_SENT");

    assert!(
        say(&app, 8, "done")
            .await
            .contains("calling your business line now")
    );
    assert_eq!(state(&app).await, "S8_FWD_CONFIRMED");

    // The worker places the verification call.
    assert_eq!(outbox.run_once(None).await.unwrap(), 1);
    let requests = twilio.received_requests().await.unwrap();
    let call = requests
        .iter()
        .find(|r| r.url.path().ends_with("/Calls.json"))
        .expect("a call was placed");
    let call = form(call);
    let field = |name: &str| call.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    assert_eq!(field("To").as_deref(), Some(OWNER));
    assert_eq!(field("From").as_deref(), Some(ONBOARDING));
    assert_eq!(field("Timeout").as_deref(), Some("30"));
    assert!(field("Twiml").unwrap().contains("<Say language=\"en-GB\">"));
    assert!(
        field("StatusCallback")
            .unwrap()
            .ends_with("/webhooks/twilio/call-status")
    );

    // Unanswered, it is forwarded to the number we gave them: Twilio calls our voice webhook.
    let answer = app
        .post_twilio(
            "/webhooks/twilio/voice",
            &[
                ("CallSid", "CAforwarded1"),
                ("AccountSid", "AC00000000000000000000000000000000"),
                ("From", ONBOARDING),
                ("To", NUMBER),
                ("Direction", "inbound"),
                ("CallStatus", "ringing"),
            ],
        )
        .await;
    assert_eq!(answer.status(), StatusCode::OK);
    let twiml = answer.text().await.unwrap();
    assert!(twiml.contains("Forwarding works."), "{twiml}");
    assert_eq!(state(&app).await, "COMPLETE");

    // Call progress for the verification call, out of order: the final status stays.
    for (seq, status) in [("3", "completed"), ("1", "ringing")] {
        let response = app
            .post_twilio(
                "/webhooks/twilio/call-status",
                &[
                    ("CallSid", "CAverify1"),
                    ("CallStatus", status),
                    ("SequenceNumber", seq),
                    ("CallDuration", "31"),
                ],
            )
            .await;
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
    }
    let status: (String, Option<i32>) =
        sqlx::query_as("SELECT status, duration_secs FROM calls WHERE call_sid = 'CAverify1'")
            .fetch_one(&mut *app.engine.store().conn().await.unwrap())
            .await
            .unwrap();
    assert_eq!(status, ("completed".to_owned(), Some(31)));

    // And they are told they are live.
    outbox.run_once(None).await.unwrap();
    let last = twilio.received_requests().await.unwrap();
    let live = form(last.last().unwrap());
    assert!(
        live.iter()
            .any(|(k, v)| k == "Body" && v.contains("you're live")),
        "{live:?}"
    );
}

#[tokio::test]
async fn voice_webhooks_check_signatures_and_fields() {
    let app = spawn_postgres(test_config(&[])).await;
    let unsigned = app
        .http
        .post(format!("{}/webhooks/twilio/voice", app.address))
        .form(&[("CallSid", "CA1"), ("From", OWNER), ("To", NUMBER)])
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status(), StatusCode::BAD_REQUEST);
    let missing = app
        .post_twilio(
            "/webhooks/twilio/voice",
            &[("CallSid", "CA1"), ("From", OWNER)],
        )
        .await;
    assert_eq!(missing.status(), StatusCode::BAD_REQUEST);
    assert!(missing.text().await.unwrap().contains("To"));
    let status = app
        .post_twilio("/webhooks/twilio/call-status", &[("CallSid", "CA1")])
        .await;
    assert_eq!(status.status(), StatusCode::BAD_REQUEST);
}
