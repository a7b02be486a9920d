//! The shell around [`crate::prices`] and [`crate::conversation::budget`]: pricing every billable
//! thing into the ledger in its own transaction, budgets read from the ledger, and the keeper that
//! charges monthly rent, records Twilio's real prices and serves held owners when a period turns.
//!
//! Budgets are read from the ledger in the database, never counted in one process: every replica
//! sees the same spend, and each alert is stored once per period (`budget_alerts`' primary key),
//! so of replicas crossing 80% together exactly one logs `BUDGET_WARNING`.
//!
//! Periods are UTC days and months.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Utc};
use serde::Serialize;

use crate::config::ConfigError;
use crate::conversation::budget::{self, Spend};
use crate::conversation::{Event, StateName};
use crate::domain::{Country, OwnerId, PhoneNumber, mask_email, mask_pii};
use crate::email::{Email, EmailError, Mailer};
use crate::engine::{Engine, EngineError};
use crate::prices::{
    Amount, CostKind, DEFAULT_REPORTING_CURRENCY, Prices, billed_minutes, is_currency,
};
use crate::store::ledger::{BudgetAlert, CostGroup, GroupBy, LedgerTx, NewCost};
use crate::store::reminders::ReminderTx as _;
use crate::store::{OutboundKind, OutboundOutcome, OutboundResult, OutboundStatus, Store, Tx};
use crate::twilio::client::TwilioClient;

/// Prices and budgets from the environment (`PRICES_DIR`, `REPORTING_CURRENCY`, `BUDGET_DAILY`,
/// `BUDGET_MONTHLY`, `OPS_EMAIL`).
#[derive(Debug, Clone)]
pub struct CostConfig {
    pub prices: Arc<Prices>,
    /// In the reporting currency; `None`: no limit.
    pub daily: Option<Amount>,
    pub monthly: Option<Amount>,
    /// Where budget alerts are emailed (see [`Engine::email_ops_alerts`]).
    pub ops_email: Option<String>,
}

impl Default for CostConfig {
    /// The compiled-in prices (checked by their tests) in GBP, no budgets.
    fn default() -> Self {
        CostConfig {
            prices: Arc::new(
                Prices::embedded(DEFAULT_REPORTING_CURRENCY)
                    .expect("the compiled-in prices are checked by their tests"),
            ),
            daily: None,
            monthly: None,
            ops_email: None,
        }
    }
}

impl CostConfig {
    /// Reads the settings through `get` (already trimmed, `None` when unset or empty); the price
    /// files are loaded and checked here, so a bad edit stops the start.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let currency =
            get("REPORTING_CURRENCY").unwrap_or_else(|| DEFAULT_REPORTING_CURRENCY.to_owned());
        if !is_currency(&currency) {
            return Err(ConfigError::Invalid {
                name: "REPORTING_CURRENCY",
                problem: format!("{currency:?} is not a three-letter code such as GBP or USD"),
            });
        }
        let prices = match get("PRICES_DIR") {
            Some(dir) => Prices::load_dir(std::path::Path::new(&dir), &currency),
            None => Prices::embedded(&currency),
        }
        .map_err(|e| ConfigError::Invalid {
            name: if get("PRICES_DIR").is_some() {
                "PRICES_DIR"
            } else {
                "REPORTING_CURRENCY"
            },
            problem: e.to_string(),
        })?;
        let budget = |name: &'static str| {
            get(name)
                .map(|raw| {
                    Amount::parse(&raw)
                        .filter(|a| *a > Amount::ZERO)
                        .ok_or_else(|| ConfigError::Invalid {
                            name,
                            problem: format!(
                                "{raw:?} is not an amount above 0 in {currency}, such as 25 or 12.50"
                            ),
                        })
                })
                .transpose()
        };
        Ok(CostConfig {
            prices: Arc::new(prices),
            daily: budget("BUDGET_DAILY")?,
            monthly: budget("BUDGET_MONTHLY")?,
            ops_email: get("OPS_EMAIL"),
        })
    }
}

