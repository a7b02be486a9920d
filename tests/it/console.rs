//! The ops console over HTTP, without a browser: every page's status and key content, masking,
//! the session (sign-in, its cookie, sign-out, the failed sign-in limit), CSRF refusals, the
//! buttons behind their confirmations, and the live feed's event stream; on SQLite and PostgreSQL.

use crate::support;

use std::time::Duration as StdDuration;

use chrono::Duration;
use onboard::domain::OwnerId;
use onboard::store::{EventOutcome, NewOutbound, NewWebhookEvent, OutboundStatus, Store, Tx};
use reqwest::StatusCode;
use reqwest::header::{CACHE_CONTROL, COOKIE, LOCATION, SET_COOKIE};
use serde_json::{Value, json};
use support::app::{ADMIN_TOKEN, TestApp, spawn_postgres, spawn_sqlite, test_config};

const JO: &str = "+447700900123";
const NUMBER: &str = "+447700900901";

/// A browser without cookies or redirects of its own: each test says what it sends.
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Signs in and returns the `Cookie` header value the browser would send.
async fn sign_in<S: Store>(app: &TestApp<S>) -> String {
    let response = browser()
        .post(format!("{}/admin/sign-in", app.address))
        .form(&[("token", ADMIN_TOKEN)])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(response.headers()[LOCATION], "/admin");
    let set = response.headers()[SET_COOKIE].to_str().unwrap().to_owned();
    for attribute in [
        "HttpOnly",
        "SameSite=Strict",
        "Secure",
        "Path=/admin",
        "Max-Age=",
    ] {
        assert!(set.contains(attribute), "{attribute} missing from {set}");
    }
    set.split(';').next().unwrap().to_owned()
}

async fn get_page<S: Store>(app: &TestApp<S>, cookie: &str, path: &str) -> (StatusCode, String) {
    let response = browser()
        .get(format!("{}{path}", app.address))
        .header(COOKIE, cookie)
        .send()
        .await
        .unwrap();
    (response.status(), response.text().await.unwrap())
}

async fn ok_page<S: Store>(app: &TestApp<S>, cookie: &str, path: &str) -> String {
    let (status, body) = get_page(app, cookie, path).await;
    assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
    body
}

async fn post_form<S: Store>(
    app: &TestApp<S>,
    cookie: &str,
    path: &str,
    form: &[(&str, &str)],
) -> (StatusCode, String, Option<String>) {
    let response = browser()
        .post(format!("{}{path}", app.address))
        .header(COOKIE, cookie)
        .form(form)
        .send()
        .await
        .unwrap();
    let location = response
        .headers()
        .get(LOCATION)
        .map(|v| v.to_str().unwrap().to_owned());
    (response.status(), response.text().await.unwrap(), location)
}

/// The CSRF token in a page's forms.
fn csrf(page: &str) -> String {
    let at = page
        .find("name=\"csrf\" value=\"")
        .expect("a form with a CSRF token")
        + 19;
    page[at..at + page[at..].find('"').unwrap()].to_owned()
}

async fn onboard_jo<S: Store>(app: &TestApp<S>) -> String {
    for (n, body) in ["Hi", "Dog grooming in Leeds", "Paws & Claws", "Jo Smith"]
        .iter()
        .enumerate()
    {
        assert_eq!(app.text(&format!("SMjo{n}"), JO, body).await.status(), 200);
    }
    app.engine
        .owner_by_phone(&JO.parse().unwrap())
        .await
        .unwrap()
        .unwrap()
        .id
        .to_string()
}

// --- the whole console, on both back ends -----------------------------------------------------

