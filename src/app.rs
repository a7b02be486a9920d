//! Wiring: configuration in, a running server out.

use std::future::Future;
use std::sync::Arc;

use chrono::Duration;
use tokio::net::TcpListener;

use crate::clock::{RandomIds, SystemClock};
use crate::config::Config;
use crate::engine::{DEFAULT_QUARANTINE_DAYS, Engine, Settings};
use crate::flows::Flows;
use crate::http::{self, AppState};
use crate::store::{PgStore, SqliteStore, Store};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("flows: {0}")]
    Flows(#[from] crate::flows::FlowError),
    #[error("database: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("DATABASE_URL must start with postgres:// or sqlite: (got {0:?})")]
    UnknownDatabase(String),
    #[error("cannot listen on {addr}: {source}")]
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
        },
    )
}

/// Migrates, then serves on `config.listen_addr` until `shutdown`.
pub async fn serve(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let flows = Arc::new(load_flows(&config)?);
    let database = Database::connect(&config.database_url).await?;
    database.migrate().await?;
    let listener = TcpListener::bind(config.listen_addr)
        .await
        .map_err(|source| StartError::Listen {
            addr: config.listen_addr,
            source,
        })?;
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

async fn run<S: Store>(
    listener: TcpListener,
    store: S,
    config: Arc<Config>,
    flows: Arc<Flows>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let state = AppState {
        engine: Arc::new(engine(store, &config, flows)),
        config,
    };
    http::serve(listener, state, shutdown)
        .await
        .map_err(StartError::Serve)
}
