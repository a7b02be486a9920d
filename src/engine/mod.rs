//! The shell around the conversation: each inbound event runs in one database transaction.
//!
//! An event loads and locks the owner, runs it through the pure [`Onboarding`], carries out the commands it
//! returns (allocating or releasing a number) inside the same transaction, feeds their results back in,
//! and stores the new state with its replies. A retried provider id gets the stored answer back.
//!
//! One file per family of events: [`sms`] (texts from owners, delivery reports), [`payments`]
//! (Stripe), [`calls`] (test calls and calls to owners' numbers), [`pool`] (numbers added,
//! released and back from quarantine; the waitlist served). This file holds what they share: the
//! engine, its builder [`Engine::from_config`], and the step that runs the conversation.

pub mod after;
pub mod calls;
pub mod payments;
mod pool;
mod sms;

pub use calls::InboundCall;
pub use sms::InboundSms;

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};

use crate::clock::{Clock, Ids};
use crate::config::Config;
use crate::conversation::{
    Command, Context, Conversation, Decision, Event, Gate, Onboarding, StateName, WaitlistPlace,
};
use crate::domain::{OwnerId, PhoneNumber};
use crate::flows::{Flows, MessageKey};
use crate::reminders::ReminderSettings;
use crate::store::{Allocation, NewOutbound, Owner, Store, StoreError, Transition, Tx};
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
    #[error("owner {0} holds no number")]
    NoNumber(OwnerId),
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
    /// Missed calls, alerts and texts to owners' numbers once they are live.
    pub after: after::AfterSettings,
}

/// What an event produced for an owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub owner_id: OwnerId,
    pub state: StateName,
    /// The texts sent (or queued) to the owner, one per event; empty when nothing was said.
    pub texts: Vec<String>,
}

/// What an operator's release of an owner's number did.
#[derive(Debug, Clone)]
pub struct Released {
    /// The owner afterwards: their new number, or waiting for one.
    pub owner: Owner,
    /// The number taken from them, now in quarantine.
    pub number: PhoneNumber,
    /// What they were told (queued in the outbox); empty when they opted out.
    pub texts: Vec<String>,
}

impl Settings {
    /// The engine's settings as the configuration gives them; quarantine is fixed by policy.
    pub fn from_config(config: &Config) -> Self {
        Settings {
            payment_link: config.stripe_payment_link.clone(),
            quarantine: Duration::days(DEFAULT_QUARANTINE_DAYS),
            pool_low_water: config.pool_low_water,
            verify_caller: config.verify_caller_number.clone(),
            verify_window: Duration::from_std(config.verify_window).unwrap_or(Duration::minutes(2)),
            onboarding_number: config.onboarding_number.clone(),
            after: after::AfterSettings::from_config(config),
        }
    }
}

/// What an engine runs on besides its store and configuration: the words it says, and the clock
/// and ids (the system's in production; fixed ones in replays and tests, for repeatable runs).
pub struct Seams {
    pub flows: Arc<Flows>,
    pub clock: Arc<dyn Clock>,
    pub ids: Arc<dyn Ids>,
}

pub struct Engine<S: Store> {
    store: S,
    pub(crate) flows: Arc<Flows>,
    clock: Arc<dyn Clock>,
    ids: Arc<dyn Ids>,
    pub(crate) settings: Settings,
    pub(crate) reminders: ReminderSettings,
    /// Prices and budgets (see [`crate::costs`]).
    pub(crate) costs: crate::costs::CostConfig,
}

impl<S: Store> Engine<S> {
    /// The one way the server, `onboard replay`, `onboard chat` and the tests build an engine, so
    /// all of them run the same wiring from a [`Config`].
    pub fn from_config(store: S, config: &Config, seams: Seams) -> Self {
        Self::new(
            store,
            seams.flows,
            seams.clock,
            seams.ids,
            Settings::from_config(config),
        )
        .with_reminders(ReminderSettings {
            config: config.reminders.clone(),
            ..ReminderSettings::default()
        })
        .with_costs(config.costs.clone())
    }

