//! After COMPLETE: the rules of an owner's number at work, pure like the rest of the core.
//!
//! What a text to a business number means (the owner's commands, a customer's text to pass on,
//! STOP and START), when plan usage is worth a text, whether a caller gets a text-back, and which
//! billing month a call falls in. The engine reads what these need, asks here, and writes what
//! they decide; the words are in `flows/*.toml`.

use chrono::{DateTime, Months, Utc};

use super::parse::{Keyword, keyword};
use crate::domain::PhoneNumber;

/// What a text to an owner's business number asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineText {
    /// The owner: no missed-call alerts until RESUME.
    Pause,
    Resume,
    /// The owner: calls this month and the plan.
    Status,
    /// The owner: HELP, or anything else (the owner texting their own number wants the commands).
    Help,
    /// The owner's STOP or START: the same as anywhere, through the onboarding conversation.
    OwnerKeyword,
    /// A customer's STOP: no more texts to them from this number.
    CustomerOptOut,
    /// A customer's START: texts from this number again.
    CustomerOptIn,
    /// Anything else a customer sends: passed on to the owner, never answered by the bot.
    Relay,
}

/// Reads a text to a business number. Commands are whole messages, as keywords are everywhere
/// ("pause please" from the owner gets the help, never a silent change).
pub fn line_text(from_owner: bool, body: &str) -> LineText {
    let word = body
        .trim()
        .trim_end_matches(['.', '!'])
        .trim()
        .to_uppercase();
    match (from_owner, keyword(body, false)) {
        (true, Some(Keyword::OptOut | Keyword::OptIn)) => LineText::OwnerKeyword,
        (false, Some(Keyword::OptOut)) => LineText::CustomerOptOut,
        (false, Some(Keyword::OptIn)) => LineText::CustomerOptIn,
        (false, _) => LineText::Relay,
        (true, _) => match word.as_str() {
            "PAUSE" => LineText::Pause,
            "RESUME" => LineText::Resume,
            "STATUS" => LineText::Status,
            _ => LineText::Help,
        },
    }
}

/// Usage thresholds, in percent of the calls included, each texted once per billing month.
pub const USAGE_LEVELS: [i32; 2] = [80, 100];

/// The usage levels `calls` has reached this month (each is texted once: the database keeps
/// which were). Asking on every call rather than only on the crossing one means a level missed
/// by a failed event is still sent by the next call.
pub fn usage_levels_reached(calls: i64, included: i64) -> Vec<i32> {
    if included <= 0 {
        return Vec::new();
    }
    USAGE_LEVELS
        .into_iter()
        .filter(|percent| calls * 100 >= included * i64::from(*percent))
        .collect()
}

/// The start of the billing month `now` falls in: months count from the owner's payment, so an
/// owner who paid on 31 January starts months on 28 (or 29) February, 31 March, 30 April...
pub fn billing_period_start(paid_at: DateTime<Utc>, now: DateTime<Utc>) -> DateTime<Utc> {
    if now <= paid_at {
        return paid_at;
    }
    // Months are added to the payment date each time (not to the previous start), so a short
    // month does not pull every later start back to the 28th.
    let mut months = 0u32;
    loop {
        let next = paid_at.checked_add_months(Months::new(months + 1));
        match next {
            Some(next) if next <= now => months += 1,
            _ => break,
        }
    }
    paid_at
        .checked_add_months(Months::new(months))
        .unwrap_or(paid_at)
}

/// What the caller text-back decision reads.
#[derive(Debug, Clone, Copy)]
pub struct TextBackFacts<'a> {
    /// `CALLER_TEXT_BACK=1`.
    pub enabled: bool,
    /// The caller, when their caller id is a number we can text.
    pub caller: Option<&'a PhoneNumber>,
    /// The owner's own phone: the owner calling their own number is not a customer.
    pub owner_phone: &'a PhoneNumber,
    /// The caller texted STOP to this business number.
    pub caller_opted_out: bool,
    /// A spending budget is used up: a text-back is spend we choose to make, and waits.
    pub budget_exceeded: bool,
}

