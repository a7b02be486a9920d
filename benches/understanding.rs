//! How long the conversation core takes to understand one owner's reply (a benchmark, not a timed
//! test).
//!
//! Every reply of the understanding corpus (`fixtures/understanding/*.toml`) goes through the pure
//! core, [`onboard::conversation::Onboarding`], from the state it is labelled with, as a webhook would
//! run it: normalising, matching, deciding, rendering the reply. Target: well under a millisecond
//! per reply, since this runs inside the request; no external model or service is involved.
//!
//! Run: `cargo bench --bench understanding`. A missed target prints MISS.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use onboard::conversation::{Context, Conversation, Event, Onboarding, StateName};
use onboard::domain::{Locale, Notify, PhoneNumber, PhoneType};
use onboard::flows::Flows;

/// The slowest mean per reply, in any state, that still counts as fast enough for a request.
const TARGET: Duration = Duration::from_micros(100);
const ROUNDS: usize = 200;

fn replies() -> Vec<(String, String)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/understanding");
    let mut out = Vec::new();
    for name in ["tuning.toml", "held_out.toml"] {
        let text = std::fs::read_to_string(dir.join(name)).expect("corpus is readable");
        let table: toml::Table = toml::from_str(&text).expect("corpus is TOML");
        for case in table
            .get("case")
            .and_then(|v| v.as_array())
            .into_iter()
            .flatten()
        {
            let state = case["state"].as_str().unwrap_or_default().to_owned();
            let text = case["text"].as_str().unwrap_or_default().to_owned();
            out.push((state, text));
        }
        for group in table
            .get("group")
            .and_then(|v| v.as_array())
            .into_iter()
            .flatten()
        {
            let state = group["state"].as_str().unwrap_or_default();
            for text in group["texts"].as_array().into_iter().flatten() {
                out.push((
                    state.to_owned(),
                    text.as_str().unwrap_or_default().to_owned(),
                ));
            }
        }
    }
    out
}

fn owner_at(state: &str) -> (StateName, Conversation) {
    let mut owner = Conversation::default();
    if state == "first" || state == "S1" {
        return (StateName::S1BusinessTypeLocation, owner);
    }
    owner.business_type = Some("Plumber".into());
    owner.location = Some("Leeds".into());
    owner.business_name = Some("Smith & Sons".into());
    owner.owner_name = Some("Jo".into());
    if state == "S4" {
        return (StateName::S4NotificationPref, owner);
    }
    owner.notify = Some(Notify::Sms);
    if state == "S5" {
        return (StateName::S5ConfirmLive, owner);
    }
    owner.paid = true;
    owner.number = PhoneNumber::parse("+447700900900").ok();
    if state == "S7" {
        owner.phone_type = Some(PhoneType::Android);
        return (StateName::S7FwdSent, owner);
    }
    (StateName::S6PhoneType, owner)
}

fn main() {
    let flows = Flows::embedded().expect("flows are valid");
    let ctx = Context {
        catalog: flows.catalog(Locale::EnGb),
        payment_link: "https://pay.example/link",
    };
    let replies = replies();
    let mut per_state: BTreeMap<String, (Duration, usize)> = BTreeMap::new();
    for _ in 0..ROUNDS {
        for (state, text) in &replies {
            let (at, owner) = owner_at(state);
            let event = if state == "first" {
                Event::FirstText(text.clone())
            } else {
                Event::Text(text.clone())
            };
            let started = Instant::now();
            // Resuming the stored machine is part of every reply, as in the engine.
            let mut onboarding = Onboarding::resume(at, owner, &ctx);
            black_box(onboarding.handle(black_box(&event), &ctx));
            let took = started.elapsed();
            let entry = per_state.entry(state.clone()).or_default();
            entry.0 += took;
            entry.1 += 1;
        }
    }
    println!(
        "understanding: {} corpus replies x {ROUNDS} rounds through the conversation core",
        replies.len()
    );
    let mut slowest = Duration::ZERO;
    for (state, (total, count)) in &per_state {
        let mean = *total / u32::try_from(*count).unwrap_or(u32::MAX);
        slowest = slowest.max(mean);
        println!("{state:<6} {:>8.2} us per reply", mean.as_secs_f64() * 1e6);
    }
    let verdict = if slowest <= TARGET { "ok" } else { "MISS" };
    println!(
        "slowest state {:.2} us, target <= {} us: {verdict}",
        slowest.as_secs_f64() * 1e6,
        TARGET.as_micros()
    );
}
