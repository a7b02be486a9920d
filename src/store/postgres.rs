//! PostgreSQL, for production: many replicas share one database. Rows an event changes are locked
//! with `FOR UPDATE`; the number pool, the waitlist and the outbox are claimed with
//! `FOR UPDATE SKIP LOCKED`, so replicas never wait on each other for them.

use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{Postgres, Transaction};

use super::common;
use super::{Result, Store};

#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
}

/// The longest a caller waits for a connection. Short, for two reasons: a request fails fast
/// (and Twilio or Stripe retry it) rather than queueing behind a database that is down, and the
/// pool's reconnect backoff is capped at a fifth of it, so once the database accepts connections
/// again the pool notices within 400 ms.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);

impl PgStore {
    /// A pool of up to `max_connections`. Each checkout pings its connection first: after the
    /// database restarts every pooled connection is dead, and without the ping each would fail
    /// one event before being replaced. The ping is one round trip per transaction.
    pub async fn connect(url: &str, max_connections: u32) -> Result<PgStore> {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .test_before_acquire(true)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect(url)
            .await?;
        Ok(Self::from_pool(pool))
    }

    pub fn from_pool(pool: PgPool) -> PgStore {
        PgStore { pool }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// A connection of the store's pool, for SQL the store does not offer.
    pub async fn conn(&self) -> Result<PoolConnection<Postgres>> {
        Ok(self.pool.acquire().await?)
    }

    /// Closes the pool: later calls fail with a closed-pool error.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// One READ COMMITTED transaction; dropped without commit, it rolls back.
pub struct PgTx(Transaction<'static, Postgres>);

impl Store for PgStore {
    type Tx = PgTx;

    async fn migrate(&self) -> Result<()> {
        sqlx::migrate!("./migrations/postgres")
            .run(&self.pool)
            .await?;
        Ok(())
    }

    async fn begin(&self) -> Result<PgTx> {
        Ok(PgTx(self.pool.begin().await?))
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    common::store_reads!();
}

common::impl_tx!(
    PgTx,
    for_update = " FOR UPDATE",
    skip_locked = " FOR UPDATE SKIP LOCKED",
    outbox_sql = postgres,
);

super::reminders::impl_reminder_tx!(PgTx, claim_locks = " FOR UPDATE OF t, c SKIP LOCKED");