/// A budget period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    Day,
    Month,
}

impl Period {
    pub fn as_str(self) -> &'static str {
        match self {
            Period::Day => "day",
            Period::Month => "month",
        }
    }

    /// When the period holding `now` began (UTC), and its name (`2026-11-30`, `2026-11`).
    pub fn start(self, now: DateTime<Utc>) -> (DateTime<Utc>, String) {
        let day = now.date_naive();
        match self {
            Period::Day => (
                Utc.from_utc_datetime(&day.and_hms_opt(0, 0, 0).unwrap_or_default()),
                day.format("%Y-%m-%d").to_string(),
            ),
            Period::Month => {
                let first = NaiveDate::from_ymd_opt(day.year(), day.month(), 1).unwrap_or(day);
                (
                    Utc.from_utc_datetime(&first.and_hms_opt(0, 0, 0).unwrap_or_default()),
                    first.format("%Y-%m").to_string(),
                )
            }
        }
    }
}

/// Spend in one period against its budget.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PeriodSpend {
    pub period: Period,
    /// `2026-11-30` or `2026-11`.
    pub key: String,
    pub start: DateTime<Utc>,
    #[serde(serialize_with = "as_decimal")]
    pub spent: Amount,
    #[serde(serialize_with = "as_optional_decimal")]
    pub budget: Option<Amount>,
    /// Spent over budget (absent without a budget).
    pub used_ratio: Option<f64>,
    pub exceeded: bool,
}

fn as_decimal<S: serde::Serializer>(a: &Amount, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&a.to_string())
}

fn as_optional_decimal<S: serde::Serializer>(a: &Option<Amount>, s: S) -> Result<S::Ok, S::Error> {
    match a {
        Some(a) => s.serialize_str(&a.to_string()),
        None => s.serialize_none(),
    }
}

/// The day's and the month's spend against their budgets.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BudgetStatus {
    pub currency: String,
    pub day: PeriodSpend,
    pub month: PeriodSpend,
}

impl BudgetStatus {
    /// Either budget used up: discretionary spend waits (see [`budget::allowed`]).
    pub fn exceeded(&self) -> bool {
        self.day.exceeded || self.month.exceeded
    }
}

/// 80% of a budget: the warning.
const WARNING_PERCENT: i64 = 80;

/// A ledger row asks Twilio for its real price only once the message or call is surely final.
const PRICE_SETTLE: Duration = Duration::minutes(5);
/// Between two asks about the same row.
const PRICE_RETRY: Duration = Duration::minutes(30);
/// Asks before the estimate is left to stand.
const PRICE_MAX_CHECKS: i32 = 6;

impl<S: Store> Engine<S> {
    /// The prices and reporting currency this engine uses.
    pub fn prices(&self) -> &Prices {
        &self.costs.prices
    }

