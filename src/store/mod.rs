//! Storage behind one seam: PostgreSQL in production, SQLite as the embedded default.
//!
//! Every inbound event runs in one [`Tx`]. On PostgreSQL, rows are locked with `FOR UPDATE` (and the
//! pool and outbox are claimed with `SKIP LOCKED`) so many replicas can share one database; on SQLite
//! the transaction starts with `BEGIN IMMEDIATE`, which takes the single write lock up front.

pub mod admin;
pub mod after;
mod calls;
mod common;
pub mod console;
mod inbound;
pub mod ledger;
mod migrations;
pub mod outbox;
mod owners;
mod payments;
mod pool;
mod pool_levels;
pub mod postgres;
pub mod reminders;
pub mod replenish;
mod row;
pub mod sqlite;
mod write;

use std::future::Future;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::conversation::{Gate, StateName};
use crate::domain::{Country, Locale, Notify, OwnerId, PhoneNumber, PhoneType};

pub use outbox::{ClaimedOutbound, OutboundOutcome, OutboundResult};
pub use postgres::PgStore;
pub use sqlite::{SqliteConn, SqliteStore};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored value no longer parses (hand-edited row, or a bug): named so ops can find it.
    #[error("corrupt row in {table}: {detail}")]
    Corrupt { table: &'static str, detail: String },
    /// An event wrote to a row that does not exist (an unknown owner, an unclaimed message): a
    /// bug, and the whole event is rolled back.
    #[error("{what}: {expected} rows to update, {found} found")]
    NotFound {
        what: &'static str,
        expected: usize,
        found: i64,
    },
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// An owner and everything the conversation knows about them.
#[derive(Debug, Clone, PartialEq)]
pub struct Owner {
    pub id: OwnerId,
    pub owner_phone: PhoneNumber,
    pub locale: Locale,
    pub state: StateName,
    pub gate: Option<Gate>,
    pub business_type: Option<String>,
    pub location: Option<String>,
    pub business_name: Option<String>,
    pub owner_name: Option<String>,
    pub notify: Option<Notify>,
    pub phone_type: Option<PhoneType>,
    /// Answers in a row that did not fit the current question.
    pub misses: i32,
    pub opted_out: bool,
    pub payment_active: bool,
    pub paid_at: Option<DateTime<Utc>>,
    pub twilio_number: Option<PhoneNumber>,
    /// Set while the owner waits for a number (gate `awaiting_number`): the waitlist's order.
    pub waitlisted_at: Option<DateTime<Utc>>,
    /// When the current forwarding test began (S8); cleared when it is proved or times out.
    pub verify_started_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Owner {
    /// A new owner at the first question.
    pub fn new(id: OwnerId, owner_phone: PhoneNumber, now: DateTime<Utc>) -> Self {
        Self {
            id,
            locale: Locale::for_phone(&owner_phone),
            owner_phone,
            state: StateName::S1BusinessTypeLocation,
            gate: None,
            business_type: None,
            location: None,
            business_name: None,
            owner_name: None,
            notify: None,
            phone_type: None,
            misses: 0,
            opted_out: false,
            payment_active: false,
            paid_at: None,
            twilio_number: None,
            waitlisted_at: None,
            verify_started_at: None,
            created_at: now,
            updated_at: now,
        }
    }

    pub fn country(&self) -> Country {
        self.owner_phone.country()
    }
}

/// What became of claiming an inbound provider id (`MessageSid`, `CallSid`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// First delivery: go ahead and process it.
    Fresh,
    /// Seen before: answer with exactly what was answered then.
    Duplicate { response: String },
}

/// An inbound SMS as received, before it is processed.
#[derive(Debug, Clone)]
pub struct NewInbound<'a> {
    pub message_sid: &'a str,
    /// The raw `From`: usually E.164, but Twilio passes other caller ids through.
    pub from: &'a str,
    pub to: &'a str,
    pub body: &'a str,
    pub received_at: DateTime<Utc>,
}

/// One step of an owner's state history.
#[derive(Debug, Clone)]
pub struct Transition<'a> {
    pub owner_id: &'a OwnerId,
    pub from: StateName,
    pub to: StateName,
    /// What caused it: `sms`, `payment_confirmed`, `number_allocated`, `test_call`, ...
    pub cause: &'a str,
    pub at: DateTime<Utc>,
}

