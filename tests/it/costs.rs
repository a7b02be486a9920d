//! Usage and cost: every billable thing lands in the ledger in its own transaction, priced from
//! `prices/`; Twilio's real price replaces the estimate; budgets warn and stop discretionary spend
//! once per period, across replicas, while replies to owners always go out.

use crate::support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, Utc};
use onboard::clock::{Clock, ManualClock, RandomIds, SequentialIds};
use onboard::conversation::StateName;
use onboard::domain::{Country, OwnerId, PhoneNumber};
use onboard::engine::{Engine, InboundSms};
use onboard::outbox::{CallSettings, Outbox, OutboxSettings, Sender};
use onboard::prices::{Amount, CostKind};
use onboard::replay::{fixture_epoch, message_text};
use onboard::replenish::{CircuitBreaker, ReplenishSettings, Replenisher, RunOutcome};
use onboard::store::ledger::{GroupBy, LedgerTx, NewCost};
use onboard::store::replenish::ReplenishStore;
use onboard::store::{NewOutbound, PgStore, SqliteStore, Store, Tx};
use onboard::twilio::client::{Credentials, TwilioClient};
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::app::{ADMIN_TOKEN, TestApp, spawn_app, test_config};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const ACCOUNT: &str = "AC00000000000000000000000000000000";
const ONBOARDING: &str = "+447700900000";
const OWNER: &str = "+447700900123";

async fn sqlite() -> SqliteStore {
    let store = SqliteStore::in_memory().await.expect("sqlite");
    store.migrate().await.expect("migrate");
    store
}

async fn postgres() -> PgStore {
    let url = support::fresh_postgres_database().await;
    let store = PgStore::connect(&url, 10).await.expect("connect");
    store.migrate().await.expect("migrate");
    store
}

fn twilio_client(server: &MockServer) -> TwilioClient {
    TwilioClient::new(
        &server.uri(),
        Credentials {
            account_sid: ACCOUNT.into(),
            username: ACCOUNT.into(),
            secret: support::app::AUTH_TOKEN.into(),
        },
        StdDuration::from_secs(5),
    )
}

fn outbox<S: Store>(store: S, server: &MockServer, clock: Arc<ManualClock>) -> Outbox<S> {
    Outbox::new(
        store,
        Sender::Twilio {
            client: twilio_client(server),
            from: ONBOARDING.parse().unwrap(),
            status_callback: "https://onboard.example.com/webhooks/twilio/message-status".into(),
            calls: CallSettings {
                from: ONBOARDING.parse().unwrap(),
                status_callback: "https://onboard.example.com/webhooks/twilio/call-status".into(),
                ring_seconds: 30,
            },
        },
        clock,
        OutboxSettings::default(),
    )
}

/// Twilio's Messages API, answering each send with a new sid `SMout<n>`.
async fn mount_messages(server: &MockServer) {
    Mock::given(method("POST"))
        .and(path(format!(
            "/2010-04-01/Accounts/{ACCOUNT}/Messages.json"
        )))
        .respond_with({
            let sent = AtomicUsize::new(0);
            move |_: &wiremock::Request| {
                let n = sent.fetch_add(1, Ordering::SeqCst);
                ResponseTemplate::new(201).set_body_json(json!({
                    "sid": format!("SMout{n}"), "status": "queued", "to": OWNER, "from": ONBOARDING
                }))
            }
        })
        .mount(server)
        .await;
}

async fn text<S: Store>(engine: &Engine<S>, sid: &str, from: &str, body: &str) -> String {
    let twiml = engine
        .handle_sms(&InboundSms {
            message_sid: sid.to_owned(),
            from: from.to_owned(),
            to: ONBOARDING.to_owned(),
            body: body.to_owned(),
        })
        .await
        .unwrap_or_else(|e| panic!("{body:?}: {e}"));
    message_text(&twiml).unwrap_or_default()
}

/// Everything in the ledger, by kind: (quantity, reporting amount).
async fn by_kind<S: Store>(engine: &Engine<S>) -> Vec<(String, i64, Amount)> {
    engine
        .cost_report(
            DateTime::<Utc>::UNIX_EPOCH,
            engine.now() + Duration::days(400),
            GroupBy::Kind,
        )
        .await
        .unwrap()
        .into_iter()
        .map(|g| {
            (
                g.key.unwrap_or_default(),
                g.quantity,
                Amount(g.reporting_micros),
            )
        })
        .collect()
}

fn kind(rows: &[(String, i64, Amount)], name: &str) -> (i64, Amount) {
    rows.iter()
        .find(|(k, _, _)| k == name)
        .map(|(_, q, a)| (*q, *a))
        .unwrap_or((0, Amount::ZERO))
}

fn gbp(raw: &str) -> Amount {
    Amount::parse(raw).unwrap()
}

// --- segments feed the ledger -------------------------------------------------------------------

