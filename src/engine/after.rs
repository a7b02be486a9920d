//! After COMPLETE: the owner's number at work. A missed call is answered with an offer to take a
//! message, recorded, and alerted through the owner's S4 choice (a text from their own number,
//! or an email) when the voicemail arrives or, without one, after [`ALERT_AFTER_SECS`]; texts to
//! the number are the owner's commands or their customers' messages, passed on.
//!
//! The rules are the core's (`conversation::after`); the words the flows'. Each event is one
//! transaction, and what is sent goes through the outbox.

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use crate::config::Config;
use crate::conversation::Event;
use crate::conversation::after::{
    LineText, TextBackFacts, billing_period_start, caller_text_back, line_text,
    usage_levels_reached,
};
use crate::domain::{Country, Notify, OwnerId, PhoneNumber, mask_phone};
use crate::flows::MessageKey;
use crate::outbox::{
    TOPIC_CALLER_TEXT_BACK, TOPIC_MISSED_CALL_ALERT, TOPIC_TEXT_RELAY, TOPIC_USAGE_ALERT,
};
use crate::store::after::{AfterTx as _, MissedCall, NewMessage, NewMissedCall};
use crate::store::reminders::ReminderTx as _;
use crate::store::{Owner, Store, Tx};
use crate::twilio::twiml;

use super::{Engine, EngineError, InboundCall, InboundSms};

/// A missed call without a voicemail is alerted this long after it came.
pub const ALERT_AFTER_SECS: i64 = 150;

/// The longest voicemail a caller may leave, in seconds.
pub const VOICEMAIL_MAX_SECS: u32 = 120;

/// What the engine needs for the number's work after onboarding.
#[derive(Debug, Clone)]
pub struct AfterSettings {
    /// `PUBLIC_URL` + `/webhooks/twilio/recording-status`.
    pub recording_callback: String,
    /// `PUBLIC_URL` + `/webhooks/twilio/voicemail-done`: where Twilio goes when a recording ends.
    pub voicemail_done: String,
    pub caller_text_back: bool,
    pub plan_calls_included: i64,
    pub alert_after: Duration,
}

impl AfterSettings {
    pub fn from_config(config: &Config) -> Self {
        Self {
            recording_callback: format!("{}/webhooks/twilio/recording-status", config.public_url),
            voicemail_done: format!("{}/webhooks/twilio/voicemail-done", config.public_url),
            caller_text_back: config.after.caller_text_back,
            plan_calls_included: config.after.plan_calls_included,
            alert_after: Duration::seconds(ALERT_AFTER_SECS),
        }
    }
}

/// A recording status callback, fields already checked.
#[derive(Debug, Clone)]
pub struct RecordingStatus {
    pub recording_sid: String,
    pub call_sid: String,
    /// `completed`, `absent` (nothing said) or `failed`.
    pub status: String,
    pub url: Option<String>,
    pub duration_secs: Option<i32>,
}

/// What became of a recording callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordingOutcome {
    /// The recording was attached, or the alert queued (if it had not gone yet).
    Attached,
    /// Nothing left to do (a retry, or a late recording of a call already told of one).
    Duplicate,
    /// No missed call of ours has this `CallSid`.
    UnknownCall,
}

/// An owner's plan usage this billing month.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub calls_this_month: i64,
    pub included: i64,
    pub period_start: DateTime<Utc>,
}

impl<S: Store> Engine<S> {
    /// Answers a call to a live owner's number: record it as missed, count it against the plan,
    /// maybe text the caller back, and offer to take a message.
    pub(super) async fn missed_call(
        &self,
        tx: &mut S::Tx,
        owner: &Owner,
        call: &InboundCall,
        now: DateTime<Utc>,
    ) -> Result<twiml::Response, EngineError> {
        tx.record_missed_call(&NewMissedCall {
            call_sid: &call.call_sid,
            owner_id: &owner.id,
            caller: &call.from,
            at: now,
            alert_due_at: now + self.settings.after.alert_after,
        })
        .await?;
        tracing::info!(
            event = "MISSED_CALL",
            owner_id = %owner.id,
            phone = %owner.owner_phone.masked(),
            from = %mask_phone(&call.from),
        );
        self.count_usage(tx, owner, now).await?;
        self.maybe_text_back(tx, owner, &call.from, now).await?;

        let catalog = self.flows.catalog(owner.locale);
        let business = owner.business_name.clone().unwrap_or_default();
        let say = catalog.render(
            MessageKey::VoiceMissedCall,
            &[("business_name", business.as_str())],
        );
        Ok(twiml::Response::new()
            .say(&say, owner.locale.tag())
            .record(&twiml::Record {
                max_length: VOICEMAIL_MAX_SECS,
                action: self.settings.after.voicemail_done.clone(),
                status_callback: self.settings.after.recording_callback.clone(),
            })
            .hangup())
    }

