//! The writes of one event, held by its transaction until it commits and then sent together.
//!
//! An event reads what it needs, decides in the conversation, and only then writes: the owner's
//! row, their state history, texts and calls for the outbox, Stripe links, their reminder timer,
//! the costs it ran up, and the event's own outcome (the answer to a text or call, a webhook
//! event's status). Held here, those go to the
//! database at commit in one statement on PostgreSQL (a data-modifying CTE), so an event costs
//! the same round trips however much it changed. SQLite has no data-modifying CTEs: there they
//! are the same statements one after another in the same transaction, which costs no round trips
//! (the database is in-process).
//!
//! A read of an owner, a timer or the ledger inside the transaction first sends what is held, so
//! it sees the transaction's own writes. A write that was refused (an owner, text or event that does not
//! exist) fails the commit, and nothing of the event is written.

use chrono::{DateTime, Utc};

use super::ledger::NewCost;
use super::reminders::{PUT_TIMER, ReminderTimer};
use super::{EventOutcome, NewOutbound, Owner, StripeKind, Transition};
use crate::domain::OwnerId;

/// What an event wrote, in the order it wrote it.
#[derive(Debug, Default)]
pub(super) struct Writes {
    /// Each owner's row as last saved (a second save of one owner replaces the first).
    pub(super) owners: Vec<Owner>,
    pub(super) transitions: Vec<HistoryWrite>,
    pub(super) outbound: Vec<OutboundWrite>,
    pub(super) links: Vec<LinkWrite>,
    pub(super) inbound: Vec<InboundWrite>,
    pub(super) calls: Vec<CallWrite>,
    pub(super) events: Vec<EventWrite>,
    /// Each owner's reminder timer as last put (one statement may not upsert a row twice).
    pub(super) timers: Vec<ReminderTimer>,
    /// Cost-ledger rows, as `ledger::cost_rows` writes them.
    pub(super) costs: Vec<serde_json::Value>,
    /// Not a write: an owner's reminder timer as the event's first statement read it (locked),
    /// kept so the event need not read it again. Sending the held writes forgets it (they may
    /// include that timer), and the timer is then read from the database.
    pub(super) timer_read: Option<(OwnerId, Option<ReminderTimer>)>,
}

#[derive(Debug)]
pub(super) struct HistoryWrite {
    pub(super) owner_id: String,
    pub(super) from: &'static str,
    pub(super) to: &'static str,
    pub(super) cause: String,
    pub(super) at: DateTime<Utc>,
}

#[derive(Debug)]
pub(super) struct OutboundWrite {
    pub(super) owner_id: String,
    pub(super) to: String,
    pub(super) body: String,
    pub(super) at: DateTime<Utc>,
    /// `sms` or `verify_call`.
    pub(super) kind: &'static str,
}

#[derive(Debug)]
pub(super) struct LinkWrite {
    pub(super) kind: &'static str,
    pub(super) stripe_id: String,
    pub(super) owner_id: String,
    pub(super) at: DateTime<Utc>,
}

/// The answer to a claimed text.
#[derive(Debug)]
pub(super) struct InboundWrite {
    pub(super) message_sid: String,
    pub(super) owner_id: Option<String>,
    pub(super) response: String,
}

/// What a claimed call turned out to be, and the answer to it.
#[derive(Debug)]
pub(super) struct CallWrite {
    pub(super) call_sid: String,
    pub(super) owner_id: Option<String>,
    pub(super) is_test_call: bool,
    pub(super) response: String,
}

/// A provider event's outcome.
#[derive(Debug)]
pub(super) struct EventWrite {
    pub(super) provider: String,
    pub(super) event_id: String,
    pub(super) status: &'static str,
    pub(super) error: Option<String>,
    pub(super) at: DateTime<Utc>,
}

impl Writes {
    pub(super) fn is_empty(&self) -> bool {
        self.owners.is_empty()
            && self.transitions.is_empty()
            && self.outbound.is_empty()
            && self.links.is_empty()
            && self.inbound.is_empty()
            && self.calls.is_empty()
            && self.events.is_empty()
            && self.timers.is_empty()
            && self.costs.is_empty()
    }

    pub(super) fn timer_read(&mut self, owner_id: &OwnerId, timer: Option<ReminderTimer>) {
        self.timer_read = Some((owner_id.clone(), timer));
    }

