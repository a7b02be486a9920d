//! The onboarding conversation as a statig state machine: a pure decision core.
//!
//! [`Onboarding::handle`] maps (state, answers, event) to (new state, replies, commands). It does no
//! I/O: the shell around it runs the commands (allocate a number, release one, place a call) and
//! feeds their results back as events.
//!
//! Shape: one statig state per step, each with an entry action that asks the step's question; one
//! superstate, `onboarding`, above them all, for what means the same everywhere: keywords (STOP,
//! START, HELP, RESTART), opt-out, operator resets and payment events. A state hands an event it
//! does not handle up to the superstate. The statig machine is what [`Onboarding`] holds, and its
//! state is the one the store keeps: [`StateName`] is only its stored name, derived in one place.

use statig::blocking::{InitializedStateMachine, IntoStateMachineExt as _, State as _};
use statig::prelude::*;

use super::parse::{self, BusinessAnswer, Confirm, Device, EditField, Keyword, NotifyAnswer};
use super::state::{Gate, StateName};
use crate::domain::{Notify, PhoneNumber, PhoneType};
use crate::flows::{Catalog, MessageKey};

/// Something that happened to an owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// An SMS from the owner.
    Text(String),
    /// The very first SMS from a new owner: greeted, and read for whatever it already says
    /// ("Hi, I'm a plumber in Leeds, saw your ad").
    FirstText(String),
    /// An SMS that ends a silence long enough to expire the conversation: welcomed back at the
    /// step the owner was on. Not read as an answer: after two weeks it rarely is one.
    TextAfterExpiry(String),
    PaymentConfirmed,
    PaymentRevoked,
    /// Numbers came into the pool: an owner waiting for one asks for it.
    NumberAvailable,
    NumberAllocated(PhoneNumber),
    /// The pool gave back the number this owner held before (still in quarantine): the forwarding
    /// they set up for it still points there.
    NumberReturned(PhoneNumber),
    PoolEmpty,
    /// A call proved that forwarding works.
    TestCallDetected,
    /// The owner called their new number from their own phone: proves nothing.
    OwnCallNotProof,
    /// No proof arrived within the verification window.
    VerifyTimedOut,
    /// An operator sent the owner back to the start (answers cleared, payment and number kept).
    Reset,
    /// An operator took the owner's number away (a spam complaint, a carrier problem): it never
    /// comes back to them, and they get another, with their plan as it was.
    NumberReleased,
}

impl Event {
    /// The stable name used in state history, logs and fixtures.
    pub fn name(&self) -> &'static str {
        match self {
            Event::Text(_) | Event::FirstText(_) | Event::TextAfterExpiry(_) => "sms",
            Event::PaymentConfirmed => "payment_confirmed",
            Event::PaymentRevoked => "payment_revoked",
            Event::NumberAvailable => "number_available",
            Event::NumberAllocated(_) => "number_allocated",
            Event::NumberReturned(_) => "number_returned",
            Event::PoolEmpty => "pool_empty",
            Event::TestCallDetected => "test_call",
            Event::OwnCallNotProof => "own_call",
            Event::VerifyTimedOut => "verify_timed_out",
            Event::Reset => "admin_reset",
            Event::NumberReleased => "admin_release_number",
        }
    }

    /// The owner's words, for the events that are a text.
    fn text(&self) -> Option<&str> {
        match self {
            Event::Text(text) | Event::FirstText(text) | Event::TextAfterExpiry(text) => Some(text),
            _ => None,
        }
    }
}

/// Work the shell must do for the conversation, then report back as an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Ask the pool for a number; answer with `NumberAllocated`, `NumberReturned` or `PoolEmpty`.
    AllocateNumber,
    /// Payment was revoked: the number goes to quarantine, kept for the owner should they pay again
    /// before it ends.
    ReleaseNumber,
    /// An operator released the number: it goes to quarantine and never back to this owner.
    RetireNumber,
    /// Place the forwarding verification call (and start its window: `VerifyTimedOut` when it ends).
    PlaceVerifyCall,
}

/// What the conversation remembers about an owner between events, besides the step they are on
/// (which is the machine's state: see [`Onboarding`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Conversation {
    pub gate: Option<Gate>,
    pub business_type: Option<String>,
    pub location: Option<String>,
    pub business_name: Option<String>,
    pub owner_name: Option<String>,
    pub notify: Option<Notify>,
    pub phone_type: Option<PhoneType>,
    pub misses: i32,
    pub opted_out: bool,
    pub paid: bool,
    pub number: Option<PhoneNumber>,
    /// A verification call was placed and neither proof nor its timeout has come: the window is open.
    pub awaiting_proof: bool,
}

/// Where an owner stands in the queue for a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitlistPlace {
    /// Paid, at the gate, no number free: served first come, first served.
    Queued,
    /// Paid and without a number, but away changing an answer: not served meanwhile, and their
    /// place is kept for when they say YES again.
    Held,
    /// Not waiting.
    Out,
}

impl Conversation {
    pub fn waitlist_place(&self) -> WaitlistPlace {
        if self.gate == Some(Gate::AwaitingNumber) {
            WaitlistPlace::Queued
        } else if self.paid && self.number.is_none() {
            WaitlistPlace::Held
        } else {
            WaitlistPlace::Out
        }
    }
}

/// What one event did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Decision {
    /// The texts to send, in order; the shell joins them into one message.
    pub replies: Vec<String>,
    pub commands: Vec<Command>,
    /// Every state change, in order (S8 to S9 to COMPLETE is two).
    pub transitions: Vec<(StateName, StateName)>,
}

/// What the core reads but never changes.
pub struct Context<'a> {
    pub catalog: &'a Catalog,
    /// The payment link with this owner's `client_reference_id`.
    pub payment_link: &'a str,
}

/// An owner's conversation: the statig machine, in the step the owner is on.
pub struct Onboarding {
    machine: InitializedStateMachine<Conversation>,
}

impl Onboarding {
    /// A new owner: at the first step, nothing answered.
    pub fn new(ctx: &Context<'_>) -> Self {
        Self::resume(
            StateName::S1BusinessTypeLocation,
            Conversation::default(),
            ctx,
        )
    }

    /// The machine in a stored step. statig 0.4 can only start a machine through `init`, which
    /// runs the entry actions down to the state; the owner has already been asked this step's
    /// question, so what those say now is dropped (entry actions only speak; see [`Turn::say`]).
    pub fn resume(state: StateName, conversation: Conversation, ctx: &Context<'_>) -> Self {
        let mut machine = conversation.uninitialized_state_machine();
        *machine.state_mut() = State::from(state);
        let mut turn = Turn::new(ctx, state, false);
        Self {
            machine: machine.init_with_context(&mut turn),
        }
    }

    /// The step the owner is on.
    pub fn state(&self) -> StateName {
        self.machine.state().name()
    }

    pub fn conversation(&self) -> &Conversation {
        self.machine.inner()
    }

    /// Runs one event through the machine, then any event a state raised on entry (S9 passes
    /// straight on). An opted-out owner is told nothing, whatever happened.
    pub fn handle(&mut self, event: &Event, ctx: &Context<'_>) -> Decision {
        let mut turn = Turn::new(ctx, self.state(), true);
        self.machine.handle_with_context(event, &mut turn);
        while let Some(raised) = turn.raised.pop() {
            turn.current = self.state();
            self.machine.handle_with_context(&raised, &mut turn);
        }
        if self.conversation().opted_out {
            turn.out.replies.clear();
        }
        turn.out
    }
}

