//! Domain types shared by every layer: parsed once at the edge, trusted everywhere after.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A phone number in E.164 form (`+` then up to 15 digits) that libphonenumber's metadata knows:
/// a country code in use and a length possible there (see [`PhoneNumber::parse`]).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct PhoneNumber(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an E.164 phone number of a known country (expected e.g. +447700900123)")]
pub struct InvalidPhoneNumber;

impl PhoneNumber {
    /// Accepts `+` and digits only (the form we store and dial), for a number libphonenumber
    /// either calls valid or, failing that, places in a known country with a possible length.
    ///
    /// Why not `is_valid` alone: the ranges set aside for drama and documentation, which every
    /// test and fixture uses (Ofcom's 07700 900000 to 900999), are deliberately not valid numbers
    /// to libphonenumber. A known country and a possible length still refuse what matters: `+44`,
    /// `+1234`, country codes nobody uses, numbers too short or too long for their country.
    pub fn parse(raw: &str) -> Result<Self, InvalidPhoneNumber> {
        let raw = raw.trim();
        if e164_shaped(raw) && known_number(raw) {
            Ok(Self(raw.to_owned()))
        } else {
            Err(InvalidPhoneNumber)
        }
    }

    /// A number we stored, which [`PhoneNumber::parse`] accepted on its way in: its shape is
    /// checked (so a row someone edited by hand is still refused), not libphonenumber's metadata
    /// again. That lookup is the costliest thing an event does outside the database (its patterns
    /// are regular expressions, cached under their own text), and rows carry several numbers.
    pub fn from_stored(raw: &str) -> Result<Self, InvalidPhoneNumber> {
        if e164_shaped(raw) {
            Ok(Self(raw.to_owned()))
        } else {
            Err(InvalidPhoneNumber)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The form safe for logs and lists: `+44*******123`.
    pub fn masked(&self) -> String {
        mask_phone(&self.0)
    }

    pub fn country(&self) -> Country {
        Country::of(self)
    }

    /// The NANP area code (`+1 415 ...` gives `415`); other countries' numbers carry none we use.
    pub fn area_code(&self) -> Option<&str> {
        match self.country() {
            Country::Us => self.0.get(2..5),
            _ => None,
        }
    }

    /// The number as people write it in its own country: `07700 900123`, `(512) 555-0142`. For
    /// reading only; codes to dial keep [`PhoneNumber::as_str`] or [`PhoneNumber::national`].
    pub fn for_people(&self) -> String {
        use std::fmt::Write;
        let mut shown = String::new();
        let formatted = phonenumber::parse(None, &self.0).is_ok_and(|number| {
            // The formatter reports an unknown country as an error, never a panic here.
            write!(
                shown,
                "{}",
                number.format().mode(phonenumber::Mode::National)
            )
            .is_ok()
        });
        if formatted { shown } else { self.0.clone() }
    }

    /// The number as dialled inside its own country, which some forwarding codes want.
    pub fn national(&self) -> String {
        match self.country() {
            Country::Us => self.0[2..].to_owned(),
            Country::Gb => format!("0{}", &self.0[3..]),
            Country::Other => self.0.clone(),
        }
    }
}

/// `+` then 2 to 15 digits, the first not 0.
fn e164_shaped(raw: &str) -> bool {
    raw.strip_prefix('+').is_some_and(|digits| {
        (2..=15).contains(&digits.len())
            && digits.bytes().all(|b| b.is_ascii_digit())
            && !digits.starts_with('0')
    })
}

/// See [`PhoneNumber::parse`]. Remembered per number: libphonenumber's answer cannot change while
/// the process runs, and asking it costs more than anything else an event does outside the
/// database (its patterns are regular expressions looked up by their text). Every text names our
/// own number and a sender who usually texted before.
fn known_number(e164: &str) -> bool {
    use std::collections::HashMap;
    use std::sync::Mutex;
    /// Enough for every number busy at once; a full memory is forgotten, not grown.
    const REMEMBERED: usize = 4096;
    static KNOWN: Mutex<Option<HashMap<Box<str>, bool>>> = Mutex::new(None);
    if let Some(answer) = KNOWN
        .lock()
        .ok()
        .and_then(|known| known.as_ref()?.get(e164).copied())
    {
        return answer;
    }
    let answer = ask_libphonenumber(e164);
    if let Ok(mut known) = KNOWN.lock() {
        let known = known.get_or_insert_with(HashMap::new);
        if known.len() >= REMEMBERED {
            known.clear();
        }
        known.insert(e164.into(), answer);
    }
    answer
}

fn ask_libphonenumber(e164: &str) -> bool {
    let Ok(number) = phonenumber::parse(None, e164) else {
        return false;
    };
    if number.is_valid() {
        return true;
    }
    // The country's own metadata, not the region's: an invalid number matches no region's
    // patterns, so libphonenumber cannot tell which of a code's regions (GB, GG, IM, JE) it is in.
    let Ok(length) = u16::try_from(number.national().to_string().len()) else {
        return false;
    };
    phonenumber::metadata::DATABASE
        .by_code(&number.code().value())
        .is_some_and(|regions| {
            regions.iter().any(|region| {
                let kinds = region.descriptors();
                // The crate keeps possible lengths per kind of number, not on the general one.
                [
                    Some(kinds.general()),
                    kinds.fixed_line(),
                    kinds.mobile(),
                    kinds.toll_free(),
                    kinds.premium_rate(),
                    kinds.shared_cost(),
                    kinds.personal_number(),
                    kinds.voip(),
                    kinds.pager(),
                    kinds.uan(),
                    kinds.voicemail(),
                ]
                .into_iter()
                .flatten()
                .any(|kind| kind.possible_length().contains(&length))
            })
        })
}

impl fmt::Display for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Debug output masks the number, so a stray `?` in a log line cannot leak it.
impl fmt::Debug for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PhoneNumber({})", self.masked())
    }
}