    /// The timer read for `owner_id` with the event's first statement, unless a write of it is
    /// held since (asked once: a second ask reads the database).
    pub(super) fn take_timer_read(&mut self, owner_id: &OwnerId) -> Option<Option<ReminderTimer>> {
        if self.timers.iter().any(|t| &t.owner_id == owner_id) {
            return None;
        }
        match self.timer_read.take() {
            Some((read_for, timer)) if &read_for == owner_id => Some(timer),
            _ => None,
        }
    }

    pub(super) fn timer(&mut self, timer: &ReminderTimer) {
        match self
            .timers
            .iter_mut()
            .find(|t| t.owner_id == timer.owner_id)
        {
            Some(held) => *held = timer.clone(),
            None => self.timers.push(timer.clone()),
        }
    }

    pub(super) fn costs(&mut self, costs: &[NewCost<'_>]) {
        if let serde_json::Value::Array(rows) = super::ledger::cost_rows(costs) {
            self.costs.extend(rows);
        }
    }

    pub(super) fn owner(&mut self, owner: &Owner) {
        match self.owners.iter_mut().find(|o| o.id == owner.id) {
            Some(held) => *held = owner.clone(),
            None => self.owners.push(owner.clone()),
        }
    }

    pub(super) fn transition(&mut self, t: &Transition<'_>) {
        self.transitions.push(HistoryWrite {
            owner_id: t.owner_id.as_str().to_owned(),
            from: t.from.as_str(),
            to: t.to.as_str(),
            cause: t.cause.to_owned(),
            at: t.at,
        });
    }

    pub(super) fn outbound(&mut self, msg: &NewOutbound<'_>, kind: &'static str) {
        self.outbound.push(OutboundWrite {
            owner_id: msg.owner_id.as_str().to_owned(),
            to: msg.to.as_str().to_owned(),
            body: msg.body.to_owned(),
            at: msg.created_at,
            kind,
        });
    }

    pub(super) fn link(
        &mut self,
        owner_id: &str,
        kind: StripeKind,
        stripe_id: &str,
        at: DateTime<Utc>,
    ) {
        self.links.push(LinkWrite {
            kind: kind.as_str(),
            stripe_id: stripe_id.to_owned(),
            owner_id: owner_id.to_owned(),
            at,
        });
    }

    pub(super) fn inbound(&mut self, message_sid: &str, owner_id: Option<&str>, response: &str) {
        self.inbound.push(InboundWrite {
            message_sid: message_sid.to_owned(),
            owner_id: owner_id.map(str::to_owned),
            response: response.to_owned(),
        });
    }

    pub(super) fn call(
        &mut self,
        call_sid: &str,
        owner_id: Option<&str>,
        is_test_call: bool,
        response: &str,
    ) {
        self.calls.push(CallWrite {
            call_sid: call_sid.to_owned(),
            owner_id: owner_id.map(str::to_owned),
            is_test_call,
            response: response.to_owned(),
        });
    }

    pub(super) fn event(
        &mut self,
        provider: &str,
        event_id: &str,
        outcome: EventOutcome,
        error: Option<&str>,
        at: DateTime<Utc>,
    ) {
        self.events.push(EventWrite {
            provider: provider.to_owned(),
            event_id: event_id.to_owned(),
            status: outcome.as_str(),
            error: error.map(str::to_owned),
            at,
        });
    }
}

/// Checks that every held update found its row.
pub(super) fn check_found(what: &'static str, expected: usize, found: i64) -> super::Result<()> {
    if found == expected as i64 {
        Ok(())
    } else {
        Err(super::StoreError::NotFound {
            what,
            expected,
            found,
        })
    }
}

// The held writes one at a time, as SQLite runs them (PostgreSQL sends them as one statement:
// `postgres::write_event`).

pub(super) const SAVE_OWNER: &str = "UPDATE owners SET locale = $2, state = $3, gate = $4, \
     business_type = $5, location = $6, business_name = $7, owner_name = $8, notify = $9, \
     phone_type = $10, misses = $11, opted_out = $12, payment_active = $13, paid_at = $14, \
     twilio_number = $15, waitlisted_at = $16, verify_started_at = $17, updated_at = $18 \
     WHERE id = $1";

pub(super) const RECORD_TRANSITION: &str = "INSERT INTO state_history \
     (owner_id, from_state, to_state, cause, at) VALUES ($1, $2, $3, $4, $5)";

pub(super) const QUEUE_OUTBOUND: &str = "INSERT INTO outbound_messages (owner_id, to_addr, body, \
     status, attempts, next_attempt_at, created_at, updated_at, kind) \
     VALUES ($1, $2, $3, 'pending', 0, $4, $4, $4, $5)";

/// First link wins: a Stripe object never moves to another owner.
pub(super) const LINK_STRIPE: &str = "INSERT INTO stripe_links (kind, stripe_id, owner_id, \
     created_at) VALUES ($1, $2, $3, $4) ON CONFLICT (kind, stripe_id) DO NOTHING";

pub(super) const FINISH_INBOUND: &str =
    "UPDATE inbound_messages SET owner_id = $2, response = $3 WHERE message_sid = $1";

pub(super) const FINISH_CALL: &str =
    "UPDATE calls SET owner_id = $2, is_test_call = $3, response = $4 WHERE call_sid = $1";

pub(super) const EVENT_OUTCOME: &str = "UPDATE webhook_events \
     SET status = $3, error = $4, processed_at = $5 WHERE provider = $1 AND event_id = $2";

/// Runs the held writes on SQLite, statement by statement, in their transaction.
pub(super) async fn run_on_sqlite(
    conn: &mut sqlx::SqliteConnection,
    w: Writes,
) -> super::Result<()> {
    let mut owners = 0;
    for o in &w.owners {
        owners += sqlx::query(SAVE_OWNER)
            .bind(o.id.as_str())
            .bind(o.locale.tag())
            .bind(o.state.as_str())
            .bind(o.gate.map(|g| g.as_str()))
            .bind(o.business_type.as_deref())
            .bind(o.location.as_deref())
            .bind(o.business_name.as_deref())
            .bind(o.owner_name.as_deref())
            .bind(o.notify.as_ref().map(|n| n.to_stored()))
            .bind(o.phone_type.map(|p| p.as_str()))
            .bind(o.misses)
            .bind(o.opted_out)
            .bind(o.payment_active)
            .bind(o.paid_at)
            .bind(o.twilio_number.as_ref().map(|n| n.as_str()))
            .bind(o.waitlisted_at)
            .bind(o.verify_started_at)
            .bind(o.updated_at)
            .execute(&mut *conn)
            .await?
            .rows_affected();
    }
    check_found("owners", w.owners.len(), owners as i64)?;
    for t in &w.transitions {
        sqlx::query(RECORD_TRANSITION)
            .bind(&t.owner_id)
            .bind(t.from)
            .bind(t.to)
            .bind(&t.cause)
            .bind(t.at)
            .execute(&mut *conn)
            .await?;
    }
    for m in &w.outbound {
        sqlx::query(QUEUE_OUTBOUND)
            .bind(&m.owner_id)
            .bind(&m.to)
            .bind(&m.body)
            .bind(m.at)
            .bind(m.kind)
            .execute(&mut *conn)
            .await?;
    }
    for l in &w.links {
        sqlx::query(LINK_STRIPE)
            .bind(l.kind)
            .bind(&l.stripe_id)
            .bind(&l.owner_id)
            .bind(l.at)
            .execute(&mut *conn)
            .await?;
    }
    let mut inbound = 0;
    for i in &w.inbound {
        inbound += sqlx::query(FINISH_INBOUND)
            .bind(&i.message_sid)
            .bind(i.owner_id.as_deref())
            .bind(&i.response)
            .execute(&mut *conn)
            .await?
            .rows_affected();
    }
    check_found("inbound_messages", w.inbound.len(), inbound as i64)?;
    for c in &w.calls {
        sqlx::query(FINISH_CALL)
            .bind(&c.call_sid)
            .bind(c.owner_id.as_deref())
            .bind(c.is_test_call)
            .bind(&c.response)
            .execute(&mut *conn)
            .await?;
    }
    for t in &w.timers {
        sqlx::query(PUT_TIMER)
            .bind(t.owner_id.as_str())
            .bind(t.state.as_str())
            .bind(t.sent)
            .bind(t.anchor_at)
            .bind(t.due_at)
            .bind(t.expired_at)
            .execute(&mut *conn)
            .await?;
    }
    if !w.costs.is_empty() {
        sqlx::query(super::ledger::sqlite::RECORD_COSTS)
            .bind(serde_json::Value::Array(w.costs))
            .execute(&mut *conn)
            .await?;
    }
    let mut events = 0;
    for e in &w.events {
        events += sqlx::query(EVENT_OUTCOME)
            .bind(&e.provider)
            .bind(&e.event_id)
            .bind(e.status)
            .bind(e.error.as_deref())
            .bind(e.at)
            .execute(&mut *conn)
            .await?
            .rows_affected();
    }
    check_found("webhook_events", w.events.len(), events as i64)
}