/// The statig context: the world's read-only facts plus what this event produced.
pub struct Turn<'a> {
    ctx: &'a Context<'a>,
    /// The state the event was dispatched in, for the superstate's handler.
    current: StateName,
    /// False while resuming: the owner is not asked again what they were asked before.
    speaking: bool,
    /// Events raised by entry actions, handled after the current one.
    raised: Vec<Event>,
    out: Decision,
}

impl<'a> Turn<'a> {
    fn new(ctx: &'a Context<'a>, current: StateName, speaking: bool) -> Self {
        Turn {
            ctx,
            current,
            speaking,
            raised: Vec::new(),
            out: Decision::default(),
        }
    }

    fn say(&mut self, key: MessageKey, vars: &[(&str, &str)]) {
        if self.speaking {
            self.out.replies.push(self.ctx.catalog.render(key, vars));
        }
    }

    /// A text already rendered (a welcome back, a step's needs).
    fn say_text(&mut self, text: String) {
        if self.speaking {
            self.out.replies.push(text);
        }
    }

    fn run(&mut self, command: Command) {
        self.out.commands.push(command);
    }

    fn raise(&mut self, event: Event) {
        self.raised.push(event);
    }
}

#[state_machine(
    initial = "State::s1_business_type_location()",
    state(derive(Debug, Clone, Copy, PartialEq, Eq)),
    after_transition = "Self::after_transition"
)]
impl Conversation {
    /// What means the same in every step: keywords, opt-out, resets and payments. Every state
    /// hands up what it does not handle itself.
    #[superstate]
    fn onboarding(&mut self, context: &mut Turn<'_>, event: &Event) -> Outcome<State> {
        if let Some(text) = event.text() {
            return self.keyword(context, event, text);
        }
        match event {
            Event::Reset => {
                self.clear_answers();
                if context.current == StateName::S1BusinessTypeLocation {
                    Handled
                } else {
                    Transition(State::s1_business_type_location())
                }
            }
            Event::PaymentConfirmed => {
                self.paid = true;
                Handled
            }
            Event::PaymentRevoked => {
                let was_paid = self.paid;
                self.paid = false;
                if self.number.take().is_some() {
                    context.run(Command::ReleaseNumber);
                }
                if was_paid {
                    context.say(
                        MessageKey::PaymentRevoked,
                        &[("payment_link", context.ctx.payment_link)],
                    );
                }
                // Without payment there is no number, so nobody is live: back behind the gate.
                if context.current.is_past_gate() {
                    self.gate = Some(Gate::PaymentRequired);
                    Transition(State::s5_confirm_live())
                } else {
                    // An owner waiting at S5 (for payment or a number) now needs to pay again.
                    if self.gate.is_some() {
                        self.gate = Some(Gate::PaymentRequired);
                    }
                    Handled
                }
            }
            // The number is gone for good. An owner past the gate needs a new one, then forwarding
            // set up to it: back to S5 (waiting: no summary), where the allocation answers with the
            // number (then S6 or S7) or the wait. One still answering questions, or at the summary,
            // gets it when they say YES, as any paid owner without a number does.
            Event::NumberReleased => {
                let Some(old) = self.number.take() else {
                    return Handled;
                };
                context.run(Command::RetireNumber);
                context.say(MessageKey::NumberReleased, &[("number", &old.for_people())]);
                self.awaiting_proof = false;
                if !context.current.is_past_gate() {
                    return Handled;
                }
                if self.paid {
                    self.gate = Some(Gate::AwaitingNumber);
                    context.run(Command::AllocateNumber);
                } else {
                    // A number is only given once paid, so this cannot happen; if it does, the
                    // owner is where a refund would have left them: behind the gate.
                    self.gate = Some(Gate::PaymentRequired);
                }
                Transition(State::s5_confirm_live())
            }
            // A window can only be open at S8 (leaving S8 closes it); closing it here too means a
            // timeout never stays due.
            Event::VerifyTimedOut => {
                self.awaiting_proof = false;
                Handled
            }
            // Only an owner held at S5 asks for a number, and only one at S8 waits for a call;
            // anywhere else these are stale.
            Event::NumberAvailable
            | Event::NumberAllocated(_)
            | Event::NumberReturned(_)
            | Event::PoolEmpty
            | Event::TestCallDetected
            | Event::OwnCallNotProof => Handled,
            Event::Text(_) | Event::FirstText(_) | Event::TextAfterExpiry(_) => Handled,
        }
    }

    #[state(superstate = "onboarding", entry_action = "ask_s1")]
    fn s1_business_type_location(
        &mut self,
        context: &mut Turn<'_>,
        event: &Event,
    ) -> Outcome<State> {
        let first = matches!(event, Event::FirstText(_));
        let Some(text) = self.answer(event) else {
            return Super;
        };
        let vocabulary = context.ctx.catalog.vocabulary();
        let reading = if self.location.is_some() {
            parse::business_knowing_place(text, vocabulary)
        } else {
            parse::business(text, vocabulary)
        };
        let (trade, place) = match reading {
            BusinessAnswer::TradeAndPlace { trade, place } => (Some(trade), Some(place)),
            BusinessAnswer::Trade(trade) => (Some(trade), None),
            BusinessAnswer::Place(place) => (None, Some(place)),
            // One word that could be either fills whichever we are missing.
            BusinessAnswer::One(one) => match (&self.business_type, &self.location) {
                (Some(_), None) => (None, Some(parse::title_case(&one))),
                (None, Some(_)) => (Some(parse::capitalise_first(&one)), None),
                _ => (None, None),
            },
            BusinessAnswer::Unreadable => (None, None),
        };
        if trade.is_none() && place.is_none() {
            if first {
                // A greeting (or a question) gets the first question, not a "didn't catch that".
                context.say(MessageKey::S1Ask, &[]);
                return Handled;
            }
            return self.miss(context, MessageKey::S1Retry);
        }
        if first {
            context.say(MessageKey::Welcome, &[]);
        }
        if trade.is_some() {
            self.business_type = trade;
        }
        if place.is_some() {
            self.location = place;
        }
        match (&self.business_type, &self.location) {
            (Some(_), Some(_)) => Transition(self.next_question()),
            (Some(trade), None) => {
                // Half an answer is progress: it ends a run of misses, and the reply says what we
                // understood.
                self.misses = 0;
                let trade = trade.clone();
                context.say(MessageKey::S1AskPlace, &[("business_type", &trade)]);
                Handled
            }
            (None, _) => {
                self.misses = 0;
                let place = self.location.clone().unwrap_or_default();
                context.say(MessageKey::S1AskTrade, &[("location", &place)]);
                Handled
            }
        }
    }

    #[state(superstate = "onboarding", entry_action = "ask_s2")]
    fn s2_business_name(&mut self, context: &mut Turn<'_>, event: &Event) -> Outcome<State> {
        let Some(text) = self.answer(event) else {
            return Super;
        };
        match parse::bounded_text(text, 80) {
            Some(name) => {
                self.business_name = Some(name);
                Transition(self.next_question())
            }
            None => self.miss(context, MessageKey::S2Retry),
        }
    }

