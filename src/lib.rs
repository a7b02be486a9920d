//! `onboard`: onboards small-business owners over SMS and voice.
//!
//! The conversation ([`conversation`]) is a pure state machine; everything around it is the shell:
//! the [`engine`] that runs each inbound event in one transaction, HTTP webhooks ([`http`]),
//! storage ([`store`]), and the Twilio and Stripe edges.

pub mod app;
pub mod chat;
pub mod clock;
pub mod config;
pub mod conversation;
pub mod costs;
pub mod domain;
pub mod email;
pub mod engine;
pub mod flows;
pub mod golden;
pub mod http;
pub mod live;
pub mod outbox;
pub mod pool;
pub mod prices;
pub mod reminders;
pub mod replay;
pub mod replenish;
pub mod sms;
pub mod store;
pub mod stripe;
pub mod telemetry;
pub mod tls;
pub mod twilio;
pub mod workers;
pub mod zones;
