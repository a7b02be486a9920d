//! The onboarding conversation as a statig state machine: a pure decision core.
//!
//! [`step`] maps (state, answers, event) to (new state, replies, commands). It does no I/O: the shell
//! around it runs the commands (allocate a number, release one, place a call) and feeds their results
//! back as events.

use statig::blocking::IntoStateMachineExt as _;
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
    PaymentConfirmed,
    PaymentRevoked,
    NumberAllocated(PhoneNumber),
    /// The owner's own number came back from quarantine (they paid again before it ended).
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
}

impl Event {
    /// The stable name used in state history, logs and fixtures.
    pub fn name(&self) -> &'static str {
        match self {
            Event::Text(_) | Event::FirstText(_) => "sms",
            Event::PaymentConfirmed => "payment_confirmed",
            Event::PaymentRevoked => "payment_revoked",
            Event::NumberAllocated(_) => "number_allocated",
            Event::NumberReturned(_) => "number_returned",
            Event::PoolEmpty => "pool_empty",
            Event::TestCallDetected => "test_call",
            Event::OwnCallNotProof => "own_call",
            Event::VerifyTimedOut => "verify_timed_out",
            Event::Reset => "admin_reset",
        }
    }
}

/// Work the shell must do for the conversation, then report back as an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Ask the pool for a number; answer with `NumberAllocated`, `NumberReturned` or `PoolEmpty`.
    AllocateNumber,
    /// Payment was revoked: the number goes to quarantine.
    ReleaseNumber,
    /// Place the forwarding verification call.
    PlaceVerifyCall,
}

/// What the conversation remembers about an owner between events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conversation {
    pub state: StateName,
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
}

impl Default for Conversation {
    fn default() -> Self {
        Self {
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
            paid: false,
            number: None,
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

/// The statig context: the world's read-only facts plus what this event produced.
pub struct Turn<'a> {
    ctx: &'a Context<'a>,
    event: &'a Event,
    /// The state the event was dispatched in, for superstate handlers.
    current: StateName,
    out: Decision,
}

impl Turn<'_> {
    fn say(&mut self, key: MessageKey, vars: &[(&str, &str)]) {
        self.out.replies.push(self.ctx.catalog.render(key, vars));
    }

    fn run(&mut self, command: Command) {
        self.out.commands.push(command);
    }
}

/// Runs one event through the conversation.
pub fn step(conversation: &mut Conversation, event: &Event, ctx: &Context<'_>) -> Decision {
    let mut turn = Turn {
        ctx,
        event,
        current: conversation.state,
        out: Decision::default(),
    };

    if conversation.opted_out {
        // Until START, a text changes nothing and gets no answer; provider events still apply silently.
        match event {
            Event::Text(text) | Event::FirstText(text) => {
                if parse::keyword(text, true) == Some(Keyword::OptIn) {
                    conversation.opted_out = false;
                    turn.say(MessageKey::OptedIn, &[]);
                    conversation.prompt(&mut turn);
                }
                return turn.out;
            }
            _ => {
                let decision = dispatch(conversation, &mut turn);
                return Decision {
                    replies: Vec::new(),
                    ..decision
                };
            }
        }
    }
    dispatch(conversation, &mut turn)
}

fn dispatch(conversation: &mut Conversation, turn: &mut Turn<'_>) -> Decision {
    let mut machine = conversation.clone().uninitialized_state_machine();
    *machine.state_mut() = State::from_name(conversation.state);
    // There are no entry actions (questions are asked on transition), so restoring says nothing.
    let mut machine = machine.init_with_context(turn);

    let event = turn.event.clone();
    machine.handle_with_context(&event, turn);
    // S9 passes straight on: the event that reached it also completes onboarding.
    if machine.state().name() == StateName::S9TestCallDetected {
        machine.handle_with_context(&Event::TestCallDetected, turn);
    }
    *conversation = machine.inner().clone();
    conversation.state = machine.state().name();
    std::mem::take(&mut turn.out)
}

#[state_machine(
    initial = "State::s1_business_type_location()",
    state(derive(Debug, Clone, Copy, PartialEq, Eq)),
    after_transition = "Self::after_transition"
)]
impl Conversation {
    /// Keywords and provider events that mean the same in every state.
    #[superstate]
    fn onboarding(&mut self, context: &mut Turn<'_>, event: &Event) -> Outcome<State> {
        match event {
            Event::Text(text) | Event::FirstText(text) => match parse::keyword(text, false) {
                Some(Keyword::OptOut) => {
                    self.opted_out = true;
                    Handled
                }
                Some(Keyword::OptIn) => {
                    self.prompt(context);
                    Handled
                }
                Some(Keyword::Help) => {
                    let step = context.ctx.catalog.render(step_key(context.current), &[]);
                    context.say(MessageKey::Help, &[("step", &step)]);
                    Handled
                }
                Some(Keyword::Restart) => {
                    self.clear_answers();
                    context.say(MessageKey::Restart, &[]);
                    if context.current == StateName::S1BusinessTypeLocation {
                        self.prompt(context);
                        Handled
                    } else {
                        Transition(State::s1_business_type_location())
                    }
                }
                None => Handled,
            },
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
            // Only an owner held at S5 asks for a number; anywhere else these are stale.
            Event::NumberAllocated(_)
            | Event::NumberReturned(_)
            | Event::PoolEmpty
            | Event::TestCallDetected
            | Event::OwnCallNotProof
            | Event::VerifyTimedOut => Handled,
        }
    }