    #[state(superstate = "onboarding", entry_action = "ask_s3")]
    fn s3_owner_name(&mut self, context: &mut Turn<'_>, event: &Event) -> Outcome<State> {
        let Some(text) = self.answer(event) else {
            return Super;
        };
        match parse::bounded_text(text, 60) {
            Some(name) => {
                self.owner_name = Some(name);
                Transition(self.next_question())
            }
            None => self.miss(context, MessageKey::S3Retry),
        }
    }

    #[state(superstate = "onboarding", entry_action = "ask_s4")]
    fn s4_notification_pref(&mut self, context: &mut Turn<'_>, event: &Event) -> Outcome<State> {
        let Some(text) = self.answer(event) else {
            return Super;
        };
        match parse::notify_answer(text) {
            NotifyAnswer::Chosen(notify) => {
                self.notify = Some(notify);
                Transition(self.next_question())
            }
            NotifyAnswer::EmailWithoutAddress => {
                self.misses = 0;
                context.say(MessageKey::S4AskEmail, &[]);
                Handled
            }
            NotifyAnswer::Unreadable => self.miss(context, MessageKey::S4Retry),
        }
    }

    #[state(superstate = "onboarding", entry_action = "ask_s5")]
    fn s5_confirm_live(&mut self, context: &mut Turn<'_>, event: &Event) -> Outcome<State> {
        match event {
            Event::PaymentConfirmed => {
                self.paid = true;
                if self.gate == Some(Gate::PaymentRequired) {
                    context.run(Command::AllocateNumber);
                }
                Handled
            }
            Event::NumberAvailable if self.gate == Some(Gate::AwaitingNumber) => {
                context.run(Command::AllocateNumber);
                Handled
            }
            Event::NumberAllocated(number) => {
                self.number = Some(number.clone());
                self.gate = None;
                // A new number for an owner who already said which phone they have (theirs was
                // released, or lost with a refund): straight to the instructions for it.
                if self.phone_type.is_some() {
                    Transition(State::s7_fwd_sent())
                } else {
                    Transition(State::s6_phone_type())
                }
            }
            // Their own number again: if they already said which phone they have, forwarding is
            // set up and only the test call is left.
            Event::NumberReturned(number) => {
                self.number = Some(number.clone());
                self.gate = None;
                if self.phone_type.is_none() {
                    return Transition(State::s6_phone_type());
                }
                context.say(
                    MessageKey::NumberReturned,
                    &[("number", &number.for_people())],
                );
                self.place_verify_call(context);
                Transition(State::s8_fwd_confirmed())
            }
            Event::PoolEmpty => {
                // Waiting already (their number was released): no "payment received".
                let key = if self.gate == Some(Gate::AwaitingNumber) {
                    MessageKey::S5NoNumberYet
                } else {
                    MessageKey::S5Waitlist
                };
                self.gate = Some(Gate::AwaitingNumber);
                context.say(key, &[]);
                Handled
            }
            _ => match self.answer(event) {
                Some(text) => self.confirm(context, text),
                None => Super,
            },
        }
    }

    #[state(superstate = "onboarding", entry_action = "ask_s6")]
    fn s6_phone_type(&mut self, context: &mut Turn<'_>, event: &Event) -> Outcome<State> {
        let Some(text) = self.answer(event) else {
            return Super;
        };
        match parse::device(text, context.ctx.catalog.vocabulary()) {
            // Forwarding guard: instructions never go out without an allocated number.
            Device::Known(_) if self.number.is_none() => {
                self.gate = Some(Gate::AwaitingNumber);
                context.run(Command::AllocateNumber);
                Transition(State::s5_confirm_live())
            }
            Device::Known(phone_type) => {
                self.phone_type = Some(phone_type);
                Transition(State::s7_fwd_sent())
            }
            // "mobile", "iPhone or Android": the instructions differ, so ask rather than guess.
            Device::Unclear => self.miss(context, MessageKey::S6Clarify),
            Device::Unreadable => self.miss(context, MessageKey::S6Retry),
        }
    }

    #[state(superstate = "onboarding", entry_action = "ask_s7")]
    fn s7_fwd_sent(&mut self, context: &mut Turn<'_>, event: &Event) -> Outcome<State> {
        let Some(text) = self.answer(event) else {
            return Super;
        };
        if parse::is_done(text) {
            self.place_verify_call(context);
            Transition(State::s8_fwd_confirmed())
        } else {
            self.miss(context, MessageKey::S7Retry)
        }
    }

    /// Waiting for the test call. The window a call opens ends with proof, with the timeout (told
    /// once per call, with tips), or with leaving S8; CALL ME places another call and opens another.
    #[state(
        superstate = "onboarding",
        entry_action = "ask_s8",
        exit_action = "close_verify_window"
    )]
    fn s8_fwd_confirmed(&mut self, context: &mut Turn<'_>, event: &Event) -> Outcome<State> {
        match event {
            Event::TestCallDetected => Transition(State::s9_test_call_detected()),
            Event::OwnCallNotProof => {
                context.say(MessageKey::VerifyOwnCall, &[]);
                Handled
            }
            Event::VerifyTimedOut => {
                if self.awaiting_proof {
                    self.awaiting_proof = false;
                    context.say(MessageKey::VerifyTroubleshoot, &[]);
                }
                Handled
            }
            _ => match self.answer(event) {
                Some(text) if parse::is_call_me(text) || parse::is_done(text) => {
                    self.place_verify_call(context);
                    context.say(MessageKey::S8Ask, &[]);
                    Handled
                }
                Some(_) => {
                    context.say(MessageKey::S8Waiting, &[]);
                    Handled
                }
                None => Super,
            },
        }
    }

    /// The test call arrived: nothing to ask, onboarding completes with the same call.
    #[state(superstate = "onboarding", entry_action = "pass_on")]
    fn s9_test_call_detected(&mut self, event: &Event) -> Outcome<State> {
        match event {
            Event::TestCallDetected => Transition(State::complete()),
            _ => Super,
        }
    }

    #[state(superstate = "onboarding", entry_action = "ask_complete")]
    fn complete(&mut self, context: &mut Turn<'_>, event: &Event) -> Outcome<State> {
        match self.answer(event) {
            Some(_) => {
                context.say(MessageKey::CompleteAck, &[]);
                Handled
            }
            None => Super,
        }
    }

    // Entry actions: entering a step asks its question. They only speak (resuming a stored
    // machine runs them silently), so they take `&self`.

    /// Back from the summary to change the trade or the town: ask only for that.
    #[action]
    fn ask_s1(&self, context: &mut Turn<'_>) {
        let key = match (&self.business_name, &self.business_type, &self.location) {
            (Some(_), None, Some(_)) => MessageKey::S1EditTrade,
            (Some(_), Some(_), None) => MessageKey::S1EditPlace,
            _ => MessageKey::S1Ask,
        };
        context.say(key, &[]);
    }

    #[action]
    fn ask_s2(&self, context: &mut Turn<'_>) {
        context.say(
            MessageKey::S2Ask,
            &[
                ("business_type", text(&self.business_type)),
                ("location", text(&self.location)),
            ],
        );
    }

    #[action]
    fn ask_s3(&self, context: &mut Turn<'_>) {
        context.say(
            MessageKey::S3Ask,
            &[("business_name", text(&self.business_name))],
        );
    }

    #[action]
    fn ask_s4(&self, context: &mut Turn<'_>) {
        context.say(MessageKey::S4Ask, &[("owner_name", text(&self.owner_name))]);
    }

    /// The summary of every answer; nothing for an owner back here only to wait for a number
    /// (the allocation that brought them answers with the number or the wait).
    #[action]
    fn ask_s5(&self, context: &mut Turn<'_>) {
        if self.gate == Some(Gate::AwaitingNumber) {
            return;
        }
        let notify = match &self.notify {
            Some(Notify::Email(address)) => address.as_str(),
            _ => "SMS",
        };
        context.say(
            MessageKey::S5Summary,
            &[
                ("business_type", text(&self.business_type)),
                ("location", text(&self.location)),
                ("business_name", text(&self.business_name)),
                ("owner_name", text(&self.owner_name)),
                ("notify", notify),
            ],
        );
    }

    /// The new number, shown to read, not to dial: in the owner's national format.
    #[action]
    fn ask_s6(&self, context: &mut Turn<'_>) {
        let number = self
            .number
            .as_ref()
            .map(PhoneNumber::for_people)
            .unwrap_or_default();
        context.say(MessageKey::S6Ask, &[("number", &number)]);
    }

    /// The forwarding codes for their phone (never without a number: S6 guards that).
    #[action]
    fn ask_s7(&self, context: &mut Turn<'_>) {
        let (Some(number), Some(phone_type)) = (&self.number, self.phone_type) else {
            return;
        };
        let key = match phone_type {
            PhoneType::Iphone => MessageKey::FwdIphone,
            PhoneType::Android => MessageKey::FwdAndroid,
            PhoneType::Landline => MessageKey::FwdLandline,
        };
        context.say(
            key,
            &[
                ("number", number.as_str()),
                ("number_national", &number.national()),
            ],
        );
    }

    #[action]
    fn ask_s8(&self, context: &mut Turn<'_>) {
        context.say(MessageKey::S8Ask, &[]);
    }

    /// S9 asks nothing: the call that proved forwarding also completes onboarding.
    #[action]
    fn pass_on(&self, context: &mut Turn<'_>) {
        context.raise(Event::TestCallDetected);
    }

    #[action]
    fn ask_complete(&self, context: &mut Turn<'_>) {
        context.say(MessageKey::Complete, &[]);
    }

    #[action]
    fn close_verify_window(&mut self) {
        self.awaiting_proof = false;
    }
}

