//! The transactional outbox: texts the server sends first (not TwiML replies) are written in the
//! same transaction as the change that causes them, then sent here, by as many workers as there are
//! replicas: each claims a batch with `SKIP LOCKED` and a lease, so no two send the same message and a
//! crashed worker's messages are picked up when its lease runs out.
//!
//! # Ambiguous failures
//! Twilio's Messages API has no idempotency key: after a timeout or a 5xx the message may or may
//! not have gone out. We neither resend blindly (a double text) nor give up (a lost "your number is
//! ready"). The message is marked `needs_reconcile`; before the next attempt the worker lists the
//! messages Twilio has from our number to the owner since the first uncertain attempt, and if one
//! has the same body it adopts that message's sid instead of sending. Only when Twilio shows no such
//! message is it sent again. If the listing itself fails, nothing is sent and it is tried later.
//! A message whose lease ran out while it was `sending` is just as uncertain (its worker died or
//! stalled mid-send): whoever takes it over reconciles first.
//!
//! # Giving up
//! A message is given up only when Twilio refuses it for good (a 4xx: an invalid number, 21610
//! opted out — which also marks the owner opted out), or when it has not gone out within
//! [`OutboxSettings::give_up_after`] of being queued (`OUTBOX_GIVE_UP_AFTER`, 24 h by default).
//! An uncertain attempt is reconciled first even then: a message Twilio did send is never called
//! failed. Giving up is logged (`OUTBOUND_FAILED`, with a `reason`), counted
//! (`onboard_outbound_given_up_total`) and listed by `GET /admin/api/outbound/failed`.
//!
//! Rate limits are waited out (after `Retry-After`, capped at [`MAX_RETRY_WAIT`]) without spending
//! an attempt: a burst of 429s only delays a text. Attempts count real sends, and set the backoff.
//!
//! # Batches and leases
//! A worker claims a batch under one lease, in one statement that also reads whether each owner
//! opted out, sends to different owners together (one owner's texts one after another, in order),
//! and records what became of the whole batch in one statement. Once a quarter of the lease has
//! gone by, it renews each message's lease just before sending it, recording the results so far
//! in the same transaction (so a text that went out is on record before its lease can run out);
//! the renewal fails if the claim is no longer the worker's (another took the message over), and
//! then the worker leaves it alone. Once half the lease has gone by, the rest of the batch is
//! handed back rather than worked late.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;

use crate::clock::Clock;
use crate::domain::{OwnerId, PhoneNumber, mask_email, mask_pii};
use crate::email::{Email, EmailError, Mailer};
use crate::prices::Prices;
use crate::store::ledger::LedgerTx as _;
use crate::store::{
    ClaimedOutbound, OutboundKind, OutboundMessage, OutboundOutcome, OutboundResult,
    OutboundStatus, OutboxBell, Store, StoreError, Tx,
};
use crate::twilio::client::{SentMessage, TwilioClient};

/// A batch's messages by id: owner, recipient, body and kind, for the ledger.
type Sent = std::collections::HashMap<i64, (OwnerId, PhoneNumber, String, OutboundKind)>;

/// How far Twilio's clock may be behind ours when we ask what it sent since an attempt.
const CLOCK_SKEW: chrono::Duration = chrono::Duration::minutes(1);

/// The longest a message waits between attempts, whatever `Retry-After` says: an absurd header
/// must neither park a text for years nor overflow date arithmetic.
pub const MAX_RETRY_WAIT: Duration = Duration::from_secs(3600);

/// How messages leave: through Twilio, or (dev mode, no credentials) only into the log.
// Built once per worker: the size difference between the variants costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone)]
pub enum Sender {
    Simulated,
    Twilio {
        client: TwilioClient,
        from: PhoneNumber,
        /// Where Twilio reports delivery: `PUBLIC_URL` + `/webhooks/twilio/message-status`.
        status_callback: String,
        calls: CallSettings,
    },
}

/// How verification calls are placed.
#[derive(Debug, Clone)]
pub struct CallSettings {
    /// The caller id: a call from it arriving at the owner's new number is the proof.
    pub from: PhoneNumber,
    /// `PUBLIC_URL` + `/webhooks/twilio/call-status`.
    pub status_callback: String,
    /// Longer than the owner's no-answer divert, so the call is forwarded before Twilio gives up.
    pub ring_seconds: u32,
}