async fn segments_feed_the_ledger<S: Store>(store: S) {
    let server = MockServer::start().await;
    mount_messages(&server).await;
    let clock = Arc::new(ManualClock::new(fixture_epoch()));
    let engine = support::app::engine_on(
        store.clone(),
        &test_config(&[("ONBOARDING_NUMBER", ONBOARDING)]),
        clock.clone(),
        Arc::new(SequentialIds::default()),
    );
    // 161 GSM-7 characters: two segments. 36 emoji are 72 UTF-16 units of UCS-2: two segments.
    // A curly apostrophe forces UCS-2, but 20 characters still fit one.
    text(&engine, "SMgsm", OWNER, &"a".repeat(161)).await;
    text(&engine, "SMucs", "+447700900124", &"😀".repeat(36)).await;
    text(&engine, "SMone", "+447700900125", "I’m a plumber in Leeds").await;
    let rows = by_kind(&engine).await;
    assert_eq!(kind(&rows, "sms_inbound").0, 2 + 2 + 1, "{rows:?}");
    // A retried MessageSid is answered from the stored reply and billed once.
    text(&engine, "SMgsm", OWNER, &"a".repeat(161)).await;
    assert_eq!(by_kind(&engine).await, rows);

    // A text the outbox sends is billed when it goes out: 70 UCS-2 units fit one segment, 71 not.
    let owner = engine
        .owner_by_phone(&OWNER.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    let body = format!("{}’", "x".repeat(70));
    let mut tx = store.begin().await.unwrap();
    tx.queue_outbound(&NewOutbound {
        owner_id: &owner.id,
        to: &owner.owner_phone,
        body: &body,
        created_at: clock.now(),
    })
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let before = kind(&by_kind(&engine).await, "sms_outbound");
    assert_eq!(
        outbox(store.clone(), &server, clock.clone())
            .run_once(None)
            .await
            .unwrap(),
        1
    );
    let after = kind(&by_kind(&engine).await, "sms_outbound");
    assert_eq!(after.0 - before.0, 2, "71 UCS-2 units are two segments");
    assert_eq!(Amount(after.1.micros() - before.1.micros()), gbp("0.08"));
}

#[tokio::test]
async fn segment_counting_feeds_the_ledger_on_sqlite() {
    segments_feed_the_ledger(sqlite().await).await;
}

#[tokio::test]
async fn segment_counting_feeds_the_ledger_on_postgres() {
    segments_feed_the_ledger(postgres().await).await;
}

// --- a full journey, hand-computed ------------------------------------------------------------

async fn journey_matches_a_hand_computed_total<S: Store>(app: TestApp<S>) {
    let twilio = MockServer::start().await;
    mount_messages(&twilio).await;
    Mock::given(method("POST"))
        .and(path(format!("/2010-04-01/Accounts/{ACCOUNT}/Calls.json")))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({
            "sid": "CAverify1", "status": "queued"
        })))
        .mount(&twilio)
        .await;
    app.engine
        .add_numbers(&["+447700900900".parse().unwrap()])
        .await
        .unwrap();
    let outbox = outbox(app.engine.store().clone(), &twilio, app.clock.clone());

    let mut replies = Vec::new();
    let answers = [
        "Hi there",
        "Plumber in Leeds",
        "Smith & Sons",
        "Jo Smith",
        "jo@smith.example",
        "YES",
    ];
    for (n, body) in answers.iter().enumerate() {
        let response = app.text(&format!("SMj{n}"), OWNER, body).await;
        assert_eq!(response.status(), StatusCode::OK);
        replies.push(message_text(&response.text().await.unwrap()).unwrap_or_default());
    }
    let owner = app
        .engine
        .owner_by_phone(&OWNER.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    app.engine
        .apply(&owner.id, onboard::conversation::Event::PaymentConfirmed)
        .await
        .unwrap();
    // The number text goes out through the outbox.
    assert_eq!(outbox.run_once(None).await.unwrap(), 1);
    for (n, body) in ["1", "done"].iter().enumerate() {
        let response = app.text(&format!("SMk{n}"), OWNER, body).await;
        replies.push(message_text(&response.text().await.unwrap()).unwrap_or_default());
    }
    // The verification call: placed, then 61 seconds long (two started minutes).
    assert_eq!(outbox.run_once(None).await.unwrap(), 1);
    let status = app
        .post_twilio(
            "/webhooks/twilio/call-status",
            &[
                ("CallSid", "CAverify1"),
                ("CallStatus", "completed"),
                ("SequenceNumber", "3"),
                ("CallDuration", "61"),
            ],
        )
        .await;
    assert_eq!(status.status(), StatusCode::NO_CONTENT);

    // The texts the outbox sent, as Twilio received them.
    let outbox_bodies: Vec<String> = twilio
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.url.path().ends_with("/Messages.json"))
        .map(|r| {
            let form: Vec<(String, String)> = serde_urlencoded::from_bytes(&r.body).unwrap();
            form.into_iter().find(|(k, _)| k == "Body").unwrap().1
        })
        .collect();
    assert_eq!(outbox_bodies.len(), 1);

    // By hand, at the GB list prices: £0.0075 a segment in, £0.04 a segment out, £0.08 a minute
    // out; every text from the owner is one GSM-7 segment.
    let segments = |texts: &[String]| -> i64 {
        texts
            .iter()
            .filter(|t| !t.is_empty())
            .map(|t| onboard::sms::segments(t) as i64)
            .sum()
    };
    let texts_in = 8;
    let out_segments = segments(&replies) + segments(&outbox_bodies);
    let expected = Amount(
        texts_in * gbp("0.0075").micros()
            + out_segments * gbp("0.04").micros()
            + 2 * gbp("0.08").micros(),
    );
    let rows = by_kind(&app.engine).await;
    assert_eq!(kind(&rows, "sms_inbound"), (texts_in, gbp("0.06")));
    assert_eq!(kind(&rows, "sms_outbound").0, out_segments);
    assert_eq!(kind(&rows, "call_outbound"), (2, gbp("0.16")));

    // The admin API says the same, and so does the owner's record.
    let costs: Value = app
        .http
        .get(format!("{}/admin/api/costs?group_by=kind", app.address))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(costs["currency"], "GBP");
    assert_eq!(costs["total"], expected.to_string(), "{costs}");
    let record: Value = app
        .http
        .get(format!("{}/admin/api/clients/{}", app.address, owner.id))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        record["costs"]["all_time"],
        expected.to_string(),
        "{record}"
    );
    assert_eq!(record["costs"]["this_month"], expected.to_string());

    // Bad parameters are a 400 naming the field.
    for (query, field) in [
        ("group_by=week", "group_by"),
        ("from=yesterday", "from"),
        ("from=2026-02-01&to=2026-01-01", "to"),
    ] {
        let response = app
            .http
            .get(format!("{}/admin/api/costs?{query}", app.address))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{query}");
        let body = response.text().await.unwrap();
        assert!(body.contains(field), "{query}: {body}");
    }
    let by_day: Value = app
        .http
        .get(format!(
            "{}/admin/api/costs?group_by=day&from=2026-01-05&to=2026-01-06",
            app.address
        ))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(by_day["rows"][0]["key"], "2026-01-05", "{by_day}");
    assert_eq!(by_day["rows"][0]["amount"], expected.to_string());

    // The cost keeper publishes the ledger's totals per kind, the same on every replica.
    onboard::costs::run_once(&app.engine, None, None)
        .await
        .unwrap();
    let metrics = app
        .http
        .get(format!("{}/metrics", app.address))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("onboard_spend_total{kind=\"sms_inbound\"} 0.06"),
        "{metrics}"
    );
    assert!(
        metrics.contains("onboard_spend_total{kind=\"call_outbound\"} 0.16"),
        "{metrics}"
    );
    assert!(metrics.contains("onboard_budget_used_ratio{period=\"day\"} 0"));
}

