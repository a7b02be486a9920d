//! Payments from Stripe: verify, store once, and move the owner's conversation.
//!
//! Each event runs in one transaction: the event row, the owner's change and any text it causes
//! commit together, so a retry either finds the event done or does all of it.

use crate::conversation::Event;
use crate::domain::{OwnerId, mask_pii};
use crate::engine::{Engine, EngineError};
use crate::store::{EventOutcome, NewWebhookEvent, Store, Tx};
use crate::stripe::event::{Envelope, PaymentAction, classify};
use crate::stripe::signature::{self, StripeSignatureError};

const PROVIDER: &str = "stripe";

/// What became of a delivered event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Receipt {
    Processed,
    Ignored(String),
    /// Seen before: nothing changed.
    Duplicate,
}

impl Receipt {
    pub fn name(&self) -> &'static str {
        match self {
            Receipt::Processed => "processed",
            Receipt::Ignored(_) => "ignored",
            Receipt::Duplicate => "duplicate",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PaymentError {
    #[error("Stripe-Signature: {0}")]
    BadSignature(#[from] StripeSignatureError),
    #[error(transparent)]
    BadEvent(#[from] crate::stripe::event::BadEvent),
    #[error("processing failed (stored as failed; Stripe will retry): {0}")]
    Failed(#[from] EngineError),
}

/// Verifies a delivery's signature over the raw body, then handles it. With no secrets configured
/// (dev mode) the signature is not checked.
pub async fn receive<S: Store>(
    engine: &Engine<S>,
    secrets: &[String],
    signature_header: Option<&str>,
    raw_body: &[u8],
) -> Result<Receipt, PaymentError> {
    if !secrets.is_empty() {
        signature::verify(
            signature_header,
            raw_body,
            secrets,
            engine.now().timestamp(),
            signature::DEFAULT_TOLERANCE_SECS,
        )?;
    }
    let (envelope, payload) = Envelope::parse(raw_body)?;
    process(engine, &envelope, &payload).await
}

/// Processes a stored event again, as an operator's retry of a failed one: exactly what a delivery
/// goes through after its signature check (which it passed when it first arrived). Only a stored
/// `failed` event is processed; any other comes back [`Receipt::Duplicate`], unchanged.
pub async fn reprocess<S: Store>(
    engine: &Engine<S>,
    stored_payload: &serde_json::Value,
) -> Result<Receipt, PaymentError> {
    let (envelope, payload) = Envelope::parse(stored_payload.to_string().as_bytes())?;
    process(engine, &envelope, &payload).await
}

/// The one processing path of a verified event: handle it, and record a failure for ops.
async fn process<S: Store>(
    engine: &Engine<S>,
    envelope: &Envelope,
    payload: &serde_json::Value,
) -> Result<Receipt, PaymentError> {
    match handle(engine, envelope, payload).await {
        Ok(receipt) => Ok(receipt),
        Err(e) => {
            record_failure(engine, envelope, payload, &e).await;
            Err(e.into())
        }
    }
}

async fn handle<S: Store>(
    engine: &Engine<S>,
    envelope: &Envelope,
    payload: &serde_json::Value,
) -> Result<Receipt, EngineError> {
    let now = engine.now();
    let action = classify(envelope);
    // A paid checkout names its owner: they are locked in the same statement as the claim.
    let paying = match &action {
        PaymentAction::Paid {
            client_reference_id,
            ..
        } => client_reference_id.as_deref().and_then(OwnerId::parse),
        _ => None,
    };
    let mut tx = engine.store().begin().await?;
    // Insert first, then look: a lookup first finds no row for either of two deliveries arriving
    // together (and `FOR UPDATE` on a missing row locks nothing), so both would go on. The insert
    // instead waits for a concurrent insert of the same id to commit or roll back, and then
    // exactly one of the two owns the new row.
    let event = NewWebhookEvent {
        provider: PROVIDER,
        event_id: &envelope.id,
        event_type: &envelope.event_type,
        payload,
        received_at: now,
    };
    let (new, payer) = match &paying {
        Some(id) => tx.insert_webhook_event_locking(&event, id).await?,
        None => (tx.insert_webhook_event(&event).await?, None),
    };
    if !new {
        // Stored before: locked now, so two retries of a failed event are processed once.
        let status = tx.webhook_event_status(PROVIDER, &envelope.id).await?;
        // A failed event is processed again on Stripe's retry; anything else is done.
        if status.as_deref() != Some("failed") {
            tx.commit().await?;
            tracing::info!(event = "STRIPE_EVENT_DUPLICATE", event_id = %envelope.id);
            return Ok(Receipt::Duplicate);
        }
    }
    let payer = match (payer, &paying) {
        (None, Some(id)) if !new => tx.lock_owner(id).await?,
        (payer, _) => payer,
    };

    let receipt = match action {
        PaymentAction::Paid {
            client_reference_id,
            links,
        } => match payer {
            Some(mut owner) => {
                for (kind, id) in &links {
                    tx.link_stripe(&owner.id, *kind, id, now).await?;
                }
                tracing::info!(
                    event = "PAYMENT_CONFIRMED",
                    owner_id = %owner.id,
                    phone = %owner.owner_phone.masked(),
                    event_id = %envelope.id,
                );
                step(engine, &mut tx, &mut owner, Event::PaymentConfirmed, now).await?
            }
            None => {
                tracing::warn!(
                    event = "PAYMENT_UNMATCHED",
                    event_id = %envelope.id,
                    client_reference_id = client_reference_id.as_deref().unwrap_or("(none)"),
                    "paid checkout names no owner we know: needs a person"
                );
                Receipt::Ignored("client_reference_id names no owner".into())
            }
        },
        PaymentAction::Revoked { by } => {
            let mut found = None;
            for (kind, id) in &by {
                if let Some(owner) = tx.lock_owner_by_stripe(*kind, id).await? {
                    found = Some(owner);
                    break;
                }
            }
            match found {
                Some(mut owner) => {
                    tracing::info!(
                        event = "PAYMENT_REVOKED",
                        owner_id = %owner.id,
                        phone = %owner.owner_phone.masked(),
                        event_id = %envelope.id,
                        event_type = %envelope.event_type,
                    );
                    step(engine, &mut tx, &mut owner, Event::PaymentRevoked, now).await?
                }
                None => {
                    tracing::warn!(
                        event = "PAYMENT_UNMATCHED",
                        event_id = %envelope.id,
                        event_type = %envelope.event_type,
                        "revocation for a Stripe object we never linked to an owner"
                    );
                    Receipt::Ignored(
                        "no owner linked to this customer, subscription or payment".into(),
                    )
                }
            }
        }
        PaymentAction::Ignore(reason) => Receipt::Ignored(reason),
    };
    let (outcome, note) = match &receipt {
        Receipt::Ignored(reason) => (EventOutcome::Ignored, Some(reason.as_str())),
        _ => (EventOutcome::Processed, None),
    };
    tx.set_webhook_event_outcome(PROVIDER, &envelope.id, outcome, note)
        .await?;
    tx.commit().await?;
    Ok(receipt)
}

/// Moves the locked owner's conversation on with a payment's event, queueing what it says.
async fn step<S: Store>(
    engine: &Engine<S>,
    tx: &mut S::Tx,
    owner: &mut crate::store::Owner,
    event: Event,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Receipt, EngineError> {
    let decision = engine.run(tx, owner, event, now).await?;
    engine.queue_replies(tx, owner, &decision, now).await?;
    Ok(Receipt::Processed)
}

/// The processing transaction rolled back; keep a record that it failed, and why, for ops.
async fn record_failure<S: Store>(
    engine: &Engine<S>,
    envelope: &Envelope,
    payload: &serde_json::Value,
    error: &EngineError,
) {
    tracing::error!(event = "STRIPE_EVENT_FAILED", event_id = %envelope.id, error = %mask_pii(&error.to_string()));
    let result = async {
        let mut tx = engine.store().begin().await?;
        let new = tx
            .insert_webhook_event(&NewWebhookEvent {
                provider: PROVIDER,
                event_id: &envelope.id,
                event_type: &envelope.event_type,
                payload,
                received_at: engine.now(),
            })
            .await?;
        // A concurrent delivery of the same event may have processed it meanwhile: keep that.
        if !new
            && matches!(
                tx.webhook_event_status(PROVIDER, &envelope.id)
                    .await?
                    .as_deref(),
                Some("processed" | "ignored")
            )
        {
            return tx.commit().await;
        }
        tx.set_webhook_event_outcome(
            PROVIDER,
            &envelope.id,
            EventOutcome::Failed,
            Some(&error.to_string()),
        )
        .await?;
        tx.commit().await
    }
    .await;
    if let Err(e) = result {
        tracing::error!(event = "STRIPE_EVENT_FAILED", event_id = %envelope.id, error = %e, "could not record the failure either");
    }
}
