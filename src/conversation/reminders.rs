//! Reminders for owners who have gone quiet: when one is due, what it says, and when it must wait.
//!
//! Everything here is pure. The shell ([`crate::reminders`]) keeps one timer per owner, re-armed by
//! every text the owner sends; when it falls due, [`decide`] says what to do with it, given the
//! owner's conversation, the schedule for their step, the quiet hours in their time zone and the
//! time now.
//!
//! A schedule counts from the owner's last text: by default a first reminder after 2 hours and a
//! second after 24, then nothing. A conversation that stays silent for [`DEFAULT_EXPIRE_AFTER`] is
//! expired: no more reminders, and the owner's next text is welcomed back at the step they were on.

use std::collections::HashMap;

use chrono::{DateTime, Datelike, Duration, NaiveDateTime, NaiveTime, TimeZone, Utc, Weekday};
use chrono_tz::Tz;

use super::machine::{Context, Conversation, needs};
use super::state::{Gate, StateName};

/// How long a silent conversation lives before it expires, unless `EXPIRE_AFTER` says otherwise.
pub const DEFAULT_EXPIRE_AFTER: Duration = Duration::days(14);

/// When to remind, counted from the owner's last text; strictly increasing, possibly empty (`off`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Schedule(Vec<Duration>);

impl Schedule {
    /// The default: 2 hours, then 24 hours after the owner's last text.
    pub fn standard() -> Self {
        Schedule(vec![Duration::hours(2), Duration::hours(24)])
    }

    /// No reminders at all.
    pub fn off() -> Self {
        Schedule(Vec::new())
    }

    /// `2h,24h`, `90m`, `1d,3d` or `off`. Each delay must be longer than the one before.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let raw = raw.trim();
        if raw.eq_ignore_ascii_case("off") {
            return Ok(Self::off());
        }
        Self::from_spans(raw.split(','))
    }

    /// Delays written one per item, as the flows files do.
    pub fn from_spans<'a>(spans: impl IntoIterator<Item = &'a str>) -> Result<Self, String> {
        let mut delays: Vec<Duration> = Vec::new();
        for span in spans {
            let delay = parse_span(span).ok_or_else(|| {
                format!("{span:?} is not a duration like 90m, 2h or 14d (or the word off)")
            })?;
            if delays.last().is_some_and(|last| *last >= delay) {
                return Err(format!(
                    "{span:?} is not later than the reminder before it; list them in order"
                ));
            }
            delays.push(delay);
        }
        Ok(Schedule(delays))
    }

    pub fn delays(&self) -> &[Duration] {
        &self.0
    }
}

/// `90m`, `2h` or `14d`: a positive whole number of minutes, hours or days.
pub fn parse_span(raw: &str) -> Option<Duration> {
    let raw = raw.trim();
    let unit = raw.chars().last()?;
    let n: i64 = raw[..raw.len() - unit.len_utf8()].trim().parse().ok()?;
    if !(1..=10_000).contains(&n) {
        return None;
    }
    match unit {
        'm' => Some(Duration::minutes(n)),
        'h' => Some(Duration::hours(n)),
        'd' => Some(Duration::days(n)),
        _ => None,
    }
}

/// When no proactive text may reach an owner, in their own local time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuietHours {
    /// From the first time until the second, across midnight when the first is later (20:00-09:00).
    pub night: Option<(NaiveTime, NaiveTime)>,
    /// On Sundays, quiet from midnight until this time.
    pub sunday_until: Option<NaiveTime>,
}

impl Default for QuietHours {
    /// 20:00 to 09:00 every night, and Sunday until noon.
    fn default() -> Self {
        let at = |h| NaiveTime::from_hms_opt(h, 0, 0).unwrap_or_default();
        QuietHours {
            night: Some((at(20), at(9))),
            sunday_until: Some(at(12)),
        }
    }
}