/// A text the server sends first (not a TwiML reply), written in the same transaction as its cause.
#[derive(Debug, Clone)]
pub struct NewOutbound<'a> {
    pub owner_id: &'a OwnerId,
    pub to: &'a PhoneNumber,
    pub body: &'a str,
    pub created_at: DateTime<Utc>,
}

/// Delivery status of an outbound message, as Twilio reports it plus our own outbox states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OutboundStatus {
    /// Waiting in the outbox.
    Pending,
    /// Claimed by a worker and being sent.
    Sending,
    /// Dev mode: logged instead of sent.
    Simulated,
    Queued,
    Sent,
    Delivered,
    Undelivered,
    Failed,
    /// The owner had opted out: never sent.
    Suppressed,
}

impl OutboundStatus {
    /// Whether a status callback may move a message from this status to `to`: never away from a final
    /// status, and never backwards along pending → sending → queued → sent → final (Twilio's
    /// callbacks can arrive out of order). Repeating the current status is allowed.
    pub fn may_move_to(self, to: OutboundStatus) -> bool {
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
        !self.is_final() && rank(to) >= rank(self)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            OutboundStatus::Pending => "pending",
            OutboundStatus::Sending => "sending",
            OutboundStatus::Simulated => "simulated",
            OutboundStatus::Queued => "queued",
            OutboundStatus::Sent => "sent",
            OutboundStatus::Delivered => "delivered",
            OutboundStatus::Undelivered => "undelivered",
            OutboundStatus::Failed => "failed",
            OutboundStatus::Suppressed => "suppressed",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        [
            OutboundStatus::Pending,
            OutboundStatus::Sending,
            OutboundStatus::Simulated,
            OutboundStatus::Queued,
            OutboundStatus::Sent,
            OutboundStatus::Delivered,
            OutboundStatus::Undelivered,
            OutboundStatus::Failed,
            OutboundStatus::Suppressed,
        ]
        .into_iter()
        .find(|s| s.as_str() == raw)
    }

    /// A final status is never replaced by a later callback.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            OutboundStatus::Delivered
                | OutboundStatus::Undelivered
                | OutboundStatus::Failed
                | OutboundStatus::Simulated
                | OutboundStatus::Suppressed
        )
    }
}

/// What an outbox entry sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OutboundKind {
    Sms,
    VerifyCall,
    /// An email (a missed-call alert to an owner who chose email): sent over SMTP.
    Email,
}

/// A call as Twilio's voice webhook reports it.
#[derive(Debug, Clone)]
pub struct NewCall<'a> {
    pub call_sid: &'a str,
    pub direction: &'a str,
    pub from: &'a str,
    pub to: &'a str,
    pub forwarded_from: Option<&'a str>,
    pub status: &'a str,
    pub at: DateTime<Utc>,
}

/// A message in the outbox, as a worker sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboundMessage {
    pub id: i64,
    pub owner_id: OwnerId,
    pub to: PhoneNumber,
    pub body: String,
    pub status: OutboundStatus,
    pub attempts: i32,
    pub twilio_sid: Option<String>,
    pub last_error: Option<String>,
    /// An earlier attempt's outcome is unknown: ask Twilio before sending again.
    pub needs_reconcile: bool,
    /// A text, or a forwarding verification call (`body` is then the call's TwiML).
    pub kind: OutboundKind,
    /// When the latest attempt was claimed; while `needs_reconcile`, when the first attempt whose
    /// outcome is unknown was, so the search for it covers every attempt since.
    pub attempted_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    /// The number a text goes from when it is not the onboarding number: an owner's own business
    /// number (alerts, relayed texts, caller text-backs).
    pub from: Option<PhoneNumber>,
    /// For an email: the address (`to` is then the owner's phone, whom it concerns).
    pub to_email: Option<String>,
    /// For an email: its subject line.
    pub subject: Option<String>,
    /// What the message is for (`missed_call_alert`, `text_relay`, `caller_text_back`,
    /// `usage_alert`); `None` for the onboarding conversation's texts.
    pub topic: Option<String>,
}

