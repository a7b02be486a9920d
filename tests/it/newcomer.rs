//! What a newcomer meets first: the page at `/`, unknown routes, the admin API when it is off,
//! the wrong kind of body, and the command line's messages (`.env`, `--help`, a taken port, a
//! missing database, a bad argument, a closed pipe).

use crate::support;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use support::app::{spawn_sqlite, test_config};

fn onboard(args: &[&str], dir: &std::path::Path, env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_onboard"));
    command
        .args(args)
        .current_dir(dir)
        .env_remove("DATABASE_URL")
        .env_remove("POOL_LOW_WATER")
        .env_remove("LISTEN_ADDR")
        .env("DATABASE_URL", "sqlite::memory:");
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().expect("the onboard binary runs")
}

fn empty_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("onboard-newcomer-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn the_root_page_lists_the_webhook_urls_and_unknown_routes_say_what_is_there() {
    let app = spawn_sqlite(test_config(&[])).await;
    let page = app
        .http
        .get(format!("{}/", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let page = page.text().await.unwrap();
    assert!(page.contains("This is onboard"), "{page}");
    assert!(
        page.contains("POST https://onboard.example.com/webhooks/twilio/sms"),
        "{page}"
    );
    assert!(
        page.contains("POST https://onboard.example.com/webhooks/stripe"),
        "{page}"
    );

    let missing = app
        .http
        .get(format!("{}/nope", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    assert!(missing.text().await.unwrap().contains("no route /nope"));
}

#[tokio::test]
async fn the_admin_api_and_console_when_off_say_how_to_turn_them_on() {
    let app = spawn_sqlite(test_config(&[("ADMIN_TOKEN", "")])).await;
    for path in ["/admin/api/pool", "/admin", "/admin/owners/1"] {
        let response = app
            .http
            .get(format!("{}{path}", app.address))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404, "{path}");
        let body = response.text().await.unwrap();
        assert!(
            body.contains("the admin API and the console are off: set ADMIN_TOKEN"),
            "{path}: {body}"
        );
    }
}

#[tokio::test]
async fn json_sent_to_a_form_webhook_is_told_a_form_is_expected() {
    let app = spawn_sqlite(test_config(&[])).await;
    let response = app
        .http
        .post(format!("{}/webhooks/twilio/sms", app.address))
        .header("Content-Type", "application/json")
        .body(r#"{"From": "+447700900123", "Body": "Hi"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body = response.text().await.unwrap();
    assert!(body.contains("a form is expected"), "{body}");
}

#[test]
fn dot_env_is_read_and_the_real_environment_wins() {
    let dir = empty_dir("dotenv");
    std::fs::write(dir.join(".env"), "POOL_LOW_WATER=7\n").unwrap();
    let from_file = onboard(&["pool", "stats"], &dir, &[]);
    assert!(from_file.status.success(), "{}", text(&from_file.stderr));
    assert!(
        text(&from_file.stdout).contains("low water    7"),
        "{}",
        text(&from_file.stdout)
    );
    assert!(
        text(&from_file.stderr).contains("onboard: read "),
        "{}",
        text(&from_file.stderr)
    );
    assert!(text(&from_file.stderr).contains(".env"));

    let overridden = onboard(&["pool", "stats"], &dir, &[("POOL_LOW_WATER", "9")]);
    assert!(
        text(&overridden.stdout).contains("low water    9"),
        "{}",
        text(&overridden.stdout)
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn help_lists_the_environment() {
    let dir = empty_dir("help");
    let help = onboard(&["--help"], &dir, &[]);
    let out = text(&help.stdout);
    for name in [
        "DATABASE_URL",
        "LISTEN_ADDR",
        "PUBLIC_URL",
        "TWILIO_AUTH_TOKEN",
        "ADMIN_TOKEN",
        ".env",
    ] {
        assert!(out.contains(name), "--help lacks {name}: {out}");
    }
}

#[test]
fn pool_add_names_the_bad_argument() {
    let dir = empty_dir("pool-add");
    let added = onboard(&["pool", "add", "+447700900901", "07700 900902"], &dir, &[]);
    assert!(!added.status.success());
    let err = text(&added.stderr);
    assert!(
        err.contains("argument 2: \"07700 900902\" is not an E.164 number"),
        "{err}"
    );
    assert!(!err.contains("line 2"), "{err}");
}

#[test]
fn a_port_in_use_names_listen_addr() {
    let dir = empty_dir("port");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let served = onboard(&["serve"], &dir, &[("LISTEN_ADDR", &addr)]);
    assert!(!served.status.success());
    let err = text(&served.stderr);
    assert!(
        err.contains(&format!("cannot listen on {addr} (LISTEN_ADDR)")),
        "{err}"
    );
}

#[tokio::test]
async fn a_missing_database_is_reported_once_with_the_createdb_hint() {
    // A database name on the test server that nothing creates.
    let base = std::env::var("DATABASE_URL")
        .expect("DATABASE_URL: this test needs PostgreSQL (scripts/test starts one)");
    let mut url = reqwest::Url::parse(&base).unwrap();
    url.set_path("/onboard_never_created_db");
    let dir = empty_dir("missing-db");
    let migrated = onboard(&["migrate"], &dir, &[("DATABASE_URL", url.as_str())]);
    assert!(!migrated.status.success());
    let err = text(&migrated.stderr);
    assert_eq!(err.matches("does not exist").count(), 1, "{err}");
    assert!(err.contains("createdb"), "{err}");
    assert!(err.contains("onboard_never_created_db"), "{err}");
}

#[test]
fn a_closed_stdout_ends_the_command_quietly() {
    let dir = empty_dir("pipe");
    let mut child = Command::new(env!("CARGO_BIN_EXE_onboard"))
        .arg("chat")
        .current_dir(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The reader goes away before the chat says anything.
    drop(child.stdout.take());
    let mut stdin = child.stdin.take().unwrap();
    let _ = stdin.write_all("/state\n".repeat(200).as_bytes());
    drop(stdin);
    let output = child.wait_with_output().unwrap();
    let err = text(&output.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert!(!err.to_lowercase().contains("broken pipe"), "{err}");
    assert!(output.status.success(), "{err}");
}

#[derive(Clone, Default)]
struct Capture(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

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
async fn dev_mode_logs_the_conversation_at_info_and_production_does_not() {
    for dev in [true, false] {
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
        // Dev mode is no provider secret at all; production mode is the test default.
        let unset_secrets: &[(&str, &str)] = &[
            ("TWILIO_ACCOUNT_SID", ""),
            ("TWILIO_AUTH_TOKEN", ""),
            ("STRIPE_WEBHOOK_SECRET", ""),
        ];
        let app = spawn_sqlite(test_config(if dev { unset_secrets } else { &[] })).await;
        app.text("SMdev1", "+447700900123", "Plumber in Leeds please")
            .await;
        let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
        if dev {
            assert!(logs.contains("DEV_SMS_IN"), "{logs}");
            assert!(logs.contains("Plumber in Leeds please"), "{logs}");
            assert!(logs.contains("DEV_SMS_REPLY"), "{logs}");
            assert!(logs.contains("welcome to Onboard"), "{logs}");
            // Even then, never a whole phone number.
            assert!(!logs.contains("+447700900123"), "{logs}");
        } else {
            assert!(!logs.contains("DEV_SMS"), "{logs}");
            assert!(!logs.contains("Plumber in Leeds please"), "{logs}");
        }
    }
}
