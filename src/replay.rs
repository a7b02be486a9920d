//! Fixture conversations: an owner's texts and provider events, with what must come back.
//!
//! Each fixture replays in-process on a fresh in-memory SQLite database with a manual clock and
//! sequential ids, so a run is the same every time. `onboard replay` and `cargo test` share this.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use serde::Deserialize;

use crate::clock::{ManualClock, SequentialIds};
use crate::config::Config;
use crate::conversation::{Event, Gate, StateName};
use crate::domain::PhoneNumber;
use crate::engine::InboundCall;
use crate::engine::{Engine, InboundSms, Seams};
use crate::flows::Flows;
use crate::store::{OutboundKind, SqliteStore, Store};

/// The number fixtures' verification calls come from (`call = "verifier"`).
pub const FIXTURE_CALLER: &str = "+447700900000";

/// The payment link fixtures see, so expectations can name it.
pub const FIXTURE_PAYMENT_LINK: &str = "https://buy.stripe.com/test_fixture";

/// The configuration fixtures run under: dev mode (no onboarding number, nothing sent), the
/// fixture payment link and verification caller, and no low-water warnings.
pub fn fixture_config() -> Config {
    Config::from_lookup(|name| match name {
        "STRIPE_PAYMENT_LINK" => Some(FIXTURE_PAYMENT_LINK.to_owned()),
        "VERIFY_CALLER_NUMBER" => Some(FIXTURE_CALLER.to_owned()),
        "POOL_LOW_WATER" => Some("0".to_owned()),
        _ => None,
    })
    .expect("the fixture configuration is valid")
}