fn journey_config(twilio_base: &str) -> onboard::config::Config {
    test_config(&[
        ("TWILIO_API_BASE", twilio_base),
        ("ONBOARDING_NUMBER", ONBOARDING),
    ])
}

#[tokio::test]
async fn a_full_journeys_ledger_matches_a_hand_computed_total_on_sqlite() {
    let app = spawn_app(sqlite().await, journey_config("http://127.0.0.1:9")).await;
    journey_matches_a_hand_computed_total(app).await;
}

#[tokio::test]
async fn a_full_journeys_ledger_matches_a_hand_computed_total_on_postgres() {
    let app = spawn_app(postgres().await, journey_config("http://127.0.0.1:9")).await;
    journey_matches_a_hand_computed_total(app).await;
}

// --- real prices ------------------------------------------------------------------------------

async fn real_price_replaces_the_estimate<S: Store>(store: S) {
    let server = MockServer::start().await;
    mount_messages(&server).await;
    let clock = Arc::new(ManualClock::new(fixture_epoch()));
    let engine = support::app::engine_on(
        store.clone(),
        &test_config(&[("ONBOARDING_NUMBER", ONBOARDING)]),
        clock.clone(),
        Arc::new(SequentialIds::default()),
    );
    text(&engine, "SMin1", OWNER, "Hi").await;
    // Twilio knows the inbound text's price (in USD, converted at the file's rate); it has none
    // yet for the second text, whose estimate stands.
    Mock::given(method("GET"))
        .and(path(format!(
            "/2010-04-01/Accounts/{ACCOUNT}/Messages/SMin1.json"
        )))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "sid": "SMin1", "status": "received", "price": "-0.01000", "price_unit": "USD"
        })))
        .mount(&server)
        .await;
    text(&engine, "SMin2", OWNER, "Plumber in Leeds").await;
    Mock::given(method("GET"))
        .and(path(format!(
            "/2010-04-01/Accounts/{ACCOUNT}/Messages/SMin2.json"
        )))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "sid": "SMin2", "status": "received", "price": null, "price_unit": "USD"
        })))
        .mount(&server)
        .await;
    let client = twilio_client(&server);
    // Too soon: a message is asked about only once it is surely final.
    assert_eq!(engine.record_real_prices(&client).await.unwrap(), 0);
    assert!(server.received_requests().await.unwrap().is_empty());
    clock.advance(Duration::minutes(10));
    assert_eq!(engine.record_real_prices(&client).await.unwrap(), 1);
    let (quantity, amount) = kind(&by_kind(&engine).await, "sms_inbound");
    assert_eq!(quantity, 2);
    // 0.01 USD at 0.79 is £0.0079, replacing £0.0075; the other stays at £0.0075.
    assert_eq!(amount, gbp("0.0154"));
    // Asked again after the retry interval, never twice for the priced one.
    clock.advance(Duration::minutes(31));
    assert_eq!(engine.record_real_prices(&client).await.unwrap(), 0);
    let asked: Vec<String> = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| r.url.path().to_owned())
        .collect();
    assert_eq!(
        asked.iter().filter(|p| p.ends_with("SMin1.json")).count(),
        1
    );
    assert_eq!(
        asked.iter().filter(|p| p.ends_with("SMin2.json")).count(),
        2
    );
}