impl Conversation {
    /// Entering a state resets the miss count; the history records the move.
    fn after_transition(&mut self, source: &State, target: &State, context: &mut Turn<'_>) {
        self.misses = 0;
        context.out.transitions.push((source.name(), target.name()));
    }

    /// The text of an ordinary answer; keywords, provider events and everything an opted-out
    /// owner sends go to the superstate.
    fn answer<'e>(&self, event: &'e Event) -> Option<&'e str> {
        match event {
            Event::Text(text) | Event::FirstText(text)
                if !self.opted_out && parse::keyword(text, false).is_none() =>
            {
                Some(text)
            }
            _ => None,
        }
    }

    /// A text the current state did not take as an answer.
    fn keyword(&mut self, context: &mut Turn<'_>, event: &Event, text: &str) -> Outcome<State> {
        if self.opted_out {
            // Until START, a text changes nothing and gets no answer.
            if parse::keyword(text, true) == Some(Keyword::OptIn) {
                self.opted_out = false;
                context.say(MessageKey::OptedIn, &[]);
                self.ask(context);
            }
            return Handled;
        }
        match parse::keyword(text, false) {
            Some(Keyword::OptOut) => {
                self.opted_out = true;
                Handled
            }
            Some(Keyword::OptIn) => {
                self.ask(context);
                Handled
            }
            Some(Keyword::Help) => {
                let step = context
                    .ctx
                    .catalog
                    .render(step_key(context.current, self.gate), &[]);
                context.say(MessageKey::Help, &[("step", &step)]);
                Handled
            }
            Some(Keyword::Restart) => {
                self.clear_answers();
                context.say(MessageKey::Restart, &[]);
                if context.current == StateName::S1BusinessTypeLocation {
                    self.ask(context);
                    Handled
                } else {
                    Transition(State::s1_business_type_location())
                }
            }
            // Back after a long silence: welcomed, and told what the step needs.
            None if matches!(event, Event::TextAfterExpiry(_)) => {
                let welcome = context.ctx.catalog.reminders().welcome_back.clone();
                context.say_text(welcome);
                if let Some(ask) = self.needs(context.current, context) {
                    context.say_text(ask);
                }
                Handled
            }
            None => Handled,
        }
    }

    /// Asks the current step's question again, as entering it does (START, RESTART at S1).
    fn ask(&mut self, context: &mut Turn<'_>) {
        State::from(context.current).call_entry_action(self, context);
    }

    /// What the step needs from the owner, for a reminder or a welcome back: at the payment gate
    /// the payment link, while waiting for a number that we are finding it, at S8 the test-call
    /// tips; elsewhere the step's question. `None` when the step has nothing to ask.
    pub(crate) fn needs(&self, state: StateName, context: &Turn<'_>) -> Option<String> {
        let catalog = context.ctx.catalog;
        let text = match (state, self.gate) {
            (StateName::S5ConfirmLive, Some(Gate::PaymentRequired)) => catalog.render(
                MessageKey::S5Pay,
                &[("payment_link", context.ctx.payment_link)],
            ),
            (StateName::S5ConfirmLive, Some(Gate::AwaitingNumber)) => {
                catalog.render(MessageKey::S5Waitlist, &[])
            }
            (StateName::S8FwdConfirmed, _) => catalog.render(MessageKey::VerifyTroubleshoot, &[]),
            _ => {
                let mut turn = Turn::new(context.ctx, state, true);
                State::from(state).call_entry_action(&mut self.clone(), &mut turn);
                turn.out.replies.pop()?
            }
        };
        (!text.is_empty()).then_some(text)
    }

    /// A reply at the summary that is not EDIT: YES goes on to payment or a number; anything
    /// else is answered for where the owner stands (unpaid, sent the link, paid, waiting for a
    /// number).
    fn confirm(&mut self, context: &mut Turn<'_>, text: &str) -> Outcome<State> {
        // A change named is never a yes: "yes but the name is wrong" edits.
        if let Some(field) = parse::edit(text) {
            return self.edit(field);
        }
        let reply = parse::confirm(text);
        if self.gate == Some(Gate::AwaitingNumber) && reply != Confirm::Yes {
            // Paid, and nothing is asked of them: whatever they say, we are finding their number.
            self.misses = 0;
            context.say(MessageKey::S5FindingNumber, &[]);
            return Handled;
        }
        match reply {
            Confirm::Yes => {
                self.misses = 0;
                if self.paid {
                    context.run(Command::AllocateNumber);
                } else {
                    self.gate = Some(Gate::PaymentRequired);
                    context.say(
                        MessageKey::S5Pay,
                        &[("payment_link", context.ctx.payment_link)],
                    );
                }
                Handled
            }
            Confirm::No if self.paid => {
                context.say(MessageKey::S5ExplainPaid, &[]);
                Handled
            }
            Confirm::No => {
                context.say(MessageKey::S5Explain, &[]);
                Handled
            }
            // "wait a sec yes", "yes?": an unclear reply costs a question, a wrong guess an owner.
            Confirm::Unclear => self.miss(context, MessageKey::S5Clarify),
            Confirm::Unreadable if self.paid => self.miss(context, MessageKey::S5ExplainPaid),
            // They said YES and were sent the link: send it again rather than ask for YES again.
            Confirm::Unreadable if self.gate == Some(Gate::PaymentRequired) => {
                self.misses += 1;
                context.say(
                    MessageKey::S5Pay,
                    &[("payment_link", context.ctx.payment_link)],
                );
                self.stuck(context);
                Handled
            }
            Confirm::Unreadable => self.miss(context, MessageKey::S5Explain),
        }
    }

    fn place_verify_call(&mut self, context: &mut Turn<'_>) {
        self.awaiting_proof = true;
        context.run(Command::PlaceVerifyCall);
    }

    /// An answer that does not fit: the hint, and from the third miss in a row, how to get help.
    fn miss(&mut self, context: &mut Turn<'_>, hint: MessageKey) -> Outcome<State> {
        self.misses += 1;
        context.say(hint, &[]);
        self.stuck(context);
        Handled
    }

    fn stuck(&self, context: &mut Turn<'_>) {
        if self.misses >= 3 {
            context.say(MessageKey::Stuck, &[]);
        }
    }

    /// The first question still unanswered, or the summary when none is: the usual order, and
    /// after an edit of one answer, straight back to the summary.
    fn next_question(&self) -> State {
        if self.business_type.is_none() || self.location.is_none() {
            State::s1_business_type_location()
        } else if self.business_name.is_none() {
            State::s2_business_name()
        } else if self.owner_name.is_none() {
            State::s3_owner_name()
        } else if self.notify.is_none() {
            State::s4_notification_pref()
        } else {
            State::s5_confirm_live()
        }
    }

    /// EDIT at the summary: a named answer is asked again alone; otherwise all of them are.
    /// Either way the owner says YES again afterwards.
    fn edit(&mut self, field: EditField) -> Outcome<State> {
        if field == EditField::Everything {
            self.clear_answers();
            return Transition(State::s1_business_type_location());
        }
        self.gate = None;
        self.misses = 0;
        match field {
            EditField::Trade => self.business_type = None,
            EditField::Place => self.location = None,
            EditField::BusinessName => self.business_name = None,
            EditField::OwnerName => self.owner_name = None,
            EditField::Notify => self.notify = None,
            EditField::Everything => {}
        }
        Transition(self.next_question())
    }

    /// RESTART and EDIT: the answers go; payment and number stay.
    fn clear_answers(&mut self) {
        self.gate = None;
        self.business_type = None;
        self.location = None;
        self.business_name = None;
        self.owner_name = None;
        self.notify = None;
        self.phone_type = None;
        self.misses = 0;
    }
}

