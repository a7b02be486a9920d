//! `onboard chat`: a conversation with the bot in a terminal, as the owner's phone would have it.
//!
//! The owner's lines go in as texts; what comes back is printed marked by how it reached the
//! phone: `bot:` for the reply to a text (TwiML), `bot (text):` for a text the server sends on its
//! own through the outbox (after a payment, a test call, a timer), `bot (calls you):` for the
//! verification call. Slash commands stand for what a phone cannot type: a Stripe payment, the
//! verification call arriving, a customer calling, time passing.
//!
//! In-process ([`Local`]) it runs the real engine and flows on an in-memory SQLite database with
//! a manual clock and a pool of test numbers it adds itself: nothing to set up, no file written.
//! Against a live server ([`Live`], `--target URL`) the same commands are webhooks signed as
//! Twilio and Stripe sign them, and the texts the server sends first are read from its admin API.
//! From a pipe the loop reads plain lines; in a terminal it edits the line being typed (arrows,
//! Home/End, the usual Ctrl keys, this session's history: [`line`] decides, [`terminal`] does the
//! I/O).

mod line;
mod terminal;

use std::io::{BufRead, Write};
use std::sync::Arc;

use chrono::Duration;

use crate::clock::{Clock, ManualClock, SequentialIds, SystemClock};
use crate::config::Config;
use crate::domain::PhoneNumber;
use crate::engine::InboundCall;
use crate::engine::{Engine, InboundSms, Seams};
use crate::flows::Flows;
use crate::replay::{StripeEvent, message_text, stripe_event_body};
use crate::store::{OutboundKind, Owner, SqliteStore, Store};

/// The owner's phone when `--phone` is not given.
pub const DEFAULT_PHONE: &str = "+447700900123";

/// The caller id of verification calls in a chat (a number of ours in the drama range).
pub const CHAT_VERIFY_CALLER: &str = "+447700900000";

/// A customer calling the owner's number (`/missed`).
pub const CHAT_CUSTOMER: &str = "+447700900555";

/// The pool a local chat starts with: UK and US test numbers, so owners of either get one.
pub const CHAT_POOL: [&str; 6] = [
    "+447700900901",
    "+447700900902",
    "+447700900903",
    "+12025550101",
    "+12025550102",
    "+12025550103",
];

/// The Stripe webhook secret a local chat signs its payments with.
const CHAT_STRIPE_SECRET: &str = "whsec_chat";

pub const HELP: &str = "\
Type what the owner texts. Commands for what a phone cannot type:
  /pay          Stripe reports the payment (checkout.session.completed)
  /refund       Stripe reports a refund (charge.refunded)
  /call         the verification call arrives at the new number, forwarded from your phone
  /call owner   you call your new number from your own phone
  /missed       a customer calls your new number
  /voicemail 20 that caller leaves a message of 20 seconds (Twilio's recording callback)
  /later 2h     move the clock (s, m, h, d) and run the timers
  /state        where the conversation is
  /restart      start again with a fresh database
  /help         this
  /quit         leave (end of input too)";

/// What a chat line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Text(String),
    Pay,
    Refund,
    /// The verification call reaches the owner's new number, forwarded from the owner's phone.
    VerifyCall,
    /// The owner calls their new number from their own phone.
    OwnerCall,
    /// A customer calls the owner's new number.
    Missed,
    /// The last caller leaves a voicemail of this many seconds.
    Voicemail(i32),
    Later(Duration),
    State,
    Restart,
    Help,
    Quit,
}

impl Command {
    /// Reads one line; `Err` explains a command that is not one.
    pub fn parse(line: &str) -> Result<Command, String> {
        let line = line.trim_end_matches(['\r', '\n']);
        let Some(command) = line.trim().strip_prefix('/') else {
            return Ok(Command::Text(line.to_owned()));
        };
        let mut words = command.split_whitespace();
        let name = words.next().unwrap_or_default();
        let argument = words.next();
        Ok(match (name, argument) {
            ("pay", None) => Command::Pay,
            ("refund", None) => Command::Refund,
            ("call", None) => Command::VerifyCall,
            ("call", Some("owner")) => Command::OwnerCall,
            ("missed", None) => Command::Missed,
            ("voicemail", None) => Command::Voicemail(20),
            ("voicemail", Some(secs)) => Command::Voicemail(
                secs.parse()
                    .ok()
                    .filter(|s| (1..=120).contains(s))
                    .ok_or_else(|| format!("{secs:?} is not a number of seconds from 1 to 120"))?,
            ),
            ("later", Some(amount)) => Command::Later(parse_later(amount)?),
            ("later", None) => return Err("/later needs an amount, e.g. /later 2h".into()),
            ("state", None) => Command::State,
            ("restart", None) => Command::Restart,
            ("help", None) => Command::Help,
            ("quit" | "exit", None) => Command::Quit,
            _ => return Err(format!("unknown command /{command} (/help lists them)")),
        })
    }
}