    /// The owner's usage this billing month, with the 80% and 100% texts when reached (each once
    /// a month: the database says which went).
    async fn count_usage(
        &self,
        tx: &mut S::Tx,
        owner: &Owner,
        now: DateTime<Utc>,
    ) -> Result<(), EngineError> {
        let usage = self.usage_in(tx, owner, now).await?;
        for percent in usage_levels_reached(usage.calls_this_month, usage.included) {
            if !tx
                .note_usage_alert(&owner.id, usage.period_start, percent, now)
                .await?
            {
                continue;
            }
            tracing::info!(
                event = "USAGE_ALERT",
                owner_id = %owner.id,
                phone = %owner.owner_phone.masked(),
                percent,
                calls = usage.calls_this_month,
                included = usage.included,
            );
            if owner.opted_out {
                continue;
            }
            let key = if percent >= 100 {
                MessageKey::UsageReached
            } else {
                MessageKey::UsageWarning
            };
            let calls = usage.calls_this_month.to_string();
            let included = usage.included.to_string();
            let body = self.flows.catalog(owner.locale).render(
                key,
                &[
                    ("business_name", business_name(owner)),
                    ("calls", calls.as_str()),
                    ("included", included.as_str()),
                ],
            );
            let id = tx
                .queue_message(&NewMessage {
                    owner_id: &owner.id,
                    to: &owner.owner_phone,
                    from: None,
                    email: None,
                    body: &body,
                    topic: TOPIC_USAGE_ALERT,
                    created_at: now,
                })
                .await?;
            // Not a reply to anything the owner did: it waits for their quiet hours to end.
            let zone = self.reminders.zones.zone_of(&owner.owner_phone);
            let release = self.reminders.config.quiet.release(now, zone);
            if release > now {
                tx.hold_outbound_until(id, release).await?;
            }
        }
        Ok(())
    }

    async fn usage_in(
        &self,
        tx: &mut S::Tx,
        owner: &Owner,
        now: DateTime<Utc>,
    ) -> Result<Usage, EngineError> {
        let period_start = billing_period_start(owner.paid_at.unwrap_or(owner.created_at), now);
        Ok(Usage {
            calls_this_month: tx.missed_calls_since(&owner.id, period_start).await?,
            included: self.settings.after.plan_calls_included,
            period_start,
        })
    }

    /// An owner's plan usage now, for the admin API.
    pub async fn usage(&self, owner_id: &OwnerId) -> Result<Option<Usage>, EngineError> {
        let mut tx = self.store().begin().await?;
        let Some(owner) = tx.lock_owner(owner_id).await? else {
            return Ok(None);
        };
        let usage = self.usage_in(&mut tx, &owner, self.now()).await?;
        tx.commit().await?;
        Ok(Some(usage))
    }

    /// An owner's latest missed calls, newest first, for the console.
    pub async fn missed_calls(
        &self,
        owner_id: &OwnerId,
        limit: i64,
    ) -> Result<Vec<MissedCall>, EngineError> {
        let mut tx = self.store().begin().await?;
        let calls = tx.recent_missed_calls(owner_id, limit).await?;
        tx.commit().await?;
        Ok(calls)
    }

