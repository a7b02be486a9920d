//! PostgreSQL, for production: many replicas share one database. Rows an event changes are locked
//! with `FOR UPDATE`; the number pool, the waitlist and the outbox are claimed with
//! `FOR UPDATE SKIP LOCKED`, so replicas never wait on each other for them.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::error::BoxDynError;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgArguments, PgPool, PgPoolOptions};
use sqlx::{Arguments as _, AssertSqlSafe, Postgres, Transaction};

use super::common;
use super::write::{Writes, check_found};
use super::{OutboxBell, Queued, Result, Store};

#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    bell: OutboxBell,
}

/// The longest a caller waits for a connection. Short, for two reasons: a request fails fast
/// (and Twilio or Stripe retry it) rather than queueing behind a database that is down, and the
/// pool's reconnect backoff is capped at a fifth of it, so once the database accepts connections
/// again the pool notices within 400 ms.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);

/// PostgreSQL runs an `INSERT` or `UPDATE` inside `WITH`: a provider's id is claimed and the
/// owner locked in one statement (`owners::claim_then_lock!`), and a number allocated in one
/// (`pool::ALLOCATE_ONCE`).
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
        PgStore {
            pool,
            bell: OutboxBell::default(),
        }
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
pub struct PgTx(Transaction<'static, Postgres>, Writes, Queued);

/// A data-modifying CTE of [`write_event`]: what it does to the rows `x` it is given.
struct Part {
    /// The CTE's name.
    name: &'static str,
    /// What comes before the rows: `UPDATE ... FROM` or `INSERT ... SELECT ... FROM`.
    head: &'static str,
    /// The names of the rows' columns, as `x` has them.
    columns: &'static str,
    /// What comes after them: the join, an `ORDER BY x.n`, an `ON CONFLICT`.
    tail: &'static str,
    /// The rows are numbered (`x.n`) so they are written in the order the event wrote them.
    numbered: bool,
}

const OWNER_ROWS: Part = Part {
    name: "owner_rows",
    head: "UPDATE owners AS o SET locale = x.locale, state = x.state, gate = x.gate, \
        business_type = x.business_type, location = x.location, \
        business_name = x.business_name, owner_name = x.owner_name, notify = x.notify, \
        phone_type = x.phone_type, misses = x.misses, opted_out = x.opted_out, \
        payment_active = x.payment_active, paid_at = x.paid_at, \
        twilio_number = x.twilio_number, waitlisted_at = x.waitlisted_at, \
        verify_started_at = x.verify_started_at, updated_at = x.updated_at FROM ",
    columns: "id, locale, state, gate, business_type, location, business_name, owner_name, \
        notify, phone_type, misses, opted_out, payment_active, paid_at, twilio_number, \
        waitlisted_at, verify_started_at, updated_at",
    tail: " WHERE o.id = x.id RETURNING 1",
    numbered: false,
};

const HISTORY: Part = Part {
    name: "history",
    head: "INSERT INTO state_history (owner_id, from_state, to_state, cause, at) \
        SELECT x.owner_id, x.from_state, x.to_state, x.cause, x.at FROM ",
    columns: "owner_id, from_state, to_state, cause, at",
    tail: " ORDER BY x.n",
    numbered: true,
};

const OUTBOX: Part = Part {
    name: "outbox",
    head: "INSERT INTO outbound_messages (owner_id, to_addr, body, status, attempts, \
        next_attempt_at, created_at, updated_at, kind) \
        SELECT x.owner_id, x.to_addr, x.body, 'pending', 0, x.at, x.at, x.at, x.kind FROM ",
    columns: "owner_id, to_addr, body, at, kind",
    tail: " ORDER BY x.n",
    numbered: true,
};

const LINKS: Part = Part {
    name: "links",
    head: "INSERT INTO stripe_links (kind, stripe_id, owner_id, created_at) \
        SELECT x.kind, x.stripe_id, x.owner_id, x.at FROM ",
    columns: "kind, stripe_id, owner_id, at",
    tail: " ON CONFLICT (kind, stripe_id) DO NOTHING",
    numbered: false,
};

const INBOUND: Part = Part {
    name: "inbound",
    head: "UPDATE inbound_messages AS m SET owner_id = x.owner_id, response = x.response FROM ",
    columns: "message_sid, owner_id, response",
    tail: " WHERE m.message_sid = x.message_sid RETURNING 1",
    numbered: false,
};

const CALLS: Part = Part {
    name: "call_rows",
    head: "UPDATE calls AS c SET owner_id = x.owner_id, is_test_call = x.is_test_call, \
        response = x.response FROM ",
    columns: "call_sid, owner_id, is_test_call, response",
    tail: " WHERE c.call_sid = x.call_sid RETURNING 1",
    numbered: false,
};

const EVENTS: Part = Part {
    name: "events",
    head: "UPDATE webhook_events AS e SET status = x.status, error = x.error, \
        processed_at = x.processed_at FROM ",
    columns: "provider, event_id, status, error, processed_at",
    tail: " WHERE e.provider = x.provider AND e.event_id = x.event_id RETURNING 1",
    numbered: false,
};

const TIMERS: Part = Part {
    name: "timers",
    head: "INSERT INTO reminder_timers (owner_id, state, sent, anchor_at, due_at, expired_at) \
        SELECT x.owner_id, x.state, x.sent, x.anchor_at, x.due_at, x.expired_at FROM ",
    columns: "owner_id, state, sent, anchor_at, due_at, expired_at",
    tail: " ON CONFLICT (owner_id) DO UPDATE SET state = excluded.state, sent = excluded.sent, \
        anchor_at = excluded.anchor_at, due_at = excluded.due_at, \
        expired_at = excluded.expired_at",
    numbered: false,
};

/// Cost-ledger rows come as one JSON array (`ledger::cost_rows`, shared with SQLite), read by
/// `jsonb_to_recordset` whatever their number.
const COSTS: Part = Part {
    name: "costs",
    head: "INSERT INTO cost_ledger (source_key, owner_id, kind, quantity, country, currency, \
        estimated_micros, reporting_micros, provider_id, at) \
        SELECT x.source_key, x.owner_id, x.kind, x.quantity, x.country, x.currency, \
        x.estimated_micros, x.reporting_micros, x.provider_id, x.at FROM ",
    columns: "source_key text, owner_id text, kind text, quantity bigint, country text, \
        currency text, estimated_micros bigint, reporting_micros bigint, provider_id text, \
        at timestamptz",
    tail: " ON CONFLICT (source_key) DO NOTHING",
    numbered: false,
};

/// One column of a part's rows, typed as PostgreSQL reads it.
enum Column {
    Text(Vec<Option<String>>),
    Int(Vec<i32>),
    Bool(Vec<bool>),
    Time(Vec<Option<DateTime<Utc>>>),
}

impl Column {
    fn text<T>(rows: &[T], f: impl Fn(&T) -> Option<String>) -> Column {
        Column::Text(rows.iter().map(f).collect())
    }

    fn time<T>(rows: &[T], f: impl Fn(&T) -> Option<DateTime<Utc>>) -> Column {
        Column::Time(rows.iter().map(f).collect())
    }

    fn sql_type(&self) -> &'static str {
        match self {
            Column::Text(_) => "text",
            Column::Int(_) => "int4",
            Column::Bool(_) => "bool",
            Column::Time(_) => "timestamptz",
        }
    }

    /// Binds the column: its one value, or the array of all of them.
    fn bind(self, args: &mut PgArguments, one: bool) -> std::result::Result<(), BoxDynError> {
        fn first<T>(values: Vec<T>) -> Option<T> {
            values.into_iter().next()
        }
        match (self, one) {
            (Column::Text(v), true) => args.add(first(v).flatten()),
            (Column::Text(v), false) => args.add(v),
            (Column::Int(v), true) => args.add(first(v)),
            (Column::Int(v), false) => args.add(v),
            (Column::Bool(v), true) => args.add(first(v)),
            (Column::Bool(v), false) => args.add(v),
            (Column::Time(v), true) => args.add(first(v).flatten()),
            (Column::Time(v), false) => args.add(v),
        }
    }
}

