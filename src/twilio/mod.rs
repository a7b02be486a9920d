//! Twilio's edges, hand-rolled on purpose: webhook signatures, TwiML, and (later) the REST client.

pub mod client;
pub mod signature;
pub mod twiml;
