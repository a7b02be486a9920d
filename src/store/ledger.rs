//! The cost ledger, budget alerts and owners held by the budget guard (migration 0020), in the
//! event's transaction.
//!
//! Every row has a `source_key` naming what it is for (`sms_in:<MessageSid>`,
//! `rent:<number>:<month>`, ...), unique in the table: a retried webhook, a late outbox worker or a
//! second replica inserts nothing twice (`ON CONFLICT DO NOTHING`). The SQL is the same on both
//! back ends but for row locks and how a time becomes a UTC day.

use std::future::Future;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::Result;
use crate::domain::{Country, OwnerId, PhoneNumber};
use crate::prices::{Amount, CostKind};

/// A billable thing, as the shell priced it.
#[derive(Debug, Clone)]
pub struct NewCost<'a> {
    /// Unique per billable thing (see the module's notes).
    pub source_key: String,
    pub owner_id: Option<&'a OwnerId>,
    pub kind: CostKind,
    pub quantity: i64,
    pub country: Country,
    pub currency: &'a str,
    pub estimated: Amount,
    /// `estimated` in the reporting currency.
    pub reporting: Amount,
    /// The message or call sid whose real price will replace the estimate, if there is one.
    pub provider_id: Option<&'a str>,
    pub at: DateTime<Utc>,
}

/// What the ledger needs to know about a finished call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallForCosts {
    pub owner_id: Option<OwnerId>,
    /// Twilio's `Direction`: `inbound`, `outbound-api`, ...
    pub direction: String,
    pub to: String,
    pub duration_secs: Option<i32>,
}

/// A ledger row still waiting for its real price.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unpriced {
    pub id: i64,
    pub kind: CostKind,
    pub provider_id: String,
    pub price_checks: i32,
}

/// One row of a cost report: a day, a kind or an owner (`None`: the pool's own costs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CostGroup {
    pub key: Option<String>,
    pub entries: i64,
    pub quantity: i64,
    pub reporting_micros: i64,
}

/// How a cost report is grouped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    Day,
    Kind,
    Owner,
}

impl GroupBy {
    pub fn parse(raw: &str) -> Option<GroupBy> {
        match raw {
            "day" => Some(GroupBy::Day),
            "kind" => Some(GroupBy::Kind),
            "owner" => Some(GroupBy::Owner),
            _ => None,
        }
    }
}

/// A budget alert as stored: once per period, level and period start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BudgetAlert {
    pub period: String,
    pub period_start: String,
    pub level: String,
    pub spent_micros: i64,
    pub budget_micros: i64,
    pub at: DateTime<Utc>,
}

/// A pool number due its monthly charge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RentDue {
    pub number: PhoneNumber,
    pub country: Country,
    pub owner_id: Option<OwnerId>,
}

pub(super) const RECORD_COST: &str = "INSERT INTO cost_ledger (source_key, owner_id, kind, \
         quantity, country, currency, estimated_micros, reporting_micros, provider_id, at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
     ON CONFLICT (source_key) DO NOTHING";

pub(super) const RECORD_PURCHASE: &str = "INSERT INTO pool_purchases (twilio_sid, e164, \
         purchased_at) VALUES ($1, $2, $3)";

pub(super) const CALL_FOR_COSTS: &str = "SELECT owner_id, direction, to_addr, duration_secs \
     FROM calls WHERE call_sid = $1";

pub(super) const SPENT_SINCE: &str = "SELECT CAST(COALESCE(SUM(reporting_micros), 0) AS BIGINT) \
     FROM cost_ledger WHERE at >= $1";

pub(super) const CLAIM_ALERT: &str = "INSERT INTO budget_alerts (period, period_start, level, \
         spent_micros, budget_micros, at) VALUES ($1, $2, $3, $4, $5, $6) \
     ON CONFLICT (period, period_start, level) DO NOTHING";

/// Records where an alert's email to ops stands: attempted at `$4`, sent at `$5`, or given up
/// with `$6`.
pub(super) const RECORD_ALERT_EMAIL: &str = "UPDATE budget_alerts SET email_attempted_at = $4, \
         emailed_at = $5, email_error = $6 \
     WHERE period = $1 AND period_start = $2 AND level = $3";

