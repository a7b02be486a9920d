//! The SMS webhook over HTTP: signatures, bad input, retries, and the admin API.

use crate::support;

use std::sync::Arc;

use onboard::store::Store;
use onboard::workers::{Restart, supervise};
use reqwest::StatusCode;
use support::app::{ADMIN_TOKEN, BackEnd, TestApp, spawn_postgres, spawn_sqlite, test_config};

const OWNER: &str = "+447700900123";

async fn owner_count<S: Store>(app: &TestApp<S>) -> bool {
    app.engine
        .owner_by_phone(&OWNER.parse().unwrap())
        .await
        .unwrap()
        .is_some()
}

async fn a_signed_first_text_gets_the_first_question_as_twiml<B: BackEnd>() {
    let app = B::spawn(test_config(&[])).await;
    let response = app.text("SM1", OWNER, "Hi").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"],
        "text/xml; charset=utf-8"
    );
    let body = response.text().await.unwrap();
    assert!(
        body.starts_with(r#"<?xml version="1.0" encoding="UTF-8"?><Response><Message>Hi, welcome"#),
        "{body}"
    );
}

async fn a_retried_message_sid_gets_the_identical_reply_and_changes_nothing<B: BackEnd>() {
    let app = B::spawn(test_config(&[])).await;
    app.text("SM1", OWNER, "Hi").await;
    let first = app
        .text("SM2", OWNER, "Plumber in Leeds")
        .await
        .text()
        .await
        .unwrap();
    let retry = app
        .text("SM2", OWNER, "Plumber in Leeds")
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(first, retry);
    let owner = app
        .engine
        .owner_by_phone(&OWNER.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(owner.state.as_str(), "S2_BUSINESS_NAME");
}

async fn a_missing_signature_is_400_and_a_wrong_one_403_and_neither_stores_anything<B: BackEnd>() {
    let app = B::spawn(test_config(&[])).await;
    let url = format!("{}/webhooks/twilio/sms", app.address);
    let form = [("MessageSid", "SM1"), ("From", OWNER), ("Body", "Hi")];

    let missing = app.http.post(&url).form(&form).send().await.unwrap();
    assert_eq!(missing.status(), StatusCode::BAD_REQUEST);

    let wrong = app
        .http
        .post(&url)
        .header("X-Twilio-Signature", "RSOYDt4T1cUTdK1PDd93/VVr8B8=")
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::FORBIDDEN);
    assert!(!owner_count(&app).await);
}

