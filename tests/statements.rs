//! Statements per event, on both back ends: one owner's journey over HTTP (and the outbox worker
//! for the one send), counting every statement sqlx executes for each event, so a change cannot
//! add round trips without this test saying which event grew and by how much.
//!
//! The count comes from sqlx itself: it reports every statement it runs as a tracing event with
//! target `sqlx::query`, which a layer installed as the process's subscriber counts. Not reported,
//! so not counted: on PostgreSQL the `BEGIN` of a transaction (SQLite's `BEGIN IMMEDIATE` is), and
//! the pool's ping at checkout; each PostgreSQL transaction is one or two round trips more than
//! its count. A process-wide subscriber is needed because SQLite runs statements
//! on a thread of its own. nextest runs each test in its own process; within one process the two
//! tests take turns (`TURN`), so neither counts the other's statements.
//!
//! The bounds are the counts of the code as it is; lower them as the store's round trips go.
//! `STATEMENTS_SHOW=1` prints each event's statements under its count, to see which ones to merge.

#[path = "it/support/mod.rs"]
mod support;

use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use onboard::outbox::{CallSettings, Outbox, OutboxSettings, Sender};
use onboard::store::Store;
use onboard::twilio::client::{Credentials, TwilioClient};
use reqwest::StatusCode;
use serde_json::json;
use support::app::{TestApp, spawn_postgres, spawn_sqlite, test_config};
use tracing_subscriber::Layer;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const OWNER: &str = "+447700900123";
const ONBOARDING: &str = "+447700900000";
const NUMBER: &str = "+447700900900";
const STRIPE_SECRET: &str = "whsec_statements";
const ACCOUNT: &str = "AC00000000000000000000000000000000";

/// The event kinds counted, in the order the journey meets them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    TextNewOwner,
    TextExistingOwner,
    RetriedMessageSid,
    Payment,
    RetriedStripeEvent,
    OutboxSendOneText,
    StatusCallback,
    VerificationCall,
    MissedCall,
    RecordingCallback,
    CustomerText,
}

/// The most statements each kind may take: (kind, PostgreSQL, SQLite). On PostgreSQL a text reads
/// once (its `MessageSid` claimed, its owner and their reminder timer locked, in one statement),
/// and every event writes once at commit (the owner, history,
/// outbox, timer and cost-ledger rows, and its answer, in one statement); a payment allocates its
/// number in one more. SQLite runs the same in more, cheaper, in-process statements.
const BOUNDS: [(Kind, usize, usize); 11] = [
    (Kind::TextNewOwner, 5, 10),
    (Kind::TextExistingOwner, 3, 10),
    (Kind::RetriedMessageSid, 3, 4),
    (Kind::Payment, 4, 11),
    (Kind::RetriedStripeEvent, 3, 4),
    (Kind::OutboxSendOneText, 5, 7),
    (Kind::StatusCallback, 3, 4),
    (Kind::VerificationCall, 3, 9),
    (Kind::MissedCall, 5, 7),
    (Kind::RecordingCallback, 7, 8),
    (Kind::CustomerText, 4, 7),
];

#[derive(Clone, Copy, Debug)]
enum Backend {
    Postgres,
    Sqlite,
}

static STATEMENTS: AtomicUsize = AtomicUsize::new(0);
/// The statements' text, kept only when `STATEMENTS_SHOW` is set: those of the event being
/// counted, and those of each event counted so far (in the order of the journey's counts).
static SHOWN: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
static SHOWN_PER_EVENT: std::sync::Mutex<Vec<Vec<String>>> = std::sync::Mutex::new(Vec::new());
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Counts sqlx's statement events.
struct CountStatements;

impl<S: tracing::Subscriber> Layer<S> for CountStatements {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if event.metadata().target() == "sqlx::query" {
            if std::env::var_os("STATEMENTS_SHOW").is_some() {
                let mut summary = Summary(String::new());
                event.record(&mut summary);
                SHOWN.lock().unwrap().push(summary.0);
            }
            STATEMENTS.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// The `db.statement` field of sqlx's event, whitespace folded.
struct Summary(String);

impl tracing::field::Visit for Summary {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "db.statement" {
            self.0 = value.split_whitespace().collect::<Vec<_>>().join(" ");
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.record_str(field, &format!("{value:?}"));
    }
}

fn count_statements() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        use tracing_subscriber::layer::SubscriberExt;
        use tracing_subscriber::util::SubscriberInitExt;
        let only_sqlx = tracing_subscriber::filter::Targets::new()
            .with_target("sqlx::query", tracing::level_filters::LevelFilter::TRACE);
        tracing_subscriber::registry()
            .with(CountStatements.with_filter(only_sqlx))
            .try_init()
            .expect("no other subscriber is installed in this test process");
    });
}