/// Whether a caller the owner missed is texted "sorry we missed you": the one place this is
/// decided. The database then allows one per caller per owner per day. While a budget is used up
/// there is none (not held for later: "sorry we missed you" the next day would be odd).
pub fn caller_text_back(facts: &TextBackFacts<'_>) -> bool {
    facts.enabled
        && super::budget::allowed(super::budget::Spend::CallerTextBack, facts.budget_exceeded)
        && !facts.caller_opted_out
        && facts
            .caller
            .is_some_and(|caller| caller != facts.owner_phone)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn the_owner_s_commands_are_whole_messages() {
        assert_eq!(line_text(true, "PAUSE"), LineText::Pause);
        assert_eq!(line_text(true, " pause. "), LineText::Pause);
        assert_eq!(line_text(true, "Resume"), LineText::Resume);
        assert_eq!(line_text(true, "status"), LineText::Status);
        assert_eq!(line_text(true, "HELP"), LineText::Help);
        assert_eq!(line_text(true, "pause please"), LineText::Help);
        assert_eq!(line_text(true, "STOP"), LineText::OwnerKeyword);
        assert_eq!(line_text(true, "START"), LineText::OwnerKeyword);
    }

    #[test]
    fn a_customer_s_text_is_relayed_whatever_it_says_but_stop_and_start() {
        assert_eq!(line_text(false, "PAUSE"), LineText::Relay);
        assert_eq!(line_text(false, "HELP"), LineText::Relay);
        assert_eq!(line_text(false, "Can you come Tuesday?"), LineText::Relay);
        assert_eq!(line_text(false, "STOP"), LineText::CustomerOptOut);
        assert_eq!(line_text(false, "unsubscribe"), LineText::CustomerOptOut);
        assert_eq!(line_text(false, "START"), LineText::CustomerOptIn);
        assert_eq!(line_text(false, "yes"), LineText::Relay);
    }

    #[test]
    fn usage_levels_at_eighty_and_a_hundred_percent() {
        assert!(usage_levels_reached(79, 100).is_empty());
        assert_eq!(usage_levels_reached(80, 100), vec![80]);
        assert_eq!(usage_levels_reached(99, 100), vec![80]);
        assert_eq!(usage_levels_reached(100, 100), vec![80, 100]);
        assert_eq!(usage_levels_reached(250, 100), vec![80, 100]);
        // 80% of 5 is 4 calls.
        assert!(usage_levels_reached(3, 5).is_empty());
        assert_eq!(usage_levels_reached(4, 5), vec![80]);
        assert!(usage_levels_reached(10, 0).is_empty());
    }

    #[test]
    fn billing_months_count_from_the_payment_date() {
        let paid = at("2026-01-31T10:00:00Z");
        assert_eq!(billing_period_start(paid, at("2026-02-15T00:00:00Z")), paid);
        assert_eq!(
            billing_period_start(paid, at("2026-03-01T00:00:00Z")),
            at("2026-02-28T10:00:00Z")
        );
        assert_eq!(
            billing_period_start(paid, at("2026-04-01T00:00:00Z")),
            at("2026-03-31T10:00:00Z")
        );
        assert_eq!(billing_period_start(paid, at("2025-12-01T00:00:00Z")), paid);
    }

    #[test]
    fn a_text_back_only_when_enabled_to_a_textable_caller_who_did_not_stop() {
        let owner: PhoneNumber = "+447700900123".parse().unwrap();
        let caller: PhoneNumber = "+447700900555".parse().unwrap();
        let facts = TextBackFacts {
            enabled: true,
            caller: Some(&caller),
            owner_phone: &owner,
            caller_opted_out: false,
            budget_exceeded: false,
        };
        assert!(caller_text_back(&facts));
        assert!(!caller_text_back(&TextBackFacts {
            budget_exceeded: true,
            ..facts
        }));
        assert!(!caller_text_back(&TextBackFacts {
            enabled: false,
            ..facts
        }));
        assert!(!caller_text_back(&TextBackFacts {
            caller_opted_out: true,
            ..facts
        }));
        assert!(!caller_text_back(&TextBackFacts {
            caller: None,
            ..facts
        }));
        assert!(!caller_text_back(&TextBackFacts {
            caller: Some(&owner),
            ..facts
        }));
    }
}