#[tokio::test]
async fn twilios_real_price_replaces_the_estimate_on_sqlite() {
    real_price_replaces_the_estimate(sqlite().await).await;
}

#[tokio::test]
async fn twilios_real_price_replaces_the_estimate_on_postgres() {
    real_price_replaces_the_estimate(postgres().await).await;
}

// --- budgets ------------------------------------------------------------------------------------

/// Writes a cost as if something had been bought, to move spend without many texts.
/// A Twilio that lists these US numbers and sells any number asked for.
async fn sells_us_numbers(twilio: &MockServer, numbers: &[&str]) {
    let listed: Vec<Value> = numbers
        .iter()
        .map(|n| json!({"phone_number": n, "iso_country": "US"}))
        .collect();
    Mock::given(method("GET"))
        .and(path(format!(
            "/2010-04-01/Accounts/{ACCOUNT}/AvailablePhoneNumbers/US/Local.json"
        )))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({ "available_phone_numbers": listed })),
        )
        .mount(twilio)
        .await;
    Mock::given(method("POST"))
        .and(path(format!(
            "/2010-04-01/Accounts/{ACCOUNT}/IncomingPhoneNumbers.json"
        )))
        .respond_with(|request: &wiremock::Request| {
            let form: Vec<(String, String)> = serde_urlencoded::from_bytes(&request.body).unwrap();
            let number = form
                .into_iter()
                .find(|(k, _)| k == "PhoneNumber")
                .unwrap()
                .1;
            ResponseTemplate::new(201).set_body_json(json!({
                "sid": format!("PN{}", number.trim_start_matches('+')), "phone_number": number
            }))
        })
        .mount(twilio)
        .await;
}

async fn spend<S: Store>(store: &S, key: &str, amount: &str, at: DateTime<Utc>) {
    let amount = gbp(amount);
    let mut tx = store.begin().await.unwrap();
    tx.record_cost(&NewCost {
        source_key: key.to_owned(),
        owner_id: None,
        kind: CostKind::NumberPurchase,
        quantity: 1,
        country: Country::Gb,
        currency: "GBP",
        estimated: amount,
        reporting: amount,
        provider_id: None,
        at,
    })
    .await
    .unwrap();
    tx.commit().await.unwrap();
}

fn budget_engine<S: Store>(store: S, clock: Arc<ManualClock>) -> Arc<Engine<S>> {
    support::app::engine_on(
        store,
        &test_config(&[
            ("ONBOARDING_NUMBER", ONBOARDING),
            ("BUDGET_DAILY", "10"),
            ("BUDGET_MONTHLY", "1000"),
        ]),
        clock,
        // Random ids: two engines counting from 1 would hand out the same ids.
        Arc::new(RandomIds::default()),
    )
}

