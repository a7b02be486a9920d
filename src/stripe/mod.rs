//! Stripe's edge: webhook signatures and the events we act on.

pub mod event;
pub mod signature;