/// [`fixture_config`] with what a fixture sets for itself (plan size, caller text-backs).
pub fn config_for(fixture: &Fixture) -> Config {
    let mut config = fixture_config();
    if let Some(included) = fixture.plan_calls_included {
        config.after.plan_calls_included = included;
    }
    if let Some(text_back) = fixture.caller_text_back {
        config.after.caller_text_back = text_back;
    }
    config
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fixture {
    /// What the conversation proves; shown when it fails.
    pub description: Option<String>,
    /// The owner who texts, unless a step says otherwise.
    pub owner: PhoneNumber,
    /// Numbers in the pool before the first step.
    #[serde(default)]
    pub pool: Vec<PhoneNumber>,
    /// `PLAN_CALLS_INCLUDED` for this fixture (default 100).
    pub plan_calls_included: Option<i64>,
    /// `CALLER_TEXT_BACK` for this fixture (default off).
    pub caller_text_back: Option<bool>,
    pub steps: Vec<Step>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// An inbound SMS body...
    pub sms: Option<String>,
    /// Where the SMS goes: `"number"` is the fixture owner's business number (a text to the
    /// live number, from the owner or, with `from`, a customer); default the onboarding number.
    pub to: Option<String>,
    /// ...or Twilio's recording status callback for the call `call_sid`: `completed` (with
    /// `recording_secs`), `absent` or `failed`.
    pub recording: Option<String>,
    /// The recording's length in seconds.
    pub recording_secs: Option<i32>,
    /// The `RecordingSid` (default `REfixture<step>`); repeat one to replay a retry.
    pub recording_sid: Option<String>,
    /// ...or a provider event: payment_confirmed, payment_revoked, number_allocated (with
    /// `new_number`), pool_empty, test_call, number_released (an operator's release); or `timers`, which runs the background sweeps
    /// (quarantines ending, verification windows closing, reminders and expiry) at the fixture's clock.
    pub event: Option<String>,
    /// The `MessageSid`; repeat one to replay a retry.
    pub sid: Option<String>,
    /// Who the step is from or for (default: the fixture's owner).
    pub from: Option<PhoneNumber>,
    /// For `number_allocated`: the number put in the pool for the waiting owner.
    pub new_number: Option<PhoneNumber>,
    /// ...or a Stripe webhook delivery of this event type, built, signed and verified as Stripe's
    /// would be: checkout.session.completed, checkout.session.async_payment_succeeded,
    /// customer.subscription.deleted, charge.refunded.
    pub stripe: Option<String>,
    /// The Stripe event id (default `evt_fixture_<step>`); repeat one to replay a duplicate delivery.
    pub stripe_event_id: Option<String>,
    /// For checkout events (default `paid`).
    pub payment_status: Option<String>,
    /// Default: the owner's id; `"none"` leaves it out.
    pub client_reference_id: Option<String>,
    /// `"bad"` signs with the wrong secret, `"missing"` sends no signature.
    pub signature: Option<String>,
    /// ...or a call to one of our numbers from this number (`"verifier"`: our verification
    /// caller; `"owner"`: the owner's own phone).
    pub call: Option<String>,
    /// Who the call is to (default: the owner's allocated number).
    pub call_to: Option<String>,
    /// The call's `ForwardedFrom` (`"owner"` for the owner's phone).
    pub forwarded_from: Option<String>,
    /// The `CallSid`; repeat one to replay a retry.
    pub call_sid: Option<String>,
    /// Minutes to move the clock forward before the step.
    pub after_minutes: Option<i64>,
    /// Hours to move the clock forward before the step (added to the minutes and days).
    pub after_hours: Option<i64>,
    /// Days to move the clock forward before the step.
    pub after_days: Option<i64>,
    #[serde(flatten)]
    pub expect: Expect,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// The whole reply, exactly.
    pub reply: Option<String>,
    #[serde(default)]
    pub reply_contains: Vec<String>,
    #[serde(default)]
    pub reply_not_contains: Vec<String>,
    /// True: nothing at all is said.
    pub no_reply: Option<bool>,
    pub state: Option<StateName>,
    /// `"none"`, `"payment_required"` or `"awaiting_number"`.
    pub gate: Option<String>,
    pub opted_out: Option<bool>,
    pub paid: Option<bool>,
    /// The owner's allocated number, or `"none"`.
    pub number: Option<String>,
    /// For Stripe steps: true when the delivery is refused (bad signature), and nothing changes.
    pub rejected: Option<bool>,
    /// For Stripe steps: `processed`, `ignored` or `duplicate`.
    pub outcome: Option<String>,
    /// For call steps: text the TwiML answer must contain.
    #[serde(default)]
    pub answer_contains: Vec<String>,
    /// Whether the step queued a verification call.
    pub call_placed: Option<bool>,
    /// Text each message the step queued must contain one of, as `sms to <to> from <from>: <body>`
    /// or `email to <address>: [<subject>] <body>` (any recipient: owner, caller, ...).
    #[serde(default)]
    pub outbox_contains: Vec<String>,
    /// How many messages the step queued, to anyone.
    pub outbox_count: Option<usize>,
}

#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

impl Fixture {
    /// Loads and checks a fixture: unknown keys, bad numbers and impossible steps are errors here,
    /// not surprises halfway through a replay.
    pub fn load(path: &Path) -> Result<Self, FixtureError> {
        let text = std::fs::read_to_string(path).map_err(|source| FixtureError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and checks a fixture's text; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, FixtureError> {
        let invalid = |message: String| FixtureError::Invalid {
            path: path.to_owned(),
            message,
        };
        let fixture: Fixture = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        if fixture.steps.is_empty() {
            return Err(invalid("no steps".into()));
        }
        for (i, step) in fixture.steps.iter().enumerate() {
            let n = i + 1;
            let kinds = [
                step.sms.is_some(),
                step.event.is_some(),
                step.stripe.is_some(),
                step.call.is_some(),
                step.recording.is_some(),
            ];
            if kinds.iter().filter(|k| **k).count() != 1 {
                return Err(invalid(format!(
                    "step {n}: needs exactly one of sms, event, stripe, call or recording"
                )));
            }
            if step.call.is_none()
                && (step.call_to.is_some()
                    || step.forwarded_from.is_some()
                    || (step.call_sid.is_some() && step.recording.is_none())
                    || !step.expect.answer_contains.is_empty())
            {
                return Err(invalid(format!(
                    "step {n}: call_to, forwarded_from, call_sid and answer_contains go with call steps only (call_sid with recording steps too)"
                )));
            }
            if step.sms.is_none() && step.to.is_some() {
                return Err(invalid(format!("step {n}: `to` goes with sms steps only")));
            }
            if step.to.as_deref().is_some_and(|to| to != "number") {
                return Err(invalid(format!(
                    "step {n}: `to` is \"number\" (the owner's business number)"
                )));
            }
            if let Some(status) = &step.recording {
                if !["completed", "absent", "failed"].contains(&status.as_str()) {
                    return Err(invalid(format!(
                        "step {n}: recording is completed, absent or failed"
                    )));
                }
                if step.call_sid.is_none() {
                    return Err(invalid(format!(
                        "step {n}: a recording step names its call's call_sid"
                    )));
                }
            } else if step.recording_secs.is_some() || step.recording_sid.is_some() {
                return Err(invalid(format!(
                    "step {n}: recording_secs and recording_sid go with recording steps only"
                )));
            }
            if let Some(kind) = &step.stripe {
                if !STRIPE_EVENTS.contains(&kind.as_str()) {
                    return Err(invalid(format!(
                        "step {n}: unknown stripe event {kind:?} (expected one of {})",
                        STRIPE_EVENTS.join(", ")
                    )));
                }
                if step
                    .signature
                    .as_deref()
                    .is_some_and(|s| s != "bad" && s != "missing")
                {
                    return Err(invalid(format!(
                        "step {n}: signature is \"bad\" or \"missing\""
                    )));
                }
            } else if step.stripe_event_id.is_some()
                || step.payment_status.is_some()
                || step.client_reference_id.is_some()
                || step.signature.is_some()
                || step.expect.rejected.is_some()
                || step.expect.outcome.is_some()
            {
                return Err(invalid(format!(
                    "step {n}: stripe_event_id, payment_status, client_reference_id, signature, \
                     rejected and outcome go with stripe steps only"
                )));
            }
            if let Some(event) = &step.event
                && !EVENTS.contains(&event.as_str())
            {
                return Err(invalid(format!(
                    "step {n}: unknown event {event:?} (expected one of {})",
                    EVENTS.join(", ")
                )));
            }
            if (step.event.as_deref() == Some("number_allocated")) != step.new_number.is_some() {
                return Err(invalid(format!(
                    "step {n}: `new_number` goes with event number_allocated, and only with it"
                )));
            }
            if let Some(gate) = &step.expect.gate
                && gate != "none"
                && Gate::parse(gate).is_none()
            {
                return Err(invalid(format!("step {n}: unknown gate {gate:?}")));
            }
            if let Some(number) = &step.expect.number
                && number != "none"
                && PhoneNumber::parse(number).is_err()
            {
                return Err(invalid(format!("step {n}: number {number:?} is not E.164")));
            }
        }
        Ok(fixture)
    }
}

const STRIPE_EVENTS: [&str; 4] = [
    "checkout.session.completed",
    "checkout.session.async_payment_succeeded",
    "customer.subscription.deleted",
    "charge.refunded",
];

/// The webhook secret fixtures' Stripe deliveries are signed with.
pub const FIXTURE_STRIPE_SECRET: &str = "whsec_fixture";

const EVENTS: [&str; 7] = [
    "timers",
    "number_released",
    "payment_confirmed",
    "payment_revoked",
    "number_allocated",
    "pool_empty",
    "test_call",
];

/// Why a fixture failed: the step, what was expected and what came.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub step: usize,
    pub expected: String,
    pub actual: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "step {}: expected {}, got {}",
            self.step, self.expected, self.actual
        )
    }
}