impl<'de> Deserialize<'de> for PhoneNumber {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        PhoneNumber::parse(&raw).map_err(|e| serde::de::Error::custom(format!("{raw:?}: {e}")))
    }
}

impl std::str::FromStr for PhoneNumber {
    type Err = InvalidPhoneNumber;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Masks any caller id, E.164 or not: keeps the first three and last three characters.
pub fn mask_phone(raw: &str) -> String {
    let chars: Vec<char> = raw.chars().collect();
    if chars.len() <= 6 {
        return "*".repeat(chars.len());
    }
    let head: String = chars[..3].iter().collect();
    let tail: String = chars[chars.len() - 3..].iter().collect();
    format!("{head}{}{tail}", "*".repeat(chars.len() - 6))
}

/// Masks an email address for logs and lists: `j***@example.com`.
pub fn mask_email(raw: &str) -> String {
    match raw.split_once('@') {
        Some((local, domain)) => {
            let first: String = local.chars().take(1).collect();
            format!("{first}***@{domain}")
        }
        None => "***".to_owned(),
    }
}

/// Masks what may identify a person in free text we did not write (a provider's error message, a
/// response body): every email address as [`mask_email`], and every phone-like run of digits (7 or
/// more, an optional leading `+`, up to two spaces, dots, dashes or brackets between digits) as
/// [`mask_phone`]. Error codes and short numbers are kept, so the text still says what went wrong.
pub fn mask_pii(text: &str) -> String {
    mask_phone_runs(&mask_emails(text))
}

fn mask_emails(text: &str) -> String {
    fn local(c: char) -> bool {
        c.is_alphanumeric() || "._%+-".contains(c)
    }
    fn domain(c: char) -> bool {
        c.is_alphanumeric() || ".-".contains(c)
    }
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        if chars[i] != '@' {
            out.push(chars[i]);
            i += 1;
            continue;
        }
        // The local part was copied already: take it back off `out`.
        let local_len = chars[..i].iter().rev().take_while(|c| local(**c)).count();
        let domain_len = chars[i + 1..].iter().take_while(|c| domain(**c)).count();
        let host: String = chars[i + 1..i + 1 + domain_len].iter().collect();
        let host = host.trim_end_matches('.');
        if local_len == 0 || !host.contains('.') {
            out.push('@');
            i += 1;
            continue;
        }
        let address: String = chars[i - local_len..i].iter().collect();
        for _ in 0..local_len {
            out.pop();
        }
        out.push_str(&mask_email(&format!("{address}@{host}")));
        i += 1 + host.chars().count();
    }
    out
}

