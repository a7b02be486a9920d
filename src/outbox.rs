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
//! Attempts are bounded (`max_attempts`); a message that runs out is `failed` and logged
//! `OUTBOUND_FAILED` for a person to look at.
//!
//! Never retried: Twilio's 4xx refusals (an invalid number, 21610 opted out — which also marks the
//! owner opted out). Retried freely: rate limits (after `Retry-After`) and requests that never
//! reached Twilio.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::clock::Clock;
use crate::domain::PhoneNumber;
use crate::store::{OutboundKind, OutboundMessage, OutboundStatus, Store, StoreError, Tx};
use crate::twilio::client::{SentMessage, TwilioClient, TwilioError};

/// How far Twilio's clock may be behind ours when we ask what it sent since an attempt.
const CLOCK_SKEW: chrono::Duration = chrono::Duration::minutes(1);

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

#[derive(Debug, Clone)]
pub struct OutboxSettings {
    pub batch: i64,
    /// How long a claim lasts before another worker may take the message over.
    pub lease: Duration,
    pub max_attempts: i32,
    /// The first retry's delay; each later one doubles, up to `max_backoff`.
    pub backoff: Duration,
    pub max_backoff: Duration,
    /// How long an idle worker waits before looking again.
    pub poll: Duration,
}

impl Default for OutboxSettings {
    fn default() -> Self {
        Self {
            batch: 10,
            lease: Duration::from_secs(60),
            max_attempts: 5,
            backoff: Duration::from_secs(5),
            max_backoff: Duration::from_secs(600),
            poll: Duration::from_secs(1),
        }
    }
}

pub struct Outbox<S: Store> {
    store: S,
    sender: Sender,
    clock: Arc<dyn Clock>,
    settings: OutboxSettings,
}

/// What one attempt came to.
enum Attempt {
    Done(OutboundStatus, Option<String>, Option<String>),
    Retry(String, Duration),
    Ambiguous(String, Duration),
}