fn text(value: &Option<String>) -> &str {
    value.as_deref().unwrap_or_default()
}

/// The step's name in HELP; at the gate, what the owner is waiting for.
fn step_key(state: StateName, gate: Option<Gate>) -> MessageKey {
    match state {
        StateName::S1BusinessTypeLocation => MessageKey::StepS1,
        StateName::S2BusinessName => MessageKey::StepS2,
        StateName::S3OwnerName => MessageKey::StepS3,
        StateName::S4NotificationPref => MessageKey::StepS4,
        StateName::S5ConfirmLive => match gate {
            Some(Gate::PaymentRequired) => MessageKey::StepS5Payment,
            Some(Gate::AwaitingNumber) => MessageKey::StepS5Number,
            None => MessageKey::StepS5,
        },
        StateName::S6PhoneType => MessageKey::StepS6,
        StateName::S7FwdSent => MessageKey::StepS7,
        StateName::S8FwdConfirmed => MessageKey::StepS8,
        StateName::S9TestCallDetected => MessageKey::StepS9,
        StateName::Complete => MessageKey::StepComplete,
    }
}

/// The one mapping between the machine's states and their stored names.
impl State {
    pub fn name(&self) -> StateName {
        match self {
            State::S1BusinessTypeLocation {} => StateName::S1BusinessTypeLocation,
            State::S2BusinessName {} => StateName::S2BusinessName,
            State::S3OwnerName {} => StateName::S3OwnerName,
            State::S4NotificationPref {} => StateName::S4NotificationPref,
            State::S5ConfirmLive {} => StateName::S5ConfirmLive,
            State::S6PhoneType {} => StateName::S6PhoneType,
            State::S7FwdSent {} => StateName::S7FwdSent,
            State::S8FwdConfirmed {} => StateName::S8FwdConfirmed,
            State::S9TestCallDetected {} => StateName::S9TestCallDetected,
            State::Complete {} => StateName::Complete,
        }
    }
}

impl From<StateName> for State {
    fn from(name: StateName) -> Self {
        match name {
            StateName::S1BusinessTypeLocation => State::s1_business_type_location(),
            StateName::S2BusinessName => State::s2_business_name(),
            StateName::S3OwnerName => State::s3_owner_name(),
            StateName::S4NotificationPref => State::s4_notification_pref(),
            StateName::S5ConfirmLive => State::s5_confirm_live(),
            StateName::S6PhoneType => State::s6_phone_type(),
            StateName::S7FwdSent => State::s7_fwd_sent(),
            StateName::S8FwdConfirmed => State::s8_fwd_confirmed(),
            StateName::S9TestCallDetected => State::s9_test_call_detected(),
            StateName::Complete => State::complete(),
        }
    }
}

