//! Reminder timers and the record of reminders sent (migration 0014), in the event's transaction.
//!
//! Each owner has at most one timer row. Every text the owner sends rewrites it while their row in
//! `owners` is locked; the sweeper claims a due timer together with its owner's row
//! (`FOR UPDATE OF t, c SKIP LOCKED` on PostgreSQL), so a reminder is never sent by two replicas,
//! nor after a text that has already re-armed it: the claim either sees the text's new timer, or
//! holds the owner until the reminder is queued.

use std::future::Future;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::row::row;
use super::{Owner, Result};
use crate::conversation::StateName;
use crate::domain::OwnerId;

/// An owner's reminder timer as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReminderTimer {
    pub owner_id: OwnerId,
    /// The step the owner was on when it was armed.
    pub state: StateName,
    /// Reminders sent since the owner's last text.
    pub sent: i32,
    /// The owner's last text.
    pub anchor_at: DateTime<Utc>,
    /// When the sweeper looks at it next; `None`: not until the owner texts.
    pub due_at: Option<DateTime<Utc>>,
    /// When the conversation expired, if it has.
    pub expired_at: Option<DateTime<Utc>>,
}

/// Reminders sent from one step, and how many owners moved on from it after one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReminderStats {
    pub state: String,
    pub sent: i64,
    pub moved_on: i64,
}

row! {
    /// A `reminder_timers` row, with its owner's row when claimed together.
    pub(super) struct TimerRow {
        pub(super) timer_owner_id: String,
        pub(super) timer_state: String,
        pub(super) timer_sent: i32,
        pub(super) timer_anchor_at: DateTime<Utc>,
        pub(super) timer_due_at: Option<DateTime<Utc>>,
        pub(super) timer_expired_at: Option<DateTime<Utc>>,
    }
}

impl TimerRow {
    pub(super) fn into_timer(self) -> Result<ReminderTimer> {
        const T: &str = "reminder_timers";
        let owner_id = super::row::owner_id(T, self.timer_owner_id)?;
        let state =
            StateName::parse(&self.timer_state).ok_or_else(|| super::StoreError::Corrupt {
                table: T,
                detail: format!("owner {owner_id}: state {:?}", self.timer_state),
            })?;
        Ok(ReminderTimer {
            owner_id,
            state,
            sent: self.timer_sent,
            anchor_at: self.timer_anchor_at,
            due_at: self.timer_due_at,
            expired_at: self.timer_expired_at,
        })
    }
}

/// The timer read with its owner by the text's first statement (`claim_then_lock!` with
/// `with_timer`), if they have one.
pub(super) fn timer_of<'r, R: sqlx::Row>(row: &'r R) -> Result<Option<ReminderTimer>>
where
    &'r str: sqlx::ColumnIndex<R>,
    Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    TimerRow: sqlx::FromRow<'r, R>,
{
    let owner_id: Option<String> = row.try_get("timer_owner_id")?;
    match owner_id {
        Some(_) => Ok(Some(
            <TimerRow as sqlx::FromRow<R>>::from_row(row)?.into_timer()?,
        )),
        None => Ok(None),
    }
}

/// A due timer claimed with its owner: one row holding both's columns.
pub(super) struct DueRow {
    pub(super) timer: TimerRow,
    pub(super) owner: super::row::OwnerRow,
}

impl<'r, R: sqlx::Row> sqlx::FromRow<'r, R> for DueRow
where
    TimerRow: sqlx::FromRow<'r, R>,
    super::row::OwnerRow: sqlx::FromRow<'r, R>,
{
    fn from_row(row: &'r R) -> sqlx::Result<Self> {
        Ok(Self {
            timer: TimerRow::from_row(row)?,
            owner: super::row::OwnerRow::from_row(row)?,
        })
    }
}

pub(super) const PUT_TIMER: &str = "INSERT INTO reminder_timers \
         (owner_id, state, sent, anchor_at, due_at, expired_at) VALUES ($1, $2, $3, $4, $5, $6) \
     ON CONFLICT (owner_id) DO UPDATE SET state = excluded.state, sent = excluded.sent, \
         anchor_at = excluded.anchor_at, due_at = excluded.due_at, expired_at = excluded.expired_at";

pub(super) const RECORD_SENT: &str = "INSERT INTO reminders_sent \
     (owner_id, state, attempt, outbound_id, sent_at) VALUES ($1, $2, $3, $4, $5)";

pub(super) const MARK_MOVED_ON: &str = "UPDATE reminders_sent SET moved_on_at = $2 \
     WHERE owner_id = $1 AND moved_on_at IS NULL";

pub(super) const HOLD_OUTBOUND_UNTIL: &str = "UPDATE outbound_messages SET next_attempt_at = $2 \
     WHERE id = $1 AND status = 'pending'";

pub(super) const STATS: &str = "SELECT state, COUNT(*) AS sent, COUNT(moved_on_at) AS moved_on \
     FROM reminders_sent GROUP BY state ORDER BY state";

/// What reminders need inside an event's transaction; every [`super::Tx`] has it.
pub trait ReminderTx: Send {
    /// The owner's timer, if they have one (their `owners` row is already locked).
    fn reminder_timer(
        &mut self,
        owner_id: &OwnerId,
    ) -> impl Future<Output = Result<Option<ReminderTimer>>> + Send;

