//! Sixty paid owners say YES at the same moment to a pool of forty numbers, through two engines with
//! their own PostgreSQL connection pools (two replicas) on one database: forty get a number each,
//! nobody gets one twice, twenty wait, and those twenty are served first come, first served when
//! numbers are added. Nothing here depends on timing: the race only makes the overlap likely.

mod support;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, Duration, Utc};
use onboard::clock::{Clock, RandomIds};
use onboard::conversation::{Event, Gate, StateName};
use onboard::domain::{OwnerId, PhoneNumber};
use onboard::engine::{Engine, InboundSms, Settings};
use onboard::flows::Flows;
use onboard::replay::{FIXTURE_PAYMENT_LINK, fixture_epoch};
use onboard::store::{Owner, PgStore, PoolStats, Store};
use tokio::sync::Barrier;

const OWNERS: usize = 60;
const NUMBERS: usize = 40;
const ONBOARDING_NUMBER: &str = "+447700900000";

/// One clock for both engines that moves on a microsecond each time it is read: every event has a
/// time of its own, so the waitlist's order is never a tie broken by id.
struct TickingClock {
    start: DateTime<Utc>,
    ticks: AtomicI64,
}

impl Clock for TickingClock {
    fn now(&self) -> DateTime<Utc> {
        self.start + Duration::microseconds(self.ticks.fetch_add(1, Ordering::SeqCst))
    }
}

fn engine(store: PgStore, clock: Arc<TickingClock>) -> Arc<Engine<PgStore>> {
    Arc::new(Engine::new(
        store,
        Arc::new(Flows::embedded().expect("flows")),
        clock,
        // Random ids: two engines counting from 1 would hand out the same ids.
        Arc::new(RandomIds::default()),
        Settings {
            payment_link: FIXTURE_PAYMENT_LINK.to_owned(),
            quarantine: Duration::days(30),
            pool_low_water: 3,
            verify_caller: None,
            verify_window: Duration::minutes(2),
            onboarding_number: None,
        },
    ))
}

fn owner_phone(i: usize) -> PhoneNumber {
    PhoneNumber::parse(&format!("+447700901{i:03}")).unwrap()
}

fn pool_number(i: usize) -> PhoneNumber {
    PhoneNumber::parse(&format!("+447911000{i:03}")).unwrap()
}

async fn text(engine: &Engine<PgStore>, phone: &PhoneNumber, sid: String, body: &str) -> String {
    engine
        .handle_sms(&InboundSms {
            message_sid: sid,
            from: phone.as_str().to_owned(),
            to: ONBOARDING_NUMBER.to_owned(),
            body: body.to_owned(),
        })
        .await
        .unwrap_or_else(|e| panic!("{body:?} from {phone}: {e}"))
}

async fn owner(engine: &Engine<PgStore>, phone: &PhoneNumber) -> Owner {
    engine
        .owner_by_phone(phone)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("no owner with phone {phone}"))
}

/// Every owner, by phone, as stored now.
async fn everyone(engine: &Engine<PgStore>) -> Vec<Owner> {
    let mut owners = Vec::new();
    for i in 0..OWNERS {
        owners.push(owner(engine, &owner_phone(i)).await);
    }
    owners
}

fn stats(total: i64, available: i64, assigned: i64) -> PoolStats {
    PoolStats {
        total,
        available,
        reserved: 0,
        assigned,
        quarantined: 0,
    }
}