/// The start of every replay's clock.
pub fn fixture_epoch() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-01-05T09:00:00Z")
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_default()
}

/// The machinery failing, as opposed to a fixture's expectation not being met.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Engine(#[from] crate::engine::EngineError),
    #[error("reading fixtures: {0}")]
    Io(#[from] std::io::Error),
    #[error("no fixture files found in {0:?}")]
    NoFixtures(Vec<PathBuf>),
}

/// Replays one fixture. `Err` is for the machinery failing (database, flows), not for a mismatch.
pub async fn run(fixture: &Fixture, flows: Arc<Flows>) -> Result<Result<(), Failure>, ReplayError> {
    let store = SqliteStore::in_memory().await?;
    store.migrate().await?;
    run_on(store, fixture, flows).await
}

/// Replays one fixture on a migrated, empty store of any back end.
pub async fn run_on<S: Store>(
    store: S,
    fixture: &Fixture,
    flows: Arc<Flows>,
) -> Result<Result<(), Failure>, ReplayError> {
    Ok(steps(store, fixture, flows, true).await?.0)
}

/// What each step said to the owner (its reply, or the texts it queued), in order; `None` for
/// a step that said nothing. Expectations are not checked.
pub async fn transcript(
    fixture: &Fixture,
    flows: Arc<Flows>,
) -> Result<Vec<Option<String>>, ReplayError> {
    let store = SqliteStore::in_memory().await?;
    store.migrate().await?;
    Ok(steps(store, fixture, flows, false).await?.1)
}