impl<S: Store> Outbox<S> {
    pub fn new(store: S, sender: Sender, clock: Arc<dyn Clock>, settings: OutboxSettings) -> Self {
        Self {
            store,
            sender,
            clock,
            settings,
        }
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
                tokio::select! {
                    _ = tokio::time::sleep(self.settings.poll) => {}
                    _ = shutdown.changed() => {}
                }
            }
        }
        tracing::info!(event = "OUTBOX_STOPPED");
    }

    /// Claims one batch and works through it; returns how many messages it handled. Messages left
    /// when `shutdown` turns true go straight back to the outbox.
    pub async fn run_once(
        &self,
        shutdown: Option<&watch::Receiver<bool>>,
    ) -> Result<usize, StoreError> {
        let now = self.clock.now();
        let lease = chrono::Duration::from_std(self.settings.lease).unwrap_or_default();
        let mut tx = self.store.begin().await?;
        let batch = tx
            .claim_outbound(now, now + lease, self.settings.batch)
            .await?;
        tx.commit().await?;
        let count = batch.len();
        for message in batch {
            if shutdown.is_some_and(|s| *s.borrow()) {
                self.finish(
                    &message,
                    Attempt::Retry("shutting down".into(), Duration::ZERO),
                )
                .await?;
                continue;
            }
            let attempt = self.attempt(&message).await?;
            self.finish(&message, attempt).await?;
        }
        Ok(count)
    }

    async fn attempt(&self, message: &OutboundMessage) -> Result<Attempt, StoreError> {
        let mut tx = self.store.begin().await?;
        let opted_out = tx
            .lock_client(&message.client_id)
            .await?
            .is_none_or(|c| c.opted_out);
        tx.commit().await?;
        if opted_out {
            return Ok(Attempt::Done(
                OutboundStatus::Suppressed,
                None,
                Some("owner opted out".into()),
            ));
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
            };
            // Simulated means no Twilio credentials, which production refuses: dev mode only, so
            // the body is shown where a newcomer looks for it.
            tracing::info!(
                event,
                client_id = %message.client_id,
                phone = %message.to.masked(),
                simulated = true,
                text = %message.body,
            );
            return Ok(Attempt::Done(OutboundStatus::Simulated, None, None));
        };
        if message.kind == OutboundKind::VerifyCall {
            return self.place_call(client, calls, message).await;
        }

        if message.needs_reconcile {
            let since = message.attempted_at.unwrap_or(message.created_at) - CLOCK_SKEW;
            match client.list_messages_since(&message.to, from, since).await {
                Ok(sent) => {
                    if let Some(found) = find_sent(&sent, &message.body) {
                        tracing::info!(
                            event = "OUTBOUND_RECONCILED",
                            client_id = %message.client_id,
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
                    // Not knowing whether the first went out, send nothing; ask again later.
                    return Ok(Attempt::Ambiguous(
                        format!("reconciliation failed: {e}"),
                        self.backoff(message.attempts),
                    ));
                }
            }
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
                Ok(Attempt::Done(
                    OutboundStatus::Failed,
                    None,
                    Some(e.to_string()),
                ))
            }
            Err(e) if e.is_rate_limited() => {
                let wait = e.retry_after().unwrap_or(Duration::from_secs(1));
                Ok(Attempt::Retry(e.to_string(), wait))
            }
            Err(e) if e.is_safe_to_retry() => Ok(Attempt::Retry(
                e.to_string(),
                self.backoff(message.attempts),
            )),
            Err(e) if e.is_ambiguous() => Ok(Attempt::Ambiguous(
                e.to_string(),
                self.backoff(message.attempts),
            )),
            Err(e @ (TwilioError::Api { .. } | TwilioError::Unexpected(_))) => Ok(Attempt::Done(
                OutboundStatus::Failed,
                None,
                Some(e.to_string()),
            )),
            Err(e) => Ok(Attempt::Done(
                OutboundStatus::Failed,
                None,
                Some(e.to_string()),
            )),
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
                    &message.client_id,
                    &calls.from,
                    &message.to,
                    self.clock.now(),
                )
                .await?;
                tx.commit().await?;
                tracing::info!(
                    event = "VERIFY_CALL_PLACED",
                    client_id = %message.client_id,
                    phone = %message.to.masked(),
                    call_sid = %call.sid,
                );
                Ok(Attempt::Done(OutboundStatus::Queued, Some(call.sid), None))
            }
            Err(e) if e.is_safe_to_retry() => {
                let wait = e
                    .retry_after()
                    .unwrap_or_else(|| self.backoff(message.attempts));
                Ok(Attempt::Retry(e.to_string(), wait))
            }
            Err(e) => Ok(Attempt::Done(
                OutboundStatus::Failed,
                None,
                Some(e.to_string()),
            )),
        }
    }

    /// Records an attempt; a retry past `max_attempts` becomes a failure.
    async fn finish(&self, message: &OutboundMessage, attempt: Attempt) -> Result<(), StoreError> {
        let now = self.clock.now();
        let result = match &attempt {
            Attempt::Done(status, ..) => status.as_str(),
            Attempt::Retry(..) => "retry",
            Attempt::Ambiguous(..) => "uncertain",
        };
        let kind = match message.kind {
            OutboundKind::Sms => "sms",
            OutboundKind::VerifyCall => "verify_call",
        };
        metrics::counter!("onboard_outbound_total", "kind" => kind, "result" => result)
            .increment(1);
        let exhausted = message.attempts >= self.settings.max_attempts;
        let mut tx = self.store.begin().await?;
        match attempt {
            Attempt::Done(status, sid, error) => {
                tx.finish_outbound(
                    message.id,
                    status,
                    sid.as_deref(),
                    error.as_deref(),
                    None,
                    now,
                )
                .await?;
                if status == OutboundStatus::Failed {
                    log_failed(message, error.as_deref().unwrap_or("failed"));
                } else if status != OutboundStatus::Simulated && message.kind == OutboundKind::Sms {
                    tracing::info!(
                        event = "OUTBOUND_SENT",
                        client_id = %message.client_id,
                        phone = %message.to.masked(),
                        status = status.as_str(),
                        twilio_sid = sid.as_deref().unwrap_or_default(),
                    );
                }
            }
            Attempt::Retry(error, _) | Attempt::Ambiguous(error, _) if exhausted => {
                let error = format!("gave up after {} attempts: {error}", message.attempts);
                tx.finish_outbound(
                    message.id,
                    OutboundStatus::Failed,
                    None,
                    Some(&error),
                    None,
                    now,
                )
                .await?;
                log_failed(message, &error);
            }
            Attempt::Retry(error, wait) => {
                let at = now + chrono::Duration::from_std(wait).unwrap_or_default();
                tx.finish_outbound(
                    message.id,
                    OutboundStatus::Pending,
                    None,
                    Some(&error),
                    Some(at),
                    now,
                )
                .await?;
                tracing::warn!(event = "OUTBOUND_RETRY", client_id = %message.client_id, error = %error, retry_at = %at);
            }
            Attempt::Ambiguous(error, wait) => {
                let at = now + chrono::Duration::from_std(wait).unwrap_or_default();
                tx.mark_outbound_ambiguous(message.id, &error, at, now)
                    .await?;
                tracing::warn!(event = "OUTBOUND_UNCERTAIN", client_id = %message.client_id, error = %error, retry_at = %at);
            }
        }
        tx.commit().await
    }

    /// Twilio says the owner replied STOP: we stop too.
    async fn opt_out(&self, message: &OutboundMessage) -> Result<(), StoreError> {
        let mut tx = self.store.begin().await?;
        if let Some(mut client) = tx.lock_client(&message.client_id).await?
            && !client.opted_out
        {
            client.opted_out = true;
            client.updated_at = self.clock.now();
            tx.save_client(&client).await?;
            tracing::info!(event = "OPTED_OUT", client_id = %client.id, phone = %client.owner_phone.masked(), source = "twilio_21610");
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

fn log_failed(message: &OutboundMessage, error: &str) {
    tracing::error!(
        event = "OUTBOUND_FAILED",
        client_id = %message.client_id,
        phone = %message.to.masked(),
        error = %error,
    );
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