async fn console_story<S: Store>(app: TestApp<S>) {
    let jo = onboard_jo(&app).await;
    let cookie = sign_in(&app).await;

    // Today: counts, the funnel as SVG, the pool, the outbox, spend named as not recorded yet.
    let today = ok_page(&app, &cookie, "/admin").await;
    for text in [
        "Today",
        "<svg",
        "S2_BUSINESS_NAME",
        "Pool by country",
        "Outbox",
        "Spend today",
        "Twilio circuit",
    ] {
        assert!(today.contains(text), "Today lacks {text}");
    }
    assert!(today.contains("The pool is empty"), "{today}");
    // Spend today against the budget, from the ledger: Jo's texts and our answers.
    let spent = app.engine.budget_status().await.unwrap().day.spent;
    assert!(spent > onboard::prices::Amount::ZERO);
    assert!(today.contains("Spend today against the budget"), "{today}");
    assert!(
        today.contains(&format!("<td class=\"num\">{spent}</td>")),
        "{today}"
    );

    // Search by the last digits of the phone: found, masked.
    let found = ok_page(&app, &cookie, "/admin/search?q=0123").await;
    assert!(found.contains("Paws &amp; Claws"), "{found}");
    assert!(found.contains("+44*******123"), "{found}");
    assert!(!found.contains(JO), "a full phone on the search page");
    assert!(found.contains(&format!("/admin/owners/{jo}")));
    let partial = ok_page(&app, &cookie, "/admin/search?q=smith&partial=1").await;
    assert!(partial.starts_with("<div id=\"results\""), "{partial}");
    assert!(partial.contains("Jo Smith"));
    let none = ok_page(&app, &cookie, "/admin/search?q=nobody").await;
    assert!(none.contains("No owner matches"));

    // The owner: the conversation as bubbles, their texts and our replies.
    let owner = ok_page(&app, &cookie, &format!("/admin/owners/{jo}")).await;
    assert!(owner.contains("bubble in"), "{owner}");
    assert!(owner.contains("bubble out"));
    assert!(owner.contains("Dog grooming in Leeds"));
    assert!(owner.contains("S4_NOTIFICATION_PREF"));
    assert!(owner.contains("History"));
    // What Jo has cost, from the ledger.
    let costs = app
        .engine
        .owner_costs(&onboard::domain::OwnerId::parse(&jo).unwrap())
        .await
        .unwrap();
    assert!(costs.all_time > onboard::prices::Amount::ZERO);
    assert!(owner.contains("All time"), "{owner}");
    assert!(
        owner.contains(&format!("{} GBP", costs.all_time)),
        "{owner}"
    );

    // Reset: a confirmation, then only with the session's CSRF token.
    let confirm = ok_page(&app, &cookie, &format!("/admin/owners/{jo}/reset")).await;
    assert!(confirm.contains("Reset this owner?"));
    let token = csrf(&confirm);
    let path = format!("/admin/owners/{jo}/reset");
    let (status, body, _) = post_form(&app, &cookie, &path, &[]).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, _, _) = post_form(&app, &cookie, &path, &[("csrf", "forged")]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let owner = app
        .engine
        .owner_by_phone(&JO.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        owner.state.as_str(),
        "S4_NOTIFICATION_PREF",
        "a refused form changes nothing"
    );
    let (status, _, location) = post_form(&app, &cookie, &path, &[("csrf", &token)]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(location.unwrap(), format!("/admin/owners/{jo}?done=reset"));
    let owner = app
        .engine
        .owner_by_phone(&JO.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(owner.state.as_str(), "S1_BUSINESS_TYPE_LOCATION");
    let owner = ok_page(&app, &cookie, &format!("/admin/owners/{jo}?done=reset")).await;
    assert!(owner.contains("admin_reset"), "{owner}");

    // A failed Stripe event: listed with its payload masked, reprocessed through a confirmation.
    let now = app.engine.now();
    let payload = json!({
        "id": "evt_failed", "object": "event", "type": "checkout.session.completed",
        "data": {"object": {"id": "cs_1", "object": "checkout.session", "payment_status": "paid",
            "client_reference_id": jo, "customer": "cus_jo",
            "customer_details": {"email": "jo@smith.example", "phone": JO}}}
    });
    let mut tx = app.engine.store().begin().await.unwrap();
    tx.insert_webhook_event(&NewWebhookEvent {
        provider: "stripe",
        event_id: "evt_failed",
        event_type: "checkout.session.completed",
        payload: &payload,
        received_at: now,
    })
    .await
    .unwrap();
    tx.set_webhook_event_outcome(
        "stripe",
        "evt_failed",
        EventOutcome::Failed,
        Some("database was down"),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let events = ok_page(
        &app,
        &cookie,
        "/admin/webhooks?provider=stripe&status=failed",
    )
    .await;
    assert!(events.contains("evt_failed"));
    assert!(events.contains("database was down"));
    assert!(events.contains("j***@smith.example"), "{events}");
    assert!(!events.contains("jo@smith.example"), "an email unmasked");
    assert!(!events.contains(JO), "a phone unmasked");
    let twilio = ok_page(&app, &cookie, "/admin/webhooks?provider=twilio").await;
    assert!(twilio.contains("sms.inbound"), "{twilio}");
    assert!(twilio.contains("SMjo0"));
    assert!(!twilio.contains(JO), "a phone unmasked");
    let by_id = ok_page(&app, &cookie, "/admin/webhooks?id=SMjo1").await;
    assert!(by_id.contains("SMjo1") && !by_id.contains("SMjo2"));
    let (status, body) = get_page(&app, &cookie, "/admin/webhooks?from=yesterday").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("from"), "{body}");
    // A NUL byte in a URL never reaches the database (PostgreSQL refuses it in text: a 500).
    for path in [
        "/admin/search?q=a%00b",
        "/admin/webhooks?id=evt%00",
        "/admin/api/owners/search?q=a%00b",
        "/admin/owners/c_%00",
    ] {
        let (status, body) = get_page(&app, &cookie, path).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
        assert!(body.contains("NUL byte"), "{path}: {body}");
    }
    // A mistyped filter is named, not shown as "no events".
    for (path, field) in [
        (
            "/admin/webhooks?provider=twillio",
            "provider: &quot;twillio&quot; is not one of",
        ),
        (
            "/admin/webhooks?status=done",
            "status: &quot;done&quot; is not one of",
        ),
    ] {
        let (status, body) = get_page(&app, &cookie, path).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}");
        assert!(body.contains(field), "{path}: {body}");
    }
    let failed = ok_page(
        &app,
        &cookie,
        "/admin/webhooks?provider=stripe&status=failed",
    )
    .await;
    assert!(failed.contains("evt_failed"), "{failed}");
    let confirm = ok_page(&app, &cookie, "/admin/webhooks/stripe/evt_failed/reprocess").await;
    let token = csrf(&confirm);
    let path = "/admin/webhooks/stripe/evt_failed/reprocess";
    let (status, _, _) = post_form(&app, &cookie, path, &[("csrf", "nope")]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body, _) = post_form(&app, &cookie, path, &[("csrf", &token)]).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{body}");
    let event = app
        .engine
        .store()
        .webhook_event("stripe", "evt_failed")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(event.status, "processed");
    let (status, body, _) = post_form(&app, &cookie, path, &[("csrf", &token)]).await;
    assert_eq!(status, StatusCode::CONFLICT, "only a failed event: {body}");

    // The pool: a pasted list checked line by line, then added through a confirmation.
    let (status, body) = get_page(
        &app,
        &cookie,
        "/admin/pool/add?numbers=%2B447700900901%0Anonsense",
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("line 2"), "{body}");
    let confirm = ok_page(&app, &cookie, "/admin/pool/add?numbers=%2B447700900901").await;
    let token = csrf(&confirm);
    let (status, _, location) = post_form(
        &app,
        &cookie,
        "/admin/pool/add",
        &[("csrf", &token), ("numbers", NUMBER)],
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(location.unwrap().contains("added=1"));
    let pool = ok_page(&app, &cookie, "/admin/pool").await;
    assert!(pool.contains(NUMBER), "{pool}");
    assert!(pool.contains("Uncertain purchases"));
    let (status, _, _) =
        post_form(&app, &cookie, "/admin/pool/release", &[("number", NUMBER)]).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "no CSRF token");
    let confirm = ok_page(&app, &cookie, "/admin/pool/release?number=%2B447700900901").await;
    let (status, _, _) = post_form(
        &app,
        &cookie,
        "/admin/pool/release",
        &[("csrf", &csrf(&confirm)), ("number", NUMBER)],
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let stats = app.engine.store().pool_stats().await.unwrap();
    assert_eq!(stats.quarantined, 1);

    // Live: the page has the latest events, none with a phone or a body.
    let live = ok_page(&app, &cookie, "/admin/live").await;
    assert!(live.contains("text_in"), "{live}");
    assert!(live.contains("admin_reset"));
    assert!(
        !live.contains(JO) && !live.contains("Dog grooming"),
        "PII in the feed"
    );

    // Sign out: the cookie is cleared.
    let today = ok_page(&app, &cookie, "/admin").await;
    let (status, _, location) =
        post_form(&app, &cookie, "/admin/sign-out", &[("csrf", &csrf(&today))]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(location.unwrap(), "/admin/sign-in");
}

#[tokio::test]
async fn the_console_story_on_sqlite() {
    console_story(spawn_sqlite(test_config(&[])).await).await;
}

#[tokio::test]
async fn the_console_story_on_postgres() {
    console_story(spawn_postgres(test_config(&[])).await).await;
}

// --- the session ------------------------------------------------------------------------------

async fn no_page_without_a_session<S: Store>(app: TestApp<S>) {
    for path in [
        "/admin",
        "/admin/search?q=1",
        "/admin/owners/c_x",
        "/admin/owners/c_x/reset",
        "/admin/webhooks",
        "/admin/pool",
        "/admin/live",
    ] {
        for cookie in ["", "onboard_console=v1.1.99999999999.forged"] {
            let (status, body) = get_page(&app, cookie, path).await;
            assert_eq!(
                status,
                StatusCode::SEE_OTHER,
                "GET {path} with {cookie:?}: {body}"
            );
        }
    }
    let (status, _, location) = post_form(&app, "", "/admin/owners/c_x/reset", &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(location, None);
    // The bearer API knows nothing of the console's session, and the console nothing of bearer.
    let cookie = sign_in(&app).await;
    let (status, _) = get_page(&app, &cookie, "/admin/api/funnel").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // An expired session is no session.
    app.clock.advance(Duration::hours(13));
    let (status, _) = get_page(&app, &cookie, "/admin").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    // The sign-in page itself is open.
    let (status, body) = get_page(&app, "", "/admin/sign-in").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("type=\"password\""));
}

#[tokio::test]
async fn no_page_without_a_session_on_sqlite() {
    no_page_without_a_session(spawn_sqlite(test_config(&[])).await).await;
}

#[tokio::test]
async fn no_page_without_a_session_on_postgres() {
    no_page_without_a_session(spawn_postgres(test_config(&[])).await).await;
}

/// Failed sign-ins are counted in the database; past the limit even the right token waits.
async fn failed_sign_ins_are_limited<S: Store>(app: TestApp<S>) {
    for _ in 0..10 {
        let response = browser()
            .post(format!("{}/admin/sign-in", app.address))
            .form(&[("token", "guess")])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert!(response.headers().get(SET_COOKIE).is_none());
    }
    let response = browser()
        .post(format!("{}/admin/sign-in", app.address))
        .form(&[("token", ADMIN_TOKEN)])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("Too many failed sign-ins")
    );
    app.clock.advance(Duration::minutes(16));
    sign_in(&app).await;
}

#[tokio::test]
async fn failed_sign_ins_are_limited_on_sqlite() {
    failed_sign_ins_are_limited(spawn_sqlite(test_config(&[])).await).await;
}

#[tokio::test]
async fn failed_sign_ins_are_limited_on_postgres() {
    failed_sign_ins_are_limited(spawn_postgres(test_config(&[])).await).await;
}

#[tokio::test]
async fn over_http_the_cookie_is_not_secure() {
    let app = spawn_sqlite(test_config(&[("PUBLIC_URL", "http://127.0.0.1:3000")])).await;
    let response = browser()
        .post(format!("{}/admin/sign-in", app.address))
        .form(&[("token", ADMIN_TOKEN)])
        .send()
        .await
        .unwrap();
    let set = response.headers()[SET_COOKIE].to_str().unwrap();
    assert!(set.contains("HttpOnly") && !set.contains("Secure"), "{set}");
}

#[tokio::test]
async fn without_an_admin_token_there_is_no_console() {
    let app = spawn_sqlite(test_config(&[("ADMIN_TOKEN", "")])).await;
    for path in ["/admin", "/admin/sign-in"] {
        let (status, _) = get_page(&app, "", path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
    }
}

#[tokio::test]
async fn assets_are_cached_for_a_year_under_their_content_hash() {
    let app = spawn_sqlite(test_config(&[])).await;
    let page = get_page(&app, "", "/admin/sign-in").await.1;
    let at = page.find("/admin/assets/console.css?v=").unwrap();
    let url = &page[at..at + page[at..].find('"').unwrap()];
    let response = browser()
        .get(format!("{}{url}", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()[CACHE_CONTROL]
            .to_str()
            .unwrap()
            .contains("immutable")
    );
    let (status, _) = get_page(&app, "", "/admin/assets/secrets.txt").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

// --- resending a failed text ------------------------------------------------------------------

async fn a_failed_text_is_resent_once<S: Store>(app: TestApp<S>) {
    let jo = onboard_jo(&app).await;
    let id = OwnerId::new(jo.clone());
    let now = app.engine.now();
    let phone = JO.parse().unwrap();
    let mut tx = app.engine.store().begin().await.unwrap();
    tx.enqueue_outbound(&NewOutbound {
        owner_id: &id,
        to: &phone,
        body: "Your number is ready",
        created_at: now,
    })
    .await
    .unwrap();
    let claimed = tx
        .claim_outbound(now, now + Duration::minutes(1), 10)
        .await
        .unwrap();
    tx.finish_outbound(
        claimed[0].id,
        OutboundStatus::Failed,
        None,
        Some("Twilio error 21610"),
        None,
        now,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let failed = claimed[0].id;

    let cookie = sign_in(&app).await;
    let owner = ok_page(&app, &cookie, &format!("/admin/owners/{jo}")).await;
    let link = format!("/admin/owners/{jo}/resend/{failed}");
    assert!(owner.contains(&link), "{owner}");
    let confirm = ok_page(&app, &cookie, &link).await;
    assert!(confirm.contains("Your number is ready"));
    let token = csrf(&confirm);
    let (status, _, _) = post_form(&app, &cookie, &link, &[("csrf", "x")]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body, _) = post_form(&app, &cookie, &link, &[("csrf", &token)]).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{body}");
    let (status, body, _) = post_form(&app, &cookie, &link, &[("csrf", &token)]).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(body.contains("resent already"));
    let record = app.engine.store().owner_record(&id).await.unwrap().unwrap();
    let copies: Vec<_> = record
        .outbound
        .iter()
        .filter(|m| m.body == "Your number is ready")
        .map(|m| m.status.as_str())
        .collect();
    assert_eq!(copies, ["failed", "pending"]);
}

#[tokio::test]
async fn a_failed_text_is_resent_once_on_sqlite() {
    a_failed_text_is_resent_once(spawn_sqlite(test_config(&[])).await).await;
}

#[tokio::test]
async fn a_failed_text_is_resent_once_on_postgres() {
    a_failed_text_is_resent_once(spawn_postgres(test_config(&[])).await).await;
}

// --- the live feed ----------------------------------------------------------------------------

/// Reads server-sent events from `response` until one with `id:` above `after` arrives.
async fn next_event(response: &mut reqwest::Response, after: i64) -> (i64, Value) {
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + StdDuration::from_secs(5);
    loop {
        let chunk = tokio::time::timeout_at(deadline, response.chunk())
            .await
            .expect("an event within 5 s")
            .unwrap()
            .expect("the stream stays open");
        text.push_str(std::str::from_utf8(&chunk).unwrap());
        for block in text.split("\n\n") {
            let id = block
                .lines()
                .find_map(|l| l.strip_prefix("id:"))
                .and_then(|v| v.trim().parse::<i64>().ok());
            let data = block.lines().find_map(|l| l.strip_prefix("data:"));
            if let (Some(id), Some(data)) = (id, data)
                && id > after
            {
                return (id, serde_json::from_str(data.trim()).unwrap());
            }
        }
    }
}

async fn the_live_feed_streams_and_resumes<S: Store>(app: TestApp<S>) {
    let cookie = sign_in(&app).await;
    let open = |last: Option<i64>| {
        let mut request = browser()
            .get(format!("{}/admin/live", app.address))
            .header(COOKIE, &cookie)
            .header("accept", "text/event-stream");
        if let Some(last) = last {
            request = request.header("last-event-id", last.to_string());
        }
        request.send()
    };
    let mut stream = open(None).await.unwrap();
    assert_eq!(stream.status(), StatusCode::OK);
    assert!(
        stream.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    app.text("SMlive1", JO, "Hi").await;
    let (first, event) = next_event(&mut stream, 0).await;
    assert_eq!(event["kind"], "text_in", "{event}");
    assert!(event["owner_id"].as_str().unwrap().starts_with("c_"));
    drop(stream);

    // While nobody watches, the owner answers; a reconnect from the last id gets what it missed.
    app.text("SMlive2", JO, "Dog grooming in Leeds").await;
    let mut resumed = open(Some(first)).await.unwrap();
    let (next, event) = next_event(&mut resumed, first).await;
    assert!(next > first);
    assert_ne!(event["detail"], "", "{event}");
    let body = event.to_string();
    assert!(
        !body.contains("Dog grooming") && !body.contains(JO),
        "PII in the feed: {body}"
    );
}

#[tokio::test]
async fn the_live_feed_streams_and_resumes_on_sqlite() {
    the_live_feed_streams_and_resumes(spawn_sqlite(test_config(&[])).await).await;
}

#[tokio::test]
async fn the_live_feed_streams_and_resumes_on_postgres() {
    the_live_feed_streams_and_resumes(spawn_postgres(test_config(&[])).await).await;
}

// --- releasing an owner's number --------------------------------------------------------------

/// The owner page's "Release number…": behind a confirmation and its CSRF token; the number goes
/// to quarantine for good and the paid owner gets the next free one with the question that comes
/// with it, queued as a text. The bearer API does the same, and refuses an owner without a number.
async fn an_operators_release_gives_the_owner_a_new_number<S: Store>(app: TestApp<S>) {
    let jo = onboard_jo(&app).await;
    for (n, body) in ["SMS", "YES"].iter().enumerate() {
        assert_eq!(app.text(&format!("SMpay{n}"), JO, body).await.status(), 200);
    }
    let second = "+447700900902";
    app.engine
        .add_numbers(&[NUMBER.parse().unwrap(), second.parse().unwrap()])
        .await
        .unwrap();
    let id = OwnerId::new(jo.clone());
    app.engine
        .apply(&id, onboard::conversation::Event::PaymentConfirmed)
        .await
        .unwrap();
    let holds = |owner: &onboard::store::Owner| owner.twilio_number.as_ref().map(|n| n.to_string());

    let cookie = sign_in(&app).await;
    let owner = ok_page(&app, &cookie, &format!("/admin/owners/{jo}")).await;
    let link = format!("/admin/owners/{jo}/release-number");
    assert!(owner.contains(&link), "{owner}");
    let confirm = ok_page(&app, &cookie, &link).await;
    assert!(confirm.contains(NUMBER), "{confirm}");
    assert!(confirm.contains("never back to them"), "{confirm}");
    let token = csrf(&confirm);
    let (status, _, _) = post_form(&app, &cookie, &link, &[("csrf", "x")]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let before = app.engine.store().latest_outbound_id().await.unwrap();
    let (status, body, location) = post_form(&app, &cookie, &link, &[("csrf", &token)]).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{body}");
    assert_eq!(
        location.unwrap(),
        format!("/admin/owners/{jo}?done=released")
    );
    let owner = ok_page(&app, &cookie, &format!("/admin/owners/{jo}?done=released")).await;
    assert!(owner.contains("Number released"), "{owner}");
    assert!(owner.contains("admin_release_number"), "{owner}");

    let now_held = app
        .engine
        .owner_by_phone(&JO.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(holds(&now_held).as_deref(), Some(second));
    assert_eq!(now_held.state.as_str(), "S6_PHONE_TYPE");
    assert!(now_held.payment_active);
    let told: Vec<String> = app
        .engine
        .store()
        .outbound_after(before)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.body)
        .collect();
    assert_eq!(told.len(), 1, "{told:?}");
    assert!(
        told[0].contains("retire your Onboard number 07700 900901"),
        "{told:?}"
    );
    assert!(
        told[0].contains("Your new business number is 07700 900902"),
        "{told:?}"
    );
    let pool = app.engine.store().pool_stats().await.unwrap();
    assert_eq!((pool.assigned, pool.quarantined, pool.available), (1, 1, 0));

    // The JSON API: the same release, refused for an owner with nothing left to release.
    let api = |path: String| {
        reqwest::Client::new()
            .post(format!("{}{path}", app.address))
            .bearer_auth(ADMIN_TOKEN)
            .send()
    };
    let response = api(format!("/admin/api/owners/{jo}/release-number"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let released: Value = response.json().await.unwrap();
    assert_eq!(released["released"], second);
    assert_eq!(released["owner"]["state"], "S5_CONFIRM_LIVE");
    assert_eq!(released["owner"]["gate"], "awaiting_number");
    assert_eq!(released["owner"]["twilio_number"], Value::Null);
    assert!(
        released["texts"][0]
            .as_str()
            .unwrap()
            .contains("priority list")
    );
    let response = api(format!("/admin/api/owners/{jo}/release-number"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CONFLICT);
    let response = api("/admin/api/owners/c_9999999999/release-number".into())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    // Neither quarantined number comes back to them: both were taken from them for good.
    let response = app.text("SMpay9", JO, "YES").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.text().await.unwrap().contains("priority list"));
    let still = app
        .engine
        .owner_by_phone(&JO.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(holds(&still), None);
    let (status, body) = get_page(&app, &cookie, &link).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
}

#[tokio::test]
async fn an_operators_release_gives_the_owner_a_new_number_on_sqlite() {
    an_operators_release_gives_the_owner_a_new_number(spawn_sqlite(test_config(&[])).await).await;
}

#[tokio::test]
async fn an_operators_release_gives_the_owner_a_new_number_on_postgres() {
    an_operators_release_gives_the_owner_a_new_number(spawn_postgres(test_config(&[])).await).await;
}

/// The owner page lists missed calls with the voicemail link and the month's usage; the list
/// names callers masked (the alert itself, in the conversation, is the owner's text as sent).
#[tokio::test]
async fn the_owner_page_lists_missed_calls_with_the_voicemail_link() {
    let app = spawn_sqlite(test_config(&[])).await;
    let owner = crate::after::live_owner(&app.engine, "text").await;
    app.engine
        .handle_call(&crate::after::call("CAcustomer1", "+447700900555"))
        .await
        .unwrap();
    app.engine
        .recording_status(&onboard::engine::after::RecordingStatus {
            recording_sid: "RE1".into(),
            call_sid: "CAcustomer1".into(),
            status: "completed".into(),
            url: Some("https://api.twilio.com/Recordings/RE1".into()),
            duration_secs: Some(31),
        })
        .await
        .unwrap();
    let cookie = sign_in(&app).await;
    let page = ok_page(&app, &cookie, &format!("/admin/owners/{}", owner.id)).await;
    assert!(page.contains("Missed calls"), "{page}");
    assert!(
        page.contains(r#"<a href="https://api.twilio.com/Recordings/RE1.mp3" rel="noreferrer">voicemail</a> (31 s)"#),
        "{page}"
    );
    assert!(page.contains("alert: sms"), "{page}");
    assert!(page.contains("1 of 100 included"), "{page}");
    assert!(page.contains("from +44*******555"), "{page}");
}