/// `90s`, `15m`, `2h`, `1d`; a bare number is minutes.
fn parse_later(amount: &str) -> Result<Duration, String> {
    let bad = || format!("{amount:?} is not an amount of time (e.g. 90s, 15m, 2h, 1d)");
    let (digits, unit) = match amount.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => amount.split_at(at),
        None => (amount, "m"),
    };
    let n: i64 = digits.parse().map_err(|_| bad())?;
    // Bounded so the arithmetic on the clock cannot overflow.
    if n > 100_000 {
        return Err(bad());
    }
    match unit {
        "s" => Ok(Duration::seconds(n)),
        "m" => Ok(Duration::minutes(n)),
        "h" => Ok(Duration::hours(n)),
        "d" => Ok(Duration::days(n)),
        _ => Err(bad()),
    }
}

/// One thing that reached the owner's phone, or happened around it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Said {
    /// The reply to the owner's text.
    Reply(String),
    /// A text sent through the outbox, not as a reply.
    Text(String),
    /// The verification call was placed to the owner's phone.
    VerifyCallPlaced,
    /// What a caller hears when a call reaches the owner's new number.
    CallAnswer(String),
    /// A note from the simulator (a payment's outcome, the state).
    Note(String),
}

impl Said {
    fn print(&self, out: &mut impl Write) -> std::io::Result<()> {
        let (mark, text) = match self {
            Said::Reply(text) => ("bot:", text.as_str()),
            Said::Text(text) => ("bot (text):", text.as_str()),
            Said::VerifyCallPlaced => (
                "bot (calls you):",
                "the verification call rings your phone; do not answer. /call when it reaches your new number",
            ),
            Said::CallAnswer(text) => ("caller hears:", text.as_str()),
            Said::Note(text) => ("--", text.as_str()),
        };
        let mut lines = text.lines();
        writeln!(out, "{mark} {}", lines.next().unwrap_or_default())?;
        let indent = " ".repeat(mark.len() + 1);
        for line in lines {
            writeln!(out, "{indent}{line}")?;
        }
        Ok(())
    }
}

/// Where the chat's events go: the in-process engine, or a live server.
#[allow(async_fn_in_trait)] // used generically inside the crate only
pub trait Backend {
    /// Carries out `command` (never Help, Restart or Quit) and says what reached the phone.
    async fn perform(&mut self, command: &Command) -> anyhow::Result<Vec<Said>>;
    /// Starts over with no owner.
    async fn restart(&mut self) -> anyhow::Result<()>;
}

/// Where the owner's lines come from.
pub enum Input<R> {
    /// Plain lines (a pipe, a file); `prompt` shows `you> ` before each.
    Lines {
        lines: std::io::Lines<R>,
        prompt: bool,
    },
    /// A terminal, with line editing and history.
    Terminal(terminal::Terminal),
}

impl<R: BufRead> Input<R> {
    /// Line editing when `input` is stdin and both stdin and stdout are a terminal; plain lines
    /// (with the prompt when `input` is a terminal) otherwise.
    pub fn stdin(input: R) -> Input<R> {
        use std::io::IsTerminal;
        let stdin_is_terminal = std::io::stdin().is_terminal();
        if stdin_is_terminal
            && std::io::stdout().is_terminal()
            && let Some(terminal) = terminal::Terminal::on_stdin()
        {
            return Input::Terminal(terminal);
        }
        Input::plain(input, stdin_is_terminal)
    }

    /// Plain lines from `input`.
    pub fn plain(input: R, prompt: bool) -> Input<R> {
        Input::Lines {
            lines: input.lines(),
            prompt,
        }
    }