    /// `CALLER_TEXT_BACK=1`: "sorry we missed you" to the caller, from the owner's number, at
    /// most once per caller per owner per day (the database's primary key says so).
    async fn maybe_text_back(
        &self,
        tx: &mut S::Tx,
        owner: &Owner,
        caller: &str,
        now: DateTime<Utc>,
    ) -> Result<(), EngineError> {
        let Some(number) = &owner.twilio_number else {
            return Ok(());
        };
        let caller = PhoneNumber::parse(caller).ok();
        let enabled = self.settings.after.caller_text_back && caller.is_some();
        let caller_opted_out = match (&caller, enabled) {
            (Some(caller), true) => tx.customer_opted_out(number, caller).await?,
            _ => false,
        };
        // Read only when it could matter: text-backs on, budgets set.
        let budget_exceeded =
            enabled && self.has_budget() && self.budget_check(tx, now).await?.exceeded();
        let decided = caller_text_back(&TextBackFacts {
            enabled: self.settings.after.caller_text_back,
            caller: caller.as_ref(),
            owner_phone: &owner.owner_phone,
            caller_opted_out,
            budget_exceeded,
        });
        if budget_exceeded {
            tracing::info!(
                event = "CALLER_TEXT_BACK_HELD_BUDGET",
                owner_id = %owner.id,
                "a budget is exceeded: the caller is not texted back"
            );
        }
        let Some(caller) = caller.filter(|_| decided) else {
            return Ok(());
        };
        let day = now.format("%Y-%m-%d").to_string();
        if !tx.note_text_back(&owner.id, &caller, &day, now).await? {
            return Ok(());
        }
        let body = self.flows.catalog(owner.locale).render(
            MessageKey::CallerTextBack,
            &[("business_name", business_name(owner))],
        );
        tx.queue_message(&NewMessage {
            owner_id: &owner.id,
            to: &caller,
            from: Some(number),
            email: None,
            body: &body,
            topic: TOPIC_CALLER_TEXT_BACK,
            created_at: now,
        })
        .await?;
        tracing::info!(
            event = "CALLER_TEXTED_BACK",
            owner_id = %owner.id,
            caller = %caller.masked(),
        );
        Ok(())
    }

    /// Twilio's recording status callback: attaches the voicemail to its call and alerts the
    /// owner then, unless the plain alert went first. Idempotent on `RecordingSid`: the call's
    /// row (locked) says whether this recording is attached and whether the owner was told, so a
    /// retry finds nothing left to do.
    pub async fn recording_status(
        &self,
        recording: &RecordingStatus,
    ) -> Result<RecordingOutcome, EngineError> {
        let now = self.now();
        let mut tx = self.store().begin().await?;
        let Some(mut call) = tx.lock_missed_call(&recording.call_sid).await? else {
            tx.commit().await?;
            return Ok(RecordingOutcome::UnknownCall);
        };
        let mut changed = false;
        if recording.status == "completed"
            && let Some(url) = &recording.url
        {
            // Twilio serves the recording as MP3 at its URL with the extension.
            let link = format!("{url}.mp3");
            if tx
                .attach_recording(
                    &call.call_sid,
                    &recording.recording_sid,
                    &link,
                    recording.duration_secs,
                )
                .await?
            {
                call.recording_sid = Some(recording.recording_sid.clone());
                call.recording_url = Some(link);
                call.recording_secs = recording.duration_secs;
                changed = true;
            }
        }
        if call.alerted_at.is_none()
            && let Some(owner) = tx.lock_owner(&call.owner_id).await?
        {
            let alert = self.alert(&mut tx, &owner, &call, now).await?;
            tx.mark_alerted(&call.call_sid, alert, now).await?;
            changed = true;
        }
        tx.commit().await?;
        Ok(if changed {
            RecordingOutcome::Attached
        } else {
            RecordingOutcome::Duplicate
        })
    }

    /// Sends the plain alert of every missed call whose voicemail has not come in time, one
    /// transaction each; replicas skip each other's claims. Returns how many.
    pub async fn send_due_alerts(&self) -> Result<usize, EngineError> {
        let mut sent = 0;
        loop {
            let now = self.now();
            let mut tx = self.store().begin().await?;
            let Some(call) = tx.claim_due_alert(now).await? else {
                tx.commit().await?;
                return Ok(sent);
            };
            let alert = match tx.lock_owner(&call.owner_id).await? {
                Some(owner) => self.alert(&mut tx, &owner, &call, now).await?,
                None => "paused",
            };
            tx.mark_alerted(&call.call_sid, alert, now).await?;
            tx.commit().await?;
            sent += 1;
        }
    }

