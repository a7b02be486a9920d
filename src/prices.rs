//! What things cost: `prices/<COUNTRY>.toml`, one file per country we hold numbers in, checked when
//! loaded like `flows/` (a built-in copy by default, `PRICES_DIR` to override).
//!
//! Money is an [`Amount`]: a whole number of millionths of the currency's unit. Twilio's prices
//! have four decimal places (0.0083 USD a segment), which whole pence or cents cannot hold; a
//! millionth holds them exactly, so a month of sums never drifts as floating point would, and an
//! `i64` still counts past nine thousand billion pounds.

use std::fmt;
use std::path::Path;

use serde::Deserialize;

use crate::domain::Country;

/// A sum of money in millionths of its currency's unit (see the module's notes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Amount(pub i64);

/// Millionths in one unit.
const MICROS: i64 = 1_000_000;

impl Amount {
    pub const ZERO: Amount = Amount(0);

    pub fn micros(self) -> i64 {
        self.0
    }

    /// A decimal such as `0.0083` or `12`: digits, at most one point, at most six decimal places,
    /// never negative. `None` for anything else (floating-point notation included).
    pub fn parse(raw: &str) -> Option<Amount> {
        let raw = raw.trim();
        let (whole, fraction) = raw.split_once('.').unwrap_or((raw, ""));
        let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty() || !digits(whole) || !digits(fraction) || fraction.len() > 6 {
            return None;
        }
        if raw.ends_with('.') {
            return None;
        }
        let whole: i64 = whole.parse().ok()?;
        let mut micros = 0i64;
        for (i, b) in fraction.bytes().enumerate() {
            micros += i64::from(b - b'0') * 10i64.pow(5 - i as u32);
        }
        whole.checked_mul(MICROS)?.checked_add(micros).map(Amount)
    }

    /// This amount `times` over, saturating rather than overflowing.
    pub fn times(self, times: i64) -> Amount {
        Amount(self.0.saturating_mul(times))
    }

    /// Converted at `rate` (an amount of the other currency per unit of this one), rounded half
    /// away from zero to the millionth.
    pub fn convert(self, rate: Amount) -> Amount {
        let product = i128::from(self.0) * i128::from(rate.0);
        let half = i128::from(MICROS / 2) * product.signum();
        let converted = (product + half) / i128::from(MICROS);
        Amount(i64::try_from(converted).unwrap_or(i64::MAX))
    }

    /// This amount as a fraction of `whole` (0 when `whole` is not positive).
    pub fn ratio_of(self, whole: Amount) -> f64 {
        if whole.0 <= 0 {
            0.0
        } else {
            self.0 as f64 / whole.0 as f64
        }
    }

    /// Whole units as a float, for metrics only (never summed back into money).
    pub fn as_units_f64(self) -> f64 {
        self.0 as f64 / MICROS as f64
    }
}

impl fmt::Display for Amount {
    /// Four decimal places at least (Twilio's precision), more only when the amount has them:
    /// `0.0083`, `12.5000`, `0.000125`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        let whole = abs / MICROS as u64;
        let fraction = format!("{:06}", abs % MICROS as u64);
        let fraction = fraction.trim_end_matches('0');
        let fraction = format!("{fraction:0<4}");
        write!(f, "{sign}{whole}.{fraction}")
    }
}

/// What a ledger row is for. The stored names are stable: reports and budgets group by them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CostKind {
    SmsInbound,
    SmsOutbound,
    CallInbound,
    CallOutbound,
    NumberPurchase,
    NumberRental,
    Email,
}

impl CostKind {
    pub const ALL: [CostKind; 7] = [
        CostKind::SmsInbound,
        CostKind::SmsOutbound,
        CostKind::CallInbound,
        CostKind::CallOutbound,
        CostKind::NumberPurchase,
        CostKind::NumberRental,
        CostKind::Email,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CostKind::SmsInbound => "sms_inbound",
            CostKind::SmsOutbound => "sms_outbound",
            CostKind::CallInbound => "call_inbound",
            CostKind::CallOutbound => "call_outbound",
            CostKind::NumberPurchase => "number_purchase",
            CostKind::NumberRental => "number_rental",
            CostKind::Email => "email",
        }
    }

    pub fn parse(raw: &str) -> Option<CostKind> {
        CostKind::ALL.into_iter().find(|k| k.as_str() == raw)
    }
}