/// Messages a worker claims and sends at once when `OUTBOX_BATCH` is unset. Each batch waits for
/// its slowest send before the next is claimed, so against Twilio's ~0.2 s per request a batch of
/// 32 sends about 150 texts a second per replica (10 sent about 50); Twilio's 429s beyond its
/// concurrency limit are waited out without spending an attempt.
pub const DEFAULT_BATCH: i64 = 32;

#[derive(Debug, Clone)]
pub struct OutboxSettings {
    /// Messages claimed and sent at once (`OUTBOX_BATCH`).
    pub batch: i64,
    /// How long a claim lasts before another worker may take the message over. Longer than one
    /// send (the Twilio client's timeout), since a message's lease is renewed just before it.
    pub lease: Duration,
    /// How long after being queued a message that has not gone out is given up
    /// (`OUTBOX_GIVE_UP_AFTER`).
    pub give_up_after: Duration,
    /// The first retry's delay; each later one doubles, up to `max_backoff`.
    pub backoff: Duration,
    pub max_backoff: Duration,
    /// How long an idle worker waits before looking again.
    pub poll: Duration,
    /// Prices for the ledger row of every text sent.
    pub prices: Arc<Prices>,
}

/// 24 hours: long enough to ride out a Twilio outage or a night of rate limits.
pub const DEFAULT_GIVE_UP_AFTER: Duration = Duration::from_secs(24 * 3600);

impl Default for OutboxSettings {
    fn default() -> Self {
        Self {
            batch: DEFAULT_BATCH,
            lease: Duration::from_secs(60),
            give_up_after: DEFAULT_GIVE_UP_AFTER,
            backoff: Duration::from_secs(5),
            max_backoff: Duration::from_secs(600),
            poll: Duration::from_secs(1),
            prices: crate::costs::CostConfig::default().prices,
        }
    }
}

pub struct Outbox<S: Store> {
    store: S,
    sender: Sender,
    clock: Arc<dyn Clock>,
    settings: OutboxSettings,
    /// Where emails go; `None` (production without `SMTP_URL`): every email is given up, loudly.
    mailer: Option<Mailer>,
    /// Rung when this process queues a message: an idle worker looks at once.
    bell: OutboxBell,
}

/// What one attempt came to.
enum Attempt {
    Done(OutboundStatus, Option<String>, Option<String>),
    /// Not sent, and no use trying again: `reason` is a stable label for logs and metrics.
    GaveUp {
        reason: &'static str,
        error: String,
    },
    /// Not sent (the request never reached Twilio): try again after the wait.
    Retry(String, Duration),
    /// Not sent, and not for want of trying (a rate limit, a shutdown): no attempt spent.
    Defer(String, Duration),
    Ambiguous(String, Duration),
}

impl<S: Store> Outbox<S> {
    pub fn new(store: S, sender: Sender, clock: Arc<dyn Clock>, settings: OutboxSettings) -> Self {
        Self {
            bell: store.outbox_bell().clone(),
            store,
            sender,
            clock,
            settings,
            mailer: None,
        }
    }

    /// Sends emails (kind `email`) through `mailer`; without one they are given up.
    pub fn with_mailer(mut self, mailer: Option<Mailer>) -> Self {
        self.mailer = mailer;
        self
    }

    /// Works until `shutdown` turns true, finishing the message in hand first.
    pub async fn run(&self, mut shutdown: watch::Receiver<bool>) {
        tracing::info!(
            event = "OUTBOX_STARTED",
            simulated = matches!(self.sender, Sender::Simulated)
        );
        while !*shutdown.borrow() {
            let worked = match self.run_once(Some(&shutdown)).await {
                Ok(n) => n,
                Err(e) => {
                    tracing::error!(event = "OUTBOX_ERROR", error = %e);
                    0
                }
            };
            if worked == 0 {
                // Idle: look again after the poll interval, or at once when this process queues
                // a message (another replica's messages wait for the interval).
                tokio::select! {
                    _ = tokio::time::sleep(self.settings.poll) => {}
                    _ = self.bell.rung() => {}
                    _ = shutdown.changed() => {}
                }
            }
        }
        tracing::info!(event = "OUTBOX_STOPPED");
    }

