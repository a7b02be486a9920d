//! The shell around [`crate::conversation::reminders`]: timers in the database, the sweep that sends
//! due reminders through the outbox, quiet hours for other proactive texts, and expiry.
//!
//! Every text from an owner re-arms their timer in the text's own transaction. The sweep claims
//! one due timer at a time with its owner locked, lets the pure [`decide`] choose, and writes the
//! reminder to the outbox and the timer back in that same transaction: a reminder is queued once,
//! by one replica, and never after a text that came before it.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};

use crate::config::ConfigError;
use crate::conversation::reminders::{
    Action, DEFAULT_EXPIRE_AFTER, QuietHours, Schedule, Timer, decide, parse_span, reminder_text,
};
use crate::conversation::{Context, Decision, StateName};
use crate::engine::{Engine, EngineError, conversation_of};
use crate::store::reminders::{ReminderStats, ReminderTimer, ReminderTx as _};
use crate::store::{NewOutbound, Owner, Store, StoreError, Tx};
use crate::zones::Zones;

/// The reminder settings from the environment (`REMINDERS`, `QUIET_HOURS`, `QUIET_SUNDAY_UNTIL`,
/// `EXPIRE_AFTER`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReminderConfig {
    /// One schedule for every step instead of the flows' (`REMINDERS=2h,24h` or `off`).
    pub schedule: Option<Schedule>,
    pub quiet: QuietHours,
    pub expire_after: Duration,
}

impl Default for ReminderConfig {
    fn default() -> Self {
        ReminderConfig {
            schedule: None,
            quiet: QuietHours::default(),
            expire_after: DEFAULT_EXPIRE_AFTER,
        }
    }
}

impl ReminderConfig {
    /// Reads the settings through `get` (already trimmed, `None` when unset or empty).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let invalid =
            |name: &'static str| move |problem: String| ConfigError::Invalid { name, problem };
        let defaults = QuietHours::default();
        Ok(ReminderConfig {
            schedule: get("REMINDERS")
                .map(|raw| Schedule::parse(&raw).map_err(invalid("REMINDERS")))
                .transpose()?,
            quiet: QuietHours {
                night: match get("QUIET_HOURS") {
                    None => defaults.night,
                    Some(raw) => QuietHours::parse_night(&raw).map_err(invalid("QUIET_HOURS"))?,
                },
                sunday_until: match get("QUIET_SUNDAY_UNTIL") {
                    None => defaults.sunday_until,
                    Some(raw) => {
                        QuietHours::parse_sunday(&raw).map_err(invalid("QUIET_SUNDAY_UNTIL"))?
                    }
                },
            },
            expire_after: match get("EXPIRE_AFTER") {
                None => DEFAULT_EXPIRE_AFTER,
                Some(raw) => parse_span(&raw).ok_or_else(|| ConfigError::Invalid {
                    name: "EXPIRE_AFTER",
                    problem: format!("{raw:?} is not a duration like 14d or 336h"),
                })?,
            },
        })
    }
}

/// What the engine needs to run reminders.
#[derive(Debug, Clone)]
pub struct ReminderSettings {
    pub config: ReminderConfig,
    pub zones: Arc<Zones>,
}

impl ReminderSettings {
    pub fn new(config: ReminderConfig, zones: Arc<Zones>) -> Self {
        ReminderSettings { config, zones }
    }
}

impl Default for ReminderSettings {
    /// The default schedule and quiet hours, with the compiled-in zones (checked by their tests;
    /// were they ever unreadable, everyone would be on London time rather than the engine failing).
    fn default() -> Self {
        let zones = Zones::embedded().unwrap_or_else(|_| Zones::uniform(chrono_tz::Europe::London));
        ReminderSettings::new(ReminderConfig::default(), Arc::new(zones))
    }
}

/// Outcome counters of one sweep.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Sweep {
    pub sent: usize,
    pub deferred: usize,
    pub expired: usize,
    /// Nothing was looked at: a budget is exceeded.
    pub held_by_budget: bool,
}

/// A sweep never loops on one timer: every decision moves it into the future or stops it, and this
/// bounds a run in case a clock goes backwards.
const MAX_TIMERS_PER_SWEEP: usize = 10_000;

impl<S: Store> Engine<S> {
    /// Handles every reminder timer that is due: sends reminders (through the outbox), holds them
    /// through quiet hours, expires silent conversations. One transaction per timer.
    pub async fn send_reminders(&self) -> Result<Sweep, EngineError> {
        let mut sweep = Sweep::default();
        // While a budget is exceeded, due timers stay due: the reminders are held, not dropped,
        // and go out on the first sweep after the period turns (expiry waits with them).
        if !self
            .spend_allowed(crate::conversation::budget::Spend::Reminder)
            .await?
        {
            tracing::info!(
                event = "REMINDERS_HELD_BUDGET",
                "a budget is exceeded: reminders wait until the period turns"
            );
            sweep.held_by_budget = true;
            return Ok(sweep);
        }
        for _ in 0..MAX_TIMERS_PER_SWEEP {
            let now = self.now();
            let mut tx = self.store().begin().await?;
            let Some((mut timer, owner)) = tx.claim_due_reminder(now).await? else {
                break;
            };
            self.sweep_one(&mut tx, &mut timer, &owner, now, &mut sweep)
                .await?;
            tx.put_reminder_timer(&timer).await?;
            tx.commit().await?;
        }
        Ok(sweep)
    }

