//! Wiring: configuration in, a running server out.

use std::future::Future;
use std::sync::Arc;

use chrono::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::clock::{RandomIds, SystemClock};
use crate::config::Config;
use crate::engine::{DEFAULT_QUARANTINE_DAYS, Engine, Settings};
use crate::flows::Flows;
use crate::http::{self, AppState};
use crate::outbox::{CallSettings, Outbox, OutboxSettings, Sender};
use crate::pool;
use crate::replenish::{self, CircuitBreaker, ReplenishSettings, Replenisher};
use crate::store::replenish::ReplenishStore;
use crate::store::{PgStore, SqliteStore, Store};
use crate::twilio::client::{Credentials, TwilioClient};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("flows: {0}")]
    Flows(#[from] crate::flows::FlowError),
    #[error("database: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("DATABASE_URL must start with postgres:// or sqlite: (got {0:?})")]
    UnknownDatabase(String),
    #[error("cannot listen on {addr} (LISTEN_ADDR): {source}; set LISTEN_ADDR to a free host:port")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("server: {0}")]
    Serve(std::io::Error),
}

/// The flows named by `FLOWS_DIR`, else the ones compiled in; checked either way.
pub fn load_flows(config: &Config) -> Result<Flows, StartError> {
    Ok(match &config.flows_dir {
        Some(dir) => Flows::load_dir(std::path::Path::new(dir))?,
        None => Flows::embedded()?,
    })
}

/// The back end the URL names.
pub enum Database {
    Postgres(PgStore),
    Sqlite(SqliteStore),
}

impl Database {
    pub async fn connect(url: &str) -> Result<Self, StartError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Database::Postgres(PgStore::connect(url, 20).await?))
        } else if url.starts_with("sqlite:") {
            Ok(Database::Sqlite(SqliteStore::connect(url).await?))
        } else {
            Err(StartError::UnknownDatabase(url.to_owned()))
        }
    }

    pub async fn migrate(&self) -> Result<(), StartError> {
        match self {
            Database::Postgres(s) => s.migrate().await?,
            Database::Sqlite(s) => s.migrate().await?,
        }
        Ok(())
    }
}

/// Builds an engine on `store` with the real clock and ids.
pub fn engine<S: Store>(store: S, config: &Config, flows: Arc<Flows>) -> Engine<S> {
    Engine::new(
        store,
        flows,
        Arc::new(SystemClock),
        Arc::new(RandomIds::default()),
        Settings {
            payment_link: config.stripe_payment_link.clone(),
            quarantine: Duration::days(DEFAULT_QUARANTINE_DAYS),
            pool_low_water: config.pool_low_water,
            verify_caller: config.verify_caller_number.clone(),
            verify_window: Duration::from_std(config.verify_window).unwrap_or(Duration::minutes(2)),
        },
    )
}

/// Migrates, then serves on `config.listen_addr` until `shutdown`.
pub async fn serve(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    crate::telemetry::install();
    let flows = Arc::new(load_flows(&config)?);
    let database = Database::connect(&config.database_url).await?;
    database.migrate().await?;
    let listener = TcpListener::bind(config.listen_addr)
        .await
        .map_err(|source| StartError::Listen {
            addr: config.listen_addr,
            source,
        })?;
    if config.stripe_webhook_secrets.is_empty() {
        tracing::warn!(
            event = "DEV_MODE",
            "STRIPE_WEBHOOK_SECRET is not set: Stripe signatures are NOT checked. Never run like this in production."
        );
    }
    if !config.signatures_checked() {
        tracing::warn!(
            event = "DEV_MODE",
            "TWILIO_AUTH_TOKEN is not set: webhook signatures are NOT checked. Never run like this in production."
        );
    }
    tracing::info!(
        event = "SERVER_STARTED",
        addr = %config.listen_addr,
        database = if matches!(database, Database::Postgres(_)) { "postgres" } else { "sqlite" },
        admin_api = config.admin_token.is_some(),
    );
    let config = Arc::new(config);
    match database {
        Database::Postgres(store) => run(listener, store, config, flows, shutdown).await,
        Database::Sqlite(store) => run(listener, store, config, flows, shutdown).await,
    }
}