    /// Claims one batch and works through it; returns how many messages it handled. Messages
    /// left when `shutdown` turns true, or once half the lease is gone, go straight back to the
    /// outbox. The claim is one statement and reads all the sends need; what became of the batch
    /// is recorded in one statement at the end.
    ///
    /// Messages to one owner go out one after another, in the order queued; different owners'
    /// messages go out together.
    pub async fn run_once(
        &self,
        shutdown: Option<&watch::Receiver<bool>>,
    ) -> Result<usize, StoreError> {
        let claimed_at = self.clock.now();
        let lease =
            chrono::Duration::from_std(self.settings.lease).unwrap_or(chrono::Duration::MAX);
        let mut tx = self.store.begin().await?;
        let batch = tx
            .claim_outbound_batch(
                claimed_at,
                add_capped(claimed_at, lease),
                self.settings.batch,
            )
            .await?;
        tx.commit().await?;
        let count = batch.len();
        if count == 0 {
            return Ok(0);
        }
        // What the ledger needs of each message, for the transactions that record the results.
        let sent: Sent = batch
            .iter()
            .map(|c| {
                let m = &c.message;
                (
                    m.id,
                    (m.owner_id.clone(), m.to.clone(), m.body.clone(), m.kind),
                )
            })
            .collect();
        let mut chains: Vec<Vec<ClaimedOutbound>> = Vec::new();
        for claimed in batch {
            match chains
                .iter_mut()
                .find(|chain| chain[0].message.to == claimed.message.to)
            {
                Some(chain) => chain.push(claimed),
                None => chains.push(vec![claimed]),
            }
        }
        let worked = join_all(
            chains
                .into_iter()
                .map(|chain| self.work_chain(chain, claimed_at, lease, shutdown, &sent))
                .collect(),
        )
        .await;
        let mut results = Vec::with_capacity(count);
        let mut failed = None;
        for (chain_results, error) in worked {
            results.extend(chain_results);
            failed = failed.or(error);
        }
        // Recorded even when a chain failed: what did go out must not be sent again.
        if !results.is_empty() {
            let mut tx = self.store.begin().await?;
            self.record(&mut tx, &results, &sent, self.clock.now())
                .await?;
            tx.commit().await?;
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(count),
        }
    }

    /// Works one owner's messages of a batch, in order. Returns the results not recorded yet, and
    /// the error that stopped it, if one did.
    async fn work_chain(
        &self,
        chain: Vec<ClaimedOutbound>,
        claimed_at: DateTime<Utc>,
        lease: chrono::Duration,
        shutdown: Option<&watch::Receiver<bool>>,
        sent: &Sent,
    ) -> (Vec<OutboundResult>, Option<StoreError>) {
        let mut results = Vec::new();
        for claimed in &chain {
            if let Err(e) = self
                .work_one(claimed, claimed_at, lease, shutdown, &mut results, sent)
                .await
            {
                return (results, Some(e));
            }
        }
        (results, None)
    }

    /// Sends one message (or hands it back), adding what became of it to `results`.
    async fn work_one(
        &self,
        claimed: &ClaimedOutbound,
        claimed_at: DateTime<Utc>,
        lease: chrono::Duration,
        shutdown: Option<&watch::Receiver<bool>>,
        results: &mut Vec<OutboundResult>,
        sent: &Sent,
    ) -> Result<(), StoreError> {
        let message = &claimed.message;
        let now = self.clock.now();
        if shutdown.is_some_and(|s| *s.borrow()) {
            results.push(self.settle(
                message,
                Attempt::Defer("shutting down".into(), Duration::ZERO),
            ));
            return Ok(());
        }
        if now - claimed_at >= lease / 2 {
            results.push(self.settle(
                message,
                Attempt::Defer("batch lease half spent".into(), Duration::ZERO),
            ));
            return Ok(());
        }
        // Early in the batch the claim's own lease, three quarters of it or more still to run,
        // covers a send many times over: no renewal (one transaction) is needed. Later, the
        // results so far are recorded with the renewal, so a message that went out is on record
        // before its lease can run out and another worker take it over.
        if now - claimed_at >= lease / 4 {
            let mut tx = self.store.begin().await?;
            self.record(&mut tx, results, sent, now).await?;
            let renewed = tx
                .renew_outbound_lease(message.id, message.attempts, add_capped(now, lease), now)
                .await?;
            tx.commit().await?;
            results.clear();
            if !renewed {
                tracing::warn!(
                    event = "OUTBOUND_LEASE_LOST",
                    owner_id = %message.owner_id,
                    message_id = message.id,
                    "another worker took this message over: not sending it"
                );
                return Ok(());
            }
        }
        let attempt = self.attempt(claimed).await?;
        results.push(self.settle(message, attempt));
        Ok(())
    }

