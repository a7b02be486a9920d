//! The outbox worker's batch statements: one claims a batch with all a send needs, one records
//! what became of every message of the batch. The two back ends differ in dialect only: PostgreSQL
//! claims through a data-modifying CTE and reads the batch's results from a `jsonb` array; SQLite,
//! which has neither, returns the owner's opt-out from a subquery in `RETURNING` and reads the
//! results with `json_each`.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

use super::{OutboundMessage, OutboundStatus};

/// A claimed message with what its send needs besides: whether its owner has opted out (or is
/// gone), read in the claim so the worker reads nothing per message.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimedOutbound {
    pub message: OutboundMessage,
    pub owner_opted_out: bool,
}

/// What became of one claimed message.
#[derive(Debug, Clone, PartialEq)]
pub enum OutboundOutcome {
    /// Sent, given up, or to be tried again at `retry_at` (then back to pending whatever the
    /// status). A message already final (a late worker whose lease had run out) stays so.
    Finish {
        status: OutboundStatus,
        twilio_sid: Option<String>,
        error: Option<String>,
        retry_at: Option<DateTime<Utc>>,
    },
    /// Handed back without spending an attempt (a rate limit, a shutdown): only while the claim
    /// (`attempts` as claimed) is still this worker's. Whether it needs reconciling is kept.
    Defer {
        attempts: i32,
        error: String,
        retry_at: DateTime<Utc>,
    },
    /// May or may not have gone out: back to pending, marked to be looked for at Twilio first.
    Uncertain {
        error: String,
        retry_at: DateTime<Utc>,
    },
}

/// One line of a batch's record.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboundResult {
    pub id: i64,
    pub outcome: OutboundOutcome,
}

/// The columns every claim returns, in the order `OutboundRow` reads them, then `opted_out`.
macro_rules! claimed_columns {
    () => {
        "id, owner_id, to_addr, body, status, attempts, twilio_sid, last_error, needs_reconcile, \
         attempted_at, kind, created_at, from_addr, to_email, subject, topic"
    };
}

/// Which messages are due: pending and due, or `sending` with a lease that ran out (a worker died
/// or stalled mid-send). The first `status IN` is implied by the rest; spelled out, it lets SQLite
/// see that the partial index `outbound_messages_due` covers the query.
macro_rules! due {
    () => {
        "SELECT id FROM outbound_messages \
         WHERE status IN ('pending', 'sending') \
           AND ((status = 'pending' AND next_attempt_at <= $1) \
             OR (status = 'sending' AND lease_until < $1)) \
         ORDER BY id LIMIT $3"
    };
}

/// The claim's SET: `sending` under a lease, one more attempt; a message taken over while
/// `sending` may have gone out, so it is marked `needs_reconcile` (SET reads the row as it was).
macro_rules! claim_set {
    () => {
        "SET status = 'sending', lease_until = $2, attempts = attempts + 1, \
             attempted_at = CASE WHEN needs_reconcile OR status = 'sending' \
                 THEN COALESCE(attempted_at, $1) ELSE $1 END, \
             needs_reconcile = needs_reconcile OR status = 'sending', \
             updated_at = $1"
    };
}

/// The record's SET, over the batch's results as `r`: one row per message, with `outcome`
/// `finish`, `defer` or `uncertain`, and the new status as the worker worked it out.
macro_rules! record_set {
    () => {
        " SET status = r.status, \
             twilio_sid = COALESCE(r.twilio_sid, m.twilio_sid), \
             last_error = r.last_error, \
             next_attempt_at = COALESCE(r.retry_at, m.next_attempt_at), \
             lease_until = NULL, \
             needs_reconcile = CASE r.outcome WHEN 'finish' THEN FALSE \
                 WHEN 'uncertain' THEN TRUE ELSE m.needs_reconcile END, \
             attempts = CASE WHEN r.outcome = 'defer' THEN m.attempts - 1 ELSE m.attempts END, \
             updated_at = $2 "
    };
}

