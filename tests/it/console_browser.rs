//! The ops console in a real headless Chromium (Debian's `chromium` and `chromium-driver`, driven
//! through WebDriver): sign in, search by the last digits of a phone, open the owner, read their
//! conversation, reset them through the confirmation, watch a new text arrive on the Live page,
//! reprocess a failed Stripe event, sign out; at 1440 px and at 375 px. Screenshots of every page
//! at both widths are written to `target/console-screenshots/`.
//!
//! Fails, never skips, when `chromedriver` or `chromium` is missing: `scripts/test` installs them.

use crate::support;

use std::net::TcpListener as StdListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration as StdDuration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use onboard::store::admin::AdminReads;
use onboard::store::{EventOutcome, NewWebhookEvent, Owner, SqliteStore, Store, Tx};
use serde_json::json;
use support::app::{ADMIN_TOKEN, TestApp, spawn_sqlite, test_config};

const JO: &str = "+447700900123";
const AL: &str = "+447700900456";

/// Where the screenshots go (the README names it).
fn screenshots() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots")
}

/// A chromedriver of our own on a free port, ended when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find(binary: &str, package: &str) -> PathBuf {
    for dir in ["/usr/bin", "/usr/local/bin", "/usr/lib/chromium"] {
        let path = PathBuf::from(dir).join(binary);
        if path.exists() {
            return path;
        }
    }
    panic!(
        "{binary} is missing, and the console's browser tests need it: install the Debian \
         package {package} (apt-get install {package}), or run the tests with scripts/test, \
         which installs it"
    );
}

async fn driver() -> Driver {
    let chromedriver = find("chromedriver", "chromium-driver");
    let port = StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(chromedriver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let deadline = Instant::now() + StdDuration::from_secs(15);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "chromedriver did not listen within 15 s"
        );
        tokio::time::sleep(StdDuration::from_millis(100)).await;
    }
    Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    }
}

/// A fresh headless Chromium `width` px wide: a phone's viewport below 800 px.
async fn browser(driver: &Driver, width: u32, profile: &std::path::Path) -> Client {
    let chromium = find("chromium", "chromium");
    let mut options = json!({
        "binary": chromium,
        "args": [
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-dev-shm-usage",
            format!("--user-data-dir={}", profile.display()),
            format!("--window-size={width},1000"),
        ],
    });
    if width < 800 {
        options["mobileEmulation"] =
            json!({"deviceMetrics": {"width": width, "height": 812, "pixelRatio": 1.0}});
    }
    let mut capabilities = serde_json::Map::new();
    capabilities.insert("goog:chromeOptions".into(), options);
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let mut builder = ClientBuilder::new(connector);
    builder.capabilities(capabilities);
    builder
        .connect(&driver.url)
        .await
        .expect("a Chromium session through chromedriver")
}

async fn shoot(client: &Client, width: u32, name: &str) {
    let png = client.screenshot().await.expect("a screenshot");
    let dir = screenshots();
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{name}-{width}.png")), png).unwrap();
}

/// Waits up to `limit` for an element to appear; returns how long it took.
async fn wait_for(client: &Client, css: &str, limit: StdDuration) -> StdDuration {
    let start = Instant::now();
    loop {
        if client.find(Locator::Css(css)).await.is_ok() {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "{css} did not appear within {limit:?} on {}",
            client.current_url().await.unwrap()
        );
        tokio::time::sleep(StdDuration::from_millis(50)).await;
    }
}

async fn text_of(client: &Client, css: &str) -> String {
    client
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|_| panic!("{css} on the page"))
        .text()
        .await
        .unwrap()
}

async fn click(client: &Client, css: &str) {
    client
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|_| panic!("{css} on the page"))
        .click()
        .await
        .unwrap();
}

/// Two owners part-way through, a few numbers, and a payment whose processing failed.
/// The owner texting from `phone`, who must exist.
async fn owner(app: &TestApp<SqliteStore>, phone: &str) -> Owner {
    app.engine
        .owner_by_phone(&phone.parse().unwrap())
        .await
        .unwrap()
        .expect("an owner with that phone")
}