/// Which owner an event's first statement locks, by what its webhook names.
#[derive(Debug, Clone, Copy)]
pub enum OwnerKey<'a> {
    /// The owner texting from this phone.
    Phone(&'a PhoneNumber),
    /// The owner holding this pool number.
    Number(&'a PhoneNumber),
}

/// What allocation gave an owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Allocation {
    Allocated(PhoneNumber),
    /// The owner already had this number: allocation is idempotent.
    AlreadyAssigned(PhoneNumber),
    /// The owner's own number, back from quarantine: they held it until their payment was
    /// revoked, and their call forwarding still points at it.
    Returned(PhoneNumber),
    PoolEmpty,
}

/// A number to put in the pool.
#[derive(Debug, Clone)]
pub struct NewPoolNumber {
    pub e164: PhoneNumber,
    pub twilio_sid: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct PoolStats {
    pub total: i64,
    pub available: i64,
    pub assigned: i64,
    pub quarantined: i64,
}

/// What became of a Stripe (or other provider's) webhook event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventOutcome {
    Processed,
    Ignored,
    Failed,
}

impl EventOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            EventOutcome::Processed => "processed",
            EventOutcome::Ignored => "ignored",
            EventOutcome::Failed => "failed",
        }
    }
}

/// A provider's webhook event as first stored.
#[derive(Debug, Clone)]
pub struct NewWebhookEvent<'a> {
    pub provider: &'a str,
    pub event_id: &'a str,
    pub event_type: &'a str,
    pub payload: &'a serde_json::Value,
    pub received_at: DateTime<Utc>,
}

/// The database behind the server. Cloning is cheap (a pool handle). The admin API's reads
/// ([`admin::AdminReads`]) and the console's reads and writes ([`console::ConsoleStore`]) come with it.
pub trait Store: Clone + Send + Sync + 'static + admin::AdminReads + console::ConsoleStore {
    type Tx: Tx;

    /// Applies this back end's migrations.
    fn migrate(&self) -> impl Future<Output = Result<()>> + Send;

    /// Starts the one transaction of an inbound event.
    fn begin(&self) -> impl Future<Output = Result<Self::Tx>> + Send;

    /// Cheap round trip for readiness checks.
    fn ping(&self) -> impl Future<Output = Result<()>> + Send;

    /// Rung when one of this store's transactions that queued a message commits.
    fn outbox_bell(&self) -> &OutboxBell;

    fn owner_by_phone(
        &self,
        phone: &PhoneNumber,
    ) -> impl Future<Output = Result<Option<Owner>>> + Send;

    fn pool_stats(&self) -> impl Future<Output = Result<PoolStats>> + Send;

    /// AVAILABLE numbers of a country, counted up to `cap` only: cheap on a pool of millions.
    fn available_numbers(
        &self,
        country: Country,
        cap: i64,
    ) -> impl Future<Output = Result<i64>> + Send;

    /// How many owners are in each state (states with none are left out).
    fn owners_by_state(&self) -> impl Future<Output = Result<Vec<(String, i64)>>> + Send;

    /// The newest outbox message's id (0 for none): a bookmark for [`Store::outbound_after`].
    fn latest_outbound_id(&self) -> impl Future<Output = Result<i64>> + Send;

    /// Outbox messages written after the bookmark, oldest first.
    fn outbound_after(&self, id: i64) -> impl Future<Output = Result<Vec<OutboundMessage>>> + Send;
}

/// Rings this process's outbox worker when a transaction that queued a message commits, so the
/// message goes out at once rather than at the worker's next look (up to its poll interval
/// later). Other replicas' workers find it at their own next look: the database stays the only
/// queue, and a ring is only a hint to look now.
#[derive(Debug, Clone, Default)]
pub struct OutboxBell(std::sync::Arc<tokio::sync::Notify>);

impl OutboxBell {
    /// Waits for the next ring. A ring while nobody waits is kept for the next wait, so one that
    /// comes while the worker is busy is not lost.
    pub async fn rung(&self) {
        self.0.notified().await
    }

    pub(crate) fn ring(&self) {
        self.0.notify_one()
    }
}

/// A transaction's hold on its store's [`OutboxBell`]: noted when it queues a message, rung once
/// it commits (never on rollback).
#[derive(Debug)]
pub(crate) struct Queued {
    bell: OutboxBell,
    any: bool,
}

impl Queued {
    pub(crate) fn new(bell: &OutboxBell) -> Queued {
        Queued {
            bell: bell.clone(),
            any: false,
        }
    }

    pub(crate) fn note(&mut self) {
        self.any = true;
    }

    pub(crate) fn committed(self) {
        if self.any {
            self.bell.ring();
        }
    }
}