async fn alerts_fire_once_per_period<S: Store>(first: S, second: S) {
    let clock = Arc::new(ManualClock::new(fixture_epoch()));
    let a = budget_engine(first.clone(), clock.clone());
    let b = budget_engine(second, clock.clone());
    let alerts = |engine: Arc<Engine<S>>| async move {
        engine
            .budget_report()
            .await
            .unwrap()
            .alerts
            .into_iter()
            .map(|a| format!("{} {} {}", a.period, a.period_start, a.level))
            .collect::<Vec<_>>()
    };

    spend(&first, "buy:1", "7.99", clock.now()).await;
    a.budget_status().await.unwrap();
    assert!(alerts(a.clone()).await.is_empty(), "79.9% warns of nothing");

    spend(&first, "buy:2", "0.01", clock.now()).await;
    // Both replicas look, many times and at once: one warning.
    let looks: Vec<_> = (0..8)
        .map(|i| {
            let engine = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move { engine.budget_status().await.unwrap() })
        })
        .collect();
    for look in looks {
        let status = look.await.unwrap();
        assert!(!status.exceeded());
        assert_eq!(status.day.used_ratio, Some(0.8));
    }
    assert_eq!(alerts(b.clone()).await, ["day 2026-01-05 warning"]);

    spend(&first, "buy:3", "2.00", clock.now()).await;
    for engine in [&a, &b, &a] {
        assert!(engine.budget_status().await.unwrap().exceeded());
    }
    assert_eq!(
        alerts(a.clone()).await,
        ["day 2026-01-05 warning", "day 2026-01-05 exceeded"]
    );

    // The next day is a new period: nothing spent, nothing fired, until it is crossed again.
    clock.advance(Duration::days(1));
    let status = b.budget_status().await.unwrap();
    assert!(!status.exceeded());
    assert_eq!(status.day.spent, Amount::ZERO);
    assert_eq!(status.month.spent, gbp("10"));
    assert!(alerts(a.clone()).await.is_empty());
    spend(&first, "buy:4", "12", clock.now()).await;
    a.budget_status().await.unwrap();
    b.budget_status().await.unwrap();
    assert_eq!(
        alerts(b.clone()).await,
        ["day 2026-01-06 warning", "day 2026-01-06 exceeded"]
    );
}

#[tokio::test]
async fn budget_warning_and_exceeded_fire_once_per_period_on_sqlite() {
    let store = sqlite().await;
    alerts_fire_once_per_period(store.clone(), store).await;
}

#[tokio::test]
async fn budget_warning_and_exceeded_fire_once_per_period_on_postgres_with_two_replicas() {
    let url = support::fresh_postgres_database().await;
    let first = PgStore::connect(&url, 10).await.unwrap();
    first.migrate().await.unwrap();
    let second = PgStore::connect(&url, 10).await.unwrap();
    alerts_fire_once_per_period(first, second).await;
}

// --- the guard ------------------------------------------------------------------------------------

async fn owner<S: Store>(engine: &Engine<S>, phone: &str) -> onboard::store::Owner {
    engine
        .owner_by_phone(&phone.parse::<PhoneNumber>().unwrap())
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("no owner {phone}"))
}

async fn outbound_bodies<S: Store>(store: &S, owner: &OwnerId) -> Vec<String> {
    store
        .outbound_after(0)
        .await
        .unwrap()
        .into_iter()
        .filter(|m| &m.owner_id == owner)
        .map(|m| m.body)
        .collect()
}

