//! The shell around the conversation: each inbound event runs in one database transaction.
//!
//! An event loads and locks the owner, runs the pure [`conversation::step`], carries out the commands it
//! returns (allocating or releasing a number) inside the same transaction, feeds their results back in,
//! and stores the new state with its replies. A retried provider id gets the stored answer back.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};

use crate::clock::{Clock, Ids};
use crate::conversation::{self, Command, Context, Conversation, Decision, Event, Gate, StateName};
use crate::domain::{OwnerId, Country, PhoneNumber, mask_phone};
use crate::flows::{Flows, MessageKey};
use crate::reminders::ReminderSettings;
use crate::store::reminders::ReminderTx as _;
use crate::store::{
    Allocation, Claim, Owner, NewInbound, NewOutbound, NewPoolNumber, OutboundStatus,
    QuarantineOutcome, Store, StoreError, Transition, Tx,
};
use crate::twilio::twiml;

/// How long a released number rests before another business may have it.
pub const DEFAULT_QUARANTINE_DAYS: i64 = 30;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("no owner with id {0}")]
    UnknownOwner(OwnerId),
    #[error("number {0} is not in the pool")]
    UnknownNumber(String),
    #[error("the pool gave an inconsistent answer: {0}")]
    Pool(String),
    #[error("number {0} is assigned to owner {1}; it can only be released from them")]
    NumberInUse(String, OwnerId),
}

/// What the engine needs besides the store.
pub struct Settings {
    /// The Stripe Payment Link, without a query string.
    pub payment_link: String,
    pub quarantine: Duration,
    /// Below this many AVAILABLE numbers in a country, `POOL_LOW` is logged.
    pub pool_low_water: i64,
    /// The number verification calls come from; a call from it reaching an owner's new number
    /// proves forwarding. None in dev mode (no calls are placed).
    pub verify_caller: Option<PhoneNumber>,
    /// How long to wait for proof before texting troubleshooting tips.
    pub verify_window: Duration,
    /// The number owners text to onboard. Texts to any other number (an owner's business number,
    /// texted by their customers) never start a conversation. None in dev mode: then every number
    /// that no owner holds counts as the onboarding number.
    pub onboarding_number: Option<PhoneNumber>,
}

/// An SMS from Twilio's webhook, fields already checked for presence.
#[derive(Debug, Clone)]
pub struct InboundSms {
    pub message_sid: String,
    pub from: String,
    pub to: String,
    pub body: String,
}

/// What an event produced for an owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub owner_id: OwnerId,
    pub state: StateName,
    /// The texts sent (or queued) to the owner, one per event; empty when nothing was said.
    pub texts: Vec<String>,
}

pub struct Engine<S: Store> {
    store: S,
    pub(crate) flows: Arc<Flows>,
    clock: Arc<dyn Clock>,
    ids: Arc<dyn Ids>,
    pub(crate) settings: Settings,
    pub(crate) reminders: ReminderSettings,
}

impl<S: Store> Engine<S> {
    pub fn new(
        store: S,
        flows: Arc<Flows>,
        clock: Arc<dyn Clock>,
        ids: Arc<dyn Ids>,
        settings: Settings,
    ) -> Self {
        Self {
            store,
            flows,
            clock,
            ids,
            settings,
            reminders: ReminderSettings::default(),
        }
    }