/// Which rows a result may still change: a finish never touches a message already final (a late
/// worker whose lease had run out); a defer or an uncertain attempt only a claim still `sending`,
/// and a defer only while the claim (its attempt count) is still this worker's.
macro_rules! record_where {
    () => {
        " WHERE m.id = r.id AND CASE r.outcome \
             WHEN 'finish' THEN m.status NOT IN \
                 ('delivered', 'undelivered', 'failed', 'simulated', 'suppressed') \
             WHEN 'defer' THEN m.attempts = r.attempts AND m.status = 'sending' \
             ELSE m.status = 'sending' END"
    };
}

/// The statements that take row locks, in one dialect: `$for_update` ends a SELECT of rows the
/// transaction goes on to change, `$skip_locked` one that takes any free rows of many.
macro_rules! locking_statements {
    ($for_update:literal, $skip_locked:literal) => {
        /// Claims due messages for one worker: leased, attempts counted.
        pub(in crate::store) const CLAIM_DUE: &str = concat!(
            "WITH due AS MATERIALIZED ( \
                     SELECT id FROM outbound_messages \
                     WHERE status IN ('pending', 'sending') \
                       AND ((status = 'pending' AND next_attempt_at <= $1) \
                         OR (status = 'sending' AND lease_until < $1)) \
                     ORDER BY id LIMIT $3",
            $skip_locked,
            ") UPDATE outbound_messages \
                 SET status = 'sending', lease_until = $2, attempts = attempts + 1, \
                     attempted_at = CASE WHEN needs_reconcile OR status = 'sending' \
                         THEN COALESCE(attempted_at, $1) ELSE $1 END, \
                     needs_reconcile = needs_reconcile OR status = 'sending', \
                     updated_at = $1 \
                 WHERE id IN (SELECT id FROM due) RETURNING ",
            crate::store::row::outbound_columns!()
        );
        /// A message by Twilio sid, locked, for its status callback.
        pub(in crate::store) const LOCK_BY_SID: &str = concat!(
            "SELECT id, owner_id, status FROM outbound_messages \
                 WHERE twilio_sid = $1",
            $for_update
        );
    };
}

/// PostgreSQL: concurrent transactions queue up on a locked row, or pass it by.
pub(super) mod postgres {
    locking_statements!(" FOR UPDATE", " FOR UPDATE SKIP LOCKED");

    /// The claim as one statement: the due rows locked and skipped by other workers
    /// (MATERIALIZED, so the locking SELECT runs exactly once: a subquery under `IN` may be re-run
    /// by some plans, each run skipping different rows), updated, and joined to their owner.
    pub const CLAIM: &str = concat!(
        "WITH due AS MATERIALIZED (",
        due!(),
        " FOR UPDATE SKIP LOCKED), \
         claimed AS (UPDATE outbound_messages ",
        claim_set!(),
        " WHERE id IN (SELECT id FROM due) RETURNING ",
        claimed_columns!(),
        ") SELECT claimed.*, \
             CASE WHEN COALESCE(c.opted_out, TRUE) THEN 1::int8 ELSE 0::int8 END AS opted_out \
         FROM claimed LEFT JOIN owners c ON c.id = claimed.owner_id \
         ORDER BY claimed.id"
    );

    /// Every result of a batch in one statement: `$1` a `jsonb` array of
    /// [`super::record_rows`], `$2` now.
    pub const RECORD: &str = concat!(
        "UPDATE outbound_messages AS m",
        record_set!(),
        "FROM jsonb_to_recordset($1) AS r(id bigint, outcome text, status text, \
             twilio_sid text, last_error text, retry_at timestamptz, attempts integer)",
        record_where!()
    );
}

/// SQLite: its transactions begin with `BEGIN IMMEDIATE` and hold its one write lock already.
pub(super) mod sqlite {
    locking_statements!("", "");

    /// The claim as one statement. SQLite has no data-modifying CTE: the owner's opt-out comes
    /// from a subquery in `RETURNING` (a missing owner reads as opted out, as on PostgreSQL).
    pub const CLAIM: &str = concat!(
        "WITH due AS MATERIALIZED (",
        due!(),
        ") UPDATE outbound_messages ",
        claim_set!(),
        " WHERE id IN (SELECT id FROM due) RETURNING ",
        claimed_columns!(),
        ", COALESCE((SELECT c.opted_out FROM owners c \
             WHERE c.id = outbound_messages.owner_id), 1) AS opted_out"
    );

