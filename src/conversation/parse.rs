//! Reading owners' answers: forgiving about form, strict about meaning.
//!
//! Owners do not answer like a form. Every parser here reads through one normaliser, [`Words`],
//! which splits a text into word tokens and clause boundaries:
//!
//! - letters are lower-cased one character at a time (never by slicing one string with the byte
//!   offsets of another, since some letters change length when lower-cased);
//! - apostrophes vanish inside words (`don't` is `dont`, `I'm` is `im`), punctuation ends a clause;
//! - emoji variation selectors, skin tones, zero-width joiners and keycap marks are dropped, so
//!   `👍🏽` is `👍` and `2️⃣` is `2`; the emoji that carry meaning (👍 ✅ 👌 👎 👋) are tokens;
//! - runs of a repeated letter are squeezed (`yesss`, `doneee`), and common txt spellings are
//!   mapped to one word (`pls`, `txt`, `yep`, `nah`).
//!
//! Meaning is then read from tokens and phrases, never from whole-string equality. Negation wins:
//! a reply with a negative word in it is never a yes or a done. Where a reply could mean two
//! things, the parsers say so ([`Confirm::Unclear`], [`Device::Unclear`]) and the conversation asks
//! a short question rather than guessing.

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

// ------------------------------------------------------------------------------------------------
// The normaliser

/// One word of an owner's text.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Token {
    /// Lower-cased, apostrophes gone, repeated letters squeezed, txt spellings mapped.
    word: String,
    /// Where the word is in the original text (byte offsets into that same text, so always on
    /// character boundaries).
    start: usize,
    end: usize,
    /// Which clause (run of words between punctuation) the word is in.
    clause: usize,
    /// Written with `n't` (`didn't`, `yesn't`): a negation whatever the word.
    nt: bool,
}

/// A text as words and clauses: the one normaliser every parser reads through.
#[derive(Debug, Clone)]
pub struct Words<'a> {
    text: &'a str,
    tokens: Vec<Token>,
    /// The text asks something (`?`).
    question: bool,
}

/// Emoji that carry meaning, each kept as a one-character token.
const MEANINGFUL_EMOJI: &[char] = &[
    '\u{1f44d}', // thumbs up
    '\u{1f44c}', // OK hand
    '\u{2705}',  // check mark button
    '\u{2714}',  // heavy check mark
    '\u{2611}',  // ballot box with check
    '\u{1f44e}', // thumbs down
    '\u{274c}',  // cross mark
    '\u{1f44b}', // waving hand
];

/// Marks that change how the character before them looks, never what it means.
fn is_invisible_modifier(c: char) -> bool {
    matches!(c, '\u{fe00}'..='\u{fe0f}' | '\u{1f3fb}'..='\u{1f3ff}' | '\u{200d}' | '\u{20e3}' | '\u{200b}')
}

fn is_apostrophe(c: char) -> bool {
    matches!(c, '\'' | '\u{2019}' | '\u{2018}' | '`' | '\u{b4}')
}

/// Txt spellings and synonyms, mapped after squeezing (so the left side is squeezed too).
const SPELLINGS: &[(&str, &str)] = &[
    ("pls", "please"),
    ("plz", "please"),
    ("ples", "please"),
    ("thx", "thanks"),
    ("thnx", "thanks"),
    ("thanx", "thanks"),
    ("ta", "thanks"),
    ("txt", "text"),
    ("txts", "texts"),
    ("txting", "texting"),
    ("msg", "message"),
    ("msgs", "messages"),
    ("u", "you"),
    ("ur", "your"),
    ("y", "yes"),
    ("ye", "yes"),
    ("yea", "yes"),
    ("yeah", "yes"),
    ("yeh", "yes"),
    ("yah", "yes"),
    ("ya", "yes"),
    ("yas", "yes"),
    ("yep", "yes"),
    ("yup", "yes"),
    ("yh", "yes"),
    ("yus", "yes"),
    ("aye", "yes"),
    ("n", "no"),
    ("nah", "no"),
    ("naw", "no"),
    ("nope", "no"),
    ("nay", "no"),
    ("ok", "ok"),
    ("okay", "ok"),
    ("okey", "ok"),
    ("oky", "ok"),
    ("k", "ok"),
    ("kk", "ok"),
    ("dun", "done"),
    ("don", "done"),
    ("dne", "done"),
    ("idk", "dunno"),
    ("cba", "dunno"),
];

impl<'a> Words<'a> {
    pub fn new(text: &'a str) -> Self {
        let mut tokens = Vec::new();
        let mut clause = 0;
        let mut question = false;
        // The word being read: its start, end and normalised letters.
        let mut current: Option<(usize, usize, String, bool)> = None;
        let mut chars = text.char_indices().peekable();
        let mut previous: Option<char> = None;
        while let Some((at, c)) = chars.next() {
            let next = chars.peek().map(|(_, n)| *n);
            if is_invisible_modifier(c) {
                continue;
            }
            let in_word = current.is_some();
            let joins_word = in_word
                && next.is_some_and(char::is_alphanumeric)
                && previous.is_some_and(char::is_alphanumeric);
            if c.is_alphanumeric() {
                let (_, end, word, _) = current.get_or_insert((at, at, String::new(), false));
                *end = at + c.len_utf8();
                word.extend(c.to_lowercase());
            } else if is_apostrophe(c) && joins_word {
                // `don't`, `I'm`: the apostrophe is part of the word but not of its spelling.
                if let Some((_, end, word, nt)) = current.as_mut() {
                    *end = at + c.len_utf8();
                    if word.ends_with('n') && next == Some('t') {
                        *nt = true;
                    }
                }
            } else if matches!(c, '-' | '/' | '&' | '.') && joins_word {
                // `Stoke-on-Trent`, `painter/decorator`, `B&Q`, `st.albans` stay one word.
                if let Some((_, end, word, _)) = current.as_mut() {
                    *end = at + c.len_utf8();
                    word.push(c);
                }
            } else {
                if let Some((start, end, word, nt)) = current.take() {
                    tokens.push(Token {
                        word: canonical(&word),
                        start,
                        end,
                        clause,
                        nt,
                    });
                }
                if MEANINGFUL_EMOJI.contains(&c) {
                    let end = at + c.len_utf8();
                    tokens.push(Token {
                        word: c.to_string(),
                        start: at,
                        end,
                        clause,
                        nt: false,
                    });
                } else if !c.is_whitespace() {
                    // Any other punctuation or symbol ends the clause.
                    if c == '?' {
                        question = true;
                    }
                    if tokens.last().is_some_and(|t| t.clause == clause) {
                        clause += 1;
                    }
                } else if c == '\n' && tokens.last().is_some_and(|t| t.clause == clause) {
                    clause += 1;
                }
            }
            previous = Some(c);
        }
        if let Some((start, end, word, nt)) = current.take() {
            tokens.push(Token {
                word: canonical(&word),
                start,
                end,
                clause,
                nt,
            });
        }
        Words {
            text,
            tokens,
            question,
        }
    }