    /// Records what became of messages, and the ledger row of each text or email that went out,
    /// in one transaction: a message is billed exactly when it is on record as sent.
    async fn record(
        &self,
        tx: &mut S::Tx,
        results: &[OutboundResult],
        sent: &Sent,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        tx.record_outbound_batch(results, now).await?;
        let costs = crate::costs::sent_costs(&self.settings.prices, results, sent, now);
        let rows: Vec<_> = costs
            .iter()
            .map(|(cost, owner_id)| cost.as_new(*owner_id))
            .collect();
        tx.record_costs(&rows).await?;
        Ok(())
    }

    /// Whether `message` was queued longer ago than `give_up_after`.
    fn past_deadline(&self, message: &OutboundMessage) -> bool {
        let give_up_after = chrono::Duration::from_std(self.settings.give_up_after)
            .unwrap_or(chrono::Duration::MAX);
        self.clock.now() >= add_capped(message.created_at, give_up_after)
    }

    fn deadline_passed(&self) -> Attempt {
        Attempt::GaveUp {
            reason: "deadline",
            error: format!(
                "gave up: not sent within {} s of being queued",
                self.settings.give_up_after.as_secs()
            ),
        }
    }

    async fn attempt(&self, claimed: &ClaimedOutbound) -> Result<Attempt, StoreError> {
        let message = &claimed.message;
        // Read in the claim: an owner who opted out (or is gone) is never texted. A caller's
        // text-back is not to the owner: the caller's own opt-out was read when it was queued.
        if claimed.owner_opted_out && message.topic.as_deref() != Some(TOPIC_CALLER_TEXT_BACK) {
            return Ok(Attempt::Done(
                OutboundStatus::Suppressed,
                None,
                Some("owner opted out".into()),
            ));
        }
        if message.kind == OutboundKind::Email {
            return Ok(self.email(message).await);
        }
        let Sender::Twilio {
            client,
            from,
            status_callback,
            calls,
        } = &self.sender
        else {
            let event = match message.kind {
                OutboundKind::Sms => "OUTBOUND_SENT",
                OutboundKind::VerifyCall => "VERIFY_CALL_PLACED",
                OutboundKind::Email => "EMAIL_SENT",
            };
            // Simulated means no Twilio credentials, which production refuses: dev mode only, so
            // the body is shown where a newcomer looks for it.
            tracing::info!(
                event,
                owner_id = %message.owner_id,
                phone = %message.to.masked(),
                simulated = true,
                text = %message.body,
            );
            return Ok(Attempt::Done(OutboundStatus::Simulated, None, None));
        };
        if message.kind == OutboundKind::VerifyCall {
            if message.needs_reconcile {
                // Taken over from a worker that stopped mid-call: as with any uncertain call, a
                // second one could ring the owner twice.
                return Ok(Attempt::GaveUp {
                    reason: "call_uncertain",
                    error: "a worker stopped while placing this call: not placed again".into(),
                });
            }
            if self.past_deadline(message) {
                return Ok(self.deadline_passed());
            }
            return self.place_call(client, calls, message).await;
        }

        // Alerts, relayed texts and text-backs go from the owner's own number.
        let from = message.from.as_ref().unwrap_or(from);
        if message.needs_reconcile {
            let since = message.attempted_at.unwrap_or(message.created_at) - CLOCK_SKEW;
            match client.list_messages_since(&message.to, from, since).await {
                Ok(sent) => {
                    if let Some(found) = find_sent(&sent, &message.body) {
                        tracing::info!(
                            event = "OUTBOUND_RECONCILED",
                            owner_id = %message.owner_id,
                            phone = %message.to.masked(),
                            twilio_sid = %found.sid,
                            "an uncertain earlier attempt had gone out: not sending again"
                        );
                        return Ok(Attempt::Done(
                            twilio_status(&found.status),
                            Some(found.sid.clone()),
                            None,
                        ));
                    }
                }
                Err(e) => {
                    // Not knowing whether the first went out, send nothing; ask again later (past
                    // the deadline too: an uncertain message is never called failed unasked).
                    return Ok(Attempt::Ambiguous(
                        format!("reconciliation failed: {e}"),
                        self.backoff(message.attempts),
                    ));
                }
            }
        }
        if self.past_deadline(message) {
            return Ok(self.deadline_passed());
        }

        match client
            .send_sms(&message.to, from, &message.body, Some(status_callback))
            .await
        {
            Ok(sent) => Ok(Attempt::Done(
                twilio_status(&sent.status),
                Some(sent.sid),
                None,
            )),
            Err(e) if e.is_opted_out() => {
                self.opt_out(message).await?;
                Ok(Attempt::GaveUp {
                    reason: "opted_out",
                    error: e.to_string(),
                })
            }
            Err(e) if e.is_rate_limited() => {
                let wait = e.retry_after().unwrap_or(Duration::from_secs(1));
                Ok(Attempt::Defer(e.to_string(), wait))
            }
            Err(e) if e.is_safe_to_retry() => Ok(Attempt::Retry(
                e.to_string(),
                self.backoff(message.attempts),
            )),
            Err(e) if e.is_ambiguous() => Ok(Attempt::Ambiguous(
                e.to_string(),
                self.backoff(message.attempts),
            )),
            // A refusal (or a 2xx we cannot read, which Twilio did act on): never retried.
            Err(e) => Ok(Attempt::GaveUp {
                reason: "refused",
                error: e.to_string(),
            }),
        }
    }

