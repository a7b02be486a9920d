//! Every webhook route driven with arbitrary forms, bytes and Unicode on PostgreSQL: never a 5xx or
//! a panic, and a request refused with a 4xx changes nothing stored.
//!
//! Signatures are off (dev mode) so that the inputs reach the parsers behind them.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};

use axum::body::Body;
use axum::http::{Request, header};
use onboard::http;
use onboard::store::PgStore;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use support::app::{TestApp, spawn_postgres, test_config};
use tower::ServiceExt;

const ROUTES: [&str; 5] = [
    "/webhooks/twilio/sms",
    "/webhooks/twilio/message-status",
    "/webhooks/twilio/voice",
    "/webhooks/twilio/call-status",
    "/webhooks/stripe",
];

/// Pieces that have broken parsers and databases before, and pieces that get a request far.
const ATOMS: &[&str] = &[
    "\u{212A}", // KELVIN SIGN: lowercases to a shorter `k`
    "K",
    "\u{0301}", // combining acute accent
    "e\u{0301}",
    "\u{202E}", // right-to-left override
    "\0",
    "\u{1}",
    "\u{7f}",
    "\u{85}",
    "\u{FEFF}",
    "\u{10FFFF}",
    "İ",
    "ß",
    "😀",
    "+447700900123",
    "+447700900000",
    "+14155550142",
    "+44",
    "SM1",
    "CA1",
    "evt_1",
    "c_0000000001",
    "cus_1",
    "ringing",
    "completed",
    "sent",
    "inbound",
    "STOP",
    "YES",
    "Plumber in Leeds",
    "%",
    "&",
    "=",
    "+",
    " ",
    "\n",
    "2147483648",
    "-1",
    "7",
];

const FIELDS: &[&str] = &[
    "MessageSid",
    "From",
    "To",
    "Body",
    "MessageStatus",
    "ErrorCode",
    "CallSid",
    "CallStatus",
    "Direction",
    "ForwardedFrom",
    "SequenceNumber",
    "CallDuration",
    "body",
    "\u{212A}",
];

/// Raw form fragments no Rust string can hold: lone surrogates and overlong encodings, NUL, bad escapes.
const RAW: &[&str] = &["", "%ED%A0%80", "%00", "%C0%80", "%", "%zz", "&=&", "%FF"];

/// JSON escapes spliced into a Stripe payload: NUL, a lone surrogate, a right-to-left override.
const ESCAPES: &[&str] = &["", "\\u0000", "\\ud800", "\\u202e"];

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::collection::vec(prop::sample::select(ATOMS), 0..6).prop_map(|v| v.concat()),
        1 => any::<String>(),
    ]
}

/// A request each Twilio route would take, field by field; the fuzzing below spoils some of them.
const TWILIO_FORMS: [(&str, &[(&str, &str)]); 4] = [
    (
        "/webhooks/twilio/sms",
        &[
            ("MessageSid", "SM"),
            ("From", "+447700900123"),
            ("To", "+447700900000"),
            ("Body", "Hi"),
        ],
    ),
    (
        "/webhooks/twilio/message-status",
        &[
            ("MessageSid", "SM"),
            ("MessageStatus", "delivered"),
            ("ErrorCode", "30003"),
        ],
    ),
    (
        "/webhooks/twilio/voice",
        &[
            ("CallSid", "CA"),
            ("From", "+447700900555"),
            ("To", "+447700900900"),
            ("Direction", "inbound"),
            ("CallStatus", "ringing"),
            ("ForwardedFrom", "+447700900123"),
        ],
    ),
    (
        "/webhooks/twilio/call-status",
        &[
            ("CallSid", "CA"),
            ("CallStatus", "completed"),
            ("SequenceNumber", "3"),
            ("CallDuration", "12"),
        ],
    ),
];

/// What becomes of one field of a good request.
#[derive(Debug, Clone)]
enum Spoil {
    Keep,
    Replace(String),
    Drop,
}

fn spoil() -> impl Strategy<Value = Spoil> {
    prop_oneof![
        6 => Just(Spoil::Keep),
        3 => text().prop_map(Spoil::Replace),
        1 => Just(Spoil::Drop),
    ]
}

/// A Twilio route and a form for it: its good fields, some spoiled, a fresh sid, maybe extra
/// fields, maybe a raw fragment no string can hold.
fn twilio_request() -> impl Strategy<Value = (&'static str, Vec<u8>)> {
    (
        prop::sample::select(&TWILIO_FORMS[..]),
        "[A-Za-z0-9]{1,12}",
        prop::collection::vec(spoil(), 6),
        prop::collection::vec((prop::sample::select(FIELDS), text()), 0..3),
        prop::sample::select(FIELDS),
        prop_oneof![4 => Just(""), 1 => prop::sample::select(RAW)],
    )
        .prop_map(|((route, fields), sid, spoils, extra, raw_field, raw)| {
            let mut pairs: Vec<(String, String)> = Vec::new();
            for ((name, value), spoil) in fields.iter().zip(spoils) {
                let value = match spoil {
                    Spoil::Keep if name.ends_with("Sid") => format!("{value}{sid}"),
                    Spoil::Keep => (*value).to_owned(),
                    Spoil::Replace(other) => other,
                    Spoil::Drop => continue,
                };
                pairs.push(((*name).to_owned(), value));
            }
            pairs.extend(extra.into_iter().map(|(k, v)| (k.to_owned(), v)));
            let mut body = serde_urlencoded::to_string(&pairs).expect("strings encode");
            if !raw.is_empty() {
                body.push_str(&format!("&{raw_field}={raw}"));
            }
            (route, body.into_bytes())
        })
}