#[tokio::test]
async fn the_guard_holds_purchases_reminders_and_new_owners_but_not_replies_on_two_replicas() {
    let url = support::fresh_postgres_database().await;
    let first = PgStore::connect(&url, 10).await.unwrap();
    first.migrate().await.unwrap();
    let second = PgStore::connect(&url, 10).await.unwrap();
    // 10:00 UTC on a Monday: no quiet hours in the way.
    let clock = Arc::new(ManualClock::new(fixture_epoch() + Duration::hours(1)));
    let a = budget_engine(first.clone(), clock.clone());
    let b = budget_engine(second.clone(), clock.clone());

    // Jo starts before the budget runs out and goes quiet at S2, with a reminder due in 2 hours.
    text(&a, "SMjo1", OWNER, "Hi").await;
    text(&b, "SMjo2", OWNER, "Plumber in Leeds").await;
    assert_eq!(owner(&a, OWNER).await.state, StateName::S2BusinessName);

    // Sam gets as far as the payment link.
    const SAM: &str = "+447700900130";
    for (n, body) in [
        "Hi",
        "Plumber in Leeds",
        "Sam's Plumbing",
        "Sam Jones",
        "sms",
        "YES",
    ]
    .iter()
    .enumerate()
    {
        text(&a, &format!("SMsam{n}"), SAM, body).await;
    }
    a.add_numbers(&["+447700900900".parse().unwrap()])
        .await
        .unwrap();

    spend(&first, "buy:big", "25", clock.now()).await;
    assert!(a.budget_status().await.unwrap().exceeded());

    // A reply to an owner already in a conversation always goes out, from either replica.
    let reply = text(&b, "SMjo3", OWNER, "Smith & Sons").await;
    assert!(reply.contains("your name"), "{reply}");

    // So do the texts a payment causes, and the verification call.
    let sam = owner(&a, SAM).await;
    let paid = b
        .apply(&sam.id, onboard::conversation::Event::PaymentConfirmed)
        .await
        .unwrap();
    assert_eq!(paid.state, StateName::S6PhoneType);
    assert_eq!(outbound_bodies(&first, &sam.id).await.len(), 1);
    text(&a, "SMsam6", SAM, "1").await;
    text(&b, "SMsam7", SAM, "done").await;
    assert_eq!(owner(&a, SAM).await.state, StateName::S8FwdConfirmed);
    let calls = first
        .outbound_after(0)
        .await
        .unwrap()
        .into_iter()
        .filter(|m| m.owner_id == sam.id && m.kind == onboard::store::OutboundKind::VerifyCall)
        .count();
    assert_eq!(calls, 1, "the verification call is queued");

    // A new owner is told we are full, on either replica, and held; texting again says nothing.
    let full = text(&a, "SMnew1", "+447700900555", "Hi, I'm a plumber in York").await;
    assert!(full.contains("full today"), "{full}");
    assert_eq!(text(&b, "SMnew2", "+447700900555", "Hello?").await, "");
    let newcomer = owner(&a, "+447700900555").await;
    assert_eq!(newcomer.state, StateName::S1BusinessTypeLocation);
    assert_eq!(newcomer.business_type, None);

    // Reminders are held, not dropped: Jo's is due and stays due.
    clock.advance(Duration::hours(3));
    for engine in [&a, &b] {
        let sweep = engine.send_reminders().await.unwrap();
        assert!(sweep.held_by_budget);
        assert_eq!(sweep.sent, 0);
    }
    let jo = owner(&a, OWNER).await;
    assert!(outbound_bodies(&first, &jo.id).await.is_empty());

    // The pool keeper buys nothing while exceeded, though the pool is empty.
    let twilio = MockServer::start().await;
    let keeper = Replenisher::new(
        b.clone(),
        twilio_client(&twilio),
        Arc::new(CircuitBreaker::new(clock.clone(), 5, Duration::minutes(5))),
        ReplenishSettings::new(2, 10, Country::Us, "https://onboard.example.com"),
    );
    match keeper.run_once().await.unwrap() {
        RunOutcome::Ran(report) => {
            assert!(report.held_by_budget);
            assert!(report.bought.is_empty());
        }
        other => panic!("{other:?}"),
    }
    assert!(twilio.received_requests().await.unwrap().is_empty());

    // The day turns (10:00 the next morning, out of quiet hours): the held newcomer is served
    // first, by one replica, and Jo's reminder goes out.
    clock.set(fixture_epoch() + Duration::days(1) + Duration::hours(1));
    let (served_a, served_b) = tokio::join!(a.release_held_owners(), b.release_held_owners());
    assert_eq!(served_a.unwrap() + served_b.unwrap(), 1);
    let greeted = outbound_bodies(&first, &newcomer.id).await;
    assert_eq!(greeted.len(), 1, "{greeted:?}");
    assert!(greeted[0].contains("business"), "{greeted:?}");
    assert_eq!(
        owner(&b, "+447700900555").await.state,
        StateName::S2BusinessName
    );
    let sweep = b.send_reminders().await.unwrap();
    assert!(!sweep.held_by_budget);
    // Jo's, and Sam's (quiet since the test call was asked for).
    assert_eq!(sweep.sent, 2);
    assert_eq!(outbound_bodies(&second, &jo.id).await.len(), 1);

    // And the keeper buys again, each number on the ledger with its purchase.
    sells_us_numbers(&twilio, &["+12125550101", "+12125550102"]).await;
    match keeper.run_once().await.unwrap() {
        RunOutcome::Ran(report) => {
            assert!(!report.held_by_budget);
            assert_eq!(report.bought.len(), 2, "{report:?}");
        }
        other => panic!("{other:?}"),
    }
    // The £25 written above, then two US numbers at $1.15, 0.79 to the pound.
    assert_eq!(
        kind(&by_kind(&a).await, "number_purchase"),
        (3, gbp("26.817"))
    );
}

#[tokio::test]
async fn a_held_owner_who_texts_after_the_period_turns_is_greeted_from_their_first_text() {
    let store = sqlite().await;
    let clock = Arc::new(ManualClock::new(fixture_epoch() + Duration::hours(1)));
    let engine = budget_engine(store.clone(), clock.clone());
    spend(&store, "buy:big", "25", clock.now()).await;
    let full = text(&engine, "SM1", OWNER, "I'm a plumber in Leeds").await;
    assert!(full.contains("full today"), "{full}");
    clock.advance(Duration::days(1));
    let greeting = text(&engine, "SM2", OWNER, "Hello?").await;
    assert!(greeting.contains("name of your business"), "{greeting}");
    assert_eq!(owner(&engine, OWNER).await.state, StateName::S2BusinessName);
}

// --- rent -----------------------------------------------------------------------------------------

