//! What the ops console reads and the few things it writes, kept out of the shared [`super::Tx`]:
//! none of it belongs to an inbound event's transaction. Both back ends run the same SQL, so the
//! trait is implemented once, by [`impl_console_store!`], for each store.
//!
//! The live feed's rows are written by database triggers (migration 0016) on the tables the
//! engine already writes; this file only reads and prunes them.

use std::future::Future;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::row::{OwnerRow, owner_columns};
use super::{Owner, PgStore, Result, SqliteStore};

/// Counts for the Today page, each since a given instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Activity {
    /// Owners who sent their first text.
    pub started: i64,
    /// Owners whose payment arrived.
    pub paid: i64,
    /// Owners who reached COMPLETE.
    pub completed: i64,
}

/// The outbox at a glance.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxHealth {
    /// Pending or being sent.
    pub backlog: i64,
    pub failed: i64,
    /// The oldest message still waiting to go out.
    pub oldest_waiting: Option<DateTime<Utc>>,
}

/// A business event of the live feed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LiveEvent {
    pub id: i64,
    /// `text_in`, `text_out`, `state`, `payment`, `allocation`, `call` or `failure`.
    pub kind: String,
    pub owner_id: Option<String>,
    /// What happened, without a phone number, a body or an email.
    pub detail: String,
    pub at: DateTime<Utc>,
}

/// A number of the pool as the Pool page lists it.
#[derive(Debug, Clone)]
pub struct PoolNumberRecord {
    pub e164: String,
    pub status: String,
    pub country: String,
    pub owner_id: Option<String>,
    pub updated_at: DateTime<Utc>,
}

/// A purchase the pool keeper could not confirm or rule out yet.
#[derive(Debug, Clone)]
pub struct UnconfirmedPurchase {
    pub e164: String,
    pub attempted_at: DateTime<Utc>,
    pub last_checked_at: Option<DateTime<Utc>>,
    pub checks: i32,
}

/// One provider callback as the Webhooks page lists it: a Stripe event from `webhook_events`, or
/// a Twilio callback from the table it is stored in (an inbound text, a call, a delivery status).
#[derive(Debug, Clone)]
pub struct ProviderEvent {
    pub provider: String,
    pub event_id: String,
    pub event_type: String,
    pub status: String,
    pub error: Option<String>,
    /// Stripe's payload as JSON text; None for Twilio callbacks, which are stored as columns.
    pub payload: Option<String>,
    pub from_addr: Option<String>,
    pub to_addr: Option<String>,
    pub body: Option<String>,
    pub received_at: DateTime<Utc>,
}

/// Which provider events to list; `None` filters nothing. Dates bound the time, both inclusive.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProviderEventFilter<'a> {
    pub provider: Option<&'a str>,
    pub status: Option<&'a str>,
    pub event_id: Option<&'a str>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
}

/// What resending a failed text did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resend {
    /// A copy was queued: the new outbox id.
    Queued(i64),
    /// It had been resent already (by another click, or another operator).
    AlreadyResent,
    /// No failed text with that id (a verification call, or not failed).
    NotFailed,
}

/// The console's reads and writes. A supertrait of [`super::Store`], so every store has them.
pub trait ConsoleStore: Send + Sync {
    fn activity_since(&self, since: DateTime<Utc>)
    -> impl Future<Output = Result<Activity>> + Send;

    /// `(country, status, numbers)`, by country then status.
    fn pool_by_country(&self) -> impl Future<Output = Result<Vec<(String, String, i64)>>> + Send;

    fn outbox_health(&self) -> impl Future<Output = Result<OutboxHealth>> + Send;

    /// Owners waiting for a number, first come first served.
    fn waitlist(&self, limit: i64) -> impl Future<Output = Result<Vec<Owner>>> + Send;

    fn unconfirmed_purchases(
        &self,
    ) -> impl Future<Output = Result<Vec<UnconfirmedPurchase>>> + Send;