/// A Stripe event, mostly well formed, with Unicode and JSON escapes in its fields.
fn stripe_event() -> impl Strategy<Value = Vec<u8>> {
    (
        prop_oneof![3 => "[A-Za-z0-9]{1,12}", 1 => text()],
        prop_oneof![
            Just("checkout.session.completed".to_owned()),
            Just("charge.refunded".to_owned()),
            Just("customer.subscription.deleted".to_owned()),
            text(),
        ],
        prop_oneof![Just("c_0000000001".to_owned()), text()],
        text(),
        prop_oneof![Just("paid".to_owned()), text()],
        prop::sample::select(ESCAPES),
    )
        .prop_map(|(id, kind, reference, customer, paid, escape)| {
            let event = serde_json::json!({
                "id": format!("evt_{id}"), "object": "event", "type": kind,
                "data": {"object": {"id": "cs_1", "payment_status": paid,
                    "client_reference_id": reference, "customer": customer,
                    "amount": 500, "amount_refunded": 500,
                    "metadata": {"note": "ESCAPE"}}}
            });
            event.to_string().replace("ESCAPE", escape).into_bytes()
        })
}

fn request() -> impl Strategy<Value = (&'static str, Vec<u8>)> {
    prop_oneof![
        6 => twilio_request(),
        3 => stripe_event().prop_map(|body| ("/webhooks/stripe", body)),
        1 => (
            prop::sample::select(&ROUTES[..]),
            prop::collection::vec(any::<u8>(), 0..200),
        ),
    ]
}

/// Everything stored, hashed: equal before and after means nothing changed.
async fn fingerprint(store: &PgStore) -> String {
    let tables = [
        "owners",
        "inbound_messages",
        "state_history",
        "outbound_messages",
        "pool_numbers",
        "webhook_events",
        "calls",
        "stripe_links",
    ];
    let parts: Vec<String> = tables
        .iter()
        .map(|t| {
            format!("coalesce((SELECT string_agg(x::text, '|' ORDER BY x::text) FROM {t} x), '')")
        })
        .collect();
    let sql = format!("SELECT md5({})", parts.join(" || '#' || "));
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .fetch_one(store.pool())
        .await
        .expect("fingerprint")
}

#[test]
fn no_webhook_input_gets_a_5xx_or_changes_anything_when_refused() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let app: TestApp<PgStore> = runtime.block_on(spawn_postgres(test_config(&[(
        "ONBOARD_INSECURE_WEBHOOKS",
        "1",
    )])));
    let router = http::router(app.state());
    // How many were answered and refused: a run that never reached a handler would prove little.
    let answered = AtomicUsize::new(0);
    let refused = AtomicUsize::new(0);
    let mut runner = TestRunner::new(Config {
        cases: 400,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&request(), |(route, body)| {
            runtime.block_on(async {
                let store = app.engine.store();
                let before = fingerprint(store).await;
                let content_type = if route.ends_with("stripe") {
                    "application/json"
                } else {
                    "application/x-www-form-urlencoded"
                };
                let request = Request::post(route)
                    .header(header::CONTENT_TYPE, content_type)
                    .body(Body::from(body.clone()))
                    .expect("request");
                let response = router.clone().oneshot(request).await.expect("infallible");
                let status = response.status();
                let text = axum::body::to_bytes(response.into_body(), 1 << 20)
                    .await
                    .expect("body");
                let shown = String::from_utf8_lossy(&body).into_owned();
                prop_assert!(
                    !status.is_server_error(),
                    "{route} answered {status} ({}) to {shown:?}",
                    String::from_utf8_lossy(&text)
                );
                if status.is_success() {
                    answered.fetch_add(1, Ordering::Relaxed);
                }
                if status.is_client_error() {
                    refused.fetch_add(1, Ordering::Relaxed);
                    prop_assert_eq!(
                        fingerprint(store).await,
                        before,
                        "{} refused with {} but changed what is stored: {:?}",
                        route,
                        status,
                        shown
                    );
                }
                Ok(())
            })
        })
        .unwrap_or_else(|e| panic!("{e}"));
    let (answered, refused) = (answered.into_inner(), refused.into_inner());
    eprintln!("{answered} answered, {refused} refused");
    assert!(
        answered >= 10 && refused >= 10,
        "{answered} answered, {refused} refused"
    );
}
