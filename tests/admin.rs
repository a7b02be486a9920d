//! The admin API over HTTP: search, one owner in full, webhook events and their reprocessing,
//! reset, releasing a number, the funnel; masking, pagination and every refusal.

mod support;

use chrono::{DateTime, Duration, Utc};
use onboard::domain::OwnerId;
use onboard::store::{
    Owner, EventOutcome, NewCall, NewOutbound, NewWebhookEvent, OutboundStatus, Store, Tx,
};
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::app::{ADMIN_TOKEN, TestApp, spawn_postgres, spawn_sqlite, test_config};

const JO: &str = "+447700900123";
const AL: &str = "+447700900456";
const SAM: &str = "+14155550123";
const NUMBER: &str = "+447700900900";
const SPARE: &str = "+447700900901";

// --- helpers ----------------------------------------------------------------------------------

async fn get<S: Store>(
    app: &TestApp<S>,
    path: &str,
    query: &[(&str, &str)],
) -> (StatusCode, String) {
    let query = serde_urlencoded::to_string(query).unwrap();
    let response = app
        .http
        .get(format!("{}{path}?{query}", app.address))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    (response.status(), response.text().await.unwrap())
}

async fn get_json<S: Store>(app: &TestApp<S>, path: &str, query: &[(&str, &str)]) -> Value {
    let (status, body) = get(app, path, query).await;
    assert_eq!(status, StatusCode::OK, "GET {path} {query:?}: {body}");
    serde_json::from_str(&body).unwrap()
}

async fn post<S: Store>(app: &TestApp<S>, path: &str) -> (StatusCode, String) {
    let response = app
        .http
        .post(format!("{}{path}", app.address))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    (response.status(), response.text().await.unwrap())
}

/// Texts an owner through S1 to S4 and, with `yes`, says YES at S5 (unpaid: the payment gate).
async fn onboard<S: Store>(app: &TestApp<S>, phone: &str, answers: [&str; 4], yes: bool) -> String {
    let tag = &phone[1..];
    let mut texts = vec!["Hi"];
    texts.extend(answers);
    if yes {
        texts.push("YES");
    }
    for (n, body) in texts.iter().enumerate() {
        let response = app.text(&format!("SM{tag}{n}"), phone, body).await;
        assert_eq!(response.status(), StatusCode::OK);
    }
    app.engine
        .owner_by_phone(&phone.parse().unwrap())
        .await
        .unwrap()
        .unwrap()
        .id
        .to_string()
}

