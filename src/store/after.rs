//! After onboarding (migration 0019): missed calls and their alerts, alert pauses, plan usage
//! texts, caller text-backs and customers' opt-outs, in the event's transaction.
//!
//! "Once" is the database's to enforce, not the process's: a usage text and a caller text-back
//! are each an insert on a primary key (`ON CONFLICT DO NOTHING`), so of replicas racing, one
//! wins. The 150 s plain alert is claimed like a reminder timer (`FOR UPDATE SKIP LOCKED` on
//! PostgreSQL), and the recording webhook locks the same row, so a call is alerted once.

use std::future::Future;

use chrono::{DateTime, Utc};

use super::Result;
use super::row::row;
use crate::domain::{OwnerId, PhoneNumber};

/// A missed call as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissedCall {
    pub call_sid: String,
    pub owner_id: OwnerId,
    /// The caller as Twilio gave it: usually E.164, sometimes `Anonymous`.
    pub caller: String,
    pub at: DateTime<Utc>,
    /// The call's length, from its status callback, when one came.
    pub duration_secs: Option<i32>,
    pub recording_sid: Option<String>,
    pub recording_url: Option<String>,
    pub recording_secs: Option<i32>,
    /// When the owner was told (or the alert skipped because they had paused alerts).
    pub alerted_at: Option<DateTime<Utc>>,
    /// `sms`, `email` or `paused`, once alerted.
    pub alert: Option<String>,
}

/// A missed call to record.
#[derive(Debug, Clone)]
pub struct NewMissedCall<'a> {
    pub call_sid: &'a str,
    pub owner_id: &'a OwnerId,
    pub caller: &'a str,
    pub at: DateTime<Utc>,
    /// When to send a plain alert if no recording has come by then.
    pub alert_due_at: DateTime<Utc>,
}

/// What an outbox message after onboarding is: a text (from the owner's number or ours) or an
/// email. Written to the outbox at once, like a reminder, so its id is known.
#[derive(Debug, Clone)]
pub struct NewMessage<'a> {
    pub owner_id: &'a OwnerId,
    /// The phone it goes to; for an email, the owner's phone (whom it concerns).
    pub to: &'a PhoneNumber,
    pub from: Option<&'a PhoneNumber>,
    /// Some for an email: the address and the subject.
    pub email: Option<(&'a str, &'a str)>,
    pub body: &'a str,
    /// `missed_call_alert`, `text_relay`, `caller_text_back` or `usage_alert`.
    pub topic: &'static str,
    pub created_at: DateTime<Utc>,
}

row! {
    pub(super) struct MissedCallRow {
        pub(super) call_sid: String,
        pub(super) owner_id: String,
        pub(super) caller: String,
        pub(super) at: DateTime<Utc>,
        pub(super) duration_secs: Option<i32>,
        pub(super) recording_sid: Option<String>,
        pub(super) recording_url: Option<String>,
        pub(super) recording_secs: Option<i32>,
        pub(super) alerted_at: Option<DateTime<Utc>>,
        pub(super) alert: Option<String>,
    }
}

impl MissedCallRow {
    pub(super) fn into_missed_call(self) -> Result<MissedCall> {
        Ok(MissedCall {
            owner_id: super::row::owner_id("missed_calls", self.owner_id)?,
            call_sid: self.call_sid,
            caller: self.caller,
            at: self.at,
            duration_secs: self.duration_secs,
            recording_sid: self.recording_sid,
            recording_url: self.recording_url,
            recording_secs: self.recording_secs,
            alerted_at: self.alerted_at,
            alert: self.alert,
        })
    }
}

/// The columns of [`MissedCallRow`], over `missed_calls m` joined to `calls k`.
macro_rules! missed_call_columns {
    () => {
        "SELECT m.call_sid, m.owner_id, m.caller, m.at, k.duration_secs, m.recording_sid, \
             m.recording_url, m.recording_secs, m.alerted_at, m.alert \
         FROM missed_calls m JOIN calls k ON k.call_sid = m.call_sid "
    };
}
pub(super) use missed_call_columns;

pub(super) const RECORD_MISSED_CALL: &str = "INSERT INTO missed_calls \
     (call_sid, owner_id, caller, at, alert_due_at) VALUES ($1, $2, $3, $4, $5)";

/// A retried recording callback (same sid) changes nothing; a second recording of one call does
/// not replace the first.
pub(super) const ATTACH_RECORDING: &str = "UPDATE missed_calls \
     SET recording_sid = $2, recording_url = $3, recording_secs = $4 \
     WHERE call_sid = $1 AND recording_sid IS NULL";