    /// Every result of a batch in one statement: `$1` a JSON array of [`super::record_rows`],
    /// `$2` now.
    pub const RECORD: &str = concat!(
        "UPDATE outbound_messages AS m",
        record_set!(),
        "FROM (SELECT json_extract(value, '$.id') AS id, \
                 json_extract(value, '$.outcome') AS outcome, \
                 json_extract(value, '$.status') AS status, \
                 json_extract(value, '$.twilio_sid') AS twilio_sid, \
                 json_extract(value, '$.last_error') AS last_error, \
                 json_extract(value, '$.retry_at') AS retry_at, \
                 json_extract(value, '$.attempts') AS attempts \
             FROM json_each($1)) AS r",
        record_where!()
    );
}

/// The rows [`postgres::RECORD`] and [`sqlite::RECORD`] read. Times are written as sqlx writes a
/// time into SQLite (RFC 3339, as many fraction digits as needed, `+00:00`): SQLite compares
/// times as text, so `next_attempt_at` must look like every other time in the table. PostgreSQL
/// reads the same text as a `timestamptz`.
pub(super) fn record_rows(results: &[OutboundResult]) -> Value {
    let time = |at: &DateTime<Utc>| at.to_rfc3339_opts(SecondsFormat::AutoSi, false);
    Value::Array(
        results
            .iter()
            .map(|r| match &r.outcome {
                OutboundOutcome::Finish {
                    status,
                    twilio_sid,
                    error,
                    retry_at,
                } => json!({
                    "id": r.id,
                    "outcome": "finish",
                    // A retry goes back to the outbox, whatever the attempt's own status was.
                    "status": if retry_at.is_some() { OutboundStatus::Pending } else { *status }.as_str(),
                    "twilio_sid": twilio_sid,
                    "last_error": error,
                    "retry_at": retry_at.as_ref().map(time),
                    "attempts": null,
                }),
                OutboundOutcome::Defer {
                    attempts,
                    error,
                    retry_at,
                } => json!({
                    "id": r.id,
                    "outcome": "defer",
                    "status": OutboundStatus::Pending.as_str(),
                    "twilio_sid": null,
                    "last_error": error,
                    "retry_at": time(retry_at),
                    "attempts": attempts,
                }),
                OutboundOutcome::Uncertain { error, retry_at } => json!({
                    "id": r.id,
                    "outcome": "uncertain",
                    "status": OutboundStatus::Pending.as_str(),
                    "twilio_sid": null,
                    "last_error": error,
                    "retry_at": time(retry_at),
                    "attempts": null,
                }),
            })
            .collect(),
    )
}

/// A text for the outbox, due now.
pub(super) const ENQUEUE: &str = "INSERT INTO outbound_messages (owner_id, to_addr, body, status, \
        attempts, next_attempt_at, created_at, updated_at) \
    VALUES ($1, $2, $3, 'pending', 0, $4, $4, $4) \
    RETURNING id";

/// What a send attempt did: its status, sid, error, and when to try again.
pub(super) const FINISH: &str = "UPDATE outbound_messages \
    SET status = $2, twilio_sid = COALESCE($3, twilio_sid), \
        last_error = $4, next_attempt_at = COALESCE($5, next_attempt_at), \
        lease_until = NULL, needs_reconcile = FALSE, updated_at = $6 \
    WHERE id = $1 AND status NOT IN \
        ('delivered', 'undelivered', 'failed', 'simulated', 'suppressed')";

/// Extends a claim's lease, only while it is still this worker's.
pub(super) const RENEW_LEASE: &str = "UPDATE outbound_messages SET lease_until = $3, updated_at = $4 \
    WHERE id = $1 AND attempts = $2 AND status = 'sending'";

