//! Driving a running server as Twilio and Stripe do: `onboard replay --target URL`.
//!
//! Webhooks are posted signed with the server's secrets (from the same environment the server
//! reads), and what a step changed is read back through the admin API. Every phone number in a
//! fixture is rewritten to a fresh one for the run, consistently in its steps and expectations,
//! and every provider id is made unique to the run, so fixtures can run against a shared staging
//! server again and again.
//!
//! The pool is the one thing fixtures share on a server: a fixture that takes numbers from it
//! runs alone (others still run in parallel), and afterwards hands back what it added but did not
//! use and takes its waiting owners off the priority list. Steps that need the fixture's clock
//! (`after_minutes`, `timers`) or an in-process event (`pool_empty`) cannot be done to a live
//! server: the fixture is checked up to there and the rest is reported skipped.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use reqwest::StatusCode;
use serde_json::Value;

use crate::domain::PhoneNumber;
use crate::replay::{
    Expect, FIXTURE_CALLER, FIXTURE_PAYMENT_LINK, Failure, Fixture, Observed, StripeEvent, check,
    check_call, check_receipt, message_text, stripe_event_body,
};

/// Fixtures replayed at once against a server.
pub const PARALLEL: usize = 4;

/// How to reach and sign for a running server.
#[derive(Debug, Clone)]
pub struct Target {
    /// Where requests go, e.g. `http://127.0.0.1:3000`.
    pub url: String,
    /// The server's `PUBLIC_URL`: Twilio signatures are computed over it, not over `url`.
    pub public_url: String,
    /// `TWILIO_AUTH_TOKEN`; `None` when the server runs without (dev mode).
    pub twilio_auth_token: Option<String>,
    /// The first `STRIPE_WEBHOOK_SECRET`; `None` in dev mode.
    pub stripe_secret: Option<String>,
    /// `ADMIN_TOKEN`: required, state and texts are read through the admin API.
    pub admin_token: String,
    /// `STRIPE_PAYMENT_LINK`, which replaces the fixtures' link in expectations.
    pub payment_link: String,
    /// The caller id of the server's verification calls (`call = "verifier"`).
    pub verify_caller: PhoneNumber,
}

/// A failure to talk to the server, as opposed to an expectation not met.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error("{0}: {1}")]
    Http(String, reqwest::Error),
    #[error("{what}: HTTP {status}: {body}")]
    Status {
        what: String,
        status: StatusCode,
        body: String,
    },
    #[error("{0}")]
    Unexpected(String),
}

/// A client of one server.
#[derive(Debug, Clone)]
pub struct Remote {
    target: Arc<Target>,
    http: reqwest::Client,
}