    async fn sweep_one(
        &self,
        tx: &mut S::Tx,
        timer: &mut ReminderTimer,
        owner: &Owner,
        now: DateTime<Utc>,
        sweep: &mut Sweep,
    ) -> Result<(), EngineError> {
        let settings = &self.reminders;
        if timer.state != owner.state {
            // A payment, a number or a test call moved the owner on without a text: reminders
            // already sent did their work, and the new step's schedule starts now.
            if timer.sent > 0 {
                self.note_moved_on(tx, owner, timer.state, now).await?;
            }
            timer.state = owner.state;
            timer.sent = 0;
            timer.anchor_at = now;
        }
        let catalog = self.flows.catalog(owner.locale);
        let delays = match &settings.config.schedule {
            Some(schedule) => schedule.delays(),
            None => catalog.reminders().schedule_for(owner.state).delays(),
        };
        let zone = settings.zones.zone_of(&owner.owner_phone);
        let conversation = conversation_of(owner);
        let action = decide(
            &Timer {
                state: timer.state,
                sent: u32::try_from(timer.sent).unwrap_or(0),
                anchor_at: timer.anchor_at,
            },
            &conversation,
            delays,
            settings.config.expire_after,
            &settings.config.quiet,
            zone,
            now,
        );
        match action {
            Action::Remind { attempt, next_due } => {
                timer.due_at = Some(next_due);
                let link = self.payment_link_for(owner);
                let ctx = Context {
                    catalog,
                    payment_link: &link,
                };
                let Some(body) = reminder_text(owner.state, &conversation, &ctx) else {
                    return Ok(());
                };
                let outbound_id = tx
                    .enqueue_outbound(&NewOutbound {
                        owner_id: &owner.id,
                        to: &owner.owner_phone,
                        body: &body,
                        created_at: now,
                    })
                    .await?;
                let attempt = i32::try_from(attempt).unwrap_or(i32::MAX);
                tx.record_reminder_sent(&owner.id, owner.state, attempt, outbound_id, now)
                    .await?;
                timer.sent = attempt.saturating_add(1);
                sweep.sent += 1;
                metrics::counter!("onboard_reminders_sent_total", "state" => owner.state.as_str())
                    .increment(1);
                tracing::info!(
                    event = "REMINDER_SENT",
                    owner_id = %owner.id,
                    phone = %owner.owner_phone.masked(),
                    state = %owner.state,
                    attempt = attempt + 1,
                );
            }
            Action::Defer { until } => {
                timer.due_at = Some(until);
                sweep.deferred += 1;
                tracing::info!(
                    event = "REMINDER_DELAYED_QUIET_HOURS",
                    owner_id = %owner.id,
                    phone = %owner.owner_phone.masked(),
                    state = %owner.state,
                    zone = %zone,
                    until = %until,
                );
            }
            Action::Wait { until } => timer.due_at = Some(until),
            Action::Expire => {
                timer.due_at = None;
                timer.expired_at = Some(now);
                sweep.expired += 1;
                tracing::info!(
                    event = "CONVERSATION_EXPIRED",
                    owner_id = %owner.id,
                    phone = %owner.owner_phone.masked(),
                    state = %owner.state,
                    last_text_at = %timer.anchor_at,
                );
                if owner.payment_active {
                    // They pay us and are not live: someone should call them.
                    metrics::counter!("onboard_paid_owners_stalled_total").increment(1);
                    tracing::warn!(
                        event = "PAID_OWNER_STALLED",
                        owner_id = %owner.id,
                        phone = %owner.owner_phone.masked(),
                        state = %owner.state,
                        last_text_at = %timer.anchor_at,
                        "a paying owner has been silent since their last text; call them"
                    );
                }
            }
            Action::Stop => timer.due_at = None,
        }
        Ok(())
    }

    /// Re-arms the owner's timer after their text (in its transaction), and counts the owner as
    /// moved on if a reminder had been sent and they are now at another step than the one it was
    /// sent at (by this text, or by a payment or a number since).
    pub(crate) async fn owner_texted(
        &self,
        tx: &mut S::Tx,
        previous: Option<ReminderTimer>,
        owner: &Owner,
        now: DateTime<Utc>,
    ) -> Result<(), EngineError> {
        if let Some(previous) = &previous
            && previous.sent > 0
            && owner.state != previous.state
        {
            self.note_moved_on(tx, owner, previous.state, now).await?;
        }
        let first = match &self.reminders.config.schedule {
            Some(schedule) => schedule.delays().first().copied(),
            None => self
                .flows
                .catalog(owner.locale)
                .reminders()
                .schedule_for(owner.state)
                .delays()
                .first()
                .copied(),
        };
        let finished = matches!(
            owner.state,
            StateName::Complete | StateName::S9TestCallDetected
        );
        let due_at = (!owner.opted_out && !finished)
            .then(|| now + first.unwrap_or(self.reminders.config.expire_after));
        tx.put_reminder_timer(&ReminderTimer {
            owner_id: owner.id.clone(),
            state: owner.state,
            sent: 0,
            anchor_at: now,
            due_at,
            expired_at: None,
        })
        .await?;
        Ok(())
    }