/// The oldest alert stored since `$1` whose email to ops is neither sent nor given up, and not
/// being sent now (an attempt begun before `$2` that never finished is returned: it may have gone),
/// with whether an attempt was begun.
macro_rules! unsent_alert {
    () => {
        "SELECT period, period_start, level, spent_micros, budget_micros, at, \
             email_attempted_at IS NOT NULL AS attempted FROM budget_alerts \
         WHERE emailed_at IS NULL AND email_error IS NULL AND at >= $1 \
           AND (email_attempted_at IS NULL OR email_attempted_at < $2) \
         ORDER BY at, period, level LIMIT 1"
    };
}
pub(super) use unsent_alert;

pub(super) const ALERTS: &str = "SELECT period, period_start, level, spent_micros, \
         budget_micros, at FROM budget_alerts \
     WHERE (period = 'day' AND period_start = $1) OR (period = 'month' AND period_start = $2) \
     ORDER BY at, period, CASE level WHEN 'warning' THEN 0 ELSE 1 END";

/// `$1` ≤ at < `$2`, grouped by what `$key` names.
macro_rules! grouped {
    ($key:literal) => {
        concat!(
            "SELECT ",
            $key,
            " AS k, COUNT(*) AS entries, CAST(COALESCE(SUM(quantity), 0) AS BIGINT) AS quantity, \
                 CAST(COALESCE(SUM(reporting_micros), 0) AS BIGINT) AS reporting \
             FROM cost_ledger WHERE at >= $1 AND at < $2 GROUP BY k ORDER BY k"
        )
    };
}

pub(super) const BY_KIND: &str = grouped!("kind");
pub(super) const BY_OWNER: &str = grouped!("owner_id");

pub(super) mod postgres {
    pub const BY_DAY: &str = grouped!("to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD')");

    // Many rows at once are a part of the held writes' one statement (`postgres::write_event`).
}

pub(super) mod sqlite {
    /// Times are stored as RFC 3339 in UTC (`2026-11-30T09:00:00+00:00`): the day is the first ten.
    pub const BY_DAY: &str = grouped!("substr(at, 1, 10)");

    /// The held ledger rows (`write.rs`) in one statement: `$1` a JSON array of
    /// [`super::cost_rows`]. (`WHERE true`: an
    /// upsert's SELECT needs a WHERE, or SQLite reads ON as a join's.)
    pub const RECORD_COSTS: &str = "INSERT INTO cost_ledger (source_key, owner_id, kind, \
             quantity, country, currency, estimated_micros, reporting_micros, provider_id, at) \
         SELECT json_extract(value, '$.source_key'), json_extract(value, '$.owner_id'), \
             json_extract(value, '$.kind'), json_extract(value, '$.quantity'), \
             json_extract(value, '$.country'), json_extract(value, '$.currency'), \
             json_extract(value, '$.estimated_micros'), json_extract(value, '$.reporting_micros'), \
             json_extract(value, '$.provider_id'), json_extract(value, '$.at') \
         FROM json_each($1) WHERE true \
         ON CONFLICT (source_key) DO NOTHING";
}