impl Remote {
    pub fn new(target: Target) -> Remote {
        crate::tls::install_crypto_provider();
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(20))
            .build()
            .expect("the HTTP client (TLS backend) could not be initialised");
        Remote {
            target: Arc::new(target),
            http,
        }
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    async fn send(
        &self,
        what: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<(StatusCode, String), LiveError> {
        let response = request
            .send()
            .await
            .map_err(|e| LiveError::Http(what.to_owned(), e))?;
        let status = response.status();
        let body = response
            .text()
            .await
            .map_err(|e| LiveError::Http(what.to_owned(), e))?;
        Ok((status, body))
    }

    /// Posts a Twilio webhook form, signed as Twilio signs it; answers the status and body.
    pub async fn twilio(
        &self,
        path: &str,
        params: &[(&str, &str)],
    ) -> Result<(StatusCode, String), LiveError> {
        let owned: Vec<(String, String)> = params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut request = self
            .http
            .post(format!("{}{path}", self.target.url))
            .form(&owned);
        if let Some(token) = &self.target.twilio_auth_token {
            let url = format!("{}{path}", self.target.public_url);
            request = request.header(
                "X-Twilio-Signature",
                crate::twilio::signature::compute(token, &url, &owned),
            );
        }
        self.send(path, request).await
    }

    /// An inbound text; answers the TwiML.
    pub async fn sms(&self, sid: &str, from: &str, body: &str) -> Result<String, LiveError> {
        let (status, twiml) = self
            .twilio(
                "/webhooks/twilio/sms",
                &[
                    ("MessageSid", sid),
                    ("SmsSid", sid),
                    ("From", from),
                    ("To", "+15005550006"),
                    ("Body", body),
                    ("NumMedia", "0"),
                ],
            )
            .await?;
        ok("POST /webhooks/twilio/sms", status, twiml)
    }

    /// A call to one of our numbers; answers the TwiML.
    pub async fn call(
        &self,
        sid: &str,
        from: &str,
        to: &str,
        forwarded_from: Option<&str>,
    ) -> Result<String, LiveError> {
        let mut params = vec![
            ("CallSid", sid),
            ("From", from),
            ("To", to),
            ("Direction", "inbound"),
            ("CallStatus", "ringing"),
        ];
        if let Some(forwarded_from) = forwarded_from {
            params.push(("ForwardedFrom", forwarded_from));
        }
        let (status, twiml) = self.twilio("/webhooks/twilio/voice", &params).await?;
        ok("POST /webhooks/twilio/voice", status, twiml)
    }

    /// Delivers a Stripe event; `signature` overrides the one made with the server's secret
    /// (`Some(None)`: no signature at all). `Ok(Err(_))` is a delivery the server refused.
    pub async fn stripe(
        &self,
        body: &str,
        signature: Option<Option<String>>,
    ) -> Result<Result<String, String>, LiveError> {
        let now = chrono::Utc::now().timestamp();
        let signature = signature.unwrap_or_else(|| {
            self.target
                .stripe_secret
                .as_deref()
                .map(|secret| crate::stripe::signature::sign(body.as_bytes(), secret, now))
        });
        let mut request = self
            .http
            .post(format!("{}/webhooks/stripe", self.target.url))
            .header("Content-Type", "application/json")
            .body(body.to_owned());
        if let Some(signature) = signature {
            request = request.header("Stripe-Signature", signature);
        }
        let (status, text) = self.send("POST /webhooks/stripe", request).await?;
        if status.is_client_error() {
            return Ok(Err(format!("HTTP {status}: {}", text.trim())));
        }
        let json: Value = serde_json::from_str(&ok("POST /webhooks/stripe", status, text)?)
            .map_err(|e| LiveError::Unexpected(format!("POST /webhooks/stripe: {e}")))?;
        Ok(Ok(json["outcome"].as_str().unwrap_or_default().to_owned()))
    }

    async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(StatusCode, String), LiveError> {
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.target.url))
            .bearer_auth(&self.target.admin_token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let (status, text) = self.send(&format!("{method} {path}"), request).await?;
        if status == StatusCode::NOT_FOUND && !text.starts_with('{') && text.contains("admin API") {
            return Err(LiveError::Unexpected(format!(
                "the server's admin API is off ({}); start it with ADMIN_TOKEN set",
                text.trim()
            )));
        }
        if status == StatusCode::UNAUTHORIZED {
            return Err(LiveError::Unexpected(
                "the server refused ADMIN_TOKEN: set it to the server's".into(),
            ));
        }
        Ok((status, text))
    }

    /// The owner texting from `phone`, as the admin API shows them; `None` when there is none.
    pub async fn owner(&self, phone: &str) -> Result<Option<Value>, LiveError> {
        let path = format!("/admin/api/owners?phone={}", phone.replace('+', "%2B"));
        let (status, text) = self.admin(reqwest::Method::GET, &path, None).await?;
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let text = ok(&format!("GET {path}"), status, text)?;
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| LiveError::Unexpected(format!("GET {path}: {e}")))
    }

    /// An owner's whole record: history, texts sent, calls.
    pub async fn record(&self, id: &str) -> Result<Value, LiveError> {
        let path = format!("/admin/api/owners/{id}");
        let (status, text) = self.admin(reqwest::Method::GET, &path, None).await?;
        let text = ok(&format!("GET {path}"), status, text)?;
        serde_json::from_str(&text).map_err(|e| LiveError::Unexpected(format!("GET {path}: {e}")))
    }

    /// Sends an owner back to S1, keeping payment and number (as RESTART does).
    pub async fn reset(&self, id: &str) -> Result<(), LiveError> {
        let path = format!("/admin/api/owners/{id}/reset");
        let (status, text) = self.admin(reqwest::Method::POST, &path, None).await?;
        ok(&format!("POST {path}"), status, text).map(|_| ())
    }

    /// Takes an owner's number for good; a paid owner gets another (as the console's button does).
    pub async fn release_owner_number(&self, id: &str) -> Result<(), LiveError> {
        let path = format!("/admin/api/owners/{id}/release-number");
        let (status, text) = self.admin(reqwest::Method::POST, &path, None).await?;
        ok(&format!("POST {path}"), status, text).map(|_| ())
    }

    /// Adds numbers to the pool; answers how many were new.
    pub async fn add_pool(&self, numbers: &[String]) -> Result<u64, LiveError> {
        let body = serde_json::json!({ "numbers": numbers });
        let (status, text) = self
            .admin(reqwest::Method::POST, "/admin/api/pool", Some(body))
            .await?;
        let text = ok("POST /admin/api/pool", status, text)?;
        let json: Value = serde_json::from_str(&text)
            .map_err(|e| LiveError::Unexpected(format!("POST /admin/api/pool: {e}")))?;
        Ok(json["added"].as_u64().unwrap_or_default())
    }

    /// Sends a number no owner holds to quarantine; a number an owner holds is left alone.
    pub async fn release(&self, number: &str) -> Result<(), LiveError> {
        let path = format!("/admin/api/pool/{}/release", number.replace('+', "%2B"));
        let (status, text) = self.admin(reqwest::Method::POST, &path, None).await?;
        if status == StatusCode::CONFLICT || status == StatusCode::NOT_FOUND {
            return Ok(());
        }
        ok(&format!("POST {path}"), status, text).map(|_| ())
    }
}