fn mask_phone_runs(text: &str) -> String {
    const SEPARATORS: &str = " .-()";
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        let starts = chars[i].is_ascii_digit()
            || (chars[i] == '+' && chars.get(i + 1).is_some_and(char::is_ascii_digit));
        // A run starts at a digit not glued to a letter or digit before it (so ids stay whole).
        let glued = i > 0 && chars[i - 1].is_alphanumeric();
        if !starts || glued {
            out.push(chars[i]);
            i += 1;
            continue;
        }
        // The run: digits, with one or two separators only between two digits.
        let mut end = i + 1;
        let mut digits = usize::from(chars[i].is_ascii_digit());
        while end < chars.len() {
            if chars[end].is_ascii_digit() {
                digits += 1;
                end += 1;
            } else if let Some(gap) = (1..=2).find(|&gap| {
                chars[end..].len() > gap
                    && chars[end..end + gap]
                        .iter()
                        .all(|c| SEPARATORS.contains(*c))
                    && chars[end + gap].is_ascii_digit()
            }) {
                // `) ` in `(415) 555-0123`: at most two separators in a row.
                end += gap;
            } else {
                break;
            }
        }
        let run: String = chars[i..end].iter().collect();
        if digits >= 7 {
            let compact: String = run
                .chars()
                .filter(|c| c.is_ascii_digit() || *c == '+')
                .collect();
            out.push_str(&mask_phone(&compact));
        } else {
            out.push_str(&run);
        }
        i = end;
    }
    out
}

/// The countries we sell numbers in; everything else is `Other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Country {
    #[serde(rename = "GB")]
    Gb,
    #[serde(rename = "US")]
    Us,
    #[serde(rename = "XX")]
    Other,
}

impl Country {
    pub fn of(phone: &PhoneNumber) -> Self {
        let s = phone.as_str();
        if s.starts_with("+44") {
            Country::Gb
        } else if s.starts_with("+1") {
            Country::Us
        } else {
            Country::Other
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            Country::Gb => "GB",
            Country::Us => "US",
            Country::Other => "XX",
        }
    }

    pub fn from_code(code: &str) -> Option<Self> {
        match code {
            "GB" => Some(Country::Gb),
            "US" => Some(Country::Us),
            "XX" => Some(Country::Other),
            _ => None,
        }
    }
}

/// The language the bot speaks to an owner, chosen by their number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Locale {
    EnGb,
    EnUs,
}

impl Locale {
    pub const ALL: [Locale; 2] = [Locale::EnGb, Locale::EnUs];

    /// en-US for +1 numbers, en-GB for +44 and everyone else.
    pub fn for_phone(phone: &PhoneNumber) -> Self {
        match phone.country() {
            Country::Us => Locale::EnUs,
            _ => Locale::EnGb,
        }
    }

    pub fn tag(self) -> &'static str {
        match self {
            Locale::EnGb => "en-GB",
            Locale::EnUs => "en-US",
        }
    }

    pub fn from_tag(tag: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|l| l.tag() == tag)
    }
}

/// Our id for an owner; also the Stripe `client_reference_id`, so it sticks to `[A-Za-z0-9_-]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OwnerId(String);

impl OwnerId {
    pub fn new(raw: impl Into<String>) -> Self {
        Self(raw.into())
    }

