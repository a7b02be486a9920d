//! What the pool keeper that buys numbers ([`crate::replenish`]) needs from the database, kept out
//! of the shared [`super::Tx`] because none of it belongs to an inbound event's transaction.
//!
//! Two replicas must never both top up the same shortfall. The keeper takes one lock for its whole
//! run, and reads the pool and the purchase count only after taking it:
//! - PostgreSQL: `pg_try_advisory_xact_lock` in a transaction held open for the run. A replica that
//!   does not get it skips the run (it never waits), and the lock goes with the transaction, so a
//!   crashed or cancelled keeper cannot leave it behind. The numbers a run adds are committed (in
//!   their own transactions) before its lock is let go, so the next holder counts them.
//! - SQLite: one process owns the file and spawns one keeper, so there is nothing to exclude; the
//!   lock is a no-op (holding `BEGIN IMMEDIATE` for a run of HTTP calls would stall every webhook).

use std::future::Future;

use chrono::{DateTime, Utc};
use sqlx::{Postgres, Transaction};

use super::common::{ClientRow, client_columns};
use super::{Client, PgStore, Result, SqliteStore, Store};
use crate::domain::PhoneNumber;

/// The advisory lock key of the pool keeper ("onboard" and 1): any fixed number unused elsewhere.
pub const KEEPER_LOCK_KEY: i64 = 0x6f6e_626f_6172_6401;

const WAITING_OWNERS: &str = concat!(
    "SELECT ",
    client_columns!(),
    " FROM clients WHERE gate = 'awaiting_number' \
     ORDER BY waitlisted_at NULLS LAST, id LIMIT $1"
);
const PURCHASES_SINCE: &str = "SELECT COUNT(*) FROM pool_purchases WHERE purchased_at > $1";
const RECORD_PURCHASE: &str = "INSERT INTO pool_purchases (twilio_sid, e164, purchased_at) \
     VALUES ($1, $2, $3)";
const MARK_RELEASED: &str = "UPDATE pool_purchases SET released_at = $2 WHERE twilio_sid = $1";

/// The pool keeper's storage. Every call is its own statement (autocommit), except the lock.
pub trait ReplenishStore: Store {
    /// Held for one keeper run; give it back with [`ReplenishStore::unlock_keeper`] (dropping it
    /// also releases it).
    type KeeperLock: Send;

    /// Takes the keeper lock without waiting: None when another replica holds it.
    fn try_lock_keeper(&self) -> impl Future<Output = Result<Option<Self::KeeperLock>>> + Send;

    fn unlock_keeper(&self, lock: Self::KeeperLock) -> impl Future<Output = Result<()>> + Send;

    /// Owners waiting for a number (gate `awaiting_number`), oldest first, not locked.
    fn waiting_owners(&self, limit: i64) -> impl Future<Output = Result<Vec<Client>>> + Send;

    /// How many numbers were bought after `since` (released ones included: they were paid for).
    fn purchases_since(&self, since: DateTime<Utc>) -> impl Future<Output = Result<i64>> + Send;

    /// Records a number just bought, before it goes into the pool.
    fn record_purchase(
        &self,
        twilio_sid: &str,
        e164: &PhoneNumber,
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Marks a purchase as rolled back (the number was released to Twilio again).
    fn mark_purchase_released(
        &self,
        twilio_sid: &str,
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<()>> + Send;
}

/// The keeper's queries, the same SQL on both back ends; expands inside each `impl ReplenishStore`.
macro_rules! shared_keeper_queries {
    () => {
        async fn waiting_owners(&self, limit: i64) -> Result<Vec<Client>> {
            let rows: Vec<ClientRow> = sqlx::query_as(WAITING_OWNERS)
                .bind(limit)
                .fetch_all(&mut *self.conn().await?)
                .await?;
            rows.into_iter().map(ClientRow::into_client).collect()
        }

        async fn purchases_since(&self, since: DateTime<Utc>) -> Result<i64> {
            Ok(sqlx::query_scalar(PURCHASES_SINCE)
                .bind(since)
                .fetch_one(&mut *self.conn().await?)
                .await?)
        }

        async fn record_purchase(
            &self,
            twilio_sid: &str,
            e164: &PhoneNumber,
            at: DateTime<Utc>,
        ) -> Result<()> {
            sqlx::query(RECORD_PURCHASE)
                .bind(twilio_sid)
                .bind(e164.as_str())
                .bind(at)
                .execute(&mut *self.conn().await?)
                .await?;
            Ok(())
        }

        async fn mark_purchase_released(&self, twilio_sid: &str, at: DateTime<Utc>) -> Result<()> {
            sqlx::query(MARK_RELEASED)
                .bind(twilio_sid)
                .bind(at)
                .execute(&mut *self.conn().await?)
                .await?;
            Ok(())
        }
    };
}

/// The open transaction holding the advisory lock.
pub struct PgKeeperLock(Transaction<'static, Postgres>);

impl ReplenishStore for PgStore {
    type KeeperLock = PgKeeperLock;

    async fn try_lock_keeper(&self) -> Result<Option<PgKeeperLock>> {
        let mut tx = self.pool().begin().await?;
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
            .bind(KEEPER_LOCK_KEY)
            .fetch_one(&mut *tx)
            .await?;
        Ok(locked.then_some(PgKeeperLock(tx)))
    }

    async fn unlock_keeper(&self, lock: PgKeeperLock) -> Result<()> {
        lock.0.commit().await?;
        Ok(())
    }

    shared_keeper_queries!();
}

/// SQLite needs no keeper lock (see the module documentation).
pub struct SqliteKeeperLock;

impl ReplenishStore for SqliteStore {
    type KeeperLock = SqliteKeeperLock;

    async fn try_lock_keeper(&self) -> Result<Option<SqliteKeeperLock>> {
        Ok(Some(SqliteKeeperLock))
    }

    async fn unlock_keeper(&self, _lock: SqliteKeeperLock) -> Result<()> {
        Ok(())
    }

    shared_keeper_queries!();
}
