//! Reminder sweeps from two engines (two replicas) over one database: each reminder is queued
//! exactly once, and each one is recorded for the admin API's counts. Run on PostgreSQL, where the
//! claims race for real (`FOR UPDATE ... SKIP LOCKED`), and on SQLite.

use crate::support;

use std::collections::HashMap;
use std::sync::Arc;

use chrono::Duration;
use onboard::clock::{Clock as _, ManualClock, RandomIds};
use onboard::domain::PhoneNumber;
use onboard::engine::{Engine, InboundSms};
use onboard::replay::fixture_epoch;
use onboard::store::reminders::ReminderTx as _;
use onboard::store::{PgStore, SqliteStore, Store, Tx as _};
use support::app::BackEnd;

const OWNERS: usize = 40;

fn engine<S: Store>(store: S, clock: Arc<ManualClock>) -> Arc<Engine<S>> {
    support::app::engine_on(
        store,
        &support::app::test_config(&[("ONBOARDING_NUMBER", ""), ("POOL_LOW_WATER", "0")]),
        clock,
        // Random ids: two engines counting from 1 would hand out the same ids.
        Arc::new(RandomIds::default()),
    )
}

fn owner_phone(i: usize) -> PhoneNumber {
    PhoneNumber::parse(&format!("+447700902{i:03}")).unwrap()
}

/// Reminders queued so far, per owner.
async fn reminders_per_owner<S: Store>(store: &S) -> HashMap<PhoneNumber, usize> {
    let mut per_owner = HashMap::new();
    for message in store.outbound_after(0).await.unwrap() {
        if message.body.starts_with("Just a reminder") {
            *per_owner.entry(message.to).or_default() += 1;
        }
    }
    per_owner
}

/// Owners text once each through engine A; then, at each reminder's time, both engines sweep at
/// the same moment.
async fn two_engines_send_each_reminder_once<S: Store>(a: S, b: S) {
    let clock = Arc::new(ManualClock::new(fixture_epoch()));
    let (a, b) = (engine(a, clock.clone()), engine(b, clock.clone()));
    for i in 0..OWNERS {
        a.handle_sms(&InboundSms {
            message_sid: format!("SMrace{i:04}"),
            from: owner_phone(i).to_string(),
            to: "+447700900000".into(),
            body: "Hi".into(),
        })
        .await
        .unwrap();
    }

    for (after, expected) in [(Duration::hours(2), 1), (Duration::hours(22), 2)] {
        clock.advance(after);
        let (sa, sb) = tokio::join!(
            {
                let a = a.clone();
                async move { a.send_reminders().await.unwrap() }
            },
            {
                let b = b.clone();
                async move { b.send_reminders().await.unwrap() }
            }
        );
        assert_eq!(
            sa.sent + sb.sent,
            OWNERS,
            "each owner reminded by one engine"
        );
        let per_owner = reminders_per_owner(a.store()).await;
        assert_eq!(per_owner.len(), OWNERS);
        assert!(per_owner.values().all(|n| *n == expected), "{per_owner:?}");
    }

    // Nothing is left to send, however often they sweep.
    clock.advance(Duration::days(3));
    let (sa, sb) = tokio::join!(a.send_reminders(), b.send_reminders());
    assert_eq!(sa.unwrap().sent + sb.unwrap().sent, 0);

    let mut tx = a.store().begin().await.unwrap();
    let stats = tx.reminder_stats().await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(stats.len(), 1);
    assert_eq!(stats[0].state, "S1_BUSINESS_TYPE_LOCATION");
    assert_eq!(stats[0].sent, 2 * OWNERS as i64);
    assert_eq!(stats[0].moved_on, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_on_postgres_send_each_reminder_once() {
    let url = support::fresh_postgres_database().await;
    let a = PgStore::connect(&url, 8).await.unwrap();
    a.migrate().await.unwrap();
    let b = PgStore::connect(&url, 8).await.unwrap();
    two_engines_send_each_reminder_once(a, b).await;
}

#[tokio::test]
async fn two_engines_on_sqlite_send_each_reminder_once() {
    let store = SqliteStore::in_memory().await.unwrap();
    store.migrate().await.unwrap();
    two_engines_send_each_reminder_once(store.clone(), store).await;
}

/// An owner who answers after a reminder counts as moved on from the step they were reminded at.
async fn an_answer_after_a_reminder_counts_as_moved_on<B: BackEnd>() {
    let store = B::store().await;
    let clock = Arc::new(ManualClock::new(fixture_epoch()));
    let engine = engine(store, clock.clone());
    let text = |sid: &str, body: &str| InboundSms {
        message_sid: sid.into(),
        from: owner_phone(1).to_string(),
        to: "+447700900000".into(),
        body: body.into(),
    };
    engine.handle_sms(&text("SM1", "Hi")).await.unwrap();
    clock.advance(Duration::hours(2));
    assert_eq!(engine.send_reminders().await.unwrap().sent, 1);
    engine
        .handle_sms(&text("SM2", "Plumber in Leeds"))
        .await
        .unwrap();
    let mut tx = engine.store().begin().await.unwrap();
    let stats = tx.reminder_stats().await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(stats.len(), 1);
    assert_eq!((stats[0].sent, stats[0].moved_on), (1, 1));
}

/// `/metrics` counts reminders sent per step and owners who moved on after one.
async fn metrics_count_reminders_and_owners_who_moved_on<B: BackEnd>() {
    use support::app::test_config;
    let app = B::spawn(test_config(&[])).await;
    app.text("SM1", owner_phone(1).as_str(), "Hi").await;
    app.text("SM2", owner_phone(2).as_str(), "Hi").await;
    app.clock.advance(Duration::hours(2));
    assert_eq!(app.engine.send_reminders().await.unwrap().sent, 2);
    app.text("SM3", owner_phone(1).as_str(), "Plumber in Leeds")
        .await;
    let text = app
        .http
        .get(format!("{}/metrics", app.address))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // Counters are process-wide: at least what this test did.
    for (series, at_least) in [
        (
            r#"onboard_reminders_sent_total{state="S1_BUSINESS_TYPE_LOCATION"}"#,
            2.0,
        ),
        (
            r#"onboard_reminders_moved_on_total{state="S1_BUSINESS_TYPE_LOCATION"}"#,
            1.0,
        ),
    ] {
        let value: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix(series))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("missing {series} in:\n{text}"));
        assert!(value >= at_least, "{series} is {value}");
    }
}