/// The rows `postgres::write_event` and [`sqlite::RECORD_COSTS`] read. Times are written as
/// sqlx writes a time into SQLite (see `store/outbox.rs`), which PostgreSQL reads as well.
pub(super) fn cost_rows(costs: &[NewCost<'_>]) -> serde_json::Value {
    use chrono::SecondsFormat;
    serde_json::Value::Array(
        costs
            .iter()
            .map(|c| {
                serde_json::json!({
                    "source_key": c.source_key,
                    "owner_id": c.owner_id.map(|id| id.as_str()),
                    "kind": c.kind.as_str(),
                    "quantity": c.quantity,
                    "country": c.country.code(),
                    "currency": c.currency,
                    "estimated_micros": c.estimated.micros(),
                    "reporting_micros": c.reporting.micros(),
                    "provider_id": c.provider_id,
                    "at": c.at.to_rfc3339_opts(SecondsFormat::AutoSi, false),
                })
            })
            .collect(),
    )
}

pub(super) const OWNER_COSTS: &str = "SELECT \
         CAST(COALESCE(SUM(CASE WHEN at >= $2 THEN reporting_micros ELSE 0 END), 0) AS BIGINT), \
         CAST(COALESCE(SUM(reporting_micros), 0) AS BIGINT) \
     FROM cost_ledger WHERE owner_id = $1";

/// Numbers we hold with no charge yet for the month starting `$1` (key `$2`), bought before that
/// month (a purchase pays its own first month). Quarantined numbers are still ours, and cost.
macro_rules! rent_due {
    () => {
        "SELECT p.e164, p.country, p.owner_id FROM pool_numbers p \
         WHERE p.created_at < $1 \
           AND NOT EXISTS (SELECT 1 FROM cost_ledger l WHERE l.source_key = 'rent:' || p.e164 || ':' || $2) \
           AND NOT EXISTS (SELECT 1 FROM pool_purchases b WHERE b.e164 = p.e164 AND b.purchased_at >= $1) \
         ORDER BY p.e164 LIMIT $3"
    };
}

/// Rows waiting for their real price (see [`LedgerTx::unpriced`]).
macro_rules! unpriced {
    () => {
        "SELECT id, kind, provider_id, price_checks FROM cost_ledger \
         WHERE provider_id IS NOT NULL AND real_micros IS NULL AND at <= $1 AND price_checks < $3 \
           AND (price_checked_at IS NULL OR price_checked_at <= $4) \
         ORDER BY at, id LIMIT $2"
    };
}

pub(super) const SET_REAL_PRICE: &str = "UPDATE cost_ledger SET real_micros = $2, \
         real_currency = $3, reporting_micros = $4, price_checks = price_checks + 1, \
         price_checked_at = $5 \
     WHERE id = $1 AND real_micros IS NULL";

pub(super) const NOTE_PRICE_CHECK: &str = "UPDATE cost_ledger SET \
         price_checks = price_checks + 1, price_checked_at = $2 WHERE id = $1";

pub(super) const HOLD_OWNER: &str = "INSERT INTO budget_held_owners (owner_id, first_text, held_at) \
     VALUES ($1, $2, $3) ON CONFLICT (owner_id) DO NOTHING";

pub(super) const HELD_OWNER: &str = "SELECT first_text FROM budget_held_owners WHERE owner_id = $1";

pub(super) const RELEASE_OWNER: &str = "DELETE FROM budget_held_owners WHERE owner_id = $1";

pub(super) const HELD_COUNT: &str = "SELECT COUNT(*) FROM budget_held_owners";

/// The oldest held owner: replicas skip rows another holds.
macro_rules! oldest_held {
    () => {
        "SELECT owner_id, first_text FROM budget_held_owners ORDER BY held_at, owner_id LIMIT 1"
    };
}
pub(super) use {oldest_held, rent_due, unpriced};

/// What costs and budgets need inside a transaction; every [`super::Tx`] has it.
pub trait LedgerTx: Send {
    /// Writes a ledger row. False when its `source_key` was already recorded (nothing written).
    fn record_cost(&mut self, cost: &NewCost<'_>) -> impl Future<Output = Result<bool>> + Send;

    /// Writes many ledger rows (an event's text in and reply, an outbox batch), each once by its
    /// `source_key`. Held (`write.rs`): they go with the event's other writes, and every other
    /// method here sends what is held first, so its reads see them.
    fn record_costs(&mut self, costs: &[NewCost<'_>]) -> impl Future<Output = Result<()>> + Send;

    /// Records a number bought for the pool (the daily cap counts it), for the same transaction
    /// as its ledger row.
    fn record_pool_purchase(
        &mut self,
        twilio_sid: &str,
        e164: &PhoneNumber,
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<()>> + Send;

    /// The call as stored, for pricing once it is over.
    fn call_for_costs(
        &mut self,
        call_sid: &str,
    ) -> impl Future<Output = Result<Option<CallForCosts>>> + Send;

    /// Everything spent since `since`, in the reporting currency.
    fn spent_since(&mut self, since: DateTime<Utc>) -> impl Future<Output = Result<Amount>> + Send;

    /// Stores a budget alert once per (period, start, level). True for the one caller that
    /// stored it: that one logs and counts it.
    fn claim_budget_alert(
        &mut self,
        alert: &BudgetAlert,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// The oldest alert stored since `since` not yet emailed to ops (nor given up), locked:
    /// `SKIP LOCKED` on PostgreSQL, so of two replicas only one emails it. An attempt begun
    /// before `stale` that never finished comes back with `true`: it may have gone.
    fn claim_unsent_alert(
        &mut self,
        since: DateTime<Utc>,
        stale: DateTime<Utc>,
    ) -> impl Future<Output = Result<Option<(BudgetAlert, bool)>>> + Send;

    /// Records where an alert's email to ops stands: an attempt begun, sent, or given up.
    fn record_alert_email(
        &mut self,
        alert: &BudgetAlert,
        attempted_at: Option<DateTime<Utc>>,
        emailed_at: Option<DateTime<Utc>>,
        error: Option<&str>,
    ) -> impl Future<Output = Result<()>> + Send;

    /// The alerts of the day `day` (`2026-11-30`) and the month `month` (`2026-11`).
    fn budget_alerts(
        &mut self,
        day: &str,
        month: &str,
    ) -> impl Future<Output = Result<Vec<BudgetAlert>>> + Send;

    /// Costs with `from` ≤ time < `to`, grouped.
    fn cost_groups(
        &mut self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        group_by: GroupBy,
    ) -> impl Future<Output = Result<Vec<CostGroup>>> + Send;

    /// An owner's costs since `month_start`, and in all, in the reporting currency.
    fn owner_costs(
        &mut self,
        owner_id: &OwnerId,
        month_start: DateTime<Utc>,
    ) -> impl Future<Output = Result<(Amount, Amount)>> + Send;

    /// Up to `limit` numbers not yet charged for the month starting `month_start` (`month` as
    /// `2026-11`), locked: replicas skip each other's.
    fn rent_due(
        &mut self,
        month_start: DateTime<Utc>,
        month: &str,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<RentDue>>> + Send;

    /// Rows with a provider id and no real price, written at or before `before`, asked about
    /// fewer than `max_checks` times and not since `checked_before`; locked, replicas skip.
    fn unpriced(
        &mut self,
        before: DateTime<Utc>,
        checked_before: DateTime<Utc>,
        max_checks: i32,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<Unpriced>>> + Send;

    /// Replaces a row's estimate by the provider's real price.
    fn set_real_price(
        &mut self,
        id: i64,
        real: Amount,
        currency: &str,
        reporting: Amount,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// The provider had no price yet: asked once more.
    fn note_price_check(
        &mut self,
        id: i64,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Holds a new owner until the budget allows (their first text kept to read then).
    fn hold_owner(
        &mut self,
        owner_id: &OwnerId,
        first_text: &str,
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<()>> + Send;

    /// The first text of a held owner; `None` when they are not held.
    fn held_owner(
        &mut self,
        owner_id: &OwnerId,
    ) -> impl Future<Output = Result<Option<String>>> + Send;

    fn release_owner(&mut self, owner_id: &OwnerId) -> impl Future<Output = Result<()>> + Send;

    /// The longest-held owner with their first text, locked; replicas skip each other's.
    fn claim_oldest_held(
        &mut self,
    ) -> impl Future<Output = Result<Option<(OwnerId, String)>>> + Send;

    /// How many owners are held.
    fn held_owners(&mut self) -> impl Future<Output = Result<i64>> + Send;
}

pub(super) fn parse_kind(raw: &str) -> Result<CostKind> {
    CostKind::parse(raw).ok_or_else(|| super::StoreError::Corrupt {
        table: "cost_ledger",
        detail: format!("kind {raw:?}"),
    })
}

/// The [`LedgerTx`] SQL, the same on both back ends but for row locks and the day's expression.
macro_rules! impl_ledger_tx {
    (
        $tx:ty,
        skip_locked = $skip_locked:literal,
        by_day = $by_day:path $(,)?
    ) => {
        const _: () = {
            use chrono::{DateTime, Utc};

            use $crate::domain::{Country, OwnerId, PhoneNumber};
            use $crate::prices::Amount;
            use $crate::store::Result;
            use $crate::store::ledger::{
                ALERTS, BY_KIND, BY_OWNER, BudgetAlert, CALL_FOR_COSTS, CLAIM_ALERT, CallForCosts,
                CostGroup, GroupBy, HELD_COUNT, HELD_OWNER, HOLD_OWNER, LedgerTx, NOTE_PRICE_CHECK,
                NewCost, OWNER_COSTS, RECORD_ALERT_EMAIL, RECORD_COST, RECORD_PURCHASE,
                RELEASE_OWNER, RentDue, SET_REAL_PRICE, SPENT_SINCE, Unpriced, oldest_held,
                parse_kind, rent_due, unpriced, unsent_alert,
            };

            impl LedgerTx for $tx {
                async fn record_cost(&mut self, cost: &NewCost<'_>) -> Result<bool> {
                    self.flush().await?;
                    Ok(sqlx::query(RECORD_COST)
                        .bind(&cost.source_key)
                        .bind(cost.owner_id.map(|id| id.as_str()))
                        .bind(cost.kind.as_str())
                        .bind(cost.quantity)
                        .bind(cost.country.code())
                        .bind(cost.currency)
                        .bind(cost.estimated.micros())
                        .bind(cost.reporting.micros())
                        .bind(cost.provider_id)
                        .bind(cost.at)
                        .execute(&mut *self.0)
                        .await?
                        .rows_affected()
                        == 1)
                }

                async fn record_costs(&mut self, costs: &[NewCost<'_>]) -> Result<()> {
                    self.1.costs(costs);
                    Ok(())
                }

                async fn record_pool_purchase(
                    &mut self,
                    twilio_sid: &str,
                    e164: &PhoneNumber,
                    at: DateTime<Utc>,
                ) -> Result<()> {
                    self.flush().await?;
                    sqlx::query(RECORD_PURCHASE)
                        .bind(twilio_sid)
                        .bind(e164.as_str())
                        .bind(at)
                        .execute(&mut *self.0)
                        .await?;
                    Ok(())
                }

                async fn call_for_costs(&mut self, call_sid: &str) -> Result<Option<CallForCosts>> {
                    self.flush().await?;
                    let row: Option<(Option<String>, String, String, Option<i32>)> =
                        sqlx::query_as(CALL_FOR_COSTS)
                            .bind(call_sid)
                            .fetch_optional(&mut *self.0)
                            .await?;
                    row.map(|(owner_id, direction, to, duration_secs)| {
                        Ok(CallForCosts {
                            owner_id: owner_id
                                .map(|id| $crate::store::row::owner_id("calls", id))
                                .transpose()?,
                            direction,
                            to,
                            duration_secs,
                        })
                    })
                    .transpose()
                }

                async fn spent_since(&mut self, since: DateTime<Utc>) -> Result<Amount> {
                    self.flush().await?;
                    let micros: i64 = sqlx::query_scalar(SPENT_SINCE)
                        .bind(since)
                        .fetch_one(&mut *self.0)
                        .await?;
                    Ok(Amount(micros))
                }

                async fn claim_budget_alert(&mut self, alert: &BudgetAlert) -> Result<bool> {
                    self.flush().await?;
                    Ok(sqlx::query(CLAIM_ALERT)
                        .bind(&alert.period)
                        .bind(&alert.period_start)
                        .bind(&alert.level)
                        .bind(alert.spent_micros)
                        .bind(alert.budget_micros)
                        .bind(alert.at)
                        .execute(&mut *self.0)
                        .await?
                        .rows_affected()
                        == 1)
                }

                async fn claim_unsent_alert(
                    &mut self,
                    since: DateTime<Utc>,
                    stale: DateTime<Utc>,
                ) -> Result<Option<(BudgetAlert, bool)>> {
                    self.flush().await?;
                    let row: Option<(String, String, String, i64, i64, DateTime<Utc>, bool)> =
                        sqlx::query_as(concat!(unsent_alert!(), $skip_locked))
                            .bind(since)
                            .bind(stale)
                            .fetch_optional(&mut *self.0)
                            .await?;
                    Ok(row.map(
                        |(
                            period,
                            period_start,
                            level,
                            spent_micros,
                            budget_micros,
                            at,
                            attempted,
                        )| {
                            let alert = BudgetAlert {
                                period,
                                period_start,
                                level,
                                spent_micros,
                                budget_micros,
                                at,
                            };
                            (alert, attempted)
                        },
                    ))
                }

                async fn record_alert_email(
                    &mut self,
                    alert: &BudgetAlert,
                    attempted_at: Option<DateTime<Utc>>,
                    emailed_at: Option<DateTime<Utc>>,
                    error: Option<&str>,
                ) -> Result<()> {
                    self.flush().await?;
                    sqlx::query(RECORD_ALERT_EMAIL)
                        .bind(&alert.period)
                        .bind(&alert.period_start)
                        .bind(&alert.level)
                        .bind(attempted_at)
                        .bind(emailed_at)
                        .bind(error)
                        .execute(&mut *self.0)
                        .await?;
                    Ok(())
                }

                async fn budget_alerts(
                    &mut self,
                    day: &str,
                    month: &str,
                ) -> Result<Vec<BudgetAlert>> {
                    self.flush().await?;
                    let rows: Vec<(String, String, String, i64, i64, DateTime<Utc>)> =
                        sqlx::query_as(ALERTS)
                            .bind(day)
                            .bind(month)
                            .fetch_all(&mut *self.0)
                            .await?;
                    Ok(rows
                        .into_iter()
                        .map(
                            |(period, period_start, level, spent_micros, budget_micros, at)| {
                                BudgetAlert {
                                    period,
                                    period_start,
                                    level,
                                    spent_micros,
                                    budget_micros,
                                    at,
                                }
                            },
                        )
                        .collect())
                }

                async fn cost_groups(
                    &mut self,
                    from: DateTime<Utc>,
                    to: DateTime<Utc>,
                    group_by: GroupBy,
                ) -> Result<Vec<CostGroup>> {
                    self.flush().await?;
                    let sql = match group_by {
                        GroupBy::Day => $by_day,
                        GroupBy::Kind => BY_KIND,
                        GroupBy::Owner => BY_OWNER,
                    };
                    let rows: Vec<(Option<String>, i64, i64, i64)> = sqlx::query_as(sql)
                        .bind(from)
                        .bind(to)
                        .fetch_all(&mut *self.0)
                        .await?;
                    Ok(rows
                        .into_iter()
                        .map(|(key, entries, quantity, reporting_micros)| CostGroup {
                            key,
                            entries,
                            quantity,
                            reporting_micros,
                        })
                        .collect())
                }

                async fn owner_costs(
                    &mut self,
                    owner_id: &OwnerId,
                    month_start: DateTime<Utc>,
                ) -> Result<(Amount, Amount)> {
                    self.flush().await?;
                    let (month, all): (i64, i64) = sqlx::query_as(OWNER_COSTS)
                        .bind(owner_id.as_str())
                        .bind(month_start)
                        .fetch_one(&mut *self.0)
                        .await?;
                    Ok((Amount(month), Amount(all)))
                }

                async fn rent_due(
                    &mut self,
                    month_start: DateTime<Utc>,
                    month: &str,
                    limit: i64,
                ) -> Result<Vec<RentDue>> {
                    self.flush().await?;
                    let rows: Vec<(String, String, Option<String>)> =
                        sqlx::query_as(concat!(rent_due!(), $skip_locked))
                            .bind(month_start)
                            .bind(month)
                            .bind(limit)
                            .fetch_all(&mut *self.0)
                            .await?;
                    rows.into_iter()
                        .map(|(e164, country, owner_id)| {
                            Ok(RentDue {
                                number: $crate::store::row::phone(
                                    "pool_numbers",
                                    || "e164".into(),
                                    &e164,
                                )?,
                                country: Country::from_code(&country).unwrap_or(Country::Other),
                                owner_id: owner_id
                                    .map(|id| $crate::store::row::owner_id("pool_numbers", id))
                                    .transpose()?,
                            })
                        })
                        .collect()
                }

                async fn unpriced(
                    &mut self,
                    before: DateTime<Utc>,
                    checked_before: DateTime<Utc>,
                    max_checks: i32,
                    limit: i64,
                ) -> Result<Vec<Unpriced>> {
                    self.flush().await?;
                    let rows: Vec<(i64, String, String, i32)> =
                        sqlx::query_as(concat!(unpriced!(), $skip_locked))
                            .bind(before)
                            .bind(limit)
                            .bind(max_checks)
                            .bind(checked_before)
                            .fetch_all(&mut *self.0)
                            .await?;
                    rows.into_iter()
                        .map(|(id, kind, provider_id, price_checks)| {
                            Ok(Unpriced {
                                id,
                                kind: parse_kind(&kind)?,
                                provider_id,
                                price_checks,
                            })
                        })
                        .collect()
                }

                async fn set_real_price(
                    &mut self,
                    id: i64,
                    real: Amount,
                    currency: &str,
                    reporting: Amount,
                    now: DateTime<Utc>,
                ) -> Result<bool> {
                    self.flush().await?;
                    Ok(sqlx::query(SET_REAL_PRICE)
                        .bind(id)
                        .bind(real.micros())
                        .bind(currency)
                        .bind(reporting.micros())
                        .bind(now)
                        .execute(&mut *self.0)
                        .await?
                        .rows_affected()
                        == 1)
                }

                async fn note_price_check(&mut self, id: i64, now: DateTime<Utc>) -> Result<()> {
                    self.flush().await?;
                    sqlx::query(NOTE_PRICE_CHECK)
                        .bind(id)
                        .bind(now)
                        .execute(&mut *self.0)
                        .await?;
                    Ok(())
                }

                async fn hold_owner(
                    &mut self,
                    owner_id: &OwnerId,
                    first_text: &str,
                    at: DateTime<Utc>,
                ) -> Result<()> {
                    self.flush().await?;
                    sqlx::query(HOLD_OWNER)
                        .bind(owner_id.as_str())
                        .bind(first_text)
                        .bind(at)
                        .execute(&mut *self.0)
                        .await?;
                    Ok(())
                }

                async fn held_owner(&mut self, owner_id: &OwnerId) -> Result<Option<String>> {
                    self.flush().await?;
                    Ok(sqlx::query_scalar(HELD_OWNER)
                        .bind(owner_id.as_str())
                        .fetch_optional(&mut *self.0)
                        .await?)
                }

                async fn release_owner(&mut self, owner_id: &OwnerId) -> Result<()> {
                    self.flush().await?;
                    sqlx::query(RELEASE_OWNER)
                        .bind(owner_id.as_str())
                        .execute(&mut *self.0)
                        .await?;
                    Ok(())
                }

                async fn claim_oldest_held(&mut self) -> Result<Option<(OwnerId, String)>> {
                    self.flush().await?;
                    let row: Option<(String, String)> =
                        sqlx::query_as(concat!(oldest_held!(), $skip_locked))
                            .fetch_optional(&mut *self.0)
                            .await?;
                    row.map(|(id, text)| {
                        Ok((
                            $crate::store::row::owner_id("budget_held_owners", id)?,
                            text,
                        ))
                    })
                    .transpose()
                }

                async fn held_owners(&mut self) -> Result<i64> {
                    self.flush().await?;
                    Ok(sqlx::query_scalar(HELD_COUNT)
                        .fetch_one(&mut *self.0)
                        .await?)
                }
            }
        };
    };
}
pub(super) use impl_ledger_tx;