/// One country's prices, in its own currency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CountryPrices {
    pub country: Country,
    /// ISO 4217, e.g. `GBP`.
    pub currency: String,
    /// When the prices were taken (`YYYY-MM-DD`).
    pub taken: String,
    pub source: String,
    pub sms_outbound: Amount,
    pub sms_inbound: Amount,
    pub call_outbound_per_minute: Amount,
    pub call_inbound_per_minute: Amount,
    pub number_per_month: Amount,
    pub number_purchase: Amount,
    pub email: Amount,
    /// One unit of `currency` in the reporting currency.
    pub to_reporting: Amount,
}

impl CountryPrices {
    /// The price of one unit of `kind` (a segment, a started minute, a month, a number, an email).
    pub fn unit(&self, kind: CostKind) -> Amount {
        match kind {
            CostKind::SmsInbound => self.sms_inbound,
            CostKind::SmsOutbound => self.sms_outbound,
            CostKind::CallInbound => self.call_inbound_per_minute,
            CostKind::CallOutbound => self.call_outbound_per_minute,
            CostKind::NumberPurchase => self.number_purchase,
            CostKind::NumberRental => self.number_per_month,
            CostKind::Email => self.email,
        }
    }
}

/// An estimated cost: `quantity` units at the country's price, and the same in the reporting
/// currency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Estimate {
    pub kind: CostKind,
    pub quantity: i64,
    pub amount: Amount,
    pub currency: String,
    pub reporting: Amount,
}

/// Every country's prices and the one currency reports and budgets are in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prices {
    reporting_currency: String,
    gb: CountryPrices,
    us: CountryPrices,
}