    /// Sends an email. SMTP has no idempotency key: an attempt whose outcome is unknown (a
    /// timeout mid-conversation) is never repeated, as with calls, but given up and logged.
    async fn email(&self, message: &OutboundMessage) -> Attempt {
        let (Some(to), Some(subject)) = (message.to_email.as_deref(), message.subject.as_deref())
        else {
            return Attempt::GaveUp {
                reason: "refused",
                error: "an email without an address or subject".into(),
            };
        };
        if message.needs_reconcile {
            return Attempt::GaveUp {
                reason: "email_uncertain",
                error: "an earlier attempt may have been delivered: not sent again".into(),
            };
        }
        if self.past_deadline(message) {
            return self.deadline_passed();
        }
        let Some(mailer) = &self.mailer else {
            return Attempt::GaveUp {
                reason: "email_not_configured",
                error: "SMTP_URL is not set".into(),
            };
        };
        if let Mailer::Simulated = mailer {
            // Dev mode only (production without SMTP_URL has no mailer): shown like a simulated text.
            tracing::info!(
                event = "EMAIL_SENT",
                owner_id = %message.owner_id,
                email = %mask_email(to),
                simulated = true,
                subject,
                text = %message.body,
            );
            return Attempt::Done(OutboundStatus::Simulated, None, None);
        }
        let email = Email {
            to,
            subject,
            text: &message.body,
            message_id: crate::email::message_id(message.id),
        };
        match mailer.send(&email).await {
            Ok(()) => {
                tracing::info!(
                    event = "EMAIL_SENT",
                    owner_id = %message.owner_id,
                    email = %mask_email(to),
                );
                Attempt::Done(OutboundStatus::Sent, None, None)
            }
            Err(e @ EmailError::Transient(_)) => {
                Attempt::Retry(e.to_string(), self.backoff(message.attempts))
            }
            Err(e @ EmailError::Permanent(_)) => Attempt::GaveUp {
                reason: "refused",
                error: e.to_string(),
            },
            Err(e @ EmailError::Uncertain(_)) => {
                Attempt::Ambiguous(e.to_string(), self.backoff(message.attempts))
            }
        }
    }