/// One transaction. Dropped without [`Tx::commit`], it rolls back.
///
/// An event's writes (marked *held* below) are held until commit and then sent together: one
/// statement on PostgreSQL (see `store/write.rs`). A held write that finds no row to change fails
/// the commit.
pub trait Tx: Send + Sized + reminders::ReminderTx + ledger::LedgerTx + after::AfterTx {
    /// Sends the held writes, then commits.
    fn commit(self) -> impl Future<Output = Result<()>> + Send;

    // --- idempotency -------------------------------------------------------------------------
    /// Claims a `MessageSid`. A concurrent claim of the same sid waits for this transaction.
    fn claim_inbound(&mut self, msg: &NewInbound<'_>)
    -> impl Future<Output = Result<Claim>> + Send;

    /// Claims a `MessageSid` and locks the owner `owner` names, if any: one statement on
    /// PostgreSQL, the read an event starts with. A retry's owner is locked too (and let go at
    /// its commit).
    fn claim_inbound_locking(
        &mut self,
        msg: &NewInbound<'_>,
        owner: OwnerKey<'_>,
    ) -> impl Future<Output = Result<(Claim, Option<Owner>)>> + Send;

    /// Records the answer to a claimed message, so a retry gets it back byte for byte. Held.
    fn finish_inbound(
        &mut self,
        message_sid: &str,
        owner_id: Option<&OwnerId>,
        response: &str,
    ) -> impl Future<Output = Result<()>> + Send;

    // --- owners -----------------------------------------------------------------------------
    /// Locks the owner of `phone`, creating them from `new()` first if the phone is unknown.
    /// Returns the row and whether it was created. `new` runs only for an unknown phone, so a
    /// known owner's text draws no id.
    fn lock_or_create_owner(
        &mut self,
        phone: &PhoneNumber,
        new: impl FnOnce() -> Owner + Send,
    ) -> impl Future<Output = Result<(Owner, bool)>> + Send;

    /// [`Tx::lock_or_create_owner`] for a phone just found to have no owner: creates them from
    /// `new()` and locks the row, or, when a concurrent first text created them meanwhile,
    /// waits for it and locks theirs (then `false`).
    fn create_and_lock_owner(
        &mut self,
        phone: &PhoneNumber,
        new: impl FnOnce() -> Owner + Send,
    ) -> impl Future<Output = Result<(Owner, bool)>> + Send;

    fn lock_owner(&mut self, id: &OwnerId) -> impl Future<Output = Result<Option<Owner>>> + Send;

    /// The owner of this phone, locked.
    fn lock_owner_by_phone(
        &mut self,
        phone: &PhoneNumber,
    ) -> impl Future<Output = Result<Option<Owner>>> + Send;

    /// The owner whose allocated number this is, locked.
    fn lock_owner_by_number(
        &mut self,
        twilio_number: &PhoneNumber,
    ) -> impl Future<Output = Result<Option<Owner>>> + Send;

    /// Writes every mutable field of the owner (the id and phone never change). Held; a later
    /// save of the same owner in this transaction replaces it.
    fn save_owner(&mut self, owner: &Owner) -> impl Future<Output = Result<()>> + Send;

    /// Appends to the owner's state history. Held.
    fn record_transition(&mut self, t: &Transition<'_>) -> impl Future<Output = Result<()>> + Send;

    // --- outbox ------------------------------------------------------------------------------
    /// Puts a text in the outbox now and returns its id, for a caller that needs it (a reminder
    /// held through quiet hours).
    fn enqueue_outbound(
        &mut self,
        msg: &NewOutbound<'_>,
    ) -> impl Future<Output = Result<i64>> + Send;

    /// Puts a text in the outbox. Held.
    fn queue_outbound(&mut self, msg: &NewOutbound<'_>) -> impl Future<Output = Result<()>> + Send;

    /// Queues a forwarding verification call; `body` is the TwiML played if the owner answers.
    /// Held.
    fn enqueue_verify_call(
        &mut self,
        call: &NewOutbound<'_>,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Claims up to `limit` due messages (pending, or sending with an expired lease) for one worker:
    /// marks them `sending` with a lease until `lease_until`, increments attempts. `SKIP LOCKED` on PostgreSQL.
    fn claim_outbound(
        &mut self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<OutboundMessage>>> + Send;

    /// Claims up to `limit` due messages as [`Tx::claim_outbound`] does, in one statement that also
    /// reads what each send needs besides the message (whether its owner opted out).
    fn claim_outbound_batch(
        &mut self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<ClaimedOutbound>>> + Send;

    /// Records what became of every message of a batch, in one statement: each result as
    /// [`Tx::finish_outbound`], [`Tx::defer_outbound`] or [`Tx::mark_outbound_ambiguous`] would.
    fn record_outbound_batch(
        &mut self,
        results: &[OutboundResult],
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Records the result of a send attempt: a new status, the Twilio sid if any, an error if any,
    /// and when to try next (`Some` puts it back to pending until then).
    fn finish_outbound(
        &mut self,
        id: i64,
        status: OutboundStatus,
        twilio_sid: Option<&str>,
        error: Option<&str>,
        retry_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Extends the lease of a message this worker claimed (`attempts` as the claim returned it)
    /// just before it is sent, so a batch of slow sends never outlives its lease. False when the
    /// claim is no longer this worker's (the lease ran out, another worker took it over, or it is
    /// finished): the message must then not be sent.
    fn renew_outbound_lease(
        &mut self,
        id: i64,
        attempts: i32,
        lease_until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// Hands a claimed message back without spending an attempt: nothing was sent (a rate limit,
    /// a shutdown). Whether it needs reconciling is kept as it was.
    fn defer_outbound(
        &mut self,
        id: i64,
        attempts: i32,
        error: &str,
        retry_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Puts a message whose send may or may not have gone out back in the outbox, marked so the next
    /// attempt first asks Twilio whether it was sent.
    fn mark_outbound_ambiguous(
        &mut self,
        id: i64,
        error: &str,
        retry_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Applies a status callback by Twilio sid, never moving a message back from a final status.
    /// Returns the message's owner if the sid is known.
    fn update_outbound_status(
        &mut self,
        twilio_sid: &str,
        status: OutboundStatus,
        error_code: Option<&str>,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Option<OwnerId>>> + Send;

    // --- number pool -------------------------------------------------------------------------
    /// Gives the owner a number of its country (its area code first), idempotently: the one
    /// they hold, or their own back from quarantine, before a free one. The caller holds the
    /// owner's row lock ([`Tx::lock_owner`]), which is what makes it idempotent under races;
    /// an owner that does not exist is a database error (the pool's foreign key).
    /// `SKIP LOCKED` on PostgreSQL, so allocations for different owners never wait on each other.
    fn allocate_number(
        &mut self,
        owner_id: &OwnerId,
        country: Country,
        area_code: Option<&str>,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Allocation>> + Send;

    /// Adds numbers as AVAILABLE; numbers already in the pool are left as they are. Returns how many were new.
    fn add_numbers(
        &mut self,
        numbers: &[NewPoolNumber],
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<u64>> + Send;

    /// Moves a number to QUARANTINED until `until`, detaching its owner (which it names). With
    /// `keep_for_owner`, that owner gets it back should they ask for a number before it ends.
    fn quarantine_number(
        &mut self,
        e164: &PhoneNumber,
        until: DateTime<Utc>,
        keep_for_owner: bool,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<QuarantineOutcome>> + Send;

    /// Returns numbers whose quarantine has ended to AVAILABLE. Returns how many.
    fn end_quarantines(&mut self, now: DateTime<Utc>) -> impl Future<Output = Result<u64>> + Send;

    /// Stores whether a country's pool is below the low-water mark, with its (capped) count of
    /// available numbers. `Some(low)` when that changed since the level last stored (or none was),
    /// `None` when it did not: of replicas noting the same change, one gets `Some`.
    fn note_pool_level(
        &mut self,
        country: Country,
        low: bool,
        available: i64,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Option<bool>>> + Send;

    /// The longest-waiting owners of a country (gate `awaiting_number`), locked, first come first served.
    fn lock_waitlist(
        &mut self,
        country: Country,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<Owner>>> + Send;

    // --- calls -------------------------------------------------------------------------------
    /// Claims a `CallSid`, as [`Tx::claim_inbound`] does a `MessageSid`.
    fn claim_call(&mut self, call: &NewCall<'_>) -> impl Future<Output = Result<Claim>> + Send;

    /// [`Tx::claim_call`], and the owner holding `number` (the number called) locked: one
    /// statement on PostgreSQL, as [`Tx::claim_inbound_locking`].
    fn claim_call_locking(
        &mut self,
        call: &NewCall<'_>,
        number: &PhoneNumber,
    ) -> impl Future<Output = Result<(Claim, Option<Owner>)>> + Send;

    /// Records whose call it was, whether it was the test call, and the TwiML answered. Held.
    fn finish_call(
        &mut self,
        call_sid: &str,
        owner_id: Option<&OwnerId>,
        is_test_call: bool,
        response: &str,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Records a verification call we placed, so its status callbacks have a row to update.
    fn record_verify_call(
        &mut self,
        call_sid: &str,
        owner_id: &OwnerId,
        from: &PhoneNumber,
        to: &PhoneNumber,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Applies a call status callback in `SequenceNumber` order, never moving back from a final
    /// status. False when the call is unknown.
    fn update_call_status(
        &mut self,
        call_sid: &str,
        status: &str,
        sequence_number: Option<i32>,
        duration_secs: Option<i32>,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// Owners in S8 whose test began before `started_before` with no proof yet, locked.
    fn lock_verify_due(
        &mut self,
        started_before: DateTime<Utc>,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<Owner>>> + Send;

    // --- payments ----------------------------------------------------------------------------
    /// Remembers that a Stripe object (customer, subscription, payment) belongs to this owner;
    /// the first link wins. Held.
    fn link_stripe(
        &mut self,
        owner_id: &OwnerId,
        kind: StripeKind,
        stripe_id: &str,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<()>> + Send;

    /// The owner a Stripe object belongs to, locked.
    fn lock_owner_by_stripe(
        &mut self,
        kind: StripeKind,
        stripe_id: &str,
    ) -> impl Future<Output = Result<Option<Owner>>> + Send;

    // --- provider webhook events -------------------------------------------------------------
    /// The stored status of an event (`received`, `processed`, `ignored`, `failed`), locked.
    fn webhook_event_status(
        &mut self,
        provider: &str,
        event_id: &str,
    ) -> impl Future<Output = Result<Option<String>>> + Send;

    /// Stores an event once by (provider, id). False when it was already stored.
    fn insert_webhook_event(
        &mut self,
        event: &NewWebhookEvent<'_>,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// [`Tx::insert_webhook_event`], and the owner `owner_id` locked: one statement on
    /// PostgreSQL, the read a payment starts with. For an event stored before, the owner may
    /// come back `None` unlocked (SQLite does not look): lock them to process it again.
    fn insert_webhook_event_locking(
        &mut self,
        event: &NewWebhookEvent<'_>,
        owner_id: &OwnerId,
    ) -> impl Future<Output = Result<(bool, Option<Owner>)>> + Send;

    /// Records what became of an event. Held.
    fn set_webhook_event_outcome(
        &mut self,
        provider: &str,
        event_id: &str,
        outcome: EventOutcome,
        error: Option<&str>,
    ) -> impl Future<Output = Result<()>> + Send;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuarantineOutcome {
    NotInPool,
    Quarantined { owner_id: Option<OwnerId> },
}

/// What tests do with a transaction that the server never does.
pub trait TestTx: Tx {
    /// Rolls back now. A dropped transaction rolls back too, but only when its connection is next
    /// used: until then its row locks stay, and `SKIP LOCKED` claims elsewhere pass those rows by.
    fn rollback(self) -> impl Future<Output = Result<()>> + Send;
}

/// The Stripe objects that tie later events to an owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StripeKind {
    Customer,
    Subscription,
    PaymentIntent,
}

impl StripeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StripeKind::Customer => "customer",
            StripeKind::Subscription => "subscription",
            StripeKind::PaymentIntent => "payment_intent",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::OutboundStatus::*;

    #[test]
    fn a_status_never_moves_back() {
        assert!(Sending.may_move_to(Queued));
        assert!(Queued.may_move_to(Sent));
        assert!(Sent.may_move_to(Delivered));
        assert!(Queued.may_move_to(Failed));
        assert!(Sent.may_move_to(Sent));
        assert!(!Sent.may_move_to(Queued));
        assert!(!Delivered.may_move_to(Failed));
        assert!(!Undelivered.may_move_to(Delivered));
        assert!(!Failed.may_move_to(Sent));
        assert!(!Simulated.may_move_to(Delivered));
        assert!(!Suppressed.may_move_to(Queued));
    }
}