pub(super) const MARK_ALERTED: &str = "UPDATE missed_calls \
     SET alerted_at = $2, alert = $3, alert_due_at = NULL WHERE call_sid = $1";

pub(super) const QUEUE_MESSAGE: &str = "INSERT INTO outbound_messages (owner_id, to_addr, body, \
     status, attempts, next_attempt_at, created_at, updated_at, kind, from_addr, to_email, \
     subject, topic) VALUES ($1, $2, $3, 'pending', 0, $4, $4, $4, $5, $6, $7, $8, $9) RETURNING id";

pub(super) const COUNT_SINCE: &str =
    "SELECT COUNT(*) FROM missed_calls WHERE owner_id = $1 AND at >= $2";

pub(super) const NOTE_USAGE_ALERT: &str = "INSERT INTO usage_alerts \
     (owner_id, period_start, percent, sent_at) VALUES ($1, $2, $3, $4) \
     ON CONFLICT (owner_id, period_start, percent) DO NOTHING";

pub(super) const NOTE_TEXT_BACK: &str = "INSERT INTO caller_text_backs \
     (owner_id, caller, day, sent_at) VALUES ($1, $2, $3, $4) \
     ON CONFLICT (owner_id, caller, day) DO NOTHING";

pub(super) const PAUSE: &str = "INSERT INTO alert_pauses (owner_id, paused_at) VALUES ($1, $2) \
     ON CONFLICT (owner_id) DO NOTHING";

pub(super) const RESUME: &str = "DELETE FROM alert_pauses WHERE owner_id = $1";

pub(super) const IS_PAUSED: &str = "SELECT COUNT(*) FROM alert_pauses WHERE owner_id = $1";

pub(super) const CUSTOMER_OPT_OUT: &str = "INSERT INTO customer_opt_outs \
     (business_number, customer, opted_out_at) VALUES ($1, $2, $3) \
     ON CONFLICT (business_number, customer) DO NOTHING";

pub(super) const CUSTOMER_OPT_IN: &str =
    "DELETE FROM customer_opt_outs WHERE business_number = $1 AND customer = $2";

pub(super) const IS_CUSTOMER_OPTED_OUT: &str =
    "SELECT COUNT(*) FROM customer_opt_outs WHERE business_number = $1 AND customer = $2";

/// What the number's work after onboarding needs inside an event's transaction; every
/// [`super::Tx`] has it.
pub trait AfterTx: Send {
    /// Records a missed call; its `calls` row must exist (claimed by the voice webhook).
    fn record_missed_call(
        &mut self,
        call: &NewMissedCall<'_>,
    ) -> impl Future<Output = Result<()>> + Send;

    /// The missed call of a `CallSid`, locked (the recording webhook and the alert timer take
    /// turns on it).
    fn lock_missed_call(
        &mut self,
        call_sid: &str,
    ) -> impl Future<Output = Result<Option<MissedCall>>> + Send;

