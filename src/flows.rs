//! Every word the bot says, loaded from `flows/<locale>.toml` and checked before the server starts.

/// A message the bot can send. The TOML key is the snake_case name; each message may use only its
/// own placeholders (`{name}`), and every locale must define every message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageKey {
    S1Ask,
    Welcome,
    S1AskPlace,
    S1AskTrade,
    S1EditTrade,
    S1EditPlace,
    S1Retry,
    S2Ask,
    S2Retry,
    S3Ask,
    S3Retry,
    S4Ask,
    S4Retry,
    S4AskEmail,
    S5Summary,
    S5Explain,
    S5Clarify,
    S5Pay,
    S5Waitlist,
    S5FindingNumber,
    S5ExplainPaid,
    S5NoNumberYet,
    S6Ask,
    S6Retry,
    S6Clarify,
    FwdIphone,
    FwdAndroid,
    FwdLandline,
    S7Retry,
    S8Ask,
    S8Waiting,
    NumberReturned,
    NumberReleased,
    Complete,
    CompleteAck,
    Help,
    StepS1,
    StepS2,
    StepS3,
    StepS4,
    StepS5,
    StepS5Payment,
    StepS5Number,
    StepS6,
    StepS7,
    StepS8,
    StepS9,
    StepComplete,
    Stuck,
    OptedIn,
    Restart,
    PaymentRevoked,
    VerifyOwnCall,
    VerifyTroubleshoot,
    VoiceConfirmed,
    VoiceMissedCall,
    VoiceNotLive,
    VoiceVerifyAnswered,
    /// A new owner's first text while a spending budget is exceeded: we will text them when
    /// the period turns.
    BudgetFull,
    AlertMissedCall,
    AlertVoicemail,
    AlertEmailSubject,
    TextRelayed,
    TextRelayedSubject,
    CallerTextBack,
    LinePaused,
    LineResumed,
    LineStatus,
    LineHelp,
    UsageWarning,
    UsageReached,
}

impl MessageKey {
    pub const ALL: [MessageKey; 71] = [
        MessageKey::S1Ask,
        MessageKey::Welcome,
        MessageKey::S1AskPlace,
        MessageKey::S1AskTrade,
        MessageKey::S1EditTrade,
        MessageKey::S1EditPlace,
        MessageKey::S1Retry,
        MessageKey::S2Ask,
        MessageKey::S2Retry,
        MessageKey::S3Ask,
        MessageKey::S3Retry,
        MessageKey::S4Ask,
        MessageKey::S4Retry,
        MessageKey::S4AskEmail,
        MessageKey::S5Summary,
        MessageKey::S5Explain,
        MessageKey::S5Clarify,
        MessageKey::S5Pay,
        MessageKey::S5Waitlist,
        MessageKey::S5FindingNumber,
        MessageKey::S5ExplainPaid,
        MessageKey::S5NoNumberYet,
        MessageKey::S6Ask,
        MessageKey::S6Retry,
        MessageKey::S6Clarify,
        MessageKey::FwdIphone,
        MessageKey::FwdAndroid,
        MessageKey::FwdLandline,
        MessageKey::S7Retry,
        MessageKey::S8Ask,
        MessageKey::S8Waiting,
        MessageKey::NumberReturned,
        MessageKey::NumberReleased,
        MessageKey::Complete,
        MessageKey::CompleteAck,
        MessageKey::Help,
        MessageKey::StepS1,
        MessageKey::StepS2,
        MessageKey::StepS3,
        MessageKey::StepS4,
        MessageKey::StepS5,
        MessageKey::StepS5Payment,
        MessageKey::StepS5Number,
        MessageKey::StepS6,
        MessageKey::StepS7,
        MessageKey::StepS8,
        MessageKey::StepS9,
        MessageKey::StepComplete,
        MessageKey::Stuck,
        MessageKey::OptedIn,
        MessageKey::Restart,
        MessageKey::PaymentRevoked,
        MessageKey::VerifyOwnCall,
        MessageKey::VerifyTroubleshoot,
        MessageKey::VoiceConfirmed,
        MessageKey::VoiceMissedCall,
        MessageKey::VoiceNotLive,
        MessageKey::VoiceVerifyAnswered,
        MessageKey::BudgetFull,
        MessageKey::AlertMissedCall,
        MessageKey::AlertVoicemail,
        MessageKey::AlertEmailSubject,
        MessageKey::TextRelayed,
        MessageKey::TextRelayedSubject,
        MessageKey::CallerTextBack,
        MessageKey::LinePaused,
        MessageKey::LineResumed,
        MessageKey::LineStatus,
        MessageKey::LineHelp,
        MessageKey::UsageWarning,
        MessageKey::UsageReached,
    ];

