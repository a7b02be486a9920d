//! The onboarding conversation (S1 to S9): a pure core of parsers and a state machine.

pub mod after;
pub mod budget;
mod machine;
pub mod parse;
pub mod reminders;
mod state;

pub use machine::{Command, Context, Conversation, Decision, Event, Onboarding, WaitlistPlace};
pub use state::{Gate, StateName};