    /// The next line without its ending; `None` at the end of the input.
    fn read_line(&mut self, out: &mut impl Write) -> std::io::Result<Option<String>> {
        match self {
            Input::Lines { lines, prompt } => {
                if *prompt {
                    write!(out, "{}", terminal::PROMPT)?;
                    out.flush()?;
                }
                lines.next().transpose()
            }
            Input::Terminal(terminal) => terminal.read_line(out),
        }
    }
}

/// The chat loop: reads lines until `/quit` or the end of the input.
pub async fn run(
    backend: &mut impl Backend,
    mut input: Input<impl BufRead>,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    while let Some(line) = input.read_line(out)? {
        if line.trim().is_empty() && !line.is_empty() {
            // Whitespace only: a text a phone could send, but surely a slip here.
            continue;
        }
        let command = match Command::parse(&line) {
            Ok(command) => command,
            Err(why) => {
                writeln!(out, "-- {why}")?;
                continue;
            }
        };
        match command {
            Command::Quit => break,
            Command::Help => writeln!(out, "{HELP}")?,
            Command::Restart => {
                backend.restart().await?;
                writeln!(out, "-- started again: text the bot as a new owner")?;
            }
            command => {
                let said = match backend.perform(&command).await {
                    Ok(said) => said,
                    // A refused step is shown, and the chat goes on.
                    Err(e) => vec![Said::Note(format!("{e:#}"))],
                };
                if said.is_empty() {
                    writeln!(out, "-- (nothing was sent)")?;
                }
                for said in &said {
                    said.print(out)?;
                }
            }
        }
        out.flush()?;
    }
    Ok(())
}

/// The bot in this process: the real engine and flows, on an in-memory database.
pub struct Local {
    flows: Arc<Flows>,
    payment_link: String,
    owner: PhoneNumber,
    clock: Arc<ManualClock>,
    engine: Engine<SqliteStore>,
    /// Numbers the next message and call sids, and Stripe event ids.
    counter: u64,
    /// The sid of the last call to the owner's number, for `/voicemail`.
    last_call: Option<String>,
}

impl Local {
    /// A fresh world for `owner`, with [`CHAT_POOL`] in the pool.
    pub async fn new(
        flows: Arc<Flows>,
        owner: PhoneNumber,
        payment_link: String,
    ) -> anyhow::Result<Local> {
        let clock = Arc::new(ManualClock::new(SystemClock.now()));
        let engine = Self::engine(flows.clone(), &payment_link, clock.clone()).await?;
        Ok(Local {
            flows,
            payment_link,
            owner,
            clock,
            engine,
            counter: 0,
            last_call: None,
        })
    }

    async fn engine(
        flows: Arc<Flows>,
        payment_link: &str,
        clock: Arc<ManualClock>,
    ) -> anyhow::Result<Engine<SqliteStore>> {
        let config = Config::from_lookup(|name| match name {
            "STRIPE_PAYMENT_LINK" => Some(payment_link.to_owned()),
            "VERIFY_CALLER_NUMBER" => Some(CHAT_VERIFY_CALLER.to_owned()),
            "POOL_LOW_WATER" => Some("0".to_owned()),
            _ => None,
        })?;
        let store = SqliteStore::in_memory().await?;
        store.migrate().await?;
        let engine = Engine::from_config(
            store,
            &config,
            Seams {
                flows,
                clock,
                ids: Arc::new(SequentialIds::default()),
            },
        );
        let pool = CHAT_POOL
            .iter()
            .map(|n| PhoneNumber::parse(n))
            .collect::<Result<Vec<_>, _>>()?;
        engine.add_numbers(&pool).await?;
        Ok(engine)
    }

    fn next(&mut self) -> u64 {
        self.counter += 1;
        self.counter
    }

    async fn owner(&self) -> anyhow::Result<Owner> {
        self.engine
            .owner_by_phone(&self.owner)
            .await?
            .ok_or_else(|| anyhow::anyhow!("no owner yet: text the bot first"))
    }