    /// The key in the TOML file.
    pub fn name(self) -> &'static str {
        match self {
            MessageKey::S1Ask => "s1_ask",
            MessageKey::Welcome => "welcome",
            MessageKey::S1AskPlace => "s1_ask_place",
            MessageKey::S1AskTrade => "s1_ask_trade",
            MessageKey::S1EditTrade => "s1_edit_trade",
            MessageKey::S1EditPlace => "s1_edit_place",
            MessageKey::S1Retry => "s1_retry",
            MessageKey::S2Ask => "s2_ask",
            MessageKey::S2Retry => "s2_retry",
            MessageKey::S3Ask => "s3_ask",
            MessageKey::S3Retry => "s3_retry",
            MessageKey::S4Ask => "s4_ask",
            MessageKey::S4Retry => "s4_retry",
            MessageKey::S4AskEmail => "s4_ask_email",
            MessageKey::S5Summary => "s5_summary",
            MessageKey::S5Explain => "s5_explain",
            MessageKey::S5Clarify => "s5_clarify",
            MessageKey::S5Pay => "s5_pay",
            MessageKey::S5Waitlist => "s5_waitlist",
            MessageKey::S5FindingNumber => "s5_finding_number",
            MessageKey::S5ExplainPaid => "s5_explain_paid",
            MessageKey::S5NoNumberYet => "s5_no_number_yet",
            MessageKey::S6Ask => "s6_ask",
            MessageKey::S6Retry => "s6_retry",
            MessageKey::S6Clarify => "s6_clarify",
            MessageKey::FwdIphone => "fwd_iphone",
            MessageKey::FwdAndroid => "fwd_android",
            MessageKey::FwdLandline => "fwd_landline",
            MessageKey::S7Retry => "s7_retry",
            MessageKey::S8Ask => "s8_ask",
            MessageKey::S8Waiting => "s8_waiting",
            MessageKey::NumberReturned => "number_returned",
            MessageKey::NumberReleased => "number_released",
            MessageKey::Complete => "complete",
            MessageKey::CompleteAck => "complete_ack",
            MessageKey::Help => "help",
            MessageKey::StepS1 => "step_s1",
            MessageKey::StepS2 => "step_s2",
            MessageKey::StepS3 => "step_s3",
            MessageKey::StepS4 => "step_s4",
            MessageKey::StepS5 => "step_s5",
            MessageKey::StepS5Payment => "step_s5_payment",
            MessageKey::StepS5Number => "step_s5_number",
            MessageKey::StepS6 => "step_s6",
            MessageKey::StepS7 => "step_s7",
            MessageKey::StepS8 => "step_s8",
            MessageKey::StepS9 => "step_s9",
            MessageKey::StepComplete => "step_complete",
            MessageKey::Stuck => "stuck",
            MessageKey::OptedIn => "opted_in",
            MessageKey::Restart => "restart",
            MessageKey::PaymentRevoked => "payment_revoked",
            MessageKey::VerifyOwnCall => "verify_own_call",
            MessageKey::VerifyTroubleshoot => "verify_troubleshoot",
            MessageKey::VoiceConfirmed => "voice_confirmed",
            MessageKey::VoiceMissedCall => "voice_missed_call",
            MessageKey::VoiceNotLive => "voice_not_live",
            MessageKey::VoiceVerifyAnswered => "voice_verify_answered",
            MessageKey::BudgetFull => "budget_full",
            MessageKey::AlertMissedCall => "alert_missed_call",
            MessageKey::AlertVoicemail => "alert_voicemail",
            MessageKey::AlertEmailSubject => "alert_email_subject",
            MessageKey::TextRelayed => "text_relayed",
            MessageKey::TextRelayedSubject => "text_relayed_subject",
            MessageKey::CallerTextBack => "caller_text_back",
            MessageKey::LinePaused => "line_paused",
            MessageKey::LineResumed => "line_resumed",
            MessageKey::LineStatus => "line_status",
            MessageKey::LineHelp => "line_help",
            MessageKey::UsageWarning => "usage_warning",
            MessageKey::UsageReached => "usage_reached",
        }
    }

    /// The placeholders this message may use (it need not use them all).
    pub fn placeholders(self) -> &'static [&'static str] {
        match self {
            MessageKey::S1AskPlace => &["business_type"],
            MessageKey::S1AskTrade => &["location"],
            MessageKey::S2Ask => &["business_type", "location"],
            MessageKey::S3Ask => &["business_name"],
            MessageKey::S4Ask => &["owner_name"],
            MessageKey::S5Summary => &[
                "business_type",
                "location",
                "business_name",
                "owner_name",
                "notify",
            ],
            MessageKey::S5Pay | MessageKey::PaymentRevoked => &["payment_link"],
            MessageKey::S6Ask | MessageKey::NumberReturned | MessageKey::NumberReleased => {
                &["number"]
            }
            MessageKey::FwdIphone | MessageKey::FwdAndroid | MessageKey::FwdLandline => {
                &["number", "number_national"]
            }
            MessageKey::Help => &["step"],
            MessageKey::VoiceMissedCall
            | MessageKey::VoiceNotLive
            | MessageKey::CallerTextBack
            | MessageKey::LinePaused
            | MessageKey::LineResumed => &["business_name"],
            MessageKey::AlertMissedCall => &["business_name", "caller", "time"],
            MessageKey::AlertVoicemail => &["business_name", "caller", "time", "seconds", "link"],
            MessageKey::AlertEmailSubject | MessageKey::TextRelayedSubject => {
                &["business_name", "caller"]
            }
            MessageKey::TextRelayed => &["caller", "business_name", "body"],
            MessageKey::LineStatus => &["business_name", "calls", "included", "period_start"],
            MessageKey::UsageWarning | MessageKey::UsageReached => {
                &["business_name", "calls", "included"]
            }
            _ => &[],
        }
    }

    /// Forwarding instructions may run to 3 SMS segments; every other reply to 2.
    pub fn max_segments(self) -> usize {
        match self {
            MessageKey::FwdIphone | MessageKey::FwdAndroid | MessageKey::FwdLandline => 3,
            _ => 2,
        }
    }

    /// Spoken on a call, not texted: no segment limit applies, but it must still be plain text.
    pub fn is_spoken(self) -> bool {
        matches!(
            self,
            MessageKey::VoiceConfirmed
                | MessageKey::VoiceMissedCall
                | MessageKey::VoiceNotLive
                | MessageKey::VoiceVerifyAnswered
        )
    }
}

use std::collections::HashMap;
use std::path::Path;

use crate::conversation::parse::{Vocabulary, VocabularyError};
use crate::conversation::reminders::ReminderFlows;
use crate::domain::Locale;
use crate::sms;

/// The keys of the `step_*` messages: the short names `help` fills `{step}` with.
const STEP_KEYS: [MessageKey; 12] = [
    MessageKey::StepS1,
    MessageKey::StepS2,
    MessageKey::StepS3,
    MessageKey::StepS4,
    MessageKey::StepS5,
    MessageKey::StepS5Payment,
    MessageKey::StepS5Number,
    MessageKey::StepS6,
    MessageKey::StepS7,
    MessageKey::StepS8,
    MessageKey::StepS9,
    MessageKey::StepComplete,
];

/// The `[meta]` fields every file must set, all non-empty strings.
const META_FIELDS: [&str; 3] = ["locale", "forwarding_source", "forwarding_last_checked"];

