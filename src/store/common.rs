//! What the two back ends share: row types and their conversion to domain types, and, through
//! [`impl_tx!`], the SQL of every transactional operation. The dialects differ only in row locks,
//! so each back end's own file keeps just connecting, migrating and beginning a transaction.

use chrono::{DateTime, Utc};

use super::row::row;
use super::{OutboundKind, OutboundMessage, OutboundStatus, Owner, PoolStats, Result, StoreError};
use crate::conversation::{Gate, StateName};
use crate::domain::{Locale, Notify, OwnerId, PhoneNumber, PhoneType, mask_phone};

/// The answer replayed for a duplicate whose first delivery recorded none.
pub(super) const EMPTY_TWIML: &str = r#"<?xml version="1.0" encoding="UTF-8"?><Response/>"#;

/// The columns of [`OwnerRow`], in a macro so `concat!` can build whole queries from it
/// (sqlx takes only `&'static str` SQL).
macro_rules! owner_columns {
    () => {
        "id, owner_phone, locale, state, gate, business_type, location, business_name, \
         owner_name, notify, phone_type, misses, opted_out, payment_active, paid_at, \
         twilio_number, waitlisted_at, verify_started_at, created_at, updated_at"
    };
}
pub(super) use owner_columns;

/// The columns of [`OutboundRow`].
macro_rules! outbound_columns {
    () => {
        "id, owner_id, to_addr, body, status, attempts, twilio_sid, last_error, needs_reconcile, \
         attempted_at, kind, created_at, from_addr, to_email, subject, topic"
    };
}
pub(super) use outbound_columns;

/// The pool number owner `$1` holds, or held until it went to quarantine (an assigned one first).
macro_rules! held_by_owner {
    () => {
        "owner_id = $1 OR (status = 'QUARANTINED' AND last_owner_id = $1) \
         ORDER BY status LIMIT 1"
    };
}
pub(super) use held_by_owner;

pub(super) const OWNER_BY_PHONE: &str = concat!(
    "SELECT ",
    owner_columns!(),
    " FROM owners WHERE owner_phone = $1"
);

pub(super) const LATEST_OUTBOUND_ID: &str = "SELECT COALESCE(MAX(id), 0) FROM outbound_messages";

pub(super) const OUTBOUND_AFTER: &str = concat!(
    "SELECT ",
    outbound_columns!(),
    " FROM outbound_messages WHERE id > $1 ORDER BY id"
);

/// Reads at most `$2` entries of the partial index on available numbers; the ORDER BY keeps the
/// planner on that index when few are left.
pub(super) const AVAILABLE_CAPPED: &str = "SELECT COUNT(*) FROM (SELECT 1 FROM pool_numbers \
     WHERE status = 'AVAILABLE' AND country = $1 ORDER BY created_at, e164 LIMIT $2) AS free";

pub(super) const OWNERS_BY_STATE: &str = "SELECT state, COUNT(*) FROM owners GROUP BY state";

pub(super) const POOL_COUNTS: &str = "SELECT status, COUNT(*) FROM pool_numbers GROUP BY status";

fn corrupt(table: &'static str, detail: String) -> StoreError {
    StoreError::Corrupt { table, detail }
}

pub(super) fn owner_id(table: &'static str, raw: String) -> Result<OwnerId> {
    OwnerId::parse(&raw)
        .ok_or_else(|| corrupt(table, format!("owner id {raw:?} is not one we issue")))
}

/// Parses a stored phone number; the detail names the row and column and masks the value.
pub(super) fn phone(table: &'static str, what: &str, raw: &str) -> Result<PhoneNumber> {
    PhoneNumber::parse(raw)
        .map_err(|_| corrupt(table, format!("{what}: {} is not E.164", mask_phone(raw))))
}

row! {
    /// An `owners` row as stored.
    pub(super) struct OwnerRow {
        id: String,
        owner_phone: String,
        locale: String,
        state: String,
        gate: Option<String>,
        business_type: Option<String>,
        location: Option<String>,
        business_name: Option<String>,
        owner_name: Option<String>,
        notify: Option<String>,
        phone_type: Option<String>,
        misses: i32,
        opted_out: bool,
        payment_active: bool,
        paid_at: Option<DateTime<Utc>>,
        twilio_number: Option<String>,
        waitlisted_at: Option<DateTime<Utc>>,
        verify_started_at: Option<DateTime<Utc>>,
        created_at: DateTime<Utc>,
        updated_at: DateTime<Utc>,
    }
}