async fn steps<S: Store>(
    store: S,
    fixture: &Fixture,
    flows: Arc<Flows>,
    checked: bool,
) -> Result<(Result<(), Failure>, Vec<Option<String>>), ReplayError> {
    let mut said = Vec::new();
    let clock = Arc::new(ManualClock::new(fixture_epoch()));
    let engine = Engine::from_config(
        store,
        &config_for(fixture),
        Seams {
            flows,
            clock: clock.clone(),
            ids: Arc::new(SequentialIds::default()),
        },
    );
    if !fixture.pool.is_empty() {
        engine.add_numbers(&fixture.pool).await?;
    }
    for (i, step) in fixture.steps.iter().enumerate() {
        let n = i + 1;
        if let Some(minutes) = step.after_minutes {
            clock.advance(Duration::minutes(minutes));
        }
        if let Some(hours) = step.after_hours {
            clock.advance(Duration::hours(hours));
        }
        if let Some(days) = step.after_days {
            clock.advance(Duration::days(days));
        }
        let owner = step.from.as_ref().unwrap_or(&fixture.owner);
        let record = engine.owner_by_phone(owner).await?;
        // What the step queues for the owner is read back from the outbox after it.
        let bookmark = engine.store().latest_outbound_id().await?;
        let mut receipt = None;
        let mut answer = None;
        let mut reply = None;
        if let Some(body) = &step.sms {
            let to = match step.to.as_deref() {
                Some(_) => engine
                    .owner_by_phone(&fixture.owner)
                    .await?
                    .and_then(|o| o.twilio_number)
                    .map(|n| n.to_string())
                    .unwrap_or_default(),
                None => "+15005550006".to_owned(),
            };
            let twiml = engine
                .handle_sms(&InboundSms {
                    message_sid: step
                        .sid
                        .clone()
                        .unwrap_or_else(|| format!("SMfixture{n:04}")),
                    from: owner.to_string(),
                    to,
                    body: body.clone(),
                })
                .await?;
            reply = message_text(&twiml);
        } else if let Some(status) = &step.recording {
            let call_sid = step.call_sid.clone().expect("checked at load");
            engine
                .recording_status(&crate::engine::after::RecordingStatus {
                    recording_sid: step
                        .recording_sid
                        .clone()
                        .unwrap_or_else(|| format!("REfixture{n:04}")),
                    url: (status == "completed").then(|| {
                        format!("https://api.twilio.com/2010-04-01/Accounts/ACfixture/Recordings/RE{call_sid}")
                    }),
                    call_sid,
                    status: status.clone(),
                    duration_secs: step.recording_secs,
                })
                .await?;
        } else if step.stripe.is_some() {
            let delivery = stripe_delivery(step, n, record.as_ref(), engine.now().timestamp());
            receipt = Some(
                match crate::engine::payments::receive(
                    &engine,
                    &[FIXTURE_STRIPE_SECRET.to_owned()],
                    delivery.signature.as_deref(),
                    delivery.body.as_bytes(),
                )
                .await
                {
                    Ok(receipt) => Ok(receipt.name().to_owned()),
                    Err(crate::engine::payments::PaymentError::Failed(e)) => return Err(e.into()),
                    Err(rejected) => Err(rejected.to_string()),
                },
            );
        } else if let Some(from) = &step.call {
            let resolve = |who: &str| match who {
                "verifier" => FIXTURE_CALLER.to_owned(),
                "owner" => owner.to_string(),
                other => other.to_owned(),
            };
            let to = match (&step.call_to, &record) {
                (Some(to), _) => to.clone(),
                (None, Some(c)) => c
                    .twilio_number
                    .as_ref()
                    .map(|n| n.to_string())
                    .unwrap_or_default(),
                (None, None) => String::new(),
            };
            answer = Some(
                engine
                    .handle_call(&InboundCall {
                        call_sid: step
                            .call_sid
                            .clone()
                            .unwrap_or_else(|| format!("CAfixture{n:04}")),
                        from: resolve(from),
                        to,
                        forwarded_from: step.forwarded_from.as_deref().map(resolve),
                        direction: "inbound".into(),
                        status: "ringing".into(),
                    })
                    .await?,
            );
        } else if let Some(event) = &step.event {
            match (event.as_str(), &record) {
                ("timers", _) => {
                    engine.end_quarantines().await?;
                    engine.verify_timeouts().await?;
                    engine.send_reminders().await?;
                    engine.send_due_alerts().await?;
                }
                ("number_allocated", _) => {
                    let number = step.new_number.clone().expect("checked at load");
                    engine.add_numbers(&[number]).await?;
                }
                // An operator's release, as the console's button and the admin API do it.
                ("number_released", Some(record)) => {
                    engine.admin_release_number(&record.id).await?;
                }
                (name, Some(record)) => {
                    let event = match name {
                        "payment_confirmed" => Event::PaymentConfirmed,
                        "payment_revoked" => Event::PaymentRevoked,
                        "pool_empty" => Event::PoolEmpty,
                        _ => Event::TestCallDetected,
                    };
                    engine.apply(&record.id, event).await?;
                }
                (name, None) => {
                    let failure = Failure {
                        step: n,
                        expected: format!("an owner {} to send {name} to", owner.masked()),
                        actual: "no such owner (text first)".into(),
                    };
                    return Ok((Err(failure), said));
                }
            }
        }
        let all_queued = engine.store().outbound_after(bookmark).await?;
        let outbox: Vec<String> = all_queued.iter().map(outbox_line).collect();
        let queued: Vec<_> = all_queued.into_iter().filter(|m| &m.to == owner).collect();
        let call_placed = queued.iter().any(|m| m.kind == OutboundKind::VerifyCall);
        if step.sms.is_none() {
            let texts: Vec<String> = queued
                .into_iter()
                .filter(|m| m.kind == OutboundKind::Sms)
                .map(|m| m.body)
                .collect();
            reply = (!texts.is_empty()).then(|| texts.join("\n"));
        }
        said.push(reply.clone());
        if !checked {
            continue;
        }
        let record = engine.owner_by_phone(owner).await?;
        let observed = record.as_ref().map(Observed::of);
        let checks = check_receipt(n, &step.expect, receipt.as_ref())
            .and_then(|()| check_outbox(n, &step.expect, &outbox))
            .and_then(|()| check_call(n, &step.expect, answer.as_deref(), call_placed))
            .and_then(|()| check(n, &step.expect, reply.as_deref(), observed.as_ref()));
        if let Err(failure) = checks {
            return Ok((Err(failure), said));
        }
    }
    Ok((Ok(()), said))
}