impl QuietHours {
    /// `20:00-09:00` or `off` (`QUIET_HOURS`).
    pub fn parse_night(raw: &str) -> Result<Option<(NaiveTime, NaiveTime)>, String> {
        let raw = raw.trim();
        if raw.eq_ignore_ascii_case("off") {
            return Ok(None);
        }
        let bad = || format!("{raw:?} is not a span like 20:00-09:00 (or the word off)");
        let (from, until) = raw.split_once('-').ok_or_else(bad)?;
        let from = parse_clock(from).ok_or_else(bad)?;
        let until = parse_clock(until).ok_or_else(bad)?;
        if from == until {
            return Err(format!("{raw:?} starts and ends at the same time"));
        }
        Ok(Some((from, until)))
    }

    /// `12:00` or `off` (`QUIET_SUNDAY_UNTIL`).
    pub fn parse_sunday(raw: &str) -> Result<Option<NaiveTime>, String> {
        let raw = raw.trim();
        if raw.eq_ignore_ascii_case("off") {
            return Ok(None);
        }
        parse_clock(raw)
            .map(Some)
            .ok_or_else(|| format!("{raw:?} is not a time like 12:00 (or the word off)"))
    }

    /// Whether this local wall-clock time is quiet.
    pub fn is_quiet(&self, local: NaiveDateTime) -> bool {
        self.quiet_until(local).is_some()
    }

    /// The local time the quiet spell around `local` ends, if `local` is in one.
    fn quiet_until(&self, local: NaiveDateTime) -> Option<NaiveDateTime> {
        let time = local.time();
        let date = local.date();
        if let Some((from, until)) = self.night {
            let crosses_midnight = from > until;
            if crosses_midnight && time >= from {
                return Some(date.succ_opt()?.and_time(until));
            }
            // Before the end: in the spell if it began yesterday evening, or already today.
            if time < until && (crosses_midnight || from <= time) {
                return Some(date.and_time(until));
            }
        }
        if let Some(until) = self.sunday_until
            && local.weekday() == Weekday::Sun
            && time < until
        {
            return Some(date.and_time(until));
        }
        None
    }

    /// The first moment at or after `due` that is not quiet in `zone`. Never earlier than `due`.
    pub fn release(&self, due: DateTime<Utc>, zone: Tz) -> DateTime<Utc> {
        let mut at = due;
        // Each round moves past one quiet spell (Saturday night, then Sunday morning, ...);
        // a day has at most two, so a few rounds always end outside them.
        for _ in 0..8 {
            let local = at.with_timezone(&zone).naive_local();
            let Some(end) = self.quiet_until(local) else {
                return at;
            };
            at = first_instant_at_or_after(zone, end).max(at);
        }
        at
    }
}

/// `09:00` or `9:30`.
fn parse_clock(raw: &str) -> Option<NaiveTime> {
    NaiveTime::parse_from_str(raw.trim(), "%H:%M").ok()
}

/// The first instant whose local time in `zone` is `local` or, when the clocks skip it (a
/// daylight-saving gap), the first one after it.
fn first_instant_at_or_after(zone: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    let mut candidate = local;
    for _ in 0..24 * 4 {
        if let Some(at) = zone.from_local_datetime(&candidate).earliest() {
            return at.with_timezone(&Utc);
        }
        candidate += Duration::minutes(15);
    }
    // No zone skips a whole day; read the wall time as UTC rather than fail.
    local.and_utc()
}

/// The reminder timer of one owner, as the shell keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timer {
    /// The step the owner was on when it was armed.
    pub state: StateName,
    /// Reminders sent since the owner's last text.
    pub sent: u32,
    /// What the schedule counts from: the owner's last text.
    pub anchor_at: DateTime<Utc>,
}

/// What to do with a timer that has fallen due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Send reminder number `attempt` (0 is the first) now; look again at `next_due`.
    Remind {
        attempt: u32,
        next_due: DateTime<Utc>,
    },
    /// A reminder is due but it is quiet hours for the owner: look again when they end.
    Defer { until: DateTime<Utc> },
    /// Nothing yet: look again then.
    Wait { until: DateTime<Utc> },
    /// Silent for too long: no more reminders; the next text is welcomed back.
    Expire,
    /// Nothing more to do until the owner texts (opted out, or onboarding is over).
    Stop,
}