/// Why a flows file was rejected. Every variant names the file, and the key where there is one.
#[derive(Debug, thiserror::Error)]
pub enum FlowError {
    #[error("{file}: cannot read the file: {source}")]
    Unreadable {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: not valid TOML: {source}")]
    Syntax {
        file: String,
        #[source]
        source: toml::de::Error,
    },
    #[error("{file}: the [{section}] table is missing (or is not a table)")]
    MissingSection { file: String, section: &'static str },
    #[error("{file}: unknown top-level key `{key}` (only {allowed} are allowed; a typo?)")]
    UnknownSection {
        file: String,
        key: String,
        allowed: &'static str,
    },
    #[error("{file}: [meta] `{field}` is missing or empty")]
    MissingMeta { file: String, field: &'static str },
    #[error("{file}: [meta] `{field}` is invalid: {problem}")]
    InvalidMeta {
        file: String,
        field: &'static str,
        problem: String,
    },
    #[error("{file}: [{section}] has unknown key `{key}` (a typo?)")]
    UnknownKey {
        file: String,
        section: &'static str,
        key: String,
    },
    #[error("{file}: [{section}] `{key}` must be a string")]
    NotAString {
        file: String,
        section: &'static str,
        key: String,
    },
    #[error("{file}: message `{key}` is missing")]
    MissingMessage { file: String, key: &'static str },
    #[error("{file}: message `{key}` is empty")]
    EmptyMessage { file: String, key: &'static str },
    #[error(
        "{file}: message `{key}` uses unknown placeholder {{{placeholder}}} (allowed: {allowed})"
    )]
    UnknownPlaceholder {
        file: String,
        key: &'static str,
        placeholder: String,
        allowed: String,
    },
    #[error("{file}: message `{key}` has a malformed placeholder: {problem}")]
    MalformedPlaceholder {
        file: String,
        key: &'static str,
        problem: String,
    },
    #[error(
        "{file}: message `{key}` contains {ch:?} ({}), which is not GSM-7 and would send the whole SMS as UCS-2",
        .ch.escape_unicode()
    )]
    NotGsm7 {
        file: String,
        key: &'static str,
        ch: char,
    },
    #[error("{file}: [reminders] {problem}")]
    Reminders { file: String, problem: String },
    #[error("{file}: `{key}` must be a list of strings")]
    NotAList { file: String, key: String },
    #[error("{file}: {source}")]
    Vocabulary {
        file: String,
        #[source]
        source: VocabularyError,
    },
    #[error(
        "{file}: message `{key}` is {segments} SMS segments when rendered with sample values; the limit is {max}"
    )]
    TooLong {
        file: String,
        key: &'static str,
        segments: usize,
        max: usize,
    },
}

/// A piece of a parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    /// A placeholder, already checked against its key's `placeholders()`.
    Var(&'static str),
}

#[derive(Debug, Clone)]
struct Template {
    text: String,
    parts: Vec<Part>,
}

impl Template {
    fn render(&self, vars: &[(&str, &str)]) -> String {
        let mut out = String::with_capacity(self.text.len());
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Var(name) => {
                    if let Some((_, value)) = vars.iter().find(|(n, _)| n == name) {
                        out.push_str(value);
                    }
                }
            }
        }
        out
    }
}

/// One locale's messages, every one checked.
#[derive(Debug, Clone)]
pub struct Catalog {
    locale: Locale,
    messages: HashMap<MessageKey, Template>,
    forwarding_source: String,
    forwarding_last_checked: String,
    reminders: ReminderFlows,
    /// Device and trade words, shared by every locale (`flows/vocabulary.toml`).
    vocabulary: Vocabulary,
}

impl Catalog {
    /// The reminder schedule and copy (`[reminders]`).
    pub fn reminders(&self) -> &ReminderFlows {
        &self.reminders
    }

    /// The words the parsers need to know (`flows/vocabulary.toml`).
    pub fn vocabulary(&self) -> &Vocabulary {
        &self.vocabulary
    }

    pub fn locale(&self) -> Locale {
        self.locale
    }

    /// Fills `{name}` placeholders from vars. Never panics: a var not supplied renders as empty.
    /// Values are inserted as given (braces in a value are not expanded again); vars the message
    /// does not use are ignored.
    pub fn render(&self, key: MessageKey, vars: &[(&str, &str)]) -> String {
        self.messages
            .get(&key)
            .map(|template| template.render(vars))
            .unwrap_or_default()
    }

    /// The raw text from the file, placeholders and all.
    pub fn template(&self, key: MessageKey) -> &str {
        self.messages.get(&key).map_or("", |t| t.text.as_str())
    }

    /// Where the forwarding codes in this locale's messages come from (`[meta] forwarding_source`).
    pub fn forwarding_source(&self) -> &str {
        &self.forwarding_source
    }

    /// When the forwarding codes were last checked (`[meta] forwarding_last_checked`).
    pub fn forwarding_last_checked(&self) -> &str {
        &self.forwarding_last_checked
    }
}

/// Every locale's catalog.
#[derive(Debug, Clone)]
pub struct Flows {
    en_gb: Catalog,
    en_us: Catalog,
}

const EMBEDDED_EN_GB: &str = include_str!("../flows/en-GB.toml");
const EMBEDDED_EN_US: &str = include_str!("../flows/en-US.toml");
const EMBEDDED_VOCABULARY: &str = include_str!("../flows/vocabulary.toml");

impl Flows {
    /// The catalogs compiled into the binary (`flows/en-GB.toml`, `flows/en-US.toml`,
    /// `flows/vocabulary.toml`), checked.
    pub fn embedded() -> Result<Flows, FlowError> {
        let vocabulary = parse_vocabulary("flows/vocabulary.toml (embedded)", EMBEDDED_VOCABULARY)?;
        Self::build(vocabulary, |locale| {
            let text = match locale {
                Locale::EnGb => EMBEDDED_EN_GB,
                Locale::EnUs => EMBEDDED_EN_US,
            };
            let file = format!("flows/{}.toml (embedded)", locale.tag());
            Self::parse_locale(locale, &file, text)
        })
    }

    /// Loads `<dir>/<tag>.toml` for every locale (`en-GB.toml`, `en-US.toml`) and
    /// `<dir>/vocabulary.toml`, checked.
    pub fn load_dir(dir: &Path) -> Result<Flows, FlowError> {
        let path = dir.join("vocabulary.toml");
        let file = path.display().to_string();
        let text = std::fs::read_to_string(&path).map_err(|source| FlowError::Unreadable {
            file: file.clone(),
            source,
        })?;
        let vocabulary = parse_vocabulary(&file, &text)?;
        Self::build(vocabulary, |locale| {
            let path = dir.join(format!("{}.toml", locale.tag()));
            let file = path.display().to_string();
            let text = std::fs::read_to_string(&path).map_err(|source| FlowError::Unreadable {
                file: file.clone(),
                source,
            })?;
            Self::parse_locale(locale, &file, &text)
        })
    }

    /// Parses and checks one locale from TOML text; `file` is used in error messages.
    pub fn parse_locale(locale: Locale, file: &str, text: &str) -> Result<Catalog, FlowError> {
        Parser { locale, file }.parse(text)
    }

    pub fn catalog(&self, locale: Locale) -> &Catalog {
        match locale {
            Locale::EnGb => &self.en_gb,
            Locale::EnUs => &self.en_us,
        }
    }

    fn build(
        vocabulary: Vocabulary,
        mut load: impl FnMut(Locale) -> Result<Catalog, FlowError>,
    ) -> Result<Flows, FlowError> {
        let mut with_words = |locale| {
            load(locale).map(|catalog| Catalog {
                vocabulary: vocabulary.clone(),
                ..catalog
            })
        };
        Ok(Flows {
            en_gb: with_words(Locale::EnGb)?,
            en_us: with_words(Locale::EnUs)?,
        })
    }
}