async fn store_event<S: Store>(
    app: &TestApp<S>,
    payload: &Value,
    outcome: EventOutcome,
    error: Option<&str>,
    at: DateTime<Utc>,
) {
    let id = payload["id"].as_str().unwrap();
    let mut tx = app.engine.store().begin().await.unwrap();
    tx.insert_webhook_event(&NewWebhookEvent {
        provider: "stripe",
        event_id: id,
        event_type: payload["type"].as_str().unwrap(),
        payload,
        received_at: at,
    })
    .await
    .unwrap();
    tx.set_webhook_event_outcome("stripe", id, outcome, error)
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

fn paid_checkout(event_id: &str, owner_id: &str) -> Value {
    json!({
        "id": event_id, "object": "event", "type": "checkout.session.completed",
        "data": {"object": {"id": "cs_1", "object": "checkout.session", "payment_status": "paid",
            "client_reference_id": owner_id, "customer": "cus_jo",
            "customer_details": {"email": "jo@smith.example", "phone": JO, "name": "Jo Smith"}}}
    })
}

// --- the whole admin story, on both back ends -------------------------------------------------

/// Search, a failed payment reprocessed, the owner in full, reset, release, events, funnel.
async fn admin_story<S: Store>(app: TestApp<S>) {
    app.engine
        .add_numbers(&[NUMBER.parse().unwrap(), SPARE.parse().unwrap()])
        .await
        .unwrap();
    let jo = onboard(
        &app,
        JO,
        [
            "Plumber in Leeds",
            "Smith & Sons",
            "Jo Smith",
            "jo@smith.example",
        ],
        true,
    )
    .await;
    app.clock.advance(Duration::minutes(1));
    let al = onboard(
        &app,
        AL,
        ["Electrician in York", "Bright Sparks", "Al Jones", "SMS"],
        false,
    )
    .await;
    app.clock.advance(Duration::minutes(1));
    let sam = onboard(
        &app,
        SAM,
        ["Plumber in Boston", "Smith Plumbing", "Sam Smith", "SMS"],
        false,
    )
    .await;

    // Search: by name in any case, newest first, phones masked, paginated.
    let (status, body) = get(&app, "/admin/api/owners/search", &[("q", "SMITH")]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for phone in [JO, AL, SAM] {
        assert!(!body.contains(phone), "a full phone in a list: {body}");
    }
    let found: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(found["total"], 2);
    assert_eq!(found["items"][0]["id"], sam.as_str());
    assert_eq!(found["items"][0]["owner_phone"], "+14******123");
    assert_eq!(found["items"][1]["id"], jo.as_str());
    assert_eq!(found["items"][1]["owner_phone"], "+44*******123");
    assert_eq!(found["items"][1]["state"], "S5_CONFIRM_LIVE");
    assert_eq!(found["items"][1]["gate"], "payment_required");
    assert_eq!(found["items"][1]["business_name"], "Smith & Sons");
    assert_eq!(found["items"][1]["owner_name"], "Jo Smith");
    assert_eq!(found["items"][1]["payment_active"], false);
    assert!(found["items"][1]["created_at"].is_string());
    let second = get_json(
        &app,
        "/admin/api/owners/search",
        &[("q", "smith"), ("limit", "1"), ("offset", "1")],
    )
    .await;
    assert_eq!(second["total"], 2);
    assert_eq!(second["limit"], 1);
    assert_eq!(second["offset"], 1);
    assert_eq!(second["items"].as_array().unwrap().len(), 1);
    assert_eq!(second["items"][0]["id"], jo.as_str());
    // By business name substring, by exact phone, by the phone's last digits.
    let by_business = get_json(&app, "/admin/api/owners/search", &[("q", "sparks")]).await;
    assert_eq!(by_business["items"][0]["id"], al.as_str());
    let exact = get_json(&app, "/admin/api/owners/search", &[("q", AL)]).await;
    assert_eq!(exact["total"], 1);
    assert_eq!(exact["items"][0]["id"], al.as_str());
    let suffix = get_json(&app, "/admin/api/owners/search", &[("q", "900123")]).await;
    assert_eq!(suffix["total"], 1);
    assert_eq!(suffix["items"][0]["id"], jo.as_str());
    let none = get_json(&app, "/admin/api/owners/search", &[("q", "50%_off")]).await;
    assert_eq!(none["total"], 0);

    // A paid checkout whose processing failed, stored as Stripe would have left it.
    let failed = paid_checkout("evt_failed", &jo);
    store_event(
        &app,
        &failed,
        EventOutcome::Failed,
        Some("database error: timed out"),
        app.engine.now(),
    )
    .await;
    let listed = get_json(&app, "/admin/api/webhook-events", &[("status", "failed")]).await;
    assert_eq!(listed["total"], 1);
    let event = &listed["items"][0];
    assert_eq!(event["event_id"], "evt_failed");
    assert_eq!(event["error"], "database error: timed out");
    let details = &event["payload"]["data"]["object"]["customer_details"];
    assert_eq!(details["phone"], "+44*******123");
    assert_eq!(details["email"], "j***@smith.example");
    assert_eq!(
        event["payload"]["data"]["object"]["client_reference_id"],
        jo.as_str()
    );

    let (status, body) = post(
        &app,
        "/admin/api/webhook-events/stripe/evt_failed/reprocess",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let done: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(done["outcome"], "processed");
    assert_eq!(done["status"], "processed");
    let owner = app
        .engine
        .owner_by_phone(&JO.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(owner.payment_active);
    assert_eq!(owner.state.as_str(), "S6_PHONE_TYPE");
    assert_eq!(owner.twilio_number.as_ref().unwrap().as_str(), NUMBER);
    // Once processed, it is not processed again.
    let (status, body) = post(
        &app,
        "/admin/api/webhook-events/stripe/evt_failed/reprocess",
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(body.contains("only a failed event"), "{body}");
    let (status, _) = post(&app, "/admin/api/webhook-events/stripe/evt_nope/reprocess").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // A later event tied to Jo only through the Stripe customer the payment linked.
    app.clock.advance(Duration::minutes(1));
    let refund = json!({
        "id": "evt_refund", "object": "event", "type": "charge.refunded",
        "data": {"object": {"id": "ch_1", "customer": "cus_jo", "amount": 2900,
            "amount_refunded": 100, "refunded": false}}
    });
    store_event(
        &app,
        &refund,
        EventOutcome::Ignored,
        Some("partial refund"),
        app.engine.now(),
    )
    .await;
    // And one for nobody we know.
    let stranger = json!({
        "id": "evt_other", "object": "event", "type": "charge.refunded",
        "data": {"object": {"id": "ch_2", "customer": "cus_other"}}
    });
    store_event(
        &app,
        &stranger,
        EventOutcome::Ignored,
        None,
        app.engine.now(),
    )
    .await;

    // A call to Jo's new number.
    {
        let mut tx = app.engine.store().begin().await.unwrap();
        tx.claim_call(&NewCall {
            call_sid: "CA1",
            direction: "inbound",
            from: "+447700900777",
            to: NUMBER,
            forwarded_from: Some(JO),
            status: "ringing",
            at: app.engine.now(),
        })
        .await
        .unwrap();
        tx.finish_call("CA1", Some(&owner.id), true, "<Response/>")
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }

    // Jo in full.
    let record = get_json(&app, &format!("/admin/api/owners/{jo}"), &[]).await;
    assert_eq!(record["id"], jo.as_str());
    assert_eq!(record["owner_phone"], JO);
    assert_eq!(record["state"], "S6_PHONE_TYPE");
    assert_eq!(record["gate"], Value::Null);
    assert_eq!(record["payment_active"], true);
    assert_eq!(record["twilio_number"], NUMBER);
    assert_eq!(record["answers"]["business_type"], "Plumber");
    assert_eq!(record["answers"]["location"], "Leeds");
    assert_eq!(record["answers"]["business_name"], "Smith & Sons");
    assert_eq!(record["answers"]["owner_name"], "Jo Smith");
    assert_eq!(record["answers"]["notify"], "jo@smith.example");
    let history = record["state_history"].as_array().unwrap();
    assert_eq!(
        history.last().unwrap()["to_state"],
        "S6_PHONE_TYPE",
        "{history:?}"
    );
    assert!(
        history
            .iter()
            .any(|h| h["cause"] == "payment_confirmed" || h["cause"] == "number_allocated"),
        "{history:?}"
    );
    let inbound = record["inbound_messages"].as_array().unwrap();
    assert_eq!(inbound.len(), 6);
    assert_eq!(inbound[0]["body"], "Hi");
    assert_eq!(inbound[0]["from_addr"], JO);
    assert!(
        inbound[5]["response"]
            .as_str()
            .unwrap()
            .contains("client_reference_id")
    );
    let outbound = record["outbound_messages"].as_array().unwrap();
    assert_eq!(outbound.len(), 1, "{outbound:?}");
    assert_eq!(outbound[0]["status"], "pending");
    assert_eq!(outbound[0]["kind"], "sms");
    assert_eq!(outbound[0]["to_addr"], JO);
    // Their new number, as people write it.
    assert!(
        outbound[0]["body"]
            .as_str()
            .unwrap()
            .contains("07700 900900")
    );
    let calls = record["calls"].as_array().unwrap();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0]["call_sid"], "CA1");
    assert_eq!(calls[0]["is_test_call"], true);
    let payments: Vec<&str> = record["payment_events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(payments, ["evt_failed", "evt_refund"]);
    // This one view is unmasked: the owner's own record for an authorised operator.
    assert_eq!(
        record["payment_events"][0]["payload"]["data"]["object"]["customer_details"]["phone"],
        JO
    );
    let al_record = get_json(&app, &format!("/admin/api/owners/{al}"), &[]).await;
    assert_eq!(al_record["payment_events"], json!([]));
    assert_eq!(al_record["calls"], json!([]));
    let (status, _) = get(&app, "/admin/api/owners/c_9999999999", &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = get(&app, "/admin/api/owners/not%20an%20id", &[]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Jo's number is theirs: it cannot be released from the pool; a free one can.
    let (status, body) = post(&app, &format!("/admin/api/pool/{NUMBER}/release")).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (status, body) = post(&app, "/admin/api/pool/%2B447700900901/release").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let released: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(released["status"], "QUARANTINED");
    let pool = get_json(&app, "/admin/api/pool", &[]).await;
    assert_eq!(pool["by_status"]["QUARANTINED"], 1);
    assert_eq!(pool["by_status"]["ASSIGNED"], 1);
    let (status, _) = post(&app, "/admin/api/pool/+447700900999/release").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = post(&app, "/admin/api/pool/07700900999/release").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Reset: back to S1, answers gone, payment and number kept, recorded.
    let (status, body) = post(&app, &format!("/admin/api/owners/{jo}/reset")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let reset: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(reset["state"], "S1_BUSINESS_TYPE_LOCATION");
    assert_eq!(reset["business_name"], Value::Null);
    assert_eq!(reset["payment_active"], true);
    assert_eq!(reset["twilio_number"], NUMBER);
    let record = get_json(&app, &format!("/admin/api/owners/{jo}"), &[]).await;
    assert_eq!(record["state"], "S1_BUSINESS_TYPE_LOCATION");
    assert_eq!(record["answers"]["business_type"], Value::Null);
    assert_eq!(record["answers"]["notify"], Value::Null);
    let last = record["state_history"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["cause"], "admin_reset");
    assert_eq!(last["from_state"], "S6_PHONE_TYPE");
    assert_eq!(last["to_state"], "S1_BUSINESS_TYPE_LOCATION");
    let (status, _) = post(&app, "/admin/api/owners/c_9999999999/reset").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Events: every filter, and pages.
    let all = get_json(&app, "/admin/api/webhook-events", &[]).await;
    assert_eq!(all["total"], 3);
    assert_eq!(all["limit"], 50);
    assert_eq!(all["items"][2]["event_id"], "evt_failed", "oldest last");
    let page = get_json(
        &app,
        "/admin/api/webhook-events",
        &[("provider", "stripe"), ("limit", "2"), ("offset", "2")],
    )
    .await;
    assert_eq!(page["total"], 3);
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    let ignored = get_json(&app, "/admin/api/webhook-events", &[("status", "ignored")]).await;
    assert_eq!(ignored["total"], 2);
    let other = get_json(&app, "/admin/api/webhook-events", &[("provider", "twilio")]).await;
    assert_eq!(other["total"], 0);
    let epoch = onboard::replay::fixture_epoch();
    let before_refund = (epoch + Duration::seconds(150)).to_rfc3339();
    let early = get_json(
        &app,
        "/admin/api/webhook-events",
        &[("to", before_refund.as_str())],
    )
    .await;
    assert_eq!(early["total"], 1);
    assert_eq!(early["items"][0]["event_id"], "evt_failed");
    let late = get_json(
        &app,
        "/admin/api/webhook-events",
        &[
            ("from", before_refund.as_str()),
            ("to", "2100-01-01T00:00:00+01:00"),
        ],
    )
    .await;
    assert_eq!(late["total"], 2);

    // The funnel: the last 7 days only, every state present.
    app.clock.advance(Duration::days(7) - Duration::minutes(2));
    let funnel = get_json(&app, "/admin/api/funnel", &[]).await;
    assert_eq!(
        funnel["total"], 2,
        "Jo was created over 7 days ago: {funnel}"
    );
    let states = funnel["states"].as_object().unwrap();
    assert_eq!(states.len(), 10);
    assert_eq!(states["S5_CONFIRM_LIVE"], 2);
    assert_eq!(states["S1_BUSINESS_TYPE_LOCATION"], 0);
    assert_eq!(states["COMPLETE"], 0);
    assert!(funnel["since"].is_string());
}

#[tokio::test]
async fn the_admin_story_on_sqlite() {
    admin_story(spawn_sqlite(test_config(&[])).await).await;
}

#[tokio::test]
async fn the_admin_story_on_postgres() {
    admin_story(spawn_postgres(test_config(&[])).await).await;
}

// --- failed texts -----------------------------------------------------------------------------

/// Three texts to Jo: one given up at the deadline, one Twilio refused, one sent. The failed two
/// are listed newest first, each with its reason, the number masked.
async fn failed_texts_are_listed_with_their_reason<S: Store>(app: TestApp<S>) {
    let store = app.engine.store();
    let now = app.engine.now();
    let jo = OwnerId::new("c_jo");
    let phone = JO.parse().unwrap();
    let mut tx = store.begin().await.unwrap();
    tx.lock_or_create_owner(&phone, || Owner::new(jo.clone(), JO.parse().unwrap(), now))
        .await
        .unwrap();
    for body in ["one", "two", "three"] {
        tx.enqueue_outbound(&NewOutbound {
            owner_id: &jo,
            to: &phone,
            body,
            created_at: now,
        })
        .await
        .unwrap();
    }
    let claimed = tx
        .claim_outbound(now, now + Duration::minutes(1), 10)
        .await
        .unwrap();
    let outcomes = [
        (
            OutboundStatus::Failed,
            None,
            Some("gave up: not sent within 86400 s of being queued"),
        ),
        (
            OutboundStatus::Failed,
            None,
            Some("Twilio error 21211 (HTTP 400): invalid To"),
        ),
        (OutboundStatus::Queued, Some("SM3"), None),
    ];
    for (message, (status, sid, error)) in claimed.iter().zip(outcomes) {
        tx.finish_outbound(message.id, status, sid, error, None, now)
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();

    let failed = get_json(&app, "/admin/api/outbound/failed", &[]).await;
    assert_eq!(failed["total"], 2);
    let items = failed["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["id"], claimed[1].id, "newest first");
    assert!(items[0]["last_error"].as_str().unwrap().contains("21211"));
    assert!(
        items[1]["last_error"]
            .as_str()
            .unwrap()
            .contains("not sent within")
    );
    assert_eq!(items[1]["owner_id"], "c_jo");
    assert_eq!(items[1]["to_addr"], "+44*******123");
    let second_page = get_json(
        &app,
        "/admin/api/outbound/failed",
        &[("limit", "1"), ("offset", "1")],
    )
    .await;
    assert_eq!(second_page["items"][0]["id"], claimed[0].id);
    let (status, body) = get(&app, "/admin/api/outbound/failed", &[("limit", "0")]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}

#[tokio::test]
async fn failed_texts_are_listed_with_their_reason_on_sqlite() {
    failed_texts_are_listed_with_their_reason(spawn_sqlite(test_config(&[])).await).await;
}

#[tokio::test]
async fn failed_texts_are_listed_with_their_reason_on_postgres() {
    failed_texts_are_listed_with_their_reason(spawn_postgres(test_config(&[])).await).await;
}

// --- refusals ---------------------------------------------------------------------------------

#[tokio::test]
async fn every_admin_endpoint_wants_the_token() {
    let app = spawn_sqlite(test_config(&[])).await;
    let gets = [
        "/admin/api/owners/search?q=smith",
        "/admin/api/owners/c_0000000001",
        "/admin/api/webhook-events",
        "/admin/api/funnel",
        "/admin/api/outbound/failed",
    ];
    let posts = [
        "/admin/api/owners/c_0000000001/reset",
        "/admin/api/webhook-events/stripe/evt_1/reprocess",
        "/admin/api/pool/+447700900900/release",
    ];
    for path in gets {
        let url = format!("{}{path}", app.address);
        let anonymous = app.http.get(&url).send().await.unwrap();
        assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED, "{path}");
        let wrong = app.http.get(&url).bearer_auth("nope").send().await.unwrap();
        assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED, "{path}");
    }
    for path in posts {
        let url = format!("{}{path}", app.address);
        let anonymous = app.http.post(&url).send().await.unwrap();
        assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED, "{path}");
    }
}

/// A path, its query, and what the 400 must name.
type BadQuery = (
    &'static str,
    &'static [(&'static str, &'static str)],
    &'static str,
);

#[tokio::test]
async fn bad_query_parameters_are_400_naming_the_parameter() {
    let app = spawn_sqlite(test_config(&[])).await;
    let cases: [BadQuery; 11] = [
        ("/admin/api/owners/search", &[], "q"),
        ("/admin/api/owners/search", &[("q", "  ")], "q"),
        (
            "/admin/api/owners/search",
            &[("q", "smith"), ("limit", "201")],
            "limit",
        ),
        (
            "/admin/api/owners/search",
            &[("q", "smith"), ("limit", "0")],
            "limit",
        ),
        (
            "/admin/api/owners/search",
            &[("q", "smith"), ("limit", "ten")],
            "limit",
        ),
        (
            "/admin/api/owners/search",
            &[("q", "smith"), ("offset", "-1")],
            "offset",
        ),
        ("/admin/api/webhook-events", &[("limit", "500")], "limit"),
        ("/admin/api/webhook-events", &[("status", "lost")], "status"),
        (
            "/admin/api/webhook-events",
            &[("from", "yesterday")],
            "from",
        ),
        (
            "/admin/api/webhook-events",
            &[("to", "2026-13-01T00:00:00Z")],
            "to",
        ),
        (
            "/admin/api/webhook-events",
            &[
                ("from", "2026-01-02T00:00:00Z"),
                ("to", "2026-01-01T00:00:00Z"),
            ],
            "from",
        ),
    ];
    for (path, query, named) in cases {
        let (status, body) = get(&app, path, query).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path} {query:?}: {body}");
        assert!(body.contains(named), "{path} {query:?}: {body}");
    }
    let ok = get_json(&app, "/admin/api/webhook-events", &[("limit", "200")]).await;
    assert_eq!(ok["items"], json!([]));
    assert_eq!(ok["total"], 0);
}

#[tokio::test]
async fn only_failed_events_are_reprocessed() {
    let app = spawn_sqlite(test_config(&[])).await;
    let jo = onboard(
        &app,
        JO,
        ["Plumber in Leeds", "Smith & Sons", "Jo Smith", "SMS"],
        true,
    )
    .await;
    for (id, outcome) in [
        ("evt_done", EventOutcome::Processed),
        ("evt_skip", EventOutcome::Ignored),
    ] {
        store_event(
            &app,
            &paid_checkout(id, &jo),
            outcome,
            None,
            app.engine.now(),
        )
        .await;
        let (status, body) = post(
            &app,
            &format!("/admin/api/webhook-events/stripe/{id}/reprocess"),
        )
        .await;
        assert_eq!(status, StatusCode::CONFLICT, "{id}");
        assert!(body.contains(outcome.as_str()), "{body}");
    }
    // Nothing ran: Jo is still unpaid.
    let owner = app
        .engine
        .owner_by_phone(&JO.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(!owner.payment_active);
    // A failed event whose payload names an owner we do not know is reprocessed and ignored.
    store_event(
        &app,
        &paid_checkout("evt_lost", "c_9999999999"),
        EventOutcome::Failed,
        Some("boom"),
        app.engine.now(),
    )
    .await;
    let (status, body) = post(&app, "/admin/api/webhook-events/stripe/evt_lost/reprocess").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let json: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["outcome"], "ignored");
    assert_eq!(json["status"], "ignored");
}

#[tokio::test]
async fn the_funnel_counts_zero_everywhere_when_nobody_is_new() {
    let app = spawn_sqlite(test_config(&[])).await;
    let funnel = get_json(&app, "/admin/api/funnel", &[]).await;
    assert_eq!(funnel["total"], 0);
    let states = funnel["states"].as_object().unwrap();
    assert_eq!(states.len(), 10);
    assert!(states.values().all(|n| *n == 0), "{funnel}");
}

/// Two owners reminded at S1; one answers and moves on to S2.
async fn reminders_sent_and_moved_on<S: Store>(app: TestApp<S>) {
    for (i, phone) in [JO, AL].iter().enumerate() {
        app.text(&format!("SMrem{i}"), phone, "Hi").await;
    }
    app.clock.advance(Duration::hours(2));
    assert_eq!(app.engine.send_reminders().await.unwrap().sent, 2);
    app.text("SMrem2", JO, "Plumber in Leeds").await;
    let json = get_json(&app, "/admin/api/reminders", &[]).await;
    assert_eq!(
        json,
        json!({
            "states": [{"state": "S1_BUSINESS_TYPE_LOCATION", "sent": 2, "moved_on": 1}],
            "sent": 2,
            "moved_on": 1,
        })
    );
    let (status, _) = {
        let response = app
            .http
            .get(format!("{}/admin/api/reminders", app.address))
            .send()
            .await
            .unwrap();
        (response.status(), ())
    };
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn reminders_sent_and_moved_on_per_step_on_sqlite() {
    reminders_sent_and_moved_on(spawn_sqlite(test_config(&[])).await).await;
}

#[tokio::test]
async fn reminders_sent_and_moved_on_per_step_on_postgres() {
    reminders_sent_and_moved_on(spawn_postgres(test_config(&[])).await).await;
}