/// What the owner's step asks of them, for the schedule and the copy.
fn remindable(state: StateName, conversation: &Conversation) -> Remindable {
    match state {
        StateName::S9TestCallDetected | StateName::Complete => Remindable::Never,
        // We owe them a number: nothing to remind them of, but the step may change without a text.
        StateName::S5ConfirmLive if conversation.gate == Some(Gate::AwaitingNumber) => {
            Remindable::WaitingOnUs
        }
        _ => Remindable::Yes,
    }
}

enum Remindable {
    Yes,
    WaitingOnUs,
    Never,
}

/// Decides what a due timer does. The timer's state is the owner's step (the shell brings it up to
/// date first); `delays` is the schedule for that step; `zone` is the owner's local time zone.
pub fn decide(
    timer: &Timer,
    conversation: &Conversation,
    delays: &[Duration],
    expire_after: Duration,
    quiet: &QuietHours,
    zone: Tz,
    now: DateTime<Utc>,
) -> Action {
    if conversation.opted_out {
        return Action::Stop;
    }
    match remindable(timer.state, conversation) {
        Remindable::Never => return Action::Stop,
        // Looked at again later, when a number may have come and with it a question to remind of.
        Remindable::WaitingOnUs => {
            return Action::Wait {
                until: now + delays.first().copied().unwrap_or(Duration::hours(2)),
            };
        }
        Remindable::Yes => {}
    }
    let expire_at = timer.anchor_at + expire_after;
    if now >= expire_at {
        return Action::Expire;
    }
    let sent = timer.sent as usize;
    let Some(delay) = delays.get(sent) else {
        return Action::Wait { until: expire_at };
    };
    let due = timer.anchor_at + *delay;
    if now < due {
        return Action::Wait { until: due };
    }
    let release = quiet.release(now, zone);
    if release > now {
        return Action::Defer { until: release };
    }
    let next_due = match delays.get(sent + 1) {
        // A reminder held back by quiet hours does not pull the next one closer than the schedule's gap.
        Some(next) => (timer.anchor_at + *next).max(now + (*next - *delay)),
        None => expire_at,
    };
    Action::Remind {
        attempt: timer.sent,
        next_due: next_due.min(expire_at),
    }
}

/// The words of a reminder: the flows' `intro`, then what the step needs from the owner (the
/// question again; at the payment gate, the payment link; at S7 the codes with "reply DONE"; at S8
/// the test-call tips with "reply CALL ME"). `None` when the step has nothing to ask.
pub fn reminder_text(
    state: StateName,
    conversation: &Conversation,
    ctx: &Context<'_>,
) -> Option<String> {
    let body = needs(state, conversation, ctx)?;
    Some(format!("{}\n{body}", ctx.catalog.reminders().intro))
}

/// A locale's `[reminders]` section of `flows/<locale>.toml`, checked when loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReminderFlows {
    /// For every step without its own schedule.
    pub schedule: Schedule,
    /// Steps with a schedule of their own (`[reminders.schedules]`, keyed by state name).
    pub by_state: HashMap<StateName, Schedule>,
    /// Said before the step's question in every reminder.
    pub intro: String,
    /// Said first when an expired conversation resumes.
    pub welcome_back: String,
}

impl ReminderFlows {
    /// The schedule of a step.
    pub fn schedule_for(&self, state: StateName) -> &Schedule {
        self.by_state.get(&state).unwrap_or(&self.schedule)
    }