impl OwnerRow {
    pub(super) fn into_owner(self) -> Result<Owner> {
        const T: &str = "owners";
        let id = owner_id(T, self.id)?;
        let bad = |column: &str, value: &str| {
            corrupt(
                T,
                format!("owner {id}: {column} {value:?} is not a known value"),
            )
        };
        let owner_phone = phone(T, &format!("owner {id}: owner_phone"), &self.owner_phone)?;
        let locale = Locale::from_tag(&self.locale).ok_or_else(|| bad("locale", &self.locale))?;
        let state = StateName::parse(&self.state).ok_or_else(|| bad("state", &self.state))?;
        let gate = match self.gate.as_deref() {
            Some(raw) => Some(Gate::parse(raw).ok_or_else(|| bad("gate", raw))?),
            None => None,
        };
        let phone_type = match self.phone_type.as_deref() {
            Some(raw) => Some(PhoneType::parse(raw).ok_or_else(|| bad("phone_type", raw))?),
            None => None,
        };
        let twilio_number = match self.twilio_number.as_deref() {
            Some(raw) => Some(phone(T, &format!("owner {id}: twilio_number"), raw)?),
            None => None,
        };
        Ok(Owner {
            id,
            owner_phone,
            locale,
            state,
            gate,
            business_type: self.business_type,
            location: self.location,
            business_name: self.business_name,
            owner_name: self.owner_name,
            notify: self.notify.as_deref().map(Notify::from_stored),
            phone_type,
            misses: self.misses,
            opted_out: self.opted_out,
            payment_active: self.payment_active,
            paid_at: self.paid_at,
            twilio_number,
            waitlisted_at: self.waitlisted_at,
            verify_started_at: self.verify_started_at,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

row! {
    /// An `outbound_messages` row as a worker sees it.
    pub(super) struct OutboundRow {
        id: i64,
        owner_id: String,
        to_addr: String,
        body: String,
        status: String,
        attempts: i32,
        twilio_sid: Option<String>,
        last_error: Option<String>,
        needs_reconcile: bool,
        attempted_at: Option<DateTime<Utc>>,
        kind: String,
        created_at: DateTime<Utc>,
        from_addr: Option<String>,
        to_email: Option<String>,
        subject: Option<String>,
        topic: Option<String>,
    }
}

impl OutboundRow {
    pub(super) fn into_message(self) -> Result<OutboundMessage> {
        const T: &str = "outbound_messages";
        let id = self.id;
        Ok(OutboundMessage {
            id,
            owner_id: owner_id(T, self.owner_id)?,
            to: phone(T, &format!("message {id}: to_addr"), &self.to_addr)?,
            body: self.body,
            status: outbound_status(id, &self.status)?,
            attempts: self.attempts,
            twilio_sid: self.twilio_sid,
            last_error: self.last_error,
            needs_reconcile: self.needs_reconcile,
            attempted_at: self.attempted_at,
            kind: match self.kind.as_str() {
                "sms" => OutboundKind::Sms,
                "verify_call" => OutboundKind::VerifyCall,
                "email" => OutboundKind::Email,
                other => {
                    return Err(corrupt(T, format!("message {id}: unknown kind {other:?}")));
                }
            },
            created_at: self.created_at,
            from: self
                .from_addr
                .map(|from| phone(T, &format!("message {id}: from_addr"), &from))
                .transpose()?,
            to_email: self.to_email,
            subject: self.subject,
            topic: self.topic,
        })
    }
}

pub(super) fn outbound_status(id: i64, raw: &str) -> Result<OutboundStatus> {
    OutboundStatus::parse(raw).ok_or_else(|| {
        corrupt(
            "outbound_messages",
            format!("message {id}: status {raw:?} is not a known value"),
        )
    })
}

/// Whether a status callback may move a message from `from` to `to`: never away from a final
/// status, and never backwards along pending → sending → queued → sent → final (Twilio's
/// callbacks can arrive out of order). Repeating the current status is allowed.
pub(super) fn status_may_move(from: OutboundStatus, to: OutboundStatus) -> bool {
    fn rank(status: OutboundStatus) -> u8 {
        match status {
            OutboundStatus::Pending => 0,
            OutboundStatus::Sending => 1,
            OutboundStatus::Queued => 2,
            OutboundStatus::Sent => 3,
            OutboundStatus::Simulated
            | OutboundStatus::Delivered
            | OutboundStatus::Undelivered
            | OutboundStatus::Failed
            | OutboundStatus::Suppressed => 4,
        }
    }
    !from.is_final() && rank(to) >= rank(from)
}

/// Folds the `(status, count)` rows of [`POOL_COUNTS`].
pub(super) fn pool_stats(counts: Vec<(String, i64)>) -> Result<PoolStats> {
    let mut stats = PoolStats::default();
    for (status, count) in counts {
        let slot = match status.as_str() {
            "AVAILABLE" => &mut stats.available,
            "ASSIGNED" => &mut stats.assigned,
            "QUARANTINED" => &mut stats.quarantined,
            _ => {
                return Err(corrupt(
                    "pool_numbers",
                    format!("{count} rows with status {status:?}"),
                ));
            }
        };
        *slot = count;
        stats.total += count;
    }
    Ok(stats)
}

/// The `Store` reads, the same SQL on both back ends: expands inside each back end's `impl Store`
/// (which has a `conn()` giving a connection of its own driver).
macro_rules! store_reads {
    () => {
        async fn owner_by_phone(
            &self,
            phone: &$crate::domain::PhoneNumber,
        ) -> $crate::store::Result<Option<$crate::store::Owner>> {
            use $crate::store::common::{self, OwnerRow};
            sqlx::query_as::<_, OwnerRow>(common::OWNER_BY_PHONE)
                .bind(phone.as_str())
                .fetch_optional(&mut *self.conn().await?)
                .await?
                .map(OwnerRow::into_owner)
                .transpose()
        }

        async fn pool_stats(&self) -> $crate::store::Result<$crate::store::PoolStats> {
            let counts = sqlx::query_as($crate::store::common::POOL_COUNTS)
                .fetch_all(&mut *self.conn().await?)
                .await?;
            $crate::store::common::pool_stats(counts)
        }

        async fn available_numbers(
            &self,
            country: $crate::domain::Country,
            cap: i64,
        ) -> $crate::store::Result<i64> {
            Ok(sqlx::query_scalar($crate::store::common::AVAILABLE_CAPPED)
                .bind(country.code())
                .bind(cap)
                .fetch_one(&mut *self.conn().await?)
                .await?)
        }

        async fn owners_by_state(&self) -> $crate::store::Result<Vec<(String, i64)>> {
            Ok(sqlx::query_as($crate::store::common::OWNERS_BY_STATE)
                .fetch_all(&mut *self.conn().await?)
                .await?)
        }

        async fn latest_outbound_id(&self) -> $crate::store::Result<i64> {
            Ok(
                sqlx::query_scalar($crate::store::common::LATEST_OUTBOUND_ID)
                    .fetch_one(&mut *self.conn().await?)
                    .await?,
            )
        }

        async fn outbound_after(
            &self,
            id: i64,
        ) -> $crate::store::Result<Vec<$crate::store::OutboundMessage>> {
            use $crate::store::common::{self, OutboundRow};
            let rows: Vec<OutboundRow> = sqlx::query_as(common::OUTBOUND_AFTER)
                .bind(id)
                .fetch_all(&mut *self.conn().await?)
                .await?;
            rows.into_iter().map(OutboundRow::into_message).collect()
        }
    };
}
pub(super) use store_reads;

/// Implements [`Tx`](super::Tx) for a back end's transaction type, a newtype over
/// `sqlx::Transaction<'static, DB>`. Both dialects run the same SQL but for row locks:
/// - `for_update` ends a SELECT of rows this transaction goes on to change (PostgreSQL:
///   `" FOR UPDATE"`, so concurrent transactions touching the same row queue up);
/// - `skip_locked` ends a SELECT that takes any free rows of many (PostgreSQL:
///   `" FOR UPDATE SKIP LOCKED"`, so concurrent allocations and outbox workers pass each other).
///
/// SQLite passes `""` for both: its transactions begin with `BEGIN IMMEDIATE` and so already hold
/// the database's one write lock.
macro_rules! impl_tx {
    (
        $tx:ty,
        for_update = $for_update:literal,
        skip_locked = $skip_locked:literal,
        outbox_sql = $outbox_sql:ident $(,)?
    ) => {
        // A block, so these imports don't leak into the back end's module.
        const _: () = {
            use chrono::{DateTime, Utc};
            use sqlx::types::Json;

            use $crate::domain::{OwnerId, Country, PhoneNumber};
            use $crate::store::common::{
                self, OwnerRow, OutboundRow, held_by_owner, owner_columns, outbound_columns,
            };
            use $crate::store::{
                Allocation, Claim, Owner, EventOutcome, NewInbound, NewOutbound,
                NewPoolNumber, NewWebhookEvent, OutboundMessage, OutboundStatus,
                NewCall, QuarantineOutcome, Result, StripeKind, Transition, Tx,
            };

            impl $crate::store::TestTx for $tx {
                async fn rollback(self) -> Result<()> {
                    self.0.rollback().await?;
                    Ok(())
                }
            }

            impl Tx for $tx {
                async fn commit(mut self) -> Result<()> {
                    self.flush().await?;
                    self.0.commit().await?;
                    Ok(())
                }


                // --- idempotency ---------------------------------------------------------

                async fn claim_inbound(&mut self, msg: &NewInbound<'_>) -> Result<Claim> {
                    // On PostgreSQL a concurrent claim of the same sid waits here until the
                    // first transaction ends, then sees the conflict (or, after a rollback,
                    // inserts).
                    let inserted = sqlx::query(
                        "INSERT INTO inbound_messages \
                             (message_sid, from_addr, to_addr, body, received_at) \
                         VALUES ($1, $2, $3, $4, $5) \
                         ON CONFLICT (message_sid) DO NOTHING",
                    )
                    .bind(msg.message_sid)
                    .bind(msg.from)
                    .bind(msg.to)
                    .bind(msg.body)
                    .bind(msg.received_at)
                    .execute(&mut *self.0)
                    .await?
                    .rows_affected();
                    if inserted == 1 {
                        return Ok(Claim::Fresh);
                    }
                    let response: Option<String> = sqlx::query_scalar(
                        "SELECT response FROM inbound_messages WHERE message_sid = $1",
                    )
                    .bind(msg.message_sid)
                    .fetch_one(&mut *self.0)
                    .await?;
                    let response = response.unwrap_or_else(|| common::EMPTY_TWIML.to_owned());
                    Ok(Claim::Duplicate { response })
                }

                async fn finish_inbound(
                    &mut self,
                    message_sid: &str,
                    owner_id: Option<&OwnerId>,
                    response: &str,
                ) -> Result<()> {
                    self.1.inbound(message_sid, owner_id.map(OwnerId::as_str), response);
                    Ok(())
                }

                // --- owners -------------------------------------------------------------

                async fn lock_or_create_owner(
                    &mut self,
                    phone: &PhoneNumber,
                    new: impl FnOnce() -> Owner + Send,
                ) -> Result<(Owner, bool)> {
                    self.flush().await?;
                    let lock = concat!(
                        "SELECT ",
                        owner_columns!(),
                        " FROM owners WHERE owner_phone = $1",
                        $for_update
                    );
                    // Nearly every text is from an owner we know: look before inserting.
                    if let Some(row) = sqlx::query_as::<_, OwnerRow>(lock)
                        .bind(phone.as_str())
                        .fetch_optional(&mut *self.0)
                        .await?
                    {
                        return Ok((row.into_owner()?, false));
                    }
                    let new = new();
                    debug_assert_eq!(&new.owner_phone, phone);
                    // Two first texts from one new phone: the second INSERT waits for the first
                    // transaction, then does nothing, and the SELECT finds the first one's row.
                    let created = sqlx::query(
                        "INSERT INTO owners (id, owner_phone, country, locale, state, gate, \
                             business_type, location, business_name, owner_name, notify, \
                             phone_type, misses, opted_out, payment_active, paid_at, \
                             twilio_number, waitlisted_at, verify_started_at, created_at, \
                             updated_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, \
                             $15, $16, $17, $18, $19, $20, $21) \
                         ON CONFLICT (owner_phone) DO NOTHING",
                    )
                    .bind(new.id.as_str())
                    .bind(new.owner_phone.as_str())
                    .bind(new.country().code())
                    .bind(new.locale.tag())
                    .bind(new.state.as_str())
                    .bind(new.gate.map(|g| g.as_str()))
                    .bind(new.business_type.as_deref())
                    .bind(new.location.as_deref())
                    .bind(new.business_name.as_deref())
                    .bind(new.owner_name.as_deref())
                    .bind(new.notify.as_ref().map(|n| n.to_stored()))
                    .bind(new.phone_type.map(|p| p.as_str()))
                    .bind(new.misses)
                    .bind(new.opted_out)
                    .bind(new.payment_active)
                    .bind(new.paid_at)
                    .bind(new.twilio_number.as_ref().map(PhoneNumber::as_str))
                    .bind(new.waitlisted_at)
                    .bind(new.verify_started_at)
                    .bind(new.created_at)
                    .bind(new.updated_at)
                    .execute(&mut *self.0)
                    .await?
                    .rows_affected()
                        == 1;
                    let row: OwnerRow = sqlx::query_as(lock)
                    .bind(phone.as_str())
                    .fetch_one(&mut *self.0)
                    .await?;
                    Ok((row.into_owner()?, created))
                }

                async fn lock_owner(&mut self, id: &OwnerId) -> Result<Option<Owner>> {
                    // The transaction's own writes first, so the read sees them.
                    self.flush().await?;
                    sqlx::query_as::<_, OwnerRow>(concat!(
                        "SELECT ",
                        owner_columns!(),
                        " FROM owners WHERE id = $1",
                        $for_update
                    ))
                    .bind(id.as_str())
                    .fetch_optional(&mut *self.0)
                    .await?
                    .map(OwnerRow::into_owner)
                    .transpose()
                }

                async fn lock_owner_by_number(
                    &mut self,
                    twilio_number: &PhoneNumber,
                ) -> Result<Option<Owner>> {
                    // The transaction's own writes first, so the read sees them.
                    self.flush().await?;
                    sqlx::query_as::<_, OwnerRow>(concat!(
                        "SELECT ",
                        owner_columns!(),
                        " FROM owners WHERE twilio_number = $1",
                        $for_update
                    ))
                    .bind(twilio_number.as_str())
                    .fetch_optional(&mut *self.0)
                    .await?
                    .map(OwnerRow::into_owner)
                    .transpose()
                }

                async fn save_owner(&mut self, owner: &Owner) -> Result<()> {
                    self.1.owner(owner);
                    Ok(())
                }

                async fn record_transition(&mut self, t: &Transition<'_>) -> Result<()> {
                    self.1.transition(t);
                    Ok(())
                }

                // --- outbox --------------------------------------------------------------

                async fn enqueue_outbound(&mut self, msg: &NewOutbound<'_>) -> Result<i64> {
                    let id = sqlx::query_scalar(
                        "INSERT INTO outbound_messages (owner_id, to_addr, body, status, \
                             attempts, next_attempt_at, created_at, updated_at) \
                         VALUES ($1, $2, $3, 'pending', 0, $4, $4, $4) \
                         RETURNING id",
                    )
                    .bind(msg.owner_id.as_str())
                    .bind(msg.to.as_str())
                    .bind(msg.body)
                    .bind(msg.created_at)
                    .fetch_one(&mut *self.0)
                    .await?;
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
                    let rows: Vec<OutboundRow> = sqlx::query_as(concat!(
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
                        outbound_columns!()
                    ))
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
                    let rows = sqlx::query($crate::store::outbox::$outbox_sql::CLAIM)
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
                    sqlx::query($crate::store::outbox::$outbox_sql::RECORD)
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
                    sqlx::query(
                        "UPDATE outbound_messages \
                         SET status = $2, twilio_sid = COALESCE($3, twilio_sid), \
                             last_error = $4, next_attempt_at = COALESCE($5, next_attempt_at), \
                             lease_until = NULL, needs_reconcile = FALSE, updated_at = $6 \
                         WHERE id = $1 AND status NOT IN \
                             ('delivered', 'undelivered', 'failed', 'simulated', 'suppressed')",
                    )
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
                    let renewed = sqlx::query(
                        "UPDATE outbound_messages SET lease_until = $3, updated_at = $4 \
                         WHERE id = $1 AND attempts = $2 AND status = 'sending'",
                    )
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
                    sqlx::query(
                        "UPDATE outbound_messages \
                         SET status = 'pending', attempts = attempts - 1, last_error = $3, \
                             next_attempt_at = $4, lease_until = NULL, updated_at = $5 \
                         WHERE id = $1 AND attempts = $2 AND status = 'sending'",
                    )
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
                    sqlx::query(
                        "UPDATE outbound_messages \
                         SET status = 'pending', needs_reconcile = TRUE, last_error = $2, \
                             next_attempt_at = $3, lease_until = NULL, updated_at = $4 \
                         WHERE id = $1 AND status = 'sending'",
                    )
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
                    let row: Option<(i64, String, String)> = sqlx::query_as(concat!(
                        "SELECT id, owner_id, status FROM outbound_messages \
                         WHERE twilio_sid = $1",
                        $for_update
                    ))
                    .bind(twilio_sid)
                    .fetch_optional(&mut *self.0)
                    .await?;
                    let Some((id, owner_id, current)) = row else {
                        return Ok(None);
                    };
                    if common::status_may_move(common::outbound_status(id, &current)?, status) {
                        sqlx::query(
                            "UPDATE outbound_messages \
                             SET status = $2, error_code = COALESCE($3, error_code), \
                                 updated_at = $4 \
                             WHERE id = $1",
                        )
                        .bind(id)
                        .bind(status.as_str())
                        .bind(error_code)
                        .bind(now)
                        .execute(&mut *self.0)
                        .await?;
                    }
                    Ok(Some(common::owner_id("outbound_messages", owner_id)?))
                }

                // --- number pool ---------------------------------------------------------

                async fn allocate_number(
                    &mut self,
                    owner_id: &OwnerId,
                    country: Country,
                    area_code: Option<&str>,
                    now: DateTime<Utc>,
                ) -> Result<Allocation> {
                    // Lock the owner first, so two allocations for one owner queue up rather
                    // than race to two numbers. The number they hold is read in a statement of
                    // its own: one that waited for the lock must see what the other committed,
                    // and a statement's subqueries keep the snapshot it began with.
                    let owner: Option<String> = sqlx::query_scalar(concat!(
                        "SELECT id FROM owners WHERE id = $1",
                        $for_update
                    ))
                    .bind(owner_id.as_str())
                    .fetch_optional(&mut *self.0)
                    .await?;
                    if owner.is_none() {
                        return Ok(Allocation::OwnerNotFound);
                    }
                    // The number they hold, or held until it went to quarantine: an owner who
                    // pays again gets it back.
                    let found: Option<(String, String)> = sqlx::query_as(concat!(
                        "SELECT e164, status FROM pool_numbers WHERE ",
                        held_by_owner!()
                    ))
                    .bind(owner_id.as_str())
                    .fetch_optional(&mut *self.0)
                    .await?;
                    let (held, status) = found.unzip();
                    if let Some(e164) = held {
                        let number = common::phone("pool_numbers", "e164", &e164)?;
                        if status.as_deref() != Some("QUARANTINED") {
                            return Ok(Allocation::AlreadyAssigned(number));
                        }
                        // Still theirs only if the quarantine has not ended meanwhile (the
                        // keeper may have made it AVAILABLE, and someone else taken it).
                        let returned = sqlx::query(
                            "UPDATE pool_numbers \
                             SET status = 'ASSIGNED', owner_id = $2, last_owner_id = NULL, \
                                 quarantined_until = NULL, assigned_at = $3, updated_at = $3 \
                             WHERE e164 = $1 AND status = 'QUARANTINED' AND last_owner_id = $2",
                        )
                        .bind(&e164)
                        .bind(owner_id.as_str())
                        .bind(now)
                        .execute(&mut *self.0)
                        .await?
                        .rows_affected();
                        if returned == 1 {
                            return Ok(Allocation::Returned(number));
                        }
                    }

                    // Takes the first free number of the owner's area code or, failing that, of
                    // their country, in one statement: COALESCE runs the second search only when
                    // the first finds nothing.
                    let picked: Option<String> = sqlx::query_scalar(concat!(
                        "UPDATE pool_numbers \
                         SET status = 'ASSIGNED', owner_id = $3, assigned_at = $4, updated_at = $4 \
                         WHERE e164 = COALESCE( \
                             (SELECT e164 FROM pool_numbers \
                              WHERE status = 'AVAILABLE' AND country = $1 AND area_code = $2 \
                              ORDER BY created_at, e164 LIMIT 1",
                        $skip_locked,
                        "), \
                             (SELECT e164 FROM pool_numbers \
                              WHERE status = 'AVAILABLE' AND country = $1 \
                              ORDER BY created_at, e164 LIMIT 1",
                        $skip_locked,
                        ")) RETURNING e164"
                    ))
                    .bind(country.code())
                    .bind(area_code)
                    .bind(owner_id.as_str())
                    .bind(now)
                    .fetch_optional(&mut *self.0)
                    .await?;
                    match picked {
                        Some(e164) => Ok(Allocation::Allocated(common::phone(
                            "pool_numbers",
                            "e164",
                            &e164,
                        )?)),
                        None => Ok(Allocation::PoolEmpty),
                    }
                }

                async fn add_numbers(
                    &mut self,
                    numbers: &[NewPoolNumber],
                    now: DateTime<Utc>,
                ) -> Result<u64> {
                    let mut added = 0;
                    for number in numbers {
                        added += sqlx::query(
                            "INSERT INTO pool_numbers \
                                 (e164, status, country, area_code, twilio_sid, created_at, \
                                  updated_at) \
                             VALUES ($1, 'AVAILABLE', $2, $3, $4, $5, $5) \
                             ON CONFLICT (e164) DO NOTHING",
                        )
                        .bind(number.e164.as_str())
                        .bind(number.e164.country().code())
                        .bind(number.e164.area_code())
                        .bind(number.twilio_sid.as_deref())
                        .bind(now)
                        .execute(&mut *self.0)
                        .await?
                        .rows_affected();
                    }
                    Ok(added)
                }

                async fn quarantine_number(
                    &mut self,
                    e164: &PhoneNumber,
                    until: DateTime<Utc>,
                    now: DateTime<Utc>,
                ) -> Result<QuarantineOutcome> {
                    let held: Option<Option<String>> = sqlx::query_scalar(concat!(
                        "SELECT owner_id FROM pool_numbers WHERE e164 = $1",
                        $for_update
                    ))
                    .bind(e164.as_str())
                    .fetch_optional(&mut *self.0)
                    .await?;
                    let Some(owner_id) = held else {
                        return Ok(QuarantineOutcome::NotInPool);
                    };
                    sqlx::query(
                        "UPDATE pool_numbers \
                         SET status = 'QUARANTINED', last_owner_id = COALESCE(owner_id, last_owner_id), \
                             owner_id = NULL, \
                             assigned_at = NULL, quarantined_until = $2, updated_at = $3 \
                         WHERE e164 = $1",
                    )
                    .bind(e164.as_str())
                    .bind(until)
                    .bind(now)
                    .execute(&mut *self.0)
                    .await?;
                    let owner_id = owner_id
                        .map(|id| common::owner_id("pool_numbers", id))
                        .transpose()?;
                    Ok(QuarantineOutcome::Quarantined { owner_id })
                }

                async fn note_pool_level(
                    &mut self,
                    country: Country,
                    low: bool,
                    available: i64,
                    now: DateTime<Utc>,
                ) -> Result<Option<bool>> {
                    Ok(sqlx::query_scalar($crate::store::pool_levels::NOTE_LEVEL)
                        .bind(country.code())
                        .bind(low)
                        .bind(available)
                        .bind(now)
                        .fetch_optional(&mut *self.0)
                        .await?)
                }

                async fn end_quarantines(&mut self, now: DateTime<Utc>) -> Result<u64> {
                    let ended = sqlx::query(
                        "UPDATE pool_numbers \
                         SET status = 'AVAILABLE', quarantined_until = NULL, last_owner_id = NULL, \
                             updated_at = $1 \
                         WHERE status = 'QUARANTINED' AND quarantined_until <= $1",
                    )
                    .bind(now)
                    .execute(&mut *self.0)
                    .await?
                    .rows_affected();
                    Ok(ended)
                }

                async fn lock_waitlist(&mut self, country: Country, limit: i64) -> Result<Vec<Owner>> {
                    // The transaction's own writes first, so the read sees them.
                    self.flush().await?;
                    let rows: Vec<OwnerRow> = sqlx::query_as(concat!(
                        "SELECT ",
                        owner_columns!(),
                        " FROM owners \
                         WHERE gate = 'awaiting_number' AND country = $1 \
                         ORDER BY waitlisted_at NULLS LAST, id LIMIT $2",
                        $skip_locked
                    ))
                    .bind(country.code())
                    .bind(limit)
                    .fetch_all(&mut *self.0)
                    .await?;
                    rows.into_iter().map(OwnerRow::into_owner).collect()
                }

                // --- calls --------------------------------------------------------------------

                async fn claim_call(&mut self, call: &NewCall<'_>) -> Result<Claim> {
                    let inserted = sqlx::query(
                        "INSERT INTO calls (call_sid, direction, from_addr, to_addr, \
                             forwarded_from, status, is_test_call, created_at, updated_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, FALSE, $7, $7) \
                         ON CONFLICT (call_sid) DO NOTHING",
                    )
                    .bind(call.call_sid)
                    .bind(call.direction)
                    .bind(call.from)
                    .bind(call.to)
                    .bind(call.forwarded_from)
                    .bind(call.status)
                    .bind(call.at)
                    .execute(&mut *self.0)
                    .await?
                    .rows_affected();
                    if inserted == 1 {
                        return Ok(Claim::Fresh);
                    }
                    let response: Option<String> = sqlx::query_scalar(
                        "SELECT response FROM calls WHERE call_sid = $1",
                    )
                    .bind(call.call_sid)
                    .fetch_one(&mut *self.0)
                    .await?;
                    Ok(Claim::Duplicate {
                        response: response.unwrap_or_else(|| common::EMPTY_TWIML.to_owned()),
                    })
                }

                async fn finish_call(
                    &mut self,
                    call_sid: &str,
                    owner_id: Option<&OwnerId>,
                    is_test_call: bool,
                    response: &str,
                ) -> Result<()> {
                    self.1
                        .call(call_sid, owner_id.map(OwnerId::as_str), is_test_call, response);
                    Ok(())
                }

                async fn record_verify_call(
                    &mut self,
                    call_sid: &str,
                    owner_id: &OwnerId,
                    from: &PhoneNumber,
                    to: &PhoneNumber,
                    now: DateTime<Utc>,
                ) -> Result<()> {
                    sqlx::query(
                        "INSERT INTO calls (call_sid, owner_id, direction, from_addr, to_addr, \
                             status, is_test_call, created_at, updated_at) \
                         VALUES ($1, $2, 'outbound-api', $3, $4, 'queued', TRUE, $5, $5) \
                         ON CONFLICT (call_sid) DO NOTHING",
                    )
                    .bind(call_sid)
                    .bind(owner_id.as_str())
                    .bind(from.as_str())
                    .bind(to.as_str())
                    .bind(now)
                    .execute(&mut *self.0)
                    .await?;
                    Ok(())
                }

                async fn update_call_status(
                    &mut self,
                    call_sid: &str,
                    status: &str,
                    sequence_number: Option<i32>,
                    duration_secs: Option<i32>,
                    now: DateTime<Utc>,
                ) -> Result<bool> {
                    // Callbacks arrive out of order: a lower SequenceNumber, or anything after a
                    // final status, changes nothing.
                    sqlx::query(
                        "UPDATE calls SET status = $2, \
                             sequence_number = COALESCE($3, sequence_number), \
                             duration_secs = COALESCE($4, duration_secs), updated_at = $5 \
                         WHERE call_sid = $1 \
                           AND status NOT IN ('completed', 'busy', 'failed', 'no-answer', 'canceled') \
                           AND (sequence_number IS NULL OR $3 IS NULL OR $3 > sequence_number)",
                    )
                    .bind(call_sid)
                    .bind(status)
                    .bind(sequence_number)
                    .bind(duration_secs)
                    .bind(now)
                    .execute(&mut *self.0)
                    .await?;
                    let known: Option<String> =
                        sqlx::query_scalar("SELECT call_sid FROM calls WHERE call_sid = $1")
                            .bind(call_sid)
                            .fetch_optional(&mut *self.0)
                            .await?;
                    Ok(known.is_some())
                }

                async fn lock_verify_due(
                    &mut self,
                    started_before: DateTime<Utc>,
                    limit: i64,
                ) -> Result<Vec<Owner>> {
                    // The transaction's own writes first, so the read sees them.
                    self.flush().await?;
                    let rows: Vec<OwnerRow> = sqlx::query_as(concat!(
                        "SELECT ",
                        owner_columns!(),
                        " FROM owners WHERE verify_started_at IS NOT NULL \
                             AND verify_started_at <= $1 AND state = 'S8_FWD_CONFIRMED' \
                         ORDER BY verify_started_at, id LIMIT $2",
                        $skip_locked
                    ))
                    .bind(started_before)
                    .bind(limit)
                    .fetch_all(&mut *self.0)
                    .await?;
                    rows.into_iter().map(OwnerRow::into_owner).collect()
                }

                // --- payments -----------------------------------------------------------------

                async fn link_stripe(
                    &mut self,
                    owner_id: &OwnerId,
                    kind: StripeKind,
                    stripe_id: &str,
                    now: DateTime<Utc>,
                ) -> Result<()> {
                    self.1.link(owner_id.as_str(), kind, stripe_id, now);
                    Ok(())
                }

                async fn lock_owner_by_stripe(
                    &mut self,
                    kind: StripeKind,
                    stripe_id: &str,
                ) -> Result<Option<Owner>> {
                    // The transaction's own writes first, so the read sees them.
                    self.flush().await?;
                    sqlx::query_as::<_, OwnerRow>(concat!(
                        "SELECT ",
                        owner_columns!(),
                        " FROM owners WHERE id = \
                             (SELECT owner_id FROM stripe_links WHERE kind = $1 AND stripe_id = $2)",
                        $for_update
                    ))
                    .bind(kind.as_str())
                    .bind(stripe_id)
                    .fetch_optional(&mut *self.0)
                    .await?
                    .map(OwnerRow::into_owner)
                    .transpose()
                }

                // --- provider webhook events ---------------------------------------------

                async fn insert_webhook_event(&mut self, event: &NewWebhookEvent<'_>) -> Result<bool> {
                    let inserted = sqlx::query(
                        "INSERT INTO webhook_events \
                             (provider, event_id, event_type, status, payload, received_at) \
                         VALUES ($1, $2, $3, 'received', $4, $5) \
                         ON CONFLICT (provider, event_id) DO NOTHING",
                    )
                    .bind(event.provider)
                    .bind(event.event_id)
                    .bind(event.event_type)
                    .bind(Json(event.payload))
                    .bind(event.received_at)
                    .execute(&mut *self.0)
                    .await?
                    .rows_affected();
                    Ok(inserted == 1)
                }

                async fn webhook_event_status(
                    &mut self,
                    provider: &str,
                    event_id: &str,
                ) -> Result<Option<String>> {
                    Ok(sqlx::query_scalar(concat!(
                        "SELECT status FROM webhook_events WHERE provider = $1 AND event_id = $2",
                        $for_update
                    ))
                    .bind(provider)
                    .bind(event_id)
                    .fetch_optional(&mut *self.0)
                    .await?)
                }

                async fn set_webhook_event_outcome(
                    &mut self,
                    provider: &str,
                    event_id: &str,
                    outcome: EventOutcome,
                    error: Option<&str>,
                ) -> Result<()> {
                    // The contract passes no clock here; processed_at is only for operators.
                    self.1.event(provider, event_id, outcome, error, Utc::now());
                    Ok(())
                }
            }
        };
    };
}
pub(super) use impl_tx;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_never_moves_back() {
        use OutboundStatus::*;
        assert!(status_may_move(Sending, Queued));
        assert!(status_may_move(Queued, Sent));
        assert!(status_may_move(Sent, Delivered));
        assert!(status_may_move(Queued, Failed));
        assert!(status_may_move(Sent, Sent));
        assert!(!status_may_move(Sent, Queued));
        assert!(!status_may_move(Delivered, Failed));
        assert!(!status_may_move(Undelivered, Delivered));
        assert!(!status_may_move(Failed, Sent));
        assert!(!status_may_move(Simulated, Delivered));
        assert!(!status_may_move(Suppressed, Queued));
    }

    #[test]
    fn unknown_pool_status_is_corrupt() {
        let err = pool_stats(vec![("LOST".into(), 1)]).unwrap_err();
        assert!(matches!(
            err,
            StoreError::Corrupt {
                table: "pool_numbers",
                ..
            }
        ));
        let stats = pool_stats(vec![("AVAILABLE".into(), 3), ("ASSIGNED".into(), 2)]).unwrap();
        assert_eq!((stats.total, stats.available, stats.assigned), (5, 3, 2));
    }
}