    fn words(&self) -> impl Iterator<Item = &str> {
        self.tokens.iter().map(|t| t.word.as_str())
    }

    fn has(&self, word: &str) -> bool {
        self.words().any(|w| squeezed_eq(word, w))
    }

    fn has_any(&self, words: &[&str]) -> bool {
        self.words().any(|w| among(w, words))
    }

    /// Whether the consecutive words of `phrase` (already normalised) occur.
    fn has_phrase(&self, phrase: &[String]) -> bool {
        !phrase.is_empty()
            && self
                .tokens
                .windows(phrase.len())
                .any(|window| window.iter().zip(phrase).all(|(t, p)| t.word == *p))
    }

    fn is_negation(token: &Token) -> bool {
        token.nt || among(&token.word, NEGATIONS)
    }

    /// A negative word anywhere: "no", "not yet", "yes... actually no", "didn't", "👎".
    fn negated(&self) -> bool {
        self.tokens.iter().any(Self::is_negation)
    }

    /// Which tokens a negation covers: from the negative word to the end of its clause, at most
    /// three words on ("not an iPhone, it's an Android" negates only the iPhone).
    fn negated_tokens(&self) -> Vec<bool> {
        let mut covered = vec![false; self.tokens.len()];
        for (i, token) in self.tokens.iter().enumerate() {
            if Self::is_negation(token) {
                covered[i] = true;
                for (j, later) in self.tokens.iter().enumerate().skip(i + 1).take(3) {
                    if later.clause != token.clause {
                        break;
                    }
                    covered[j] = true;
                }
            }
        }
        covered
    }
}

/// Lower-cased letters with repeats squeezed and txt spellings mapped. Digits are never squeezed
/// ("iPhone 11" is not "iPhone 1").
fn canonical(word: &str) -> String {
    let squeezed = squeeze(word);
    SPELLINGS
        .iter()
        .find(|(from, _)| *from == squeezed)
        .map_or(squeezed, |(_, to)| (*to).to_owned())
}

fn squeeze(word: &str) -> String {
    let mut out = String::with_capacity(word.len());
    let mut last = None;
    for c in word.chars() {
        if Some(c) == last && c.is_alphabetic() {
            continue;
        }
        out.push(c);
        last = Some(c);
    }
    out
}

/// Whether `word` (a normalised token) is one of `list`, written plainly: the list's words are
/// squeezed as tokens are, so `"all"` in a list matches the token for "all" or "alll".
fn among(word: &str, list: &[&str]) -> bool {
    list.iter().any(|entry| squeezed_eq(entry, word))
}

fn squeezed_eq(entry: &str, word: &str) -> bool {
    let mut last = None;
    let mut squeezed = entry.chars().filter(|c| {
        let repeat = Some(*c) == last && c.is_alphabetic();
        last = Some(*c);
        !repeat
    });
    let mut word = word.chars();
    loop {
        match (squeezed.next(), word.next()) {
            (None, None) => return true,
            (Some(a), Some(b)) if a == b => {}
            _ => return false,
        }
    }
}

/// The words of a phrase as the normaliser would give them, for matching.
pub fn phrase(text: &str) -> Vec<String> {
    Words::new(text)
        .tokens
        .into_iter()
        .map(|t| t.word)
        .collect()
}

/// Negative words: any one of these anywhere keeps a reply from being a yes or a done.
const NEGATIONS: &[&str] = &[
    "no",
    "not",
    "never",
    "dont",
    "doesnt",
    "didnt",
    "cant",
    "cannot",
    "wont",
    "isnt",
    "arent",
    "havent",
    "hasnt",
    "hadnt",
    "aint",
    "wasnt",
    "werent",
    "shouldnt",
    "wouldnt",
    "couldnt",
    "nothing",
    "neither",
    "nor",
    "without",
    "\u{1f44e}",
    "\u{274c}",
    "noo",
    "nop",
];

// ------------------------------------------------------------------------------------------------
// Vocabulary (data from flows/vocabulary.toml)

/// Words the parsers need to know that are data, not code: what device a phone is, and what
/// sounds like a trade. Loaded from `flows/vocabulary.toml` and checked by [`crate::flows`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Vocabulary {
    iphone: Vec<Vec<String>>,
    android: Vec<Vec<String>>,
    landline: Vec<Vec<String>>,
    trades: Vec<Vec<String>>,
}