    async fn stripe(&mut self, kind: &str) -> anyhow::Result<Said> {
        let owner = self.owner().await?;
        let n = self.next();
        let now = self.engine.now().timestamp();
        let body = stripe_event_body(&StripeEvent {
            kind,
            event_id: &format!("evt_chat_{n}"),
            owner: owner.id.as_str(),
            client_reference_id: Some(owner.id.as_str()),
            payment_status: "paid",
            created: now,
        });
        let signature = crate::stripe::signature::sign(body.as_bytes(), CHAT_STRIPE_SECRET, now);
        let receipt = crate::engine::payments::receive(
            &self.engine,
            &[CHAT_STRIPE_SECRET.to_owned()],
            Some(&signature),
            body.as_bytes(),
        )
        .await
        .map_err(|e| anyhow::anyhow!("Stripe {kind}: {e}"))?;
        Ok(Said::Note(format!("Stripe {kind}: {}", receipt.name())))
    }

    async fn call(&mut self, from: String, forwarded_from: Option<String>) -> anyhow::Result<Said> {
        let owner = self.owner().await?;
        let to = owner
            .twilio_number
            .ok_or_else(|| anyhow::anyhow!("no number yet: pay (/pay) and answer YES first"))?;
        let n = self.next();
        let call_sid = format!("CAchat{n:06}");
        self.last_call = Some(call_sid.clone());
        let twiml = self
            .engine
            .handle_call(&InboundCall {
                call_sid,
                from,
                to: to.to_string(),
                forwarded_from,
                direction: "inbound".into(),
                status: "ringing".into(),
            })
            .await?;
        Ok(Said::CallAnswer(spoken(&twiml)))
    }
}

impl Backend for Local {
    async fn perform(&mut self, command: &Command) -> anyhow::Result<Vec<Said>> {
        let bookmark = self.engine.store().latest_outbound_id().await?;
        let mut said = Vec::new();
        match command {
            Command::Text(body) => {
                let n = self.next();
                let twiml = self
                    .engine
                    .handle_sms(&InboundSms {
                        message_sid: format!("SMchat{n:06}"),
                        from: self.owner.to_string(),
                        to: "+15005550006".to_owned(),
                        body: body.clone(),
                    })
                    .await?;
                said.extend(message_text(&twiml).map(Said::Reply));
            }
            Command::Pay => said.push(self.stripe("checkout.session.completed").await?),
            Command::Refund => said.push(self.stripe("charge.refunded").await?),
            Command::VerifyCall => {
                let owner = self.owner.to_string();
                said.push(
                    self.call(CHAT_VERIFY_CALLER.to_owned(), Some(owner))
                        .await?,
                );
            }
            Command::OwnerCall => {
                let owner = self.owner.to_string();
                said.push(self.call(owner, None).await?);
            }
            Command::Missed => said.push(self.call(CHAT_CUSTOMER.to_owned(), None).await?),
            Command::Voicemail(secs) => match self.last_call.clone() {
                Some(call_sid) => {
                    let n = self.next();
                    self.engine
                        .recording_status(&crate::engine::after::RecordingStatus {
                            recording_sid: format!("REchat{n:06}"),
                            url: Some(format!(
                                "https://api.twilio.com/2010-04-01/Accounts/ACchat/Recordings/REchat{n:06}"
                            )),
                            call_sid,
                            status: "completed".into(),
                            duration_secs: Some(*secs),
                        })
                        .await?;
                }
                None => said.push(Said::Note("no call yet: /missed first".into())),
            },
            Command::Later(by) => {
                self.clock.advance(*by);
                self.engine.end_quarantines().await?;
                self.engine.verify_timeouts().await?;
                self.engine.send_reminders().await?;
                self.engine.send_due_alerts().await?;
                said.push(Said::Note(format!(
                    "the clock is now {}",
                    self.engine.now().format("%Y-%m-%d %H:%M UTC")
                )));
            }
            Command::State => said.push(Said::Note(describe(
                self.engine.owner_by_phone(&self.owner).await?.as_ref(),
            ))),
            Command::Help | Command::Restart | Command::Quit => {}
        }
        // Everything the outbox was given for the owner by this step: texts and calls.
        for message in self.engine.store().outbound_after(bookmark).await? {
            if message.to != self.owner {
                continue;
            }
            said.push(match message.kind {
                OutboundKind::Sms => Said::Text(message.body),
                OutboundKind::VerifyCall => Said::VerifyCallPlaced,
                OutboundKind::Email => Said::Note(format!(
                    "email to {}: {}",
                    message.to_email.unwrap_or_default(),
                    message.body
                )),
            });
        }
        Ok(said)
    }