async fn a_signature_for_other_params_is_rejected<B: BackEnd>() {
    let app = B::spawn(test_config(&[])).await;
    // Signed for "Hi", sent with "Plumber in Leeds".
    let url = format!("{}{}", app.config.public_url, "/webhooks/twilio/sms");
    let signed: Vec<(String, String)> = [("MessageSid", "SM1"), ("From", OWNER), ("Body", "Hi")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let signature = onboard::twilio::signature::compute(support::app::AUTH_TOKEN, &url, &signed);
    let response = app
        .http
        .post(format!("{}/webhooks/twilio/sms", app.address))
        .header("X-Twilio-Signature", signature)
        .form(&[
            ("MessageSid", "SM1"),
            ("From", OWNER),
            ("Body", "Plumber in Leeds"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
}

async fn each_missing_field_is_a_400_naming_it<B: BackEnd>() {
    let app = B::spawn(test_config(&[])).await;
    let full = [("MessageSid", "SM1"), ("From", OWNER), ("Body", "Hi")];
    for missing in ["MessageSid", "From", "Body"] {
        let params: Vec<(&str, &str)> = full
            .iter()
            .copied()
            .filter(|(k, _)| *k != missing)
            .collect();
        let response = app.post_twilio("/webhooks/twilio/sms", &params).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{missing}");
        let text = response.text().await.unwrap();
        assert!(text.contains(missing), "{missing}: {text}");
    }
    assert!(!owner_count(&app).await);
}

async fn a_body_over_64_kib_is_413<B: BackEnd>() {
    let app = B::spawn(test_config(&[])).await;
    let huge = "x".repeat(65 * 1024);
    let response = app
        .post_twilio(
            "/webhooks/twilio/sms",
            &[("MessageSid", "SM1"), ("From", OWNER), ("Body", &huge)],
        )
        .await;
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let text = response.text().await.unwrap();
    assert!(text.contains("65536 bytes"), "{text}");
    assert!(!owner_count(&app).await);
}

/// Every Twilio webhook is keyed on its sid: one longer than Twilio's is refused before it is
/// stored anywhere.
async fn a_sid_over_64_characters_is_400_on_every_twilio_webhook<B: BackEnd>() {
    let app = B::spawn(test_config(&[])).await;
    let long = format!("SM{}", "0".repeat(63));
    for (path, params) in [
        (
            "/webhooks/twilio/sms",
            vec![
                ("MessageSid", long.as_str()),
                ("From", OWNER),
                ("Body", "Hi"),
            ],
        ),
        (
            "/webhooks/twilio/message-status",
            vec![("MessageSid", long.as_str()), ("MessageStatus", "sent")],
        ),
        (
            "/webhooks/twilio/voice",
            vec![("CallSid", long.as_str()), ("From", OWNER), ("To", OWNER)],
        ),
        (
            "/webhooks/twilio/call-status",
            vec![("CallSid", long.as_str()), ("CallStatus", "ringing")],
        ),
    ] {
        let response = app.post_twilio(path, &params).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{path}");
        let text = response.text().await.unwrap();
        assert!(text.contains("1 to 64"), "{path}: {text}");
    }
    assert!(!owner_count(&app).await);
}

async fn bytes_that_are_not_utf8_are_400<B: BackEnd>() {
    let app = B::spawn(test_config(&[("ONBOARD_INSECURE_WEBHOOKS", "1")])).await;
    for body in [
        b"MessageSid=SM1&From=%2B447700900123&Body=%FF%FE".to_vec(),
        b"MessageSid=SM1&From=%2B447700900123&Body=\xff".to_vec(),
    ] {
        let response = app
            .http
            .post(format!("{}/webhooks/twilio/sms", app.address))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert!(response.text().await.unwrap().contains("UTF-8"));
    }
    assert!(!owner_count(&app).await);
}

async fn dev_mode_accepts_unsigned_webhooks<B: BackEnd>() {
    let app = B::spawn(test_config(&[("ONBOARD_INSECURE_WEBHOOKS", "1")])).await;
    let response = app
        .http
        .post(format!("{}/webhooks/twilio/sms", app.address))
        .form(&[("MessageSid", "SM1"), ("From", OWNER), ("Body", "Hi")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

async fn a_sender_that_is_not_e164_gets_an_empty_response_not_an_error<B: BackEnd>() {
    let app = B::spawn(test_config(&[])).await;
    let response = app.text("SM1", "Anonymous", "Hi").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.text().await.unwrap(),
        r#"<?xml version="1.0" encoding="UTF-8"?><Response/>"#
    );
}

async fn the_admin_api_shows_an_owner_to_the_token_holder_only<B: BackEnd>() {
    let app = B::spawn(test_config(&[])).await;
    app.text("SM1", OWNER, "Hi").await;
    app.text("SM2", OWNER, "Plumber in Leeds").await;
    let url = format!("{}/admin/api/owners?phone=%2B447700900123", app.address);

    let anonymous = app.http.get(&url).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let wrong = app.http.get(&url).bearer_auth("nope").send().await.unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);

    let response = app
        .http
        .get(&url)
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let json: serde_json::Value = response.json().await.unwrap();
    assert_eq!(json["owner_phone"], OWNER);
    assert_eq!(json["state"], "S2_BUSINESS_NAME");
    assert_eq!(json["gate"], serde_json::Value::Null);
    assert_eq!(json["business_type"], "Plumber");
    assert_eq!(json["location"], "Leeds");
    assert_eq!(json["payment_active"], false);
    assert_eq!(json["opted_out"], false);
    for field in [
        "id",
        "business_name",
        "owner_name",
        "notify",
        "twilio_number",
        "created_at",
        "updated_at",
    ] {
        assert!(json.get(field).is_some(), "missing {field}");
    }

    let unknown = app
        .http
        .get(format!(
            "{}/admin/api/owners?phone=%2B447700900999",
            app.address
        ))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    let bad = app
        .http
        .get(format!("{}/admin/api/owners?phone=07700", app.address))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
}

async fn the_admin_api_is_off_without_a_token<B: BackEnd>() {
    let app = B::spawn(test_config(&[("ADMIN_TOKEN", "")])).await;
    let response = app
        .http
        .get(format!(
            "{}/admin/api/owners?phone=%2B447700900123",
            app.address
        ))
        .bearer_auth("anything")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

async fn healthz_answers<B: BackEnd>() {
    let app = B::spawn(test_config(&[])).await;
    let response = app
        .http
        .get(format!("{}/healthz", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers().contains_key("x-request-id"));
}

/// Texts from one owner at the same moment are handled one after the other: no update is lost.
#[tokio::test]
async fn concurrent_texts_from_one_owner_are_serialised_on_postgres() {
    let app = Arc::new(spawn_postgres(test_config(&[])).await);
    app.text("SM0", OWNER, "Hi").await;
    // Each is a miss at S1; a lost update would count fewer than twelve.
    let statuses = all_at_once(&app, (1..=12).map(|i| (format!("SM{i}"), "???"))).await;
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    let owner = app
        .engine
        .owner_by_phone(&OWNER.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(owner.misses, 12, "every concurrent miss was counted");
}

#[tokio::test]
async fn concurrent_first_texts_from_a_new_owner_make_one_owner_on_postgres() {
    let app = Arc::new(spawn_postgres(test_config(&[])).await);
    let statuses = all_at_once(&app, (1..=8).map(|i| (format!("SM{i}"), "Hi"))).await;
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    assert!(owner_count(&app).await);
}

/// Sends every text from the owner at once, each on its own task.
async fn all_at_once<S: Store>(
    app: &Arc<TestApp<S>>,
    texts: impl Iterator<Item = (String, &'static str)>,
) -> Vec<StatusCode> {
    let mut tasks = tokio::task::JoinSet::new();
    for (sid, body) in texts {
        let app = app.clone();
        tasks.spawn(async move { app.text(&sid, OWNER, body).await.status() });
    }
    tasks.join_all().await
}

mod delivery_reports {
    use super::*;
    use onboard::store::{NewOutbound, Tx};

    /// An owner with one text in the outbox, already handed to Twilio as `SM_out`.
    async fn sent_message<S: Store>(app: &TestApp<S>) {
        app.text("SM1", OWNER, "Hi").await;
        let owner = app
            .engine
            .owner_by_phone(&OWNER.parse().unwrap())
            .await
            .unwrap()
            .unwrap();
        let store = app.engine.store();
        let mut tx = store.begin().await.unwrap();
        let id = tx
            .enqueue_outbound(&NewOutbound {
                owner_id: &owner.id,
                to: &owner.owner_phone,
                body: "hello",
                created_at: app.engine.now(),
            })
            .await
            .unwrap();
        let now = app.engine.now();
        tx.claim_outbound(now, now + chrono::Duration::minutes(1), 10)
            .await
            .unwrap();
        tx.finish_outbound(
            id,
            onboard::store::OutboundStatus::Queued,
            Some("SMout"),
            None,
            None,
            now,
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
    }

    async fn report<S: Store>(app: &TestApp<S>, status: &str, error: Option<&str>) -> StatusCode {
        let mut params = vec![("MessageSid", "SMout"), ("MessageStatus", status)];
        if let Some(code) = error {
            params.push(("ErrorCode", code));
        }
        app.post_twilio("/webhooks/twilio/message-status", &params)
            .await
            .status()
    }

    async fn status<S: Store>(app: &TestApp<S>) -> String {
        app.engine.store().outbound_after(0).await.unwrap()[0]
            .status
            .as_str()
            .to_owned()
    }

    async fn delivery_reports_move_forward_and_never_back<B: BackEnd>() {
        let app = B::spawn(test_config(&[])).await;
        sent_message(&app).await;
        assert_eq!(report(&app, "sent", None).await, StatusCode::NO_CONTENT);
        assert_eq!(status(&app).await, "sent");
        report(&app, "delivered", None).await;
        assert_eq!(status(&app).await, "delivered");
        // Out of order: a late "sent" must not undo "delivered".
        report(&app, "sent", None).await;
        assert_eq!(status(&app).await, "delivered");
    }

    async fn error_21610_in_a_report_opts_the_owner_out<B: BackEnd>() {
        let app = B::spawn(test_config(&[])).await;
        sent_message(&app).await;
        report(&app, "failed", Some("21610")).await;
        assert_eq!(status(&app).await, "failed");
        let owner = app
            .engine
            .owner_by_phone(&OWNER.parse().unwrap())
            .await
            .unwrap()
            .unwrap();
        assert!(owner.opted_out);
    }

    async fn reports_are_signed_and_complete<B: BackEnd>() {
        let app = B::spawn(test_config(&[])).await;
        let unsigned = app
            .http
            .post(format!("{}/webhooks/twilio/message-status", app.address))
            .form(&[("MessageSid", "SMout"), ("MessageStatus", "sent")])
            .send()
            .await
            .unwrap();
        assert_eq!(unsigned.status(), StatusCode::BAD_REQUEST);
        let incomplete = app
            .post_twilio(
                "/webhooks/twilio/message-status",
                &[("MessageSid", "SMout")],
            )
            .await;
        assert_eq!(incomplete.status(), StatusCode::BAD_REQUEST);
        // A sid we never sent is acknowledged, so Twilio does not retry it forever.
        let unknown = app
            .post_twilio(
                "/webhooks/twilio/message-status",
                &[("MessageSid", "SMother"), ("MessageStatus", "sent")],
            )
            .await;
        assert_eq!(unknown.status(), StatusCode::NO_CONTENT);
    }

    support::on_both_back_ends!(
        delivery_reports_move_forward_and_never_back,
        error_21610_in_a_report_opts_the_owner_out,
        reports_are_signed_and_complete
    );
}

mod stripe_webhook {
    use super::*;
    use onboard::stripe::signature;

    const SECRET: &str = "whsec_test";

    fn event(id: &str, client_reference_id: &str) -> String {
        support::app::paid_checkout(id, client_reference_id).to_string()
    }

    async fn deliver<S: Store>(
        app: &TestApp<S>,
        body: &str,
        header: Option<String>,
    ) -> reqwest::Response {
        let mut request = app
            .http
            .post(format!("{}/webhooks/stripe", app.address))
            .header("content-type", "application/json")
            .body(body.to_owned());
        if let Some(header) = header {
            request = request.header("Stripe-Signature", header);
        }
        request.send().await.unwrap()
    }

    async fn a_signed_payment_pays_the_owner_once<B: BackEnd>() {
        let app = B::spawn(test_config(&[("STRIPE_WEBHOOK_SECRET", SECRET)])).await;
        app.text("SM1", OWNER, "Hi").await;
        let now = app.engine.now().timestamp();
        let body = event("evt_1", "c_0000000001");
        let response = deliver(
            &app,
            &body,
            Some(signature::sign(body.as_bytes(), SECRET, now)),
        )
        .await;
        assert_eq!(response.status(), StatusCode::OK);
        let json: serde_json::Value = response.json().await.unwrap();
        assert_eq!(json["outcome"], "processed");
        let again = deliver(
            &app,
            &body,
            Some(signature::sign(body.as_bytes(), SECRET, now)),
        )
        .await;
        let json: serde_json::Value = again.json().await.unwrap();
        assert_eq!(json["outcome"], "duplicate");
        let owner = app
            .engine
            .owner_by_phone(&OWNER.parse().unwrap())
            .await
            .unwrap()
            .unwrap();
        assert!(owner.payment_active);
    }

    async fn a_bad_or_stale_signature_is_400_and_changes_nothing<B: BackEnd>() {
        let app = B::spawn(test_config(&[("STRIPE_WEBHOOK_SECRET", SECRET)])).await;
        app.text("SM1", OWNER, "Hi").await;
        let now = app.engine.now().timestamp();
        let body = event("evt_1", "c_0000000001");
        for header in [
            None,
            Some("garbage".to_owned()),
            Some(signature::sign(body.as_bytes(), "whsec_other", now)),
            Some(signature::sign(body.as_bytes(), SECRET, now - 301)),
        ] {
            let response = deliver(&app, &body, header.clone()).await;
            assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{header:?}");
        }
        let owner = app
            .engine
            .owner_by_phone(&OWNER.parse().unwrap())
            .await
            .unwrap()
            .unwrap();
        assert!(!owner.payment_active);
        // Nothing was stored: the genuine event is still new.
        let response = deliver(
            &app,
            &body,
            Some(signature::sign(body.as_bytes(), SECRET, now)),
        )
        .await;
        let json: serde_json::Value = response.json().await.unwrap();
        assert_eq!(json["outcome"], "processed");
    }

    async fn twilio_credentials_without_a_stripe_secret_never_let_an_unsigned_payment_in<
        B: BackEnd,
    >() {
        // From the environment this mix no longer starts at all (see config's tests); a server
        // built by hand with checks on and no Stripe secret must still fail closed.
        let mut config = test_config(&[]);
        config.stripe_webhook_secrets.clear();
        let app = B::spawn(config).await;
        app.text("SM1", OWNER, "Hi").await;
        let body = event("evt_1", "c_0000000001");
        let response = deliver(&app, &body, None).await;
        assert!(response.status().is_client_error(), "{}", response.status());
        let owner = app
            .engine
            .owner_by_phone(&OWNER.parse().unwrap())
            .await
            .unwrap()
            .unwrap();
        assert!(!owner.payment_active);
    }

    async fn a_signed_body_that_is_not_an_event_is_400<B: BackEnd>() {
        let app = B::spawn(test_config(&[("STRIPE_WEBHOOK_SECRET", SECRET)])).await;
        let now = app.engine.now().timestamp();
        let body = "{\"hello\": 1}";
        let response = deliver(
            &app,
            body,
            Some(signature::sign(body.as_bytes(), SECRET, now)),
        )
        .await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    }

    support::on_both_back_ends!(
        a_signed_payment_pays_the_owner_once,
        a_bad_or_stale_signature_is_400_and_changes_nothing,
        twilio_credentials_without_a_stripe_secret_never_let_an_unsigned_payment_in,
        a_signed_body_that_is_not_an_event_is_400
    );
}

async fn the_pool_endpoint_reports_health<B: BackEnd>() {
    let app = B::spawn(test_config(&[])).await;
    app.engine
        .add_numbers(&["+447700900900".parse().unwrap()])
        .await
        .unwrap();
    let json: serde_json::Value = app
        .http
        .get(format!("{}/admin/api/pool", app.address))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(json["total"], 1);
    assert_eq!(json["by_status"]["AVAILABLE"], 1);
    assert_eq!(json["low_water"], 3);
    assert_eq!(json["healthy"], false);
    assert_eq!(json["uncertain_purchases"], 0);
}

async fn metrics_count_events_time_routes_and_read_gauges<B: BackEnd>() {
    use tracing_subscriber::layer::SubscriberExt;
    let _guard = tracing::subscriber::set_default(
        tracing_subscriber::registry().with(onboard::telemetry::EventCounter),
    );
    let app = B::spawn(test_config(&[])).await;
    app.engine
        .add_numbers(&["+447700900900".parse().unwrap()])
        .await
        .unwrap();
    app.text("SM1", OWNER, "Hi").await;
    app.text("SM2", OWNER, "Plumber in Leeds").await;
    let response = app
        .http
        .get(format!("{}/metrics", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.unwrap();
    // Gauges are read from this app's database: exact. Counters are process-wide (other tests in
    // the same process add to them): at least what this test did.
    for line in [
        r#"onboard_owners{state="S2_BUSINESS_NAME"} 1"#,
        r#"onboard_owners{state="COMPLETE"} 0"#,
        r#"onboard_pool_numbers{status="AVAILABLE"} 1"#,
        "onboard_pool_uncertain_purchases 0",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
    for (series, at_least) in [
        (r#"onboard_events_total{event="INBOUND_SMS"}"#, 2.0),
        (r#"onboard_events_total{event="STATE_CHANGED"}"#, 1.0),
        (
            r#"onboard_http_request_duration_seconds_count{route="/webhooks/twilio/sms",status="200"}"#,
            2.0,
        ),
    ] {
        let value: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix(series))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("missing {series} in:\n{text}"));
        assert!(value >= at_least, "{series} is {value}");
    }
    assert!(!text.contains(OWNER), "no phone numbers in metrics");
}

/// A background worker that died is restarted after a backoff; until then `/readyz` is 503 and
/// names it, and once it runs again the replica is ready again.
async fn readyz_is_503_naming_a_worker_that_died_until_it_runs_again<B: BackEnd>() {
    let app = B::spawn(test_config(&[])).await;
    let readyz = || async {
        let response = app
            .http
            .get(format!("{}/readyz", app.address))
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json::<serde_json::Value>().await.unwrap())
    };
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let (revive, revived) = tokio::sync::watch::channel(false);
    let restart = Restart {
        min: std::time::Duration::from_millis(20),
        ..Restart::default()
    };
    let worker = supervise(
        app.workers.clone(),
        "outbox",
        restart,
        stopped.clone(),
        move || {
            let (mut stopped, revived) = (stopped.clone(), revived.clone());
            async move {
                if !*revived.borrow() {
                    panic!("the outbox worker dies");
                }
                let _ = stopped.wait_for(|s| *s).await;
            }
        },
    );
    // It dies, is restarted, dies again: each time down, until it is let live.
    let mut seen = None;
    for _ in 0..10_000 {
        let (status, json) = readyz().await;
        if status != StatusCode::OK {
            seen = Some((status, json));
            break;
        }
    }
    let (status, json) = seen.expect("readyz never said the worker was down");
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(json["workers_down"], serde_json::json!(["outbox"]));
    assert_eq!(json["database"], "ok");

    revive.send(true).unwrap();
    let mut ready = false;
    for _ in 0..500 {
        let (status, json) = readyz().await;
        if status == StatusCode::OK {
            assert_eq!(json["workers_down"], serde_json::json!([]));
            ready = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(ready, "ready again once the worker runs");
    stop.send(true).unwrap();
    worker.await.unwrap();
}

#[tokio::test]
async fn with_metrics_addr_metrics_leave_the_main_listener_for_their_own() {
    use tower::ServiceExt;
    let app = spawn_sqlite(test_config(&[("METRICS_ADDR", "127.0.0.1:9100")])).await;
    let main = app
        .http
        .get(format!("{}/metrics", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(main.status(), StatusCode::NOT_FOUND);
    let metrics = onboard::http::metrics_router(app.state());
    let request = axum::http::Request::get("/metrics")
        .body(axum::body::Body::empty())
        .unwrap();
    let response = metrics.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let text = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    assert!(
        String::from_utf8_lossy(&text).contains(r#"onboard_owners{state="COMPLETE"} 0"#),
        "{text:?}"
    );
}

#[tokio::test]
async fn readyz_is_503_when_the_database_does_not_answer() {
    let app = spawn_postgres(test_config(&[])).await;
    let ready = app
        .http
        .get(format!("{}/readyz", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    let json: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(json["database"], "ok");
    assert_eq!(json["twilio_circuit"], "off");

    app.engine.store().close().await;
    let down = app
        .http
        .get(format!("{}/readyz", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(down.status(), StatusCode::SERVICE_UNAVAILABLE);
    let json: serde_json::Value = down.json().await.unwrap();
    assert_eq!(json["database"], "unavailable");
}

/// Whatever Twilio or Stripe (or someone posing as them) sends, the answer is a 2xx or a 400 naming
/// the field, never a 500 from a value PostgreSQL refuses to store.
mod parse_at_the_edge {
    use super::*;
    use onboard::stripe::signature;
    use support::app::STRIPE_SECRET;

    async fn post<S: Store>(
        app: &TestApp<S>,
        path: &str,
        params: &[(&str, &str)],
    ) -> (StatusCode, String) {
        let response = app.post_twilio(path, params).await;
        (response.status(), response.text().await.unwrap())
    }

    /// `params` with `field` set to `value`.
    fn with<'a>(
        params: &[(&'a str, &'a str)],
        field: &'a str,
        value: &'a str,
    ) -> Vec<(&'a str, &'a str)> {
        let mut params: Vec<_> = params
            .iter()
            .filter(|(k, _)| *k != field)
            .copied()
            .collect();
        params.push((field, value));
        params
    }

    /// A route, a good request to it, and the fields to poison one at a time.
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a [&'a str]);

    #[tokio::test]
    async fn a_nul_in_any_twilio_field_is_a_400_naming_it() {
        let app = spawn_postgres(test_config(&[])).await;
        let sms = [
            ("MessageSid", "SM1"),
            ("From", OWNER),
            ("To", "+447700900000"),
            ("Body", "Hi"),
        ];
        let voice = [
            ("CallSid", "CA1"),
            ("From", OWNER),
            ("To", "+447700900999"),
            ("Direction", "inbound"),
            ("CallStatus", "ringing"),
            ("ForwardedFrom", OWNER),
        ];
        let cases: [Case; 4] = [
            ("/webhooks/twilio/sms", &sms, &["MessageSid", "From", "To"]),
            (
                "/webhooks/twilio/message-status",
                &[
                    ("MessageSid", "SM1"),
                    ("MessageStatus", "sent"),
                    ("ErrorCode", "30003"),
                ],
                &["MessageSid", "MessageStatus", "ErrorCode"],
            ),
            (
                "/webhooks/twilio/voice",
                &voice,
                &[
                    "CallSid",
                    "From",
                    "To",
                    "Direction",
                    "CallStatus",
                    "ForwardedFrom",
                ],
            ),
            (
                "/webhooks/twilio/call-status",
                &[
                    ("CallSid", "CA1"),
                    ("CallStatus", "completed"),
                    ("SequenceNumber", "2"),
                ],
                &["CallSid", "CallStatus", "SequenceNumber"],
            ),
        ];
        for (path, params, fields) in cases {
            for field in fields {
                let original = params.iter().find(|(k, _)| k == field).unwrap().1;
                let poisoned = format!("{original}\0");
                let (status, text) = post(&app, path, &with(params, field, &poisoned)).await;
                assert_eq!(status, StatusCode::BAD_REQUEST, "{path} {field}: {text}");
                assert!(text.contains(field), "{path} {field}: {text}");
            }
        }
        assert!(!owner_count(&app).await);
    }

    #[tokio::test]
    async fn a_body_with_control_characters_is_cleaned_and_answered() {
        let app = spawn_postgres(test_config(&[])).await;
        let response = app.text("SM1", OWNER, "Hi\0\u{1}").await;
        assert_eq!(response.status(), StatusCode::OK);
        assert!(response.text().await.unwrap().contains("welcome"));
        let (status, text) = post(
            &app,
            "/webhooks/twilio/sms",
            &[
                ("MessageSid", "SM2"),
                ("From", OWNER),
                ("Body", "Plumber\0 in Leeds"),
            ],
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{text}");
        let owner = app
            .engine
            .owner_by_phone(&OWNER.parse().unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(owner.state.as_str(), "S2_BUSINESS_NAME");
    }

    #[tokio::test]
    async fn a_sequence_number_that_is_not_a_count_is_a_400_naming_it() {
        let app = spawn_postgres(test_config(&[])).await;
        for junk in ["2147483648", "99999999999", "-1", "1.5", "two", " 3"] {
            for field in ["SequenceNumber", "CallDuration"] {
                let (status, text) = post(
                    &app,
                    "/webhooks/twilio/call-status",
                    &[
                        ("CallSid", "CA1"),
                        ("CallStatus", "completed"),
                        (field, junk),
                    ],
                )
                .await;
                assert_eq!(status, StatusCode::BAD_REQUEST, "{field}={junk:?}: {text}");
                assert!(text.contains(field), "{text}");
            }
        }
        let (status, _) = post(
            &app,
            "/webhooks/twilio/call-status",
            &[
                ("CallSid", "CA1"),
                ("CallStatus", "completed"),
                ("SequenceNumber", "2147483647"),
            ],
        )
        .await;
        assert_eq!(status, StatusCode::NO_CONTENT);
    }

    #[tokio::test]
    async fn a_stripe_event_carrying_nul_is_stored_safely_once() {
        let app = spawn_postgres(test_config(&[])).await;
        app.text("SM1", OWNER, "Hi").await;
        let body = serde_json::json!({
            "id": "evt_nul", "object": "event", "type": "checkout.session.completed",
            "data": {"object": {"id": "cs_1", "payment_status": "paid",
                "client_reference_id": "c_0000000001", "customer": "cus_1",
                "metadata": {"note\u{0}": "a\u{0}b"}}}
        })
        .to_string();
        assert!(body.contains("\\u0000"), "{body}");
        let deliver = || async {
            let now = app.engine.now().timestamp();
            let response = app
                .http
                .post(format!("{}/webhooks/stripe", app.address))
                .header("content-type", "application/json")
                .header(
                    "Stripe-Signature",
                    signature::sign(body.as_bytes(), STRIPE_SECRET, now),
                )
                .body(body.clone())
                .send()
                .await
                .unwrap();
            let status = response.status();
            (status, response.text().await.unwrap())
        };
        let (status, text) = deliver().await;
        assert_eq!(status, StatusCode::OK, "{text}");
        assert!(text.contains("processed"), "{text}");
        let (status, text) = deliver().await;
        assert_eq!(status, StatusCode::OK, "{text}");
        assert!(text.contains("duplicate"), "{text}");
        let owner = app
            .engine
            .owner_by_phone(&OWNER.parse().unwrap())
            .await
            .unwrap()
            .unwrap();
        assert!(owner.payment_active);
    }
}

/// An owner's business number is texted by their customers: those texts are not owners to onboard.
mod texts_to_owner_numbers {
    use super::*;
    use onboard::domain::OwnerId;
    use onboard::store::{Owner, Tx};

    const BUSINESS_NUMBER: &str = "+447700900777";
    const CUSTOMER: &str = "+447700900555";

    /// An owner already onboarded onto `BUSINESS_NUMBER`.
    async fn owner_with_a_number<S: Store>(app: &TestApp<S>) {
        let now = app.engine.now();
        let mut tx = app.engine.store().begin().await.unwrap();
        let (owner, _) = tx
            .lock_or_create_owner(&OWNER.parse().unwrap(), || {
                Owner::new(OwnerId::new("c_owner"), OWNER.parse().unwrap(), now)
            })
            .await
            .unwrap();
        tx.save_owner(&Owner {
            twilio_number: Some(BUSINESS_NUMBER.parse().unwrap()),
            ..owner
        })
        .await
        .unwrap();
        tx.commit().await.unwrap();
    }

    async fn text_to<S: Store>(app: &TestApp<S>, sid: &str, to: &str) -> String {
        let response = app
            .post_twilio(
                "/webhooks/twilio/sms",
                &[
                    ("MessageSid", sid),
                    ("From", CUSTOMER),
                    ("To", to),
                    ("Body", "Hi"),
                ],
            )
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        response.text().await.unwrap()
    }

    async fn is_onboarding<S: Store>(app: &TestApp<S>, phone: &str) -> bool {
        app.engine
            .owner_by_phone(&phone.parse().unwrap())
            .await
            .unwrap()
            .is_some()
    }

    const EMPTY: &str = r#"<?xml version="1.0" encoding="UTF-8"?><Response/>"#;

    async fn only_the_onboarding_number_starts_onboarding<S: Store>(app: TestApp<S>) {
        owner_with_a_number(&app).await;
        assert_eq!(text_to(&app, "SM1", BUSINESS_NUMBER).await, EMPTY);
        assert_eq!(text_to(&app, "SM2", "+447700900888").await, EMPTY);
        assert!(!is_onboarding(&app, CUSTOMER).await);
        // A retry gets the same empty answer.
        assert_eq!(text_to(&app, "SM1", BUSINESS_NUMBER).await, EMPTY);
        assert!(
            text_to(&app, "SM3", "+447700900000")
                .await
                .contains("welcome")
        );
        assert!(is_onboarding(&app, CUSTOMER).await);
    }

    async fn without_an_onboarding_number_owners_numbers_still_do_not<S: Store>(app: TestApp<S>) {
        owner_with_a_number(&app).await;
        assert_eq!(text_to(&app, "SM1", BUSINESS_NUMBER).await, EMPTY);
        assert!(!is_onboarding(&app, CUSTOMER).await);
        assert!(
            text_to(&app, "SM2", "+447700900888")
                .await
                .contains("welcome")
        );
        assert!(is_onboarding(&app, CUSTOMER).await);
    }

    #[tokio::test]
    async fn only_the_onboarding_number_starts_onboarding_on_sqlite() {
        only_the_onboarding_number_starts_onboarding(spawn_sqlite(test_config(&[])).await).await;
    }

    #[tokio::test]
    async fn only_the_onboarding_number_starts_onboarding_on_postgres() {
        only_the_onboarding_number_starts_onboarding(spawn_postgres(test_config(&[])).await).await;
    }

    #[tokio::test]
    async fn without_an_onboarding_number_owners_numbers_still_do_not_on_sqlite() {
        let config = test_config(&[("ONBOARDING_NUMBER", "")]);
        without_an_onboarding_number_owners_numbers_still_do_not(spawn_sqlite(config).await).await;
    }

    #[tokio::test]
    async fn without_an_onboarding_number_owners_numbers_still_do_not_on_postgres() {
        let config = test_config(&[("ONBOARDING_NUMBER", "")]);
        without_an_onboarding_number_owners_numbers_still_do_not(spawn_postgres(config).await)
            .await;
    }
}

support::on_both_back_ends!(
    a_signed_first_text_gets_the_first_question_as_twiml,
    a_retried_message_sid_gets_the_identical_reply_and_changes_nothing,
    a_missing_signature_is_400_and_a_wrong_one_403_and_neither_stores_anything,
    a_signature_for_other_params_is_rejected,
    each_missing_field_is_a_400_naming_it,
    a_body_over_64_kib_is_413,
    a_sid_over_64_characters_is_400_on_every_twilio_webhook,
    bytes_that_are_not_utf8_are_400,
    dev_mode_accepts_unsigned_webhooks,
    a_sender_that_is_not_e164_gets_an_empty_response_not_an_error,
    the_admin_api_shows_an_owner_to_the_token_holder_only,
    the_admin_api_is_off_without_a_token,
    healthz_answers,
    the_pool_endpoint_reports_health,
    metrics_count_events_time_routes_and_read_gauges,
    readyz_is_503_naming_a_worker_that_died_until_it_runs_again
);