/// An event's held writes as one statement, built from the parts it needs.
///
/// Each part's rows come as one-row `VALUES` when there is one (nearly always), and as `UNNEST`
/// of arrays when there are more. Why not always arrays, with one unchanging text: PostgreSQL
/// keeps a statement's plan only when a plan made for any parameters costs about as much as one
/// made for these. An array's length is known only from its value, so a plan made for the
/// value (one row) always looked cheaper, and a statement of ten array parts was planned again
/// on every event: about 0.45 ms, a quarter of PostgreSQL's CPU for a text. With `VALUES`
/// the one plan kept per connection is the one it would make anyway. Each combination of parts
/// is a text of its own, prepared once per connection: a few dozen in all.
struct WriteEvent {
    /// The parts so far: each one's name and its CTE.
    ctes: Vec<(&'static str, String)>,
    args: PgArguments,
}

impl WriteEvent {
    fn new() -> WriteEvent {
        WriteEvent {
            ctes: Vec::new(),
            args: PgArguments::default(),
        }
    }

    /// `$n` for the next parameter, bound to `bind`.
    fn param(
        &mut self,
        bind: impl FnOnce(&mut PgArguments) -> std::result::Result<(), BoxDynError>,
    ) -> Result<usize> {
        bind(&mut self.args).map_err(sqlx::Error::Encode)?;
        Ok(self.args.len())
    }