/// What a step's expectations about the owner are checked against: read from the store
/// in-process, or from the admin API of a live server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub state: String,
    /// `None` when no gate holds the owner.
    pub gate: Option<String>,
    pub opted_out: bool,
    pub paid: bool,
    /// The owner's allocated number.
    pub number: Option<String>,
}

impl Observed {
    pub fn of(owner: &crate::store::Owner) -> Observed {
        Observed {
            state: owner.state.to_string(),
            gate: owner.gate.map(|g| g.as_str().to_owned()),
            opted_out: owner.opted_out,
            paid: owner.payment_active,
            number: owner.twilio_number.as_ref().map(|n| n.to_string()),
        }
    }
}

/// A queued message as `outbox_contains` reads it.
fn outbox_line(m: &crate::store::OutboundMessage) -> String {
    match m.kind {
        OutboundKind::Email => format!(
            "email to {}: [{}] {}",
            m.to_email.as_deref().unwrap_or_default(),
            m.subject.as_deref().unwrap_or_default(),
            m.body
        ),
        OutboundKind::VerifyCall => format!("call to {}", m.to),
        OutboundKind::Sms => match &m.from {
            Some(from) => format!("sms to {} from {}: {}", m.to, from, m.body),
            None => format!("sms to {}: {}", m.to, m.body),
        },
    }
}

