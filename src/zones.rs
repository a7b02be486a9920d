//! An owner's local time zone, from their phone number: what quiet hours are measured in.
//!
//! The table is data (`data/time_zones.toml`, compiled in) and is checked when loaded: every zone
//! an IANA name `chrono-tz` knows, every area code three digits and listed once.

use std::collections::HashMap;

use chrono_tz::Tz;
use serde::Deserialize;

use crate::domain::{Country, PhoneNumber};

const EMBEDDED: &str = include_str!("../data/time_zones.toml");

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("data/time_zones.toml: {0}")]
pub struct ZonesError(String);

/// Where each owner's phone number puts them.
#[derive(Debug, Clone)]
pub struct Zones {
    gb: Tz,
    nanp_fallback: Tz,
    other: Tz,
    by_area_code: HashMap<u16, Tz>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    fallback: Fallback,
    nanp: HashMap<String, Vec<u16>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Fallback {
    #[serde(rename = "GB")]
    gb: String,
    #[serde(rename = "NANP")]
    nanp: String,
    other: String,
}

impl Zones {
    /// The table compiled into the binary, checked.
    pub fn embedded() -> Result<Zones, ZonesError> {
        Self::parse(EMBEDDED)
    }

    pub fn parse(text: &str) -> Result<Zones, ZonesError> {
        let file: File = toml::from_str(text).map_err(|e| ZonesError(e.to_string()))?;
        let zone = |name: &str| -> Result<Tz, ZonesError> {
            name.parse::<Tz>()
                .map_err(|_| ZonesError(format!("{name:?} is not a time zone name")))
        };
        let mut by_area_code = HashMap::new();
        for (name, codes) in &file.nanp {
            let tz = zone(name)?;
            for code in codes {
                if !(200..=999).contains(code) {
                    return Err(ZonesError(format!(
                        "{code} under {name:?} is not a 3-digit area code"
                    )));
                }
                if let Some(other) = by_area_code.insert(*code, tz) {
                    return Err(ZonesError(format!(
                        "area code {code} is listed under both {other} and {name}"
                    )));
                }
            }
        }
        Ok(Zones {
            gb: zone(&file.fallback.gb)?,
            nanp_fallback: zone(&file.fallback.nanp)?,
            other: zone(&file.fallback.other)?,
            by_area_code,
        })
    }

    /// Every owner in one zone.
    pub fn uniform(zone: Tz) -> Zones {
        Zones {
            gb: zone,
            nanp_fallback: zone,
            other: zone,
            by_area_code: HashMap::new(),
        }
    }

    /// The owner's zone: the UK's, or their area code's, or the most western one of their country.
    pub fn zone_of(&self, phone: &PhoneNumber) -> Tz {
        match phone.country() {
            Country::Gb => self.gb,
            Country::Us => phone
                .area_code()
                .and_then(|code| code.parse::<u16>().ok())
                .and_then(|code| self.by_area_code.get(&code).copied())
                .unwrap_or(self.nanp_fallback),
            Country::Other => self.other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono_tz::{America, Europe, Pacific};

    fn zone(number: &str) -> Tz {
        Zones::embedded()
            .expect("the embedded table is valid")
            .zone_of(&number.parse().unwrap())
    }

    #[test]
    fn owners_are_placed_by_country_and_area_code() {
        assert_eq!(zone("+447700900123"), Europe::London);
        assert_eq!(zone("+12125550123"), America::New_York);
        assert_eq!(zone("+18085550123"), Pacific::Honolulu);
        assert_eq!(zone("+13125550123"), America::Chicago);
        assert_eq!(zone("+14155550123"), America::Los_Angeles);
        assert_eq!(zone("+16045550123"), America::Vancouver);
    }

    #[test]
    fn an_unknown_area_code_gets_the_most_western_zone() {
        // 999 is not a geographic area code.
        assert_eq!(zone("+19995550123"), Pacific::Honolulu);
    }

    #[test]
    fn a_bad_zone_name_or_a_code_listed_twice_is_refused() {
        let base = "[fallback]\nGB = \"Europe/London\"\nNANP = \"Pacific/Honolulu\"\nother = \"Europe/London\"\n";
        let bad_zone = format!("{base}[nanp]\n\"America/Nowhere\" = [212]\n");
        assert!(
            Zones::parse(&bad_zone)
                .unwrap_err()
                .0
                .contains("America/Nowhere")
        );
        let twice =
            format!("{base}[nanp]\n\"America/New_York\" = [212]\n\"America/Chicago\" = [212]\n");
        assert!(Zones::parse(&twice).unwrap_err().0.contains("212"));
        let short = format!("{base}[nanp]\n\"America/New_York\" = [21]\n");
        assert!(Zones::parse(&short).is_err());
    }
}