/// The tables of `flows/vocabulary.toml` and the lists each may hold.
const VOCABULARY_LISTS: [(&str, &[&str]); 2] = [
    ("devices", &["iphone", "android", "landline"]),
    ("trades", &["words"]),
];

/// Parses and checks `flows/vocabulary.toml`: only known tables and lists, each a list of strings,
/// then the word checks of [`Vocabulary::new`].
pub fn parse_vocabulary(file: &str, text: &str) -> Result<Vocabulary, FlowError> {
    let root: toml::Table = toml::from_str(text).map_err(|source| FlowError::Syntax {
        file: file.to_owned(),
        source,
    })?;
    if let Some(key) = root
        .keys()
        .find(|k| !VOCABULARY_LISTS.iter().any(|(table, _)| table == k))
    {
        return Err(FlowError::UnknownSection {
            file: file.to_owned(),
            key: key.clone(),
            allowed: "[devices] and [trades]",
        });
    }
    let mut lists: HashMap<&str, Vec<String>> = HashMap::new();
    for (section, names) in VOCABULARY_LISTS {
        let Some(toml::Value::Table(table)) = root.get(section) else {
            return Err(FlowError::MissingSection {
                file: file.to_owned(),
                section,
            });
        };
        if let Some(key) = table.keys().find(|k| !names.contains(&k.as_str())) {
            return Err(FlowError::UnknownKey {
                file: file.to_owned(),
                section,
                key: key.clone(),
            });
        }
        for name in names {
            let not_a_list = || FlowError::NotAList {
                file: file.to_owned(),
                key: format!("{section}.{name}"),
            };
            let Some(toml::Value::Array(values)) = table.get(*name) else {
                return Err(not_a_list());
            };
            let words = values
                .iter()
                .map(|v| v.as_str().map(str::to_owned).ok_or_else(not_a_list))
                .collect::<Result<Vec<_>, _>>()?;
            lists.insert(name, words);
        }
    }
    let list = |name: &str| lists.get(name).cloned().unwrap_or_default();
    Vocabulary::new(
        &list("iphone"),
        &list("android"),
        &list("landline"),
        &list("words"),
    )
    .map_err(|source| FlowError::Vocabulary {
        file: file.to_owned(),
        source,
    })
}

/// Checks one file; holds what every error needs to say.
struct Parser<'a> {
    locale: Locale,
    file: &'a str,
}

impl Parser<'_> {
    fn parse(&self, text: &str) -> Result<Catalog, FlowError> {
        let file = || self.file.to_owned();
        let mut root: toml::Table = toml::from_str(text).map_err(|source| FlowError::Syntax {
            file: file(),
            source,
        })?;
        if let Some(key) = root
            .keys()
            .find(|k| !["meta", "messages", "reminders"].contains(&k.as_str()))
        {
            return Err(FlowError::UnknownSection {
                file: file(),
                key: key.clone(),
                allowed: "[meta], [messages] and [reminders]",
            });
        }
        let meta = self.section(&mut root, "meta")?;
        let messages = self.section(&mut root, "messages")?;
        let reminders = ReminderFlows::from_table(self.section(&mut root, "reminders")?).map_err(
            |problem| FlowError::Reminders {
                file: file(),
                problem,
            },
        )?;
        let [locale, forwarding_source, forwarding_last_checked] = self.meta(meta)?;

        if locale != self.locale.tag() {
            return Err(FlowError::InvalidMeta {
                file: file(),
                field: "locale",
                problem: format!("{locale:?} but this file is for {}", self.locale.tag()),
            });
        }
        if !is_iso_date(&forwarding_last_checked) {
            return Err(FlowError::InvalidMeta {
                file: file(),
                field: "forwarding_last_checked",
                problem: format!("{forwarding_last_checked:?} is not a YYYY-MM-DD date"),
            });
        }

        let templates = self.messages(messages)?;

        // The longest step name is the worst case for `help`'s `{step}`.
        let step = STEP_KEYS
            .iter()
            .filter_map(|key| templates.get(key))
            .map(|t| t.text.as_str())
            .max_by_key(|text| (sms::segments(text), text.chars().count()))
            .unwrap_or_default();
        let samples = sample_vars(self.locale, step);
        for key in MessageKey::ALL {
            if key.is_spoken() {
                continue;
            }
            let Some(template) = templates.get(&key) else {
                continue;
            };
            let segments = sms::segments(&template.render(&samples));
            if segments > key.max_segments() {
                return Err(FlowError::TooLong {
                    file: file(),
                    key: key.name(),
                    segments,
                    max: key.max_segments(),
                });
            }
        }

        Ok(Catalog {
            locale: self.locale,
            messages: templates,
            forwarding_source,
            forwarding_last_checked,
            reminders,
            vocabulary: Vocabulary::default(),
        })
    }

    fn section(
        &self,
        root: &mut toml::Table,
        section: &'static str,
    ) -> Result<toml::Table, FlowError> {
        match root.remove(section) {
            Some(toml::Value::Table(table)) => Ok(table),
            _ => Err(FlowError::MissingSection {
                file: self.file.to_owned(),
                section,
            }),
        }
    }

    /// The `[meta]` fields in `META_FIELDS` order.
    fn meta(&self, meta: toml::Table) -> Result<[String; 3], FlowError> {
        if let Some(key) = meta.keys().find(|k| !META_FIELDS.contains(&k.as_str())) {
            return Err(FlowError::UnknownKey {
                file: self.file.to_owned(),
                section: "meta",
                key: key.clone(),
            });
        }
        let field = |name: &'static str| -> Result<String, FlowError> {
            let value = match meta.get(name) {
                None => String::new(),
                Some(toml::Value::String(s)) => s.trim().to_owned(),
                // An unquoted `2026-11-21` is a TOML date; take it as written.
                Some(toml::Value::Datetime(d)) => d.to_string(),
                Some(_) => {
                    return Err(FlowError::NotAString {
                        file: self.file.to_owned(),
                        section: "meta",
                        key: name.to_owned(),
                    });
                }
            };
            if value.is_empty() {
                return Err(FlowError::MissingMeta {
                    file: self.file.to_owned(),
                    field: name,
                });
            }
            Ok(value)
        };
        Ok([
            field(META_FIELDS[0])?,
            field(META_FIELDS[1])?,
            field(META_FIELDS[2])?,
        ])
    }

    /// Every message present, known, well formed and GSM-7 (segment limits are checked later, once
    /// the step names are known).
    fn messages(
        &self,
        mut messages: toml::Table,
    ) -> Result<HashMap<MessageKey, Template>, FlowError> {
        let file = || self.file.to_owned();
        if let Some(key) = messages
            .keys()
            .find(|k| !MessageKey::ALL.iter().any(|m| m.name() == k.as_str()))
        {
            return Err(FlowError::UnknownKey {
                file: file(),
                section: "messages",
                key: key.clone(),
            });
        }
        let mut templates = HashMap::with_capacity(MessageKey::ALL.len());
        for key in MessageKey::ALL {
            let text = match messages.remove(key.name()) {
                None => {
                    return Err(FlowError::MissingMessage {
                        file: file(),
                        key: key.name(),
                    });
                }
                Some(toml::Value::String(text)) => text,
                Some(_) => {
                    return Err(FlowError::NotAString {
                        file: file(),
                        section: "messages",
                        key: key.name().to_owned(),
                    });
                }
            };
            if text.trim().is_empty() {
                return Err(FlowError::EmptyMessage {
                    file: file(),
                    key: key.name(),
                });
            }
            let parts = self.parts(key, &text)?;
            templates.insert(key, Template { text, parts });
        }
        Ok(templates)
    }

    /// Splits a template into text and placeholders, checking both.
    fn parts(&self, key: MessageKey, text: &str) -> Result<Vec<Part>, FlowError> {
        let malformed = |problem: String| FlowError::MalformedPlaceholder {
            file: self.file.to_owned(),
            key: key.name(),
            problem,
        };
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut chars = text.chars().enumerate();
        while let Some((at, c)) = chars.next() {
            match c {
                '{' => {
                    let mut name = String::new();
                    let closed = loop {
                        match chars.next() {
                            None => break false,
                            Some((_, '}')) => break true,
                            Some((inner, '{')) => {
                                return Err(malformed(format!(
                                    "`{{` at character {} opens inside the placeholder opened at character {}",
                                    inner + 1,
                                    at + 1
                                )));
                            }
                            Some((_, c)) => name.push(c),
                        }
                    };
                    if !closed {
                        return Err(malformed(format!("unclosed `{{` at character {}", at + 1)));
                    }
                    if name.is_empty()
                        || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    {
                        return Err(malformed(format!(
                            "{{{name}}} at character {} is not a placeholder name (letters, digits and _ only)",
                            at + 1
                        )));
                    }
                    let Some(&known) = key.placeholders().iter().find(|p| **p == name) else {
                        return Err(FlowError::UnknownPlaceholder {
                            file: self.file.to_owned(),
                            key: key.name(),
                            placeholder: name,
                            allowed: allowed_list(key),
                        });
                    };
                    if !literal.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut literal)));
                    }
                    parts.push(Part::Var(known));
                }
                '}' => {
                    return Err(malformed(format!(
                        "stray `}}` at character {} with no `{{` before it",
                        at + 1
                    )));
                }
                c => {
                    if !sms::is_gsm7(c.encode_utf8(&mut [0; 4])) {
                        return Err(FlowError::NotGsm7 {
                            file: self.file.to_owned(),
                            key: key.name(),
                            ch: c,
                        });
                    }
                    literal.push(c);
                }
            }
        }
        if !literal.is_empty() {
            parts.push(Part::Text(literal));
        }
        Ok(parts)
    }
}