    /// Writes the owner's timer, creating it if they had none. Held (`write.rs`).
    fn put_reminder_timer(
        &mut self,
        timer: &ReminderTimer,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Claims the timer due soonest (at or before `now`) with its owner, both locked; rows another
    /// replica holds are skipped, never waited for.
    fn claim_due_reminder(
        &mut self,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Option<(ReminderTimer, Owner)>>> + Send;

    /// Records a reminder queued in the outbox as `outbound_id`.
    fn record_reminder_sent(
        &mut self,
        owner_id: &OwnerId,
        state: StateName,
        attempt: i32,
        outbound_id: i64,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<()>> + Send;

    /// The owner moved to another step: every reminder they had not yet answered counts as
    /// answered. Returns how many.
    fn mark_reminders_moved_on(
        &mut self,
        owner_id: &OwnerId,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<u64>> + Send;

    /// Holds a queued text until `until` (quiet hours): the outbox does not claim it before.
    fn hold_outbound_until(
        &mut self,
        outbound_id: i64,
        until: DateTime<Utc>,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Reminders sent per step and how many owners moved on after one.
    fn reminder_stats(&mut self) -> impl Future<Output = Result<Vec<ReminderStats>>> + Send;
}

/// The [`ReminderTx`] SQL, the same on both back ends but for the claim's row locks.
macro_rules! impl_reminder_tx {
    ($tx:ty, claim_locks = $claim_locks:literal $(,)?) => {
        const _: () = {
            use chrono::{DateTime, Utc};

            use $crate::conversation::StateName;
            use $crate::domain::OwnerId;
            use $crate::store::Owner;
            use $crate::store::Result;
            use $crate::store::reminders::{
                DueRow, HOLD_OUTBOUND_UNTIL, MARK_MOVED_ON, RECORD_SENT, ReminderStats,
                ReminderTimer, ReminderTx, STATS, TimerRow,
            };

            impl ReminderTx for $tx {
                async fn reminder_timer(
                    &mut self,
                    owner_id: &OwnerId,
                ) -> Result<Option<ReminderTimer>> {
                    // Read already, with the owner, by the event's first statement.
                    if let Some(timer) = self.1.take_timer_read(owner_id) {
                        return Ok(timer);
                    }
                    // The transaction's own writes first, so the read sees them.
                    self.flush().await?;
                    sqlx::query_as::<_, TimerRow>(
                        "SELECT owner_id AS timer_owner_id, state AS timer_state, \
                             sent AS timer_sent, anchor_at AS timer_anchor_at, \
                             due_at AS timer_due_at, expired_at AS timer_expired_at \
                         FROM reminder_timers WHERE owner_id = $1",
                    )
                    .bind(owner_id.as_str())
                    .fetch_optional(&mut *self.0)
                    .await?
                    .map(TimerRow::into_timer)
                    .transpose()
                }

                async fn put_reminder_timer(&mut self, timer: &ReminderTimer) -> Result<()> {
                    self.1.timer(timer);
                    Ok(())
                }

                async fn claim_due_reminder(
                    &mut self,
                    now: DateTime<Utc>,
                ) -> Result<Option<(ReminderTimer, Owner)>> {
                    self.flush().await?;
                    let row: Option<DueRow> = sqlx::query_as(concat!(
                        "SELECT c.*, t.owner_id AS timer_owner_id, t.state AS timer_state, \
                             t.sent AS timer_sent, t.anchor_at AS timer_anchor_at, \
                             t.due_at AS timer_due_at, t.expired_at AS timer_expired_at \
                         FROM reminder_timers t JOIN owners c ON c.id = t.owner_id \
                         WHERE t.due_at IS NOT NULL AND t.due_at <= $1 \
                         ORDER BY t.due_at, t.owner_id LIMIT 1",
                        $claim_locks
                    ))
                    .bind(now)
                    .fetch_optional(&mut *self.0)
                    .await?;
                    match row {
                        None => Ok(None),
                        Some(row) => Ok(Some((row.timer.into_timer()?, row.owner.into_owner()?))),
                    }
                }

                async fn record_reminder_sent(
                    &mut self,
                    owner_id: &OwnerId,
                    state: StateName,
                    attempt: i32,
                    outbound_id: i64,
                    now: DateTime<Utc>,
                ) -> Result<()> {
                    sqlx::query(RECORD_SENT)
                        .bind(owner_id.as_str())
                        .bind(state.as_str())
                        .bind(attempt)
                        .bind(outbound_id)
                        .bind(now)
                        .execute(&mut *self.0)
                        .await?;
                    Ok(())
                }

                async fn mark_reminders_moved_on(
                    &mut self,
                    owner_id: &OwnerId,
                    now: DateTime<Utc>,
                ) -> Result<u64> {
                    Ok(sqlx::query(MARK_MOVED_ON)
                        .bind(owner_id.as_str())
                        .bind(now)
                        .execute(&mut *self.0)
                        .await?
                        .rows_affected())
                }

                async fn hold_outbound_until(
                    &mut self,
                    outbound_id: i64,
                    until: DateTime<Utc>,
                ) -> Result<()> {
                    sqlx::query(HOLD_OUTBOUND_UNTIL)
                        .bind(outbound_id)
                        .bind(until)
                        .execute(&mut *self.0)
                        .await?;
                    Ok(())
                }

                async fn reminder_stats(&mut self) -> Result<Vec<ReminderStats>> {
                    let rows: Vec<(String, i64, i64)> =
                        sqlx::query_as(STATS).fetch_all(&mut *self.0).await?;
                    Ok(rows
                        .into_iter()
                        .map(|(state, sent, moved_on)| ReminderStats {
                            state,
                            sent,
                            moved_on,
                        })
                        .collect())
                }
            }
        };
    };
}
pub(super) use impl_reminder_tx;