/// Why a vocabulary list was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VocabularyError {
    #[error("`{list}` is empty")]
    EmptyList { list: &'static str },
    #[error("`{list}` has an entry with no letters or digits: {entry:?}")]
    NoWords { list: &'static str, entry: String },
    #[error("`{list}` entries are single words; {entry:?} is not")]
    NotOneWord { list: &'static str, entry: String },
    #[error("`{list}` lists {entry:?} twice")]
    Duplicate { list: &'static str, entry: String },
    #[error("{entry:?} is in both `{first}` and `{second}`: a phone cannot be both")]
    Ambiguous {
        entry: String,
        first: &'static str,
        second: &'static str,
    },
}

impl Vocabulary {
    /// Builds and checks the lists: none empty, every entry has words, none repeated, and no
    /// device word in two device lists.
    pub fn new(
        iphone: &[String],
        android: &[String],
        landline: &[String],
        trades: &[String],
    ) -> Result<Self, VocabularyError> {
        let list = |name: &'static str, entries: &[String]| {
            if entries.is_empty() {
                return Err(VocabularyError::EmptyList { list: name });
            }
            let mut out: Vec<Vec<String>> = Vec::with_capacity(entries.len());
            for entry in entries {
                let words = phrase(entry);
                if words.is_empty() {
                    return Err(VocabularyError::NoWords {
                        list: name,
                        entry: entry.clone(),
                    });
                }
                if out.contains(&words) {
                    return Err(VocabularyError::Duplicate {
                        list: name,
                        entry: entry.clone(),
                    });
                }
                out.push(words);
            }
            Ok(out)
        };
        if let Some(entry) = trades.iter().find(|t| phrase(t).len() > 1) {
            return Err(VocabularyError::NotOneWord {
                list: "trades",
                entry: entry.clone(),
            });
        }
        let vocabulary = Vocabulary {
            iphone: list("iphone", iphone)?,
            android: list("android", android)?,
            landline: list("landline", landline)?,
            trades: list("trades", trades)?,
        };
        let devices = [
            ("iphone", &vocabulary.iphone),
            ("android", &vocabulary.android),
            ("landline", &vocabulary.landline),
        ];
        for (i, (first, words)) in devices.iter().enumerate() {
            for (second, others) in &devices[i + 1..] {
                if let Some(entry) = words.iter().find(|w| others.contains(w)) {
                    return Err(VocabularyError::Ambiguous {
                        entry: entry.join(" "),
                        first,
                        second,
                    });
                }
            }
        }
        Ok(vocabulary)
    }

    fn is_trade_word(&self, word: &str) -> bool {
        let singular = word.strip_suffix('s').unwrap_or(word);
        self.trades.iter().any(|entry| {
            entry.len() == 1
                && (entry[0] == word || entry[0] == singular || near_miss(&entry[0], singular))
        })
    }
}

/// A long word typed with one slip, keeping its first letter ("sumsung" for "samsung"); short
/// words must be exact ("phone" is not "iphone").
fn near_miss(entry: &str, word: &str) -> bool {
    entry.chars().count() >= 6
        && word.chars().count() >= 6
        && entry.chars().next() == word.chars().next()
        && within_one_edit(entry, word)
}

/// One letter added, dropped, changed or two swapped: the typos thumbs make ("plummer", "electrican").
fn within_one_edit(a: &str, b: &str) -> bool {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    if a.len().abs_diff(b.len()) > 1 {
        return false;
    }
    let prefix = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let suffix = a[prefix..]
        .iter()
        .rev()
        .zip(b[prefix..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let (left_a, left_b) = (a.len() - prefix - suffix, b.len() - prefix - suffix);
    match (left_a, left_b) {
        (0, 0) | (1, 0) | (0, 1) | (1, 1) => true,
        // A swap of two neighbours.
        (2, 2) => a[prefix] == b[prefix + 1] && a[prefix + 1] == b[prefix],
        _ => false,
    }
}

// ------------------------------------------------------------------------------------------------
// Yes, done, edit

/// The answer to the summary's "Reply YES to go live".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confirm {
    /// A clear yes: nothing negative, nothing unexplained.
    Yes,
    /// A clear no or not now.
    No,
    /// A yes mixed with something else ("wait a sec yes", "yes?"): ask.
    Unclear,
    /// Not an answer to the question.
    Unreadable,
}

/// Words that say yes on their own.
const YES_WORDS: &[&str] = &[
    "yes",
    "affirmative",
    "course",
    "ok",
    "sure",
    "correct",
    "right",
    "perfect",
    "confirm",
    "confirmed",
    "absolutely",
    "definitely",
    "agreed",
    "exactly",
    "good",
    "great",
    "fine",
    "go",
    "spot",
    "lovely",
    "brilliant",
    "happy",
    "do",
    "\u{1f44d}",
    "\u{1f44c}",
    "\u{2705}",
    "\u{2714}",
    "\u{2611}",
];

/// Words that can sit beside a yes without changing it ("yes please go ahead", "all good thanks").
const YES_COMPANIONS: &[&str] = &[
    "please",
    "sir",
    "buddy",
    "pal",
    "bud",
    "x",
    "xx",
    "xxx",
    "affirmative",
    "course",
    "of",
    "thanks",
    "thank",
    "you",
    "cheers",
    "that",
    "thats",
    "this",
    "it",
    "its",
    "is",
    "all",
    "everything",
    "looks",
    "look",
    "sounds",
    "seems",
    "ahead",
    "live",
    "lets",
    "let",
    "us",
    "for",
    "make",
    "so",
    "and",
    "the",
    "now",
    "then",
    "i",
    "im",
    "am",
    "with",
    "me",
    "to",
    "details",
    "info",
    "on",
    "a",
    "just",
    "very",
    "much",
    "totally",
    "really",
    "cool",
    "nice",
    "awesome",
    "grand",
    "sweet",
    "mate",
    "dokey",
    "thing",
    "fab",
    "excellent",
    "super",
    "ready",
    "went",
    "we",
    "were",
    "are",
    "good",
    "right",
    "correct",
    "great",
];

/// Reads a reply to the summary. Negation wins everywhere: a negative word makes it a no, never a
/// yes. A yes beside words that are not agreement ("wait a sec yes", "yes?") is unclear.
pub fn confirm(text: &str) -> Confirm {
    let words = Words::new(text);
    if words.negated() {
        // "yes... actually no", "ok but not yet": the no wins.
        return Confirm::No;
    }
    if !words.has_any(YES_WORDS) {
        return Confirm::Unreadable;
    }
    let only_agreement = words
        .words()
        .all(|w| among(w, YES_WORDS) || among(w, YES_COMPANIONS));
    if only_agreement && !words.question {
        Confirm::Yes
    } else {
        Confirm::Unclear
    }
}

/// A clear yes to going live.
pub fn is_yes(text: &str) -> bool {
    confirm(text) == Confirm::Yes
}

/// A clear no ("no", "not yet", "nope").
pub fn is_negative(text: &str) -> bool {
    Words::new(text).negated()
}

/// Which answer an owner wants to change at the summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EditField {
    /// Not said which: all the answers again.
    Everything,
    Trade,
    Place,
    BusinessName,
    OwnerName,
    Notify,
}

/// Words that ask for a change whether or not a field is named.
const EDIT_WORDS: &[&str] = &[
    "edit",
    "change",
    "changes",
    "amend",
    "fix",
    "alter",
    "modify",
    "correction",
    "redo",
];
/// Words that say an answer is wrong or should be otherwise; they ask for a change only when they
/// name the answer ("wrong town", "emails instead"), since "I'd rather go live" is no edit.
const WRONG_WORDS: &[&str] = &[
    "wrong",
    "update",
    "switch",
    "instead",
    "rather",
    "prefer",
    "incorrect",
    "mistake",
    "typo",
    "misspelt",
    "misspelled",
];
const BUSINESS_WORDS: &[&str] = &["business", "company", "firm", "shop", "trading", "biz"];
const NOTIFY_WORDS: &[&str] = &[
    "notify",
    "notified",
    "notification",
    "notifications",
    "email",
    "emails",
    "sms",
    "text",
    "texts",
    "contact",
    "alert",
    "alerts",
    "tell",
    "message",
    "messages",
    "missed",
];
const PLACE_WORDS: &[&str] = &[
    "town", "city", "location", "place", "area", "where", "based", "postcode", "county", "village",
    "region", "state", "address",
];
const TRADE_WORDS: &[&str] = &[
    "trade",
    "job",
    "occupation",
    "profession",
    "work",
    "type",
    "industry",
    "service",
    "services",
];

/// EDIT at the summary, and which answer it names ("change the business name", "wrong town").
pub fn edit(text: &str) -> Option<EditField> {
    let words = Words::new(text);
    let negated = words.negated_tokens();
    let live = |list: &[&str]| {
        words
            .tokens
            .iter()
            .zip(&negated)
            .any(|(t, n)| !n && among(&t.word, list))
    };
    let asks = live(EDIT_WORDS);
    let wrong = live(WRONG_WORDS);
    if !asks && !wrong {
        return None;
    }
    let field = if words.has("name") && words.has_any(BUSINESS_WORDS) {
        Some(EditField::BusinessName)
    } else if words.has("name") || words.has("called") {
        Some(EditField::OwnerName)
    } else if words.has_any(NOTIFY_WORDS) {
        Some(EditField::Notify)
    } else if words.has_any(PLACE_WORDS) {
        Some(EditField::Place)
    } else if words.has_any(TRADE_WORDS) {
        Some(EditField::Trade)
    } else {
        None
    };
    match field {
        Some(field) => Some(field),
        // "that's wrong" alone says something is wrong, not what: it is answered, not acted on.
        None if asks => Some(EditField::Everything),
        None => None,
    }
}

/// EDIT or "change" at the summary, whichever answer it names.
pub fn is_edit(text: &str) -> bool {
    edit(text).is_some()
}

/// Words that say the forwarding is set up.
const DONE_WORDS: &[&str] = &[
    "done",
    "did",
    "finished",
    "finish",
    "complete",
    "completed",
    "set",
    "sorted",
    "ready",
    "working",
    "works",
    "worked",
    "dialled",
    "dialed",
    "yes",
    "\u{1f44d}",
    "\u{1f44c}",
    "\u{2705}",
    "\u{2714}",
    "\u{2611}",
];

/// Words that make a done unclear: a question, a later, a problem.
const NOT_YET: &[&str] = &[
    "later", "tomorrow", "soon", "how", "what", "why", "where", "which", "help", "error", "failed",
    "fail", "problem", "issue", "stuck", "but", "will", "gonna", "going", "try", "trying", "wait",
    "hang", "hold", "dunno", "unsure", "maybe",
];

/// The owner says forwarding is set up ("done", "did it", "all set", "✅", "yes I have").
pub fn is_done(text: &str) -> bool {
    let words = Words::new(text);
    !words.negated() && !words.has_any(NOT_YET) && !words.question && words.has_any(DONE_WORDS)
}

/// CALL ME (or TEST): another verification call, please.
pub fn is_call_me(text: &str) -> bool {
    let words = Words::new(text);
    !words.negated()
        && (words.has_phrase(&phrase("call me"))
            || words.has_any(&["call", "test", "retry", "ring"])
            || words.has_phrase(&phrase("try again")))
}

// ------------------------------------------------------------------------------------------------
// S1: trade and place

/// The owner's trade and place, as far as one message gives them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BusinessAnswer {
    TradeAndPlace {
        trade: String,
        place: String,
    },
    /// A trade and no place ("Plumber", "I'm an electrician").
    Trade(String),
    /// A place and no trade ("based in Leeds").
    Place(String),
    /// One thing that could be either ("Chester"): what we already have decides.
    One(String),
    Unreadable,
}

const MAX_TRADE: usize = 60;
const MAX_PLACE: usize = 60;

/// Greeting words, dropped from the start of a clause ("Hi there!", "Good morning,").
const GREETINGS: &[&str] = &[
    "hi",
    "hello",
    "hey",
    "heya",
    "hiya",
    "howdy",
    "yo",
    "hullo",
    "there",
    "good",
    "morning",
    "afternoon",
    "evening",
    "all",
    "folks",
    "greetings",
    "dear",
    "team",
    "\u{1f44b}",
    "so",
    "well",
    "right",
    "um",
    "erm",
];

/// The glue before a trade ("I'm a", "we're", "I do", "I run a"), dropped.
const INTRO: &[&str] = &[
    "i",
    "im",
    "am",
    "we",
    "were",
    "are",
    "a",
    "an",
    "my",
    "our",
    "do",
    "run",
    "own",
    "is",
    "its",
    "it",
    "work",
    "as",
    "and",
    "just",
    "also",
    "mainly",
    "basically",
];

/// Words that close a trade or place and belong to neither ("Tiler from Norwich here").
const TAIL: &[&str] = &[
    "here",
    "area",
    "areas",
    "and",
    "please",
    "thanks",
    "cheers",
    "surrounding",
    "surrounds",
    "mainly",
    "mostly",
    "too",
    "also",
    "\u{1f44d}",
    "\u{1f44c}",
    "\u{2705}",
    "\u{2714}",
    "\u{2611}",
];

/// A clause with any of these is not about the trade or place ("saw your ad", "how does this
/// work?", "hmm", "EDIT"). Negations count too.
const NOISE: &[&str] = &[
    "saw",
    "seen",
    "see",
    "ad",
    "ads",
    "advert",
    "adverts",
    "advertisement",
    "flyer",
    "leaflet",
    "facebook",
    "instagram",
    "google",
    "online",
    "interested",
    "interest",
    "info",
    "information",
    "details",
    "how",
    "what",
    "whats",
    "why",
    "who",
    "when",
    "sign",
    "signup",
    "try",
    "trying",
    "want",
    "wanted",
    "like",
    "told",
    "mate",
    "friend",
    "recommended",
    "number",
    "question",
    "cost",
    "price",
    "pricing",
    "you",
    "your",
    "yours",
    "test",
    "testing",
    "sms",
    "text",
    "edit",
    "email",
    "help",
    "stop",
    "yes",
    "ok",
    "done",
    "thanks",
    "thank",
    "sorry",
    "hmm",
    "hm",
    "hmmm",
    "um",
    "umm",
    "erm",
    "er",
    "uh",
    "huh",
    "lol",
    "dunno",
    "maybe",
    "call",
    "mean",
    "x",
    "xx",
    "xxx",
    "please",
    "cheers",
    "nothing",
    "wait",
    "can",
    "could",
    "would",
];

/// Words that open a place ("in", "based out of", "serving", "and I cover").
const PLACE_OPENERS: &[&[&str]] = &[
    &["all", "over"],
    &["out", "of"],
    &["in"],
    &["round"],
    &["around"],
    &["near"],
    &["from"],
    &["across"],
    &["throughout"],
    &["covering"],
    &["cover"],
    &["covers"],
    &["serving"],
    &["serve"],
    &["serves"],
    &["servicing"],
    // Last, so "based in" opens at "in" with "based" as its lead; "plumber based Leeds" still opens.
    &["based"],
];

/// Opener words that may follow another opener ("based in", "based out of") and belong to it.
const OPENER_TAIL: &[&str] = &[
    "in", "at", "near", "around", "round", "out", "of", "from", "across",
];

/// Words that may come before a place opener and belong to it ("and I work in", "based near").
const OPENER_LEAD: &[&str] = &[
    "and",
    "who",
    "i",
    "we",
    "im",
    "were",
    "work",
    "working",
    "works",
    "based",
    "am",
    "are",
    "live",
    "operate",
    "operating",
    "mainly",
    "mostly",
    "usually",
    "also",
    "just",
    "located",
    "trade",
    "trading",
    "is",
    "its",
];

/// Reads "Plumber in Leeds", "Leeds. Plumber", "I do plastering round Newcastle", "We're roofers
/// in Milton Keynes", "Hi! I'm an electrician and I work in Bath", "Electrical contractor serving
/// Denver CO", and the first text "Hi, I'm a plumber in Leeds, saw your ad".
pub fn business(text: &str, vocabulary: &Vocabulary) -> BusinessAnswer {
    read_business(text, vocabulary, false)
}

/// Like [`business`], for an owner whose town we already have: a reply without an opener is all
/// trade ("Dog grooming" is not grooming in Dog).
pub fn business_knowing_place(text: &str, vocabulary: &Vocabulary) -> BusinessAnswer {
    read_business(text, vocabulary, true)
}

fn read_business(text: &str, vocabulary: &Vocabulary, place_known: bool) -> BusinessAnswer {
    let words = Words::new(text);
    let clauses = clauses(&words);
    let mut trade: Option<(usize, usize)> = None;
    let mut place: Option<(usize, usize)> = None;
    // Clauses that said one thing we cannot yet place as trade or town.
    let mut unplaced: Vec<(usize, usize)> = Vec::new();
    let mut place_clause = None;
    // The clauses about the business, each with its place among all clauses.
    let contents: Vec<(usize, &[Token])> = clauses
        .iter()
        .enumerate()
        .filter_map(|(index, clause)| {
            let clause = trim_tail(strip_greeting(clause));
            if clause.is_empty() || clause.iter().any(|t| among(&t.word, NOISE) || t.nt) {
                return None;
            }
            let clause = strip_intro(clause);
            (!clause.is_empty()).then_some((index, clause))
        })
        .collect();
    for (position, &(index, clause)) in contents.iter().enumerate() {
        // Only the last clause about the business may hold both trade and place without an
        // opener: in "Lawn care, Omaha NE" the first clause is all trade.
        let may_split = position + 1 == contents.len() && !place_known;
        match find_opener(clause) {
            Some((lead, after)) => {
                let before = trim_tail(&clause[..lead]);
                let after = trim_tail(&clause[after..]);
                if !before.is_empty() && trade.is_none() {
                    trade = Some(span(before));
                }
                if !after.is_empty() && place.is_none() {
                    place = Some(span(after));
                    place_clause = Some(index);
                }
            }
            None => {
                let is_trade = |t: &Token| vocabulary.is_trade_word(&t.word);
                let first = clause.iter().position(is_trade);
                let last = clause.iter().rposition(is_trade);
                match (first, last) {
                    (Some(first), Some(last)) => {
                        // Words after the trade are the place ("Plumber Leeds"); with none after,
                        // words before it are ("York builder"), unless they describe the trade.
                        let after = &clause[last + 1..];
                        let (trade_span, place_span) = if !after.is_empty() && may_split {
                            (&clause[..=last], after)
                        } else if first > 0 && clause.len() - first <= 2 && first <= 3 && may_split
                        {
                            (&clause[first..], &clause[..first])
                        } else {
                            (clause, &clause[..0])
                        };
                        if trade.is_none() {
                            trade = Some(span(trade_span));
                        }
                        if !place_span.is_empty() && place.is_none() {
                            place = Some(span(place_span));
                            place_clause = Some(index);
                        }
                    }
                    _ => {
                        // A place continues over a short clause after it ("Austin, TX").
                        if let (Some(at), Some((start, _))) = (place_clause, place)
                            && at + 1 == index
                            && clause.len() <= 2
                            && unplaced.is_empty()
                        {
                            place = Some((start, clause[clause.len() - 1].end));
                            place_clause = Some(index);
                        } else {
                            unplaced.push(span(clause));
                        }
                    }
                }
            }
        }
    }
    let text_of = |(start, end): (usize, usize)| words.text[start..end].to_owned();
    // A lone unplaced clause fills whichever of trade and place the rest of the message left out.
    match (trade, place, unplaced.as_slice()) {
        (Some(_), None, [one, ..]) => place = Some(*one),
        (None, Some(_), [one, ..]) => trade = Some(*one),
        (None, None, [first, second, ..]) => {
            trade = Some(*first);
            place = Some(*second);
        }
        _ => {}
    }
    let trade = trade.map(text_of).map(|t| fold_spaces(&t));
    let place = place.map(text_of).map(|p| fold_spaces(&p));
    let readable = |s: &String, max: usize| {
        !s.is_empty() && s.chars().count() <= max && s.chars().any(char::is_alphabetic)
    };
    let trade = trade.filter(|t| readable(t, MAX_TRADE));
    let place = place.filter(|p| readable(p, MAX_PLACE));
    match (trade, place) {
        (Some(trade), Some(place)) => BusinessAnswer::TradeAndPlace {
            trade: capitalise_first(&trade),
            place: title_case(&place),
        },
        (Some(trade), None) => BusinessAnswer::Trade(capitalise_first(&trade)),
        (None, Some(place)) => BusinessAnswer::Place(title_case(&place)),
        (None, None) => match unplaced.as_slice() {
            [one] => {
                let one = fold_spaces(&text_of(*one));
                if readable(&one, MAX_TRADE.min(MAX_PLACE)) && looks_like_a_word(&one) {
                    BusinessAnswer::One(one)
                } else {
                    BusinessAnswer::Unreadable
                }
            }
            _ => BusinessAnswer::Unreadable,
        },
    }
}

/// The tokens of each clause, in order.
fn clauses<'w>(words: &'w Words<'_>) -> Vec<&'w [Token]> {
    let mut out = Vec::new();
    let mut start = 0;
    for i in 1..=words.tokens.len() {
        if i == words.tokens.len() || words.tokens[i].clause != words.tokens[start].clause {
            out.push(&words.tokens[start..i]);
            start = i;
        }
    }
    out
}

fn strip_greeting(clause: &[Token]) -> &[Token] {
    let skip = clause
        .iter()
        .take_while(|t| among(&t.word, GREETINGS))
        .count();
    &clause[skip..]
}

fn strip_intro(clause: &[Token]) -> &[Token] {
    let skip = clause.iter().take_while(|t| among(&t.word, INTRO)).count();
    &clause[skip..]
}

fn trim_tail(clause: &[Token]) -> &[Token] {
    let keep = clause.len()
        - clause
            .iter()
            .rev()
            .take_while(|t| among(&t.word, TAIL))
            .count();
    &clause[..keep]
}

/// Where a place opener starts (with the glue before it) and where the place after it starts.
fn find_opener(clause: &[Token]) -> Option<(usize, usize)> {
    for at in 0..clause.len() {
        for opener in PLACE_OPENERS {
            let fits = clause.len() >= at + opener.len()
                && clause[at..at + opener.len()]
                    .iter()
                    .zip(opener.iter())
                    .all(|(t, w)| squeezed_eq(w, &t.word));
            if fits {
                let lead = clause[..at]
                    .iter()
                    .rev()
                    .take_while(|t| among(&t.word, OPENER_LEAD))
                    .count();
                let tail = clause[at + opener.len()..]
                    .iter()
                    .take_while(|t| among(&t.word, OPENER_TAIL))
                    .count();
                return Some((at - lead, at + opener.len() + tail));
            }
        }
    }
    None
}

fn span(tokens: &[Token]) -> (usize, usize) {
    (tokens[0].start, tokens[tokens.len() - 1].end)
}

fn fold_spaces(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Letters with a vowel, not a keyboard mash of consonants.
fn looks_like_a_word(s: &str) -> bool {
    s.split_whitespace().all(|word| {
        let lower = word.to_lowercase();
        let letters = lower.chars().filter(|c| c.is_alphabetic()).count();
        letters >= 2
            && (lower.chars().any(|c| "aeiouy".contains(c)) || !lower.is_ascii())
            && !lower.chars().collect::<Vec<_>>().windows(4).any(|w| {
                w.iter()
                    .all(|c| c.is_ascii_alphabetic() && !"aeiouy".contains(*c))
            })
    })
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
    let folded = fold_spaces(text);
    let len = folded.chars().count();
    (1..=max).contains(&len).then_some(folded)
}

// ------------------------------------------------------------------------------------------------
// S4: how to tell them

/// How the owner wants to hear about missed calls, as far as the reply says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotifyAnswer {
    Chosen(Notify),
    /// "email" without an address: ask for it.
    EmailWithoutAddress,
    Unreadable,
}

const SMS_WORDS: &[&str] = &[
    "sms", "text", "texts", "texting", "texted", "message", "messages", "smss", "imessage",
    "whatsapp",
];

/// SMS ("texts please", "just txt me", "by text message pls"), or an email address anywhere in
/// the message ("email me at jo@example.com").
pub fn notify_answer(text: &str) -> NotifyAnswer {
    if let Some(email) = text
        .split_whitespace()
        .map(|word| word.trim_matches(|c: char| "<>()[],;:'\"!?".contains(c)))
        .map(|word| word.trim_end_matches('.'))
        .find(|word| is_email(word))
    {
        return NotifyAnswer::Chosen(Notify::Email(email.to_owned()));
    }
    let words = Words::new(text);
    let negated = words.negated_tokens();
    let sms = words
        .tokens
        .iter()
        .zip(&negated)
        .any(|(t, n)| !n && among(&t.word, SMS_WORDS));
    let email = words
        .tokens
        .iter()
        .zip(&negated)
        .any(|(t, n)| !n && among(&t.word, &["email", "emails", "mail", "emailed"]));
    let unsure = words.has_any(&["what", "how", "why", "either", "dunno", "whatever"]);
    match (sms, email) {
        (true, false) if !unsure => NotifyAnswer::Chosen(Notify::Sms),
        (false, true) if !unsure => NotifyAnswer::EmailWithoutAddress,
        _ => NotifyAnswer::Unreadable,
    }
}

/// SMS, or an email address anywhere in the message.
pub fn notify(text: &str) -> Option<Notify> {
    match notify_answer(text) {
        NotifyAnswer::Chosen(notify) => Some(notify),
        _ => None,
    }
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

// ------------------------------------------------------------------------------------------------
// S6: phone type

/// Which phone the business line is on, as far as the reply says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    Known(PhoneType),
    /// A mobile, but not which kind; or two kinds named: ask which.
    Unclear,
    Unreadable,
}

/// 1 iPhone, 2 Android, 3 Landline: the digit ("Option 2", "2️⃣"), the word, a brand or model
/// ("Samsung Galaxy S23", "iPhone 15 Pro"), or a sentence ("it's a landline", "office phone, not a
/// mobile"). The brands and words are data: `flows/vocabulary.toml`.
pub fn device(text: &str, vocabulary: &Vocabulary) -> Device {
    let words = Words::new(text);
    let negated = words.negated_tokens();
    let mut found: Vec<PhoneType> = Vec::new();
    let mut note = |kind: PhoneType| {
        if !found.contains(&kind) {
            found.push(kind);
        }
    };
    let lists = [
        (PhoneType::Iphone, &vocabulary.iphone, "1"),
        (PhoneType::Android, &vocabulary.android, "2"),
        (PhoneType::Landline, &vocabulary.landline, "3"),
    ];
    for (at, token) in words.tokens.iter().enumerate() {
        if negated[at] {
            continue;
        }
        for (kind, list, digit) in &lists {
            let named = list.iter().any(|entry| {
                words.tokens.len() >= at + entry.len()
                    && words.tokens[at..at + entry.len()]
                        .iter()
                        .zip(entry)
                        .all(|(t, w)| t.word == *w || near_miss(w, &t.word))
            });
            if named || token.word == *digit {
                note(*kind);
            }
        }
    }
    let mobile = words
        .tokens
        .iter()
        .zip(&negated)
        .any(|(t, n)| !n && among(&t.word, &["mobile", "cell", "cellphone", "smartphone"]));
    match found.as_slice() {
        [kind] => Device::Known(*kind),
        [] if mobile => Device::Unclear,
        [] => Device::Unreadable,
        _ => Device::Unclear,
    }
}

/// 1 iPhone, 2 Android, 3 Landline, when the reply says exactly one.
pub fn phone_type(text: &str, vocabulary: &Vocabulary) -> Option<PhoneType> {
    match device(text, vocabulary) {
        Device::Known(kind) => Some(kind),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocabulary() -> Vocabulary {
        crate::flows::Flows::embedded()
            .expect("flows are valid")
            .catalog(crate::domain::Locale::EnGb)
            .vocabulary()
            .clone()
    }

    fn both(trade: &str, place: &str) -> BusinessAnswer {
        BusinessAnswer::TradeAndPlace {
            trade: trade.into(),
            place: place.into(),
        }
    }

    #[test]
    fn reads_trade_and_place_in_the_ways_owners_write_them() {
        let v = vocabulary();
        assert_eq!(business("Plumber in Leeds", &v), both("Plumber", "Leeds"));
        assert_eq!(business("plumber, leeds", &v), both("Plumber", "Leeds"));
        assert_eq!(
            business("Electrician - Manchester", &v),
            both("Electrician", "Manchester")
        );
        assert_eq!(
            business("I'm a roofer based in Bristol", &v),
            both("Roofer", "Bristol")
        );
        assert_eq!(
            business("gas engineer in newcastle upon tyne", &v),
            both("Gas engineer", "Newcastle Upon Tyne")
        );
        assert_eq!(
            business("Plumber in Austin, TX", &v),
            both("Plumber", "Austin, TX")
        );
        assert_eq!(
            business("Plumber", &v),
            BusinessAnswer::Trade("Plumber".into())
        );
        assert_eq!(
            business("plumber,", &v),
            BusinessAnswer::Trade("Plumber".into())
        );
        assert_eq!(business("???", &v), BusinessAnswer::Unreadable);
        assert_eq!(business("   ", &v), BusinessAnswer::Unreadable);
        assert_eq!(
            business("in Leeds", &v),
            BusinessAnswer::Place("Leeds".into())
        );
    }

    #[test]
    fn word_order_and_glue_vary() {
        let v = vocabulary();
        assert_eq!(business("Plumber Leeds", &v), both("Plumber", "Leeds"));
        assert_eq!(business("Leeds. Plumber", &v), both("Plumber", "Leeds"));
        assert_eq!(
            business("I do plastering round Newcastle", &v),
            both("Plastering", "Newcastle")
        );
        assert_eq!(
            business("We're roofers in Milton Keynes", &v),
            both("Roofers", "Milton Keynes")
        );
        assert_eq!(
            business("Hi! I'm an electrician and I work in Bath", &v),
            both("Electrician", "Bath")
        );
        assert_eq!(
            business("Electrical contractor serving Denver CO", &v),
            both("Electrical contractor", "Denver CO")
        );
        assert_eq!(
            business("Hi, I'm a plumber in Leeds, saw your ad", &v),
            both("Plumber", "Leeds")
        );
    }

    #[test]
    fn with_the_town_known_a_reply_without_an_opener_is_all_trade() {
        let v = vocabulary();
        assert_eq!(
            business_knowing_place("Dog grooming", &v),
            BusinessAnswer::Trade("Dog grooming".into())
        );
    }

    #[test]
    fn filler_and_commands_are_neither_trade_nor_town() {
        let v = vocabulary();
        for nonsense in [
            "hmm", "x", "SMS", "EDIT", "ok", "yes", "lol", "?", "123", "Hi",
        ] {
            assert_eq!(
                business(nonsense, &v),
                BusinessAnswer::Unreadable,
                "{nonsense:?}"
            );
        }
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
            "Yes, go live",
            "yesss",
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
            "yes... actually no",
            "ok but not yet",
            "yesn't",
        ] {
            assert!(!is_yes(no), "{no:?} should not be a yes");
        }
        assert_eq!(confirm("wait a sec yes"), Confirm::Unclear);
        assert_eq!(confirm("yes?"), Confirm::Unclear);
        assert_eq!(confirm("not yet"), Confirm::No);
    }

    #[test]
    fn an_edit_names_the_answer_to_change() {
        assert_eq!(edit("EDIT"), Some(EditField::Everything));
        assert_eq!(edit("edit pls"), Some(EditField::Everything));
        assert_eq!(
            edit("I need to change the business name"),
            Some(EditField::BusinessName)
        );
        assert_eq!(edit("change my name"), Some(EditField::OwnerName));
        assert_eq!(edit("wrong town"), Some(EditField::Place));
        assert_eq!(edit("change my trade"), Some(EditField::Trade));
        assert_eq!(edit("change how you notify me"), Some(EditField::Notify));
        assert_eq!(edit("that's wrong"), None);
        assert_eq!(edit("don't change anything"), None);
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
        assert_eq!(notify("just txt me"), Some(Notify::Sms));
        assert_eq!(
            notify("email me at jo@smith-plumbing.co.uk."),
            Some(Notify::Email("jo@smith-plumbing.co.uk".into()))
        );
        assert_eq!(notify("jo@"), None);
        assert_eq!(notify("email please"), None);
        assert_eq!(
            notify_answer("email please"),
            NotifyAnswer::EmailWithoutAddress
        );
        assert_eq!(notify("a@b"), None);
    }

    #[test]
    fn phone_type_takes_digit_word_brand_or_sentence() {
        let v = vocabulary();
        assert_eq!(phone_type("1", &v), Some(PhoneType::Iphone));
        assert_eq!(phone_type("Android.", &v), Some(PhoneType::Android));
        assert_eq!(phone_type("landline", &v), Some(PhoneType::Landline));
        assert_eq!(phone_type("iPhone 11", &v), Some(PhoneType::Iphone));
        assert_eq!(
            phone_type("Samsung Galaxy S23", &v),
            Some(PhoneType::Android)
        );
        assert_eq!(
            phone_type("office phone, not a mobile", &v),
            Some(PhoneType::Landline)
        );
        assert_eq!(
            phone_type("2\u{fe0f}\u{20e3}", &v),
            Some(PhoneType::Android)
        );
        assert_eq!(phone_type("4", &v), None);
        assert_eq!(device("not an iphone", &v), Device::Unreadable);
        assert_eq!(device("mobile", &v), Device::Unclear);
        assert_eq!(device("iphone or android", &v), Device::Unclear);
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
        assert!(is_done("did it"));
        assert!(is_done("\u{1f44d}\u{1f3fd}"));
        assert!(!is_done("not done"));
        assert!(!is_done("haven't done it"));
        assert!(is_call_me("CALL ME"));
        assert!(is_call_me("test"));
    }

    #[test]
    fn the_normaliser_folds_case_squeezes_repeats_and_maps_txt_spellings() {
        assert_eq!(phrase("YESSS pls"), ["yes", "please"]);
        assert_eq!(phrase("Don\u{2019}t"), ["dont"]);
        assert_eq!(phrase("doneee \u{1f44d}\u{1f3fd}"), ["done", "\u{1f44d}"]);
        assert_eq!(phrase("iPhone 11"), ["iphone", "11"]);
        assert!(Words::new("didn't").negated());
    }

    #[test]
    fn a_letter_that_lowercases_shorter_does_not_panic() {
        let v = vocabulary();
        // The Kelvin sign is three bytes; its lowercase `k` is one.
        assert!(matches!(
            business("\u{212A}itchen fitter in Leeds", &v),
            BusinessAnswer::TradeAndPlace { .. }
        ));
        assert!(matches!(
            business("I'm a plumber in \u{212A}ettering", &v),
            BusinessAnswer::TradeAndPlace { .. }
        ));
    }

    proptest::proptest! {
        #[test]
        fn no_text_panics_any_parser(text in "\\PC*|[\u{212A}\u{130}\u{1E9E}a-zA-Z ,.'-]{0,40}") {
            let v = vocabulary();
            let _ = keyword(&text, false);
            let _ = keyword(&text, true);
            let _ = is_negative(&text);
            let _ = confirm(&text);
            let _ = edit(&text);
            let _ = is_done(&text);
            let _ = is_call_me(&text);
            let _ = business(&text, &v);
            let _ = capitalise_first(&text);
            let _ = title_case(&text);
            let _ = bounded_text(&text, 80);
            let _ = notify_answer(&text);
            let _ = device(&text, &v);
        }
    }
}
