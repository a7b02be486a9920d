//! PostgreSQL, for production: many replicas share one database. Rows an event changes are locked
//! with `FOR UPDATE`; the number pool, the waitlist and the outbox are claimed with
//! `FOR UPDATE SKIP LOCKED`, so replicas never wait on each other for them.

use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{Postgres, Transaction};

use super::common::{self, ClientRow, OutboundRow};
use super::{Client, OutboundMessage, PoolStats, Result, Store};
use crate::domain::{Country, PhoneNumber};

#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    pub async fn connect(url: &str, max_connections: u32) -> Result<PgStore> {
        // No ping before each checkout: a dead connection fails its query and is replaced, and the
        // ping would be one more round trip on every event.
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .test_before_acquire(false)
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

    async fn client_by_phone(&self, phone: &PhoneNumber) -> Result<Option<Client>> {
        sqlx::query_as::<_, ClientRow>(common::CLIENT_BY_PHONE)
            .bind(phone.as_str())
            .fetch_optional(&self.pool)
            .await?
            .map(ClientRow::into_client)
            .transpose()
    }

    async fn pool_stats(&self) -> Result<PoolStats> {
        let counts = sqlx::query_as(common::POOL_COUNTS)
            .fetch_all(&self.pool)
            .await?;
        common::pool_stats(counts)
    }

    async fn available_numbers(&self, country: Country, cap: i64) -> Result<i64> {
        Ok(sqlx::query_scalar(common::AVAILABLE_CAPPED)
            .bind(country.code())
            .bind(cap)
            .fetch_one(&self.pool)
            .await?)
    }

    async fn owners_by_state(&self) -> Result<Vec<(String, i64)>> {
        Ok(sqlx::query_as(common::OWNERS_BY_STATE)
            .fetch_all(&self.pool)
            .await?)
    }

    async fn latest_outbound_id(&self) -> Result<i64> {
        Ok(sqlx::query_scalar(common::LATEST_OUTBOUND_ID)
            .fetch_one(&self.pool)
            .await?)
    }

    async fn outbound_after(&self, id: i64) -> Result<Vec<OutboundMessage>> {
        let rows: Vec<OutboundRow> = sqlx::query_as(common::OUTBOUND_AFTER)
            .bind(id)
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter().map(OutboundRow::into_message).collect()
    }
}

common::impl_tx!(
    PgTx,
    for_update = " FOR UPDATE",
    skip_locked = " FOR UPDATE SKIP LOCKED",
);