    /// `part` over `rows` rows, whose `columns` are in the order of `part.columns`.
    fn rows(&mut self, part: &Part, rows: usize, columns: Vec<Column>) -> Result<()> {
        if rows == 0 {
            return Ok(());
        }
        let one = rows == 1;
        let mut params = Vec::with_capacity(columns.len());
        for column in columns {
            let sql_type = column.sql_type();
            let n = self.param(|args| column.bind(args, one))?;
            params.push(format!("${n}::{sql_type}{}", if one { "" } else { "[]" }));
        }
        let params = params.join(", ");
        let (columns, numbered) = (part.columns, part.numbered);
        let source = match (one, numbered) {
            (true, false) => format!("(VALUES ({params})) AS x({columns})"),
            (true, true) => format!("(VALUES ({params}, 1)) AS x({columns}, n)"),
            (false, false) => format!("UNNEST({params}) AS x({columns})"),
            (false, true) => format!("UNNEST({params}) WITH ORDINALITY AS x({columns}, n)"),
        };
        self.push(part, &source);
        Ok(())
    }

    /// `part` over the rows of a JSON array.
    fn json(&mut self, part: &Part, rows: Vec<serde_json::Value>) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let n = self.param(|args| args.add(serde_json::Value::Array(rows)))?;
        self.push(
            part,
            &format!("jsonb_to_recordset(${n}::jsonb) AS x({})", part.columns),
        );
        Ok(())
    }

    fn push(&mut self, part: &Part, source: &str) {
        self.ctes.push((
            part.name,
            format!("{} AS ({}{source}{})", part.name, part.head, part.tail),
        ));
    }