    /// `quantity` units of `kind` priced as a ledger row, for [`LedgerTx::record_costs`].
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn priced<'a>(
        &'a self,
        source_key: String,
        owner_id: Option<&'a OwnerId>,
        country: Country,
        kind: CostKind,
        quantity: i64,
        provider_id: Option<&'a str>,
        at: DateTime<Utc>,
    ) -> NewCost<'a> {
        let prices = self.costs.prices.country(country);
        let estimated = prices.unit(kind).times(quantity);
        NewCost {
            source_key,
            owner_id,
            kind,
            quantity,
            country,
            currency: &prices.currency,
            estimated,
            reporting: estimated.convert(prices.to_reporting),
            provider_id,
            at,
        }
    }

    /// Prices `quantity` units of `kind` and writes the ledger row in `tx`, once per `source_key`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn record_cost(
        &self,
        tx: &mut S::Tx,
        source_key: String,
        owner_id: Option<&OwnerId>,
        country: Country,
        kind: CostKind,
        quantity: i64,
        provider_id: Option<&str>,
        at: DateTime<Utc>,
    ) -> Result<(), EngineError> {
        let cost = self.priced(
            source_key,
            owner_id,
            country,
            kind,
            quantity,
            provider_id,
            at,
        );
        tx.record_cost(&cost).await?;
        Ok(())
    }

    /// A finished call's cost, once its final status carries a duration: started minutes at the
    /// inbound or outbound price. Unanswered calls cost nothing.
    pub(crate) async fn record_call_cost(
        &self,
        tx: &mut S::Tx,
        call_sid: &str,
        status: &str,
        duration_secs: Option<i32>,
        now: DateTime<Utc>,
    ) -> Result<(), EngineError> {
        if status != "completed" {
            return Ok(());
        }
        let Some(call) = tx.call_for_costs(call_sid).await? else {
            return Ok(());
        };
        let Some(seconds) = duration_secs.or(call.duration_secs) else {
            return Ok(());
        };
        let kind = if call.direction.starts_with("outbound") {
            CostKind::CallOutbound
        } else {
            CostKind::CallInbound
        };
        let country = PhoneNumber::parse(&call.to)
            .map(|n| n.country())
            .unwrap_or(Country::Other);
        self.record_cost(
            tx,
            format!("call:{call_sid}"),
            call.owner_id.as_ref(),
            country,
            kind,
            billed_minutes(i64::from(seconds)),
            Some(call_sid),
            now,
        )
        .await
    }

    /// Records a number bought for the pool and its price in one transaction.
    pub async fn record_pool_purchase(
        &self,
        twilio_sid: &str,
        number: &PhoneNumber,
        at: DateTime<Utc>,
    ) -> Result<(), EngineError> {
        let mut tx = self.store().begin().await?;
        tx.record_pool_purchase(twilio_sid, number, at).await?;
        self.record_cost(
            &mut tx,
            format!("buy:{twilio_sid}"),
            None,
            number.country(),
            CostKind::NumberPurchase,
            1,
            None,
            at,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The day's and month's spend, read in `tx`; crossing 80% or 100% of a budget stores its
    /// alert, and the one caller that stored it logs it (`BUDGET_WARNING`, `BUDGET_EXCEEDED`).
    pub(crate) async fn budget_check(
        &self,
        tx: &mut S::Tx,
        now: DateTime<Utc>,
    ) -> Result<BudgetStatus, EngineError> {
        let mut periods = Vec::with_capacity(2);
        for (period, budget) in [
            (Period::Day, self.costs.daily),
            (Period::Month, self.costs.monthly),
        ] {
            let (start, key) = period.start(now);
            let spent = tx.spent_since(start).await?;
            let used_ratio = budget.map(|b| spent.ratio_of(b));
            metrics::gauge!("onboard_budget_used_ratio", "period" => period.as_str())
                .set(used_ratio.unwrap_or(0.0));
            let mut exceeded = false;
            if let Some(budget) = budget {
                exceeded = spent >= budget;
                let warn = i128::from(spent.micros()) * 100
                    >= i128::from(budget.micros()) * i128::from(WARNING_PERCENT);
                for (level, crossed) in [("warning", warn), ("exceeded", exceeded)] {
                    if !crossed {
                        continue;
                    }
                    let alert = BudgetAlert {
                        period: period.as_str().to_owned(),
                        period_start: key.clone(),
                        level: level.to_owned(),
                        spent_micros: spent.micros(),
                        budget_micros: budget.micros(),
                        at: now,
                    };
                    if tx.claim_budget_alert(&alert).await? {
                        self.announce_alert(&alert);
                    }
                }
            }
            periods.push(PeriodSpend {
                period,
                key,
                start,
                spent,
                budget,
                used_ratio,
                exceeded,
            });
        }
        let month = periods.pop().expect("two periods");
        let day = periods.pop().expect("two periods");
        Ok(BudgetStatus {
            currency: self.costs.prices.reporting_currency().to_owned(),
            day,
            month,
        })
    }

    /// The budget status in a transaction of its own (alerts as [`Self::budget_check`]).
    pub async fn budget_status(&self) -> Result<BudgetStatus, EngineError> {
        let now = self.now();
        let mut tx = self.store().begin().await?;
        let status = self.budget_check(&mut tx, now).await?;
        tx.commit().await?;
        Ok(status)
    }

    /// Whether `spend` may go ahead now. Without budgets, always, without reading anything.
    pub async fn spend_allowed(&self, spend: Spend) -> Result<bool, EngineError> {
        if !self.has_budget() {
            return Ok(true);
        }
        let exceeded = self.budget_status().await?.exceeded();
        Ok(budget::allowed(spend, exceeded))
    }

    pub(crate) fn has_budget(&self) -> bool {
        self.costs.daily.is_some() || self.costs.monthly.is_some()
    }

    /// Logs (and so counts, as `onboard_events_total{event}`) an alert this replica stored.
    fn announce_alert(&self, alert: &BudgetAlert) {
        let currency = self.costs.prices.reporting_currency();
        let spent = Amount(alert.spent_micros).to_string();
        let budget = Amount(alert.budget_micros).to_string();
        if alert.level == "exceeded" {
            tracing::warn!(
                event = "BUDGET_EXCEEDED",
                period = %alert.period,
                period_start = %alert.period_start,
                spent = %spent,
                budget = %budget,
                currency,
                "budget used up: pool purchases, reminders and new owners wait for the period to turn"
            );
        } else {
            tracing::warn!(
                event = "BUDGET_WARNING",
                period = %alert.period,
                period_start = %alert.period_start,
                spent = %spent,
                budget = %budget,
                currency,
                "80% of the budget is spent"
            );
        }
    }

    /// Emails ops (`OPS_EMAIL`) the budget alerts stored in the last two days that have not been
    /// emailed: each once. The alert's row is the message's record, claimed with `SKIP LOCKED`.
    /// The attempt is committed before the mail server is asked, so one cut short (a crash, a
    /// replica stopped) is known when the row is claimed again and given up: it may have gone.
    /// A server that cannot be reached is tried again on the next run; one that refuses the email,
    /// or may have taken it before the connection broke, is given up with the reason. Never a
    /// second email. Returns how many went.
    pub async fn email_ops_alerts(&self, mailer: &Mailer) -> Result<usize, EngineError> {
        let Some(to) = self.costs.ops_email.as_deref() else {
            return Ok(0);
        };
        let currency = self.costs.prices.reporting_currency();
        let mut sent = 0;
        loop {
            let now = self.now();
            let mut tx = self.store().begin().await?;
            let claimed = tx
                .claim_unsent_alert(now - Duration::days(2), now - OPS_EMAIL_LEASE)
                .await?;
            let Some((alert, attempted)) = claimed else {
                tx.commit().await?;
                return Ok(sent);
            };
            if attempted {
                let error = "an earlier attempt may have been sent: not sent again";
                tx.record_alert_email(&alert, None, None, Some(error))
                    .await?;
                tx.commit().await?;
                ops_email_given_up(&alert, error);
                continue;
            }
            tx.record_alert_email(&alert, Some(now), None, None).await?;
            tx.commit().await?;

            let (subject, text) = ops_alert_email(&alert, currency);
            let email = Email {
                to,
                subject: &subject,
                text: &text,
                message_id: format!(
                    "<budget-{}-{}-{}@onboard>",
                    alert.period, alert.period_start, alert.level
                ),
            };
            let outcome = mailer.send(&email).await;
            let mut tx = self.store().begin().await?;
            match outcome {
                Ok(()) => {
                    tx.record_alert_email(&alert, Some(now), Some(self.now()), None)
                        .await?;
                    tx.commit().await?;
                    sent += 1;
                    tracing::info!(
                        event = "OPS_ALERT_EMAILED",
                        period = %alert.period,
                        level = %alert.level,
                        email = %mask_email(to),
                        simulated = matches!(mailer, Mailer::Simulated),
                    );
                }
                // Nothing was taken: the attempt is undone, for the next run.
                Err(EmailError::Transient(e)) => {
                    tx.record_alert_email(&alert, None, None, None).await?;
                    tx.commit().await?;
                    tracing::warn!(
                        event = "OPS_ALERT_EMAIL_RETRY",
                        error = %mask_pii(&e.to_string()),
                    );
                    return Ok(sent);
                }
                Err(e @ (EmailError::Permanent(_) | EmailError::Uncertain(_))) => {
                    let error = e.to_string();
                    tx.record_alert_email(&alert, Some(now), None, Some(&error))
                        .await?;
                    tx.commit().await?;
                    ops_email_given_up(&alert, &error);
                }
            }
        }
    }

    /// This month's rent for every number we hold that has not paid it yet (a purchase pays its
    /// own first month). Claimed in batches with `SKIP LOCKED`; the ledger's unique key per
    /// number and month means no replica ever charges a month twice. Returns how many.
    pub async fn charge_rent(&self) -> Result<usize, EngineError> {
        let mut charged = 0;
        loop {
            let now = self.now();
            let (month_start, month) = Period::Month.start(now);
            let mut tx = self.store().begin().await?;
            let due = tx.rent_due(month_start, &month, 100).await?;
            if due.is_empty() {
                tx.commit().await?;
                return Ok(charged);
            }
            for number in &due {
                self.record_cost(
                    &mut tx,
                    format!("rent:{}:{month}", number.number.as_str()),
                    number.owner_id.as_ref(),
                    number.country,
                    CostKind::NumberRental,
                    1,
                    None,
                    now,
                )
                .await?;
            }
            tx.commit().await?;
            charged += due.len();
            tracing::info!(event = "NUMBER_RENT_CHARGED", month = %month, numbers = due.len());
        }
    }

    /// Serves owners held while a budget was exceeded, longest-held first, each in a transaction
    /// of its own: their first text is read as if it came now, and what the bot says goes through
    /// the outbox, held through quiet hours. Nothing while a budget is still exceeded. Returns how
    /// many were served.
    pub async fn release_held_owners(&self) -> Result<usize, EngineError> {
        let mut released = 0;
        loop {
            let now = self.now();
            let mut tx = self.store().begin().await?;
            if self.has_budget() && self.budget_check(&mut tx, now).await?.exceeded() {
                tx.commit().await?;
                return Ok(released);
            }
            let Some((owner_id, first_text)) = tx.claim_oldest_held().await? else {
                tx.commit().await?;
                return Ok(released);
            };
            tx.release_owner(&owner_id).await?;
            // An owner who got going meanwhile (budgets were turned off and they texted before
            // this release) only loses the hold.
            let owner = tx.lock_owner(&owner_id).await?.filter(|o| {
                o.state == StateName::S1BusinessTypeLocation && o.business_type.is_none()
            });
            if let Some(mut owner) = owner {
                let decision = self
                    .run(&mut tx, &mut owner, Event::FirstText(first_text), now)
                    .await?;
                self.queue_proactive(&mut tx, &owner, &decision, now)
                    .await?;
                let timer = tx.reminder_timer(&owner.id).await?;
                self.owner_texted(&mut tx, timer, &owner, now).await?;
                tracing::info!(
                    event = "HELD_OWNER_SERVED",
                    owner_id = %owner.id,
                    phone = %owner.owner_phone.masked(),
                );
            }
            tx.commit().await?;
            released += 1;
        }
    }

    /// Asks Twilio for the real price of messages and calls that are surely final, and replaces
    /// their estimates. A price not known yet is asked again later, up to a few times; then the
    /// estimate stands. Returns how many prices were recorded.
    pub async fn record_real_prices(&self, twilio: &TwilioClient) -> Result<usize, EngineError> {
        let now = self.now();
        // Claimed and marked asked in one short transaction: no lock is held over the HTTP calls,
        // and other replicas pass these rows by until the retry interval.
        let mut tx = self.store().begin().await?;
        let rows = tx
            .unpriced(now - PRICE_SETTLE, now - PRICE_RETRY, PRICE_MAX_CHECKS, 20)
            .await?;
        for row in &rows {
            tx.note_price_check(row.id, now).await?;
        }
        tx.commit().await?;
        let mut recorded = 0;
        for row in rows {
            let resource = match row.kind {
                CostKind::CallInbound | CostKind::CallOutbound => {
                    twilio.fetch_call(&row.provider_id).await
                }
                _ => twilio.fetch_message(&row.provider_id).await,
            };
            let resource = match resource {
                Ok(resource) => resource,
                Err(e) => {
                    tracing::warn!(event = "REAL_PRICE_LOOKUP_FAILED", ledger_id = row.id, error = %e);
                    continue;
                }
            };
            let (Some(price), Some(unit)) = (resource.price.as_deref(), resource.price_unit) else {
                continue;
            };
            // Twilio reports money paid out as a negative amount.
            let Some(real) = Amount::parse(price.trim().trim_start_matches('-')) else {
                tracing::warn!(event = "REAL_PRICE_UNREADABLE", ledger_id = row.id, price = %price);
                continue;
            };
            let unit = unit.to_ascii_uppercase();
            let Some(reporting) = self.costs.prices.to_reporting(real, &unit) else {
                tracing::warn!(
                    event = "REAL_PRICE_UNKNOWN_CURRENCY",
                    ledger_id = row.id,
                    currency = %unit,
                    "no price file has this currency: the estimate stands"
                );
                continue;
            };
            let mut tx = self.store().begin().await?;
            if tx
                .set_real_price(row.id, real, &unit, reporting, self.now())
                .await?
            {
                recorded += 1;
            }
            tx.commit().await?;
        }
        Ok(recorded)
    }

    /// Costs with `from` ≤ time < `to`, grouped, in the reporting currency.
    pub async fn cost_report(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        group_by: GroupBy,
    ) -> Result<Vec<CostGroup>, EngineError> {
        let mut tx = self.store().begin().await?;
        let rows = tx.cost_groups(from, to, group_by).await?;
        tx.commit().await?;
        Ok(rows)
    }

    /// An owner's costs this month and in all, in the reporting currency.
    pub async fn owner_costs(&self, owner_id: &OwnerId) -> Result<OwnerCosts, EngineError> {
        let (month_start, month) = Period::Month.start(self.now());
        let mut tx = self.store().begin().await?;
        let (this_month, all_time) = tx.owner_costs(owner_id, month_start).await?;
        tx.commit().await?;
        Ok(OwnerCosts {
            currency: self.costs.prices.reporting_currency().to_owned(),
            month,
            this_month,
            all_time,
        })
    }

    /// The budget status with the alerts of the current periods and how many owners are held.
    pub async fn budget_report(&self) -> Result<BudgetReport, EngineError> {
        let now = self.now();
        let mut tx = self.store().begin().await?;
        let status = self.budget_check(&mut tx, now).await?;
        let alerts = tx.budget_alerts(&status.day.key, &status.month.key).await?;
        let held_owners = tx.held_owners().await?;
        tx.commit().await?;
        Ok(BudgetReport {
            status,
            alerts,
            held_owners,
        })
    }

    /// Sets `onboard_spend_total{kind}` from the ledger: every replica reports the same totals.
    pub async fn publish_spend(&self) -> Result<(), EngineError> {
        let since = DateTime::<Utc>::UNIX_EPOCH;
        let until = self.now() + Duration::days(1);
        let rows = self.cost_report(since, until, GroupBy::Kind).await?;
        let by_kind: HashMap<String, i64> = rows
            .into_iter()
            .filter_map(|r| r.key.map(|k| (k, r.reporting_micros)))
            .collect();
        for kind in CostKind::ALL {
            let micros = by_kind.get(kind.as_str()).copied().unwrap_or(0);
            metrics::gauge!("onboard_spend_total", "kind" => kind.as_str())
                .set(Amount(micros).as_units_f64());
        }
        Ok(())
    }
}

/// An owner's costs for the admin API and the console.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OwnerCosts {
    pub currency: String,
    /// `2026-11`.
    pub month: String,
    #[serde(serialize_with = "as_decimal")]
    pub this_month: Amount,
    #[serde(serialize_with = "as_decimal")]
    pub all_time: Amount,
}