    async fn restart(&mut self) -> anyhow::Result<()> {
        self.engine =
            Self::engine(self.flows.clone(), &self.payment_link, self.clock.clone()).await?;
        Ok(())
    }
}

/// The bot on a running server, driven as Twilio and Stripe drive it.
pub struct Live {
    remote: crate::live::Remote,
    owner: PhoneNumber,
    /// Makes message and call sids, and Stripe event ids, unique to this chat.
    run: String,
    counter: u64,
    /// The newest outbound message already shown, so texts the server sends later (a timer)
    /// are shown at the next line.
    seen: i64,
}

impl Live {
    pub async fn new(remote: crate::live::Remote, owner: PhoneNumber) -> anyhow::Result<Live> {
        let mut live = Live {
            remote,
            owner,
            run: format!("chat{:x}", chrono::Utc::now().timestamp_millis()),
            counter: 0,
            seen: 0,
        };
        // What the owner was sent before this chat is history, not news.
        live.seen = live.outbound().await?.last().map_or(0, |(id, _, _)| *id);
        Ok(live)
    }

    async fn owner(&self) -> anyhow::Result<serde_json::Value> {
        self.remote
            .owner(self.owner.as_str())
            .await?
            .ok_or_else(|| anyhow::anyhow!("no owner yet: text the bot first"))
    }

    async fn outbound(&self) -> anyhow::Result<Vec<(i64, String, String)>> {
        let Some(owner) = self.remote.owner(self.owner.as_str()).await? else {
            return Ok(Vec::new());
        };
        let id = owner["id"].as_str().unwrap_or_default();
        let record = self.remote.record(id).await?;
        Ok(crate::live::outbound_after(
            &record,
            self.owner.as_str(),
            self.seen,
        ))
    }

    fn next_id(&mut self, prefix: &str) -> String {
        self.counter += 1;
        format!("{prefix}{}{:06}", self.run, self.counter)
    }

    async fn stripe(&mut self, kind: &str) -> anyhow::Result<Said> {
        let owner = self.owner().await?;
        let id = owner["id"].as_str().unwrap_or_default().to_owned();
        let event_id = self.next_id("evt_");
        let body = stripe_event_body(&StripeEvent {
            kind,
            event_id: &event_id,
            owner: &id,
            client_reference_id: Some(&id),
            payment_status: "paid",
            created: chrono::Utc::now().timestamp(),
        });
        match self.remote.stripe(&body, None).await? {
            Ok(outcome) => Ok(Said::Note(format!("Stripe {kind}: {outcome}"))),
            Err(why) => Ok(Said::Note(format!("Stripe {kind} refused: {why}"))),
        }
    }

    async fn call(&mut self, from: String, forwarded_from: Option<String>) -> anyhow::Result<Said> {
        let owner = self.owner().await?;
        let to = owner["twilio_number"]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("no number yet: pay (/pay) and answer YES first"))?
            .to_owned();
        let sid = self.next_id("CA");
        let twiml = self
            .remote
            .call(&sid, &from, &to, forwarded_from.as_deref())
            .await?;
        Ok(Said::CallAnswer(spoken(&twiml)))
    }
}

impl Backend for Live {
    async fn perform(&mut self, command: &Command) -> anyhow::Result<Vec<Said>> {
        let verify_caller = self.remote.target().verify_caller.to_string();
        let mut said = Vec::new();
        match command {
            Command::Text(body) => {
                let sid = self.next_id("SM");
                let twiml = self.remote.sms(&sid, self.owner.as_str(), body).await?;
                said.extend(message_text(&twiml).map(Said::Reply));
            }
            Command::Pay => said.push(self.stripe("checkout.session.completed").await?),
            Command::Refund => said.push(self.stripe("charge.refunded").await?),
            Command::VerifyCall => {
                let owner = self.owner.to_string();
                said.push(self.call(verify_caller, Some(owner)).await?);
            }
            Command::OwnerCall => {
                let owner = self.owner.to_string();
                said.push(self.call(owner, None).await?);
            }
            Command::Missed => said.push(self.call(CHAT_CUSTOMER.to_owned(), None).await?),
            Command::Later(_) => said.push(Said::Note(
                "a live server keeps real time: /later works in-process only (no --target)".into(),
            )),
            Command::Voicemail(_) => said.push(Said::Note(
                "a live server hears of voicemails from Twilio: /voicemail works in-process only (no --target)"
                    .into(),
            )),
            Command::State => said.push(Said::Note(
                match self.remote.owner(self.owner.as_str()).await? {
                    Some(owner) => describe_json(&owner),
                    None => describe(None),
                },
            )),
            Command::Help | Command::Restart | Command::Quit => {}
        }
        for (id, kind, body) in self.outbound().await? {
            self.seen = self.seen.max(id);
            said.push(match kind.as_str() {
                "verify_call" => Said::VerifyCallPlaced,
                _ => Said::Text(body),
            });
        }
        Ok(said)
    }