/// A waitlist notice is proactive: served at 22:00 London time, it waits in the outbox until 09:00.
async fn a_waitlist_notice_served_at_night_is_held_until_morning<B: BackEnd>() {
    use onboard::conversation::{Event, Gate};
    let store = B::store().await;
    let clock = Arc::new(ManualClock::new(fixture_epoch()));
    let engine = engine(store, clock.clone());
    let owner = owner_phone(7);
    for (i, body) in [
        "Hi",
        "Plumber in Leeds",
        "Smith Plumbing",
        "Jo Smith",
        "sms",
    ]
    .into_iter()
    .enumerate()
    {
        engine
            .handle_sms(&InboundSms {
                message_sid: format!("SMwait{i}"),
                from: owner.to_string(),
                to: "+447700900000".into(),
                body: body.into(),
            })
            .await
            .unwrap();
    }
    let record = engine.owner_by_phone(&owner).await.unwrap().unwrap();
    engine
        .apply(&record.id, Event::PaymentConfirmed)
        .await
        .unwrap();
    engine
        .handle_sms(&InboundSms {
            message_sid: "SMwaityes".into(),
            from: owner.to_string(),
            to: "+447700900000".into(),
            body: "yes".into(),
        })
        .await
        .unwrap();
    let record = engine.owner_by_phone(&owner).await.unwrap().unwrap();
    assert_eq!(record.gate, Some(Gate::AwaitingNumber));

    let claim = |at: chrono::DateTime<chrono::Utc>| {
        let engine = engine.clone();
        async move {
            let mut tx = engine.store().begin().await.unwrap();
            let claimed = tx
                .claim_outbound(at, at + Duration::minutes(1), 100)
                .await
                .unwrap();
            tx.commit().await.unwrap();
            claimed
        }
    };
    // Whatever the day queued goes first.
    claim(clock.now()).await;

    clock.advance(Duration::hours(13)); // Monday 22:00 in London.
    let (_, served) = engine
        .add_numbers(&["+447700900990".parse().unwrap()])
        .await
        .unwrap();
    assert_eq!(served.len(), 1);
    assert!(
        claim(clock.now()).await.is_empty(),
        "held through the night"
    );
    let at_nine = clock.now() + Duration::hours(11);
    let morning = claim(at_nine).await;
    assert_eq!(morning.len(), 1);
    assert!(
        morning[0].body.contains("07700 900990"),
        "{}",
        morning[0].body
    );
}

/// A paying owner who goes silent until expiry raises `PAID_OWNER_STALLED`, counted in `/metrics`;
/// their next text is welcomed back at the step they were on.
async fn a_paid_owner_who_expires_alerts_ops<B: BackEnd>() {
    use onboard::conversation::Event;
    use support::app::test_config;
    let app = B::spawn(test_config(&[])).await;
    let owner = owner_phone(9);
    for (i, body) in [
        "Hi",
        "Plumber in Leeds",
        "Smith Plumbing",
        "Jo Smith",
        "sms",
    ]
    .into_iter()
    .enumerate()
    {
        app.text(&format!("SMpaid{i}"), owner.as_str(), body).await;
    }
    let record = app.engine.owner_by_phone(&owner).await.unwrap().unwrap();
    app.engine
        .apply(&record.id, Event::PaymentConfirmed)
        .await
        .unwrap();
    for after in [Duration::hours(2), Duration::hours(22), Duration::days(13)] {
        app.clock.advance(after);
        app.engine.send_reminders().await.unwrap();
    }
    let text = app
        .http
        .get(format!("{}/metrics", app.address))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let stalled: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("onboard_paid_owners_stalled_total"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("missing onboard_paid_owners_stalled_total in:\n{text}"));
    assert!(stalled >= 1.0);

    let reply = app
        .text("SMpaidback", owner.as_str(), "sorry, been busy")
        .await
        .text()
        .await
        .unwrap();
    assert!(reply.contains("Welcome back"), "{reply}");
    assert!(reply.contains("Reply YES"), "{reply}");
}

support::on_both_back_ends!(
    an_answer_after_a_reminder_counts_as_moved_on,
    a_waitlist_notice_served_at_night_is_held_until_morning,
    metrics_count_reminders_and_owners_who_moved_on,
    a_paid_owner_who_expires_alerts_ops,
);