/// What `GET /admin/api/costs` shows of budgets.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BudgetReport {
    #[serde(flatten)]
    pub status: BudgetStatus,
    pub alerts: Vec<BudgetAlert>,
    pub held_owners: i64,
}

/// How long an ops email attempt may take before its row is claimed again (and given up).
const OPS_EMAIL_LEASE: Duration = Duration::minutes(5);

fn ops_email_given_up(alert: &BudgetAlert, error: &str) {
    tracing::error!(
        event = "OPS_ALERT_EMAIL_GIVEN_UP",
        period = %alert.period,
        level = %alert.level,
        error = %mask_pii(error),
    );
}

/// The email to ops for a budget alert: what was spent against which budget, and what the guard
/// does meanwhile.
fn ops_alert_email(alert: &BudgetAlert, currency: &str) -> (String, String) {
    let spent = Amount(alert.spent_micros);
    let budget = Amount(alert.budget_micros);
    let which = if alert.period == "day" {
        "daily"
    } else {
        "monthly"
    };
    if alert.level == "exceeded" {
        (
            format!("Budget exceeded: {which} {}", alert.period_start),
            format!(
                "The {which} budget for {} is used up: {spent} {currency} spent of {budget} {currency}.\n\n\
                 Until the period turns, the pool keeper buys numbers only for paid owners waiting \
                 for one, reminders and caller text-backs wait, and new owners are told we are full \
                 and served first when it turns. Replies, payment texts, verification calls and \
                 missed-call alerts go out as usual.",
                alert.period_start
            ),
        )
    } else {
        (
            format!("Budget at 80%: {which} {}", alert.period_start),
            format!(
                "80% of the {which} budget for {} is spent: {spent} {currency} of {budget} {currency}.",
                alert.period_start
            ),
        )
    }
}

