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

pub(super) mod postgres {
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

pub(super) mod sqlite {
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
