//! `onboard replay --target`: the fixtures, sent over HTTP to a server this test starts as
//! production does (`app::serve`, on PostgreSQL), signed as Twilio and Stripe sign, read back
//! through the admin API; and the `POST /admin/api/pool` it adds pool numbers with.

use crate::support;

use std::path::PathBuf;
use std::time::Duration;

use onboard::live::{Remote, Target};
use onboard::store::Store;
use support::app::{ADMIN_TOKEN, AUTH_TOKEN, TestApp, spawn_postgres, spawn_sqlite, test_config};

const STRIPE_SECRET: &str = "whsec_live_replay";

/// A server started as `onboard serve` starts one, on a fresh PostgreSQL database: its address,
/// how to drive it, and its task.
async fn start_server() -> (
    String,
    Target,
    tokio::task::JoinHandle<Result<(), onboard::app::StartError>>,
) {
    let database_url = support::fresh_postgres_database().await;
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let address = format!("127.0.0.1:{port}");
    let config = test_config(&[
        ("DATABASE_URL", &database_url),
        ("LISTEN_ADDR", &address),
        // No onboarding number to send from: texts are simulated, but webhooks are still signed
        // and checked.
        ("ONBOARDING_NUMBER", ""),
        ("VERIFY_CALLER_NUMBER", "+447700900000"),
        ("STRIPE_WEBHOOK_SECRET", STRIPE_SECRET),
    ]);
    let target = Target {
        url: format!("http://{address}"),
        public_url: config.public_url.clone(),
        twilio_auth_token: Some(AUTH_TOKEN.into()),
        stripe_secret: Some(STRIPE_SECRET.into()),
        admin_token: ADMIN_TOKEN.into(),
        payment_link: config.stripe_payment_link.clone(),
        verify_caller: config.verify_caller_number.clone().unwrap(),
    };
    let server = tokio::spawn(onboard::app::serve(config, std::future::pending()));
    onboard::tls::install_crypto_provider();
    let http = reqwest::Client::new();
    for _ in 0..100 {
        if http
            .get(format!("http://{address}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return (address, target, server);
        }
        assert!(
            !server.is_finished(),
            "the server stopped: {:?}",
            server.await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the server did not answer /readyz");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_fixture_passes_against_a_live_server_on_postgres() {
    let (_, target, server) = start_server().await;
    let remote = Remote::new(target);
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/conversations");
    let mut report = Vec::new();
    let all_passed =
        onboard::live::replay_all(&remote, std::slice::from_ref(&fixtures), &mut report)
            .await
            .expect("the replay ran");
    let report = String::from_utf8(report).unwrap();
    assert!(all_passed, "{report}");
    let count = onboard::replay::collect(&[fixtures]).unwrap().len();
    assert_eq!(
        report.matches("\nok ").count() + usize::from(report.starts_with("ok ")),
        count,
        "{report}"
    );
    // Most fixtures run whole; only clock steps are skipped.
    assert!(report.contains("(steps from "), "{report}");

    // A second run of the same fixtures on the same server passes too: fresh numbers, fresh ids.
    let mut again = Vec::new();
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/conversations");
    assert!(
        onboard::live::replay_all(&remote, &[fixtures], &mut again)
            .await
            .unwrap(),
        "{}",
        String::from_utf8_lossy(&again)
    );
    server.abort();
}

async fn add_pool<S: Store>(app: &TestApp<S>, body: serde_json::Value) -> (u16, String) {
    let response = app
        .http
        .post(format!("{}/admin/api/pool", app.address))
        .bearer_auth(ADMIN_TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

async fn pool_takes_a_list_checked_as_the_cli_checks<S: Store>(app: TestApp<S>) {
    let (status, body) = add_pool(
        &app,
        serde_json::json!({"numbers": ["+447700900901", "07700 900902", "+447700900903"]}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("item 2: \"07700 900902\" is not an E.164 number"),
        "{body}"
    );
    assert!(body.contains("nothing was added"), "{body}");
    assert_eq!(app.engine.store().pool_stats().await.unwrap().total, 0);

    let (status, body) = add_pool(
        &app,
        serde_json::json!({"numbers": ["+447700900901", "+447700900902"]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["added"], 2);
    let (_, body) = add_pool(&app, serde_json::json!({"numbers": ["+447700900902"]})).await;
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (json["added"].as_u64(), json["already_in_pool"].as_u64()),
        (Some(0), Some(1))
    );
    let stats = app.engine.store().pool_stats().await.unwrap();
    assert_eq!(stats.available, 2);

    let (status, body) = add_pool(&app, serde_json::json!(["+447700900901"])).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("{\"numbers\""), "{body}");
}

#[tokio::test]
async fn admin_pool_post_takes_a_checked_list_on_sqlite() {
    pool_takes_a_list_checked_as_the_cli_checks(spawn_sqlite(test_config(&[])).await).await;
}

#[tokio::test]
async fn admin_pool_post_takes_a_checked_list_on_postgres() {
    pool_takes_a_list_checked_as_the_cli_checks(spawn_postgres(test_config(&[])).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chat_with_a_target_drives_a_live_server_to_complete() {
    let (address, target, server) = start_server().await;
    let remote = Remote::new(target.clone());
    assert_eq!(
        remote
            .add_pool(&["+447700900911".to_owned()])
            .await
            .unwrap(),
        1
    );

    let script = "Hi\nPlumber in Leeds\nSmith & Sons Plumbing\nJo Smith\nSMS\nYES\n/pay\n2\nDONE\n/call\n/later 2h\n/state\n";
    let url = format!("http://{address}");
    let public_url = target.public_url.clone();
    let caller = target.verify_caller.to_string();
    // The chat blocks on its stdin: it runs beside the server, off the runtime's threads.
    let output = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_onboard"))
            .args(["chat", "--phone", "+447700900124", "--target", &url])
            .env_remove("DATABASE_URL")
            .env("TWILIO_ACCOUNT_SID", "AC00000000000000000000000000000000")
            .env("TWILIO_AUTH_TOKEN", AUTH_TOKEN)
            .env("STRIPE_WEBHOOK_SECRET", STRIPE_SECRET)
            .env("ADMIN_TOKEN", ADMIN_TOKEN)
            .env("PUBLIC_URL", public_url)
            .env("ONBOARDING_NUMBER", caller)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("the onboard binary starts");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    let out = String::from_utf8(output.stdout).unwrap();
    assert!(
        output.status.success(),
        "{}\n{out}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(out.contains("bot: Hi, welcome to Onboard!"), "{out}");
    assert!(
        out.contains("-- Stripe checkout.session.completed: processed"),
        "{out}"
    );
    // Texts the server sends first are read back from its admin API.
    assert!(
        out.contains("bot (text): Your new business number is 07700 900911"),
        "{out}"
    );
    assert!(out.contains("bot (calls you):"), "{out}");
    assert!(out.contains("caller hears: Forwarding works."), "{out}");
    assert!(out.contains("bot (text): It worked!"), "{out}");
    assert!(out.contains("-- a live server keeps real time"), "{out}");
    assert!(
        out.contains("-- state COMPLETE, gate none, paid yes, number +447700900911"),
        "{out}"
    );
    server.abort();
}
