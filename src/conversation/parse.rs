//! Reading owners' answers: forgiving about form, strict about meaning.

use crate::domain::{Notify, PhoneType};

/// A whole-message keyword that works in every state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keyword {
    /// STOP and the other opt-out words: nothing more is sent.
    OptOut,
    /// START or UNSTOP (and YES, for an owner who opted out).
    OptIn,
    Help,
    Restart,
}

/// Opt-out words (whole message, case-insensitive, trimmed). "STOP PLEASE" is not one.
const OPT_OUT: &[&str] = &[
    "STOP",
    "STOPALL",
    "UNSUBSCRIBE",
    "CANCEL",
    "END",
    "QUIT",
    "REVOKE",
    "OPTOUT",
];
const OPT_IN: &[&str] = &["START", "UNSTOP"];
const HELP: &[&str] = &["HELP", "INFO"];

/// Classifies a message as a keyword. YES is an opt-in word only for someone who opted out;
/// otherwise it is an ordinary answer.
pub fn keyword(text: &str, opted_out: bool) -> Option<Keyword> {
    // "Stop." and "STOP!" are still a STOP: when in doubt, honour the opt-out.
    let word = text
        .trim()
        .trim_end_matches(['.', '!'])
        .trim()
        .to_uppercase();
    if OPT_OUT.contains(&word.as_str()) {
        Some(Keyword::OptOut)
    } else if OPT_IN.contains(&word.as_str()) || (opted_out && word == "YES") {
        Some(Keyword::OptIn)
    } else if HELP.contains(&word.as_str()) {
        Some(Keyword::Help)
    } else if word == "RESTART" {
        Some(Keyword::Restart)
    } else {
        None
    }
}

/// Lower-cases and strips the punctuation people wrap short answers in ("Yes!", "ok.", "'done'").
fn normalise(text: &str) -> String {
    text.replace(['\u{2019}', '\u{2018}'], "'")
        .trim()
        .trim_matches(|c: char| c.is_ascii_punctuation() || c.is_whitespace())
        .to_lowercase()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

const NEGATIVE_WORDS: &[&str] = &[
    "no", "nope", "nah", "not", "don't", "dont", "never", "wait", "stop", "cancel", "n",
];

/// "no", "not yet", "nope", "yes but not now": anything with a negative word is never a yes.
pub fn is_negative(text: &str) -> bool {
    normalise(text)
        .split(|c: char| c.is_whitespace() || c == ',' || c == '.' || c == '!')
        .any(|word| NEGATIVE_WORDS.contains(&word))
}

const YES: &[&str] = &[
    "yes",
    "y",
    "yep",
    "yeah",
    "yea",
    "yup",
    "ya",
    "ok",
    "okay",
    "k",
    "sure",
    "go",
    "go live",
    "yes please",
    "yes go live",
    "lets go",
    "let's go",
    "confirm",
    "confirmed",
    "correct",
    "all good",
    "sounds good",
    "\u{1f44d}",
    "\u{2705}",
    "\u{1f44c}",
];

/// A yes to going live. Skin-tone variants of the thumbs-up count too.
pub fn is_yes(text: &str) -> bool {
    if is_negative(text) {
        return false;
    }
    let answer = normalise(text);
    let without_modifiers: String = answer
        .chars()
        .filter(|c| !('\u{1f3fb}'..='\u{1f3ff}').contains(c) && *c != '\u{fe0f}')
        .collect();
    YES.contains(&without_modifiers.trim())
}

/// EDIT or "change" at the summary.
pub fn is_edit(text: &str) -> bool {
    matches!(
        normalise(text).as_str(),
        "edit" | "change" | "change it" | "edit it" | "make a change" | "amend" | "fix"
    )
}

const DONE: &[&str] = &[
    "done",
    "done it",
    "i've done it",
    "ive done it",
    "all done",
    "finished",
    "set",
    "all set",
    "it's set",
    "its set",
    "set up",
    "ok done",
    "okay done",
    "yes done",
    "complete",
    "completed",
    "ready",
];

/// The owner says forwarding is set up.
pub fn is_done(text: &str) -> bool {
    !is_negative(text) && DONE.contains(&normalise(text).as_str())
}

/// CALL ME (or TEST): another verification call, please.
pub fn is_call_me(text: &str) -> bool {
    matches!(
        normalise(text).as_str(),
        "call me" | "call" | "test" | "call me again" | "test again" | "try again" | "retry"
    )
}

/// The owner's trade and place, as far as one message gives them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BusinessAnswer {
    TradeAndPlace {
        trade: String,
        place: String,
    },
    /// Only one thing was said; whether it is the trade or the place depends on what we already have.
    One(String),
    Unreadable,
}

const MAX_TRADE: usize = 60;
const MAX_PLACE: usize = 60;