async fn rent_is_charged_once_a_month<S: Store>(first: S, second: S) {
    let clock = Arc::new(ManualClock::new(fixture_epoch()));
    let a = budget_engine(first.clone(), clock.clone());
    let b = budget_engine(second, clock.clone());
    a.add_numbers(&[
        "+447700900901".parse().unwrap(),
        "+12125550123".parse().unwrap(),
    ])
    .await
    .unwrap();
    // Added this month: the first charge is next month's.
    assert_eq!(a.charge_rent().await.unwrap(), 0);
    clock.advance(Duration::days(31));
    let (x, y) = tokio::join!(a.charge_rent(), b.charge_rent());
    assert_eq!(x.unwrap() + y.unwrap(), 2);
    assert_eq!(a.charge_rent().await.unwrap(), 0);
    // £1.00 for the UK number, $1.15 at 0.79 for the US one.
    assert_eq!(
        kind(&by_kind(&a).await, "number_rental"),
        (2, gbp("1.9085"))
    );
}

#[tokio::test]
async fn rent_is_charged_once_a_month_on_sqlite() {
    let store = sqlite().await;
    rent_is_charged_once_a_month(store.clone(), store).await;
}

#[tokio::test]
async fn rent_is_charged_once_a_month_on_postgres_with_two_replicas() {
    let url = support::fresh_postgres_database().await;
    let first = PgStore::connect(&url, 10).await.unwrap();
    first.migrate().await.unwrap();
    let second = PgStore::connect(&url, 10).await.unwrap();
    rent_is_charged_once_a_month(first, second).await;
}

/// A paid owner waiting for a number is spend already paid for: while a budget is exceeded the
/// keeper still buys their number (and serves them), but nothing ahead of need.
async fn a_waiting_paid_owner_gets_a_number_while_a_budget_is_exceeded<S: ReplenishStore>(
    store: S,
) {
    const SAM: &str = "+12125550123";
    let clock = Arc::new(ManualClock::new(fixture_epoch() + Duration::hours(15)));
    let engine = budget_engine(store.clone(), clock.clone());
    for (n, body) in [
        "Hi",
        "Plumber in New York",
        "Sam's Plumbing",
        "Sam Jones",
        "sms",
        "YES",
    ]
    .iter()
    .enumerate()
    {
        text(&engine, &format!("SMsam{n}"), SAM, body).await;
    }
    let sam = owner(&engine, SAM).await;
    engine
        .apply(&sam.id, onboard::conversation::Event::PaymentConfirmed)
        .await
        .unwrap();
    let waiting = owner(&engine, SAM).await;
    assert_eq!(
        waiting.gate,
        Some(onboard::conversation::Gate::AwaitingNumber)
    );
    spend(&store, "buy:big", "25", clock.now()).await;
    assert!(engine.budget_status().await.unwrap().exceeded());

    let twilio = MockServer::start().await;
    sells_us_numbers(&twilio, &["+12125550101", "+12125550102", "+12125550103"]).await;
    // A target of 3 free numbers: none of those is bought while the budget is exceeded.
    let keeper = Replenisher::new(
        engine.clone(),
        twilio_client(&twilio),
        Arc::new(CircuitBreaker::new(clock.clone(), 5, Duration::minutes(5))),
        ReplenishSettings::new(3, 10, Country::Us, "https://onboard.example.com"),
    );
    match keeper.run_once().await.unwrap() {
        RunOutcome::Ran(report) => {
            assert!(report.held_by_budget);
            assert_eq!(report.bought.len(), 1, "{report:?}");
        }
        other => panic!("{other:?}"),
    }
    let served = owner(&engine, SAM).await;
    assert!(served.twilio_number.is_some(), "{served:?}");
    assert_eq!(served.state, StateName::S6PhoneType);
}

#[tokio::test]
async fn a_waiting_paid_owner_gets_a_number_while_a_budget_is_exceeded_on_sqlite() {
    a_waiting_paid_owner_gets_a_number_while_a_budget_is_exceeded(sqlite().await).await;
}

#[tokio::test]
async fn a_waiting_paid_owner_gets_a_number_while_a_budget_is_exceeded_on_postgres() {
    a_waiting_paid_owner_gets_a_number_while_a_budget_is_exceeded(postgres().await).await;
}