    /// Places a verification call. An ambiguous failure is not retried: a second call would ring the
    /// owner twice, and the owner can reply CALL ME (or gets tips when the window closes).
    async fn place_call(
        &self,
        client: &TwilioClient,
        calls: &CallSettings,
        message: &OutboundMessage,
    ) -> Result<Attempt, StoreError> {
        match client
            .place_call(
                &message.to,
                &calls.from,
                &message.body,
                calls.ring_seconds,
                Some(&calls.status_callback),
            )
            .await
        {
            Ok(call) => {
                let mut tx = self.store.begin().await?;
                tx.record_verify_call(
                    &call.sid,
                    &message.owner_id,
                    &calls.from,
                    &message.to,
                    self.clock.now(),
                )
                .await?;
                tx.commit().await?;
                tracing::info!(
                    event = "VERIFY_CALL_PLACED",
                    owner_id = %message.owner_id,
                    phone = %message.to.masked(),
                    call_sid = %call.sid,
                );
                Ok(Attempt::Done(OutboundStatus::Queued, Some(call.sid), None))
            }
            Err(e) if e.is_rate_limited() => Ok(Attempt::Defer(
                e.to_string(),
                e.retry_after().unwrap_or(Duration::from_secs(1)),
            )),
            Err(e) if e.is_safe_to_retry() => Ok(Attempt::Retry(
                e.to_string(),
                self.backoff(message.attempts),
            )),
            Err(e) => Ok(Attempt::GaveUp {
                reason: if e.is_ambiguous() {
                    "call_uncertain"
                } else {
                    "refused"
                },
                error: e.to_string(),
            }),
        }
    }

    /// Counts and logs an attempt, and turns it into the line the batch's record writes.
    fn settle(&self, message: &OutboundMessage, attempt: Attempt) -> OutboundResult {
        let now = self.clock.now();
        let result = match &attempt {
            Attempt::Done(status, ..) => status.as_str(),
            Attempt::GaveUp { .. } => "failed",
            Attempt::Retry(..) => "retry",
            Attempt::Defer(..) => "deferred",
            Attempt::Ambiguous(..) => "uncertain",
        };
        let kind = kind_label(message.kind);
        metrics::counter!("onboard_outbound_total", "kind" => kind, "result" => result)
            .increment(1);
        if message.topic.as_deref() == Some(TOPIC_MISSED_CALL_ALERT) {
            note_alert(message, &attempt);
        }
        let outcome = match attempt {
            Attempt::Done(status, sid, error) => {
                if status == OutboundStatus::Failed {
                    // Twilio took the message but reports it failed: a status, not our giving up.
                    log_failed(
                        message,
                        "twilio_status",
                        error.as_deref().unwrap_or("failed"),
                    );
                } else if status != OutboundStatus::Simulated && message.kind == OutboundKind::Sms {
                    tracing::info!(
                        event = "OUTBOUND_SENT",
                        owner_id = %message.owner_id,
                        phone = %message.to.masked(),
                        status = status.as_str(),
                        twilio_sid = sid.as_deref().unwrap_or_default(),
                    );
                }
                OutboundOutcome::Finish {
                    status,
                    twilio_sid: sid,
                    error,
                    retry_at: None,
                }
            }
            Attempt::GaveUp { reason, error } => {
                metrics::counter!("onboard_outbound_given_up_total", "kind" => kind, "reason" => reason)
                    .increment(1);
                log_failed(message, reason, &error);
                OutboundOutcome::Finish {
                    status: OutboundStatus::Failed,
                    twilio_sid: None,
                    error: Some(error),
                    retry_at: None,
                }
            }
            Attempt::Retry(error, wait) => {
                let at = retry_at(now, wait);
                tracing::warn!(event = "OUTBOUND_RETRY", owner_id = %message.owner_id, error = %mask_pii(&error), retry_at = %at);
                OutboundOutcome::Finish {
                    status: OutboundStatus::Pending,
                    twilio_sid: None,
                    error: Some(error),
                    retry_at: Some(at),
                }
            }
            Attempt::Defer(error, wait) => {
                let at = retry_at(now, wait);
                tracing::info!(event = "OUTBOUND_DEFERRED", owner_id = %message.owner_id, error = %mask_pii(&error), retry_at = %at);
                OutboundOutcome::Defer {
                    attempts: message.attempts,
                    error,
                    retry_at: at,
                }
            }
            Attempt::Ambiguous(error, wait) => {
                let at = retry_at(now, wait);
                tracing::warn!(event = "OUTBOUND_UNCERTAIN", owner_id = %message.owner_id, error = %mask_pii(&error), retry_at = %at);
                OutboundOutcome::Uncertain {
                    error,
                    retry_at: at,
                }
            }
        };
        OutboundResult {
            id: message.id,
            outcome,
        }
    }

