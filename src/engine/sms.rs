//! Texts from owners, and Twilio's delivery reports of the texts we sent.

use crate::conversation::{Event, StateName};
use crate::domain::{PhoneNumber, mask_phone};
use crate::store::reminders::ReminderTx as _;
use crate::store::{Claim, NewInbound, OutboundStatus, Owner, Store, Tx};
use crate::twilio::twiml;

use super::{Engine, EngineError};

/// An SMS from Twilio's webhook, fields already checked for presence.
#[derive(Debug, Clone)]
pub struct InboundSms {
    pub message_sid: String,
    pub from: String,
    pub to: String,
    pub body: String,
}

impl<S: Store> Engine<S> {
    /// Handles an inbound SMS and returns the TwiML to answer with: the same bytes on every retry.
    pub async fn handle_sms(&self, sms: &InboundSms) -> Result<String, EngineError> {
        let now = self.clock.now();
        let mut tx = self.store.begin().await?;
        let claim = tx
            .claim_inbound(&NewInbound {
                message_sid: &sms.message_sid,
                from: &sms.from,
                to: &sms.to,
                body: &sms.body,
                received_at: now,
            })
            .await?;
        if let Claim::Duplicate { response } = claim {
            tx.commit().await?;
            tracing::info!(
                event = "INBOUND_SMS_DUPLICATE",
                message_sid = %sms.message_sid,
                "retried MessageSid answered from the stored reply"
            );
            return Ok(response);
        }

        // Texts to the onboarding number are the conversation's; any other is to a number an
        // owner may hold: a live owner's are their commands or their customers' texts.
        let to_onboarding = sms.to.is_empty()
            || self
                .settings
                .onboarding_number
                .as_ref()
                .is_some_and(|onboarding| onboarding.as_str() == sms.to);
        let holder = match PhoneNumber::parse(&sms.to) {
            Ok(number) if !to_onboarding => tx.lock_owner_by_number(&number).await?,
            _ => None,
        };
        let held = holder.is_some();
        if let Some(owner) = holder.filter(|o| o.state == StateName::Complete) {
            let response = self.line_text(&mut tx, owner, sms, now).await?;
            tx.commit().await?;
            return Ok(response);
        }
        // Without an onboarding number (dev mode), any number no owner holds counts as it.
        let for_onboarding = to_onboarding || (self.settings.onboarding_number.is_none() && !held);
        // A customer texting an owner's business number is not an owner to onboard.
        if !for_onboarding {
            let response = twiml::Response::new().to_xml();
            tx.finish_inbound(&sms.message_sid, None, &response).await?;
            tx.commit().await?;
            tracing::info!(
                event = "INBOUND_SMS_NOT_FOR_ONBOARDING",
                from = %mask_phone(&sms.from),
                to = %mask_phone(&sms.to),
                "SMS to a number that is not the onboarding number; not answered"
            );
            return Ok(response);
        }

        // Twilio passes through caller ids it cannot normalise; we cannot onboard those, but must not fail.
        let Ok(phone) = PhoneNumber::parse(&sms.from) else {
            let response = twiml::Response::new().to_xml();
            tx.finish_inbound(&sms.message_sid, None, &response).await?;
            tx.commit().await?;
            tracing::warn!(
                event = "INBOUND_SMS_UNROUTABLE",
                from = %mask_phone(&sms.from),
                "SMS from a sender that is not an E.164 number; not answered"
            );
            return Ok(response);
        };

        let (mut owner, created) = tx
            .lock_or_create_owner(&phone, || {
                Owner::new(self.ids.owner_id(), phone.clone(), now)
            })
            .await?;
        tracing::info!(
            event = "INBOUND_SMS",
            owner_id = %owner.id,
            phone = %owner.owner_phone.masked(),
            state = %owner.state,
            new_owner = created,
        );
        tracing::debug!(body = %sms.body, "inbound SMS body");

        let timer = if created {
            None
        } else {
            tx.reminder_timer(&owner.id).await?
        };
        // The first text from a new owner is greeted, and read for whatever it already says; one
        // after a silence that expired the conversation is welcomed back.
        let event = if created {
            Event::FirstText(sms.body.clone())
        } else if timer.as_ref().is_some_and(|t| t.expired_at.is_some()) {
            tracing::info!(
                event = "CONVERSATION_RESUMED",
                owner_id = %owner.id,
                phone = %owner.owner_phone.masked(),
                state = %owner.state,
            );
            Event::TextAfterExpiry(sms.body.clone())
        } else {
            Event::Text(sms.body.clone())
        };
        let stored = owner.clone();
        let decision = self.run_unsaved(&mut tx, &mut owner, event, now).await?;
        // HELP, a question, a text while opted out: many texts change nothing to write.
        if owner != stored {
            owner.updated_at = now;
            tx.save_owner(&owner).await?;
        }
        self.owner_texted(&mut tx, timer, &owner, now).await?;
        let reply = if owner.opted_out || decision.replies.is_empty() {
            None
        } else {
            Some(decision.replies.join("\n"))
        };
        let response = match &reply {
            Some(text) => twiml::Response::new().message(text).to_xml(),
            None => twiml::Response::new().to_xml(),
        };
        tx.finish_inbound(&sms.message_sid, Some(&owner.id), &response)
            .await?;
        tx.commit().await?;
        Ok(response)
    }

    /// A delivery report from Twilio. Never moves a message back from a final status; error 21610
    /// (the owner replied STOP) marks the owner opted out.
    pub async fn message_status(
        &self,
        message_sid: &str,
        status: OutboundStatus,
        error_code: Option<&str>,
    ) -> Result<bool, EngineError> {
        let now = self.clock.now();
        let mut tx = self.store.begin().await?;
        let owner_id = tx
            .update_outbound_status(message_sid, status, error_code, now)
            .await?;
        if let (Some(id), Some("21610")) = (&owner_id, error_code)
            && let Some(mut owner) = tx.lock_owner(id).await?
            && !owner.opted_out
        {
            owner.opted_out = true;
            owner.updated_at = now;
            tx.save_owner(&owner).await?;
            tracing::info!(event = "OPTED_OUT", owner_id = %owner.id, phone = %owner.owner_phone.masked(), source = "twilio_21610");
        }
        tx.commit().await?;
        Ok(owner_id.is_some())
    }
}
