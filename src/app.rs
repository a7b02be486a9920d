//! Wiring: configuration in, a running server out.

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::clock::{RandomIds, SystemClock};
use crate::config::{Config, DevModeReason, Signatures};
use crate::engine::{Engine, Seams};
use crate::flows::Flows;
use crate::http::{self, AppState};
use crate::outbox::{CallSettings, Outbox, OutboxSettings, Sender};
use crate::pool;
use crate::replenish::{self, CircuitBreaker, ReplenishSettings, Replenisher};
use crate::store::replenish::ReplenishStore;
use crate::store::{PgStore, SqliteStore, Store};
use crate::telemetry::{GAUGE_MAX_AGE, GaugeCache};
use crate::twilio::client::{Credentials, TwilioClient};
use crate::workers::{Restart, Workers, supervise};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("flows: {0}")]
    Flows(#[from] crate::flows::FlowError),
    #[error(transparent)]
    Zones(#[from] crate::zones::ZonesError),
    #[error("database: {0}")]
    Store(#[from] crate::store::StoreError),
    /// Names only the URL's scheme: the rest can hold a password.
    #[error("DATABASE_URL must start with postgres:// or sqlite: (its scheme is {0:?})")]
    UnknownDatabase(String),
    #[error("cannot listen on {addr} (LISTEN_ADDR): {source}; set LISTEN_ADDR to a free host:port")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("server: {0}")]
    Serve(std::io::Error),
    /// The SMTP settings (checked when loaded; this is the transport failing to build).
    #[error("email: {0}")]
    Email(String),
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
    /// `max_connections` bounds a PostgreSQL pool; SQLite holds its one connection.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, StartError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Database::Postgres(
                PgStore::connect(url, max_connections).await?,
            ))
        } else if url.starts_with("sqlite:") {
            Ok(Database::Sqlite(SqliteStore::connect(url).await?))
        } else {
            let scheme = match url.split_once(':') {
                Some((scheme, _))
                    if scheme
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)) =>
                {
                    scheme
                }
                _ => "(none)",
            };
            Err(StartError::UnknownDatabase(scheme.to_owned()))
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
    Engine::from_config(
        store,
        config,
        Seams {
            flows,
            clock: Arc::new(SystemClock),
            ids: Arc::new(RandomIds::default()),
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
    // The time-zone table is compiled in; checked here so a bad edit stops the start, not a sweep.
    crate::zones::Zones::embedded()?;
    let database = Database::connect(&config.database_url, config.database_max_connections).await?;
    database.migrate().await?;
    let listener = TcpListener::bind(config.listen_addr)
        .await
        .map_err(|source| StartError::Listen {
            addr: config.listen_addr,
            source,
        })?;
    let metrics_listener = match config.metrics_addr {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Listen { addr, source })?,
        ),
        None => None,
    };
    match config.signatures {
        Signatures::Checked => {}
        Signatures::Off(DevModeReason::NoSecretsSet) => tracing::warn!(
            event = "DEV_MODE",
            "no provider secret is set: Twilio and Stripe webhook signatures are NOT checked. Never run like this in production."
        ),
        Signatures::Off(DevModeReason::InsecureWebhooksSet) => tracing::warn!(
            event = "DEV_MODE",
            "ONBOARD_INSECURE_WEBHOOKS=1: Twilio and Stripe webhook signatures are NOT checked. Never run like this in production."
        ),
    }
    tracing::info!(
        event = "SERVER_STARTED",
        addr = %config.listen_addr,
        database = if matches!(database, Database::Postgres(_)) { "postgres" } else { "sqlite" },
        admin_api = config.admin_token.is_some(),
        metrics_addr = ?config.metrics_addr,
    );
    let config = Arc::new(config);
    match database {
        Database::Postgres(store) => {
            run(listener, metrics_listener, store, config, flows, shutdown).await
        }
        Database::Sqlite(store) => {
            run(listener, metrics_listener, store, config, flows, shutdown).await
        }
    }
}