/// Reads "Plumber in Leeds", "plumber, leeds", "Electrician - Manchester", "I'm a roofer based in Bristol".
pub fn business(text: &str) -> BusinessAnswer {
    // Phones turn ' into a curly apostrophe as people type.
    let text = text.replace(['\u{2019}', '\u{2018}'], "'");
    let mut rest = text.trim().trim_end_matches(['.', '!']).trim().to_owned();
    // ASCII lowercasing keeps every byte offset of `rest`, so the offsets found in `lower` can
    // slice `rest`. Full Unicode lowercasing can change lengths (the Kelvin sign becomes a
    // one-byte `k`) and slicing by its offsets would panic.
    let lower = rest.to_ascii_lowercase();
    for prefix in [
        "i'm a ",
        "i'm an ",
        "im a ",
        "im an ",
        "i am a ",
        "i am an ",
        "we're a ",
        "we are a ",
        "i'm ",
        "i am ",
        "a ",
        "an ",
    ] {
        if lower.starts_with(prefix) {
            rest = rest[prefix.len()..].trim().to_owned();
            break;
        }
    }
    let lower = rest.to_ascii_lowercase();
    // The earliest separator wins, so "Plumber in Newcastle upon Tyne" keeps its place whole.
    let separators = [
        " based in ",
        " based near ",
        " based at ",
        " working in ",
        " covering ",
        " in ",
        " from ",
        " near ",
        " around ",
        " at ",
        ",",
        " - ",
        " / ",
        ";",
        ":",
        "\u{2013}",
        "\u{2014}",
    ];
    let split = separators
        .iter()
        .filter_map(|sep| lower.find(sep).map(|at| (at, sep.len())))
        .min_by_key(|(at, len)| (*at, std::cmp::Reverse(*len)));
    let clean = |s: &str| {
        s.trim()
            .trim_matches(|c: char| c.is_ascii_punctuation() || c.is_whitespace())
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    let readable = |s: &str, max: usize| {
        !s.is_empty() && s.chars().count() <= max && s.chars().any(char::is_alphabetic)
    };
    match split {
        Some((at, len)) => {
            let trade = clean(&rest[..at]);
            let place = clean(&rest[at + len..]);
            let place = place
                .strip_prefix("based in ")
                .map(str::to_owned)
                .unwrap_or(place);
            match (readable(&trade, MAX_TRADE), readable(&place, MAX_PLACE)) {
                (true, true) => BusinessAnswer::TradeAndPlace {
                    trade: capitalise_first(&trade),
                    place: title_case(&place),
                },
                (true, false) if place.is_empty() => BusinessAnswer::One(capitalise_first(&trade)),
                _ => BusinessAnswer::Unreadable,
            }
        }
        None => {
            let one = clean(&rest);
            if readable(&one, MAX_TRADE.max(MAX_PLACE)) {
                BusinessAnswer::One(one)
            } else {
                BusinessAnswer::Unreadable
            }
        }
    }
}

pub fn capitalise_first(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// "newcastle upon tyne" to "Newcastle Upon Tyne"; words already capitalised are left alone.
pub fn title_case(s: &str) -> String {
    s.split(' ')
        .map(capitalise_first)
        .collect::<Vec<_>>()
        .join(" ")
}

/// A free-text answer of 1 to `max` characters, whitespace folded.
pub fn bounded_text(text: &str, max: usize) -> Option<String> {
    let folded = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let len = folded.chars().count();
    (1..=max).contains(&len).then_some(folded)
}

/// SMS, or an email address anywhere in the message ("email me at jo@example.com").
pub fn notify(text: &str) -> Option<Notify> {
    let answer = normalise(text);
    if matches!(
        answer.as_str(),
        "sms"
            | "text"
            | "txt"
            | "text me"
            | "sms please"
            | "text please"
            | "texts"
            | "by text"
            | "text message"
            | "sms me"
    ) {
        return Some(Notify::Sms);
    }
    text.split_whitespace()
        .map(|word| word.trim_matches(|c: char| "<>()[],;:'\"".contains(c)))
        .map(|word| word.trim_end_matches('.'))
        .find(|word| is_email(word))
        .map(|email| Notify::Email(email.to_owned()))
}

fn is_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    let labels: Vec<&str> = domain.split('.').collect();
    s.len() <= 254
        && !local.is_empty()
        && !domain.contains('@')
        && labels.len() >= 2
        && labels.iter().all(|label| {
            !label.is_empty() && label.chars().all(|c| c.is_alphanumeric() || c == '-')
        })
        && local
            .chars()
            .all(|c| c.is_alphanumeric() || "!#$%&'*+/=?^_`{|}~.-".contains(c))
}

/// 1 iPhone, 2 Android, 3 Landline: the digit or the word.
pub fn phone_type(text: &str) -> Option<PhoneType> {
    match normalise(text).as_str() {
        "1" | "iphone" | "i phone" | "apple" | "an iphone" | "ios" => Some(PhoneType::Iphone),
        "2" | "android" | "an android" | "samsung" | "pixel" | "google" => Some(PhoneType::Android),
        "3" | "landline" | "land line" | "a landline" | "home phone" | "office phone" | "bt"
        | "desk phone" => Some(PhoneType::Landline),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn both(trade: &str, place: &str) -> BusinessAnswer {
        BusinessAnswer::TradeAndPlace {
            trade: trade.into(),
            place: place.into(),
        }
    }

    #[test]
    fn reads_trade_and_place_in_the_ways_owners_write_them() {
        assert_eq!(business("Plumber in Leeds"), both("Plumber", "Leeds"));
        assert_eq!(business("plumber, leeds"), both("Plumber", "Leeds"));
        assert_eq!(
            business("Electrician - Manchester"),
            both("Electrician", "Manchester")
        );
        assert_eq!(
            business("I'm a roofer based in Bristol"),
            both("Roofer", "Bristol")
        );
        assert_eq!(
            business("gas engineer in newcastle upon tyne"),
            both("Gas engineer", "Newcastle Upon Tyne")
        );
        assert_eq!(
            business("Plumber in Austin, TX"),
            both("Plumber", "Austin, TX")
        );
        assert_eq!(business("Plumber"), BusinessAnswer::One("Plumber".into()));
        assert_eq!(business("plumber,"), BusinessAnswer::One("Plumber".into()));
        assert_eq!(business("???"), BusinessAnswer::Unreadable);
        assert_eq!(business("   "), BusinessAnswer::Unreadable);
        assert_eq!(business("in Leeds"), BusinessAnswer::One("in Leeds".into()));
    }

    #[test]
    fn negatives_are_never_yes() {
        for yes in [
            "yes",
            "Yes!",
            "y",
            "YEP",
            "ok",
            "\u{1f44d}",
            "\u{1f44d}\u{1f3fd}",
            "yes please",
        ] {
            assert!(is_yes(yes), "{yes:?} should be a yes");
        }
        for no in [
            "no",
            "not yet",
            "nope",
            "yes but not now",
            "no thanks",
            "n",
            "maybe",
            "what?",
        ] {
            assert!(!is_yes(no), "{no:?} should not be a yes");
        }
    }

    #[test]
    fn keywords_are_whole_messages() {
        assert_eq!(keyword(" stop ", false), Some(Keyword::OptOut));
        assert_eq!(keyword("Unsubscribe", false), Some(Keyword::OptOut));
        assert_eq!(keyword("STOP PLEASE", false), None);
        assert_eq!(keyword("Stop.", false), Some(Keyword::OptOut));
        assert_eq!(keyword("yes", false), None);
        assert_eq!(keyword("yes", true), Some(Keyword::OptIn));
        assert_eq!(keyword("info", false), Some(Keyword::Help));
        assert_eq!(keyword("Restart", false), Some(Keyword::Restart));
    }

    #[test]
    fn notify_takes_sms_or_an_email() {
        assert_eq!(notify("Text"), Some(Notify::Sms));
        assert_eq!(notify("SMS please"), Some(Notify::Sms));
        assert_eq!(
            notify("email me at jo@smith-plumbing.co.uk."),
            Some(Notify::Email("jo@smith-plumbing.co.uk".into()))
        );
        assert_eq!(notify("jo@"), None);
        assert_eq!(notify("email please"), None);
        assert_eq!(notify("a@b"), None);
    }

    #[test]
    fn phone_type_takes_digit_or_word() {
        assert_eq!(phone_type("1"), Some(PhoneType::Iphone));
        assert_eq!(phone_type("Android."), Some(PhoneType::Android));
        assert_eq!(phone_type("landline"), Some(PhoneType::Landline));
        assert_eq!(phone_type("4"), None);
    }

    #[test]
    fn bounded_text_checks_length_after_folding_whitespace() {
        assert_eq!(
            bounded_text("  Smith   & Sons ", 80),
            Some("Smith & Sons".into())
        );
        assert_eq!(bounded_text("   ", 80), None);
        assert_eq!(bounded_text(&"x".repeat(81), 80), None);
    }

    #[test]
    fn done_and_call_me() {
        assert!(is_done("Done!"));
        assert!(is_done("all set"));
        assert!(!is_done("not done"));
        assert!(is_call_me("CALL ME"));
        assert!(is_call_me("test"));
    }

    #[test]
    fn a_letter_that_lowercases_shorter_does_not_panic() {
        // The Kelvin sign is three bytes; its lowercase `k` is one.
        assert!(matches!(
            business("\u{212A} in Leeds"),
            BusinessAnswer::TradeAndPlace { .. }
        ));
        assert!(matches!(
            business("I'm a \u{212A}\u{212A}\u{212A} plumber in Leeds"),
            BusinessAnswer::TradeAndPlace { .. }
        ));
    }

    proptest::proptest! {
        #[test]
        fn no_text_panics_any_parser(text in "\\PC*|[\u{212A}\u{130}\u{1E9E}a-zA-Z ,.'-]{0,40}") {
            let _ = keyword(&text, false);
            let _ = keyword(&text, true);
            let _ = is_negative(&text);
            let _ = is_yes(&text);
            let _ = is_edit(&text);
            let _ = is_done(&text);
            let _ = is_call_me(&text);
            let _ = business(&text);
            let _ = capitalise_first(&text);
            let _ = title_case(&text);
            let _ = bounded_text(&text, 80);
            let _ = notify(&text);
            let _ = phone_type(&text);
        }
    }
}