    /// The numbers whose status changed last, newest first.
    fn pool_numbers(
        &self,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<PoolNumberRecord>>> + Send;

    /// Provider events of both providers, newest first.
    fn provider_events(
        &self,
        filter: &ProviderEventFilter<'_>,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<ProviderEvent>>> + Send;

    /// Live events after `id`, oldest first, at most `limit`.
    fn live_events_after(
        &self,
        id: i64,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<LiveEvent>>> + Send;

    /// The latest `limit` live events, oldest first.
    fn recent_live_events(&self, limit: i64)
    -> impl Future<Output = Result<Vec<LiveEvent>>> + Send;

    /// Deletes live events and sign-in failures older than `before`; returns how many.
    fn prune_console(&self, before: DateTime<Utc>) -> impl Future<Output = Result<u64>> + Send;

    fn record_signin_failure(&self, at: DateTime<Utc>) -> impl Future<Output = Result<()>> + Send;

    fn signin_failures_since(
        &self,
        since: DateTime<Utc>,
    ) -> impl Future<Output = Result<i64>> + Send;

    /// Queues a copy of a failed text, once: a second resend of the same text is refused by a
    /// unique index (`resend_of`), on every replica.
    fn resend_failed_text(
        &self,
        outbound_id: i64,
        send_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Resend>> + Send;
}

const STARTED_SINCE: &str = "SELECT COUNT(*) FROM owners WHERE created_at >= $1";

const PAID_SINCE: &str = "SELECT COUNT(*) FROM owners WHERE paid_at >= $1";

const COMPLETED_SINCE: &str = "SELECT COUNT(DISTINCT owner_id) FROM state_history \
     WHERE to_state = 'COMPLETE' AND at >= $1";

const POOL_BY_COUNTRY: &str = "SELECT country, status, COUNT(*) FROM pool_numbers \
     GROUP BY country, status ORDER BY country, status";

const OUTBOX_BACKLOG: &str = "SELECT COUNT(*) FROM outbound_messages \
     WHERE status IN ('pending', 'sending')";

const OUTBOX_OLDEST_WAITING: &str = "SELECT MIN(created_at) FROM outbound_messages \
     WHERE status IN ('pending', 'sending')";

const OUTBOX_FAILED: &str = "SELECT COUNT(*) FROM outbound_messages WHERE status = 'failed'";

const WAITING_OWNERS: &str = concat!(
    "SELECT ",
    owner_columns!(),
    " FROM owners WHERE gate = 'awaiting_number' ORDER BY waitlisted_at, id LIMIT $1"
);

const UNCERTAIN_PURCHASES: &str = "SELECT e164, attempted_at, last_checked_at, checks \
     FROM uncertain_purchases ORDER BY attempted_at, e164";

const POOL_NUMBERS: &str = "SELECT e164, status, country, owner_id, updated_at FROM pool_numbers \
     ORDER BY updated_at DESC, e164 LIMIT $1";

/// Stripe's events and Twilio's callbacks in one list. Twilio's are read from where the engine
/// stores them: inbound texts (answered or not), calls, and the delivery status of our texts.
const PROVIDER_EVENTS: &str = "SELECT * FROM ( \
     SELECT provider, event_id, event_type, status, error, CAST(payload AS TEXT) AS payload, \
            CAST(NULL AS TEXT) AS from_addr, CAST(NULL AS TEXT) AS to_addr, \
            CAST(NULL AS TEXT) AS body, received_at \
       FROM webhook_events \
     UNION ALL \
     SELECT 'twilio', message_sid, 'sms.inbound', \
            CASE WHEN response IS NULL THEN 'received' ELSE 'processed' END, NULL, NULL, \
            from_addr, to_addr, body, received_at \
       FROM inbound_messages \
     UNION ALL \
     SELECT 'twilio', call_sid, 'call.' || direction, status, NULL, NULL, \
            from_addr, to_addr, NULL, created_at \
       FROM calls \
     UNION ALL \
     SELECT 'twilio', twilio_sid, kind || '.status', status, \
            COALESCE(error_code, last_error), NULL, NULL, to_addr, NULL, updated_at \
       FROM outbound_messages WHERE twilio_sid IS NOT NULL \
   ) AS e \
   WHERE ($1 IS NULL OR provider = $1) AND ($2 IS NULL OR status = $2) \
     AND ($3 IS NULL OR event_id = $3) \
     AND ($4 IS NULL OR received_at >= $4) AND ($5 IS NULL OR received_at <= $5) \
   ORDER BY received_at DESC, provider, event_id DESC LIMIT $6";

const LIVE_AFTER: &str = "SELECT id, kind, owner_id, detail, at FROM live_events \
     WHERE id > $1 ORDER BY id LIMIT $2";

const LIVE_RECENT: &str = "SELECT id, kind, owner_id, detail, at FROM ( \
     SELECT id, kind, owner_id, detail, at FROM live_events ORDER BY id DESC LIMIT $1 \
   ) AS recent ORDER BY id";

const PRUNE_LIVE: &str = "DELETE FROM live_events WHERE at < $1";

const PRUNE_SIGNIN_FAILURES: &str = "DELETE FROM console_signin_failures WHERE at < $1";

const RECORD_SIGNIN_FAILURE: &str = "INSERT INTO console_signin_failures (at) VALUES ($1)";

const SIGNIN_FAILURES_SINCE: &str = "SELECT COUNT(*) FROM console_signin_failures WHERE at >= $1";

/// The copy is a new outbox message, pending from `$2`; the failed one stays as it was. The
/// unique index on `resend_of` lets only one copy of a message ever exist.
const RESEND_FAILED_TEXT: &str = "INSERT INTO outbound_messages \
         (owner_id, to_addr, body, status, attempts, next_attempt_at, created_at, updated_at, \
          resend_of) \
     SELECT owner_id, to_addr, body, 'pending', 0, $2, $3, $3, id FROM outbound_messages \
      WHERE id = $1 AND status = 'failed' AND kind = 'sms' \
     ON CONFLICT (resend_of) DO NOTHING \
     RETURNING id";

const RESENT_ALREADY: &str = "SELECT COUNT(*) FROM outbound_messages WHERE resend_of = $1";

// Rows are read as tuples (sqlx decodes those without its derive macros) and named here.
type LiveRow = (i64, String, Option<String>, String, DateTime<Utc>);

fn live_event((id, kind, owner_id, detail, at): LiveRow) -> LiveEvent {
    LiveEvent {
        id,
        kind,
        owner_id,
        detail,
        at,
    }
}

type PoolNumberRow = (String, String, String, Option<String>, DateTime<Utc>);

fn pool_number((e164, status, country, owner_id, updated_at): PoolNumberRow) -> PoolNumberRecord {
    PoolNumberRecord {
        e164,
        status,
        country,
        owner_id,
        updated_at,
    }
}

type PurchaseRow = (String, DateTime<Utc>, Option<DateTime<Utc>>, i32);

fn purchase((e164, attempted_at, last_checked_at, checks): PurchaseRow) -> UnconfirmedPurchase {
    UnconfirmedPurchase {
        e164,
        attempted_at,
        last_checked_at,
        checks,
    }
}

type ProviderEventRow = (
    String,
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    DateTime<Utc>,
);

fn provider_event(row: ProviderEventRow) -> ProviderEvent {
    let (provider, event_id, event_type, status, error, payload, from_addr, to_addr, body, at) =
        row;
    ProviderEvent {
        provider,
        event_id,
        event_type,
        status,
        error,
        payload,
        from_addr,
        to_addr,
        body,
        received_at: at,
    }
}

macro_rules! impl_console_store {
    ($store:ty) => {
        impl ConsoleStore for $store {
            async fn activity_since(&self, since: DateTime<Utc>) -> Result<Activity> {
                let mut conn = self.conn().await?;
                let started = sqlx::query_scalar(STARTED_SINCE)
                    .bind(since)
                    .fetch_one(&mut *conn)
                    .await?;
                let paid = sqlx::query_scalar(PAID_SINCE)
                    .bind(since)
                    .fetch_one(&mut *conn)
                    .await?;
                let completed = sqlx::query_scalar(COMPLETED_SINCE)
                    .bind(since)
                    .fetch_one(&mut *conn)
                    .await?;
                Ok(Activity {
                    started,
                    paid,
                    completed,
                })
            }

            async fn pool_by_country(&self) -> Result<Vec<(String, String, i64)>> {
                Ok(sqlx::query_as(POOL_BY_COUNTRY)
                    .fetch_all(&mut *self.conn().await?)
                    .await?)
            }

            async fn outbox_health(&self) -> Result<OutboxHealth> {
                let mut conn = self.conn().await?;
                let backlog = sqlx::query_scalar(OUTBOX_BACKLOG)
                    .fetch_one(&mut *conn)
                    .await?;
                let failed = sqlx::query_scalar(OUTBOX_FAILED)
                    .fetch_one(&mut *conn)
                    .await?;
                let oldest_waiting = sqlx::query_scalar(OUTBOX_OLDEST_WAITING)
                    .fetch_one(&mut *conn)
                    .await?;
                Ok(OutboxHealth {
                    backlog,
                    failed,
                    oldest_waiting,
                })
            }

            async fn waitlist(&self, limit: i64) -> Result<Vec<Owner>> {
                let rows: Vec<OwnerRow> = sqlx::query_as(WAITING_OWNERS)
                    .bind(limit)
                    .fetch_all(&mut *self.conn().await?)
                    .await?;
                rows.into_iter().map(OwnerRow::into_owner).collect()
            }

            async fn unconfirmed_purchases(&self) -> Result<Vec<UnconfirmedPurchase>> {
                let rows: Vec<PurchaseRow> = sqlx::query_as(UNCERTAIN_PURCHASES)
                    .fetch_all(&mut *self.conn().await?)
                    .await?;
                Ok(rows.into_iter().map(purchase).collect())
            }

            async fn pool_numbers(&self, limit: i64) -> Result<Vec<PoolNumberRecord>> {
                let rows: Vec<PoolNumberRow> = sqlx::query_as(POOL_NUMBERS)
                    .bind(limit)
                    .fetch_all(&mut *self.conn().await?)
                    .await?;
                Ok(rows.into_iter().map(pool_number).collect())
            }

            async fn provider_events(
                &self,
                filter: &ProviderEventFilter<'_>,
                limit: i64,
            ) -> Result<Vec<ProviderEvent>> {
                let rows: Vec<ProviderEventRow> = sqlx::query_as(PROVIDER_EVENTS)
                    .bind(filter.provider)
                    .bind(filter.status)
                    .bind(filter.event_id)
                    .bind(filter.from)
                    .bind(filter.to)
                    .bind(limit)
                    .fetch_all(&mut *self.conn().await?)
                    .await?;
                Ok(rows.into_iter().map(provider_event).collect())
            }

            async fn live_events_after(&self, id: i64, limit: i64) -> Result<Vec<LiveEvent>> {
                let rows: Vec<LiveRow> = sqlx::query_as(LIVE_AFTER)
                    .bind(id)
                    .bind(limit)
                    .fetch_all(&mut *self.conn().await?)
                    .await?;
                Ok(rows.into_iter().map(live_event).collect())
            }

            async fn recent_live_events(&self, limit: i64) -> Result<Vec<LiveEvent>> {
                let rows: Vec<LiveRow> = sqlx::query_as(LIVE_RECENT)
                    .bind(limit)
                    .fetch_all(&mut *self.conn().await?)
                    .await?;
                Ok(rows.into_iter().map(live_event).collect())
            }

            async fn prune_console(&self, before: DateTime<Utc>) -> Result<u64> {
                let mut conn = self.conn().await?;
                let live = sqlx::query(PRUNE_LIVE)
                    .bind(before)
                    .execute(&mut *conn)
                    .await?;
                let failures = sqlx::query(PRUNE_SIGNIN_FAILURES)
                    .bind(before)
                    .execute(&mut *conn)
                    .await?;
                Ok(live.rows_affected() + failures.rows_affected())
            }

            async fn record_signin_failure(&self, at: DateTime<Utc>) -> Result<()> {
                sqlx::query(RECORD_SIGNIN_FAILURE)
                    .bind(at)
                    .execute(&mut *self.conn().await?)
                    .await?;
                Ok(())
            }

            async fn signin_failures_since(&self, since: DateTime<Utc>) -> Result<i64> {
                Ok(sqlx::query_scalar(SIGNIN_FAILURES_SINCE)
                    .bind(since)
                    .fetch_one(&mut *self.conn().await?)
                    .await?)
            }

            async fn resend_failed_text(
                &self,
                outbound_id: i64,
                send_at: DateTime<Utc>,
                now: DateTime<Utc>,
            ) -> Result<Resend> {
                let mut conn = self.conn().await?;
                let queued: Option<i64> = sqlx::query_scalar(RESEND_FAILED_TEXT)
                    .bind(outbound_id)
                    .bind(send_at)
                    .bind(now)
                    .fetch_optional(&mut *conn)
                    .await?;
                if let Some(id) = queued {
                    $crate::store::Store::outbox_bell(self).ring();
                    return Ok(Resend::Queued(id));
                }
                let resent: i64 = sqlx::query_scalar(RESENT_ALREADY)
                    .bind(outbound_id)
                    .fetch_one(&mut *conn)
                    .await?;
                Ok(if resent > 0 {
                    Resend::AlreadyResent
                } else {
                    Resend::NotFailed
                })
            }
        }
    };
}

impl_console_store!(PgStore);
impl_console_store!(SqliteStore);