    /// Attaches a recording to a call that has none. False when it had one already.
    fn attach_recording(
        &mut self,
        call_sid: &str,
        recording_sid: &str,
        url: &str,
        secs: Option<i32>,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// Claims the missed call whose plain alert is due soonest (at or before `now`), locked;
    /// rows another replica holds are skipped, never waited for.
    fn claim_due_alert(
        &mut self,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Option<MissedCall>>> + Send;

    /// Records how the owner was told of a call (`sms`, `email`, `paused`); its timer is done.
    fn mark_alerted(
        &mut self,
        call_sid: &str,
        alert: &str,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Puts a text or an email in the outbox now; returns its id.
    fn queue_message(&mut self, msg: &NewMessage<'_>) -> impl Future<Output = Result<i64>> + Send;

    /// The owner's missed calls at or after `since`.
    fn missed_calls_since(
        &mut self,
        owner_id: &OwnerId,
        since: DateTime<Utc>,
    ) -> impl Future<Output = Result<i64>> + Send;

    /// The owner's latest missed calls, newest first.
    fn recent_missed_calls(
        &mut self,
        owner_id: &OwnerId,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<MissedCall>>> + Send;

    /// Notes the `percent` usage text of a billing month. True only the first time.
    fn note_usage_alert(
        &mut self,
        owner_id: &OwnerId,
        period_start: DateTime<Utc>,
        percent: i32,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// Notes a text-back to `caller` on `day` (`YYYY-MM-DD`). True only the first time that day.
    fn note_text_back(
        &mut self,
        owner_id: &OwnerId,
        caller: &PhoneNumber,
        day: &str,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// Pauses (or resumes) the owner's missed-call alerts.
    fn set_alerts_paused(
        &mut self,
        owner_id: &OwnerId,
        paused: bool,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<()>> + Send;

    fn alerts_paused(&mut self, owner_id: &OwnerId) -> impl Future<Output = Result<bool>> + Send;

    /// Opts a customer out of (or back into) texts from one business number.
    fn set_customer_opted_out(
        &mut self,
        business_number: &PhoneNumber,
        customer: &PhoneNumber,
        opted_out: bool,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<()>> + Send;

    fn customer_opted_out(
        &mut self,
        business_number: &PhoneNumber,
        customer: &PhoneNumber,
    ) -> impl Future<Output = Result<bool>> + Send;
}

/// The [`AfterTx`] SQL, the same on both back ends but for the row locks.
macro_rules! impl_after_tx {
    ($tx:ty, for_update = $for_update:literal, skip_locked = $skip_locked:literal $(,)?) => {
        const _: () = {
            use chrono::{DateTime, Utc};

            use $crate::domain::{OwnerId, PhoneNumber};
            use $crate::store::Result;
            use $crate::store::after::{
                ATTACH_RECORDING, AfterTx, COUNT_SINCE, CUSTOMER_OPT_IN, CUSTOMER_OPT_OUT,
                IS_CUSTOMER_OPTED_OUT, IS_PAUSED, MARK_ALERTED, MissedCall, MissedCallRow,
                NOTE_TEXT_BACK, NOTE_USAGE_ALERT, NewMessage, NewMissedCall, PAUSE, QUEUE_MESSAGE,
                RECORD_MISSED_CALL, RESUME, missed_call_columns,
            };

            impl AfterTx for $tx {
                async fn record_missed_call(&mut self, call: &NewMissedCall<'_>) -> Result<()> {
                    self.flush().await?;
                    sqlx::query(RECORD_MISSED_CALL)
                        .bind(call.call_sid)
                        .bind(call.owner_id.as_str())
                        .bind(call.caller)
                        .bind(call.at)
                        .bind(call.alert_due_at)
                        .execute(&mut *self.0)
                        .await?;
                    Ok(())
                }

                async fn lock_missed_call(&mut self, call_sid: &str) -> Result<Option<MissedCall>> {
                    sqlx::query_as::<_, MissedCallRow>(concat!(
                        missed_call_columns!(),
                        "WHERE m.call_sid = $1",
                        $for_update,
                        ""
                    ))
                    .bind(call_sid)
                    .fetch_optional(&mut *self.0)
                    .await?
                    .map(MissedCallRow::into_missed_call)
                    .transpose()
                }

                async fn attach_recording(
                    &mut self,
                    call_sid: &str,
                    recording_sid: &str,
                    url: &str,
                    secs: Option<i32>,
                ) -> Result<bool> {
                    Ok(sqlx::query(ATTACH_RECORDING)
                        .bind(call_sid)
                        .bind(recording_sid)
                        .bind(url)
                        .bind(secs)
                        .execute(&mut *self.0)
                        .await?
                        .rows_affected()
                        == 1)
                }

                async fn claim_due_alert(
                    &mut self,
                    now: DateTime<Utc>,
                ) -> Result<Option<MissedCall>> {
                    sqlx::query_as::<_, MissedCallRow>(concat!(
                        missed_call_columns!(),
                        "WHERE m.alert_due_at IS NOT NULL AND m.alert_due_at <= $1 \
                         ORDER BY m.alert_due_at, m.call_sid LIMIT 1",
                        $skip_locked
                    ))
                    .bind(now)
                    .fetch_optional(&mut *self.0)
                    .await?
                    .map(MissedCallRow::into_missed_call)
                    .transpose()
                }

                async fn mark_alerted(
                    &mut self,
                    call_sid: &str,
                    alert: &str,
                    now: DateTime<Utc>,
                ) -> Result<()> {
                    sqlx::query(MARK_ALERTED)
                        .bind(call_sid)
                        .bind(now)
                        .bind(alert)
                        .execute(&mut *self.0)
                        .await?;
                    Ok(())
                }

                async fn queue_message(&mut self, msg: &NewMessage<'_>) -> Result<i64> {
                    let (kind, to_email, subject) = match msg.email {
                        Some((address, subject)) => ("email", Some(address), Some(subject)),
                        None => ("sms", None, None),
                    };
                    let (id,): (i64,) = sqlx::query_as(QUEUE_MESSAGE)
                        .bind(msg.owner_id.as_str())
                        .bind(msg.to.as_str())
                        .bind(msg.body)
                        .bind(msg.created_at)
                        .bind(kind)
                        .bind(msg.from.map(|f| f.as_str()))
                        .bind(to_email)
                        .bind(subject)
                        .bind(msg.topic)
                        .fetch_one(&mut *self.0)
                        .await?;
                    self.2.note();
                    Ok(id)
                }

                async fn missed_calls_since(
                    &mut self,
                    owner_id: &OwnerId,
                    since: DateTime<Utc>,
                ) -> Result<i64> {
                    let (n,): (i64,) = sqlx::query_as(COUNT_SINCE)
                        .bind(owner_id.as_str())
                        .bind(since)
                        .fetch_one(&mut *self.0)
                        .await?;
                    Ok(n)
                }

                async fn recent_missed_calls(
                    &mut self,
                    owner_id: &OwnerId,
                    limit: i64,
                ) -> Result<Vec<MissedCall>> {
                    sqlx::query_as::<_, MissedCallRow>(concat!(
                        missed_call_columns!(),
                        "WHERE m.owner_id = $1 ORDER BY m.at DESC, m.call_sid DESC LIMIT $2"
                    ))
                    .bind(owner_id.as_str())
                    .bind(limit)
                    .fetch_all(&mut *self.0)
                    .await?
                    .into_iter()
                    .map(MissedCallRow::into_missed_call)
                    .collect()
                }

                async fn note_usage_alert(
                    &mut self,
                    owner_id: &OwnerId,
                    period_start: DateTime<Utc>,
                    percent: i32,
                    now: DateTime<Utc>,
                ) -> Result<bool> {
                    Ok(sqlx::query(NOTE_USAGE_ALERT)
                        .bind(owner_id.as_str())
                        .bind(period_start)
                        .bind(percent)
                        .bind(now)
                        .execute(&mut *self.0)
                        .await?
                        .rows_affected()
                        == 1)
                }

                async fn note_text_back(
                    &mut self,
                    owner_id: &OwnerId,
                    caller: &PhoneNumber,
                    day: &str,
                    now: DateTime<Utc>,
                ) -> Result<bool> {
                    Ok(sqlx::query(NOTE_TEXT_BACK)
                        .bind(owner_id.as_str())
                        .bind(caller.as_str())
                        .bind(day)
                        .bind(now)
                        .execute(&mut *self.0)
                        .await?
                        .rows_affected()
                        == 1)
                }

                async fn set_alerts_paused(
                    &mut self,
                    owner_id: &OwnerId,
                    paused: bool,
                    now: DateTime<Utc>,
                ) -> Result<()> {
                    let query = if paused {
                        sqlx::query(PAUSE).bind(owner_id.as_str()).bind(now)
                    } else {
                        sqlx::query(RESUME).bind(owner_id.as_str())
                    };
                    query.execute(&mut *self.0).await?;
                    Ok(())
                }

                async fn alerts_paused(&mut self, owner_id: &OwnerId) -> Result<bool> {
                    let (n,): (i64,) = sqlx::query_as(IS_PAUSED)
                        .bind(owner_id.as_str())
                        .fetch_one(&mut *self.0)
                        .await?;
                    Ok(n > 0)
                }

                async fn set_customer_opted_out(
                    &mut self,
                    business_number: &PhoneNumber,
                    customer: &PhoneNumber,
                    opted_out: bool,
                    now: DateTime<Utc>,
                ) -> Result<()> {
                    let query = if opted_out {
                        sqlx::query(CUSTOMER_OPT_OUT)
                            .bind(business_number.as_str())
                            .bind(customer.as_str())
                            .bind(now)
                    } else {
                        sqlx::query(CUSTOMER_OPT_IN)
                            .bind(business_number.as_str())
                            .bind(customer.as_str())
                    };
                    query.execute(&mut *self.0).await?;
                    Ok(())
                }

                async fn customer_opted_out(
                    &mut self,
                    business_number: &PhoneNumber,
                    customer: &PhoneNumber,
                ) -> Result<bool> {
                    let (n,): (i64,) = sqlx::query_as(IS_CUSTOMER_OPTED_OUT)
                        .bind(business_number.as_str())
                        .bind(customer.as_str())
                        .fetch_one(&mut *self.0)
                        .await?;
                    Ok(n > 0)
                }
            }
        };
    };
}
pub(super) use impl_after_tx;