    /// A live server keeps its owners: the owner goes back to S1 through the admin API, keeping
    /// payment and number, as RESTART does.
    async fn restart(&mut self) -> anyhow::Result<()> {
        if let Some(owner) = self.remote.owner(self.owner.as_str()).await? {
            let id = owner["id"].as_str().unwrap_or_default();
            self.remote.reset(id).await?;
        }
        Ok(())
    }
}

/// `/state` from the admin API's view of an owner.
fn describe_json(owner: &serde_json::Value) -> String {
    let text = |key: &str| owner[key].as_str().unwrap_or("none").to_owned();
    let yes = |key: &str| {
        if owner[key].as_bool() == Some(true) {
            "yes"
        } else {
            "no"
        }
    };
    format!(
        "state {}, gate {}, paid {}, number {}, opted out {}",
        text("state"),
        text("gate"),
        yes("payment_active"),
        text("twilio_number"),
        yes("opted_out"),
    )
}

/// `/state`: the owner's record in one line.
pub fn describe(owner: Option<&Owner>) -> String {
    let Some(owner) = owner else {
        return "no owner yet: text the bot first".into();
    };
    format!(
        "state {}, gate {}, paid {}, number {}, opted out {}",
        owner.state,
        owner.gate.map(|g| g.as_str()).unwrap_or("none"),
        if owner.payment_active { "yes" } else { "no" },
        owner
            .twilio_number
            .as_ref()
            .map(|n| n.to_string())
            .unwrap_or_else(|| "none".into()),
        if owner.opted_out { "yes" } else { "no" },
    )
}

/// What a caller hears: the text of a TwiML answer's `<Say>`s, or what it does instead.
pub fn spoken(twiml: &str) -> String {
    let mut said = Vec::new();
    let mut rest = twiml;
    while let Some(start) = rest.find("<Say") {
        let after = &rest[start..];
        let Some(open_end) = after.find('>') else {
            break;
        };
        let Some(close) = after.find("</Say>") else {
            break;
        };
        if open_end < close {
            said.push(unescape(&after[open_end + 1..close]));
        }
        rest = &after[close + "</Say>".len()..];
    }
    if !said.is_empty() {
        said.join(" ")
    } else if twiml.contains("<Reject") {
        "(the call is rejected)".into()
    } else {
        "(silence; the call ends)".into()
    }
}

fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_texts_unless_they_are_commands() {
        assert_eq!(
            Command::parse("Plumber in Leeds"),
            Ok(Command::Text("Plumber in Leeds".into()))
        );
        assert_eq!(Command::parse("/pay"), Ok(Command::Pay));
        assert_eq!(Command::parse("/call owner"), Ok(Command::OwnerCall));
        assert_eq!(
            Command::parse("/later 2h"),
            Ok(Command::Later(Duration::hours(2)))
        );
        assert_eq!(
            Command::parse("/later 90s"),
            Ok(Command::Later(Duration::seconds(90)))
        );
        assert!(Command::parse("/later soon").is_err());
        assert!(Command::parse("/later 99999999999999h").is_err());
        assert!(Command::parse("/fly").is_err());
    }

    #[test]
    fn a_call_answer_is_what_the_caller_hears() {
        let twiml = r#"<?xml version="1.0"?><Response><Say voice="alice">It&apos;s Smith &amp; Sons.</Say><Hangup/></Response>"#;
        assert_eq!(spoken(twiml), "It's Smith & Sons.");
        assert_eq!(
            spoken("<Response><Reject/></Response>"),
            "(the call is rejected)"
        );
    }
}