    async fn note_moved_on(
        &self,
        tx: &mut S::Tx,
        owner: &Owner,
        from: StateName,
        now: DateTime<Utc>,
    ) -> Result<(), EngineError> {
        let answered = tx.mark_reminders_moved_on(&owner.id, now).await?;
        if answered > 0 {
            metrics::counter!("onboard_reminders_moved_on_total", "state" => from.as_str())
                .increment(1);
            tracing::info!(
                event = "REMINDER_MOVED_ON",
                owner_id = %owner.id,
                phone = %owner.owner_phone.masked(),
                from = %from,
                to = %owner.state,
            );
        }
        Ok(())
    }

    /// Queues a proactive text that is not an answer to the owner (a waitlist notice, ...): held in
    /// the outbox until the owner's quiet hours end, and logged when it is.
    pub(crate) async fn queue_proactive(
        &self,
        tx: &mut S::Tx,
        owner: &Owner,
        decision: &Decision,
        now: DateTime<Utc>,
    ) -> Result<Vec<String>, EngineError> {
        if decision.replies.is_empty() || owner.opted_out {
            return Ok(Vec::new());
        }
        let body = decision.replies.join("\n");
        let id = tx
            .enqueue_outbound(&NewOutbound {
                owner_id: &owner.id,
                to: &owner.owner_phone,
                body: &body,
                created_at: now,
            })
            .await?;
        let zone = self.reminders.zones.zone_of(&owner.owner_phone);
        let release = self.reminders.config.quiet.release(now, zone);
        if release > now {
            tx.hold_outbound_until(id, release).await?;
            tracing::info!(
                event = "TEXT_DELAYED_QUIET_HOURS",
                owner_id = %owner.id,
                phone = %owner.owner_phone.masked(),
                zone = %zone,
                until = %release,
            );
        }
        Ok(vec![body])
    }

    /// Reminders sent per step and how many owners moved on after one, for the admin API.
    pub async fn reminder_stats(&self) -> Result<Vec<ReminderStats>, StoreError> {
        let mut tx = self.store().begin().await?;
        let stats = tx.reminder_stats().await?;
        tx.commit().await?;
        Ok(stats)
    }

    fn payment_link_for(&self, owner: &Owner) -> String {
        format!(
            "{}?client_reference_id={}",
            self.settings.payment_link, owner.id
        )
    }
}

/// The reminder sweep, every `period` until shutdown; an error is logged and the next run retries.
pub async fn keep<S: Store>(
    engine: &Engine<S>,
    period: std::time::Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    while !*shutdown.borrow() {
        if let Err(e) = engine.send_reminders().await {
            tracing::error!(event = "REMINDER_SWEEP_ERROR", error = %e);
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

    fn config(vars: &[(&str, &str)]) -> Result<ReminderConfig, ConfigError> {
        ReminderConfig::from_lookup(|name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn defaults_follow_the_flows_with_quiet_nights_and_sunday_mornings() {
        let c = config(&[]).unwrap();
        assert_eq!(c, ReminderConfig::default());
        assert_eq!(c.schedule, None);
        assert_eq!(c.expire_after, Duration::days(14));
        assert_eq!(c.quiet, QuietHours::default());
    }

    #[test]
    fn every_setting_can_be_changed_or_turned_off() {
        let c = config(&[
            ("REMINDERS", "off"),
            ("QUIET_HOURS", "off"),
            ("QUIET_SUNDAY_UNTIL", "off"),
            ("EXPIRE_AFTER", "30d"),
        ])
        .unwrap();
        assert_eq!(c.schedule, Some(Schedule::off()));
        assert_eq!(c.quiet.night, None);
        assert_eq!(c.quiet.sunday_until, None);
        assert_eq!(c.expire_after, Duration::days(30));
        let c = config(&[("REMINDERS", "1h,3d")]).unwrap();
        assert_eq!(
            c.schedule.unwrap().delays(),
            &[Duration::hours(1), Duration::days(3)]
        );
    }

    #[test]
    fn bad_values_name_their_setting() {
        for (name, value) in [
            ("REMINDERS", "soon"),
            ("QUIET_HOURS", "20-9"),
            ("QUIET_SUNDAY_UNTIL", "noon"),
            ("EXPIRE_AFTER", "forever"),
        ] {
            let err = config(&[(name, value)]).unwrap_err();
            assert!(err.to_string().starts_with(name), "{err}");
        }
    }
}