    /// Twilio says the owner replied STOP: we stop too.
    async fn opt_out(&self, message: &OutboundMessage) -> Result<(), StoreError> {
        let mut tx = self.store.begin().await?;
        if let Some(mut owner) = tx.lock_owner(&message.owner_id).await?
            && !owner.opted_out
        {
            owner.opted_out = true;
            owner.updated_at = self.clock.now();
            tx.save_owner(&owner).await?;
            tracing::info!(event = "OPTED_OUT", owner_id = %owner.id, phone = %owner.owner_phone.masked(), source = "twilio_21610");
        }
        tx.commit().await
    }

    fn backoff(&self, attempts: i32) -> Duration {
        let doublings = u32::try_from(attempts.saturating_sub(1))
            .unwrap_or(0)
            .min(16);
        (self.settings.backoff * 2u32.pow(doublings)).min(self.settings.max_backoff)
    }
}

/// Runs `futures` together on the calling task; their outputs in the same order.
async fn join_all<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut waiting = false;
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    Poll::Ready(value) => *output = Some(value),
                    Poll::Pending => waiting = true,
                }
            }
        }
        if waiting {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

fn log_failed(message: &OutboundMessage, reason: &str, error: &str) {
    tracing::error!(
        event = "OUTBOUND_FAILED",
        owner_id = %message.owner_id,
        phone = %message.to.masked(),
        kind = kind_label(message.kind),
        reason,
        error = %mask_pii(error),
    );
}

fn kind_label(kind: OutboundKind) -> &'static str {
    match kind {
        OutboundKind::Sms => "sms",
        OutboundKind::VerifyCall => "verify_call",
        OutboundKind::Email => "email",
    }
}

/// The outbox topic of a missed-call alert.
pub const TOPIC_MISSED_CALL_ALERT: &str = "missed_call_alert";
/// A customer's text passed on to the owner.
pub const TOPIC_TEXT_RELAY: &str = "text_relay";
/// "Sorry we missed you" to a caller (`CALLER_TEXT_BACK=1`).
pub const TOPIC_CALLER_TEXT_BACK: &str = "caller_text_back";
/// The 80% and 100% plan usage texts.
pub const TOPIC_USAGE_ALERT: &str = "usage_alert";

/// Counts a missed-call alert's attempt per channel and result, and logs one that went out.
fn note_alert(message: &OutboundMessage, attempt: &Attempt) {
    let channel = kind_label(message.kind);
    let result = match attempt {
        Attempt::Done(OutboundStatus::Failed, ..) | Attempt::GaveUp { .. } => "failed",
        Attempt::Done(OutboundStatus::Simulated, ..) => "simulated",
        Attempt::Done(..) => "sent",
        Attempt::Retry(..) | Attempt::Defer(..) | Attempt::Ambiguous(..) => "retry",
    };
    metrics::counter!("onboard_alerts_total", "channel" => channel, "result" => result)
        .increment(1);
    if matches!(result, "sent" | "simulated") {
        tracing::info!(
            event = "MISSED_CALL_ALERT_SENT",
            owner_id = %message.owner_id,
            phone = %message.to.masked(),
            channel,
            simulated = result == "simulated",
        );
    }
}

/// `now + wait`, with `wait` capped at [`MAX_RETRY_WAIT`] so no header can overflow the date.
fn retry_at(now: DateTime<Utc>, wait: Duration) -> DateTime<Utc> {
    let wait = chrono::Duration::from_std(wait.min(MAX_RETRY_WAIT)).unwrap_or_default();
    add_capped(now, wait)
}

/// `at + span`, or the latest representable time when that would overflow.
fn add_capped(at: DateTime<Utc>, span: chrono::Duration) -> DateTime<Utc> {
    at.checked_add_signed(span)
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// A message Twilio has that is ours: same body. `sent` holds only messages created since the
/// uncertain attempt (or of unknown date), so an older text with the same words does not count.
fn find_sent<'a>(sent: &'a [SentMessage], body: &str) -> Option<&'a SentMessage> {
    sent.iter().find(|m| m.body.as_deref() == Some(body))
}

/// Twilio's message status as ours.
pub fn twilio_status(status: &str) -> OutboundStatus {
    match status {
        "sent" => OutboundStatus::Sent,
        "delivered" | "read" => OutboundStatus::Delivered,
        "undelivered" => OutboundStatus::Undelivered,
        "failed" | "canceled" => OutboundStatus::Failed,
        // accepted, scheduled, queued, sending: on its way.
        _ => OutboundStatus::Queued,
    }
}