fn check_outbox(step: usize, expect: &Expect, outbox: &[String]) -> Result<(), Failure> {
    if let Some(count) = expect.outbox_count
        && count != outbox.len()
    {
        return Err(Failure {
            step,
            expected: format!("{count} messages queued"),
            actual: format!("{outbox:?}"),
        });
    }
    for needle in &expect.outbox_contains {
        if !outbox.iter().any(|m| m.contains(needle.as_str())) {
            return Err(Failure {
                step,
                expected: format!("a queued message containing {needle:?}"),
                actual: format!("{outbox:?}"),
            });
        }
    }
    Ok(())
}

pub(crate) fn check_call(
    step: usize,
    expect: &Expect,
    answer: Option<&str>,
    call_placed: bool,
) -> Result<(), Failure> {
    if let Some(placed) = expect.call_placed
        && placed != call_placed
    {
        return Err(Failure {
            step,
            expected: format!("call_placed {placed}"),
            actual: format!("call_placed {call_placed}"),
        });
    }
    for needle in &expect.answer_contains {
        if !answer.is_some_and(|a| a.contains(needle.as_str())) {
            return Err(Failure {
                step,
                expected: format!("a call answered with {needle:?}"),
                actual: format!("{:?}", answer.unwrap_or("(no call)")),
            });
        }
    }
    Ok(())
}

/// What a Stripe event delivery carries, for [`stripe_event_body`].
pub struct StripeEvent<'a> {
    /// `checkout.session.completed`, `charge.refunded`, ...
    pub kind: &'a str,
    pub event_id: &'a str,
    /// The owner's id: Stripe's customer, subscription and charge ids are derived from it,
    /// so a later refund or cancellation finds the same owner.
    pub owner: &'a str,
    /// The checkout's `client_reference_id` (`None`: left out).
    pub client_reference_id: Option<&'a str>,
    /// For checkout events: `paid`, `unpaid`, ...
    pub payment_status: &'a str,
    /// The event's `created`, in Unix seconds.
    pub created: i64,
}

/// The JSON body of a Stripe event delivery, shaped as Stripe sends it; sign it with
/// [`crate::stripe::signature::sign`].
pub fn stripe_event_body(event: &StripeEvent<'_>) -> String {
    let owner = event.owner;
    let object = match event.kind {
        "customer.subscription.deleted" => serde_json::json!({
            "id": format!("sub_{owner}"), "object": "subscription", "customer": format!("cus_{owner}"),
            "status": "canceled",
        }),
        "charge.refunded" => serde_json::json!({
            "id": format!("ch_{owner}"), "object": "charge", "customer": format!("cus_{owner}"),
            "payment_intent": format!("pi_{owner}"), "amount": 2900, "amount_refunded": 2900,
            "refunded": true,
        }),
        _ => serde_json::json!({
            "id": format!("cs_{owner}"), "object": "checkout.session",
            "client_reference_id": event.client_reference_id,
            "payment_status": event.payment_status,
            "customer": format!("cus_{owner}"), "subscription": format!("sub_{owner}"),
            "payment_intent": format!("pi_{owner}"), "amount_total": 2900, "currency": "gbp",
        }),
    };
    serde_json::json!({
        "id": event.event_id,
        "object": "event", "type": event.kind, "created": event.created, "livemode": false,
        "data": { "object": object },
    })
    .to_string()
}