#[derive(Debug, thiserror::Error)]
pub enum PriceError {
    #[error("{file}: cannot read the file: {source}")]
    Unreadable {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: not a valid prices file: {source}")]
    Syntax {
        file: String,
        #[source]
        source: toml::de::Error,
    },
    #[error("{file}: `{field}` is invalid: {problem}")]
    Invalid {
        file: String,
        field: String,
        problem: String,
    },
}

/// The reporting currency when `REPORTING_CURRENCY` is unset.
pub const DEFAULT_REPORTING_CURRENCY: &str = "GBP";

const EMBEDDED_GB: &str = include_str!("../prices/GB.toml");
const EMBEDDED_US: &str = include_str!("../prices/US.toml");

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    meta: Meta,
    prices: PriceTable,
    to_reporting: std::collections::BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Meta {
    country: String,
    currency: String,
    taken: String,
    source: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PriceTable {
    sms_outbound: String,
    sms_inbound: String,
    call_outbound_per_minute: String,
    call_inbound_per_minute: String,
    number_per_month: String,
    number_purchase: String,
    #[serde(default = "zero")]
    email: String,
}

fn zero() -> String {
    "0".to_owned()
}

impl Prices {
    /// The files compiled into the binary, checked, reported in `reporting_currency`.
    pub fn embedded(reporting_currency: &str) -> Result<Prices, PriceError> {
        Ok(Prices {
            reporting_currency: reporting_currency.to_owned(),
            gb: parse(
                Country::Gb,
                "prices/GB.toml (embedded)",
                EMBEDDED_GB,
                reporting_currency,
            )?,
            us: parse(
                Country::Us,
                "prices/US.toml (embedded)",
                EMBEDDED_US,
                reporting_currency,
            )?,
        })
    }

    /// `<dir>/GB.toml` and `<dir>/US.toml`, checked.
    pub fn load_dir(dir: &Path, reporting_currency: &str) -> Result<Prices, PriceError> {
        let load = |country: Country| {
            let path = dir.join(format!("{}.toml", country.code()));
            let file = path.display().to_string();
            let text = std::fs::read_to_string(&path).map_err(|source| PriceError::Unreadable {
                file: file.clone(),
                source,
            })?;
            parse(country, &file, &text, reporting_currency)
        };
        Ok(Prices {
            reporting_currency: reporting_currency.to_owned(),
            gb: load(Country::Gb)?,
            us: load(Country::Us)?,
        })
    }

    pub fn reporting_currency(&self) -> &str {
        &self.reporting_currency
    }

    /// A country's prices. A country without a file of its own is priced as GB, the dearer of
    /// the two, so an estimate errs towards spending less, never more.
    pub fn country(&self, country: Country) -> &CountryPrices {
        match country {
            Country::Us => &self.us,
            Country::Gb | Country::Other => &self.gb,
        }
    }

    /// `quantity` units of `kind` in `country`.
    pub fn estimate(&self, country: Country, kind: CostKind, quantity: i64) -> Estimate {
        let prices = self.country(country);
        let amount = prices.unit(kind).times(quantity);
        Estimate {
            kind,
            quantity,
            amount,
            currency: prices.currency.clone(),
            reporting: amount.convert(prices.to_reporting),
        }
    }

    /// `amount` of `currency` in the reporting currency, when some file's currency is
    /// `currency` (so its rate is known).
    pub fn to_reporting(&self, amount: Amount, currency: &str) -> Option<Amount> {
        if currency.eq_ignore_ascii_case(&self.reporting_currency) {
            return Some(amount);
        }
        [&self.gb, &self.us]
            .into_iter()
            .find(|p| p.currency.eq_ignore_ascii_case(currency))
            .map(|p| amount.convert(p.to_reporting))
    }
}

/// Started minutes of a call of `seconds`: Twilio bills every started minute.
pub fn billed_minutes(seconds: i64) -> i64 {
    if seconds <= 0 { 0 } else { (seconds + 59) / 60 }
}

fn parse(
    country: Country,
    file: &str,
    text: &str,
    reporting_currency: &str,
) -> Result<CountryPrices, PriceError> {
    let parsed: File = toml::from_str(text).map_err(|source| PriceError::Syntax {
        file: file.to_owned(),
        source,
    })?;
    let invalid = |field: &str, problem: String| PriceError::Invalid {
        file: file.to_owned(),
        field: field.to_owned(),
        problem,
    };
    let meta = parsed.meta;
    if meta.country != country.code() {
        return Err(invalid(
            "meta.country",
            format!(
                "{:?} does not match the file, which is for {}",
                meta.country,
                country.code()
            ),
        ));
    }
    if !is_currency(&meta.currency) {
        return Err(invalid(
            "meta.currency",
            format!("{:?} is not a three-letter code such as GBP", meta.currency),
        ));
    }
    if chrono::NaiveDate::parse_from_str(&meta.taken, "%Y-%m-%d").is_err() {
        return Err(invalid(
            "meta.taken",
            format!("{:?} is not a date such as 2025-01-15", meta.taken),
        ));
    }
    if meta.source.trim().is_empty() {
        return Err(invalid("meta.source", "is empty".to_owned()));
    }
    let amount = |field: &str, raw: &str| {
        Amount::parse(raw).ok_or_else(|| {
            invalid(
                field,
                format!(
                    "{raw:?} is not a decimal amount such as \"0.0400\" (digits, at most 6 decimal places, not negative)"
                ),
            )
        })
    };
    let p = &parsed.prices;
    let to_reporting = parsed
        .to_reporting
        .iter()
        .find(|(currency, _)| currency.eq_ignore_ascii_case(reporting_currency))
        .map(|(currency, rate)| amount(&format!("to_reporting.{currency}"), rate))
        .transpose()?
        .ok_or_else(|| {
            invalid(
                "to_reporting",
                format!(
                    "has no rate to {reporting_currency} (REPORTING_CURRENCY); add `{reporting_currency} = \"...\"`"
                ),
            )
        })?;
    if to_reporting == Amount::ZERO {
        return Err(invalid(
            &format!("to_reporting.{reporting_currency}"),
            "a rate of 0 would make every cost free".to_owned(),
        ));
    }
    if meta.currency.eq_ignore_ascii_case(reporting_currency) && to_reporting != Amount(MICROS) {
        return Err(invalid(
            &format!("to_reporting.{reporting_currency}"),
            "must be 1: it is this file's own currency".to_owned(),
        ));
    }
    Ok(CountryPrices {
        country,
        currency: meta.currency,
        taken: meta.taken,
        source: meta.source,
        sms_outbound: amount("prices.sms_outbound", &p.sms_outbound)?,
        sms_inbound: amount("prices.sms_inbound", &p.sms_inbound)?,
        call_outbound_per_minute: amount(
            "prices.call_outbound_per_minute",
            &p.call_outbound_per_minute,
        )?,
        call_inbound_per_minute: amount(
            "prices.call_inbound_per_minute",
            &p.call_inbound_per_minute,
        )?,
        number_per_month: amount("prices.number_per_month", &p.number_per_month)?,
        number_purchase: amount("prices.number_purchase", &p.number_purchase)?,
        email: amount("prices.email", &p.email)?,
        to_reporting,
    })
}

/// A currency code as `REPORTING_CURRENCY` and the files give it: three ASCII capitals.
pub fn is_currency(raw: &str) -> bool {
    raw.len() == 3 && raw.bytes().all(|b| b.is_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_parse_exactly_and_print_back() {
        assert_eq!(Amount::parse("0.0083"), Some(Amount(8_300)));
        assert_eq!(Amount::parse("12"), Some(Amount(12_000_000)));
        assert_eq!(Amount::parse("1.150000"), Some(Amount(1_150_000)));
        assert_eq!(Amount::parse("0.000001"), Some(Amount(1)));
        for bad in [
            "",
            "-1",
            "1.",
            ".5",
            "1e-3",
            "0.0000001",
            "1,5",
            "abc",
            "1.2.3",
        ] {
            assert_eq!(Amount::parse(bad), None, "{bad:?}");
        }
        assert_eq!(Amount(8_300).to_string(), "0.0083");
        assert_eq!(Amount(12_500_000).to_string(), "12.5000");
        assert_eq!(Amount(125).to_string(), "0.000125");
        assert_eq!(Amount(-40_000).to_string(), "-0.0400");
    }

    #[test]
    fn a_thousand_small_sums_do_not_drift() {
        let segment = Amount::parse("0.0083").unwrap();
        let total = (0..1000).fold(Amount::ZERO, |sum, _| Amount(sum.0 + segment.0));
        assert_eq!(total, Amount::parse("8.3").unwrap());
    }

    #[test]
    fn conversion_rounds_to_the_millionth() {
        // 0.0083 USD at 0.79 = 0.006557 GBP exactly.
        assert_eq!(Amount(8_300).convert(Amount(790_000)), Amount(6_557));
        // 0.000001 at 0.5 = 0.0000005: half rounds away from zero.
        assert_eq!(Amount(1).convert(Amount(500_000)), Amount(1));
    }

    #[test]
    fn started_minutes_are_billed() {
        assert_eq!(billed_minutes(0), 0);
        assert_eq!(billed_minutes(1), 1);
        assert_eq!(billed_minutes(60), 1);
        assert_eq!(billed_minutes(61), 2);
    }

    #[test]
    fn the_embedded_files_load_in_either_reporting_currency() {
        let gbp = Prices::embedded("GBP").unwrap();
        assert_eq!(gbp.country(Country::Gb).currency, "GBP");
        assert_eq!(gbp.country(Country::Us).currency, "USD");
        let estimate = gbp.estimate(Country::Us, CostKind::SmsOutbound, 2);
        assert_eq!(estimate.amount, Amount(16_600));
        assert_eq!(estimate.reporting, Amount(13_114));
        let usd = Prices::embedded("USD").unwrap();
        assert_eq!(
            usd.estimate(Country::Gb, CostKind::NumberRental, 1)
                .reporting,
            Amount(1_270_000)
        );
        assert!(Prices::embedded("EUR").is_err());
    }

    #[test]
    fn the_files_on_disk_match_the_embedded_ones() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("prices");
        assert_eq!(
            Prices::load_dir(&dir, "GBP").unwrap(),
            Prices::embedded("GBP").unwrap()
        );
    }

    fn rejected(text: &str) -> String {
        parse(Country::Gb, "GB.toml", text, "GBP")
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn bad_files_are_rejected_naming_the_field() {
        let good = EMBEDDED_GB;
        assert!(rejected(&good.replace("\"0.0400\"", "0.04")).contains("GB.toml"));
        assert!(rejected(&good.replace("\"0.0400\"", "\"-0.04\"")).contains("prices.sms_outbound"));
        assert!(
            rejected(&good.replace("taken = \"2025-01-15\"", "taken = \"soon\""))
                .contains("meta.taken")
        );
        assert!(
            rejected(&good.replace("country = \"GB\"", "country = \"US\""))
                .contains("meta.country")
        );
        assert!(rejected(&good.replace("GBP = \"1\"", "EUR = \"1\"")).contains("to_reporting"));
        assert!(rejected(&good.replace("sms_inbound", "sms_inbund")).contains("sms_inbund"));
    }
}