async fn seed(app: &TestApp<SqliteStore>) -> (String, String) {
    for (phone, texts) in [
        (
            JO,
            ["Hi", "Dog grooming in Leeds", "Paws & Claws", "Jo Smith"],
        ),
        (AL, ["Hello", "Plumbing, York", "Al's Pipes", "Al Jones"]),
    ] {
        for (n, body) in texts.iter().enumerate() {
            let sid = format!("SM{}{n}", &phone[9..]);
            assert_eq!(app.text(&sid, phone, body).await.status(), 200);
        }
    }
    let numbers: Vec<_> = ["+447700900901", "+447700900902", "+14155550101"]
        .iter()
        .map(|n| n.parse().unwrap())
        .collect();
    app.engine.add_numbers(&numbers).await.unwrap();
    let jo = owner(app, JO).await.id.to_string();
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
        received_at: app.engine.now(),
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

    // Al goes on to pay, as Stripe tells it, and so holds a number.
    for (n, body) in ["text", "yes"].iter().enumerate() {
        let sid = format!("SMal{n}");
        assert_eq!(app.text(&sid, AL, body).await.status(), 200);
    }
    let al = owner(app, AL).await.id.to_string();
    let paid = app.pay("evt_al", &al).await;
    assert_eq!(paid.status(), 200);
    (jo, al)
}