/// A Stripe delivery as Stripe would send it.
struct Delivery {
    body: String,
    signature: Option<String>,
}

fn stripe_delivery(
    step: &Step,
    n: usize,
    owner: Option<&crate::store::Owner>,
    now: i64,
) -> Delivery {
    let kind = step.stripe.as_deref().unwrap_or_default();
    // Stripe ids derived from the owner, so a later cancellation finds the same owner.
    let owner = owner
        .map(|c| c.id.to_string())
        .unwrap_or_else(|| "unknown".into());
    let reference = match step.client_reference_id.as_deref() {
        Some("none") => None,
        Some(other) => Some(other.to_owned()),
        None => Some(owner.clone()),
    };
    let body = stripe_event_body(&StripeEvent {
        kind,
        event_id: &step
            .stripe_event_id
            .clone()
            .unwrap_or_else(|| format!("evt_fixture_{n}")),
        owner: &owner,
        client_reference_id: reference.as_deref(),
        payment_status: step.payment_status.as_deref().unwrap_or("paid"),
        created: now,
    });
    let signature = match step.signature.as_deref() {
        Some("missing") => None,
        Some(_) => Some(crate::stripe::signature::sign(
            body.as_bytes(),
            "whsec_wrong",
            now,
        )),
        None => Some(crate::stripe::signature::sign(
            body.as_bytes(),
            FIXTURE_STRIPE_SECRET,
            now,
        )),
    };
    Delivery { body, signature }
}

pub(crate) fn check_receipt(
    step: usize,
    expect: &Expect,
    receipt: Option<&Result<String, String>>,
) -> Result<(), Failure> {
    let Some(receipt) = receipt else {
        return Ok(());
    };
    let shown = match receipt {
        Ok(outcome) => format!("outcome {outcome}"),
        Err(why) => format!("rejected: {why}"),
    };
    let fail = |expected: String| {
        Err(Failure {
            step,
            expected,
            actual: shown.clone(),
        })
    };
    match (expect.rejected, receipt) {
        (Some(true), Ok(_)) => return fail("the delivery rejected".into()),
        (Some(false) | None, Err(_)) => return fail("the delivery accepted".into()),
        _ => {}
    }
    if let (Some(outcome), Ok(actual)) = (&expect.outcome, receipt)
        && outcome != actual
    {
        return fail(format!("outcome {outcome}"));
    }
    Ok(())
}

pub(crate) fn check(
    step: usize,
    expect: &Expect,
    reply: Option<&str>,
    owner: Option<&Observed>,
) -> Result<(), Failure> {
    let fail = |expected: String, actual: String| {
        Err(Failure {
            step,
            expected,
            actual,
        })
    };
    let shown = || format!("{:?}", reply.unwrap_or("(no reply)"));
    if let Some(exact) = &expect.reply
        && reply != Some(exact.as_str())
    {
        return fail(format!("reply {exact:?}"), shown());
    }
    for needle in &expect.reply_contains {
        if !reply.is_some_and(|r| r.contains(needle.as_str())) {
            return fail(format!("a reply containing {needle:?}"), shown());
        }
    }
    for needle in &expect.reply_not_contains {
        if reply.is_some_and(|r| r.contains(needle.as_str())) {
            return fail(format!("a reply without {needle:?}"), shown());
        }
    }
    if expect.no_reply == Some(true) && reply.is_some() {
        return fail("no reply".into(), shown());
    }
    if expect.no_reply == Some(false) && reply.is_none() {
        return fail("a reply".into(), shown());
    }
    let needs_owner = expect.state.is_some()
        || expect.gate.is_some()
        || expect.opted_out.is_some()
        || expect.paid.is_some()
        || expect.number.is_some();
    let Some(owner) = owner else {
        return if needs_owner {
            fail("an owner".into(), "none".into())
        } else {
            Ok(())
        };
    };
    if let Some(state) = expect.state
        && owner.state != state.as_str()
    {
        return fail(format!("state {state}"), owner.state.clone());
    }
    if let Some(gate) = &expect.gate {
        let actual = owner.gate.as_deref().unwrap_or("none");
        if actual != gate {
            return fail(format!("gate {gate}"), actual.into());
        }
    }
    if let Some(opted_out) = expect.opted_out
        && owner.opted_out != opted_out
    {
        return fail(
            format!("opted_out {opted_out}"),
            owner.opted_out.to_string(),
        );
    }
    if let Some(paid) = expect.paid
        && owner.paid != paid
    {
        return fail(format!("paid {paid}"), owner.paid.to_string());
    }
    if let Some(number) = &expect.number {
        let actual = owner.number.clone().unwrap_or_else(|| "none".into());
        if &actual != number {
            return fail(format!("number {number}"), actual);
        }
    }
    Ok(())
}