/// The statements `event` ran. The count settles first: SQLite reports a statement from its own
/// thread, which may come just after the answer.
async fn statements_of<T>(event: impl Future<Output = T>) -> (T, usize) {
    let before = STATEMENTS.load(Ordering::SeqCst);
    SHOWN.lock().unwrap().clear();
    let out = event.await;
    let mut seen = STATEMENTS.load(Ordering::SeqCst);
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = STATEMENTS.load(Ordering::SeqCst);
        if now == seen {
            let shown = SHOWN.lock().unwrap().drain(..).collect();
            SHOWN_PER_EVENT.lock().unwrap().push(shown);
            return (out, seen - before);
        }
        seen = now;
    }
}

#[tokio::test]
async fn statements_per_event_on_postgres() {
    count_statements();
    let _turn = TURN.lock().await;
    let twilio = fake_twilio().await;
    let app = spawn_postgres(config(&twilio)).await;
    let counts = journey(&app, &twilio).await;
    check(Backend::Postgres, &counts);
}

#[tokio::test]
async fn statements_per_event_on_sqlite() {
    count_statements();
    let _turn = TURN.lock().await;
    let twilio = fake_twilio().await;
    let app = spawn_sqlite(config(&twilio)).await;
    let counts = journey(&app, &twilio).await;
    check(Backend::Sqlite, &counts);
}

fn config(twilio: &MockServer) -> onboard::config::Config {
    test_config(&[
        ("STRIPE_WEBHOOK_SECRET", STRIPE_SECRET),
        ("TWILIO_API_BASE", &twilio.uri()),
        ("ONBOARDING_NUMBER", ONBOARDING),
    ])
}

/// Every count within its bound, each named with the kind, the count and the bound.
fn check(backend: Backend, counts: &[(Kind, usize)]) {
    let mut over = Vec::new();
    let shown = std::mem::take(&mut *SHOWN_PER_EVENT.lock().unwrap());
    for (i, (kind, count)) in counts.iter().enumerate() {
        let (_, pg, sqlite) = BOUNDS
            .iter()
            .find(|(k, ..)| k == kind)
            .expect("every kind has a bound");
        let bound = match backend {
            Backend::Postgres => *pg,
            Backend::Sqlite => *sqlite,
        };
        println!("{backend:?} {kind:?}: {count} statements (bound {bound})");
        for statement in shown.get(i).into_iter().flatten() {
            println!("    {}", statement.chars().take(240).collect::<String>());
        }
        // Nothing counted means the counting broke, not that the event is free.
        assert!(
            *count > 0,
            "{backend:?} {kind:?}: no statement counted; sqlx's `sqlx::query` events no longer \
             reach the counting layer"
        );
        if *count > bound {
            over.push(format!(
                "{kind:?} took {count} statements, more than its bound of {bound}"
            ));
        }
    }
    assert!(over.is_empty(), "{backend:?}: {}", over.join("; "));
}

async fn fake_twilio() -> MockServer {
    let twilio = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(format!(
            "/2010-04-01/Accounts/{ACCOUNT}/Messages.json"
        )))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({
            "sid": "SMout1", "status": "queued", "to": OWNER, "from": ONBOARDING
        })))
        .mount(&twilio)
        .await;
    Mock::given(method("POST"))
        .and(path(format!("/2010-04-01/Accounts/{ACCOUNT}/Calls.json")))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({
            "sid": "CAverify1", "status": "queued"
        })))
        .mount(&twilio)
        .await;
    twilio
}

