//! `GET /admin`: Today. Owners started, paid and completed (today and the last 7 days), the
//! funnel per state with the conversion between steps, the pool per country, the outbox, spend
//! and the Twilio circuit.

use std::collections::BTreeMap;

use axum::Extension;
use axum::extract::State;
use chrono::{Duration, NaiveTime};
use maud::{Markup, html};

use super::{Nav, Page, Result, Session, layout, when};
use crate::conversation::StateName;
use crate::costs::{BudgetStatus, PeriodSpend};
use crate::http::AppState;
use crate::store::Store;
use crate::store::console::Activity;

/// One bar of the funnel: a state, its owners, and the share of the previous step's owners who
/// got this far.
#[derive(Debug, Clone, PartialEq)]
pub struct FunnelStep {
    pub state: &'static str,
    /// Owners in this state now.
    pub owners: i64,
    /// Owners in this state or any later one.
    pub reached: i64,
    /// `reached` over the previous step's `reached`, in percent; None for the first step or
    /// when no owner reached the previous one.
    pub conversion: Option<f64>,
}

/// The funnel from the owners per state: the states are steps in order, so an owner in a later
/// state has passed every earlier one.
pub fn funnel(by_state: &[(String, i64)]) -> Vec<FunnelStep> {
    let owners: Vec<i64> = StateName::ALL
        .iter()
        .map(|state| {
            by_state
                .iter()
                .filter(|(s, _)| s == state.as_str())
                .map(|(_, n)| *n)
                .sum()
        })
        .collect();
    let mut steps = Vec::with_capacity(owners.len());
    for (i, state) in StateName::ALL.iter().enumerate() {
        let reached: i64 = owners[i..].iter().sum();
        let previous: i64 = if i == 0 {
            0
        } else {
            owners[i - 1..].iter().sum()
        };
        let conversion = (i > 0 && previous > 0).then(|| reached as f64 * 100.0 / previous as f64);
        steps.push(FunnelStep {
            state: state.as_str(),
            owners: owners[i],
            reached,
            conversion,
        });
    }
    steps
}

/// The funnel as a horizontal SVG bar chart: one bar per state, its width the owners who reached
/// it. Scales to its container, so it reads at 375 px as at 1440 px.
fn funnel_chart(steps: &[FunnelStep]) -> Markup {
    let max = steps.iter().map(|s| s.reached).max().unwrap_or(0).max(1);
    let row = 28;
    let height = row * steps.len() as i64 + 4;
    html! {
        svg.funnel viewBox={ "0 0 680 " (height) } role="img"
            aria-label="Owners who reached each step" preserveAspectRatio="xMinYMin meet" {
            @for (i, step) in steps.iter().enumerate() {
                @let y = i as i64 * row + 2;
                @let width = 4 + step.reached * 396 / max;
                text x="0" y=(y + 18) class="label" { (step.state) }
                rect x="200" y=(y + 4) width=(width) height="18" rx="3" class="bar" {}
                text x=(204 + width) y=(y + 18) class="value" {
                    (step.reached)
                    @if let Some(c) = step.conversion { " · " (format!("{c:.0}%")) }
                }
            }
        }
    }
}

fn activity_row(name: &str, today: i64, week: i64) -> Markup {
    html! { tr { th scope="row" { (name) } td.num { (today) } td.num { (week) } } }
}

/// Spend today (and this month) against the budgets, from the ledger.
fn spend_section(status: &BudgetStatus) -> Markup {
    let line = |label: &str, spend: &PeriodSpend| {
        html! {
            tr {
                th scope="row" { (label) }
                td.num { (spend.spent.to_string()) }
                td.num {
                    @match spend.budget {
                        Some(budget) => (budget.to_string()),
                        None => span.muted { "no limit" },
                    }
                }
                td.num {
                    @match spend.used_ratio {
                        Some(ratio) => span.bad[spend.exceeded] { (format!("{:.0}%", ratio * 100.0)) },
                        None => "",
                    }
                }
            }
        }
    };
    html! {
        section.card #spend {
            h2 { "Spend today" }
            p.muted { "Spend today against the budget, in " (status.currency) " (UTC day and month)." }
            table {
                thead { tr { th {} th.num { "Spent" } th.num { "Budget" } th.num { "Used" } } }
                tbody {
                    (line("Today", &status.day))
                    (line("This month", &status.month))
                }
            }
            @if status.exceeded() {
                p.notice.bad { "A budget is used up: pool purchases, reminders and new owners wait for the period to turn." }
            }
        }
    }
}