    #[state(superstate = "onboarding")]
    fn s1_business_type_location(
        &mut self,
        context: &mut Turn<'_>,
        event: &Event,
    ) -> Outcome<State> {
        let first = matches!(event, Event::FirstText(_));
        let Some(text) = answer(event) else {
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

    #[state(superstate = "onboarding")]
    fn s2_business_name(&mut self, context: &mut Turn<'_>, event: &Event) -> Outcome<State> {
        let Some(text) = answer(event) else {
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

    #[state(superstate = "onboarding")]
    fn s3_owner_name(&mut self, context: &mut Turn<'_>, event: &Event) -> Outcome<State> {
        let Some(text) = answer(event) else {
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

    #[state(superstate = "onboarding")]
    fn s4_notification_pref(&mut self, context: &mut Turn<'_>, event: &Event) -> Outcome<State> {
        let Some(text) = answer(event) else {
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

    #[state(superstate = "onboarding")]
    fn s5_confirm_live(&mut self, context: &mut Turn<'_>, event: &Event) -> Outcome<State> {
        match event {
            Event::PaymentConfirmed => {
                self.paid = true;
                if self.gate == Some(Gate::PaymentRequired) {
                    context.run(Command::AllocateNumber);
                }
                Handled
            }
            Event::NumberAllocated(number) => {
                self.number = Some(number.clone());
                self.gate = None;
                Transition(State::s6_phone_type())
            }
            // Their own number again: the forwarding they set up for it still points there, so
            // there is nothing to set up, only to prove it still works. An owner who never said
            // which phone they have goes on as with any number.
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
                context.run(Command::PlaceVerifyCall);
                Transition(State::s8_fwd_confirmed())
            }
            Event::PoolEmpty => {
                self.gate = Some(Gate::AwaitingNumber);
                context.say(MessageKey::S5Waitlist, &[]);
                Handled
            }
            Event::Text(text) if parse::keyword(text, false).is_none() => {
                // A change named is never a yes: "yes but the name is wrong" edits.
                if let Some(field) = parse::edit(text) {
                    return self.edit(field);
                }
                match parse::confirm(text) {
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
                    Confirm::No => {
                        context.say(MessageKey::S5Explain, &[]);
                        Handled
                    }
                    // "wait a sec yes", "yes?": an unclear reply costs a question, a wrong guess an owner.
                    Confirm::Unclear => self.miss(context, MessageKey::S5Clarify),
                    Confirm::Unreadable => self.miss(context, MessageKey::S5Explain),
                }
            }
            _ => Super,
        }
    }

    #[state(superstate = "onboarding")]
    fn s6_phone_type(&mut self, context: &mut Turn<'_>, event: &Event) -> Outcome<State> {
        let Some(text) = answer(event) else {
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

    #[state(superstate = "onboarding")]
    fn s7_fwd_sent(&mut self, context: &mut Turn<'_>, event: &Event) -> Outcome<State> {
        let Some(text) = answer(event) else {
            return Super;
        };
        if parse::is_done(text) {
            context.run(Command::PlaceVerifyCall);
            Transition(State::s8_fwd_confirmed())
        } else {
            self.miss(context, MessageKey::S7Retry)
        }
    }

    #[state(superstate = "onboarding")]
    fn s8_fwd_confirmed(&mut self, context: &mut Turn<'_>, event: &Event) -> Outcome<State> {
        match event {
            Event::TestCallDetected => Transition(State::s9_test_call_detected()),
            Event::OwnCallNotProof => {
                context.say(MessageKey::VerifyOwnCall, &[]);
                Handled
            }
            Event::VerifyTimedOut => {
                context.say(MessageKey::VerifyTroubleshoot, &[]);
                Handled
            }
            Event::Text(text) if parse::keyword(text, false).is_none() => {
                if parse::is_call_me(text) || parse::is_done(text) {
                    context.run(Command::PlaceVerifyCall);
                    context.say(MessageKey::S8Ask, &[]);
                } else {
                    context.say(MessageKey::S8Waiting, &[]);
                }
                Handled
            }
            _ => Super,
        }
    }

    #[state(superstate = "onboarding")]
    fn s9_test_call_detected(&mut self, event: &Event) -> Outcome<State> {
        match event {
            Event::TestCallDetected => Transition(State::complete()),
            _ => Super,
        }
    }

    #[state(superstate = "onboarding")]
    fn complete(&mut self, context: &mut Turn<'_>, event: &Event) -> Outcome<State> {
        match answer(event) {
            Some(_) => {
                context.say(MessageKey::CompleteAck, &[]);
                Handled
            }
            None => Super,
        }
    }
}

impl Conversation {
    /// Entering a state resets the miss count and asks its question.
    fn after_transition(&mut self, source: &State, target: &State, context: &mut Turn<'_>) {
        let (from, to) = (source.name(), target.name());
        self.state = to;
        self.misses = 0;
        context.out.transitions.push((from, to));
        self.prompt(context);
    }

    /// Says the current state's question (entering it, or again after START).
    fn prompt(&self, context: &mut Turn<'_>) {
        let catalog = context.ctx.catalog;
        let text = |v: &Option<String>| v.clone().unwrap_or_default();
        let reply = match self.state {
            // Back from the summary to change the trade or the town: ask only for that.
            StateName::S1BusinessTypeLocation if self.business_name.is_some() => {
                match (&self.business_type, &self.location) {
                    (None, Some(_)) => catalog.render(MessageKey::S1EditTrade, &[]),
                    (Some(_), None) => catalog.render(MessageKey::S1EditPlace, &[]),
                    _ => catalog.render(MessageKey::S1Ask, &[]),
                }
            }
            StateName::S1BusinessTypeLocation => catalog.render(MessageKey::S1Ask, &[]),
            StateName::S2BusinessName => catalog.render(
                MessageKey::S2Ask,
                &[
                    ("business_type", &text(&self.business_type)),
                    ("location", &text(&self.location)),
                ],
            ),
            StateName::S3OwnerName => catalog.render(
                MessageKey::S3Ask,
                &[("business_name", &text(&self.business_name))],
            ),
            StateName::S4NotificationPref => catalog.render(
                MessageKey::S4Ask,
                &[("owner_name", &text(&self.owner_name))],
            ),
            StateName::S5ConfirmLive => {
                let notify = match &self.notify {
                    Some(Notify::Email(address)) => address.clone(),
                    _ => "SMS".to_owned(),
                };
                catalog.render(
                    MessageKey::S5Summary,
                    &[
                        ("business_type", &text(&self.business_type)),
                        ("location", &text(&self.location)),
                        ("business_name", &text(&self.business_name)),
                        ("owner_name", &text(&self.owner_name)),
                        ("notify", &notify),
                    ],
                )
            }
            // Shown to read, not to dial: in the owner's national format.
            StateName::S6PhoneType => catalog.render(
                MessageKey::S6Ask,
                &[(
                    "number",
                    &self
                        .number
                        .as_ref()
                        .map(PhoneNumber::for_people)
                        .unwrap_or_default(),
                )],
            ),
            StateName::S7FwdSent => {
                let (Some(number), Some(phone_type)) = (&self.number, self.phone_type) else {
                    return;
                };
                let key = match phone_type {
                    PhoneType::Iphone => MessageKey::FwdIphone,
                    PhoneType::Android => MessageKey::FwdAndroid,
                    PhoneType::Landline => MessageKey::FwdLandline,
                };
                catalog.render(
                    key,
                    &[
                        ("number", number.as_str()),
                        ("number_national", &number.national()),
                    ],
                )
            }
            StateName::S8FwdConfirmed => catalog.render(MessageKey::S8Ask, &[]),
            // S9 passes straight on; COMPLETE says it.
            StateName::S9TestCallDetected => return,
            StateName::Complete => catalog.render(MessageKey::Complete, &[]),
        };
        context.out.replies.push(reply);
    }

    /// An answer that does not fit: the hint, and from the third miss in a row, how to get help.
    fn miss(&mut self, context: &mut Turn<'_>, hint: MessageKey) -> Outcome<State> {
        self.misses += 1;
        context.say(hint, &[]);
        if self.misses >= 3 {
            context.say(MessageKey::Stuck, &[]);
        }
        Handled
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

/// The text of an ordinary answer; keywords and provider events go to the superstate.
fn answer(event: &Event) -> Option<&str> {
    match event {
        Event::Text(text) | Event::FirstText(text) if parse::keyword(text, false).is_none() => {
            Some(text)
        }
        _ => None,
    }
}

fn step_key(state: StateName) -> MessageKey {
    match state {
        StateName::S1BusinessTypeLocation => MessageKey::StepS1,
        StateName::S2BusinessName => MessageKey::StepS2,
        StateName::S3OwnerName => MessageKey::StepS3,
        StateName::S4NotificationPref => MessageKey::StepS4,
        StateName::S5ConfirmLive => MessageKey::StepS5,
        StateName::S6PhoneType => MessageKey::StepS6,
        StateName::S7FwdSent => MessageKey::StepS7,
        StateName::S8FwdConfirmed => MessageKey::StepS8,
        StateName::S9TestCallDetected => MessageKey::StepS9,
        StateName::Complete => MessageKey::StepComplete,
    }
}

impl State {
    fn name(&self) -> StateName {
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

    fn from_name(name: StateName) -> Self {
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

/// The current step's question, as entering it asks it; `None` where there is none (S9, or S7
/// without a number). Reminders and the welcome back after expiry say it again.
pub fn question(conversation: &Conversation, ctx: &Context<'_>) -> Option<String> {
    let mut turn = Turn {
        ctx,
        event: &Event::Reset,
        current: conversation.state,
        out: Decision::default(),
    };
    conversation.prompt(&mut turn);
    turn.out.replies.pop()
}
