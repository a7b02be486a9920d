//! PostgreSQL, for production: many replicas share one database. Rows an event changes are locked
//! with `FOR UPDATE`; the number pool, the waitlist and the outbox are claimed with
//! `FOR UPDATE SKIP LOCKED`, so replicas never wait on each other for them.

use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{Postgres, Transaction};

use super::common;
use super::write::{Writes, check_found};
use super::{Owner, Result, Store};

#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
}

/// The longest a caller waits for a connection. Short, for two reasons: a request fails fast
/// (and Twilio or Stripe retry it) rather than queueing behind a database that is down, and the
/// pool's reconnect backoff is capped at a fifth of it, so once the database accepts connections
/// again the pool notices within 400 ms.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);

/// PostgreSQL runs an `INSERT` or `UPDATE` inside `WITH`: a provider's id is claimed and the
/// owner locked in one statement (`owners::claim_then_lock!`), and a number allocated in one
/// (`pool::postgres::ALLOCATE_ONCE`).
pub(super) const DATA_MODIFYING_CTES: bool = true;

/// A pooled connection idle at least this long is pinged before it is used.
const PING_AFTER_IDLE: Duration = Duration::from_secs(1);

impl PgStore {
    /// A pool of up to `max_connections`.
    ///
    /// After the database restarts every pooled connection is dead, and each would fail one
    /// event before being replaced. Pinging every checkout finds them, but costs a round trip on
    /// every event, about a tenth of one. So only a connection idle for a second is pinged (one
    /// in steady use is alive, or its last statement would have failed), and [`Store::begin`]
    /// moves on to another connection when its `BEGIN` finds the connection gone.
    pub async fn connect(url: &str, max_connections: u32) -> Result<PgStore> {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .test_before_acquire(false)
            .before_acquire(|connection, meta| {
                Box::pin(async move {
                    if meta.idle_for >= PING_AFTER_IDLE {
                        sqlx::Connection::ping(connection).await?;
                    }
                    Ok(true)
                })
            })
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

/// One READ COMMITTED transaction, with the writes it holds until commit; dropped without
/// commit, it rolls back.
pub struct PgTx(Transaction<'static, Postgres>, Writes);

/// Every write an event holds, in one statement: each part is a data-modifying CTE over arrays
/// (`UNNEST`), so an empty part writes nothing and the statement's text never changes. The counts
/// at the end are the updates that found their row.
pub(super) const WRITE_EVENT: &str = "WITH \
    owner_rows AS ( \
        UPDATE owners AS o SET locale = x.locale, state = x.state, gate = x.gate, \
            business_type = x.business_type, location = x.location, \
            business_name = x.business_name, owner_name = x.owner_name, notify = x.notify, \
            phone_type = x.phone_type, misses = x.misses, opted_out = x.opted_out, \
            payment_active = x.payment_active, paid_at = x.paid_at, \
            twilio_number = x.twilio_number, waitlisted_at = x.waitlisted_at, \
            verify_started_at = x.verify_started_at, updated_at = x.updated_at \
        FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], \
            $7::text[], $8::text[], $9::text[], $10::text[], $11::int4[], $12::bool[], \
            $13::bool[], $14::timestamptz[], $15::text[], $16::timestamptz[], \
            $17::timestamptz[], $18::timestamptz[]) \
            AS x(id, locale, state, gate, business_type, location, business_name, owner_name, \
                notify, phone_type, misses, opted_out, payment_active, paid_at, twilio_number, \
                waitlisted_at, verify_started_at, updated_at) \
        WHERE o.id = x.id RETURNING 1), \
    history AS ( \
        INSERT INTO state_history (owner_id, from_state, to_state, cause, at) \
        SELECT x.owner_id, x.from_state, x.to_state, x.cause, x.at \
        FROM UNNEST($19::text[], $20::text[], $21::text[], $22::text[], $23::timestamptz[]) \
            WITH ORDINALITY AS x(owner_id, from_state, to_state, cause, at, n) \
        ORDER BY x.n), \
    outbox AS ( \
        INSERT INTO outbound_messages (owner_id, to_addr, body, status, attempts, \
            next_attempt_at, created_at, updated_at, kind) \
        SELECT x.owner_id, x.to_addr, x.body, 'pending', 0, x.at, x.at, x.at, x.kind \
        FROM UNNEST($24::text[], $25::text[], $26::text[], $27::timestamptz[], $28::text[]) \
            WITH ORDINALITY AS x(owner_id, to_addr, body, at, kind, n) \
        ORDER BY x.n), \
    links AS ( \
        INSERT INTO stripe_links (kind, stripe_id, owner_id, created_at) \
        SELECT * FROM UNNEST($29::text[], $30::text[], $31::text[], $32::timestamptz[]) \
        ON CONFLICT (kind, stripe_id) DO NOTHING), \
    inbound AS ( \
        UPDATE inbound_messages AS m SET owner_id = x.owner_id, response = x.response \
        FROM UNNEST($33::text[], $34::text[], $35::text[]) AS x(message_sid, owner_id, response) \
        WHERE m.message_sid = x.message_sid RETURNING 1), \
    call_rows AS ( \
        UPDATE calls AS c SET owner_id = x.owner_id, is_test_call = x.is_test_call, \
            response = x.response \
        FROM UNNEST($36::text[], $37::text[], $38::bool[], $39::text[]) \
            AS x(call_sid, owner_id, is_test_call, response) \
        WHERE c.call_sid = x.call_sid RETURNING 1), \
    events AS ( \
        UPDATE webhook_events AS e SET status = x.status, error = x.error, \
            processed_at = x.processed_at \
        FROM UNNEST($40::text[], $41::text[], $42::text[], $43::text[], $44::timestamptz[]) \
            AS x(provider, event_id, status, error, processed_at) \
        WHERE e.provider = x.provider AND e.event_id = x.event_id RETURNING 1), \
    timers AS ( \
        INSERT INTO reminder_timers (owner_id, state, sent, anchor_at, due_at, expired_at) \
        SELECT * FROM UNNEST($45::text[], $46::text[], $47::int4[], $48::timestamptz[], \
            $49::timestamptz[], $50::timestamptz[]) \
        ON CONFLICT (owner_id) DO UPDATE SET state = excluded.state, sent = excluded.sent, \
            anchor_at = excluded.anchor_at, due_at = excluded.due_at, \
            expired_at = excluded.expired_at), \
    costs AS ( \
        INSERT INTO cost_ledger (source_key, owner_id, kind, quantity, country, currency, \
            estimated_micros, reporting_micros, provider_id, at) \
        SELECT source_key, owner_id, kind, quantity, country, currency, estimated_micros, \
            reporting_micros, provider_id, at \
        FROM jsonb_to_recordset($51::jsonb) AS r(source_key text, owner_id text, kind text, \
            quantity bigint, country text, currency text, estimated_micros bigint, \
            reporting_micros bigint, provider_id text, at timestamptz) \
        ON CONFLICT (source_key) DO NOTHING) \
    SELECT (SELECT COUNT(*) FROM owner_rows), (SELECT COUNT(*) FROM inbound), \
        (SELECT COUNT(*) FROM events)";

impl PgTx {
    /// Sends the writes held so far ([`WRITE_EVENT`]), if any.
    pub(super) async fn flush(&mut self) -> Result<()> {
        if self.1.is_empty() {
            return Ok(());
        }
        let w = std::mem::take(&mut self.1);
        let o = &w.owners;
        let column = |f: fn(&Owner) -> Option<String>| o.iter().map(f).collect::<Vec<_>>();
        let (owners, inbound, events): (i64, i64, i64) = sqlx::query_as(WRITE_EVENT)
            .bind(
                o.iter()
                    .map(|o| o.id.as_str().to_owned())
                    .collect::<Vec<_>>(),
            )
            .bind(
                o.iter()
                    .map(|o| o.locale.tag().to_owned())
                    .collect::<Vec<_>>(),
            )
            .bind(o.iter().map(|o| o.state.as_str()).collect::<Vec<_>>())
            .bind(column(|o| o.gate.map(|g| g.as_str().to_owned())))
            .bind(column(|o| o.business_type.clone()))
            .bind(column(|o| o.location.clone()))
            .bind(column(|o| o.business_name.clone()))
            .bind(column(|o| o.owner_name.clone()))
            .bind(column(|o| o.notify.as_ref().map(|n| n.to_stored())))
            .bind(column(|o| o.phone_type.map(|p| p.as_str().to_owned())))
            .bind(o.iter().map(|o| o.misses).collect::<Vec<_>>())
            .bind(o.iter().map(|o| o.opted_out).collect::<Vec<_>>())
            .bind(o.iter().map(|o| o.payment_active).collect::<Vec<_>>())
            .bind(o.iter().map(|o| o.paid_at).collect::<Vec<_>>())
            .bind(column(|o| {
                o.twilio_number.as_ref().map(|n| n.as_str().to_owned())
            }))
            .bind(o.iter().map(|o| o.waitlisted_at).collect::<Vec<_>>())
            .bind(o.iter().map(|o| o.verify_started_at).collect::<Vec<_>>())
            .bind(o.iter().map(|o| o.updated_at).collect::<Vec<_>>())
            .bind(
                w.transitions
                    .iter()
                    .map(|t| t.owner_id.clone())
                    .collect::<Vec<_>>(),
            )
            .bind(w.transitions.iter().map(|t| t.from).collect::<Vec<_>>())
            .bind(w.transitions.iter().map(|t| t.to).collect::<Vec<_>>())
            .bind(
                w.transitions
                    .iter()
                    .map(|t| t.cause.clone())
                    .collect::<Vec<_>>(),
            )
            .bind(w.transitions.iter().map(|t| t.at).collect::<Vec<_>>())
            .bind(
                w.outbound
                    .iter()
                    .map(|m| m.owner_id.clone())
                    .collect::<Vec<_>>(),
            )
            .bind(w.outbound.iter().map(|m| m.to.clone()).collect::<Vec<_>>())
            .bind(
                w.outbound
                    .iter()
                    .map(|m| m.body.clone())
                    .collect::<Vec<_>>(),
            )
            .bind(w.outbound.iter().map(|m| m.at).collect::<Vec<_>>())
            .bind(w.outbound.iter().map(|m| m.kind).collect::<Vec<_>>())
            .bind(w.links.iter().map(|l| l.kind).collect::<Vec<_>>())
            .bind(
                w.links
                    .iter()
                    .map(|l| l.stripe_id.clone())
                    .collect::<Vec<_>>(),
            )
            .bind(
                w.links
                    .iter()
                    .map(|l| l.owner_id.clone())
                    .collect::<Vec<_>>(),
            )
            .bind(w.links.iter().map(|l| l.at).collect::<Vec<_>>())
            .bind(
                w.inbound
                    .iter()
                    .map(|i| i.message_sid.clone())
                    .collect::<Vec<_>>(),
            )
            .bind(
                w.inbound
                    .iter()
                    .map(|i| i.owner_id.clone())
                    .collect::<Vec<_>>(),
            )
            .bind(
                w.inbound
                    .iter()
                    .map(|i| i.response.clone())
                    .collect::<Vec<_>>(),
            )
            .bind(
                w.calls
                    .iter()
                    .map(|c| c.call_sid.clone())
                    .collect::<Vec<_>>(),
            )
            .bind(
                w.calls
                    .iter()
                    .map(|c| c.owner_id.clone())
                    .collect::<Vec<_>>(),
            )
            .bind(w.calls.iter().map(|c| c.is_test_call).collect::<Vec<_>>())
            .bind(
                w.calls
                    .iter()
                    .map(|c| c.response.clone())
                    .collect::<Vec<_>>(),
            )
            .bind(
                w.events
                    .iter()
                    .map(|e| e.provider.clone())
                    .collect::<Vec<_>>(),
            )
            .bind(
                w.events
                    .iter()
                    .map(|e| e.event_id.clone())
                    .collect::<Vec<_>>(),
            )
            .bind(w.events.iter().map(|e| e.status).collect::<Vec<_>>())
            .bind(w.events.iter().map(|e| e.error.clone()).collect::<Vec<_>>())
            .bind(w.events.iter().map(|e| e.at).collect::<Vec<_>>())
            .bind(
                w.timers
                    .iter()
                    .map(|t| t.owner_id.as_str().to_owned())
                    .collect::<Vec<_>>(),
            )
            .bind(
                w.timers
                    .iter()
                    .map(|t| t.state.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(w.timers.iter().map(|t| t.sent).collect::<Vec<_>>())
            .bind(w.timers.iter().map(|t| t.anchor_at).collect::<Vec<_>>())
            .bind(w.timers.iter().map(|t| t.due_at).collect::<Vec<_>>())
            .bind(w.timers.iter().map(|t| t.expired_at).collect::<Vec<_>>())
            .bind(serde_json::Value::Array(w.costs))
            .fetch_one(&mut *self.0)
            .await?;
        check_found("owners", w.owners.len(), owners)?;
        check_found("inbound_messages", w.inbound.len(), inbound)?;
        check_found("webhook_events", w.events.len(), events)
    }
}

impl Store for PgStore {
    type Tx = PgTx;

    async fn migrate(&self) -> Result<()> {
        super::migrations::migrator(super::migrations::POSTGRES)
            .run(&self.pool)
            .await?;
        Ok(())
    }

    async fn begin(&self) -> Result<PgTx> {
        // A connection the server ended since it was last used fails at `BEGIN`, before anything
        // of the event was sent: it is dropped (the pool closes it) and the next one tried. More
        // tries than the pool has connections means the server itself is gone.
        let mut tries = self.pool.options().get_max_connections() + 1;
        loop {
            match self.pool.begin().await {
                Ok(tx) => return Ok(PgTx(tx, Writes::default())),
                Err(e) if tries > 1 && connection_lost(&e) => tries -= 1,
                Err(e) => return Err(e.into()),
            }
        }
    }

    async fn ping(&self) -> Result<()> {
        // As `begin`: a dead pooled connection is not the database being down.
        let mut tries = self.pool.options().get_max_connections() + 1;
        loop {
            match sqlx::query("SELECT 1").execute(&self.pool).await {
                Ok(_) => return Ok(()),
                Err(e) if tries > 1 && connection_lost(&e) => tries -= 1,
                Err(e) => return Err(e.into()),
            }
        }
    }

    common::store_reads!();
}

common::impl_tx!(PgTx, dialect = postgres);

super::reminders::impl_reminder_tx!(PgTx, claim_locks = " FOR UPDATE OF t, c SKIP LOCKED");

super::ledger::impl_ledger_tx!(
    PgTx,
    skip_locked = " FOR UPDATE SKIP LOCKED",
    by_day = super::ledger::postgres::BY_DAY,
);

super::after::impl_after_tx!(
    PgTx,
    for_update = " FOR UPDATE OF m",
    skip_locked = " FOR UPDATE OF m SKIP LOCKED",
);

/// Whether `e` says the connection is gone (closed, reset, or ended by the server: SQLSTATE
/// classes 08 and 57P), rather than that the statement failed.
fn connection_lost(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) => true,
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|code| code.starts_with("08") || code.starts_with("57P")),
        _ => false,
    }
}