/// Hands a claimed message back without spending an attempt.
pub(super) const DEFER: &str = "UPDATE outbound_messages \
    SET status = 'pending', attempts = attempts - 1, last_error = $3, \
        next_attempt_at = $4, lease_until = NULL, updated_at = $5 \
    WHERE id = $1 AND attempts = $2 AND status = 'sending'";

/// A send that may or may not have gone out: back to pending, to be looked for at Twilio first.
pub(super) const MARK_UNCERTAIN: &str = "UPDATE outbound_messages \
    SET status = 'pending', needs_reconcile = TRUE, last_error = $2, \
        next_attempt_at = $3, lease_until = NULL, updated_at = $4 \
    WHERE id = $1 AND status = 'sending'";

/// A status callback's status (the caller checked it never moves back).
pub(super) const SET_STATUS: &str = "UPDATE outbound_messages \
    SET status = $2, error_code = COALESCE($3, error_code), \
        updated_at = $4 \
    WHERE id = $1";

/// This area's [`Tx`](super::Tx) methods, expanded by `impl_tx!` (in `common.rs`) inside each back
/// end's `impl Tx`, where its names are in scope; `dialect` is
/// the back end's module of locking statements (`postgres` or `sqlite`).
macro_rules! tx_methods {
    (dialect = $dialect:ident) => {
        async fn enqueue_outbound(&mut self, msg: &NewOutbound<'_>) -> Result<i64> {
            let id = sqlx::query_scalar($crate::store::outbox::ENQUEUE)
                .bind(msg.owner_id.as_str())
                .bind(msg.to.as_str())
                .bind(msg.body)
                .bind(msg.created_at)
                .fetch_one(&mut *self.0)
                .await?;
            self.2.note();
            Ok(id)
        }

        async fn enqueue_verify_call(&mut self, call: &NewOutbound<'_>) -> Result<()> {
            self.1.outbound(call, "verify_call");
            Ok(())
        }

        async fn queue_outbound(&mut self, msg: &NewOutbound<'_>) -> Result<()> {
            self.1.outbound(msg, "sms");
            Ok(())
        }

        async fn claim_outbound(
            &mut self,
            now: DateTime<Utc>,
            lease_until: DateTime<Utc>,
            limit: i64,
        ) -> Result<Vec<OutboundMessage>> {
            // A message still `sending` when its lease ran out was in the hands of a
            // worker that died or stalled mid-send: it may have gone out, so it is taken
            // over marked `needs_reconcile` (SET reads the old row: `status` is the one
            // before this claim). The first `status IN` is implied by the rest; spelled
            // out, it lets SQLite
            // see that the partial index outbound_messages_due covers the query. The claim
            // is a MATERIALIZED CTE so its locking SELECT runs exactly once: a subquery
            // under `IN` may be re-run by some plans, each run skipping different rows.
            let rows: Vec<OutboundRow> = sqlx::query_as($crate::store::outbox::$dialect::CLAIM_DUE)
                .bind(now)
                .bind(lease_until)
                .bind(limit)
                .fetch_all(&mut *self.0)
                .await?;
            let mut messages = rows
                .into_iter()
                .map(OutboundRow::into_message)
                .collect::<Result<Vec<_>>>()?;
            // RETURNING promises no order.
            messages.sort_by_key(|m| m.id);
            Ok(messages)
        }

        async fn claim_outbound_batch(
            &mut self,
            now: DateTime<Utc>,
            lease_until: DateTime<Utc>,
            limit: i64,
        ) -> Result<Vec<$crate::store::ClaimedOutbound>> {
            let rows = sqlx::query($crate::store::outbox::$dialect::CLAIM)
                .bind(now)
                .bind(lease_until)
                .bind(limit)
                .fetch_all(&mut *self.0)
                .await?;
            let mut claimed = rows
                .iter()
                .map(|row| {
                    let message: OutboundRow = sqlx::FromRow::from_row(row)?;
                    let opted_out: i64 = sqlx::Row::try_get(row, "opted_out")?;
                    Ok($crate::store::ClaimedOutbound {
                        message: message.into_message()?,
                        owner_opted_out: opted_out != 0,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            // SQLite's RETURNING promises no order.
            claimed.sort_by_key(|c| c.message.id);
            Ok(claimed)
        }

        async fn record_outbound_batch(
            &mut self,
            results: &[$crate::store::OutboundResult],
            now: DateTime<Utc>,
        ) -> Result<()> {
            if results.is_empty() {
                return Ok(());
            }
            sqlx::query($crate::store::outbox::$dialect::RECORD)
                .bind(Json($crate::store::outbox::record_rows(results)))
                .bind(now)
                .execute(&mut *self.0)
                .await?;
            Ok(())
        }

        async fn finish_outbound(
            &mut self,
            id: i64,
            status: OutboundStatus,
            twilio_sid: Option<&str>,
            error: Option<&str>,
            retry_at: Option<DateTime<Utc>>,
            now: DateTime<Utc>,
        ) -> Result<()> {
            // A retry goes back to the outbox, whatever the attempt's own status was.
            let status = match retry_at {
                Some(_) => OutboundStatus::Pending,
                None => status,
            };
            // A message already final (a late worker whose lease had expired) stays so.
            sqlx::query($crate::store::outbox::FINISH)
                .bind(id)
                .bind(status.as_str())
                .bind(twilio_sid)
                .bind(error)
                .bind(retry_at)
                .bind(now)
                .execute(&mut *self.0)
                .await?;
            Ok(())
        }

        async fn renew_outbound_lease(
            &mut self,
            id: i64,
            attempts: i32,
            lease_until: DateTime<Utc>,
            now: DateTime<Utc>,
        ) -> Result<bool> {
            // `attempts` identifies the claim: every claim increments it, and only the
            // holder of a claim ever lowers it again, as it hands the message back. A
            // lease that ran out but was not taken over is still this worker's: no one
            // else can have sent the message.
            let renewed = sqlx::query($crate::store::outbox::RENEW_LEASE)
                .bind(id)
                .bind(attempts)
                .bind(lease_until)
                .bind(now)
                .execute(&mut *self.0)
                .await?
                .rows_affected();
            Ok(renewed == 1)
        }

        async fn defer_outbound(
            &mut self,
            id: i64,
            attempts: i32,
            error: &str,
            retry_at: DateTime<Utc>,
            now: DateTime<Utc>,
        ) -> Result<()> {
            // needs_reconcile and attempted_at are kept: a message taken over from a dead
            // worker must still be looked for at Twilio before it is sent.
            sqlx::query($crate::store::outbox::DEFER)
                .bind(id)
                .bind(attempts)
                .bind(error)
                .bind(retry_at)
                .bind(now)
                .execute(&mut *self.0)
                .await?;
            Ok(())
        }

        async fn mark_outbound_ambiguous(
            &mut self,
            id: i64,
            error: &str,
            retry_at: DateTime<Utc>,
            now: DateTime<Utc>,
        ) -> Result<()> {
            // attempted_at is kept: it bounds the reconciliation search.
            sqlx::query($crate::store::outbox::MARK_UNCERTAIN)
                .bind(id)
                .bind(error)
                .bind(retry_at)
                .bind(now)
                .execute(&mut *self.0)
                .await?;
            Ok(())
        }

        async fn update_outbound_status(
            &mut self,
            twilio_sid: &str,
            status: OutboundStatus,
            error_code: Option<&str>,
            now: DateTime<Utc>,
        ) -> Result<Option<OwnerId>> {
            let row: Option<(i64, String, String)> =
                sqlx::query_as($crate::store::outbox::$dialect::LOCK_BY_SID)
                    .bind(twilio_sid)
                    .fetch_optional(&mut *self.0)
                    .await?;
            let Some((id, owner_id, current)) = row else {
                return Ok(None);
            };
            if row::outbound_status(id, &current)?.may_move_to(status) {
                sqlx::query($crate::store::outbox::SET_STATUS)
                    .bind(id)
                    .bind(status.as_str())
                    .bind(error_code)
                    .bind(now)
                    .execute(&mut *self.0)
                    .await?;
            }
            Ok(Some(row::owner_id("outbound_messages", owner_id)?))
        }
    };
}
pub(super) use tx_methods;