/// Serves HTTP with the outbox worker and the pool keepers beside it, each supervised: restarted
/// if it dies, and named by `/readyz` while it is down. On shutdown, HTTP drains in-flight
/// requests first, then the worker finishes the message in hand.
async fn run<S: ReplenishStore>(
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    store: S,
    config: Arc<Config>,
    flows: Arc<Flows>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let engine = Arc::new(engine(store.clone(), &config, flows));
    let mailer = crate::email::Mailer::from_config(&config).map_err(StartError::Email)?;
    if mailer.is_none() {
        tracing::warn!(
            event = "EMAIL_OFF",
            "SMTP_URL is not set: owners who chose email alerts will not get them"
        );
    }
    let (stop, stopped) = watch::channel(false);
    let ops_mailer = mailer.clone();

    let workers = Workers::default();
    let outbox = Arc::new(
        Outbox::new(
            store,
            sender(&config),
            Arc::new(SystemClock),
            OutboxSettings {
                give_up_after: config.outbox_give_up_after,
                batch: config.outbox_batch,
                prices: config.costs.prices.clone(),
                ..OutboxSettings::default()
            },
        )
        .with_mailer(mailer),
    );
    let worker = supervise(
        workers.clone(),
        "outbox",
        Restart::default(),
        stopped.clone(),
        {
            let stopped = stopped.clone();
            move || {
                let (outbox, stopped) = (outbox.clone(), stopped.clone());
                async move { outbox.run(stopped).await }
            }
        },
    );
    let replenisher = replenisher(&config, engine.clone()).map(Arc::new);
    let twilio_breaker = replenisher.as_ref().map(|r| r.breaker().clone());
    let buyer = replenisher.map(|replenisher| {
        let stopped = stopped.clone();
        supervise(
            workers.clone(),
            "pool_buyer",
            Restart::default(),
            stopped.clone(),
            move || {
                let (replenisher, stopped) = (replenisher.clone(), stopped.clone());
                async move {
                    replenisher
                        .keep(std::time::Duration::from_secs(60), stopped)
                        .await
                }
            },
        )
    });
    let reminder_sweep = supervise(
        workers.clone(),
        "reminders",
        Restart::default(),
        stopped.clone(),
        {
            let (engine, stopped) = (engine.clone(), stopped.clone());
            move || {
                let (engine, stopped) = (engine.clone(), stopped.clone());
                async move {
                    crate::reminders::keep(&engine, std::time::Duration::from_secs(60), stopped)
                        .await
                }
            }
        },
    );
    let cost_keeper = supervise(
        workers.clone(),
        "cost_keeper",
        Restart::default(),
        stopped.clone(),
        {
            let (engine, stopped) = (engine.clone(), stopped.clone());
            let twilio = twilio_client(&config, std::time::Duration::from_secs(10));
            move || {
                let (engine, stopped, twilio) = (engine.clone(), stopped.clone(), twilio.clone());
                let mailer = ops_mailer.clone();
                async move {
                    crate::costs::keep(
                        &engine,
                        twilio.as_ref(),
                        mailer.as_ref(),
                        std::time::Duration::from_secs(60),
                        stopped,
                    )
                    .await
                }
            }
        },
    );
    let console_pruner = supervise(
        workers.clone(),
        "console_pruner",
        Restart::default(),
        stopped.clone(),
        {
            let (engine, stopped) = (engine.clone(), stopped.clone());
            move || {
                let (engine, stopped) = (engine.clone(), stopped.clone());
                async move {
                    http::console::live::keep_pruned(
                        &engine,
                        std::time::Duration::from_secs(600),
                        stopped,
                    )
                    .await
                }
            }
        },
    );
    let alert_sweep = supervise(
        workers.clone(),
        "missed_call_alerts",
        Restart::default(),
        stopped.clone(),
        {
            let (engine, stopped) = (engine.clone(), stopped.clone());
            move || {
                let (engine, stopped) = (engine.clone(), stopped.clone());
                async move {
                    crate::engine::after::keep_alerting(
                        &engine,
                        std::time::Duration::from_secs(5),
                        stopped,
                    )
                    .await
                }
            }
        },
    );
    let keeper = supervise(
        workers.clone(),
        "pool_keeper",
        Restart::default(),
        stopped.clone(),
        {
            let engine = engine.clone();
            move || {
                let (engine, stopped) = (engine.clone(), stopped.clone());
                async move { pool::keep(&engine, std::time::Duration::from_secs(15), stopped).await }
            }
        },
    );

    let state = AppState {
        engine,
        config,
        twilio_breaker,
        workers,
        gauges: Arc::new(GaugeCache::new(Arc::new(SystemClock), GAUGE_MAX_AGE)),
    };
    // One shutdown signal, heard by every listener.
    let (signal, signalled) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = signal.send(true);
    });
    let on_signal = move || {
        let mut signalled = signalled.clone();
        async move {
            let _ = signalled.wait_for(|stop| *stop).await;
        }
    };
    let metrics = metrics_listener.map(|metrics_listener| {
        let limits = state.config.http;
        let router = http::metrics_router(state.clone());
        tokio::spawn(http::serve_router(
            metrics_listener,
            router,
            limits,
            on_signal(),
        ))
    });
    let served = http::serve(listener, state, on_signal()).await;
    if let Some(metrics) = metrics {
        let _ = metrics.await;
    }
    let _ = stop.send(true);
    let _ = worker.await;
    let _ = keeper.await;
    let _ = reminder_sweep.await;
    let _ = alert_sweep.await;
    let _ = console_pruner.await;
    let _ = cost_keeper.await;
    if let Some(buyer) = buyer {
        let _ = buyer.await;
    }
    served.map_err(StartError::Serve)
}

/// A Twilio client when credentials are set (for reading real prices).
fn twilio_client(config: &Config, timeout: std::time::Duration) -> Option<TwilioClient> {
    let (Some(sid), Some(token)) = (&config.twilio_account_sid, &config.twilio_auth_token) else {
        return None;
    };
    Some(TwilioClient::new(
        &config.twilio_api_base,
        Credentials {
            account_sid: sid.clone(),
            username: sid.clone(),
            secret: token.clone(),
        },
        timeout,
    ))
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