pub async fn page<S: Store>(
    State(app): State<AppState<S>>,
    Extension(session): Extension<Session>,
) -> Result<Page> {
    let store = app.engine.store();
    let now = app.engine.now();
    let midnight = now.date_naive().and_time(NaiveTime::MIN).and_utc();
    let today: Activity = store.activity_since(midnight).await?;
    let week: Activity = store.activity_since(now - Duration::days(7)).await?;
    let steps = funnel(&store.owners_by_state().await?);
    let mut pool: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
    for (country, status, n) in store.pool_by_country().await? {
        pool.entry(country).or_default().insert(status, n);
    }
    let outbox = store.outbox_health().await?;
    let low_water = app.config.pool_low_water;
    let breaker = app.twilio_breaker.as_ref();
    let spend = app.engine.budget_status().await?;
    let body = html! {
        h1 { "Today" }
        p.muted { "As of " (when(now)) "; today is since midnight UTC." }
        div.grid {
            section.card #activity {
                h2 { "Owners" }
                table {
                    thead { tr { th {} th.num { "Today" } th.num { "7 days" } } }
                    tbody {
                        (activity_row("Started", today.started, week.started))
                        (activity_row("Paid", today.paid, week.paid))
                        (activity_row("Completed", today.completed, week.completed))
                    }
                }
            }
            section.card #outbox {
                h2 { "Outbox" }
                p { strong { (outbox.backlog) } " waiting to be sent" }
                @if let Some(oldest) = outbox.oldest_waiting {
                    p.muted { "oldest since " (when(oldest)) }
                }
                p.bad[outbox.failed > 0] { strong { (outbox.failed) } " failed" }
                p { a href="/admin/webhooks?provider=twilio&status=failed" { "Failed deliveries" } }
            }
            section.card #twilio {
                h2 { "Twilio circuit" }
                @match breaker {
                    None => p.muted { "No numbers are bought (POOL_TARGET unset): no circuit." },
                    Some(b) if b.is_open() => p.bad {
                        strong { "Open" } ": purchases paused after "
                        (b.consecutive_failures()) " failures in a row"
                        @if let Some(at) = b.opened_at() { ", since " (when(at)) }
                    },
                    Some(b) => p.good {
                        strong { "Closed" } ": purchases go through ("
                        (b.consecutive_failures()) " failures in a row)"
                    },
                }
            }
            (spend_section(&spend))
        }
        section.card #funnel {
            h2 { "Funnel" }
            p.muted { "Owners who reached each step, and the share of the step before." }
            (funnel_chart(&steps))
            table.compact {
                thead { tr { th { "State" } th.num { "Now" } th.num { "Reached" } th.num { "Conversion" } } }
                tbody {
                    @for step in &steps {
                        tr {
                            th scope="row" { (step.state) }
                            td.num { (step.owners) }
                            td.num { (step.reached) }
                            td.num { @match step.conversion { Some(c) => (format!("{c:.0}%")), None => "–" } }
                        }
                    }
                }
            }
        }
        section.card #pool {
            h2 { "Pool by country" }
            @if pool.is_empty() {
                p.bad { "The pool is empty: no owner can get a number." }
            } @else {
                table {
                    thead { tr { th { "Country" } th.num { "Available" } th.num { "Reserved" } th.num { "Assigned" } th.num { "Quarantined" } th { "Health" } } }
                    tbody {
                        @for (country, counts) in &pool {
                            @let available = counts.get("AVAILABLE").copied().unwrap_or(0);
                            tr {
                                th scope="row" { (country) }
                                @for status in ["AVAILABLE", "RESERVED", "ASSIGNED", "QUARANTINED"] {
                                    td.num { (counts.get(status).copied().unwrap_or(0)) }
                                }
                                @if available >= low_water {
                                    td.good { "healthy" }
                                } @else {
                                    td.bad { "low (under " (low_water) ")" }
                                }
                            }
                        }
                    }
                }
            }
            p { a href="/admin/pool" { "The pool" } }
        }
    };
    Ok(layout("Today", Nav::Today, &session, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_funnel_counts_later_states_as_having_passed_earlier_ones() {
        let steps = funnel(&[
            ("S1_BUSINESS_TYPE_LOCATION".into(), 2),
            ("S2_BUSINESS_NAME".into(), 1),
            ("COMPLETE".into(), 1),
        ]);
        assert_eq!(steps.len(), StateName::ALL.len());
        assert_eq!(
            (steps[0].owners, steps[0].reached, steps[0].conversion),
            (2, 4, None)
        );
        assert_eq!((steps[1].owners, steps[1].reached), (1, 2));
        assert_eq!(steps[1].conversion, Some(50.0));
        assert_eq!(steps[2].reached, 1);
        assert_eq!(steps[2].conversion, Some(50.0));
        assert_eq!(steps[9].owners, 1);
        assert_eq!(steps[9].conversion, Some(100.0));
    }

    #[test]
    fn no_owners_is_no_conversion() {
        let steps = funnel(&[]);
        assert!(
            steps
                .iter()
                .all(|s| s.reached == 0 && s.conversion.is_none())
        );
    }
}