fn allowed_list(key: MessageKey) -> String {
    let names = key.placeholders();
    if names.is_empty() {
        "none".to_owned()
    } else {
        names
            .iter()
            .map(|n| format!("{{{n}}}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn is_iso_date(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 10
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            _ => c.is_ascii_digit(),
        })
}

/// Realistic values for every placeholder, used to hold each texted message to its segment limit.
fn sample_vars(locale: Locale, step: &str) -> [(&'static str, &str); 17] {
    let (number, number_national) = match locale {
        Locale::EnGb => ("+447700900123", "07700900123"),
        Locale::EnUs => ("+14155550123", "4155550123"),
    };
    [
        ("business_type", "Plumber"),
        ("location", "Manchester"),
        ("business_name", "Smith and Sons Plumbing"),
        ("owner_name", "Jonathan Smith"),
        ("notify", "jonathan.smith@example.com"),
        (
            "payment_link",
            "https://buy.stripe.com/test_00a1b2c3d4e5f6?client_reference_id=c_0000000001",
        ),
        ("number", number),
        ("number_national", number_national),
        ("step", step),
        ("caller", number),
        ("time", "14:05 on Mon 30 Nov"),
        ("seconds", "120"),
        (
            "link",
            "https://api.twilio.com/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Recordings/RE0123456789abcdef0123456789abcdef.mp3",
        ),
        (
            "body",
            "Hi, can you come and look at a leaking tap on Thursday?",
        ),
        ("calls", "100"),
        ("included", "100"),
        ("period_start", "30 Nov"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const GB: &str = include_str!("../flows/en-GB.toml");
    const FILE: &str = "test/en-GB.toml";

    fn parse(text: &str) -> Result<Catalog, FlowError> {
        Flows::parse_locale(Locale::EnGb, FILE, text)
    }

    /// The real en-GB file with the line starting `key = ` replaced (or removed, for `None`).
    fn with_line(key: &str, line: Option<&str>) -> String {
        let prefix = format!("{key} = ");
        let mut found = false;
        let out: Vec<&str> = GB
            .lines()
            .filter_map(|l| {
                if l.starts_with(&prefix) {
                    found = true;
                    line
                } else {
                    Some(l)
                }
            })
            .collect();
        assert!(found, "no line for {key} in en-GB.toml");
        out.join("\n")
    }

    fn with_message(key: &str, text: &str) -> String {
        let line = format!("{key} = {}", toml::Value::String(text.to_owned()));
        with_line(key, Some(&line))
    }

    /// The error, after checking its message names the file and (when given) the key.
    fn rejected(text: &str, key: Option<&str>) -> FlowError {
        let err = parse(text).expect_err("should be rejected");
        let shown = err.to_string();
        assert!(shown.contains(FILE), "{shown}");
        if let Some(key) = key {
            assert!(shown.contains(&format!("`{key}`")), "{shown}");
        }
        err
    }

    fn sample(locale: Locale, key: MessageKey) -> String {
        let catalog = Flows::embedded().unwrap();
        let catalog = catalog.catalog(locale);
        let step = STEP_KEYS
            .iter()
            .map(|k| catalog.template(*k))
            .max_by_key(|t| t.len())
            .unwrap();
        catalog.render(key, &sample_vars(locale, step))
    }

    /// Not a check: `cargo test -- --ignored --nocapture show_messages` prints every rendered text.
    #[test]
    #[ignore = "prints every rendered message for a person to read; checks nothing"]
    fn show_messages() {
        for locale in Locale::ALL {
            for key in MessageKey::ALL {
                let text = sample(locale, key);
                let segments = sms::segments(&text);
                let len = text.chars().count();
                println!(
                    "--- {} {} ({len} chars, {segments} seg)\n{text}",
                    locale.tag(),
                    key.name()
                );
            }
        }
    }

    #[test]
    fn message_keys_are_unique_and_complete() {
        let names: std::collections::HashSet<_> =
            MessageKey::ALL.iter().map(|k| k.name()).collect();
        assert_eq!(names.len(), MessageKey::ALL.len());
        for key in STEP_KEYS {
            assert!(key.name().starts_with("step_"));
        }
        let steps = MessageKey::ALL
            .iter()
            .filter(|k| k.name().starts_with("step_"))
            .count();
        assert_eq!(steps, STEP_KEYS.len());
    }

    #[test]
    fn embedded_catalogs_are_valid() {
        let flows = match Flows::embedded() {
            Ok(flows) => flows,
            Err(e) => panic!("{e}"),
        };
        for locale in Locale::ALL {
            let catalog = flows.catalog(locale);
            assert_eq!(catalog.locale(), locale);
            assert!(!catalog.forwarding_source().is_empty());
            assert_eq!(catalog.forwarding_last_checked(), "2026-11-21");
        }
    }

    #[test]
    fn the_files_on_disk_load_and_match_the_embedded_ones() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("flows");
        let loaded = Flows::load_dir(&dir).unwrap_or_else(|e| panic!("{e}"));
        let embedded = Flows::embedded().unwrap();
        for locale in Locale::ALL {
            for key in MessageKey::ALL {
                assert_eq!(
                    loaded.catalog(locale).template(key),
                    embedded.catalog(locale).template(key)
                );
            }
        }
    }

    #[test]
    fn every_message_renders_within_its_limit_and_is_gsm7() {
        let flows = Flows::embedded().unwrap();
        let mut failures = Vec::new();
        for locale in Locale::ALL {
            let catalog = flows.catalog(locale);
            for key in MessageKey::ALL {
                let rendered = sample(locale, key);
                let tag = locale.tag();
                let name = key.name();
                if rendered.trim().is_empty() {
                    failures.push(format!("{tag} {name}: renders empty"));
                }
                if let Some(c) = sms::first_non_gsm7(&rendered) {
                    failures.push(format!("{tag} {name}: {c:?} is not GSM-7"));
                }
                let segments = sms::segments(&rendered);
                if !key.is_spoken() && segments > key.max_segments() {
                    failures.push(format!(
                        "{tag} {name}: {segments} segments > {}",
                        key.max_segments()
                    ));
                }
                if rendered.contains('{') || rendered.contains('}') {
                    failures.push(format!("{tag} {name}: a placeholder was left unfilled"));
                }
                assert!(!catalog.render(key, &[]).is_empty(), "{tag} {name}");
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn messages_use_the_placeholders_they_exist_for() {
        let flows = Flows::embedded().unwrap();
        let needs = [
            (MessageKey::S1AskPlace, "{business_type}"),
            (MessageKey::S3Ask, "{business_name}"),
            (MessageKey::S4Ask, "{owner_name}"),
            (MessageKey::S5Pay, "{payment_link}"),
            (MessageKey::PaymentRevoked, "{payment_link}"),
            (MessageKey::S6Ask, "{number}"),
            (MessageKey::NumberReturned, "{number}"),
            (MessageKey::NumberReleased, "{number}"),
            (MessageKey::FwdIphone, "{number}"),
            (MessageKey::FwdAndroid, "{number}"),
            (MessageKey::FwdLandline, "{number_national}"),
            (MessageKey::Help, "{step}"),
            (MessageKey::VoiceMissedCall, "{business_name}"),
        ];
        for locale in Locale::ALL {
            let catalog = flows.catalog(locale);
            for (key, placeholder) in needs {
                assert!(
                    catalog.template(key).contains(placeholder),
                    "{} {} should use {placeholder}",
                    locale.tag(),
                    key.name()
                );
            }
            for placeholder in MessageKey::S5Summary.placeholders() {
                assert!(
                    catalog
                        .template(MessageKey::S5Summary)
                        .contains(&format!("{{{placeholder}}}"))
                );
            }
        }
    }

    #[test]
    fn forwarding_instructions_use_conditional_codes_for_each_country() {
        let gb = |key| sample(Locale::EnGb, key);
        let us = |key| sample(Locale::EnUs, key);
        for key in [MessageKey::FwdIphone, MessageKey::FwdAndroid] {
            assert!(gb(key).contains("**004*+447700900123#"), "{}", gb(key));
            assert!(gb(key).contains("**61*+447700900123**20#"), "{}", gb(key));
            assert!(us(key).contains("**004*+14155550123#"), "{}", us(key));
            assert!(us(key).contains("*714155550123"), "{}", us(key));
        }
        let landline = gb(MessageKey::FwdLandline);
        assert!(landline.contains("*61*07700900123#"), "{landline}");
        assert!(landline.contains("*67*07700900123#"), "{landline}");
        let landline = us(MessageKey::FwdLandline);
        assert!(landline.contains("*924155550123"), "{landline}");
        assert!(landline.contains("*904155550123"), "{landline}");
        for locale in Locale::ALL {
            for key in [
                MessageKey::FwdIphone,
                MessageKey::FwdAndroid,
                MessageKey::FwdLandline,
            ] {
                let text = sample(locale, key);
                assert!(text.ends_with("Reply DONE when it's set."), "{text}");
                // Forwarding ALL calls would stop the owner's phone ringing at all.
                for all_calls in ["**21*", "*21*", "*72"] {
                    assert!(
                        !text.contains(all_calls),
                        "{} {}: {text}",
                        locale.tag(),
                        key.name()
                    );
                }
            }
        }
    }

    #[test]
    fn render_fills_placeholders_and_leaves_missing_ones_empty() {
        let catalog = parse(&with_message(
            "s5_summary",
            "{business_name} ({business_type}, {location}) for {owner_name} via {notify}.",
        ))
        .unwrap();
        let vars = [
            ("business_name", "Smith Plumbing"),
            ("business_type", "Plumber"),
            ("location", "Leeds"),
            ("owner_name", "Jo"),
            ("notify", "SMS"),
        ];
        assert_eq!(
            catalog.render(MessageKey::S5Summary, &vars),
            "Smith Plumbing (Plumber, Leeds) for Jo via SMS."
        );
        assert_eq!(
            catalog.render(MessageKey::S5Summary, &[("location", "Leeds")]),
            " (, Leeds) for  via ."
        );
        // Extra vars are ignored; values are not expanded again; the first of duplicates wins.
        assert_eq!(
            catalog.render(
                MessageKey::S5Summary,
                &[
                    ("business_name", "{owner_name}"),
                    ("business_name", "ignored"),
                    ("payment_link", "x"),
                ]
            ),
            "{owner_name} (, ) for  via ."
        );
        assert_eq!(
            catalog.template(MessageKey::S5Summary),
            "{business_name} ({business_type}, {location}) for {owner_name} via {notify}."
        );
        assert_eq!(
            catalog.render(MessageKey::Restart, &vars),
            "OK, let's start again."
        );
    }

    #[test]
    fn a_missing_message_is_rejected() {
        let err = rejected(&with_line("s3_retry", None), Some("s3_retry"));
        assert!(
            matches!(
                err,
                FlowError::MissingMessage {
                    key: "s3_retry",
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn an_empty_message_is_rejected() {
        for blank in ["", "  "] {
            let err = rejected(&with_message("stuck", blank), Some("stuck"));
            assert!(
                matches!(err, FlowError::EmptyMessage { key: "stuck", .. }),
                "{err:?}"
            );
        }
    }

    #[test]
    fn a_misspelt_key_is_rejected_as_unknown() {
        let err = rejected(
            &with_line(
                "s3_retry",
                Some("s3_retyr = \"Please reply with your name.\""),
            ),
            Some("s3_retyr"),
        );
        assert!(
            matches!(&err, FlowError::UnknownKey { section: "messages", key, .. } if key == "s3_retyr"),
            "{err:?}"
        );
        // Into [messages]: the file ends with [reminders].
        let extra = GB.replace("[messages]\n", "[messages]\nsurplus = \"hello\"\n");
        let err = rejected(&extra, Some("surplus"));
        assert!(matches!(err, FlowError::UnknownKey { .. }), "{err:?}");
        let meta_typo = with_line("forwarding_source", Some("forwarding_sauce = \"x\""));
        let err = rejected(&meta_typo, Some("forwarding_sauce"));
        assert!(
            matches!(
                err,
                FlowError::UnknownKey {
                    section: "meta",
                    ..
                }
            ),
            "{err:?}"
        );
        let err = rejected(&GB.replace("[messages]", "[mesages]"), Some("mesages"));
        assert!(matches!(err, FlowError::UnknownSection { .. }), "{err:?}");
    }

    #[test]
    fn a_message_that_is_not_a_string_is_rejected() {
        let err = rejected(&with_line("restart", Some("restart = 5")), Some("restart"));
        assert!(matches!(err, FlowError::NotAString { .. }), "{err:?}");
    }

    #[test]
    fn an_unknown_placeholder_is_rejected() {
        // `owner_name` exists, but not for s3_ask.
        let err = rejected(
            &with_message("s3_ask", "Hi {owner_name}, your name?"),
            Some("s3_ask"),
        );
        assert!(
            matches!(&err, FlowError::UnknownPlaceholder { key: "s3_ask", placeholder, .. } if placeholder == "owner_name"),
            "{err:?}"
        );
        assert!(err.to_string().contains("{owner_name}"), "{err}");
        assert!(
            err.to_string().contains("{business_name}"),
            "lists the allowed ones: {err}"
        );
        let err = rejected(&with_message("restart", "OK {Number}"), Some("restart"));
        assert!(
            matches!(err, FlowError::UnknownPlaceholder { .. }),
            "{err:?}"
        );
    }

    #[test]
    fn a_malformed_placeholder_is_rejected() {
        for bad in [
            "Thanks - {business_name it is.",
            "Thanks - {business_name",
            "Thanks - business_name} it is.",
            "Thanks - {} it is.",
            "Thanks - { business_name } it is.",
            "Thanks - {{business_name}} it is.",
            "Thanks - {busi{ness_name} it is.",
        ] {
            let err = rejected(&with_message("s3_ask", bad), Some("s3_ask"));
            assert!(
                matches!(err, FlowError::MalformedPlaceholder { key: "s3_ask", .. }),
                "{bad}: {err:?}"
            );
        }
    }

    #[test]
    fn a_non_gsm7_character_is_rejected_and_named() {
        for (text, bad) in [
            ("We’ll text you.", '’'),
            ("Great 👍", '👍'),
            ("Plumber – Leeds", '–'),
            ("Façade", 'ç'),
            ("Use `code`", '`'),
        ] {
            let err = rejected(&with_message("s2_retry", text), Some("s2_retry"));
            assert!(
                matches!(err, FlowError::NotGsm7 { key: "s2_retry", ch, .. } if ch == bad),
                "{text}: {err:?}"
            );
            assert!(err.to_string().contains(bad), "{err}");
        }
        // Spoken messages must still be plain text.
        let err = rejected(
            &with_message("voice_confirmed", "You’re set."),
            Some("voice_confirmed"),
        );
        assert!(matches!(err, FlowError::NotGsm7 { .. }), "{err:?}");
    }

    #[test]
    fn a_message_over_its_segment_limit_is_rejected() {
        let err = rejected(
            &with_message("s2_retry", &"a".repeat(307)),
            Some("s2_retry"),
        );
        assert!(
            matches!(
                err,
                FlowError::TooLong {
                    key: "s2_retry",
                    segments: 3,
                    max: 2,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("3 SMS segments"), "{err}");
        assert!(parse(&with_message("s2_retry", &"a".repeat(306))).is_ok());

        // Forwarding instructions may use 3 segments, not 4.
        assert!(parse(&with_message("fwd_landline", &"a".repeat(459))).is_ok());
        let err = rejected(
            &with_message("fwd_landline", &"a".repeat(460)),
            Some("fwd_landline"),
        );
        assert!(
            matches!(
                err,
                FlowError::TooLong {
                    segments: 4,
                    max: 3,
                    ..
                }
            ),
            "{err:?}"
        );

        // Sample values count: 250 chars plus a 74-char payment link is over 306.
        let text = format!("{}{{payment_link}}", "a".repeat(250));
        let err = rejected(&with_message("s5_pay", &text), Some("s5_pay"));
        assert!(matches!(err, FlowError::TooLong { .. }), "{err:?}");

        // help is held to its limit with the longest step name.
        let long_step = "b".repeat(150);
        let text = with_message("help", &format!("{}{{step}}", "a".repeat(150)));
        assert!(parse(&text).is_ok());
        let text = text.replace("step_s4 = \"", &format!("step_s4 = \"{long_step}"));
        let err = rejected(&text, Some("help"));
        assert!(
            matches!(err, FlowError::TooLong { key: "help", .. }),
            "{err:?}"
        );

        // Spoken messages have no segment limit.
        let long = format!("{} {{business_name}}", "a".repeat(400));
        assert!(parse(&with_message("voice_missed_call", &long)).is_ok());
    }

    #[test]
    fn missing_or_bad_meta_is_rejected() {
        for field in ["locale", "forwarding_source", "forwarding_last_checked"] {
            let err = rejected(&with_line(field, None), Some(field));
            assert!(matches!(err, FlowError::MissingMeta { .. }), "{err:?}");
            let err = rejected(
                &with_line(field, Some(&format!("{field} = \" \""))),
                Some(field),
            );
            assert!(matches!(err, FlowError::MissingMeta { .. }), "{err:?}");
        }
        let err = Flows::parse_locale(Locale::EnUs, FILE, GB).expect_err("GB text as en-US");
        assert!(
            matches!(
                err,
                FlowError::InvalidMeta {
                    field: "locale",
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("en-US"), "{err}");
        let bad_date = with_line(
            "forwarding_last_checked",
            Some("forwarding_last_checked = \"last week\""),
        );
        let err = rejected(&bad_date, Some("forwarding_last_checked"));
        assert!(matches!(err, FlowError::InvalidMeta { .. }), "{err:?}");
        let bare_date = with_line(
            "forwarding_last_checked",
            Some("forwarding_last_checked = 2026-11-21"),
        );
        assert_eq!(
            parse(&bare_date).unwrap().forwarding_last_checked(),
            "2026-11-21"
        );
        let without_meta: String = GB
            .split("[messages]")
            .nth(1)
            .map(|m| format!("[messages]{m}"))
            .unwrap();
        let err = rejected(&without_meta, None);
        assert!(
            matches!(
                err,
                FlowError::MissingSection {
                    section: "meta",
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn bad_toml_and_missing_files_are_rejected() {
        let err = rejected(&with_line("restart", Some("restart = \"OK, let's")), None);
        assert!(matches!(err, FlowError::Syntax { .. }), "{err:?}");
        let err = rejected(
            &GB.replace("[messages]\n", "[messages]\nrestart = \"again\"\n"),
            None,
        );
        assert!(
            matches!(err, FlowError::Syntax { .. }),
            "duplicate key: {err:?}"
        );

        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("no-such-dir");
        let err = Flows::load_dir(&dir).expect_err("no files there");
        assert!(matches!(err, FlowError::Unreadable { .. }), "{err:?}");
        assert!(err.to_string().contains("vocabulary.toml"), "{err}");
    }

    const VOCABULARY: &str = include_str!("../flows/vocabulary.toml");

    fn vocabulary_rejected(text: &str) -> FlowError {
        let err = parse_vocabulary("test/vocabulary.toml", text).expect_err("should be rejected");
        assert!(err.to_string().contains("test/vocabulary.toml"), "{err}");
        err
    }

    #[test]
    fn the_vocabulary_is_checked_when_loaded() {
        assert!(parse_vocabulary("test/vocabulary.toml", VOCABULARY).is_ok());
        let err = vocabulary_rejected(&VOCABULARY.replace("[trades]", "[trade]"));
        assert!(matches!(err, FlowError::UnknownSection { .. }), "{err:?}");
        let err = vocabulary_rejected(&VOCABULARY.replace("landline = [", "landlines = ["));
        assert!(
            matches!(&err, FlowError::UnknownKey { key, .. } if key == "landlines"),
            "{err:?}"
        );
        let err = vocabulary_rejected(&VOCABULARY.replace("iphone = [", "iphone = [1, "));
        assert!(matches!(err, FlowError::NotAList { .. }), "{err:?}");
        let err = vocabulary_rejected(&VOCABULARY.replace("\"apple\",", "\"apple\", \"APPLE\","));
        assert!(
            matches!(
                err,
                FlowError::Vocabulary {
                    source: VocabularyError::Duplicate { .. },
                    ..
                }
            ),
            "{err:?}"
        );
        // A word in two device lists would make a phone both.
        let err = vocabulary_rejected(&VOCABULARY.replace("\"ios\",", "\"ios\", \"samsung\","));
        assert!(
            matches!(
                err,
                FlowError::Vocabulary {
                    source: VocabularyError::Ambiguous { .. },
                    ..
                }
            ),
            "{err:?}"
        );
        let err = vocabulary_rejected(&VOCABULARY.replace("\"plumber\",", "\"gas plumber\","));
        assert!(
            matches!(
                err,
                FlowError::Vocabulary {
                    source: VocabularyError::NotOneWord { .. },
                    ..
                }
            ),
            "{err:?}"
        );
        let err = vocabulary_rejected(&VOCABULARY.replace("\"plumber\",", "\"!!\","));
        assert!(
            matches!(
                err,
                FlowError::Vocabulary {
                    source: VocabularyError::NoWords { .. },
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn an_empty_vocabulary_list_is_rejected() {
        let start = VOCABULARY.find("iphone = [").unwrap();
        let end = start + VOCABULARY[start..].find(']').unwrap() + 1;
        let text = format!("{}iphone = []{}", &VOCABULARY[..start], &VOCABULARY[end..]);
        let err = vocabulary_rejected(&text);
        assert!(
            matches!(
                err,
                FlowError::Vocabulary {
                    source: VocabularyError::EmptyList { list: "iphone" },
                    ..
                }
            ),
            "{err:?}"
        );
    }

    proptest! {
        #[test]
        fn render_never_panics(
            values in proptest::collection::vec(any::<String>(), 9),
            names in proptest::collection::vec("[a-z_{}]{0,14}", 0..6),
        ) {
            let flows = Flows::embedded().unwrap();
            let placeholders = [
                "business_type", "location", "business_name", "owner_name", "notify",
                "payment_link", "number", "number_national", "step",
            ];
            let mut vars: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "x")).collect();
            vars.extend(placeholders.iter().zip(&values).map(|(n, v)| (*n, v.as_str())));
            for locale in Locale::ALL {
                let catalog = flows.catalog(locale);
                for key in MessageKey::ALL {
                    let out = catalog.render(key, &vars);
                    for (name, value) in placeholders.iter().zip(&values) {
                        let used = catalog.template(key).contains(&format!("{{{name}}}"));
                        let shadowed = names.iter().any(|n| n == name);
                        if used && !shadowed {
                            prop_assert!(out.contains(value.as_str()));
                        }
                    }
                }
            }
        }

        #[test]
        fn parsing_any_message_text_never_panics(text in any::<String>()) {
            let _ = parse(&with_message("s3_ask", &text));
            let _ = parse(&with_message("help", &text));
        }

        #[test]
        fn a_plain_gsm7_message_is_accepted_as_written(text in "[A-Za-z0-9 .,!?'-]{1,300}") {
            prop_assume!(!text.trim().is_empty());
            let catalog = parse(&with_message("s2_retry", &text)).unwrap();
            prop_assert_eq!(catalog.template(MessageKey::S2Retry), text.as_str());
            prop_assert_eq!(catalog.render(MessageKey::S2Retry, &[]), text);
        }
    }
}