fn ok(what: &str, status: StatusCode, body: String) -> Result<String, LiveError> {
    if status.is_success() {
        Ok(body)
    } else {
        Err(LiveError::Status {
            what: what.to_owned(),
            status,
            body: body.trim().to_owned(),
        })
    }
}

/// What the admin API says of an owner, as expectations see it.
pub fn observed(owner: &Value) -> Observed {
    Observed {
        state: owner["state"].as_str().unwrap_or_default().to_owned(),
        gate: owner["gate"].as_str().map(str::to_owned),
        opted_out: owner["opted_out"].as_bool().unwrap_or_default(),
        paid: owner["payment_active"].as_bool().unwrap_or_default(),
        number: owner["twilio_number"].as_str().map(str::to_owned),
    }
}

/// Sent first to `phone` after outbound message `after`: texts and verification calls, in order.
pub fn outbound_after(record: &Value, phone: &str, after: i64) -> Vec<(i64, String, String)> {
    let mut messages: Vec<(i64, String, String)> = record["outbound_messages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["to_addr"].as_str() == Some(phone))
        .filter_map(|m| {
            let id = m["id"].as_i64()?;
            (id > after).then(|| {
                (
                    id,
                    m["kind"].as_str().unwrap_or_default().to_owned(),
                    m["body"].as_str().unwrap_or_default().to_owned(),
                )
            })
        })
        .collect();
    messages.sort_by_key(|(id, _, _)| *id);
    messages
}

/// Fresh numbers for a run: each fixture number maps to one nobody else in the run has.
///
/// The numbers of one fixture keep their country, their area code (for +1) and their order
/// (the pool hands out the lowest of equally old numbers first): each family of numbers is moved
/// by one random offset, chosen so that no number the run handed out already is hit.
#[derive(Debug)]
pub struct Rewriter {
    used: Mutex<HashSet<String>>,
    seed: u64,
}

impl Rewriter {
    pub fn new() -> Rewriter {
        use std::hash::BuildHasher;
        let seed = std::hash::RandomState::new().hash_one(std::process::id());
        Rewriter {
            used: Mutex::new(HashSet::new()),
            seed,
        }
    }

    /// How many trailing digits of `number` may change: six of a UK mobile (after +447), four
    /// of others (keeping a +1 number's area code and exchange).
    fn tail_len(number: &str) -> usize {
        let digits = number.len() - 1;
        if number.starts_with("+447") {
            6.min(digits - 3)
        } else {
            4.min(digits - 2)
        }
    }

    /// The text with every E.164 number replaced, consistently, and each also in its national
    /// form (`07700 900900` as `07700900900`, a +1 number's ten digits), as forwarding codes
    /// carry it; the fixtures' verification caller becomes the server's. Answers the text and
    /// the mapping.
    pub fn rewrite(
        &self,
        text: &str,
        verify_caller: &str,
        salt: u64,
    ) -> (String, HashMap<String, String>) {
        let numbers = e164_in(text);
        // Families: same prefix, same tail length.
        let mut families: HashMap<(String, usize), Vec<String>> = HashMap::new();
        for number in numbers.iter().filter(|n| *n != FIXTURE_CALLER) {
            let tail = Self::tail_len(number);
            let prefix = number[..number.len() - tail].to_owned();
            families
                .entry((prefix, tail))
                .or_default()
                .push(number.clone());
        }
        let mut map: HashMap<String, String> = HashMap::new();
        map.insert(FIXTURE_CALLER.to_owned(), verify_caller.to_owned());
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        let mut families: Vec<_> = families.into_iter().collect();
        families.sort();
        let mut state = self
            .seed
            .wrapping_add(salt.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        for ((prefix, tail), members) in families {
            let space = 10u64.pow(tail as u32);
            let tails: Vec<u64> = members
                .iter()
                .map(|n| n[prefix.len()..].parse().unwrap_or(0))
                .collect();
            let highest = tails.iter().copied().max().unwrap_or(0);
            let room = space - highest; // offsets 1..room keep every tail in range and in order
            let mut chosen = None;
            for _ in 0..10_000 {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let offset = 1 + (state >> 33) % room.max(2).saturating_sub(1).max(1);
                let fresh: Vec<String> = tails
                    .iter()
                    .map(|t| format!("{prefix}{:0tail$}", (t + offset) % space))
                    .collect();
                if fresh
                    .iter()
                    .all(|f| !used.contains(f) && !numbers.contains(f))
                {
                    chosen = Some(fresh);
                    break;
                }
            }
            let fresh = chosen.expect("ten thousand offsets cannot all be taken in one run");
            for (original, fresh) in members.into_iter().zip(fresh) {
                used.insert(fresh.clone());
                map.insert(original, fresh);
            }
        }
        drop(used);
        let mut out = replace_e164(text, &map);
        let mut national: Vec<(String, String)> = map
            .iter()
            .filter(|(from, _)| *from != FIXTURE_CALLER)
            .flat_map(|(from, to)| {
                let dialled = national_form(from).zip(national_form(to));
                // The form the bot shows people, "07700 900900" or "(415) 555-0199".
                let shown = PhoneNumber::parse(from)
                    .ok()
                    .zip(PhoneNumber::parse(to).ok())
                    .map(|(from, to)| (from.for_people(), to.for_people()))
                    .filter(|(from, _)| !from.starts_with('+'));
                dialled.into_iter().chain(shown)
            })
            .collect();
        // Longest first, so no form is replaced inside a longer one.
        national.sort_by_key(|(from, _)| std::cmp::Reverse(from.len()));
        for (from, to) in national {
            out = out.replace(&from, &to);
        }
        (out, map)
    }
}

/// A number as dialled at home: `+447700900900` as `07700900900`, `+14155550199` as
/// `4155550199`; `None` for other countries.
fn national_form(e164: &str) -> Option<String> {
    if let Some(rest) = e164.strip_prefix("+44") {
        Some(format!("0{rest}"))
    } else {
        e164.strip_prefix("+1")
            .filter(|rest| rest.len() == 10)
            .map(str::to_owned)
    }
}

/// `+` and 8 to 15 digits, wherever they are, in order of first appearance.
fn e164_in(text: &str) -> Vec<String> {
    let mut found: Vec<String> = Vec::new();
    let bytes = text.as_bytes();
    for (i, _) in text.match_indices('+') {
        let digits = bytes[i + 1..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        let number = &text[i..i + 1 + digits];
        if (8..=15).contains(&digits) && !found.iter().any(|f| f == number) {
            found.push(number.to_owned());
        }
    }
    found
}

fn replace_e164(text: &str, map: &HashMap<String, String>) -> String {
    let mut out = String::with_capacity(text.len());
    let bytes = text.as_bytes();
    let mut last = 0;
    for (i, _) in text.match_indices('+') {
        if i < last {
            continue;
        }
        let digits = bytes[i + 1..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        if let Some(fresh) = map.get(&text[i..i + 1 + digits]) {
            out.push_str(&text[last..i]);
            out.push_str(fresh);
            last = i + 1 + digits;
        }
    }
    out.push_str(&text[last..]);
    out
}

impl Default for Rewriter {
    fn default() -> Self {
        Self::new()
    }
}

/// One fixture's result against a live server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Passed,
    /// Passed up to `from`; that step and the rest need the fixture's clock or the process.
    PassedUntil {
        from: usize,
        why: String,
    },
    Failed(String),
}

/// Whether a fixture takes numbers from the pool (and so must not run beside another that does).
fn uses_pool(fixture: &Fixture) -> bool {
    !fixture.pool.is_empty()
        || fixture.steps.iter().any(|s| {
            s.stripe.is_some()
                || matches!(
                    s.event.as_deref(),
                    Some("payment_confirmed" | "number_allocated")
                )
        })
}

/// Replays one fixture (already rewritten) against the server. `run` makes provider ids unique.
pub async fn replay_one(
    remote: &Remote,
    fixture: &Fixture,
    run: &str,
) -> Result<Verdict, LiveError> {
    let verdict = steps(remote, fixture, run).await;
    // Hand back what the fixture added to the pool and did not use, and take its owners off the
    // priority list, so the next fixture finds the pool as it was.
    let mut owners: Vec<&PhoneNumber> = vec![&fixture.owner];
    owners.extend(fixture.steps.iter().filter_map(|s| s.from.as_ref()));
    for owner in owners {
        if let Some(owner) = remote.owner(owner.as_str()).await?
            && let Some(id) = owner["id"].as_str()
            && !remote.record(id).await?["waitlisted_at"].is_null()
        {
            revoke(remote, id, &format!("evt_{run}_cleanup_{id}")).await?;
        }
    }
    let added = fixture
        .pool
        .iter()
        .chain(fixture.steps.iter().filter_map(|s| s.new_number.as_ref()));
    for number in added {
        remote.release(number.as_str()).await?;
    }
    verdict
}

async fn revoke(remote: &Remote, id: &str, event_id: &str) -> Result<(), LiveError> {
    let body = stripe_event_body(&StripeEvent {
        kind: "charge.refunded",
        event_id,
        owner: id,
        client_reference_id: Some(id),
        payment_status: "paid",
        created: chrono::Utc::now().timestamp(),
    });
    remote.stripe(&body, None).await?.map_err(|why| {
        LiveError::Unexpected(format!("taking a waiting owner off the list: {why}"))
    })?;
    Ok(())
}

async fn steps(remote: &Remote, fixture: &Fixture, run: &str) -> Result<Verdict, LiveError> {
    // Provider ids unique to the run, the same for a repeated id within the fixture; the run
    // goes after the provider's prefix (`SM`, `CA`, `evt_`), which the server checks.
    let unique = |id: &str| -> String {
        let letters = id
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(id.len());
        let prefix_len = letters + usize::from(id[letters..].starts_with('_'));
        let (prefix, rest) = id.split_at(prefix_len);
        format!("{prefix}{run}{rest}").chars().take(64).collect()
    };
    let target = remote.target();
    for (i, step) in fixture.steps.iter().enumerate() {
        let n = i + 1;
        let needs_clock = step.after_minutes.is_some_and(|m| m != 0)
            || matches!(step.event.as_deref(), Some("timers" | "pool_empty"));
        // Steps after onboarding (texts to the business number, recording callbacks, a fixture's
        // own plan settings) are replayed in-process only for now.
        let in_process_only = step.to.is_some()
            || step.recording.is_some()
            || fixture.plan_calls_included.is_some()
            || fixture.caller_text_back.is_some()
            || !step.expect.outbox_contains.is_empty()
            || step.expect.outbox_count.is_some();
        if needs_clock || in_process_only {
            let why = if in_process_only {
                "steps after onboarding replay only in-process"
            } else if step.event.as_deref() == Some("pool_empty") {
                "event pool_empty happens only in-process"
            } else {
                "it moves the fixture's clock"
            };
            return Ok(Verdict::PassedUntil {
                from: n,
                why: why.into(),
            });
        }
        let owner = step.from.as_ref().unwrap_or(&fixture.owner).as_str();
        let before = remote.owner(owner).await?;
        let owner_id = before
            .as_ref()
            .and_then(|c| c["id"].as_str())
            .map(str::to_owned);
        let bookmark = match &owner_id {
            Some(id) => outbound_after(&remote.record(id).await?, owner, 0)
                .last()
                .map_or(0, |(id, _, _)| *id),
            None => 0,
        };
        let mut reply = None;
        let mut receipt = None;
        let mut answer = None;
        let call_to = |to: &Option<String>| match (to, &before) {
            (Some(to), _) => to.clone(),
            (None, Some(c)) => c["twilio_number"].as_str().unwrap_or_default().to_owned(),
            (None, None) => String::new(),
        };
        let resolve = |who: &str| match who {
            "verifier" => target.verify_caller.to_string(),
            "owner" => owner.to_owned(),
            other => other.to_owned(),
        };
        if let Some(body) = &step.sms {
            let sid = unique(step.sid.as_deref().unwrap_or(&format!("SM{n:04}")));
            reply = message_text(&remote.sms(&sid, owner, body).await?);
        } else if let Some(kind) = &step.stripe {
            let id = owner_id.clone().unwrap_or_else(|| "unknown".into());
            let reference = match step.client_reference_id.as_deref() {
                Some("none") => None,
                Some(other) => Some(other.to_owned()),
                None => Some(id.clone()),
            };
            let body = stripe_event_body(&StripeEvent {
                kind,
                event_id: &unique(
                    step.stripe_event_id
                        .as_deref()
                        .unwrap_or(&format!("evt_{n}")),
                ),
                owner: &id,
                client_reference_id: reference.as_deref(),
                payment_status: step.payment_status.as_deref().unwrap_or("paid"),
                created: chrono::Utc::now().timestamp(),
            });
            let signature = match step.signature.as_deref() {
                Some("missing") => Some(None),
                Some(_) => Some(Some(crate::stripe::signature::sign(
                    body.as_bytes(),
                    "whsec_wrong",
                    chrono::Utc::now().timestamp(),
                ))),
                None => None,
            };
            receipt = Some(remote.stripe(&body, signature).await?);
        } else if let Some(from) = &step.call {
            let sid = unique(step.call_sid.as_deref().unwrap_or(&format!("CA{n:04}")));
            let forwarded = step.forwarded_from.as_deref().map(resolve);
            answer = Some(
                remote
                    .call(
                        &sid,
                        &resolve(from),
                        &call_to(&step.call_to),
                        forwarded.as_deref(),
                    )
                    .await?,
            );
        } else if let Some(event) = &step.event {
            let id = match owner_id.clone() {
                Some(id) => id,
                None if event == "number_allocated" => String::new(),
                None => {
                    return Ok(Verdict::Failed(
                        Failure {
                            step: n,
                            expected: format!("an owner to send {event} to"),
                            actual: "no such owner (text first)".into(),
                        }
                        .to_string(),
                    ));
                }
            };
            // The in-process events, done the way they happen on a server.
            match event.as_str() {
                "number_allocated" => {
                    let number = step.new_number.as_ref().map(|n| n.to_string());
                    remote
                        .add_pool(&number.into_iter().collect::<Vec<_>>())
                        .await?;
                }
                "number_released" => remote.release_owner_number(&id).await?,
                "payment_confirmed" | "payment_revoked" => {
                    let kind = if event == "payment_confirmed" {
                        "checkout.session.completed"
                    } else {
                        "charge.refunded"
                    };
                    let body = stripe_event_body(&StripeEvent {
                        kind,
                        event_id: &unique(&format!("evt_{n}")),
                        owner: &id,
                        client_reference_id: Some(&id),
                        payment_status: "paid",
                        created: chrono::Utc::now().timestamp(),
                    });
                    remote
                        .stripe(&body, None)
                        .await?
                        .map_err(|why| LiveError::Unexpected(format!("step {n}: {why}")))?;
                }
                _ => {
                    // test_call: the verification call arrives, forwarded from the owner's phone.
                    let sid = unique(&format!("CA{n:04}"));
                    remote
                        .call(
                            &sid,
                            target.verify_caller.as_str(),
                            &call_to(&None),
                            Some(owner),
                        )
                        .await?;
                }
            }
        }
        let after = remote.owner(owner).await?;
        let queued = match after.as_ref().and_then(|c| c["id"].as_str()) {
            Some(id) => outbound_after(&remote.record(id).await?, owner, bookmark),
            None => Vec::new(),
        };
        let call_placed = queued.iter().any(|(_, kind, _)| kind == "verify_call");
        if step.sms.is_none() {
            let texts: Vec<&str> = queued
                .iter()
                .filter(|(_, kind, _)| kind == "sms")
                .map(|(_, _, body)| body.as_str())
                .collect();
            reply = (!texts.is_empty()).then(|| texts.join("\n"));
        }
        let mut stand_ins = vec![(FIXTURE_PAYMENT_LINK.to_owned(), target.payment_link.clone())];
        stand_ins.extend(owner_ids(remote, fixture).await?);
        let expect = localize(&step.expect, &stand_ins);
        let observed = after.as_ref().map(observed);
        let checks = check_receipt(n, &expect, receipt.as_ref())
            .and_then(|()| check_call(n, &expect, answer.as_deref(), call_placed))
            .and_then(|()| check(n, &expect, reply.as_deref(), observed.as_ref()));
        if let Err(failure) = checks {
            return Ok(Verdict::Failed(failure.to_string()));
        }
    }
    Ok(Verdict::Passed)
}

/// What the fixtures' sequential owner ids (`c_0000000001`, ...: owners in the order they
/// first text) stand for on the server.
async fn owner_ids(remote: &Remote, fixture: &Fixture) -> Result<Vec<(String, String)>, LiveError> {
    let mut owners: Vec<&PhoneNumber> = Vec::new();
    for step in fixture.steps.iter().filter(|s| s.sms.is_some()) {
        let owner = step.from.as_ref().unwrap_or(&fixture.owner);
        if !owners.contains(&owner) {
            owners.push(owner);
        }
    }
    let mut ids = Vec::new();
    for (i, owner) in owners.into_iter().enumerate() {
        if let Some(id) = remote
            .owner(owner.as_str())
            .await?
            .and_then(|c| c["id"].as_str().map(str::to_owned))
        {
            ids.push((format!("c_{:010}", i + 1), id));
        }
    }
    Ok(ids)
}

/// Expectations with the fixtures' stand-ins replaced by what this server uses.
fn localize(expect: &Expect, replacements: &[(String, String)]) -> Expect {
    let swap = |text: &String| {
        replacements
            .iter()
            .fold(text.clone(), |t, (from, to)| t.replace(from.as_str(), to))
    };
    let mut expect = expect.clone();
    expect.reply = expect.reply.as_ref().map(swap);
    expect.reply_contains = expect.reply_contains.iter().map(swap).collect();
    expect.reply_not_contains = expect.reply_not_contains.iter().map(swap).collect();
    expect
}

/// Replays every fixture under `paths` against the server, printing one line each; true when
/// none failed.
pub async fn replay_all(
    remote: &Remote,
    paths: &[PathBuf],
    out: &mut impl std::io::Write,
) -> anyhow::Result<bool> {
    let files = crate::replay::collect(paths)?;
    if files.is_empty() {
        anyhow::bail!("no fixture files found in {paths:?}");
    }
    let rewriter = Arc::new(Rewriter::new());
    let run = format!("r{:x}", chrono::Utc::now().timestamp_millis());
    let limit = Arc::new(tokio::sync::Semaphore::new(PARALLEL));
    let pool_lock = Arc::new(tokio::sync::Mutex::new(()));
    let mut tasks = tokio::task::JoinSet::new();
    for (index, file) in files.iter().enumerate() {
        let (remote, rewriter, limit, pool_lock) = (
            remote.clone(),
            rewriter.clone(),
            limit.clone(),
            pool_lock.clone(),
        );
        let file = file.clone();
        let run = format!("{run}f{index}x");
        tasks.spawn(async move {
            let verdict =
                one_file(&remote, &rewriter, &file, index, &run, &limit, &pool_lock).await;
            (index, verdict)
        });
    }
    let mut verdicts: Vec<Option<Verdict>> = vec![None; files.len()];
    while let Some(joined) = tasks.join_next().await {
        let (index, verdict) = joined?;
        verdicts[index] = Some(verdict);
    }
    let (mut passed, mut failed, mut partly) = (0, 0, 0);
    for (file, verdict) in files.iter().zip(verdicts) {
        match verdict.unwrap_or(Verdict::Failed("did not run".into())) {
            Verdict::Passed => {
                passed += 1;
                writeln!(out, "ok      {}", file.display())?;
            }
            Verdict::PassedUntil { from, why } => {
                partly += 1;
                writeln!(
                    out,
                    "ok      {} (steps from {from} skipped: {why})",
                    file.display()
                )?;
            }
            Verdict::Failed(why) => {
                failed += 1;
                writeln!(out, "FAILED  {}: {why}", file.display())?;
            }
        }
    }
    writeln!(
        out,
        "{} passed ({partly} of them with steps skipped), {failed} failed",
        passed + partly
    )?;
    Ok(failed == 0)
}

async fn one_file(
    remote: &Remote,
    rewriter: &Rewriter,
    file: &Path,
    index: usize,
    run: &str,
    limit: &tokio::sync::Semaphore,
    pool_lock: &tokio::sync::Mutex<()>,
) -> Verdict {
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) => return Verdict::Failed(format!("cannot read: {e}")),
    };
    let shape = match Fixture::parse(&text, file) {
        Ok(fixture) => fixture,
        Err(e) => return Verdict::Failed(e.to_string()),
    };
    // The pool first: a fixture waiting for it must not hold a slot others could use.
    let _alone = if uses_pool(&shape) {
        Some(pool_lock.lock().await)
    } else {
        None
    };
    let _slot = limit.acquire().await;
    // Fresh for this run may still be taken on the server (an earlier run's owner or number):
    // then the fixture is rewritten again.
    for attempt in 0..5u64 {
        let (rewritten, _) = rewriter.rewrite(
            &text,
            remote.target().verify_caller.as_str(),
            index as u64 + 1000 * attempt,
        );
        let fixture = match Fixture::parse(&rewritten, file) {
            Ok(fixture) => fixture,
            Err(e) => return Verdict::Failed(e.to_string()),
        };
        let fresh = match is_fresh(remote, &fixture).await {
            Ok(true) => add_fresh_pool(remote, &fixture).await,
            other => other,
        };
        match fresh {
            Ok(true) => {
                return match replay_one(remote, &fixture, run).await {
                    Ok(verdict) => verdict,
                    Err(e) => Verdict::Failed(e.to_string()),
                };
            }
            Ok(false) => continue,
            Err(e) => return Verdict::Failed(e.to_string()),
        }
    }
    Verdict::Failed("found no numbers unused on the server in 5 tries".into())
}

/// True when no owner on the server texts from any of the fixture's owners' phones.
async fn is_fresh(remote: &Remote, fixture: &Fixture) -> Result<bool, LiveError> {
    let owners =
        std::iter::once(&fixture.owner).chain(fixture.steps.iter().filter_map(|s| s.from.as_ref()));
    for owner in owners {
        if remote.owner(owner.as_str()).await?.is_some() {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Adds the fixture's pool one number at a time; when one was on the server already, hands back
/// those it added and answers false.
async fn add_fresh_pool(remote: &Remote, fixture: &Fixture) -> Result<bool, LiveError> {
    let mut added = Vec::new();
    for number in &fixture.pool {
        if remote.add_pool(&[number.to_string()]).await? == 1 {
            added.push(number);
        } else {
            for number in added {
                remote.release(number.as_str()).await?;
            }
            return Ok(false);
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_rewritten_consistently_and_keep_their_country() {
        let rewriter = Rewriter::new();
        let text = "owner = \"+447700900123\"\npool = [\"+15125550100\"]\n\
                    reply_contains = [\"**004*+447700900900#\", \"+15125550100\"]\n\
                    call = \"+447700900000\"\nx = \"+447700900123\"\ncode = \"*61*07700900900#\"";
        let (out, map) = rewriter.rewrite(text, "+447700900999", 1);
        let owner = &map["+447700900123"];
        let us = &map["+15125550100"];
        assert_ne!(owner, "+447700900123");
        assert!(owner.starts_with("+447") && owner.len() == 13, "{owner}");
        assert!(us.starts_with("+1512555") && us.len() == 12, "{us}");
        // Order within a family is kept: the pool hands out the lowest of equal age first.
        assert!(map["+447700900123"] < map["+447700900900"]);
        assert_eq!(out.matches(owner.as_str()).count(), 2, "{out}");
        assert!(out.contains(&format!("**004*{}#", map["+447700900900"])));
        // The fixtures' verification caller is the server's.
        assert!(out.contains("call = \"+447700900999\""), "{out}");
        assert!(!out.contains("+447700900123"));
        // National forms in forwarding codes follow their number.
        let national = format!("*61*0{}#", &map["+447700900900"][3..]);
        assert!(out.contains(&national), "{out}");
    }
}