    /// Replaces the default reminder schedule, quiet hours and expiry.
    pub fn with_reminders(mut self, reminders: ReminderSettings) -> Self {
        self.reminders = reminders;
        self
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

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

        // A customer texting an owner's business number is not an owner to onboard.
        if !self.is_for_onboarding(&mut tx, &sms.to).await? {
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
        let decision = if self.welcomes_back(timer.as_ref(), &owner, &sms.body) {
            self.welcome_back(&owner)
        } else {
            // The first text from a new owner is greeted, and read for whatever it already says.
            let event = if created {
                Event::FirstText(sms.body.clone())
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
            decision
        };
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
        self.check_pool_after(&decision, &owner).await;
        Ok(response)
    }

    /// Whether a text sent to `to` belongs to the onboarding conversation: it must be addressed to
    /// the onboarding number or, without one (dev mode), to a number no owner holds. An empty `to`
    /// (callers that do not say, like fixture replays) counts as the onboarding number.
    async fn is_for_onboarding(&self, tx: &mut S::Tx, to: &str) -> Result<bool, EngineError> {
        if to.is_empty() {
            return Ok(true);
        }
        match &self.settings.onboarding_number {
            Some(onboarding) => Ok(onboarding.as_str() == to),
            None => Ok(match PhoneNumber::parse(to) {
                Ok(number) => tx.lock_owner_by_number(&number).await?.is_none(),
                Err(_) => true,
            }),
        }
    }

    /// Applies a provider event (payment, test call, ...) to an owner; what the bot says goes to the outbox.
    pub async fn apply(&self, owner_id: &OwnerId, event: Event) -> Result<Outcome, EngineError> {
        let now = self.clock.now();
        let mut tx = self.store.begin().await?;
        let mut owner = tx
            .lock_owner(owner_id)
            .await?
            .ok_or_else(|| EngineError::UnknownOwner(owner_id.clone()))?;
        let decision = self.run(&mut tx, &mut owner, event, now).await?;
        let texts = self.queue_replies(&mut tx, &owner, &decision, now).await?;
        tx.commit().await?;
        self.check_pool_after(&decision, &owner).await;
        Ok(Outcome {
            owner_id: owner.id,
            state: owner.state,
            texts,
        })
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

    /// An operator's reset: the owner goes back to S1 with every answer cleared, keeping payment,
    /// number and opt-out (as RESTART does), recorded in the state history with cause
    /// `admin_reset`, in one transaction. Nothing is texted: their next text answers S1.
    pub async fn admin_reset(&self, owner_id: &OwnerId) -> Result<Owner, EngineError> {
        let now = self.clock.now();
        let mut tx = self.store.begin().await?;
        let mut owner = tx
            .lock_owner(owner_id)
            .await?
            .ok_or_else(|| EngineError::UnknownOwner(owner_id.clone()))?;
        // Through the conversation like any event; what it would say is not sent.
        self.run(&mut tx, &mut owner, Event::Reset, now).await?;
        tx.commit().await?;
        Ok(owner)
    }

    /// Sends a number no owner holds to quarantine. A number in use is refused: taking it from its
    /// owner is a payment decision, not a pool one.
    pub async fn release_number(&self, number: &PhoneNumber) -> Result<(), EngineError> {
        let now = self.clock.now();
        let mut tx = self.store.begin().await?;
        if let Some(owner) = tx.lock_owner_by_number(number).await? {
            return Err(EngineError::NumberInUse(number.masked(), owner.id));
        }
        self.quarantine(&mut tx, number, now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Returns numbers whose quarantine is over to the pool, and serves the waitlist with them.
    pub async fn end_quarantines(&self) -> Result<u64, EngineError> {
        let mut tx = self.store.begin().await?;
        let returned = tx.end_quarantines(self.clock.now()).await?;
        tx.commit().await?;
        if returned > 0 {
            tracing::info!(event = "QUARANTINE_ENDED", numbers = returned);
            for country in [Country::Gb, Country::Us, Country::Other] {
                self.serve_waitlist(country).await?;
            }
        }
        Ok(returned)
    }

    /// A payment may have allocated a number: check what is left where we sell.
    pub(crate) async fn after_payment(&self) {
        for country in [Country::Gb, Country::Us] {
            self.check_pool(country).await;
        }
    }

    /// Logs `POOL_LOW` when a country has fewer than `pool_low_water` numbers left. Counts no
    /// further than the low-water mark, so it costs the same with a million numbers as with ten.
    async fn check_pool(&self, country: Country) {
        let low_water = self.settings.pool_low_water;
        match self.store.available_numbers(country, low_water).await {
            Ok(available) if available < low_water => {
                tracing::warn!(
                    event = "POOL_LOW",
                    country = country.code(),
                    available,
                    low_water,
                    "add numbers: onboard pool add"
                );
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(event = "POOL_STATS_FAILED", error = %e),
        }
    }

    /// After an event: if it allocated a number, check the pool of the owner's country.
    async fn check_pool_after(&self, decision: &Decision, owner: &Owner) {
        if decision.commands.contains(&Command::AllocateNumber) {
            self.check_pool(owner.country()).await;
        }
    }

    /// The owner with this phone number, if any.
    pub async fn owner_by_phone(
        &self,
        phone: &PhoneNumber,
    ) -> Result<Option<Owner>, EngineError> {
        Ok(self.store.owner_by_phone(phone).await?)
    }

    /// Puts numbers in the pool, then serves waiting owners first come, first served.
    /// Returns how many numbers were new and what each served owner was told.
    pub async fn add_numbers(
        &self,
        numbers: &[PhoneNumber],
    ) -> Result<(u64, Vec<Outcome>), EngineError> {
        let now = self.clock.now();
        let mut tx = self.store.begin().await?;
        let new: Vec<NewPoolNumber> = numbers
            .iter()
            .map(|e164| NewPoolNumber {
                e164: e164.clone(),
                twilio_sid: None,
            })
            .collect();
        let added = tx.add_numbers(&new, now).await?;
        tx.commit().await?;
        let mut countries: Vec<_> = numbers.iter().map(PhoneNumber::country).collect();
        countries.dedup();
        let mut served = Vec::new();
        for country in countries {
            served.extend(self.serve_waitlist(country).await?);
        }
        Ok((added, served))
    }

    /// Stores numbers (with their Twilio sids) as AVAILABLE and commits; returns how many were new.
    /// Unlike [`Engine::add_numbers`] it does not serve the waitlist: the caller does that with
    /// [`Engine::serve_waitlist`], so an error there is never mistaken for the numbers not being stored.
    pub async fn add_pool_numbers(&self, numbers: &[NewPoolNumber]) -> Result<u64, EngineError> {
        let now = self.clock.now();
        let mut tx = self.store.begin().await?;
        let added = tx.add_numbers(numbers, now).await?;
        tx.commit().await?;
        Ok(added)
    }

    /// Gives numbers to waiting owners of a country, oldest first, one transaction each, until the
    /// pool or the waitlist runs out.
    pub async fn serve_waitlist(
        &self,
        country: crate::domain::Country,
    ) -> Result<Vec<Outcome>, EngineError> {
        let mut served = Vec::new();
        loop {
            let now = self.clock.now();
            let mut tx = self.store.begin().await?;
            let Some(mut owner) = tx.lock_waitlist(country, 1).await?.into_iter().next() else {
                return Ok(served);
            };
            let decision = self
                .run_commands(&mut tx, &mut owner, vec![Command::AllocateNumber], now)
                .await?;
            if owner.gate == Some(Gate::AwaitingNumber) {
                // Still no number: the pool ran dry again; leave the rest waiting (and roll back).
                return Ok(served);
            }
            owner.updated_at = now;
            tx.save_owner(&owner).await?;
            // Not an answer to the owner: it waits for the end of their quiet hours.
            let texts = self
                .queue_proactive(&mut tx, &owner, &decision, now)
                .await?;
            tx.commit().await?;
            self.check_pool_after(&decision, &owner).await;
            served.push(Outcome {
                owner_id: owner.id,
                state: owner.state,
                texts,
            });
        }
    }

    /// Runs an event, then every command it leads to, against the locked owner, and saves it.
    pub(crate) async fn run(
        &self,
        tx: &mut S::Tx,
        owner: &mut Owner,
        event: Event,
        now: DateTime<Utc>,
    ) -> Result<Decision, EngineError> {
        let decision = self.run_unsaved(tx, owner, event, now).await?;
        owner.updated_at = now;
        tx.save_owner(owner).await?;
        Ok(decision)
    }

    /// [`Self::run`] without the save, for a caller that saves only what changed.
    async fn run_unsaved(
        &self,
        tx: &mut S::Tx,
        owner: &mut Owner,
        event: Event,
        now: DateTime<Utc>,
    ) -> Result<Decision, EngineError> {
        let decision = self.step(tx, owner, &event, now).await?;
        let commands = decision.commands.clone();
        let more = self.run_commands(tx, owner, commands, now).await?;
        Ok(merge(decision, more))
    }

    async fn run_commands(
        &self,
        tx: &mut S::Tx,
        owner: &mut Owner,
        mut commands: Vec<Command>,
        now: DateTime<Utc>,
    ) -> Result<Decision, EngineError> {
        let mut total = Decision::default();
        // Each command's result is an event that may ask for more; the conversation cannot loop
        // (allocation answers with a number or an empty pool, neither of which allocates again).
        while !commands.is_empty() {
            let command = commands.remove(0);
            let follow_up = match command {
                Command::AllocateNumber => {
                    let allocation = tx
                        .allocate_number(
                            &owner.id,
                            owner.country(),
                            owner.owner_phone.area_code(),
                            now,
                        )
                        .await?;
                    match allocation {
                        Allocation::Allocated(number) | Allocation::AlreadyAssigned(number) => {
                            tracing::info!(
                                event = "NUMBER_ALLOCATED",
                                owner_id = %owner.id,
                                phone = %owner.owner_phone.masked(),
                                number = %number.masked(),
                            );
                            Some(Event::NumberAllocated(number))
                        }
                        Allocation::PoolEmpty => {
                            tracing::warn!(
                                event = "POOL_EMPTY",
                                owner_id = %owner.id,
                                phone = %owner.owner_phone.masked(),
                                country = owner.country().code(),
                            );
                            Some(Event::PoolEmpty)
                        }
                        Allocation::OwnerNotFound => {
                            return Err(EngineError::Pool(format!(
                                "owner {} vanished during allocation",
                                owner.id
                            )));
                        }
                    }
                }
                Command::ReleaseNumber => {
                    // The conversation already forgot the number; the pool learns it here.
                    if let Some(number) = owner.twilio_number.take() {
                        self.quarantine(tx, &number, now).await?;
                    }
                    None
                }
                Command::PlaceVerifyCall => {
                    owner.verify_started_at = Some(now);
                    let answered = twiml::Response::new()
                        .say(
                            &self
                                .flows
                                .catalog(owner.locale)
                                .render(MessageKey::VoiceVerifyAnswered, &[]),
                            owner.locale.tag(),
                        )
                        .hangup()
                        .to_xml();
                    tx.enqueue_verify_call(&NewOutbound {
                        owner_id: &owner.id,
                        to: &owner.owner_phone,
                        body: &answered,
                        created_at: now,
                    })
                    .await?;
                    None
                }
            };
            if let Some(event) = follow_up {
                let decision = self.step(tx, owner, &event, now).await?;
                commands.extend(decision.commands.iter().copied());
                total = merge(total, decision);
            }
        }
        Ok(total)
    }

    /// One pure step: the owner brought up to date (not yet saved) and the transitions recorded.
    async fn step(
        &self,
        tx: &mut S::Tx,
        owner: &mut Owner,
        event: &Event,
        now: DateTime<Utc>,
    ) -> Result<Decision, EngineError> {
        let payment_link = format!(
            "{}?client_reference_id={}",
            self.settings.payment_link, owner.id
        );
        let ctx = Context {
            catalog: self.flows.catalog(owner.locale),
            payment_link: &payment_link,
        };
        let mut conversation = conversation_of(owner);
        let was_opted_out = owner.opted_out;
        let gate_before = owner.gate;
        let decision = conversation::step(&mut conversation, event, &ctx);
        apply_conversation(owner, conversation, now);

        if owner.gate != gate_before {
            let name = match owner.gate {
                Some(Gate::PaymentRequired) => Some("PAYMENT_REQUIRED"),
                Some(Gate::AwaitingNumber) => Some("ONBOARDING_BLOCKED_NO_NUMBER"),
                None => None,
            };
            if let Some(name) = name {
                tracing::info!(event = name, owner_id = %owner.id, phone = %owner.owner_phone.masked());
            }
        }

        if owner.opted_out != was_opted_out {
            let name = if owner.opted_out {
                "OPTED_OUT"
            } else {
                "OPTED_IN"
            };
            tracing::info!(event = name, owner_id = %owner.id, phone = %owner.owner_phone.masked());
        }
        for (from, to) in &decision.transitions {
            tx.record_transition(&Transition {
                owner_id: &owner.id,
                from: *from,
                to: *to,
                cause: event.name(),
                at: now,
            })
            .await?;
            tracing::info!(
                event = "STATE_CHANGED",
                owner_id = %owner.id,
                phone = %owner.owner_phone.masked(),
                from = %from,
                to = %to,
                cause = event.name(),
            );
            let milestone = match to {
                StateName::S7FwdSent => Some("FORWARDING_SENT"),
                StateName::Complete => Some("ONBOARDING_COMPLETE"),
                _ => None,
            };
            if let Some(name) = milestone {
                tracing::info!(event = name, owner_id = %owner.id, phone = %owner.owner_phone.masked());
            }
        }
        Ok(decision)
    }

    async fn quarantine(
        &self,
        tx: &mut S::Tx,
        number: &PhoneNumber,
        now: DateTime<Utc>,
    ) -> Result<(), EngineError> {
        let until = now + self.settings.quarantine;
        match tx.quarantine_number(number, until, now).await? {
            QuarantineOutcome::Quarantined { .. } => {
                tracing::info!(event = "NUMBER_RELEASED", number = %number.masked(), until = %until);
                Ok(())
            }
            QuarantineOutcome::NotInPool => Err(EngineError::UnknownNumber(number.masked())),
        }
    }

    /// Writes the replies of an event that did not come by SMS to the outbox, in this transaction.
    pub(crate) async fn queue_replies(
        &self,
        tx: &mut S::Tx,
        owner: &Owner,
        decision: &Decision,
        now: DateTime<Utc>,
    ) -> Result<Vec<String>, EngineError> {
        if decision.replies.is_empty() || owner.opted_out {
            return Ok(Vec::new());
        }
        let body = decision.replies.join("\n");
        tx.enqueue_outbound(&NewOutbound {
            owner_id: &owner.id,
            to: &owner.owner_phone,
            body: &body,
            created_at: now,
        })
        .await?;
        Ok(vec![body])
    }
}

fn merge(mut first: Decision, then: Decision) -> Decision {
    first.replies.extend(then.replies);
    first.commands.extend(then.commands);
    first.transitions.extend(then.transitions);
    first
}

/// The conversation's view of a stored owner.
pub fn conversation_of(owner: &Owner) -> Conversation {
    Conversation {
        state: owner.state,
        gate: owner.gate,
        business_type: owner.business_type.clone(),
        location: owner.location.clone(),
        business_name: owner.business_name.clone(),
        owner_name: owner.owner_name.clone(),
        notify: owner.notify.clone(),
        phone_type: owner.phone_type,
        misses: owner.misses,
        opted_out: owner.opted_out,
        paid: owner.payment_active,
        number: owner.twilio_number.clone(),
    }
}

/// Writes a conversation back onto the stored owner, keeping the times that go with its changes
/// (`updated_at` is the caller's: it moves only when something did).
fn apply_conversation(owner: &mut Owner, c: Conversation, now: DateTime<Utc>) {
    if c.paid && !owner.payment_active {
        owner.paid_at = Some(now);
    }
    if !c.paid {
        owner.paid_at = None;
    }
    match c.gate {
        Some(Gate::AwaitingNumber) => {
            owner.waitlisted_at.get_or_insert(now);
        }
        // A paid owner who steps away to change an answer is not served meanwhile (the queue
        // is owners at the gate) but keeps their place for when they say YES again.
        _ if c.paid && c.number.is_none() => {}
        _ => owner.waitlisted_at = None,
    }
    // The window is open only while waiting for proof.
    if c.state != StateName::S8FwdConfirmed {
        owner.verify_started_at = None;
    }
    owner.state = c.state;
    owner.gate = c.gate;
    owner.business_type = c.business_type;
    owner.location = c.location;
    owner.business_name = c.business_name;
    owner.owner_name = c.owner_name;
    owner.notify = c.notify;
    owner.phone_type = c.phone_type;
    owner.misses = c.misses;
    owner.opted_out = c.opted_out;
    owner.payment_active = c.paid;
    // A released number stays on the owner until the release command has quarantined it.
    if c.number.is_some() {
        owner.twilio_number = c.number;
    }
}
