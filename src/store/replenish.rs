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
//!
//! Purchases whose outcome is unknown (`uncertain_purchases`, migration 0006) are read and resolved
//! under the same lock, so two replicas never both keep, or both forget, the same one.

use std::future::Future;

use chrono::{DateTime, Utc};
use sqlx::{Postgres, Transaction};

use super::row::row;
use super::row::{self, OwnerRow, owner_columns};
use super::{Owner, PgStore, Result, SqliteStore, Store};
use crate::domain::PhoneNumber;

/// The advisory lock key of the pool keeper ("onboard" and 1): any fixed number unused elsewhere.
pub const KEEPER_LOCK_KEY: i64 = 0x6f6e_626f_6172_6401;

const WAITING_OWNERS: &str = concat!(
    "SELECT ",
    owner_columns!(),
    " FROM owners WHERE gate = 'awaiting_number' \
     ORDER BY waitlisted_at NULLS LAST, id LIMIT $1"
);
/// An uncertain purchase counts as one purchase from its attempt until it is resolved: it may have
/// been paid for, and a cap that left it out could be overspent. Once resolved it leaves the count,
/// or comes back as a `pool_purchases` row dated at the attempt, so it is never counted twice.
const PURCHASES_SINCE: &str = "SELECT \
         (SELECT COUNT(*) FROM pool_purchases WHERE purchased_at > $1) \
       + (SELECT COUNT(*) FROM uncertain_purchases WHERE attempted_at > $1)";
const RECORD_PURCHASE: &str = "INSERT INTO pool_purchases (twilio_sid, e164, purchased_at) \
     VALUES ($1, $2, $3)";
const MARK_RELEASED: &str = "UPDATE pool_purchases SET released_at = $2 WHERE twilio_sid = $1";
const POOL_HAS_NUMBER: &str = "SELECT COUNT(*) FROM pool_numbers WHERE e164 = $1";
/// A second failed lookup of the same number keeps the first attempt's time: the cap counts the
/// purchase from when it may have been made.
const RECORD_UNCERTAIN: &str = "INSERT INTO uncertain_purchases (e164, attempted_at) \
     VALUES ($1, $2) ON CONFLICT (e164) DO NOTHING";
const UNCERTAIN_PURCHASES: &str = "SELECT e164, attempted_at, last_checked_at, checks \
     FROM uncertain_purchases ORDER BY attempted_at, e164";
const MARK_UNCERTAIN_CHECKED: &str = "UPDATE uncertain_purchases \
     SET checks = checks + 1, last_checked_at = $2 WHERE e164 = $1";
const FORGET_UNCERTAIN: &str = "DELETE FROM uncertain_purchases WHERE e164 = $1";

/// A number the keeper may have bought: the purchase got no clear answer and the lookup after it
/// failed too. It stays until a lookup tells whether Twilio has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UncertainPurchase {
    pub e164: PhoneNumber,
    pub attempted_at: DateTime<Utc>,
    pub last_checked_at: Option<DateTime<Utc>>,
    /// Lookups since the attempt that failed too.
    pub checks: i32,
}

row! {
    /// An `uncertain_purchases` row as stored.
    struct UncertainRow {
        e164: String,
        attempted_at: DateTime<Utc>,
        last_checked_at: Option<DateTime<Utc>>,
        checks: i32,
    }
}

impl UncertainRow {
    fn into_purchase(self) -> Result<UncertainPurchase> {
        Ok(UncertainPurchase {
            e164: row::phone("uncertain_purchases", || "e164".into(), &self.e164)?,
            attempted_at: self.attempted_at,
            last_checked_at: self.last_checked_at,
            checks: self.checks,
        })
    }
}

/// The pool keeper's storage. Every call is its own statement (autocommit), except the lock.
pub trait ReplenishStore: Store {
    /// Held for one keeper run; give it back with [`ReplenishStore::unlock_keeper`] (dropping it
    /// also releases it).
    type KeeperLock: Send;

    /// Takes the keeper lock without waiting: None when another replica holds it.
    fn try_lock_keeper(&self) -> impl Future<Output = Result<Option<Self::KeeperLock>>> + Send;

    fn unlock_keeper(&self, lock: Self::KeeperLock) -> impl Future<Output = Result<()>> + Send;

    /// Owners waiting for a number (gate `awaiting_number`), oldest first, not locked.
    fn waiting_owners(&self, limit: i64) -> impl Future<Output = Result<Vec<Owner>>> + Send;

    /// How many numbers were bought after `since` (released ones included: they were paid for),
    /// counting each purchase whose outcome is still unknown as one.
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

    /// Whether the number is in the pool, whatever its status.
    fn pool_has_number(&self, e164: &PhoneNumber) -> impl Future<Output = Result<bool>> + Send;

    /// Remembers a number that may have been bought, to look it up again later. Recording the same
    /// number again changes nothing.
    fn record_uncertain_purchase(
        &self,
        e164: &PhoneNumber,
        attempted_at: DateTime<Utc>,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Every purchase whose outcome is still unknown, oldest attempt first.
    fn uncertain_purchases(&self) -> impl Future<Output = Result<Vec<UncertainPurchase>>> + Send;

    /// Notes one more lookup that could not tell whether the number was bought.
    fn mark_uncertain_purchase_checked(
        &self,
        e164: &PhoneNumber,
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Drops a purchase whose outcome is known now (kept, released, or never made).
    fn forget_uncertain_purchase(
        &self,
        e164: &PhoneNumber,
    ) -> impl Future<Output = Result<()>> + Send;
}

/// The keeper's queries, the same SQL on both back ends; expands inside each `impl ReplenishStore`.
macro_rules! shared_keeper_queries {
    () => {
        async fn waiting_owners(&self, limit: i64) -> Result<Vec<Owner>> {
            let rows: Vec<OwnerRow> = sqlx::query_as(WAITING_OWNERS)
                .bind(limit)
                .fetch_all(&mut *self.conn().await?)
                .await?;
            rows.into_iter().map(OwnerRow::into_owner).collect()
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

        async fn pool_has_number(&self, e164: &PhoneNumber) -> Result<bool> {
            let rows: i64 = sqlx::query_scalar(POOL_HAS_NUMBER)
                .bind(e164.as_str())
                .fetch_one(&mut *self.conn().await?)
                .await?;
            Ok(rows > 0)
        }

        async fn record_uncertain_purchase(
            &self,
            e164: &PhoneNumber,
            attempted_at: DateTime<Utc>,
        ) -> Result<()> {
            sqlx::query(RECORD_UNCERTAIN)
                .bind(e164.as_str())
                .bind(attempted_at)
                .execute(&mut *self.conn().await?)
                .await?;
            Ok(())
        }

        async fn uncertain_purchases(&self) -> Result<Vec<UncertainPurchase>> {
            let rows: Vec<UncertainRow> = sqlx::query_as(UNCERTAIN_PURCHASES)
                .fetch_all(&mut *self.conn().await?)
                .await?;
            rows.into_iter().map(UncertainRow::into_purchase).collect()
        }

        async fn mark_uncertain_purchase_checked(
            &self,
            e164: &PhoneNumber,
            at: DateTime<Utc>,
        ) -> Result<()> {
            sqlx::query(MARK_UNCERTAIN_CHECKED)
                .bind(e164.as_str())
                .bind(at)
                .execute(&mut *self.conn().await?)
                .await?;
            Ok(())
        }

        async fn forget_uncertain_purchase(&self, e164: &PhoneNumber) -> Result<()> {
            sqlx::query(FORGET_UNCERTAIN)
                .bind(e164.as_str())
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