/// The ledger rows for what an outbox batch sent: a text Twilio accepted, priced by its
/// segments (GSM-7 or UCS-2) in the country it went to; an email the server accepted, one each.
/// `messages` is the batch, by id. A verification call is priced when its final status gives the
/// duration.
pub fn sent_costs<'a>(
    prices: &Prices,
    results: &[OutboundResult],
    messages: &'a HashMap<i64, (OwnerId, PhoneNumber, String, OutboundKind)>,
    now: DateTime<Utc>,
) -> Vec<(NewCostOwned, Option<&'a OwnerId>)> {
    results
        .iter()
        .filter_map(|result| {
            let OutboundOutcome::Finish {
                status,
                twilio_sid,
                retry_at: None,
                ..
            } = &result.outcome
            else {
                return None;
            };
            if matches!(
                status,
                OutboundStatus::Failed
                    | OutboundStatus::Undelivered
                    | OutboundStatus::Suppressed
                    | OutboundStatus::Simulated
            ) {
                return None;
            }
            let (owner_id, to, body, kind) = messages.get(&result.id)?;
            let (source_key, cost_kind, quantity, provider_id) = match kind {
                OutboundKind::Sms => (
                    format!("sms_out:{}", result.id),
                    CostKind::SmsOutbound,
                    crate::sms::segments(body) as i64,
                    Some(twilio_sid.clone()?),
                ),
                OutboundKind::Email => (format!("email:{}", result.id), CostKind::Email, 1, None),
                OutboundKind::VerifyCall => return None,
            };
            let estimate = prices.estimate(to.country(), cost_kind, quantity);
            Some((
                NewCostOwned {
                    source_key,
                    kind: cost_kind,
                    quantity,
                    country: to.country(),
                    currency: estimate.currency,
                    estimated: estimate.amount,
                    reporting: estimate.reporting,
                    provider_id,
                    at: now,
                },
                Some(owner_id),
            ))
        })
        .collect()
}