/// The text of a TwiML reply's `<Message>`, unescaped; `None` for an empty response.
pub fn message_text(twiml: &str) -> Option<String> {
    let start = twiml.find("<Message>")? + "<Message>".len();
    let end = twiml[start..].find("</Message>")? + start;
    Some(
        twiml[start..end]
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&amp;", "&"),
    )
}

/// The fixture files named: files as given, folders searched for `*.toml`, sorted.
pub fn collect(paths: &[PathBuf]) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            for entry in std::fs::read_dir(path)? {
                let file = entry?.path();
                if file.extension().is_some_and(|e| e == "toml") {
                    files.push(file);
                }
            }
        } else {
            files.push(path.clone());
        }
    }
    files.sort();
    Ok(files)
}

/// Rewrites each fixture's reply expectations into the exact transcript of what the bot says
/// now (`reply = "..."`, or `no_reply = true`), keeping every other line of the file as it is;
/// prints one line a file. A change of wording then shows up as a reviewable diff of fixtures.
pub async fn update_all(
    paths: &[PathBuf],
    flows: Arc<Flows>,
    out: &mut impl std::io::Write,
) -> Result<bool, ReplayError> {
    let files = collect(paths)?;
    if files.is_empty() {
        return Err(ReplayError::NoFixtures(paths.to_vec()));
    }
    let mut failed = 0;
    for file in &files {
        let text = std::fs::read_to_string(file)?;
        let fixture = match Fixture::parse(&text, file) {
            Ok(fixture) => fixture,
            Err(e) => {
                failed += 1;
                writeln!(out, "FAILED  {e}")?;
                continue;
            }
        };
        let said = transcript(&fixture, flows.clone()).await?;
        let updated = crate::golden::with_transcript(&text, &said);
        if updated == text {
            writeln!(out, "same    {}", file.display())?;
        } else {
            std::fs::write(file, updated)?;
            writeln!(out, "updated {}", file.display())?;
        }
    }
    Ok(failed == 0)
}

/// Replays every fixture, printing one line each; true when all passed.
pub async fn replay_all(
    paths: &[PathBuf],
    flows: Arc<Flows>,
    out: &mut impl std::io::Write,
) -> Result<bool, ReplayError> {
    let files = collect(paths)?;
    if files.is_empty() {
        return Err(ReplayError::NoFixtures(paths.to_vec()));
    }
    let mut failed = 0;
    for file in &files {
        let outcome = match Fixture::load(file) {
            Ok(fixture) => run(&fixture, flows.clone())
                .await?
                .map_err(|f| f.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match outcome {
            Ok(()) => writeln!(out, "ok      {}", file.display())?,
            Err(why) => {
                failed += 1;
                writeln!(out, "FAILED  {}: {why}", file.display())?;
            }
        }
    }
    writeln!(out, "{} passed, {} failed", files.len() - failed, failed)?;
    Ok(failed == 0)
}