    /// Accepts only what we could have issued, so a forged Stripe payload cannot smuggle SQL or markup.
    pub fn parse(raw: &str) -> Option<Self> {
        let ok = !raw.is_empty()
            && raw.len() <= 64
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        ok.then(|| Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for OwnerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How an owner wants to hear about missed calls. Stored as `sms` or the email address itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notify {
    Sms,
    Email(String),
}

impl Notify {
    pub fn to_stored(&self) -> String {
        match self {
            Notify::Sms => "sms".to_owned(),
            Notify::Email(address) => address.clone(),
        }
    }

    pub fn from_stored(raw: &str) -> Self {
        if raw == "sms" {
            Notify::Sms
        } else {
            Notify::Email(raw.to_owned())
        }
    }
}

/// Which phone the business line is on; it decides the forwarding instructions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PhoneType {
    Iphone,
    Android,
    Landline,
}

impl PhoneType {
    pub fn as_str(self) -> &'static str {
        match self {
            PhoneType::Iphone => "iphone",
            PhoneType::Android => "android",
            PhoneType::Landline => "landline",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "iphone" => Some(PhoneType::Iphone),
            "android" => Some(PhoneType::Android),
            "landline" => Some(PhoneType::Landline),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_e164_and_rejects_everything_else() {
        assert!(PhoneNumber::parse("+447700900123").is_ok());
        assert!(PhoneNumber::parse("+14155550123").is_ok());
        for bad in [
            "",
            "+",
            "447700900123",
            "+0447700900123",
            "+44 7700 900123",
            "+1234567890123456",
            "+4",
            "anonymous",
            // Shaped like E.164, but no number anywhere.
            "+44",
            "+1234",
            "+447700",
            "+4477009001234567",
            "+99912345678",
            "+1555",
        ] {
            assert!(PhoneNumber::parse(bad).is_err(), "{bad:?} should not parse");
            // Asked again, the remembered answer is the same.
            assert!(
                PhoneNumber::parse(bad).is_err(),
                "{bad:?} should not parse twice"
            );
        }
        assert!(
            PhoneNumber::parse("+447700900123").is_ok(),
            "nor a good one"
        );
    }

    #[test]
    fn a_stored_number_is_checked_for_its_shape_only() {
        assert!(PhoneNumber::from_stored("+447700900123").is_ok());
        // Shaped, though no country has it: it passed `parse` when it was stored, or a person
        // put it there, and either way reading it back must not cost a metadata lookup.
        assert!(PhoneNumber::from_stored("+99912345678").is_ok());
        for bad in [
            "",
            "+",
            "447700900123",
            "+0447700900123",
            "+44 7700 900123",
            "0800 FLOWERS",
        ] {
            assert!(
                PhoneNumber::from_stored(bad).is_err(),
                "{bad:?} is not E.164"
            );
        }
    }

    #[test]
    fn the_ranges_tests_and_fixtures_use_are_accepted() {
        // Ofcom's drama range, NANP 555-01xx, Twilio's test number, and real-looking others.
        for good in [
            "+447700900000",
            "+447700900123",
            "+447700900999",
            "+14155550142",
            "+15125550142",
            "+12125550100",
            "+15005550006",
            "+18005551212",
            "+14158675309",
            "+33612345678",
        ] {
            assert!(PhoneNumber::parse(good).is_ok(), "{good:?} should parse");
        }
    }

    #[test]
    fn numbers_are_shown_to_people_in_their_national_form() {
        let shown = |raw: &str| PhoneNumber::parse(raw).unwrap().for_people();
        assert_eq!(shown("+447700900123"), "07700 900123");
        assert_eq!(shown("+15125550142"), "(512) 555-0142");
        assert_eq!(shown("+33612345678"), "06 12 34 56 78");
    }

    #[test]
    fn masks_keep_only_the_ends() {
        let uk = PhoneNumber::parse("+447700900123").unwrap();
        assert_eq!(uk.masked(), "+44*******123");
        assert_eq!(format!("{uk:?}"), "PhoneNumber(+44*******123)");
        assert_eq!(mask_phone("12345"), "*****");
        assert_eq!(mask_email("jo@example.com"), "j***@example.com");
    }

    #[test]
    fn provider_text_is_masked_but_still_says_what_went_wrong() {
        assert_eq!(
            mask_pii("The 'To' number +447700905599 is not valid (code 21211)"),
            "The 'To' number +44*******599 is not valid (code 21211)"
        );
        assert_eq!(
            mask_pii("call (415) 555-0123 or write to jo.smith@example.com."),
            "call (415****123 or write to j***@example.com."
        );
        assert_eq!(
            mask_pii("SM1234567890abc at 12:00, 3 pages"),
            "SM1234567890abc at 12:00, 3 pages"
        );
        assert_eq!(
            mask_pii("user@localhost and @ alone"),
            "user@localhost and @ alone"
        );
        assert_eq!(mask_pii("to:+44 7700 900123."), "to:+44*******123.");
    }

    #[test]
    fn locale_country_and_area_code_follow_the_number() {
        let us = PhoneNumber::parse("+14155550123").unwrap();
        assert_eq!(Locale::for_phone(&us), Locale::EnUs);
        assert_eq!(us.area_code(), Some("415"));
        assert_eq!(us.national(), "4155550123");
        let uk = PhoneNumber::parse("+447700900123").unwrap();
        assert_eq!(Locale::for_phone(&uk), Locale::EnGb);
        assert_eq!(uk.area_code(), None);
        assert_eq!(uk.national(), "07700900123");
        let fr = PhoneNumber::parse("+33612345678").unwrap();
        assert_eq!(Locale::for_phone(&fr), Locale::EnGb);
        assert_eq!(fr.country(), Country::Other);
    }
}
