//! Every integration test, in one test binary: each module was a test binary of its own, and
//! each linked the whole crate and its dependencies again. Tests are named by module
//! (`store::...`), so `cargo nextest run -E 'test(/^store::/)'` or `cargo nextest run store::`
//! picks one area.

mod support;

mod admin;
mod after;
mod chat;
mod console;
mod console_browser;
mod costs;
mod deploy;
mod fixtures;
mod http_limits;
mod http_sms;
mod journey;
mod logs;
mod newcomer;
mod outbox;
mod pg_recovery;
mod pool_levels;
mod pool_race;
mod reminders;
mod replay_live;
mod replay_update;
mod replenish;
mod store;
mod stripe_race;
mod twilio_client;
mod understanding;
mod webhook_fuzz;
