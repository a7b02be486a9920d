//! `spawn_app()`: the whole HTTP server on a random port, over a chosen store.

use std::sync::Arc;

use onboard::clock::{Clock, Ids, ManualClock, SequentialIds};
use onboard::config::Config;
use onboard::engine::{Engine, Seams};
use onboard::flows::Flows;
use onboard::http::{self, AppState};
use onboard::replay::{FIXTURE_PAYMENT_LINK, fixture_epoch};
use onboard::store::{PgStore, SqliteStore, Store};
use onboard::twilio::signature;
use onboard::workers::Workers;

pub const AUTH_TOKEN: &str = "test_auth_token";
pub const ADMIN_TOKEN: &str = "test_admin_token";
pub const STRIPE_SECRET: &str = "whsec_test";

pub struct TestApp<S: Store> {
    pub address: String,
    pub config: Arc<Config>,
    pub engine: Arc<Engine<S>>,
    pub clock: Arc<ManualClock>,
    pub http: reqwest::Client,
    /// The workers `/readyz` reports on: tests supervise their own under it.
    pub workers: Workers,
}

/// Settings as production would have them (signatures checked, admin on), with overrides; an
/// empty value unsets a setting.
pub fn test_config(overrides: &[(&str, &str)]) -> Config {
    let mut vars: Vec<(String, String)> = [
        ("TWILIO_ACCOUNT_SID", "AC00000000000000000000000000000000"),
        ("TWILIO_AUTH_TOKEN", AUTH_TOKEN),
        ("STRIPE_WEBHOOK_SECRET", STRIPE_SECRET),
        ("PUBLIC_URL", "https://onboard.example.com"),
        ("ADMIN_TOKEN", ADMIN_TOKEN),
        ("ONBOARDING_NUMBER", "+447700900000"),
        ("STRIPE_PAYMENT_LINK", FIXTURE_PAYMENT_LINK),
        ("POOL_LOW_WATER", "3"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for (k, v) in overrides {
        vars.retain(|(name, _)| name != k);
        vars.push((k.to_string(), v.to_string()));
    }
    Config::from_lookup(|name| {
        vars.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .filter(|v| !v.is_empty())
    })
    .expect("test config is valid")
}

/// An engine built as the server builds its own (from `config`), on the given clock and ids.
pub fn engine_on<S: Store>(
    store: S,
    config: &Config,
    clock: Arc<dyn Clock>,
    ids: Arc<dyn Ids>,
) -> Arc<Engine<S>> {
    Arc::new(Engine::from_config(
        store,
        config,
        Seams {
            flows: Arc::new(Flows::embedded().expect("flows")),
            clock,
            ids,
        },
    ))
}

pub async fn spawn_sqlite(config: Config) -> TestApp<SqliteStore> {
    Sqlite::spawn(config).await
}

pub async fn spawn_postgres(config: Config) -> TestApp<PgStore> {
    Postgres::spawn(config).await
}

pub async fn spawn_app<S: Store>(store: S, config: Config) -> TestApp<S> {
    onboard::telemetry::install();
    // reqwest has no TLS provider of its own: the crate's is installed by whoever builds a client.
    onboard::tls::install_crypto_provider();
    let config = Arc::new(config);
    let clock = Arc::new(ManualClock::new(fixture_epoch()));
    let engine = engine_on(
        store,
        &config,
        clock.clone(),
        Arc::new(SequentialIds::default()),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = format!("http://{}", listener.local_addr().expect("addr"));
    let app = TestApp {
        address,
        config,
        engine,
        clock,
        http: reqwest::Client::new(),
        workers: Workers::default(),
    };
    tokio::spawn(http::serve(listener, app.state(), std::future::pending()));
    app
}

impl<S: Store> TestApp<S> {
    /// The state the server's handlers share, as the test server has it (with gauges of its own),
    /// for driving a router directly.
    pub fn state(&self) -> AppState<S> {
        AppState {
            engine: self.engine.clone(),
            config: self.config.clone(),
            twilio_breaker: None,
            workers: self.workers.clone(),
            gauges: Arc::new(onboard::telemetry::GaugeCache::new(
                self.clock.clone(),
                onboard::telemetry::GAUGE_MAX_AGE,
            )),
        }
    }

    /// Posts a form to a Twilio webhook path, signed as Twilio signs it.
    pub async fn post_twilio(&self, path: &str, params: &[(&str, &str)]) -> reqwest::Response {
        let owned: Vec<(String, String)> = params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let url = format!("{}{}", self.config.public_url, path);
        let signature = signature::compute(AUTH_TOKEN, &url, &owned);
        self.http
            .post(format!("{}{}", self.address, path))
            .header("X-Twilio-Signature", signature)
            .form(&owned)
            .send()
            .await
            .expect("request")
    }

    /// Stripe's event `event_id`: `owner_id` paid ([`paid_checkout`]), signed as
    /// [`TestApp::post_stripe`] signs.
    pub async fn pay(&self, event_id: &str, owner_id: &str) -> reqwest::Response {
        self.post_stripe(&paid_checkout(event_id, owner_id)).await
    }

    /// A Stripe event, signed now (by the app's clock) with the app's first webhook secret.
    pub async fn post_stripe(&self, event: &serde_json::Value) -> reqwest::Response {
        let body = event.to_string();
        let secret = self
            .config
            .stripe_webhook_secrets
            .first()
            .expect("the test's config has a Stripe webhook secret");
        let header = onboard::stripe::signature::sign(
            body.as_bytes(),
            secret,
            self.engine.now().timestamp(),
        );
        self.http
            .post(format!("{}/webhooks/stripe", self.address))
            .header("Stripe-Signature", header)
            .body(body)
            .send()
            .await
            .expect("request")
    }

    /// An inbound SMS from `from`, signed.
    pub async fn text(&self, sid: &str, from: &str, body: &str) -> reqwest::Response {
        self.post_twilio(
            "/webhooks/twilio/sms",
            &[
                ("MessageSid", sid),
                ("SmsSid", sid),
                ("AccountSid", "AC00000000000000000000000000000000"),
                ("From", from),
                ("To", "+447700900000"),
                ("Body", body),
                ("NumMedia", "0"),
            ],
        )
        .await
    }
}

/// Stripe's `checkout.session.completed` event `event_id`: `owner_id` (the payment link's
/// `client_reference_id`) paid, as a customer of their own.
pub fn paid_checkout(event_id: &str, owner_id: &str) -> serde_json::Value {
    serde_json::json!({
        "id": event_id, "object": "event", "type": "checkout.session.completed",
        "data": {"object": {"id": format!("cs_{event_id}"), "object": "checkout.session",
            "payment_status": "paid", "client_reference_id": owner_id,
            "customer": format!("cus_{owner_id}")}}
    })
}

/// A storage back end a test can run on: `Sqlite` (in memory) or `Postgres` (a fresh database on
/// the test server). A test written once as `async fn name<B: BackEnd>()` runs on both through
/// [`on_both_back_ends!`](crate::support::on_both_back_ends).
pub trait BackEnd {
    type Store: Store;

    /// A fresh, migrated, empty store.
    fn store() -> impl std::future::Future<Output = Self::Store>;

    /// The whole server over a fresh store, as [`spawn_app`] builds it.
    fn spawn(config: Config) -> impl std::future::Future<Output = TestApp<Self::Store>> {
        async { spawn_app(Self::store().await, config).await }
    }
}

pub struct Sqlite;

pub struct Postgres;

impl BackEnd for Sqlite {
    type Store = SqliteStore;

    async fn store() -> SqliteStore {
        let store = SqliteStore::in_memory().await.expect("sqlite");
        store.migrate().await.expect("migrate");
        store
    }
}

impl BackEnd for Postgres {
    type Store = PgStore;

    async fn store() -> PgStore {
        let url = super::fresh_postgres_database().await;
        let store = PgStore::connect(&url, 10).await.expect("connect");
        store.migrate().await.expect("migrate");
        store
    }
}