fn outbox<S: Store>(app: &TestApp<S>, twilio: &MockServer) -> Outbox<S> {
    Outbox::new(
        app.engine.store().clone(),
        Sender::Twilio {
            client: TwilioClient::new(
                &twilio.uri(),
                Credentials {
                    account_sid: ACCOUNT.into(),
                    username: ACCOUNT.into(),
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
    )
}

async fn text<S: Store>(app: &TestApp<S>, sid: &str, body: &str) -> String {
    let response = app.text(sid, OWNER, body).await;
    assert_eq!(response.status(), StatusCode::OK, "text {sid}: {body}");
    response.text().await.unwrap()
}

async fn pay<S: Store>(app: &TestApp<S>, owner_id: &str) -> String {
    let response = app.pay("evt_statements", owner_id).await;
    assert_eq!(response.status(), StatusCode::OK);
    response.text().await.unwrap()
}

/// One owner from a first text to COMPLETE, counting the statements of each kind of event.
async fn journey<S: Store>(app: &TestApp<S>, twilio: &MockServer) -> Vec<(Kind, usize)> {
    let mut counts = Vec::new();
    app.engine
        .add_numbers(&[NUMBER.parse().unwrap()])
        .await
        .unwrap();
    let outbox = outbox(app, twilio);

    let (reply, n) = statements_of(text(app, "SMst1", "Hi there")).await;
    assert!(reply.contains("What's your trade"), "{reply}");
    counts.push((Kind::TextNewOwner, n));
    let (reply, n) = statements_of(text(app, "SMst2", "Plumber in Leeds")).await;
    assert!(reply.contains("name of your business"), "{reply}");
    counts.push((Kind::TextExistingOwner, n));
    let (again, n) = statements_of(text(app, "SMst2", "Plumber in Leeds")).await;
    assert_eq!(again, reply, "a retried MessageSid gets the same answer");
    counts.push((Kind::RetriedMessageSid, n));

    text(app, "SMst3", "Smith & Sons").await;
    text(app, "SMst4", "Jo Smith").await;
    text(app, "SMst5", "jo@smith.example").await;
    text(app, "SMst6", "YES").await;
    let owner = app
        .engine
        .owner_by_phone(&OWNER.parse().unwrap())
        .await
        .unwrap()
        .expect("the owner exists");

    let (paid, n) = statements_of(pay(app, owner.id.as_str())).await;
    assert!(paid.contains("processed"), "{paid}");
    counts.push((Kind::Payment, n));
    let (again, n) = statements_of(pay(app, owner.id.as_str())).await;
    assert!(again.contains("duplicate"), "{again}");
    counts.push((Kind::RetriedStripeEvent, n));

    let (sent, n) = statements_of(outbox.run_once(None)).await;
    assert_eq!(sent.unwrap(), 1, "the number text is sent");
    counts.push((Kind::OutboxSendOneText, n));

    let (status, n) = statements_of(app.post_twilio(
        "/webhooks/twilio/message-status",
        &[("MessageSid", "SMout1"), ("MessageStatus", "delivered")],
    ))
    .await;
    assert!(status.status().is_success(), "{}", status.status());
    counts.push((Kind::StatusCallback, n));

    text(app, "SMst7", "1").await;
    text(app, "SMst8", "done").await;
    assert_eq!(
        outbox.run_once(None).await.unwrap(),
        1,
        "the call is placed"
    );
    let (answer, n) = statements_of(app.post_twilio(
        "/webhooks/twilio/voice",
        &[
            ("CallSid", "CAforwarded1"),
            ("AccountSid", ACCOUNT),
            ("From", ONBOARDING),
            ("To", NUMBER),
            ("Direction", "inbound"),
            ("CallStatus", "ringing"),
        ],
    ))
    .await;
    assert_eq!(answer.status(), StatusCode::OK);
    let twiml = answer.text().await.unwrap();
    assert!(twiml.contains("Forwarding works."), "{twiml}");
    counts.push((Kind::VerificationCall, n));

    // Live: a customer's call, its voicemail, a customer's text.
    let (answer, n) = statements_of(app.post_twilio(
        "/webhooks/twilio/voice",
        &[
            ("CallSid", "CAcustomer1"),
            ("AccountSid", ACCOUNT),
            ("From", "+447700900555"),
            ("To", NUMBER),
            ("Direction", "inbound"),
            ("CallStatus", "ringing"),
        ],
    ))
    .await;
    assert_eq!(answer.status(), StatusCode::OK);
    assert!(answer.text().await.unwrap().contains("<Record"));
    counts.push((Kind::MissedCall, n));
    let (callback, n) = statements_of(app.post_twilio(
        "/webhooks/twilio/recording-status",
        &[
            ("CallSid", "CAcustomer1"),
            ("AccountSid", ACCOUNT),
            ("RecordingSid", "RE1"),
            ("RecordingUrl", "https://api.twilio.com/Recordings/RE1"),
            ("RecordingStatus", "completed"),
            ("RecordingDuration", "20"),
        ],
    ))
    .await;
    assert_eq!(callback.status(), StatusCode::NO_CONTENT);
    counts.push((Kind::RecordingCallback, n));
    let (relayed, n) = statements_of(app.post_twilio(
        "/webhooks/twilio/sms",
        &[
            ("MessageSid", "SMcustomer1"),
            ("AccountSid", ACCOUNT),
            ("From", "+447700900555"),
            ("To", NUMBER),
            ("Body", "Are you free on Friday?"),
        ],
    ))
    .await;
    assert_eq!(relayed.status(), StatusCode::OK);
    counts.push((Kind::CustomerText, n));
    counts
}
