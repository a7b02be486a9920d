//! The number pool from the operator's side: reading number lists, and the background keeper that
//! returns quarantined numbers to the pool when their time is up (and closes verification windows).

use std::time::Duration;

use tokio::sync::watch;

use crate::domain::PhoneNumber;
use crate::engine::Engine;
use crate::store::{PoolStats, Store};

/// A line of a number list that is not a number, with where it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadLine {
    pub line: usize,
    pub text: String,
}

impl BadLine {
    /// The problem, naming where it was as `unit` ("line" in a file, "argument" on a command
    /// line, "item" in a JSON list).
    pub fn describe(&self, unit: &str) -> String {
        format!(
            "{unit} {}: {:?} is not an E.164 number of a known country (e.g. +447700900123)",
            self.line, self.text
        )
    }
}

impl std::fmt::Display for BadLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe("line"))
    }
}

/// Reads one number a line; blank lines and `#` comments are skipped. Every bad line is reported,
/// and none of the list is used unless all of it is good.
pub fn parse_numbers<'a>(
    lines: impl IntoIterator<Item = &'a str>,
) -> Result<Vec<PhoneNumber>, Vec<BadLine>> {
    let mut numbers = Vec::new();
    let mut bad = Vec::new();
    for (i, raw) in lines.into_iter().enumerate() {
        let text = raw.split('#').next().unwrap_or_default().trim();
        if text.is_empty() {
            continue;
        }
        match PhoneNumber::parse(text) {
            Ok(number) => numbers.push(number),
            Err(_) => bad.push(BadLine {
                line: i + 1,
                text: text.to_owned(),
            }),
        }
    }
    if bad.is_empty() {
        Ok(numbers)
    } else {
        Err(bad)
    }
}

/// The stats as `onboard pool stats` prints them.
pub fn format_stats(stats: &PoolStats, low_water: i64) -> String {
    format!(
        "total        {}\navailable    {}\nassigned     {}\nquarantined  {}\nlow water    {}{}",
        stats.total,
        stats.available,
        stats.assigned,
        stats.quarantined,
        low_water,
        if stats.available < low_water {
            "  (LOW: add numbers)"
        } else {
            ""
        }
    )
}

/// Every `period`, until `shutdown`: ends quarantines that are over (serving the waitlist), texts
/// tips to owners whose test call has not come in time, and logs `POOL_LOW` when a country's pool
/// crosses below the low-water mark (here rather than after every payment, which it would slow).
pub async fn keep<S: Store>(
    engine: &Engine<S>,
    period: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    while !*shutdown.borrow() {
        if let Err(e) = engine.end_quarantines().await {
            tracing::error!(event = "POOL_KEEPER_ERROR", error = %e);
        }
        if let Err(e) = engine.verify_timeouts().await {
            tracing::error!(event = "VERIFY_SWEEP_ERROR", error = %e);
        }
        if let Err(e) = engine.check_pool_levels().await {
            tracing::warn!(event = "POOL_STATS_FAILED", error = %e);
        }
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = shutdown.changed() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_numbers_skipping_blanks_and_comments() {
        let numbers =
            parse_numbers(["+447700900001", "", "# spare", "+14155550100  # SF"]).unwrap();
        assert_eq!(numbers.len(), 2);
    }

    #[test]
    fn names_every_bad_line() {
        let bad = parse_numbers([
            "+447700900001",
            "07700900002",
            "+44 7700",
            "+447700900003",
            "+44",
            "+1555",
        ])
        .unwrap_err();
        assert_eq!(bad.iter().map(|b| b.line).collect::<Vec<_>>(), [2, 3, 5, 6]);
        assert!(
            bad[0]
                .to_string()
                .starts_with("line 2: \"07700900002\" is not an E.164")
        );
    }
}