/// With `OPS_EMAIL`, each budget alert is emailed to ops once, through a real SMTP server, however
/// many replicas run the cost keeper; on PostgreSQL two run at once.
async fn budget_alerts_are_emailed_to_ops_once<S: Store>(first: S, second: S) {
    let sink = support::smtp::SmtpSink::start().await;
    let config = test_config(&[
        ("ONBOARDING_NUMBER", ONBOARDING),
        ("BUDGET_DAILY", "10"),
        ("OPS_EMAIL", "ops@example.com"),
        ("SMTP_URL", &sink.url("alerts", "s3cret")),
    ]);
    let clock = Arc::new(ManualClock::new(fixture_epoch() + Duration::hours(1)));
    let engine = |store: S| {
        support::app::engine_on(
            store,
            &config,
            clock.clone(),
            Arc::new(RandomIds::default()),
        )
    };
    let (a, b) = (engine(first.clone()), engine(second));
    spend(&first, "buy:big", "25", clock.now()).await;
    assert!(a.budget_status().await.unwrap().exceeded());

    let mailer = onboard::email::Mailer::from_config(&config)
        .unwrap()
        .unwrap();
    let (sent_a, sent_b) = tokio::join!(a.email_ops_alerts(&mailer), b.email_ops_alerts(&mailer));
    assert_eq!(
        sent_a.unwrap() + sent_b.unwrap(),
        2,
        "the warning and the exceeded"
    );
    // Nothing left to send, however often the keepers run.
    assert_eq!(a.email_ops_alerts(&mailer).await.unwrap(), 0);
    let mails = sink.messages();
    assert_eq!(mails.len(), 2, "{mails:?}");
    let mut subjects: Vec<String> = mails
        .iter()
        .map(|m| {
            assert_eq!(m.rcpt_to, vec!["ops@example.com".to_owned()]);
            m.header("Subject").unwrap()
        })
        .collect();
    subjects.sort();
    assert_eq!(
        subjects,
        [
            "Budget at 80%: daily 2026-01-05",
            "Budget exceeded: daily 2026-01-05"
        ]
    );
    let exceeded = mails
        .iter()
        .find(|m| m.header("Subject").unwrap().starts_with("Budget exceeded"))
        .unwrap();
    let text = exceeded.part("text/plain").unwrap();
    assert!(text.contains("25.00"), "{text}");
}

#[tokio::test]
async fn budget_alerts_are_emailed_to_ops_once_on_sqlite() {
    let store = sqlite().await;
    budget_alerts_are_emailed_to_ops_once(store.clone(), store).await;
}

#[tokio::test]
async fn budget_alerts_are_emailed_to_ops_once_on_postgres_with_two_replicas() {
    let url = support::fresh_postgres_database().await;
    let first = PgStore::connect(&url, 5).await.unwrap();
    first.migrate().await.unwrap();
    let second = PgStore::connect(&url, 5).await.unwrap();
    budget_alerts_are_emailed_to_ops_once(first, second).await;
}

/// An ops email whose attempt was cut short (the process stopped after writing the attempt,
/// before the result) may have gone: when its row is claimed again it is given up, never sent a
/// second time; the other alert still goes.
async fn an_ops_email_cut_short_is_never_sent_again<S: Store>(store: S) {
    let sink = support::smtp::SmtpSink::start().await;
    let config = test_config(&[
        ("ONBOARDING_NUMBER", ONBOARDING),
        ("BUDGET_DAILY", "10"),
        ("OPS_EMAIL", "ops@example.com"),
        ("SMTP_URL", &sink.url("alerts", "s3cret")),
    ]);
    let clock = Arc::new(ManualClock::new(fixture_epoch() + Duration::hours(1)));
    let engine = support::app::engine_on(
        store.clone(),
        &config,
        clock.clone(),
        Arc::new(RandomIds::default()),
    );
    spend(&store, "buy:big", "25", clock.now()).await;
    assert!(engine.budget_status().await.unwrap().exceeded());

    // A replica took the first alert, wrote its attempt, and stopped.
    let now = clock.now();
    let mut tx = store.begin().await.unwrap();
    let (cut_short, attempted) = tx
        .claim_unsent_alert(now - Duration::days(2), now)
        .await
        .unwrap()
        .unwrap();
    assert!(!attempted);
    tx.record_alert_email(&cut_short, Some(now), None, None)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let mailer = onboard::email::Mailer::from_config(&config)
        .unwrap()
        .unwrap();
    // Within its lease the attempt is left alone; the other alert goes.
    assert_eq!(engine.email_ops_alerts(&mailer).await.unwrap(), 1);
    // After it, the attempt is given up, not sent.
    clock.advance(Duration::minutes(6));
    assert_eq!(engine.email_ops_alerts(&mailer).await.unwrap(), 0);
    assert_eq!(engine.email_ops_alerts(&mailer).await.unwrap(), 0);
    let mails = sink.messages();
    assert_eq!(mails.len(), 1, "{mails:?}");
    let subject = mails[0].header("Subject").unwrap();
    let cut_short_subject = if cut_short.level == "exceeded" {
        "Budget exceeded"
    } else {
        "Budget at 80%"
    };
    assert!(
        !subject.starts_with(cut_short_subject),
        "the cut-short alert was sent again: {subject}"
    );
    let mut tx = store.begin().await.unwrap();
    let left = tx
        .claim_unsent_alert(now - Duration::days(2), clock.now())
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(left, None, "nothing left to send or give up");
}

#[tokio::test]
async fn an_ops_email_cut_short_is_never_sent_again_on_sqlite() {
    an_ops_email_cut_short_is_never_sent_again(sqlite().await).await;
}

#[tokio::test]
async fn an_ops_email_cut_short_is_never_sent_again_on_postgres() {
    an_ops_email_cut_short_is_never_sent_again(postgres().await).await;
}