/// What the owner's step needs from them (see [`Conversation::needs`]), for reminders.
pub fn needs(state: StateName, conversation: &Conversation, ctx: &Context<'_>) -> Option<String> {
    conversation.needs(state, &Turn::new(ctx, state, true))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::domain::Locale;
    use crate::flows::Flows;

    const LINK: &str = "https://pay.example/link";

    fn flows() -> &'static Flows {
        static FLOWS: std::sync::OnceLock<Flows> = std::sync::OnceLock::new();
        FLOWS.get_or_init(|| Flows::embedded().expect("the shipped flows load"))
    }

    fn ctx(locale: Locale) -> Context<'static> {
        Context {
            catalog: flows().catalog(locale),
            payment_link: LINK,
        }
    }

    fn say(key: MessageKey) -> String {
        flows().catalog(Locale::EnGb).render(key, &[])
    }

    fn number() -> PhoneNumber {
        "+447700900900".parse().unwrap()
    }

    /// An owner who has answered everything up to `state`, as the machine would have left them.
    fn owner_at(state: StateName) -> Conversation {
        let mut c = Conversation::default();
        if state == StateName::S1BusinessTypeLocation {
            return c;
        }
        c.business_type = Some("Plumber".into());
        c.location = Some("Leeds".into());
        if state == StateName::S2BusinessName {
            return c;
        }
        c.business_name = Some("Smith & Sons".into());
        if state == StateName::S3OwnerName {
            return c;
        }
        c.owner_name = Some("Jo".into());
        if state == StateName::S4NotificationPref {
            return c;
        }
        c.notify = Some(Notify::Sms);
        if state == StateName::S5ConfirmLive {
            return c;
        }
        c.paid = true;
        c.number = Some(number());
        if state == StateName::S6PhoneType {
            return c;
        }
        c.phone_type = Some(PhoneType::Android);
        c
    }

    fn run(state: StateName, conversation: Conversation, event: Event) -> (Onboarding, Decision) {
        let ctx = ctx(Locale::EnGb);
        let mut onboarding = Onboarding::resume(state, conversation, &ctx);
        let decision = onboarding.handle(&event, &ctx);
        (onboarding, decision)
    }

    fn text(words: &str) -> Event {
        Event::Text(words.to_owned())
    }

    /// What entering `state` says, straight from its entry action.
    fn entry(state: StateName, conversation: &Conversation) -> Vec<String> {
        let ctx = ctx(Locale::EnGb);
        let mut turn = Turn::new(&ctx, state, true);
        State::from(state).call_entry_action(&mut conversation.clone(), &mut turn);
        turn.out.replies
    }

    #[test]
    fn state_names_map_to_machine_states_and_back() {
        for name in StateName::ALL {
            assert_eq!(State::from(name).name(), name);
        }
    }

    #[test]
    fn every_state_asks_its_question_on_entry() {
        let catalog = flows().catalog(Locale::EnGb);
        for state in StateName::ALL {
            let said = entry(state, &owner_at(state));
            let want: Vec<String> = match state {
                StateName::S1BusinessTypeLocation => vec![say(MessageKey::S1Ask)],
                StateName::S2BusinessName => vec![catalog.render(
                    MessageKey::S2Ask,
                    &[("business_type", "Plumber"), ("location", "Leeds")],
                )],
                StateName::S3OwnerName => {
                    vec![catalog.render(MessageKey::S3Ask, &[("business_name", "Smith & Sons")])]
                }
                StateName::S4NotificationPref => {
                    vec![catalog.render(MessageKey::S4Ask, &[("owner_name", "Jo")])]
                }
                StateName::S5ConfirmLive => vec![catalog.render(
                    MessageKey::S5Summary,
                    &[
                        ("business_type", "Plumber"),
                        ("location", "Leeds"),
                        ("business_name", "Smith & Sons"),
                        ("owner_name", "Jo"),
                        ("notify", "SMS"),
                    ],
                )],
                StateName::S6PhoneType => {
                    vec![catalog.render(MessageKey::S6Ask, &[("number", "07700 900900")])]
                }
                StateName::S7FwdSent => vec![catalog.render(
                    MessageKey::FwdAndroid,
                    &[
                        ("number", "+447700900900"),
                        ("number_national", &number().national()),
                    ],
                )],
                StateName::S8FwdConfirmed => vec![say(MessageKey::S8Ask)],
                // S9 asks nothing: it passes straight on.
                StateName::S9TestCallDetected => vec![],
                StateName::Complete => vec![say(MessageKey::Complete)],
            };
            assert_eq!(said, want, "{state}");
        }
    }

    #[test]
    fn resuming_a_stored_owner_says_nothing_and_changes_nothing() {
        for state in StateName::ALL {
            let mut conversation = owner_at(state);
            conversation.misses = 2;
            let onboarding = Onboarding::resume(state, conversation.clone(), &ctx(Locale::EnGb));
            assert_eq!(onboarding.state(), state);
            assert_eq!(onboarding.conversation(), &conversation);
            // The next event is answered alone, without the step's question before it.
            let (_, decision) = run(state, conversation, text("HELP"));
            assert_eq!(decision.replies.len(), 1, "{state}: {:?}", decision.replies);
            assert!(decision.replies[0].starts_with("You're on: "));
        }
    }

    #[test]
    fn a_transition_asks_the_new_question_and_resets_misses() {
        let mut at_s2 = owner_at(StateName::S2BusinessName);
        at_s2.misses = 2;
        let (onboarding, decision) = run(StateName::S2BusinessName, at_s2, text("Smith & Sons"));
        assert_eq!(onboarding.state(), StateName::S3OwnerName);
        assert_eq!(onboarding.conversation().misses, 0);
        assert_eq!(
            decision.transitions,
            vec![(StateName::S2BusinessName, StateName::S3OwnerName)]
        );
        assert_eq!(
            decision.replies,
            entry(StateName::S3OwnerName, onboarding.conversation())
        );
    }

    #[test]
    fn the_first_text_is_greeted_and_read() {
        let s1 = StateName::S1BusinessTypeLocation;
        let (onboarding, decision) =
            run(s1, Conversation::default(), Event::FirstText("Hi".into()));
        assert_eq!(onboarding.state(), s1);
        assert_eq!(decision.replies, vec![say(MessageKey::S1Ask)]);
        assert_eq!(onboarding.conversation().misses, 0);

        let (onboarding, decision) = run(
            s1,
            Conversation::default(),
            Event::FirstText("Hi, plumber in Leeds here".into()),
        );
        assert_eq!(onboarding.state(), StateName::S2BusinessName);
        assert_eq!(decision.replies[0], say(MessageKey::Welcome));
        assert_eq!(decision.replies.len(), 2);

        // A later text that says nothing is a miss, not a greeting.
        let (_, decision) = run(s1, Conversation::default(), text("Hi"));
        assert_eq!(decision.replies, vec![say(MessageKey::S1Retry)]);
    }

    #[test]
    fn a_paid_owner_waiting_for_a_number_is_told_we_are_finding_it() {
        let mut waiting = owner_at(StateName::S5ConfirmLive);
        waiting.paid = true;
        waiting.gate = Some(Gate::AwaitingNumber);
        for words in ["hello?", "no", "2", "what now", "yes?", "\u{1F44B}"] {
            let (onboarding, decision) =
                run(StateName::S5ConfirmLive, waiting.clone(), text(words));
            assert_eq!(
                decision.replies,
                vec![say(MessageKey::S5FindingNumber)],
                "{words:?}"
            );
            assert_eq!(onboarding.conversation(), &waiting, "{words:?}");
            assert!(decision.commands.is_empty());
        }
        // YES tries the pool again.
        let (_, decision) = run(StateName::S5ConfirmLive, waiting.clone(), text("yes"));
        assert_eq!(decision.commands, vec![Command::AllocateNumber]);
        // HELP names what they are waiting for.
        let (_, decision) = run(StateName::S5ConfirmLive, waiting, text("help"));
        assert!(
            decision.replies[0].contains(&say(MessageKey::StepS5Number)),
            "{:?}",
            decision.replies
        );
    }

    #[test]
    fn a_paid_owner_at_the_summary_is_never_told_to_pay() {
        let mut paid = owner_at(StateName::S5ConfirmLive);
        paid.paid = true;
        for words in ["hello?", "no", "not yet"] {
            let (_, decision) = run(StateName::S5ConfirmLive, paid.clone(), text(words));
            assert_eq!(
                decision.replies,
                vec![say(MessageKey::S5ExplainPaid)],
                "{words:?}"
            );
        }
    }

    #[test]
    fn an_owner_sent_the_payment_link_gets_it_again() {
        let mut sent = owner_at(StateName::S5ConfirmLive);
        sent.gate = Some(Gate::PaymentRequired);
        let (onboarding, decision) = run(StateName::S5ConfirmLive, sent, text("hello?"));
        assert_eq!(decision.replies.len(), 1);
        assert!(decision.replies[0].contains(LINK), "{:?}", decision.replies);
        assert_eq!(onboarding.conversation().misses, 1);
        assert_eq!(onboarding.conversation().gate, Some(Gate::PaymentRequired));
    }

    #[test]
    fn a_number_coming_free_serves_only_an_owner_waiting_for_one() {
        let mut waiting = owner_at(StateName::S5ConfirmLive);
        waiting.paid = true;
        waiting.gate = Some(Gate::AwaitingNumber);
        assert_eq!(waiting.waitlist_place(), WaitlistPlace::Queued);
        let (_, decision) = run(
            StateName::S5ConfirmLive,
            waiting.clone(),
            Event::NumberAvailable,
        );
        assert_eq!(decision.commands, vec![Command::AllocateNumber]);
        assert!(decision.replies.is_empty());

        // Told their number when it comes.
        let (onboarding, decision) = run(
            StateName::S5ConfirmLive,
            waiting.clone(),
            Event::NumberAllocated(number()),
        );
        assert_eq!(onboarding.state(), StateName::S6PhoneType);
        assert_eq!(
            onboarding.conversation().waitlist_place(),
            WaitlistPlace::Out
        );
        assert!(decision.replies[0].contains("07700 900900"));

        // Away changing an answer: their place is held, and they are not served meanwhile.
        let (onboarding, _) = run(
            StateName::S5ConfirmLive,
            waiting,
            text("change the business name"),
        );
        assert_eq!(onboarding.state(), StateName::S2BusinessName);
        assert_eq!(
            onboarding.conversation().waitlist_place(),
            WaitlistPlace::Held
        );
        let (_, decision) = run(
            StateName::S2BusinessName,
            onboarding.conversation().clone(),
            Event::NumberAvailable,
        );
        assert!(decision.commands.is_empty() && decision.replies.is_empty());

        for state in StateName::ALL {
            if state != StateName::S5ConfirmLive {
                let (_, decision) = run(state, owner_at(state), Event::NumberAvailable);
                assert_eq!(decision, Decision::default(), "{state}");
            }
        }
    }

    #[test]
    fn the_pool_running_dry_puts_a_paid_owner_on_the_waitlist() {
        let mut paid = owner_at(StateName::S5ConfirmLive);
        paid.paid = true;
        let (onboarding, decision) = run(StateName::S5ConfirmLive, paid, Event::PoolEmpty);
        assert_eq!(onboarding.conversation().gate, Some(Gate::AwaitingNumber));
        assert_eq!(decision.replies, vec![say(MessageKey::S5Waitlist)]);
    }

    #[test]
    fn a_released_number_is_replaced_and_forwarding_set_up_again() {
        let live = owner_at(StateName::Complete);
        let (onboarding, decision) = run(StateName::Complete, live, Event::NumberReleased);
        assert_eq!(onboarding.state(), StateName::S5ConfirmLive);
        let waiting = onboarding.conversation().clone();
        assert_eq!(waiting.number, None);
        assert_eq!(waiting.gate, Some(Gate::AwaitingNumber));
        assert!(waiting.paid);
        // The old number never comes back to them; a new one is asked for at once.
        assert_eq!(
            decision.commands,
            vec![Command::RetireNumber, Command::AllocateNumber]
        );
        // Told why, and nothing else yet: no summary, no "reply YES".
        let told = flows().catalog(Locale::EnGb).render(
            MessageKey::NumberReleased,
            &[("number", &number().for_people())],
        );
        assert_eq!(decision.replies, vec![told]);

        // A new number: they said which phone they have, so the instructions for it come next.
        let new: PhoneNumber = "+447700900901".parse().unwrap();
        let (onboarding, decision) = run(
            StateName::S5ConfirmLive,
            waiting.clone(),
            Event::NumberAllocated(new.clone()),
        );
        assert_eq!(onboarding.state(), StateName::S7FwdSent);
        assert_eq!(onboarding.conversation().number, Some(new));
        assert_eq!(onboarding.conversation().gate, None);
        assert_eq!(
            decision.replies,
            entry(StateName::S7FwdSent, onboarding.conversation())
        );

        // None free: they wait, told so without a "payment received".
        let (onboarding, decision) = run(StateName::S5ConfirmLive, waiting, Event::PoolEmpty);
        assert_eq!(onboarding.conversation().gate, Some(Gate::AwaitingNumber));
        assert_eq!(decision.replies, vec![say(MessageKey::S5NoNumberYet)]);
    }

    #[test]
    fn a_released_number_waits_for_the_yes_of_an_owner_still_answering() {
        let mut answering = owner_at(StateName::S3OwnerName);
        answering.paid = true;
        answering.number = Some(number());
        let (onboarding, decision) = run(StateName::S3OwnerName, answering, Event::NumberReleased);
        assert_eq!(onboarding.state(), StateName::S3OwnerName);
        assert_eq!(decision.commands, vec![Command::RetireNumber]);
        assert_eq!(onboarding.conversation().number, None);
        assert_eq!(
            onboarding.conversation().waitlist_place(),
            WaitlistPlace::Held
        );
    }

    #[test]
    fn releasing_an_owner_without_a_number_does_nothing() {
        for state in StateName::ALL {
            let mut c = owner_at(state);
            c.number = None;
            let (onboarding, decision) = run(state, c.clone(), Event::NumberReleased);
            assert_eq!(decision, Decision::default(), "{state}");
            assert_eq!(onboarding.conversation(), &c, "{state}");
        }
    }

    #[test]
    fn the_verification_window_tells_once_and_call_me_opens_another() {
        let s7 = owner_at(StateName::S7FwdSent);
        let (onboarding, decision) = run(StateName::S7FwdSent, s7, text("done"));
        assert_eq!(onboarding.state(), StateName::S8FwdConfirmed);
        assert_eq!(decision.commands, vec![Command::PlaceVerifyCall]);
        assert!(onboarding.conversation().awaiting_proof);

        let s8 = StateName::S8FwdConfirmed;
        let (onboarding, decision) =
            run(s8, onboarding.conversation().clone(), Event::VerifyTimedOut);
        assert_eq!(decision.replies, vec![say(MessageKey::VerifyTroubleshoot)]);
        assert!(!onboarding.conversation().awaiting_proof);
        // The same window never tells twice.
        let closed = onboarding.conversation().clone();
        let (_, decision) = run(s8, closed.clone(), Event::VerifyTimedOut);
        assert_eq!(decision, Decision::default());

        let (onboarding, decision) = run(s8, closed.clone(), text("call me"));
        assert_eq!(decision.commands, vec![Command::PlaceVerifyCall]);
        assert_eq!(decision.replies, vec![say(MessageKey::S8Ask)]);
        assert!(onboarding.conversation().awaiting_proof);

        let (_, decision) = run(s8, closed, text("hello?"));
        assert_eq!(decision.replies, vec![say(MessageKey::S8Waiting)]);
        assert!(decision.commands.is_empty());
    }

    #[test]
    fn a_test_call_passes_through_s9_to_complete_and_closes_the_window() {
        let mut waiting = owner_at(StateName::S8FwdConfirmed);
        waiting.awaiting_proof = true;
        let (onboarding, decision) =
            run(StateName::S8FwdConfirmed, waiting, Event::TestCallDetected);
        assert_eq!(onboarding.state(), StateName::Complete);
        assert!(!onboarding.conversation().awaiting_proof);
        assert_eq!(
            decision.transitions,
            vec![
                (StateName::S8FwdConfirmed, StateName::S9TestCallDetected),
                (StateName::S9TestCallDetected, StateName::Complete),
            ]
        );
        assert_eq!(decision.replies, vec![say(MessageKey::Complete)]);
    }

    #[test]
    fn an_expired_conversation_is_welcomed_back_at_its_step() {
        let s3 = StateName::S3OwnerName;
        let at_s3 = owner_at(s3);
        let back = Event::TextAfterExpiry("Jo Smith".into());
        let (onboarding, decision) = run(s3, at_s3.clone(), back.clone());
        let catalog = flows().catalog(Locale::EnGb);
        assert_eq!(
            decision.replies,
            [
                vec![catalog.reminders().welcome_back.clone()],
                entry(s3, &at_s3)
            ]
            .concat()
        );
        // Not taken as an answer.
        assert_eq!(onboarding.state(), s3);
        assert_eq!(onboarding.conversation(), &at_s3);

        // At the payment gate, the link again.
        let mut gate = owner_at(StateName::S5ConfirmLive);
        gate.gate = Some(Gate::PaymentRequired);
        let (_, decision) = run(StateName::S5ConfirmLive, gate, back.clone());
        assert!(decision.replies[1].contains(LINK));

        // Keywords keep their meaning; an opted-out owner is not answered.
        let (onboarding, decision) = run(s3, at_s3.clone(), Event::TextAfterExpiry("STOP".into()));
        assert!(onboarding.conversation().opted_out && decision.replies.is_empty());
        let (_, decision) = run(s3, onboarding.conversation().clone(), back);
        assert!(decision.replies.is_empty());
    }

    #[test]
    fn stop_in_any_step_silences_until_start_asks_the_step_again() {
        for state in StateName::ALL {
            if state == StateName::S9TestCallDetected {
                continue;
            }
            let (stopped, decision) = run(state, owner_at(state), text("STOP"));
            assert!(stopped.conversation().opted_out, "{state}");
            assert_eq!(stopped.state(), state);
            assert!(decision.replies.is_empty(), "{state}");
            let quiet = stopped.conversation().clone();
            for words in ["hello?", "HELP", "yes please", "RESTART"] {
                let (still, decision) = run(state, quiet.clone(), text(words));
                assert_eq!(still.conversation(), &quiet, "{state} {words:?}");
                assert!(decision.replies.is_empty(), "{state} {words:?}");
            }
            let (back, decision) = run(state, quiet, text("START"));
            assert!(!back.conversation().opted_out);
            assert_eq!(
                decision.replies,
                [
                    vec![say(MessageKey::OptedIn)],
                    entry(state, &owner_at(state))
                ]
                .concat(),
                "{state}"
            );
        }
    }

    #[test]
    fn provider_events_still_apply_to_an_opted_out_owner_silently() {
        let mut stopped = owner_at(StateName::S5ConfirmLive);
        stopped.opted_out = true;
        stopped.gate = Some(Gate::PaymentRequired);
        let (onboarding, decision) =
            run(StateName::S5ConfirmLive, stopped, Event::PaymentConfirmed);
        assert!(onboarding.conversation().paid);
        assert_eq!(decision.commands, vec![Command::AllocateNumber]);
        assert!(decision.replies.is_empty());
    }

    // ---------------------------------------------------------------------------------------
    // Every state x every kind of event.

    const TEXTS: [&str; 16] = [
        "yes",
        "no",
        "hello?",
        "STOP",
        "START",
        "HELP",
        "RESTART",
        "EDIT",
        "change the town",
        "2",
        "DONE",
        "CALL ME",
        "Plumber in Leeds",
        "",
        "\u{1F44D}",
        "jo@example.com",
    ];

    fn any_state() -> impl Strategy<Value = StateName> {
        prop::sample::select(StateName::ALL.to_vec()).prop_filter("S9 is never stored", |s| {
            *s != StateName::S9TestCallDetected
        })
    }

    fn any_event() -> impl Strategy<Value = Event> {
        let words = prop::sample::select(TEXTS.to_vec()).prop_map(str::to_owned);
        prop_oneof![
            words.clone().prop_map(Event::Text),
            words.clone().prop_map(Event::FirstText),
            words.prop_map(Event::TextAfterExpiry),
            ".{0,40}".prop_map(Event::Text),
            Just(Event::PaymentConfirmed),
            Just(Event::PaymentRevoked),
            Just(Event::NumberAvailable),
            Just(Event::NumberAllocated(number())),
            Just(Event::NumberReturned(number())),
            Just(Event::PoolEmpty),
            Just(Event::TestCallDetected),
            Just(Event::OwnCallNotProof),
            Just(Event::VerifyTimedOut),
            Just(Event::Reset),
            Just(Event::NumberReleased),
        ]
    }

    /// A stored owner the machine could have left at `state`.
    fn owner(state: StateName) -> impl Strategy<Value = Conversation> {
        (any::<bool>(), 0..4i32, any::<bool>(), 0..3u8).prop_map(
            move |(opted_out, misses, flag, gate)| {
                let mut c = owner_at(state);
                c.opted_out = opted_out;
                c.misses = misses;
                match state {
                    StateName::S5ConfirmLive => match gate {
                        0 => c.paid = flag,
                        1 => c.gate = Some(Gate::PaymentRequired),
                        _ => {
                            c.paid = true;
                            c.gate = Some(Gate::AwaitingNumber);
                        }
                    },
                    StateName::S8FwdConfirmed => c.awaiting_proof = flag,
                    _ => {}
                }
                c
            },
        )
    }

    fn owner_and_state() -> impl Strategy<Value = (StateName, Conversation)> {
        any_state().prop_flat_map(|state| (Just(state), owner(state)))
    }

    proptest! {
        #[test]
        fn every_state_handles_every_event_and_lands_in_a_state_that_exists(
            (state, conversation) in owner_and_state(),
            events in prop::collection::vec(any_event(), 1..6),
            us in any::<bool>(),
        ) {
            let ctx = ctx(if us { Locale::EnUs } else { Locale::EnGb });
            let mut at = state;
            let mut stored = conversation;
            for event in &events {
                let mut onboarding = Onboarding::resume(at, stored, &ctx);
                let decision = onboarding.handle(event, &ctx);
                let now = onboarding.state();
                let c = onboarding.conversation();
                prop_assert!(StateName::ALL.contains(&now));
                prop_assert_eq!(State::from(now).name(), now);
                // S9 never rests; the gate only holds at the summary; the window only at S8.
                prop_assert_ne!(now, StateName::S9TestCallDetected);
                prop_assert!(c.gate.is_none() || now == StateName::S5ConfirmLive, "{:?} at {}", c.gate, now);
                prop_assert!(!c.awaiting_proof || now == StateName::S8FwdConfirmed);
                // Forwarding is never asked about without a number.
                prop_assert!(!now.is_past_gate() || c.number.is_some());
                prop_assert!(c.misses >= 0);
                if c.opted_out {
                    prop_assert!(decision.replies.is_empty());
                }
                prop_assert!(decision.replies.iter().all(|r| !r.is_empty()));
                // The recorded transitions chain from where the owner was to where they are.
                let mut from = at;
                for (a, b) in &decision.transitions {
                    prop_assert_eq!(*a, from);
                    from = *b;
                }
                prop_assert_eq!(from, now);
                if decision.commands.contains(&Command::PlaceVerifyCall) {
                    prop_assert!(c.awaiting_proof);
                }
                at = now;
                stored = c.clone();
            }
        }
    }
}