    /// The statement, ending in how many rows `counted` parts found (0 for a part not there).
    fn finish(self, counted: [&Part; 3]) -> (String, PgArguments) {
        let counts = counted
            .iter()
            .map(|part| {
                if self.ctes.iter().any(|(name, _)| *name == part.name) {
                    format!("(SELECT COUNT(*) FROM {})", part.name)
                } else {
                    "0::int8".to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join(", ");
        let ctes = self.ctes.into_iter().map(|(_, cte)| cte);
        let sql = format!(
            "WITH {} SELECT {counts}",
            ctes.collect::<Vec<_>>().join(", ")
        );
        (sql, self.args)
    }
}

/// The statement sending `w`, and its parameters. Its counts are the owners, inbound messages
/// and provider events that the updates found.
fn write_event(w: Writes) -> Result<(String, PgArguments)> {
    use Column as C;
    let mut s = WriteEvent::new();
    let o = &w.owners;
    s.rows(
        &OWNER_ROWS,
        o.len(),
        vec![
            C::text(o, |o| Some(o.id.as_str().to_owned())),
            C::text(o, |o| Some(o.locale.tag().to_owned())),
            C::text(o, |o| Some(o.state.as_str().to_owned())),
            C::text(o, |o| o.gate.map(|g| g.as_str().to_owned())),
            C::text(o, |o| o.business_type.clone()),
            C::text(o, |o| o.location.clone()),
            C::text(o, |o| o.business_name.clone()),
            C::text(o, |o| o.owner_name.clone()),
            C::text(o, |o| o.notify.as_ref().map(|n| n.to_stored())),
            C::text(o, |o| o.phone_type.map(|p| p.as_str().to_owned())),
            C::Int(o.iter().map(|o| o.misses).collect()),
            C::Bool(o.iter().map(|o| o.opted_out).collect()),
            C::Bool(o.iter().map(|o| o.payment_active).collect()),
            C::time(o, |o| o.paid_at),
            C::text(o, |o| {
                o.twilio_number.as_ref().map(|n| n.as_str().to_owned())
            }),
            C::time(o, |o| o.waitlisted_at),
            C::time(o, |o| o.verify_started_at),
            C::time(o, |o| Some(o.updated_at)),
        ],
    )?;
    let t = &w.transitions;
    s.rows(
        &HISTORY,
        t.len(),
        vec![
            C::text(t, |t| Some(t.owner_id.clone())),
            C::text(t, |t| Some(t.from.to_owned())),
            C::text(t, |t| Some(t.to.to_owned())),
            C::text(t, |t| Some(t.cause.clone())),
            C::time(t, |t| Some(t.at)),
        ],
    )?;
    let m = &w.outbound;
    s.rows(
        &OUTBOX,
        m.len(),
        vec![
            C::text(m, |m| Some(m.owner_id.clone())),
            C::text(m, |m| Some(m.to.clone())),
            C::text(m, |m| Some(m.body.clone())),
            C::time(m, |m| Some(m.at)),
            C::text(m, |m| Some(m.kind.to_owned())),
        ],
    )?;
    let l = &w.links;
    s.rows(
        &LINKS,
        l.len(),
        vec![
            C::text(l, |l| Some(l.kind.to_owned())),
            C::text(l, |l| Some(l.stripe_id.clone())),
            C::text(l, |l| Some(l.owner_id.clone())),
            C::time(l, |l| Some(l.at)),
        ],
    )?;
    let i = &w.inbound;
    s.rows(
        &INBOUND,
        i.len(),
        vec![
            C::text(i, |i| Some(i.message_sid.clone())),
            C::text(i, |i| i.owner_id.clone()),
            C::text(i, |i| Some(i.response.clone())),
        ],
    )?;
    let c = &w.calls;
    s.rows(
        &CALLS,
        c.len(),
        vec![
            C::text(c, |c| Some(c.call_sid.clone())),
            C::text(c, |c| c.owner_id.clone()),
            C::Bool(c.iter().map(|c| c.is_test_call).collect()),
            C::text(c, |c| Some(c.response.clone())),
        ],
    )?;
    let e = &w.events;
    s.rows(
        &EVENTS,
        e.len(),
        vec![
            C::text(e, |e| Some(e.provider.clone())),
            C::text(e, |e| Some(e.event_id.clone())),
            C::text(e, |e| Some(e.status.to_owned())),
            C::text(e, |e| e.error.clone()),
            C::time(e, |e| Some(e.at)),
        ],
    )?;
    let r = &w.timers;
    s.rows(
        &TIMERS,
        r.len(),
        vec![
            C::text(r, |r| Some(r.owner_id.as_str().to_owned())),
            C::text(r, |r| Some(r.state.as_str().to_owned())),
            C::Int(r.iter().map(|r| r.sent).collect()),
            C::time(r, |r| Some(r.anchor_at)),
            C::time(r, |r| r.due_at),
            C::time(r, |r| r.expired_at),
        ],
    )?;
    s.json(&COSTS, w.costs)?;
    Ok(s.finish([&OWNER_ROWS, &INBOUND, &EVENTS]))
}

impl PgTx {
    /// Sends the writes held so far ([`write_event`]), if any.
    pub(super) async fn flush(&mut self) -> Result<()> {
        if self.1.is_empty() {
            return Ok(());
        }
        let w = std::mem::take(&mut self.1);
        if !w.outbound.is_empty() {
            self.2.note();
        }
        let (owners_expected, inbound_expected, events_expected) =
            (w.owners.len(), w.inbound.len(), w.events.len());
        let (sql, args) = write_event(w)?;
        let (owners, inbound, events): (i64, i64, i64) =
            sqlx::query_as_with(AssertSqlSafe(sql), args)
                .fetch_one(&mut *self.0)
                .await?;
        check_found("owners", owners_expected, owners)?;
        check_found("inbound_messages", inbound_expected, inbound)?;
        check_found("webhook_events", events_expected, events)
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
                Ok(tx) => return Ok(PgTx(tx, Writes::default(), Queued::new(&self.bell))),
                Err(e) if tries > 1 && connection_lost(&e) => tries -= 1,
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn outbox_bell(&self) -> &OutboxBell {
        &self.bell
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

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::store::write::HistoryWrite;

    fn transition(to: &'static str) -> HistoryWrite {
        HistoryWrite {
            owner_id: "c1".into(),
            from: "S1_BUSINESS_TYPE_LOCATION",
            to,
            cause: "sms".into(),
            at: Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
        }
    }

    #[test]
    fn one_row_is_a_values_row_and_absent_parts_are_left_out() {
        let writes = Writes {
            transitions: vec![transition("S2_BUSINESS_NAME")],
            ..Writes::default()
        };
        let (sql, args) = write_event(writes).unwrap();
        assert_eq!(
            sql,
            "WITH history AS (INSERT INTO state_history (owner_id, from_state, to_state, cause, \
             at) SELECT x.owner_id, x.from_state, x.to_state, x.cause, x.at FROM (VALUES \
             ($1::text, $2::text, $3::text, $4::text, $5::timestamptz, 1)) AS x(owner_id, \
             from_state, to_state, cause, at, n) ORDER BY x.n) SELECT 0::int8, 0::int8, 0::int8"
        );
        assert_eq!(args.len(), 5);
    }

    #[test]
    fn many_rows_are_arrays_kept_in_order() {
        let writes = Writes {
            transitions: vec![transition("S2_BUSINESS_NAME"), transition("S3_OWNER_NAME")],
            inbound: vec![crate::store::write::InboundWrite {
                message_sid: "SM1".into(),
                owner_id: None,
                response: "<Response/>".into(),
            }],
            ..Writes::default()
        };
        let (sql, args) = write_event(writes).unwrap();
        assert!(sql.contains(
            "FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[]) \
             WITH ORDINALITY AS x(owner_id, from_state, to_state, cause, at, n) ORDER BY x.n"
        ));
        assert!(sql.contains("(VALUES ($6::text, $7::text, $8::text)) AS x(message_sid"));
        assert!(sql.ends_with("SELECT 0::int8, (SELECT COUNT(*) FROM inbound), 0::int8"));
        assert_eq!(args.len(), 8);
    }
}