    /// Queues the alert of one missed call through the owner's channel; returns which it was
    /// (`sms`, `email`, or `paused` when the owner paused alerts and nothing is sent).
    async fn alert(
        &self,
        tx: &mut S::Tx,
        owner: &Owner,
        call: &MissedCall,
        now: DateTime<Utc>,
    ) -> Result<&'static str, EngineError> {
        if tx.alerts_paused(&owner.id).await? {
            tracing::info!(
                event = "MISSED_CALL_ALERT_PAUSED",
                owner_id = %owner.id,
                phone = %owner.owner_phone.masked(),
            );
            return Ok("paused");
        }
        let catalog = self.flows.catalog(owner.locale);
        let time = self.local_time(owner, call.at);
        let business = business_name(owner);
        let body = match (&call.recording_url, call.recording_secs) {
            (Some(link), secs) => {
                let seconds = secs.unwrap_or(0).to_string();
                catalog.render(
                    MessageKey::AlertVoicemail,
                    &[
                        ("business_name", business),
                        ("caller", call.caller.as_str()),
                        ("time", time.as_str()),
                        ("seconds", seconds.as_str()),
                        ("link", link.as_str()),
                    ],
                )
            }
            (None, _) => catalog.render(
                MessageKey::AlertMissedCall,
                &[
                    ("business_name", business),
                    ("caller", call.caller.as_str()),
                    ("time", time.as_str()),
                ],
            ),
        };
        let subject = catalog.render(
            MessageKey::AlertEmailSubject,
            &[
                ("business_name", business),
                ("caller", call.caller.as_str()),
            ],
        );
        self.to_owner(tx, owner, &body, &subject, TOPIC_MISSED_CALL_ALERT, now)
            .await
    }

    /// Queues a message to the owner through their S4 choice: an email to their address, or a
    /// text from their own business number. Returns the channel.
    async fn to_owner(
        &self,
        tx: &mut S::Tx,
        owner: &Owner,
        body: &str,
        subject: &str,
        topic: &'static str,
        now: DateTime<Utc>,
    ) -> Result<&'static str, EngineError> {
        let (channel, email) = match &owner.notify {
            Some(Notify::Email(address)) => ("email", Some((address.as_str(), subject))),
            Some(Notify::Sms) | None => ("sms", None),
        };
        tx.queue_message(&NewMessage {
            owner_id: &owner.id,
            to: &owner.owner_phone,
            from: owner.twilio_number.as_ref(),
            email,
            body,
            topic,
            created_at: now,
        })
        .await?;
        Ok(channel)
    }

    /// A time as the owner reads it: their own clock, e.g. `14:05 on Mon 30 Nov`.
    fn local_time(&self, owner: &Owner, at: DateTime<Utc>) -> String {
        let zone = self.reminders.zones.zone_of(&owner.owner_phone);
        let local = at.with_timezone(&zone);
        match owner.locale {
            crate::domain::Locale::EnUs => local.format("%-I:%M %p on %a %b %-d").to_string(),
            crate::domain::Locale::EnGb => local.format("%H:%M on %a %-d %b").to_string(),
        }
    }

    /// A text to a business number: the owner's command, or a customer's text to pass on.
    /// Never an onboarding conversation. Returns the TwiML answer.
    pub(super) async fn line_text(
        &self,
        tx: &mut S::Tx,
        mut owner: Owner,
        sms: &InboundSms,
        country: Country,
        now: DateTime<Utc>,
    ) -> Result<String, EngineError> {
        let Some(number) = owner.twilio_number.clone() else {
            // Found by this number, so it has one; answered and recorded all the same.
            let response = twiml::Response::new().to_xml();
            tx.finish_inbound(&sms.message_sid, Some(&owner.id), &response)
                .await?;
            return Ok(response);
        };
        let from = PhoneNumber::parse(&sms.from).ok();
        let from_owner = from.as_ref() == Some(&owner.owner_phone);
        let catalog = self.flows.catalog(owner.locale);
        let business = owner.business_name.clone().unwrap_or_default();
        let reply = match line_text(from_owner, &sms.body) {
            LineText::Pause => {
                tx.set_alerts_paused(&owner.id, true, now).await?;
                tracing::info!(event = "ALERTS_PAUSED", owner_id = %owner.id, phone = %owner.owner_phone.masked());
                Some(catalog.render(
                    MessageKey::LinePaused,
                    &[("business_name", business.as_str())],
                ))
            }
            LineText::Resume => {
                tx.set_alerts_paused(&owner.id, false, now).await?;
                tracing::info!(event = "ALERTS_RESUMED", owner_id = %owner.id, phone = %owner.owner_phone.masked());
                Some(catalog.render(
                    MessageKey::LineResumed,
                    &[("business_name", business.as_str())],
                ))
            }
            LineText::Status => {
                let usage = self.usage_in(tx, &owner, now).await?;
                let calls = usage.calls_this_month.to_string();
                let included = usage.included.to_string();
                let since = self.local_day(&owner, usage.period_start);
                let mut text = catalog.render(
                    MessageKey::LineStatus,
                    &[
                        ("business_name", business.as_str()),
                        ("calls", calls.as_str()),
                        ("included", included.as_str()),
                        ("period_start", since.as_str()),
                    ],
                );
                if tx.alerts_paused(&owner.id).await? {
                    text.push('\n');
                    text.push_str(&catalog.render(
                        MessageKey::LinePaused,
                        &[("business_name", business.as_str())],
                    ));
                }
                Some(text)
            }
            LineText::Help => Some(catalog.render(MessageKey::LineHelp, &[])),
            LineText::OwnerKeyword => {
                // STOP and START mean what they mean everywhere: the conversation decides.
                let decision = self
                    .run(tx, &mut owner, Event::Text(sms.body.clone()), now)
                    .await?;
                (!owner.opted_out && !decision.replies.is_empty())
                    .then(|| decision.replies.join("\n"))
            }
            LineText::CustomerOptOut | LineText::CustomerOptIn => {
                let opted_out = matches!(line_text(false, &sms.body), LineText::CustomerOptOut);
                if let Some(customer) = &from {
                    tx.set_customer_opted_out(&number, customer, opted_out, now)
                        .await?;
                }
                tracing::info!(
                    event = if opted_out { "CUSTOMER_OPTED_OUT" } else { "CUSTOMER_OPTED_IN" },
                    owner_id = %owner.id,
                    from = %mask_phone(&sms.from),
                );
                // Twilio answers STOP and START itself; a second answer would be noise.
                None
            }
            LineText::Relay => {
                let text = catalog.render(
                    MessageKey::TextRelayed,
                    &[
                        ("caller", sms.from.as_str()),
                        ("business_name", business.as_str()),
                        ("body", sms.body.as_str()),
                    ],
                );
                let subject = catalog.render(
                    MessageKey::TextRelayedSubject,
                    &[
                        ("caller", sms.from.as_str()),
                        ("business_name", business.as_str()),
                    ],
                );
                let channel = self
                    .to_owner(tx, &owner, &text, &subject, TOPIC_TEXT_RELAY, now)
                    .await?;
                tracing::info!(
                    event = "TEXT_RELAYED",
                    owner_id = %owner.id,
                    phone = %owner.owner_phone.masked(),
                    from = %mask_phone(&sms.from),
                    channel,
                );
                tracing::debug!(body = %sms.body, "relayed text");
                None
            }
        };
        // An owner who texted STOP hears nothing from us, whatever they text to their number.
        let reply = reply.filter(|_| !(from_owner && owner.opted_out));
        let response = match &reply {
            Some(text) => twiml::Response::new().message(text).to_xml(),
            None => twiml::Response::new().to_xml(),
        };
        // The text in (a customer's too: it reached a number the owner holds) and any answer.
        self.record_exchange_costs(tx, sms, &owner, country, reply.as_deref(), now)
            .await?;
        tx.finish_inbound(&sms.message_sid, Some(&owner.id), &response)
            .await?;
        Ok(response)
    }

    /// A day as the owner reads it, e.g. `30 Nov` (`Nov 30` in the US).
    fn local_day(&self, owner: &Owner, at: DateTime<Utc>) -> String {
        let zone = self.reminders.zones.zone_of(&owner.owner_phone);
        let local = at.with_timezone(&zone);
        match owner.locale {
            crate::domain::Locale::EnUs => local.format("%b %-d").to_string(),
            crate::domain::Locale::EnGb => local.format("%-d %b").to_string(),
        }
    }
}

fn business_name(owner: &Owner) -> &str {
    owner.business_name.as_deref().unwrap_or_default()
}

/// Sends due plain alerts every `period` until `shutdown`.
pub async fn keep_alerting<S: Store>(
    engine: &Engine<S>,
    period: std::time::Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    while !*shutdown.borrow() {
        if let Err(e) = engine.send_due_alerts().await {
            tracing::error!(event = "ALERT_SWEEP_ERROR", error = %e);
        }
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = shutdown.changed() => {}
        }
    }
}