/// A [`NewCost`] that owns its strings, built outside a transaction.
#[derive(Debug, Clone)]
pub struct NewCostOwned {
    pub source_key: String,
    pub kind: CostKind,
    pub quantity: i64,
    pub country: Country,
    pub currency: String,
    pub estimated: Amount,
    pub reporting: Amount,
    /// Twilio's sid, for its real price later; none for an email.
    pub provider_id: Option<String>,
    pub at: DateTime<Utc>,
}

impl NewCostOwned {
    pub fn as_new<'a>(&'a self, owner_id: Option<&'a OwnerId>) -> NewCost<'a> {
        NewCost {
            source_key: self.source_key.clone(),
            owner_id,
            kind: self.kind,
            quantity: self.quantity,
            country: self.country,
            currency: &self.currency,
            estimated: self.estimated,
            reporting: self.reporting,
            provider_id: self.provider_id.as_deref(),
            at: self.at,
        }
    }
}

/// The cost keeper, every `period` until shutdown: budget alerts and gauges, this month's rent,
/// held owners served once the budget allows, and (with Twilio credentials) real prices.
pub async fn keep<S: Store>(
    engine: &Engine<S>,
    twilio: Option<&TwilioClient>,
    mailer: Option<&Mailer>,
    period: std::time::Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    while !*shutdown.borrow() {
        if let Err(e) = run_once(engine, twilio, mailer).await {
            tracing::error!(event = "COST_KEEPER_ERROR", error = %e);
        }
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// One run of the cost keeper.
pub async fn run_once<S: Store>(
    engine: &Engine<S>,
    twilio: Option<&TwilioClient>,
    mailer: Option<&Mailer>,
) -> Result<(), EngineError> {
    engine.budget_status().await?;
    if let Some(mailer) = mailer {
        engine.email_ops_alerts(mailer).await?;
    }
    engine.charge_rent().await?;
    engine.release_held_owners().await?;
    if let Some(twilio) = twilio {
        engine.record_real_prices(twilio).await?;
    }
    engine.publish_spend().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<CostConfig, ConfigError> {
        CostConfig::from_lookup(|name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn budgets_are_amounts_in_the_reporting_currency() {
        let c = config(&[("BUDGET_DAILY", "25"), ("BUDGET_MONTHLY", "400.50")]).unwrap();
        assert_eq!(c.daily, Some(Amount(25_000_000)));
        assert_eq!(c.monthly, Some(Amount(400_500_000)));
        assert_eq!(c.prices.reporting_currency(), "GBP");
        let c = config(&[]).unwrap();
        assert_eq!((c.daily, c.monthly), (None, None));
    }

    #[test]
    fn bad_settings_name_themselves() {
        for (name, value) in [
            ("BUDGET_DAILY", "lots"),
            ("BUDGET_DAILY", "0"),
            ("BUDGET_MONTHLY", "-5"),
            ("REPORTING_CURRENCY", "pounds"),
            ("REPORTING_CURRENCY", "EUR"),
            ("PRICES_DIR", "/no/such/dir"),
        ] {
            let err = config(&[(name, value)]).unwrap_err();
            assert!(err.to_string().starts_with(name), "{name}: {err}");
        }
    }

    #[test]
    fn periods_start_at_utc_midnight_and_the_first_of_the_month() {
        let now = Utc.with_ymd_and_hms(2026, 11, 30, 14, 5, 0).unwrap();
        let (day, key) = Period::Day.start(now);
        assert_eq!(day, Utc.with_ymd_and_hms(2026, 11, 30, 0, 0, 0).unwrap());
        assert_eq!(key, "2026-11-30");
        let (month, key) = Period::Month.start(now);
        assert_eq!(month, Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap());
        assert_eq!(key, "2026-11");
    }
}
