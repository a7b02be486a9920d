//! Texts from owners, and Twilio's delivery reports of the texts we sent.

use chrono::{DateTime, Utc};

use crate::conversation::budget::{self, Admission};
use crate::conversation::parse::{Keyword, keyword};
use crate::conversation::{Event, StateName};
use crate::domain::{Country, PhoneNumber, mask_phone};
use crate::flows::MessageKey;
use crate::prices::CostKind;
use crate::store::ledger::LedgerTx as _;
use crate::store::reminders::ReminderTx as _;
use crate::store::{Claim, NewInbound, OutboundStatus, Owner, OwnerKey, Store, Tx};
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
        // Each parsed once: a number's parse is a metadata lookup.
        let from = PhoneNumber::parse(&sms.from).ok();
        let to = PhoneNumber::parse(&sms.to).ok();
        // Texts to the onboarding number are the conversation's; any other is to a number an
        // owner may hold: a live owner's are their commands or their customers' texts.
        let to_onboarding = sms.to.is_empty()
            || self
                .settings
                .onboarding_number
                .as_ref()
                .is_some_and(|onboarding| onboarding.as_str() == sms.to);
        // The owner this text is most likely about, locked as the `MessageSid` is claimed: the
        // holder of the number it was sent to, or the owner texting the onboarding number.
        let key = match (&to, &from) {
            (Some(number), _) if !to_onboarding => Some(OwnerKey::Number(number)),
            (_, Some(phone)) if to_onboarding => Some(OwnerKey::Phone(phone)),
            _ => None,
        };

        let mut tx = self.store.begin().await?;
        let inbound = NewInbound {
            message_sid: &sms.message_sid,
            from: &sms.from,
            to: &sms.to,
            body: &sms.body,
            received_at: now,
        };
        let (claim, locked) = match key {
            Some(key) => tx.claim_inbound_locking(&inbound, key).await?,
            None => (tx.claim_inbound(&inbound).await?, None),
        };
        if let Claim::Duplicate { response } = claim {
            tx.commit().await?;
            tracing::info!(
                event = "INBOUND_SMS_DUPLICATE",
                message_sid = %sms.message_sid,
                "retried MessageSid answered from the stored reply"
            );
            return Ok(response);
        }
        let (holder, sender) = match key {
            Some(OwnerKey::Number(_)) => (locked, None),
            _ => (None, locked),
        };

        // Every text we receive is billed, whoever it is from: priced in the sender's country
        // when it is a number, else in our number's.
        let country = from
            .as_ref()
            .or(to.as_ref())
            .map(PhoneNumber::country)
            .unwrap_or(Country::Other);

        let held = holder.is_some();
        if let Some(owner) = holder.filter(|o| o.state == StateName::Complete) {
            let response = self.line_text(&mut tx, owner, sms, country, now).await?;
            tx.commit().await?;
            return Ok(response);
        }
        // Without an onboarding number (dev mode), any number no owner holds counts as it.
        let for_onboarding = to_onboarding || (self.settings.onboarding_number.is_none() && !held);
        // A customer texting an owner's business number is not an owner to onboard.
        if !for_onboarding {
            self.record_text_in(&mut tx, sms, country, now).await?;
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
        let Some(phone) = from.clone() else {
            self.record_text_in(&mut tx, sms, country, now).await?;
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

        let new_owner = || Owner::new(self.ids.owner_id(), phone.clone(), now);
        let (mut owner, created) = match (sender, key) {
            (Some(owner), _) => (owner, false),
            // The claim looked for them already.
            (None, Some(OwnerKey::Phone(_))) => tx.create_and_lock_owner(&phone, new_owner).await?,
            (None, _) => tx.lock_or_create_owner(&phone, new_owner).await?,
        };
        tracing::info!(
            event = "INBOUND_SMS",
            owner_id = %owner.id,
            phone = %owner.owner_phone.masked(),
            state = %owner.state,
            new_owner = created,
        );
        tracing::debug!(body = %sms.body, "inbound SMS body");

        // A held owner is one who first texted while a budget was exceeded: still in S1 with
        // nothing answered. Only they need the held table read, and only they and new owners the
        // budget. Without budgets no one is held for long: the cost keeper serves whoever still
        // is within a minute.
        let held = if self.has_budget()
            && !created
            && owner.state == StateName::S1BusinessTypeLocation
            && owner.business_type.is_none()
        {
            tx.held_owner(&owner.id).await?
        } else {
            None
        };
        let exceeded = if (created || held.is_some()) && self.has_budget() {
            self.budget_check(&mut tx, now).await?.exceeded()
        } else {
            false
        };
        let opting_out = keyword(&sms.body, owner.opted_out) == Some(Keyword::OptOut);
        let admission = budget::admit(created, held.is_some(), exceeded, opting_out);
        if matches!(admission, Admission::HoldNew | Admission::StillHeld) {
            return self
                .hold_new_owner(tx, sms, &owner, admission, country, now)
                .await;
        }

        let timer = if created {
            None
        } else {
            tx.reminder_timer(&owner.id).await?
        };
        // The first text from a new owner is greeted, and read for whatever it already says; one
        // after a silence that expired the conversation is welcomed back.
        let event = if created {
            Event::FirstText(sms.body.clone())
        } else if let (Admission::ReleaseNow, Some(first_text)) = (admission, held.clone()) {
            // Held while a budget was exceeded and not served yet: greeted now, reading the
            // text they first sent.
            tx.release_owner(&owner.id).await?;
            tracing::info!(
                event = "HELD_OWNER_SERVED",
                owner_id = %owner.id,
                phone = %owner.owner_phone.masked(),
            );
            Event::FirstText(first_text)
        } else if held.is_some() {
            // A held owner opting out: no longer held, and their STOP is honoured as usual.
            tx.release_owner(&owner.id).await?;
            Event::Text(sms.body.clone())
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
        self.record_exchange_costs(&mut tx, sms, &owner, country, reply.as_deref(), now)
            .await?;
        tx.finish_inbound(&sms.message_sid, Some(&owner.id), &response)
            .await?;
        tx.commit().await?;
        Ok(response)
    }

    /// A new owner while a budget is exceeded: told politely we are full and kept, with their
    /// text, to be served first when the period turns. Texting again while still held gets no
    /// answer: they were told when we would text.
    async fn hold_new_owner(
        &self,
        mut tx: S::Tx,
        sms: &InboundSms,
        owner: &Owner,
        admission: Admission,
        country: Country,
        now: DateTime<Utc>,
    ) -> Result<String, EngineError> {
        let reply = if admission == Admission::HoldNew {
            tx.hold_owner(&owner.id, &sms.body, now).await?;
            tracing::info!(
                event = "NEW_OWNER_HELD_BUDGET",
                owner_id = %owner.id,
                phone = %owner.owner_phone.masked(),
            );
            Some(
                self.flows
                    .catalog(owner.locale)
                    .render(MessageKey::BudgetFull, &[]),
            )
        } else {
            None
        };
        self.record_exchange_costs(&mut tx, sms, owner, country, reply.as_deref(), now)
            .await?;
        let response = match &reply {
            Some(text) => twiml::Response::new().message(text).to_xml(),
            None => twiml::Response::new().to_xml(),
        };
        tx.finish_inbound(&sms.message_sid, Some(&owner.id), &response)
            .await?;
        tx.commit().await?;
        Ok(response)
    }

    /// An owner's text and our TwiML answer to it, if any, in the ledger in one statement:
    /// the text in the sender's country, the answer in the owner's.
    pub(super) async fn record_exchange_costs(
        &self,
        tx: &mut S::Tx,
        sms: &InboundSms,
        owner: &Owner,
        country: Country,
        reply: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<(), EngineError> {
        let mut costs = vec![self.priced(
            format!("sms_in:{}", sms.message_sid),
            Some(&owner.id),
            country,
            CostKind::SmsInbound,
            crate::sms::segments(&sms.body) as i64,
            Some(&sms.message_sid),
            now,
        )];
        if let Some(reply) = reply {
            costs.push(self.priced(
                format!("sms_reply:{}", sms.message_sid),
                Some(&owner.id),
                owner.country(),
                CostKind::SmsOutbound,
                crate::sms::segments(reply) as i64,
                None,
                now,
            ));
        }
        tx.record_costs(&costs).await?;
        Ok(())
    }

    /// A text received that no owner's conversation answers (to a number no live owner holds, or
    /// from a sender that is no number), priced by its segments; once per `MessageSid`.
    async fn record_text_in(
        &self,
        tx: &mut S::Tx,
        sms: &InboundSms,
        country: Country,
        now: DateTime<Utc>,
    ) -> Result<(), EngineError> {
        self.record_cost(
            tx,
            format!("sms_in:{}", sms.message_sid),
            None,
            country,
            CostKind::SmsInbound,
            crate::sms::segments(&sms.body) as i64,
            Some(&sms.message_sid),
            now,
        )
        .await
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