    fn new(
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
            costs: crate::costs::CostConfig::default(),
        }
    }

    /// Replaces the compiled-in prices and the absence of budgets.
    pub fn with_costs(mut self, costs: crate::costs::CostConfig) -> Self {
        self.costs = costs;
        self
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

    /// Applies a provider event (payment, test call, ...) to an owner; what the bot says goes to the outbox.
    pub async fn apply(&self, owner_id: &OwnerId, event: Event) -> Result<Outcome, EngineError> {
        let now = self.clock.now();
        let (mut tx, mut owner) = self.begin_with_owner(owner_id).await?;
        let decision = self.run(&mut tx, &mut owner, event, now).await?;
        let texts = self.queue_replies(&mut tx, &owner, &decision, now).await?;
        tx.commit().await?;
        Ok(Outcome {
            owner_id: owner.id,
            state: owner.state,
            texts,
        })
    }

    /// An operator's reset: the owner goes back to S1 with every answer cleared, keeping payment,
    /// number and opt-out (as RESTART does), recorded in the state history with cause
    /// `admin_reset`, in one transaction. Nothing is texted: their next text answers S1.
    pub async fn admin_reset(&self, owner_id: &OwnerId) -> Result<Owner, EngineError> {
        let now = self.clock.now();
        let (mut tx, mut owner) = self.begin_with_owner(owner_id).await?;
        // Through the conversation like any event; what it would say is not sent.
        self.run(&mut tx, &mut owner, Event::Reset, now).await?;
        tx.commit().await?;
        Ok(owner)
    }

    /// An operator's release of the owner's number (a spam complaint, a carrier problem): it goes
    /// to quarantine and never back to them; a paid owner is given another at once (or waits for
    /// one, told so) and sent forwarding instructions for it. What they are told goes through the
    /// outbox after their quiet hours. Recorded with cause `admin_release_number`.
    pub async fn admin_release_number(&self, owner_id: &OwnerId) -> Result<Released, EngineError> {
        let now = self.clock.now();
        let (mut tx, mut owner) = self.begin_with_owner(owner_id).await?;
        let Some(number) = owner.twilio_number.clone() else {
            return Err(EngineError::NoNumber(owner_id.clone()));
        };
        let decision = self
            .run(&mut tx, &mut owner, Event::NumberReleased, now)
            .await?;
        let texts = self
            .queue_proactive(&mut tx, &owner, &decision, now)
            .await?;
        tx.commit().await?;
        tracing::info!(
            event = "NUMBER_RELEASED_BY_OPERATOR",
            owner_id = %owner.id,
            phone = %owner.owner_phone.masked(),
            number = %number.masked(),
            state = %owner.state,
        );
        Ok(Released {
            owner,
            number,
            texts,
        })
    }

    /// Begins an event's transaction with the owner locked; an unknown id is
    /// [`EngineError::UnknownOwner`].
    async fn begin_with_owner(&self, id: &OwnerId) -> Result<(S::Tx, Owner), EngineError> {
        let mut tx = self.store.begin().await?;
        let owner = tx
            .lock_owner(id)
            .await?
            .ok_or_else(|| EngineError::UnknownOwner(id.clone()))?;
        Ok((tx, owner))
    }

    /// The owner with this phone number, if any.
    pub async fn owner_by_phone(&self, phone: &PhoneNumber) -> Result<Option<Owner>, EngineError> {
        Ok(self.store.owner_by_phone(phone).await?)
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
                        Allocation::Returned(number) => {
                            tracing::info!(
                                event = "NUMBER_RETURNED",
                                owner_id = %owner.id,
                                phone = %owner.owner_phone.masked(),
                                number = %number.masked(),
                            );
                            Some(Event::NumberReturned(number))
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
                    }
                }
                Command::ReleaseNumber | Command::RetireNumber => {
                    // The conversation already forgot the number; the pool learns it here.
                    if let Some(number) = owner.twilio_number.take() {
                        let keep_for_owner = command == Command::ReleaseNumber;
                        self.quarantine(tx, &number, keep_for_owner, now).await?;
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
        let mut onboarding = Onboarding::resume(owner.state, conversation_of(owner), &ctx);
        let was_opted_out = owner.opted_out;
        let gate_before = owner.gate;
        let decision = onboarding.handle(event, &ctx);
        apply_conversation(owner, &onboarding, now);

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
        tx.queue_outbound(&NewOutbound {
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

/// The conversation's view of a stored owner (the step they are on is the machine's state).
pub fn conversation_of(owner: &Owner) -> Conversation {
    Conversation {
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
        awaiting_proof: owner.verify_started_at.is_some(),
    }
}

/// Writes a conversation back onto the stored owner, keeping the times that go with its changes
/// (`updated_at` is the caller's: it moves only when something did).
fn apply_conversation(owner: &mut Owner, onboarding: &Onboarding, now: DateTime<Utc>) {
    let c = onboarding.conversation();
    if c.paid && !owner.payment_active {
        owner.paid_at = Some(now);
    }
    if !c.paid {
        owner.paid_at = None;
    }
    match c.waitlist_place() {
        WaitlistPlace::Queued => {
            owner.waitlisted_at.get_or_insert(now);
        }
        WaitlistPlace::Held => {}
        WaitlistPlace::Out => owner.waitlisted_at = None,
    }
    // Opened by the verification call's command (which records when), closed by the conversation.
    if !c.awaiting_proof {
        owner.verify_started_at = None;
    }
    owner.state = onboarding.state();
    owner.gate = c.gate;
    owner.business_type.clone_from(&c.business_type);
    owner.location.clone_from(&c.location);
    owner.business_name.clone_from(&c.business_name);
    owner.owner_name.clone_from(&c.owner_name);
    owner.notify.clone_from(&c.notify);
    owner.phone_type = c.phone_type;
    owner.misses = c.misses;
    owner.opted_out = c.opted_out;
    owner.payment_active = c.paid;
    // A released number stays on the owner until the release command has quarantined it.
    if c.number.is_some() {
        owner.twilio_number.clone_from(&c.number);
    }
}