/// Serves HTTP with the outbox worker and the pool keeper beside it. On shutdown, HTTP drains
/// in-flight requests first, then the worker finishes the message in hand.
async fn run<S: ReplenishStore>(
    listener: TcpListener,
    store: S,
    config: Arc<Config>,
    flows: Arc<Flows>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let engine = Arc::new(engine(store.clone(), &config, flows));
    let (stop, stopped) = watch::channel(false);

    let outbox = Outbox::new(
        store,
        sender(&config),
        Arc::new(SystemClock),
        OutboxSettings::default(),
    );
    let worker = tokio::spawn({
        let stopped = stopped.clone();
        async move { outbox.run(stopped).await }
    });
    let replenisher = replenisher(&config, engine.clone());
    let twilio_breaker = replenisher.as_ref().map(|r| r.breaker().clone());
    let buyer = replenisher.map(|replenisher| {
        let stopped = stopped.clone();
        tokio::spawn(async move {
            replenisher
                .keep(std::time::Duration::from_secs(60), stopped)
                .await
        })
    });
    let keeper = tokio::spawn({
        let engine = engine.clone();
        async move { pool::keep(&engine, std::time::Duration::from_secs(15), stopped).await }
    });

    let state = AppState {
        engine,
        config,
        twilio_breaker,
    };
    let served = http::serve(listener, state, shutdown).await;
    let _ = stop.send(true);
    let _ = worker.await;
    let _ = keeper.await;
    if let Some(buyer) = buyer {
        let _ = buyer.await;
    }
    served.map_err(StartError::Serve)
}

/// Twilio when credentials are set; otherwise texts are logged and marked simulated.
pub fn sender(config: &Config) -> Sender {
    match (
        &config.twilio_account_sid,
        &config.twilio_auth_token,
        &config.onboarding_number,
    ) {
        (Some(sid), Some(token), Some(from)) => Sender::Twilio {
            client: TwilioClient::new(
                &config.twilio_api_base,
                Credentials {
                    account_sid: sid.clone(),
                    username: sid.clone(),
                    secret: token.clone(),
                },
                std::time::Duration::from_secs(10),
            ),
            from: from.clone(),
            status_callback: format!("{}/webhooks/twilio/message-status", config.public_url),
            calls: CallSettings {
                from: config
                    .verify_caller_number
                    .clone()
                    .unwrap_or_else(|| from.clone()),
                status_callback: format!("{}/webhooks/twilio/call-status", config.public_url),
                ring_seconds: config.verify_ring_seconds,
            },
        },
        _ => {
            tracing::warn!(
                event = "DEV_MODE",
                "TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN or ONBOARDING_NUMBER is not set: texts are logged, not sent"
            );
            Sender::Simulated
        }
    }
}

/// The keeper that buys pool numbers: only with `POOL_TARGET` and Twilio credentials.
fn replenisher<S: ReplenishStore>(
    config: &Config,
    engine: Arc<Engine<S>>,
) -> Option<Replenisher<S>> {
    let target = config.pool_target?;
    let (Some(sid), Some(token)) = (&config.twilio_account_sid, &config.twilio_auth_token) else {
        tracing::warn!(
            event = "POOL_BUYING_OFF",
            "POOL_TARGET is set but TWILIO_ACCOUNT_SID or TWILIO_AUTH_TOKEN is not: no numbers are bought"
        );
        return None;
    };
    let twilio = TwilioClient::new(
        &config.twilio_api_base,
        Credentials {
            account_sid: sid.clone(),
            username: sid.clone(),
            secret: token.clone(),
        },
        std::time::Duration::from_secs(15),
    );
    let breaker = Arc::new(CircuitBreaker::with_defaults(Arc::new(SystemClock)));
    Some(Replenisher::new(
        engine,
        twilio,
        breaker,
        ReplenishSettings {
            address_sid: config.twilio_address_sid.clone(),
            bundle_sid: config.twilio_bundle_sid.clone(),
            ..ReplenishSettings::new(
                target,
                config.pool_max_buy_per_day,
                replenish::home_country(config.onboarding_number.as_ref()),
                &config.public_url,
            )
        },
    ))
}