async fn scenario(driver: &Driver, width: u32) {
    // Plain HTTP to the test server: the cookie is not `Secure` there.
    let app = spawn_sqlite(test_config(&[("PUBLIC_URL", "http://127.0.0.1:3000")])).await;
    let (jo, al) = seed(&app).await;
    let profile = std::env::temp_dir().join(format!(
        "onboard-console-chromium-{}-{width}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&profile);
    let client = browser(driver, width, &profile).await;
    let at = |path: &str| format!("{}{path}", app.address);

    // Signed out, the console sends the browser to sign in.
    client.goto(&at("/admin")).await.unwrap();
    wait_for(&client, "input#token", StdDuration::from_secs(5)).await;
    shoot(&client, width, "sign-in").await;
    client
        .find(Locator::Css("input#token"))
        .await
        .unwrap()
        .send_keys(ADMIN_TOKEN)
        .await
        .unwrap();
    click(&client, "form.signin button").await;
    wait_for(&client, "svg.funnel", StdDuration::from_secs(5)).await;
    assert!(text_of(&client, "h1").await.contains("Today"));
    shoot(&client, width, "today").await;

    // Search by the last digits of Jo's phone: results as you type, the phone masked.
    click(&client, "nav a[href='/admin/search']").await;
    wait_for(&client, "input#q", StdDuration::from_secs(5)).await;
    client
        .find(Locator::Css("input#q"))
        .await
        .unwrap()
        .send_keys("0123")
        .await
        .unwrap();
    wait_for(&client, "#results a.result", StdDuration::from_secs(5)).await;
    let results = text_of(&client, "#results").await;
    assert!(results.contains("Paws & Claws"), "{results}");
    assert!(
        results.contains("+44*******123") && !results.contains(JO),
        "{results}"
    );
    shoot(&client, width, "search").await;

    // The owner, and their conversation.
    click(&client, "#results a.result").await;
    wait_for(&client, "ol.chat", StdDuration::from_secs(5)).await;
    let chat = text_of(&client, "ol.chat").await;
    assert!(chat.contains("Dog grooming in Leeds"), "{chat}");
    assert!(chat.contains("Paws & Claws"));
    shoot(&client, width, "owner").await;

    // Reset, through the confirmation.
    click(&client, "a.button.danger").await;
    wait_for(&client, ".confirm form", StdDuration::from_secs(5)).await;
    shoot(&client, width, "confirm").await;
    click(&client, ".confirm button.danger").await;
    wait_for(&client, "p.notice.good", StdDuration::from_secs(5)).await;
    let owner_now = owner(&app, JO).await;
    assert_eq!(owner_now.state.as_str(), "S1_BUSINESS_TYPE_LOCATION");
    assert!(text_of(&client, "#history").await.contains("admin_reset"));

    // Live: a new text appears within 2 s.
    click(&client, "nav a[href='/admin/live']").await;
    wait_for(&client, "ol#feed", StdDuration::from_secs(5)).await;
    let shown = client
        .find_all(Locator::Css("ol#feed li"))
        .await
        .unwrap()
        .len();
    // Give the page's event stream a moment to open, as a person would.
    let opened = Instant::now();
    while !text_of(&client, "#live-status").await.starts_with("Live") {
        assert!(
            opened.elapsed() < StdDuration::from_secs(5),
            "the stream did not open"
        );
        tokio::time::sleep(StdDuration::from_millis(50)).await;
    }
    assert_eq!(app.text("SMlive", JO, "Hello again").await.status(), 200);
    let sent = Instant::now();
    let selector = format!("ol#feed li.fresh[data-kind='text_in'] a[href='/admin/owners/{jo}']");
    wait_for(&client, &selector, StdDuration::from_secs(2)).await;
    println!(
        "console live feed at {width} px: a new inbound text shown after {} ms (limit 2000 ms)",
        sent.elapsed().as_millis()
    );
    let now_shown = client
        .find_all(Locator::Css("ol#feed li"))
        .await
        .unwrap()
        .len();
    assert!(now_shown > shown);
    shoot(&client, width, "live").await;

    // Webhooks: the failed Stripe event, reprocessed through the confirmation.
    click(&client, "nav a[href='/admin/webhooks']").await;
    wait_for(&client, "ol.events", StdDuration::from_secs(5)).await;
    shoot(&client, width, "webhooks").await;
    client
        .goto(&at("/admin/webhooks?provider=stripe&status=failed"))
        .await
        .unwrap();
    click(&client, "li.event a.button").await;
    wait_for(&client, ".confirm form", StdDuration::from_secs(5)).await;
    click(&client, ".confirm button.danger").await;
    wait_for(&client, "p.notice.good", StdDuration::from_secs(5)).await;
    let event = app
        .engine
        .store()
        .webhook_event("stripe", "evt_failed")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(event.status, "processed");

    // Al's number, released through its confirmation: it goes to quarantine, and Al, still
    // paid, gets another at once.
    let released = owner(&app, AL)
        .await
        .twilio_number
        .expect("Al paid for a number");
    client
        .goto(&at(&format!("/admin/owners/{al}")))
        .await
        .unwrap();
    click(&client, "a.button.danger[href$='/release-number']").await;
    wait_for(&client, ".confirm form", StdDuration::from_secs(5)).await;
    let confirm = text_of(&client, ".confirm").await;
    assert!(confirm.contains(released.as_str()), "{confirm}");
    shoot(&client, width, "release-number").await;
    click(&client, ".confirm button.danger").await;
    wait_for(&client, "p.notice.good", StdDuration::from_secs(5)).await;
    let notice = text_of(&client, "p.notice.good").await;
    let now_held = owner(&app, AL)
        .await
        .twilio_number
        .expect("Al got another number");
    assert_ne!(now_held, released);
    assert!(
        notice.starts_with("Number released.") && notice.contains(now_held.as_str()),
        "{notice}"
    );

    click(&client, "nav a[href='/admin/pool']").await;
    wait_for(&client, "#by-country", StdDuration::from_secs(5)).await;
    shoot(&client, width, "pool").await;

    // Sign out: back to the sign-in page, and the console is closed again.
    click(&client, "form.signout button").await;
    wait_for(&client, "input#token", StdDuration::from_secs(5)).await;
    client.goto(&at("/admin/pool")).await.unwrap();
    wait_for(&client, "input#token", StdDuration::from_secs(5)).await;

    client.close().await.unwrap();
    let _ = std::fs::remove_dir_all(&profile);
}

#[tokio::test]
async fn the_console_in_chromium_at_1440_and_375_px() {
    let driver = driver().await;
    scenario(&driver, 1440).await;
    scenario(&driver, 375).await;
}