/// Each number held by at most one owner, and the pool agreeing with the owners on who holds what.
async fn assert_pool_matches_owners(store: &PgStore, owners: &[Owner]) {
    let held: Vec<&PhoneNumber> = owners
        .iter()
        .filter_map(|c| c.twilio_number.as_ref())
        .collect();
    let distinct: HashSet<&PhoneNumber> = held.iter().copied().collect();
    assert_eq!(distinct.len(), held.len(), "a number was given twice");

    let rows: Vec<(String, String, Option<String>)> =
        sqlx::query_as("SELECT e164, status, owner_id FROM pool_numbers ORDER BY e164")
            .fetch_all(&mut *store.conn().await.unwrap())
            .await
            .unwrap();
    let by_owner: HashMap<&str, &Owner> = owners.iter().map(|c| (c.id.as_str(), c)).collect();
    let mut assigned = 0;
    for (e164, status, owner_id) in &rows {
        match owner_id {
            Some(id) => {
                assert_eq!(status, "ASSIGNED", "{e164} has an owner but is {status}");
                let owner = by_owner
                    .get(id.as_str())
                    .unwrap_or_else(|| panic!("{e164} is held by unknown owner {id}"));
                assert_eq!(
                    owner.twilio_number.as_ref().map(PhoneNumber::as_str),
                    Some(e164.as_str()),
                    "the pool gives {e164} to {id}, who does not have it"
                );
                assigned += 1;
            }
            None => assert_eq!(status, "AVAILABLE", "{e164} is {status} without an owner"),
        }
    }
    assert_eq!(assigned, held.len(), "owners and pool disagree");

    // Each owner was given a number once: one number_allocated step each, never two.
    let allocations: Vec<(String, i64)> = sqlx::query_as(
        "SELECT owner_id, COUNT(*) FROM state_history WHERE cause = 'number_allocated' \
         GROUP BY owner_id",
    )
    .fetch_all(&mut *store.conn().await.unwrap())
    .await
    .unwrap();
    assert_eq!(allocations.len(), held.len());
    for (id, count) in allocations {
        assert_eq!(count, 1, "{id} was allocated {count} times");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_owners_race_for_forty_numbers_on_two_replicas() {
    let url = support::fresh_postgres_database().await;
    let store_a = PgStore::connect(&url, 8).await.expect("connect");
    store_a.migrate().await.expect("migrate");
    let store_b = PgStore::connect(&url, 8).await.expect("connect");
    let clock = Arc::new(TickingClock {
        start: fixture_epoch(),
        ticks: AtomicI64::new(0),
    });
    let engines = [
        engine(store_a.clone(), clock.clone()),
        engine(store_b.clone(), clock.clone()),
    ];

    // Sixty owners answer S1-S4 and pay, half on each replica.
    for i in 0..OWNERS {
        let engine = &engines[i % 2];
        let phone = owner_phone(i);
        for (step, body) in ["Hi", "Plumber in Leeds", "Biz", "Name", "sms"]
            .into_iter()
            .enumerate()
        {
            text(engine, &phone, format!("SM_setup_{i}_{step}"), body).await;
        }
        let id = owner(engine, &phone).await.id;
        engine
            .apply(&id, Event::PaymentConfirmed)
            .await
            .expect("payment");
        let owner = owner(engine, &phone).await;
        assert_eq!(owner.state, StateName::S5ConfirmLive, "owner {i}");
        assert_eq!(owner.gate, None, "owner {i}");
        assert!(owner.payment_active, "owner {i} has paid");
        assert_eq!(owner.twilio_number, None, "owner {i}");
    }

    let pool: Vec<PhoneNumber> = (0..NUMBERS).map(pool_number).collect();
    let (added, served) = engines[0].add_numbers(&pool).await.expect("add numbers");
    assert_eq!(added, NUMBERS as u64);
    assert!(served.is_empty(), "nobody was waiting yet");
    assert_eq!(
        store_a.pool_stats().await.unwrap(),
        stats(NUMBERS as i64, NUMBERS as i64, 0)
    );

    // All sixty say YES at once, from sixty tasks spread over the two replicas.
    let barrier = Arc::new(Barrier::new(OWNERS));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..OWNERS {
        let engine = engines[i % 2].clone();
        let barrier = barrier.clone();
        tasks.spawn(async move {
            let phone = owner_phone(i);
            barrier.wait().await;
            text(&engine, &phone, format!("SM_yes_{i}"), "yes").await
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("a YES task panicked");
    }

    let owners = everyone(&engines[1]).await;
    let (live, waiting): (Vec<&Owner>, Vec<&Owner>) = owners
        .iter()
        .partition(|c| c.state == StateName::S6PhoneType);
    assert_eq!(live.len(), NUMBERS, "owners given a number");
    let pool_set: HashSet<&PhoneNumber> = pool.iter().collect();
    for owner in &live {
        let number = owner
            .twilio_number
            .as_ref()
            .expect("an S6 owner has a number");
        assert!(pool_set.contains(number), "{number} is not from the pool");
        assert_eq!(owner.gate, None);
        assert_eq!(owner.waitlisted_at, None);
    }
    let live_numbers: HashSet<&PhoneNumber> = live
        .iter()
        .filter_map(|c| c.twilio_number.as_ref())
        .collect();
    assert_eq!(
        live_numbers.len(),
        NUMBERS,
        "every owner has a number of their own"
    );
    assert_eq!(waiting.len(), OWNERS - NUMBERS, "owners still waiting");
    for owner in &waiting {
        assert_eq!(owner.state, StateName::S5ConfirmLive, "{}", owner.id);
        assert_eq!(owner.gate, Some(Gate::AwaitingNumber), "{}", owner.id);
        assert_eq!(owner.twilio_number, None, "{}", owner.id);
        assert!(owner.payment_active, "{}", owner.id);
        assert!(owner.waitlisted_at.is_some(), "{}", owner.id);
    }
    assert_pool_matches_owners(&store_a, &owners).await;
    assert_eq!(
        store_b.pool_stats().await.unwrap(),
        stats(NUMBERS as i64, 0, NUMBERS as i64)
    );

    // First come, first served: the waiting owners in the order they were turned away (every
    // event has a time of its own, so there are no ties).
    let mut queue: Vec<(DateTime<Utc>, OwnerId)> = waiting
        .iter()
        .map(|c| (c.waitlisted_at.unwrap(), c.id.clone()))
        .collect();
    queue.sort();
    let times: HashSet<DateTime<Utc>> = queue.iter().map(|(at, _)| *at).collect();
    assert_eq!(times.len(), queue.len(), "waitlist times are distinct");
    let expected: Vec<OwnerId> = queue.into_iter().map(|(_, id)| id).collect();

    // Twenty more numbers, in three lots on alternating replicas: each lot serves the longest
    // waiting owners, one number each, and leaves the rest waiting.
    let mut next = NUMBERS;
    let mut served_so_far = 0;
    for (lot, size) in [1, 4, 15].into_iter().enumerate() {
        let numbers: Vec<PhoneNumber> = (next..next + size).map(pool_number).collect();
        next += size;
        let (added, served) = engines[(lot + 1) % 2]
            .add_numbers(&numbers)
            .await
            .expect("add numbers");
        assert_eq!(added, size as u64);
        let served_ids: Vec<OwnerId> = served.iter().map(|o| o.owner_id.clone()).collect();
        assert_eq!(
            served_ids,
            expected[served_so_far..served_so_far + size],
            "lot {lot} of {size} serves the longest waiting owners, in order"
        );
        for outcome in &served {
            assert_eq!(outcome.state, StateName::S6PhoneType);
            assert_eq!(outcome.texts.len(), 1, "the owner is texted the next step");
        }
        served_so_far += size;
        let still_waiting = everyone(&engines[lot % 2])
            .await
            .into_iter()
            .filter(|c| c.gate == Some(Gate::AwaitingNumber))
            .count();
        assert_eq!(still_waiting, OWNERS - NUMBERS - served_so_far);
    }

    let owners = everyone(&engines[0]).await;
    for owner in &owners {
        assert_eq!(owner.state, StateName::S6PhoneType, "{}", owner.id);
        assert_eq!(owner.gate, None, "{}", owner.id);
        assert!(owner.twilio_number.is_some(), "{}", owner.id);
    }
    assert_pool_matches_owners(&store_b, &owners).await;
    assert_eq!(
        store_a.pool_stats().await.unwrap(),
        stats(OWNERS as i64, 0, OWNERS as i64)
    );
}