    /// Reads and checks the `[reminders]` table; the error names the offending key.
    pub fn from_table(mut table: toml::Table) -> Result<Self, String> {
        let spans = |key: &str, value: toml::Value| -> Result<Schedule, String> {
            let toml::Value::Array(items) = value else {
                return Err(format!("`{key}` must be a list like [\"2h\", \"24h\"]"));
            };
            let items: Vec<String> = items
                .into_iter()
                .map(|v| match v {
                    toml::Value::String(s) => Ok(s),
                    _ => Err(format!("`{key}` must list durations as strings")),
                })
                .collect::<Result<_, _>>()?;
            Schedule::from_spans(items.iter().map(String::as_str))
                .map_err(|problem| format!("`{key}`: {problem}"))
        };
        let text = |table: &mut toml::Table, key: &str| -> Result<String, String> {
            match table.remove(key) {
                Some(toml::Value::String(s)) if !s.trim().is_empty() => {
                    match crate::sms::first_non_gsm7(&s) {
                        Some(ch) => Err(format!("`{key}` contains {ch:?}, which is not GSM-7")),
                        None => Ok(s),
                    }
                }
                _ => Err(format!("`{key}` must be a non-empty string")),
            }
        };
        let schedule = match table.remove("schedule") {
            Some(value) => spans("schedule", value)?,
            None => return Err("`schedule` is missing".into()),
        };
        let intro = text(&mut table, "intro")?;
        let welcome_back = text(&mut table, "welcome_back")?;
        let mut by_state = HashMap::new();
        if let Some(value) = table.remove("schedules") {
            let toml::Value::Table(states) = value else {
                return Err("`schedules` must be a table of state names".into());
            };
            for (name, value) in states {
                let state = StateName::parse(&name)
                    .ok_or_else(|| format!("`schedules.{name}` is not a state name"))?;
                by_state.insert(state, spans(&format!("schedules.{name}"), value)?);
            }
        }
        if let Some(key) = table.keys().next() {
            return Err(format!("unknown key `{key}` (a typo?)"));
        }
        Ok(ReminderFlows {
            schedule,
            by_state,
            intro,
            welcome_back,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono_tz::{America, Europe, Pacific};
    use proptest::prelude::*;

    fn at(rfc3339: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(rfc3339).unwrap().to_utc()
    }

    fn timer(state: StateName, sent: u32, anchor: &str) -> Timer {
        Timer {
            state,
            sent,
            anchor_at: at(anchor),
        }
    }

    fn decide_at(t: &Timer, c: &Conversation, now: &str) -> Action {
        decide(
            t,
            c,
            Schedule::standard().delays(),
            DEFAULT_EXPIRE_AFTER,
            &QuietHours::default(),
            Europe::London,
            at(now),
        )
    }

    // Monday 5 January 2026: London is on UTC.
    const MONDAY_9: &str = "2026-01-05T09:00:00Z";

    #[test]
    fn schedules_parse_in_order_or_off() {
        assert_eq!(Schedule::parse("2h,24h").unwrap(), Schedule::standard());
        assert_eq!(Schedule::parse(" off ").unwrap(), Schedule::off());
        assert_eq!(
            Schedule::parse("90m").unwrap().delays(),
            &[Duration::minutes(90)]
        );
        assert!(Schedule::parse("24h,2h").is_err());
        assert!(Schedule::parse("2h,2h").is_err());
        assert!(Schedule::parse("2x").is_err());
        assert!(Schedule::parse("").is_err());
        assert!(Schedule::parse("-2h").is_err());
    }

    #[test]
    fn spans_are_minutes_hours_or_days() {
        assert_eq!(parse_span("14d"), Some(Duration::days(14)));
        assert_eq!(parse_span("2h"), Some(Duration::hours(2)));
        assert_eq!(parse_span("45m"), Some(Duration::minutes(45)));
        assert_eq!(parse_span("0h"), None);
        assert_eq!(parse_span("h"), None);
        assert_eq!(parse_span("é"), None);
    }

    #[test]
    fn quiet_hours_parse_or_are_off() {
        let t = |h, m| NaiveTime::from_hms_opt(h, m, 0).unwrap();
        assert_eq!(
            QuietHours::parse_night("21:30-08:00").unwrap(),
            Some((t(21, 30), t(8, 0)))
        );
        assert_eq!(QuietHours::parse_night("off").unwrap(), None);
        assert!(QuietHours::parse_night("09:00-09:00").is_err());
        assert!(QuietHours::parse_night("20:00").is_err());
        assert_eq!(QuietHours::parse_sunday("11:00").unwrap(), Some(t(11, 0)));
        assert_eq!(QuietHours::parse_sunday("OFF").unwrap(), None);
        assert!(QuietHours::parse_sunday("25:00").is_err());
    }

    #[test]
    fn nothing_before_the_first_delay() {
        let t = timer(StateName::S3OwnerName, 0, MONDAY_9);
        let c = Conversation::default();
        assert_eq!(
            decide_at(&t, &c, "2026-01-05T10:59:00Z"),
            Action::Wait {
                until: at("2026-01-05T11:00:00Z")
            }
        );
    }

    #[test]
    fn the_first_reminder_at_two_hours_then_the_second_at_twenty_four() {
        let c = Conversation::default();
        let first = decide_at(
            &timer(StateName::S3OwnerName, 0, MONDAY_9),
            &c,
            "2026-01-05T11:00:00Z",
        );
        assert_eq!(
            first,
            Action::Remind {
                attempt: 0,
                next_due: at("2026-01-06T09:00:00Z")
            }
        );
        let second = decide_at(
            &timer(StateName::S3OwnerName, 1, MONDAY_9),
            &c,
            "2026-01-06T09:00:00Z",
        );
        assert_eq!(
            second,
            Action::Remind {
                attempt: 1,
                next_due: at("2026-01-19T09:00:00Z")
            }
        );
    }

    #[test]
    fn after_the_last_reminder_only_expiry_is_left() {
        let t = timer(StateName::S3OwnerName, 2, MONDAY_9);
        let c = Conversation::default();
        assert_eq!(
            decide_at(&t, &c, "2026-01-08T09:00:00Z"),
            Action::Wait {
                until: at("2026-01-19T09:00:00Z")
            }
        );
        assert_eq!(decide_at(&t, &c, "2026-01-19T09:00:00Z"), Action::Expire);
    }

    #[test]
    fn a_reminder_due_at_night_waits_for_morning() {
        let t = timer(StateName::S2BusinessName, 0, "2026-01-05T21:00:00Z");
        let c = Conversation::default();
        assert_eq!(
            decide_at(&t, &c, "2026-01-05T23:00:00Z"),
            Action::Defer {
                until: at("2026-01-06T09:00:00Z")
            }
        );
    }

    #[test]
    fn opted_out_and_finished_owners_are_never_reminded() {
        let t = timer(StateName::S3OwnerName, 0, MONDAY_9);
        let c = Conversation {
            opted_out: true,
            ..Conversation::default()
        };
        assert_eq!(decide_at(&t, &c, "2026-01-05T11:00:00Z"), Action::Stop);
        for state in [StateName::Complete, StateName::S9TestCallDetected] {
            assert_eq!(
                decide_at(
                    &timer(state, 0, MONDAY_9),
                    &Conversation::default(),
                    "2026-01-05T11:00:00Z"
                ),
                Action::Stop
            );
        }
    }

    #[test]
    fn an_owner_waiting_for_a_number_is_looked_at_again_but_not_reminded() {
        let t = timer(StateName::S5ConfirmLive, 0, MONDAY_9);
        let c = Conversation {
            gate: Some(Gate::AwaitingNumber),
            paid: true,
            ..Conversation::default()
        };
        assert!(matches!(
            decide_at(&t, &c, "2026-01-05T11:00:00Z"),
            Action::Wait { .. }
        ));
    }

    #[test]
    fn every_step_before_the_test_call_is_reminded_and_expires() {
        for state in StateName::ALL {
            let t = timer(state, 0, MONDAY_9);
            let c = Conversation::default();
            let expected = !matches!(state, StateName::S9TestCallDetected | StateName::Complete);
            let due = decide_at(&t, &c, "2026-01-05T11:00:00Z");
            assert_eq!(matches!(due, Action::Remind { .. }), expected, "{state}");
            let late = decide_at(&t, &c, "2026-01-19T09:00:00Z");
            assert_eq!(late == Action::Expire, expected, "{state}");
        }
    }

    #[test]
    fn an_empty_schedule_sends_nothing_but_still_expires() {
        let t = timer(StateName::S3OwnerName, 0, MONDAY_9);
        let c = Conversation::default();
        let quiet = QuietHours::default();
        let now = at("2026-01-05T11:00:00Z");
        assert_eq!(
            decide(
                &t,
                &c,
                &[],
                DEFAULT_EXPIRE_AFTER,
                &quiet,
                Europe::London,
                now
            ),
            Action::Wait {
                until: at("2026-01-19T09:00:00Z")
            }
        );
    }

    #[test]
    fn local_morning_in_new_york_and_honolulu() {
        let quiet = QuietHours::default();
        // 11:00 UTC is 06:00 in New York and 01:00 in Honolulu.
        let due = at("2026-01-05T11:00:00Z");
        assert_eq!(
            quiet.release(due, America::New_York),
            at("2026-01-05T14:00:00Z")
        );
        assert_eq!(
            quiet.release(due, Pacific::Honolulu),
            at("2026-01-05T19:00:00Z")
        );
    }

    #[test]
    fn sunday_morning_waits_until_noon_and_saturday_night_runs_into_it() {
        let quiet = QuietHours::default();
        assert_eq!(
            quiet.release(at("2026-01-11T10:00:00Z"), Europe::London),
            at("2026-01-11T12:00:00Z")
        );
        assert_eq!(
            quiet.release(at("2026-01-10T22:00:00Z"), Europe::London),
            at("2026-01-11T12:00:00Z")
        );
        let no_sunday = QuietHours {
            sunday_until: None,
            ..quiet
        };
        assert_eq!(
            no_sunday.release(at("2026-01-10T22:00:00Z"), Europe::London),
            at("2026-01-11T09:00:00Z")
        );
    }

    #[test]
    fn a_quiet_spell_that_ends_in_a_skipped_hour_ends_just_after_it() {
        // London skips 01:00 to 02:00 on 29 March 2026.
        let quiet = QuietHours {
            night: Some((
                NaiveTime::from_hms_opt(0, 0, 0).unwrap(),
                NaiveTime::from_hms_opt(1, 30, 0).unwrap(),
            )),
            sunday_until: None,
        };
        assert_eq!(
            quiet.release(at("2026-03-29T00:30:00Z"), Europe::London),
            at("2026-03-29T01:00:00Z")
        );
    }

    #[test]
    fn quiet_hours_off_release_at_once() {
        let off = QuietHours {
            night: None,
            sunday_until: None,
        };
        let due = at("2026-01-11T03:00:00Z");
        assert_eq!(off.release(due, Europe::London), due);
    }

    fn flows_table(text: &str) -> Result<ReminderFlows, String> {
        ReminderFlows::from_table(toml::from_str(text).unwrap())
    }

    const GOOD: &str = "schedule = [\"2h\", \"24h\"]\nintro = \"Hi\"\nwelcome_back = \"Back\"\n";

    #[test]
    fn the_flows_section_is_checked_when_loaded() {
        let flows =
            flows_table(&format!("{GOOD}[schedules]\nS8_FWD_CONFIRMED = [\"1h\"]\n")).unwrap();
        assert_eq!(
            flows.schedule_for(StateName::S3OwnerName),
            &Schedule::standard()
        );
        assert_eq!(
            flows.schedule_for(StateName::S8FwdConfirmed).delays(),
            &[Duration::hours(1)]
        );
        let empty = flows_table(&GOOD.replace("[\"2h\", \"24h\"]", "[]")).unwrap();
        assert_eq!(empty.schedule, Schedule::off());

        let problem = |text: &str| flows_table(text).unwrap_err();
        assert!(problem(&GOOD.replace("\"2h\", \"24h\"", "\"24h\", \"2h\"")).contains("schedule"));
        assert!(problem(&GOOD.replace("intro = \"Hi\"", "intro = \"\"")).contains("intro"));
        assert!(problem(&GOOD.replace("Back", "Back \u{2014}")).contains("welcome_back"));
        assert!(problem(&format!("{GOOD}intr = \"x\"\n")).contains("intr"));
        assert!(problem(&format!("{GOOD}[schedules]\nS10 = [\"1h\"]\n")).contains("S10"));
        assert!(problem("intro = \"Hi\"\nwelcome_back = \"Back\"\n").contains("schedule"));
    }

    #[test]
    fn every_locale_ships_the_default_schedule() {
        let flows = crate::flows::Flows::embedded().unwrap();
        for locale in [crate::domain::Locale::EnGb, crate::domain::Locale::EnUs] {
            let reminders = flows.catalog(locale).reminders();
            for state in StateName::ALL {
                assert_eq!(reminders.schedule_for(state), &Schedule::standard());
            }
        }
    }

    #[test]
    fn reminder_copy_fits_the_step() {
        let flows = crate::flows::Flows::embedded().unwrap();
        let ctx = Context {
            catalog: flows.catalog(crate::domain::Locale::EnGb),
            payment_link: "https://pay.example/link",
        };
        let c = Conversation {
            business_name: Some("Smith Plumbing".into()),
            ..Conversation::default()
        };
        let text = reminder_text(StateName::S3OwnerName, &c, &ctx).unwrap();
        assert!(text.starts_with(&ctx.catalog.reminders().intro), "{text}");
        assert!(
            text.ends_with("Smith Plumbing it is. And what's your name?"),
            "{text}"
        );

        let gate = Conversation {
            gate: Some(Gate::PaymentRequired),
            ..Conversation::default()
        };
        assert!(
            reminder_text(StateName::S5ConfirmLive, &gate, &ctx)
                .unwrap()
                .contains("https://pay.example/link")
        );

        let s7 = Conversation {
            number: Some("+447700900980".parse().unwrap()),
            phone_type: Some(crate::domain::PhoneType::Android),
            ..Conversation::default()
        };
        let text = reminder_text(StateName::S7FwdSent, &s7, &ctx).unwrap();
        assert!(
            text.contains("**004*+447700900980#") && text.contains("Reply DONE"),
            "{text}"
        );

        let text =
            reminder_text(StateName::S8FwdConfirmed, &Conversation::default(), &ctx).unwrap();
        assert!(text.contains("Reply CALL ME"), "{text}");

        assert_eq!(
            reminder_text(
                StateName::S9TestCallDetected,
                &Conversation::default(),
                &ctx
            ),
            None
        );
    }

    fn zones() -> impl Strategy<Value = Tz> {
        prop::sample::select(vec![
            Europe::London,
            America::New_York,
            America::Chicago,
            America::Denver,
            America::Phoenix,
            America::Los_Angeles,
            America::Anchorage,
            America::St_Johns,
            Pacific::Honolulu,
        ])
    }

    fn quiet_hours() -> impl Strategy<Value = QuietHours> {
        let time = (0u32..24, prop::sample::select(vec![0u32, 15, 30, 45]))
            .prop_map(|(h, m)| NaiveTime::from_hms_opt(h, m, 0).unwrap());
        (
            prop::option::of((time.clone(), time.clone()).prop_filter("a span", |(a, b)| a != b)),
            prop::option::of(time),
        )
            .prop_map(|(night, sunday_until)| QuietHours {
                night,
                sunday_until,
            })
    }

    proptest! {
        #[test]
        fn release_is_never_quiet_and_never_early(
            secs in 1_700_000_000i64..1_900_000_000,
            zone in zones(),
            quiet in quiet_hours(),
        ) {
            let due = DateTime::from_timestamp(secs, 0).unwrap();
            let sent = quiet.release(due, zone);
            prop_assert!(sent >= due);
            prop_assert!(!quiet.is_quiet(sent.with_timezone(&zone).naive_local()), "{sent} in {zone}");
        }

        #[test]
        fn a_remind_is_never_sent_in_quiet_hours(
            hours in 0i64..400,
            sent in 0u32..3,
            zone in zones(),
        ) {
            let quiet = QuietHours::default();
            let t = timer(StateName::S3OwnerName, sent, MONDAY_9);
            let now = at(MONDAY_9) + Duration::hours(hours);
            let action = decide(&t, &Conversation::default(), Schedule::standard().delays(),
                DEFAULT_EXPIRE_AFTER, &quiet, zone, now);
            match action {
                Action::Remind { next_due, .. } => {
                    prop_assert!(!quiet.is_quiet(now.with_timezone(&zone).naive_local()));
                    prop_assert!(next_due > now);
                }
                Action::Defer { until } | Action::Wait { until } => prop_assert!(until > now),
                Action::Expire => prop_assert!(now >= t.anchor_at + DEFAULT_EXPIRE_AFTER),
                Action::Stop => prop_assert!(false, "S3 is always remindable"),
            }
        }
    }
}
