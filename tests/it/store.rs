//! The storage layer's contract, checked against both back ends: each test body is a generic
//! function run once on an in-memory SQLite database and once on a fresh PostgreSQL database
//! (`DATABASE_URL` names the server). The races at the end are PostgreSQL's own.

use crate::support;

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use onboard::conversation::{Gate, StateName};
use onboard::domain::{Country, Locale, Notify, OwnerId, PhoneNumber, PhoneType};
use onboard::store::replenish::ReplenishStore;
use onboard::store::{
    Allocation, Claim, EventOutcome, NewInbound, NewOutbound, NewPoolNumber, NewWebhookEvent,
    OutboundStatus, Owner, PgStore, PoolStats, QuarantineOutcome, SqliteStore, Store, StoreError,
    TestTx as _, Transition, Tx,
};
use sqlx::Row;

const EMPTY_TWIML: &str = r#"<?xml version="1.0" encoding="UTF-8"?><Response/>"#;

// --- fixtures ----------------------------------------------------------------------------------

async fn sqlite() -> SqliteStore {
    let store = SqliteStore::in_memory().await.unwrap();
    store.migrate().await.unwrap();
    store
}

/// A fresh, migrated PostgreSQL database.
async fn postgres_url() -> String {
    let url = support::fresh_postgres_database().await;
    let store = PgStore::connect(&url, 1).await.unwrap();
    store.migrate().await.unwrap();
    store.close().await;
    url
}

async fn postgres() -> PgStore {
    PgStore::connect(&postgres_url().await, 4).await.unwrap()
}

/// Runs each named test body on both back ends: `sqlite::name` and `postgres::name`.
macro_rules! on_both_back_ends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test]
            async fn $name() {
                super::$name(super::sqlite().await).await;
            })*
        }
        mod postgres {
            $(#[tokio::test]
            async fn $name() {
                super::$name(super::postgres().await).await;
            })*
        }
    };
}

on_both_back_ends!(
    claim_then_duplicate_returns_the_same_response,
    lock_or_create_twice_gives_one_owner,
    owner_round_trips_every_field,
    saving_an_unknown_owner_fails,
    two_owners_saved_in_one_transaction_keep_every_field,
    only_a_committed_transaction_that_queued_a_message_rings_the_outbox_bell,
    transitions_are_recorded,
    dropping_a_transaction_rolls_back,
    corrupt_rows_are_named,
    allocation_prefers_area_code_and_keeps_to_country,
    allocation_is_idempotent,
    allocation_of_unknown_owner,
    quarantine_and_its_end,
    quarantined_number_comes_back_to_its_owner_only,
    waitlist_is_first_come_first_served,
    outbox_claim_lease_retry_finish,
    outbox_takeover_is_uncertain_and_ends_the_old_claim,
    status_callbacks_never_move_back,
    webhook_event_stored_once,
    uncertain_purchases_are_recorded_once_and_counted_until_resolved,
);

/// Instants with microseconds: PostgreSQL keeps no finer precision.
fn at(seconds: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 3, 1, 9, 0, 0).unwrap()
        + chrono::Duration::microseconds(123_456)
        + chrono::Duration::seconds(seconds)
}

fn phone(raw: &str) -> PhoneNumber {
    PhoneNumber::parse(raw).unwrap()
}

fn uk(n: u32) -> PhoneNumber {
    phone(&format!("+447700{n:06}"))
}

fn us(area: &str, n: u32) -> PhoneNumber {
    phone(&format!("+1{area}555{n:04}"))
}

fn id(raw: &str) -> OwnerId {
    OwnerId::parse(raw).unwrap()
}

/// Creates (and commits) an owner at S1.
async fn create<S: Store>(store: &S, owner_id: &str, owner: &PhoneNumber) -> Owner {
    let mut tx = store.begin().await.unwrap();
    let (owner, created) = tx
        .lock_or_create_owner(owner, || Owner::new(id(owner_id), owner.clone(), at(0)))
        .await
        .unwrap();
    assert!(created);
    tx.commit().await.unwrap();
    owner
}

async fn add_numbers<S: Store>(store: &S, numbers: &[PhoneNumber], now: DateTime<Utc>) -> u64 {
    let numbers: Vec<NewPoolNumber> = numbers
        .iter()
        .map(|n| NewPoolNumber {
            e164: n.clone(),
            twilio_sid: Some(format!("PN{}", &n.as_str()[1..])),
        })
        .collect();
    let mut tx = store.begin().await.unwrap();
    let added = tx.add_numbers(&numbers, now).await.unwrap();
    tx.commit().await.unwrap();
    added
}

async fn allocate<S: Store>(
    store: &S,
    owner_id: &str,
    country: Country,
    area: Option<&str>,
) -> Allocation {
    let mut tx = store.begin().await.unwrap();
    tx.lock_owner(&id(owner_id))
        .await
        .unwrap()
        .expect("the owner exists");
    let allocation = tx
        .allocate_number(&id(owner_id), country, area, at(10))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    allocation
}

/// Raw SQL for checking what the `Store` API cannot read back.
trait Probe: ReplenishStore {
    fn exec(&self, sql: &'static str) -> impl Future<Output = ()>;
    /// The first column of the first row, as text (NULL and no row both give `None`).
    fn text(&self, sql: &'static str) -> impl Future<Output = Option<String>>;
    fn count(&self, sql: &'static str) -> impl Future<Output = i64>;
}

/// The same SQL on either back end, through each store's own connection.
macro_rules! impl_probe {
    ($($store:ty),*) => {$(
        impl Probe for $store {
            async fn exec(&self, sql: &'static str) {
                sqlx::query(sql)
                    .execute(&mut *self.conn().await.unwrap())
                    .await
                    .unwrap();
            }
            async fn text(&self, sql: &'static str) -> Option<String> {
                let row = sqlx::query(sql)
                    .fetch_optional(&mut *self.conn().await.unwrap())
                    .await
                    .unwrap()?;
                row.get(0)
            }
            async fn count(&self, sql: &'static str) -> i64 {
                sqlx::query_scalar(sql)
                    .fetch_one(&mut *self.conn().await.unwrap())
                    .await
                    .unwrap()
            }
        }
    )*};
}

impl_probe!(SqliteStore, PgStore);

// --- idempotency and owners -------------------------------------------------------------------

async fn claim_then_duplicate_returns_the_same_response<S: Probe>(store: S) {
    let owner = uk(123);
    let msg = NewInbound {
        message_sid: "SM0001",
        from: owner.as_str(),
        to: "+447700900000",
        body: "Plumber in Leeds",
        received_at: at(1),
    };
    let response =
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Message>Hi £5 ✓</Message></Response>";

    let mut tx = store.begin().await.unwrap();
    assert_eq!(tx.claim_inbound(&msg).await.unwrap(), Claim::Fresh);
    let (owner, _) = tx
        .lock_or_create_owner(&owner, || Owner::new(id("c1"), owner.clone(), at(1)))
        .await
        .unwrap();
    tx.finish_inbound("SM0001", Some(&owner.id), response)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    for _ in 0..2 {
        let mut tx = store.begin().await.unwrap();
        let claim = tx.claim_inbound(&msg).await.unwrap();
        assert_eq!(
            claim,
            Claim::Duplicate {
                response: response.to_owned()
            }
        );
        tx.commit().await.unwrap();
    }
    assert_eq!(
        store
            .text("SELECT owner_id FROM inbound_messages WHERE message_sid = 'SM0001'")
            .await,
        Some("c1".to_owned())
    );

    // A claim rolled back was never made.
    let other = NewInbound {
        message_sid: "SM0002",
        ..msg.clone()
    };
    let mut tx = store.begin().await.unwrap();
    assert_eq!(tx.claim_inbound(&other).await.unwrap(), Claim::Fresh);
    drop(tx);
    let mut tx = store.begin().await.unwrap();
    assert_eq!(tx.claim_inbound(&other).await.unwrap(), Claim::Fresh);
    // Committed with no answer recorded: the duplicate gets the empty TwiML.
    tx.commit().await.unwrap();
    let mut tx = store.begin().await.unwrap();
    let claim = tx.claim_inbound(&other).await.unwrap();
    assert_eq!(
        claim,
        Claim::Duplicate {
            response: EMPTY_TWIML.to_owned()
        }
    );
    // Finishing a sid never claimed is a bug, not a silent no-op: the commit fails.
    tx.finish_inbound("SM_UNKNOWN", None, "x").await.unwrap();
    assert!(tx.commit().await.is_err());
}

async fn lock_or_create_twice_gives_one_owner<S: Probe>(store: S) {
    let owner = us("415", 1);
    let first = create(&store, "first", &owner).await;
    assert_eq!(first.locale, Locale::EnUs);
    assert_eq!(first.state, StateName::S1BusinessTypeLocation);

    let mut tx = store.begin().await.unwrap();
    let (again, created) = tx
        .lock_or_create_owner(&owner, || Owner::new(id("second"), owner.clone(), at(5)))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert!(!created);
    assert_eq!(again, first);
    assert_eq!(store.count("SELECT COUNT(*) FROM owners").await, 1);
    assert_eq!(
        store.text("SELECT country FROM owners").await.as_deref(),
        Some("US")
    );
    assert_eq!(store.owner_by_phone(&owner).await.unwrap(), Some(first));
    assert_eq!(store.owner_by_phone(&us("415", 2)).await.unwrap(), None);
}

async fn owner_round_trips_every_field<S: Probe>(store: S) {
    let owner = uk(1);
    let created = create(&store, "c1", &owner).await;

    let full = Owner {
        state: StateName::S8FwdConfirmed,
        gate: Some(Gate::AwaitingNumber),
        business_type: Some("Plumber".into()),
        location: Some("Leeds".into()),
        business_name: Some("O'Brien & Sons — \"Pipes\"".into()),
        owner_name: Some("Siân".into()),
        notify: Some(Notify::Email("sian@example.com".into())),
        phone_type: Some(PhoneType::Landline),
        misses: 2,
        opted_out: true,
        payment_active: true,
        paid_at: Some(at(100)),
        twilio_number: Some(uk(999_001)),
        waitlisted_at: Some(at(200)),
        verify_started_at: Some(at(300)),
        updated_at: at(400),
        ..created.clone()
    };
    let mut tx = store.begin().await.unwrap();
    tx.save_owner(&full).await.unwrap();
    assert_eq!(tx.lock_owner(&full.id).await.unwrap().as_ref(), Some(&full));
    tx.commit().await.unwrap();

    let mut tx = store.begin().await.unwrap();
    assert_eq!(
        tx.lock_owner_by_number(&uk(999_001))
            .await
            .unwrap()
            .as_ref(),
        Some(&full)
    );
    assert_eq!(tx.lock_owner_by_number(&uk(999_002)).await.unwrap(), None);
    assert_eq!(tx.lock_owner(&id("nobody")).await.unwrap(), None);

    let other = Owner {
        locale: Locale::EnUs,
        gate: Some(Gate::PaymentRequired),
        notify: Some(Notify::Sms),
        phone_type: Some(PhoneType::Iphone),
        ..full.clone()
    };
    tx.save_owner(&other).await.unwrap();
    assert_eq!(
        tx.lock_owner(&full.id).await.unwrap().as_ref(),
        Some(&other)
    );

    // And back to nothing at all.
    let bare = Owner {
        updated_at: at(500),
        ..created.clone()
    };
    tx.save_owner(&bare).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(store.owner_by_phone(&owner).await.unwrap(), Some(bare));
}

/// One event may save several owners (a payment moving a waitlisted owner on, say): PostgreSQL
/// sends them as arrays, one owner as a one-row `VALUES`; every field survives both.
async fn two_owners_saved_in_one_transaction_keep_every_field<S: Probe>(store: S) {
    let first = create(&store, "c1", &uk(1)).await;
    let second = create(&store, "c2", &uk(2)).await;
    let first = Owner {
        state: StateName::S6PhoneType,
        business_name: Some("O'Brien & Sons".into()),
        notify: Some(Notify::Email("sian@example.com".into())),
        misses: 1,
        paid_at: Some(at(100)),
        twilio_number: Some(uk(999_001)),
        updated_at: at(400),
        ..first
    };
    let second = Owner {
        gate: Some(Gate::AwaitingNumber),
        opted_out: true,
        waitlisted_at: Some(at(200)),
        updated_at: at(401),
        ..second
    };
    let mut tx = store.begin().await.unwrap();
    tx.save_owner(&first).await.unwrap();
    tx.save_owner(&second).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(store.owner_by_phone(&uk(1)).await.unwrap(), Some(first));
    assert_eq!(store.owner_by_phone(&uk(2)).await.unwrap(), Some(second));
}

/// The outbox worker of this process is rung by a commit that queued a message (held with the
/// event's writes, or sent at once), and by nothing else. A ring is kept until it is waited for,
/// so whether one came is seen at once.
async fn only_a_committed_transaction_that_queued_a_message_rings_the_outbox_bell<S: Probe>(
    store: S,
) {
    let owner = create(&store, "c1", &uk(1)).await;
    let rung = || async {
        tokio::time::timeout(Duration::from_millis(50), store.outbox_bell().rung())
            .await
            .is_ok()
    };
    let text = NewOutbound {
        owner_id: &owner.id,
        to: &owner.owner_phone,
        body: "Your number is ready.",
        created_at: at(1),
    };
    assert!(!rung().await, "creating an owner queues nothing");

    let mut tx = store.begin().await.unwrap();
    tx.queue_outbound(&text).await.unwrap();
    drop(tx);
    assert!(!rung().await, "rolled back");

    let mut tx = store.begin().await.unwrap();
    tx.queue_outbound(&text).await.unwrap();
    assert!(!rung().await, "held, not committed yet");
    tx.commit().await.unwrap();
    assert!(rung().await, "a held message, committed");
    assert!(!rung().await, "one ring per commit");

    let mut tx = store.begin().await.unwrap();
    tx.enqueue_outbound(&text).await.unwrap();
    tx.commit().await.unwrap();
    assert!(rung().await, "a message sent at once, committed");

    // A message after onboarding (an alert, a relayed text) too.
    let mut tx = store.begin().await.unwrap();
    onboard::store::after::AfterTx::queue_message(
        &mut tx,
        &onboard::store::after::NewMessage {
            owner_id: &owner.id,
            to: &owner.owner_phone,
            from: None,
            email: None,
            body: "You missed a call.",
            topic: "missed_call_alert",
            created_at: at(2),
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert!(rung().await, "a message after onboarding, committed");

    // A failed text resent from the console: queued at once, outside a transaction of the store's.
    store
        .exec("UPDATE outbound_messages SET status = 'failed' WHERE kind = 'sms'")
        .await;
    let failed = store
        .count("SELECT MIN(id) FROM outbound_messages WHERE status = 'failed'")
        .await;
    let console = |failed| {
        onboard::store::console::ConsoleStore::resend_failed_text(&store, failed, at(3), at(3))
    };
    assert!(matches!(
        console(failed).await.unwrap(),
        onboard::store::console::Resend::Queued(_)
    ));
    assert!(rung().await, "a failed text resent from the console");
    assert!(matches!(
        console(failed).await.unwrap(),
        onboard::store::console::Resend::AlreadyResent
    ));
    assert!(!rung().await, "a resend refused queues nothing");
}

async fn saving_an_unknown_owner_fails<S: Probe>(store: S) {
    let mut tx = store.begin().await.unwrap();
    let ghost = Owner::new(id("ghost"), uk(5), at(0));
    // Held until commit, which fails: there is no such owner.
    tx.save_owner(&ghost).await.unwrap();
    assert!(tx.commit().await.is_err());
}

async fn transitions_are_recorded<S: Probe>(store: S) {
    let owner = create(&store, "c1", &uk(1)).await;
    let mut tx = store.begin().await.unwrap();
    for (from, to) in [
        (StateName::S1BusinessTypeLocation, StateName::S2BusinessName),
        (StateName::S2BusinessName, StateName::S3OwnerName),
    ] {
        let t = Transition {
            owner_id: &owner.id,
            from,
            to,
            cause: "sms",
            at: at(1),
        };
        tx.record_transition(&t).await.unwrap();
    }
    tx.commit().await.unwrap();
    assert_eq!(
        store
            .count("SELECT COUNT(*) FROM state_history WHERE owner_id = 'c1'")
            .await,
        2
    );
    assert_eq!(
        store
            .text("SELECT to_state FROM state_history ORDER BY id DESC LIMIT 1")
            .await
            .as_deref(),
        Some("S3_OWNER_NAME")
    );
}

async fn dropping_a_transaction_rolls_back<S: Probe>(store: S) {
    let mut tx = store.begin().await.unwrap();
    tx.lock_or_create_owner(&uk(1), || Owner::new(id("c1"), uk(1), at(0)))
        .await
        .unwrap();
    drop(tx);
    assert_eq!(store.owner_by_phone(&uk(1)).await.unwrap(), None);
    // The connection is usable afterwards.
    store.ping().await.unwrap();
    create(&store, "c1", &uk(1)).await;
}

async fn corrupt_rows_are_named<S: Probe>(store: S) {
    create(&store, "c1", &uk(1)).await;
    store.exec("UPDATE owners SET state = 'S99_NOWHERE'").await;
    let mut tx = store.begin().await.unwrap();
    match tx.lock_owner(&id("c1")).await {
        Err(StoreError::Corrupt {
            table: "owners",
            detail,
        }) => {
            assert!(detail.contains("S99_NOWHERE"), "{detail}");
            assert!(detail.contains("c1"), "{detail}");
        }
        other => panic!("expected a corrupt row, got {other:?}"),
    }
    drop(tx);
    store
        .exec(
            "UPDATE owners SET state = 'S1_BUSINESS_TYPE_LOCATION', twilio_number = '0800 FLOWERS'",
        )
        .await;
    match store.owner_by_phone(&uk(1)).await {
        Err(StoreError::Corrupt {
            table: "owners",
            detail,
        }) => {
            assert!(detail.contains("twilio_number"), "{detail}")
        }
        other => panic!("expected a corrupt row, got {other:?}"),
    }
}

// --- number pool -------------------------------------------------------------------------------

async fn allocation_prefers_area_code_and_keeps_to_country<S: Probe>(store: S) {
    // Added in three batches: creation time orders the pool, then the number itself.
    assert_eq!(
        add_numbers(&store, &[us("415", 2), us("415", 1)], at(0)).await,
        2
    );
    assert_eq!(add_numbers(&store, &[us("212", 1)], at(1)).await, 1);
    assert_eq!(
        add_numbers(&store, &[uk(900_001), us("415", 1)], at(2)).await,
        1
    );
    assert_eq!(
        store.pool_stats().await.unwrap(),
        PoolStats {
            total: 4,
            available: 4,
            ..PoolStats::default()
        }
    );
    assert_eq!(
        store
            .text("SELECT area_code FROM pool_numbers WHERE e164 = '+12125550001'")
            .await
            .as_deref(),
        Some("212")
    );
    assert_eq!(
        store
            .text("SELECT country FROM pool_numbers WHERE e164 = '+447700900001'")
            .await
            .as_deref(),
        Some("GB")
    );

    for (owner_id, phone) in [
        ("a", us("212", 9001)),
        ("b", us("646", 9002)),
        ("c", us("415", 9003)),
    ] {
        create(&store, owner_id, &phone).await;
    }
    for (owner_id, phone) in [("g1", uk(1)), ("g2", uk(2))] {
        create(&store, owner_id, &phone).await;
    }

    // Its own area code first, even though older numbers exist elsewhere.
    assert_eq!(
        allocate(&store, "a", Country::Us, Some("212")).await,
        Allocation::Allocated(us("212", 1))
    );
    // No number in 646: the oldest of the country.
    assert_eq!(
        allocate(&store, "b", Country::Us, Some("646")).await,
        Allocation::Allocated(us("415", 1))
    );
    assert_eq!(
        allocate(&store, "c", Country::Us, None).await,
        Allocation::Allocated(us("415", 2))
    );
    assert_eq!(
        allocate(&store, "g1", Country::Gb, None).await,
        Allocation::Allocated(uk(900_001))
    );
    // Country has none left; US numbers are never given to GB owners.
    assert_eq!(
        allocate(&store, "g2", Country::Gb, None).await,
        Allocation::PoolEmpty
    );
    assert_eq!(
        store.pool_stats().await.unwrap(),
        PoolStats {
            total: 4,
            assigned: 4,
            ..PoolStats::default()
        }
    );
    assert_eq!(
        store
            .text("SELECT owner_id FROM pool_numbers WHERE e164 = '+447700900001'")
            .await
            .as_deref(),
        Some("g1")
    );
    // Allocation leaves the owners table to the caller.
    assert_eq!(
        store
            .count("SELECT COUNT(*) FROM owners WHERE twilio_number IS NOT NULL")
            .await,
        0
    );
}

async fn allocation_is_idempotent<S: Probe>(store: S) {
    add_numbers(&store, &[uk(900_001), uk(900_002)], at(0)).await;
    create(&store, "c1", &uk(1)).await;
    let first = allocate(&store, "c1", Country::Gb, None).await;
    assert_eq!(first, Allocation::Allocated(uk(900_001)));
    for _ in 0..2 {
        assert_eq!(
            allocate(&store, "c1", Country::Gb, None).await,
            Allocation::AlreadyAssigned(uk(900_001))
        );
    }
    // Even when the pool has run dry.
    create(&store, "c2", &uk(2)).await;
    assert_eq!(
        allocate(&store, "c2", Country::Gb, None).await,
        Allocation::Allocated(uk(900_002))
    );
    assert_eq!(
        allocate(&store, "c1", Country::Gb, None).await,
        Allocation::AlreadyAssigned(uk(900_001))
    );
    // An allocation rolled back gave nothing away.
    create(&store, "c3", &uk(3)).await;
    add_numbers(&store, &[uk(900_003)], at(1)).await;
    let mut tx = store.begin().await.unwrap();
    tx.lock_owner(&id("c3")).await.unwrap();
    let allocation = tx
        .allocate_number(&id("c3"), Country::Gb, None, at(5))
        .await
        .unwrap();
    assert_eq!(allocation, Allocation::Allocated(uk(900_003)));
    drop(tx);
    assert_eq!(store.pool_stats().await.unwrap().available, 1);
}

async fn allocation_of_unknown_owner<S: Probe>(store: S) {
    add_numbers(&store, &[uk(900_001)], at(0)).await;
    let mut tx = store.begin().await.unwrap();
    let refused = tx
        .allocate_number(&id("nobody"), Country::Gb, None, at(10))
        .await;
    assert!(
        matches!(refused, Err(StoreError::Database(_))),
        "the pool's foreign key refuses a number for no owner: {refused:?}"
    );
    drop(tx);
    assert_eq!(store.pool_stats().await.unwrap().available, 1);
}

async fn quarantine_and_its_end<S: Probe>(store: S) {
    add_numbers(&store, &[uk(900_001), uk(900_002)], at(0)).await;
    create(&store, "c1", &uk(1)).await;
    assert_eq!(
        allocate(&store, "c1", Country::Gb, None).await,
        Allocation::Allocated(uk(900_001))
    );

    let until = at(30 * 86_400);
    let mut tx = store.begin().await.unwrap();
    let outcome = tx
        .quarantine_number(&uk(900_001), until, true, at(20))
        .await
        .unwrap();
    assert_eq!(
        outcome,
        QuarantineOutcome::Quarantined {
            owner_id: Some(id("c1"))
        }
    );
    let outcome = tx
        .quarantine_number(&uk(900_002), until, true, at(20))
        .await
        .unwrap();
    assert_eq!(outcome, QuarantineOutcome::Quarantined { owner_id: None });
    let outcome = tx
        .quarantine_number(&uk(900_003), until, true, at(20))
        .await
        .unwrap();
    assert_eq!(outcome, QuarantineOutcome::NotInPool);
    tx.commit().await.unwrap();
    assert_eq!(
        store.pool_stats().await.unwrap(),
        PoolStats {
            total: 2,
            quarantined: 2,
            ..PoolStats::default()
        }
    );

    // Quarantined numbers are not for allocation, and the owner holds none now.
    create(&store, "c2", &uk(2)).await;
    assert_eq!(
        allocate(&store, "c2", Country::Gb, None).await,
        Allocation::PoolEmpty
    );

    let mut tx = store.begin().await.unwrap();
    assert_eq!(
        tx.end_quarantines(until - chrono::Duration::microseconds(1))
            .await
            .unwrap(),
        0
    );
    assert_eq!(tx.end_quarantines(until).await.unwrap(), 2);
    assert_eq!(tx.end_quarantines(until).await.unwrap(), 0);
    tx.commit().await.unwrap();
    assert_eq!(
        store.pool_stats().await.unwrap(),
        PoolStats {
            total: 2,
            available: 2,
            ..PoolStats::default()
        }
    );
    assert_eq!(
        store
            .count("SELECT COUNT(*) FROM pool_numbers WHERE quarantined_until IS NOT NULL")
            .await,
        0
    );
    assert_eq!(
        allocate(&store, "c2", Country::Gb, None).await,
        Allocation::Allocated(uk(900_001))
    );
    assert_eq!(
        allocate(&store, "c1", Country::Gb, None).await,
        Allocation::Allocated(uk(900_002))
    );
}

async fn quarantined_number_comes_back_to_its_owner_only<S: Probe>(store: S) {
    add_numbers(&store, &[uk(900_001), uk(900_002)], at(0)).await;
    create(&store, "c1", &uk(1)).await;
    create(&store, "c2", &uk(2)).await;
    assert_eq!(
        allocate(&store, "c1", Country::Gb, None).await,
        Allocation::Allocated(uk(900_001))
    );
    let until = at(30 * 86_400);
    let mut tx = store.begin().await.unwrap();
    tx.quarantine_number(&uk(900_001), until, true, at(20))
        .await
        .unwrap();
    tx.commit().await.unwrap();

    // Another owner never gets it while it rests; its last owner gets it back at once.
    assert_eq!(
        allocate(&store, "c2", Country::Gb, None).await,
        Allocation::Allocated(uk(900_002))
    );
    assert_eq!(
        allocate(&store, "c1", Country::Gb, None).await,
        Allocation::Returned(uk(900_001))
    );
    assert_eq!(
        allocate(&store, "c1", Country::Gb, None).await,
        Allocation::AlreadyAssigned(uk(900_001))
    );
    assert_eq!(
        store
            .count(
                "SELECT COUNT(*) FROM pool_numbers WHERE e164 = '+447700900001' \
                 AND status = 'ASSIGNED' AND owner_id = 'c1' AND last_owner_id IS NULL \
                 AND quarantined_until IS NULL"
            )
            .await,
        1
    );

    // Once the quarantine is over the number is anyone's: the last owner is forgotten.
    let mut tx = store.begin().await.unwrap();
    tx.quarantine_number(&uk(900_001), until, true, at(40))
        .await
        .unwrap();
    assert_eq!(tx.end_quarantines(until).await.unwrap(), 1);
    tx.commit().await.unwrap();
    assert_eq!(
        store
            .count("SELECT COUNT(*) FROM pool_numbers WHERE last_owner_id IS NOT NULL")
            .await,
        0
    );
}

async fn waitlist_is_first_come_first_served<S: Probe>(store: S) {
    // (id, owner, waitlisted at): GB owners out of order of creation, and two with one instant.
    let waiting = [
        ("w3", uk(3), Some(at(30))),
        ("w1", uk(1), Some(at(10))),
        ("w2b", uk(22), Some(at(20))),
        ("w2a", uk(21), Some(at(20))),
        ("us1", us("415", 1), Some(at(0))),
    ];
    for (owner_id, owner, waitlisted_at) in &waiting {
        let owner = create(&store, owner_id, owner).await;
        let mut tx = store.begin().await.unwrap();
        let owner = Owner {
            gate: Some(Gate::AwaitingNumber),
            waitlisted_at: *waitlisted_at,
            ..owner
        };
        tx.save_owner(&owner).await.unwrap();
        tx.commit().await.unwrap();
    }
    // Not waiting: no gate, or waiting for payment.
    create(&store, "idle", &uk(50)).await;
    let payer = create(&store, "payer", &uk(51)).await;
    let mut tx = store.begin().await.unwrap();
    tx.save_owner(&Owner {
        gate: Some(Gate::PaymentRequired),
        ..payer
    })
    .await
    .unwrap();
    tx.commit().await.unwrap();

    let mut tx = store.begin().await.unwrap();
    let ids = |owners: Vec<Owner>| {
        owners
            .into_iter()
            .map(|c| c.id.to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        ids(tx.lock_waitlist(Country::Gb, 10).await.unwrap()),
        ["w1", "w2a", "w2b", "w3"]
    );
    assert_eq!(
        ids(tx.lock_waitlist(Country::Gb, 2).await.unwrap()),
        ["w1", "w2a"]
    );
    assert_eq!(
        ids(tx.lock_waitlist(Country::Us, 10).await.unwrap()),
        ["us1"]
    );
    assert!(
        tx.lock_waitlist(Country::Other, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

// --- outbox ------------------------------------------------------------------------------------

async fn outbox_claim_lease_retry_finish<S: Probe>(store: S) {
    let phone = uk(1);
    let owner = create(&store, "c1", &phone).await;
    let mut tx = store.begin().await.unwrap();
    let mut ids = Vec::new();
    for (n, body) in ["one", "two", "three"].into_iter().enumerate() {
        let msg = NewOutbound {
            owner_id: &owner.id,
            to: &phone,
            body,
            created_at: at(n as i64),
        };
        ids.push(tx.enqueue_outbound(&msg).await.unwrap());
    }
    tx.commit().await.unwrap();
    assert!(ids.is_sorted());

    let claim = |now: DateTime<Utc>, lease: DateTime<Utc>, limit: i64| {
        let store = store.clone();
        async move {
            let mut tx = store.begin().await.unwrap();
            let claimed = tx.claim_outbound(now, lease, limit).await.unwrap();
            tx.commit().await.unwrap();
            claimed
        }
    };

    // Not yet due before it was created.
    assert!(claim(at(-1), at(60), 10).await.is_empty());
    let first = claim(at(5), at(65), 2).await;
    assert_eq!(first.iter().map(|m| m.id).collect::<Vec<_>>(), ids[..2]);
    assert_eq!(first[0].owner_id, owner.id);
    assert_eq!(first[0].to, phone);
    assert_eq!(first[0].body, "one");
    assert_eq!(first[0].status, OutboundStatus::Sending);
    assert_eq!(first[0].attempts, 1);
    assert_eq!(first[0].created_at, at(0));
    assert_eq!(first[0].twilio_sid, None);
    let second = claim(at(6), at(66), 10).await;
    assert_eq!(
        second
            .iter()
            .map(|m| (m.id, m.attempts))
            .collect::<Vec<_>>(),
        [(ids[2], 1)]
    );
    // All leased.
    assert!(claim(at(7), at(67), 10).await.is_empty());
    assert!(
        claim(at(65), at(125), 10).await.is_empty(),
        "a lease runs until its end"
    );

    // The first worker died: its two come back once the lease has passed, the third's has not.
    let retaken = claim(at(65) + chrono::Duration::microseconds(1), at(200), 10).await;
    assert_eq!(
        retaken
            .iter()
            .map(|m| (m.id, m.attempts))
            .collect::<Vec<_>>(),
        [(ids[0], 2), (ids[1], 2)]
    );

    let mut tx = store.begin().await.unwrap();
    tx.finish_outbound(
        ids[0],
        OutboundStatus::Queued,
        Some("SM_out_1"),
        None,
        None,
        at(70),
    )
    .await
    .unwrap();
    tx.finish_outbound(
        ids[1],
        OutboundStatus::Failed,
        None,
        Some("Twilio 503"),
        Some(at(300)),
        at(70),
    )
    .await
    .unwrap();
    tx.finish_outbound(
        ids[2],
        OutboundStatus::Failed,
        None,
        Some("invalid number"),
        None,
        at(70),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();

    // Only the retry comes back, and only once due.
    assert!(claim(at(299), at(400), 10).await.is_empty());
    let retry = claim(at(300), at(400), 10).await;
    assert_eq!(retry.len(), 1);
    assert_eq!((retry[0].id, retry[0].attempts), (ids[1], 3));
    assert_eq!(retry[0].last_error.as_deref(), Some("Twilio 503"));

    let mut tx = store.begin().await.unwrap();
    tx.finish_outbound(
        ids[1],
        OutboundStatus::Sent,
        Some("SM_out_2"),
        None,
        None,
        at(310),
    )
    .await
    .unwrap();
    // A late worker cannot reopen a final message.
    tx.finish_outbound(
        ids[2],
        OutboundStatus::Queued,
        Some("SM_late"),
        None,
        None,
        at(320),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert!(claim(at(10_000), at(10_060), 10).await.is_empty());
    assert_eq!(
        store
            .text("SELECT status FROM outbound_messages WHERE twilio_sid = 'SM_out_1'")
            .await
            .as_deref(),
        Some("queued")
    );
    assert_eq!(
        store
            .text("SELECT status FROM outbound_messages WHERE twilio_sid = 'SM_out_2'")
            .await
            .as_deref(),
        Some("sent")
    );
    assert_eq!(store.count("SELECT COUNT(*) FROM outbound_messages WHERE status = 'failed' AND twilio_sid IS NULL AND last_error = 'invalid number'").await, 1);
    assert_eq!(
        store
            .count("SELECT COUNT(*) FROM outbound_messages WHERE lease_until IS NOT NULL")
            .await,
        0
    );
}

/// A message whose lease ran out while `sending` is taken over marked for reconciliation, with the
/// first claim's time kept as where to search from; the first claim can then neither renew its
/// lease nor hand the message back. A message handed back by its claim costs no attempt.
async fn outbox_takeover_is_uncertain_and_ends_the_old_claim<S: Probe>(store: S) {
    let phone = uk(1);
    let owner = create(&store, "c1", &phone).await;
    let mut tx = store.begin().await.unwrap();
    let id = tx
        .enqueue_outbound(&NewOutbound {
            owner_id: &owner.id,
            to: &phone,
            body: "one",
            created_at: at(0),
        })
        .await
        .unwrap();
    let first = tx
        .claim_outbound(at(1), at(60), 10)
        .await
        .unwrap()
        .remove(0);
    assert!(!first.needs_reconcile);
    // Still the first claim's, even past its lease while no one took it over.
    assert!(
        tx.renew_outbound_lease(id, first.attempts, at(61), at(1))
            .await
            .unwrap()
    );
    let taken = tx
        .claim_outbound(at(62), at(120), 10)
        .await
        .unwrap()
        .remove(0);
    assert!(taken.needs_reconcile, "the first claim may have sent it");
    assert_eq!(
        taken.attempted_at,
        Some(at(1)),
        "searched for since the first claim"
    );
    assert_eq!(taken.attempts, first.attempts + 1);
    assert!(
        !tx.renew_outbound_lease(id, first.attempts, at(130), at(70))
            .await
            .unwrap()
    );
    tx.defer_outbound(id, first.attempts, "late", at(70), at(70))
        .await
        .unwrap();
    assert_eq!(taken.status, OutboundStatus::Sending);
    // The new claim hands it back (a rate limit): no attempt spent, still to be reconciled.
    tx.defer_outbound(id, taken.attempts, "429", at(80), at(71))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        store
            .text("SELECT status FROM outbound_messages WHERE last_error = '429'")
            .await
            .as_deref(),
        Some("pending")
    );
    let mut tx = store.begin().await.unwrap();
    let again = tx
        .claim_outbound(at(80), at(140), 10)
        .await
        .unwrap()
        .remove(0);
    tx.commit().await.unwrap();
    assert_eq!(again.attempts, taken.attempts);
    assert!(again.needs_reconcile);
    assert_eq!(again.attempted_at, Some(at(1)));
}

async fn status_callbacks_never_move_back<S: Probe>(store: S) {
    let phone = uk(1);
    let owner = create(&store, "c1", &phone).await;
    let mut tx = store.begin().await.unwrap();
    let msg = NewOutbound {
        owner_id: &owner.id,
        to: &phone,
        body: "hello",
        created_at: at(0),
    };
    let out = tx.enqueue_outbound(&msg).await.unwrap();
    tx.claim_outbound(at(1), at(60), 1).await.unwrap();
    tx.finish_outbound(
        out,
        OutboundStatus::Queued,
        Some("SM_cb"),
        None,
        None,
        at(2),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();

    let status = || store.text("SELECT status FROM outbound_messages WHERE twilio_sid = 'SM_cb'");
    let steps = [
        (OutboundStatus::Sent, None, "sent"),
        (OutboundStatus::Queued, None, "sent"),
        (OutboundStatus::Sent, None, "sent"),
        (OutboundStatus::Undelivered, Some("30003"), "undelivered"),
        (OutboundStatus::Delivered, None, "undelivered"),
        (OutboundStatus::Failed, Some("30008"), "undelivered"),
        (OutboundStatus::Sent, None, "undelivered"),
    ];
    for (n, (callback, code, expected)) in steps.into_iter().enumerate() {
        let mut tx = store.begin().await.unwrap();
        let whose = tx
            .update_outbound_status("SM_cb", callback, code, at(10 + n as i64))
            .await
            .unwrap();
        tx.commit().await.unwrap();
        assert_eq!(whose, Some(id("c1")));
        assert_eq!(
            status().await.as_deref(),
            Some(expected),
            "after {callback:?}"
        );
    }
    assert_eq!(
        store
            .text("SELECT error_code FROM outbound_messages WHERE twilio_sid = 'SM_cb'")
            .await
            .as_deref(),
        Some("30003")
    );

    let mut tx = store.begin().await.unwrap();
    let whose = tx
        .update_outbound_status("SM_unknown", OutboundStatus::Delivered, None, at(99))
        .await
        .unwrap();
    assert_eq!(whose, None);
}

// --- webhook events ----------------------------------------------------------------------------

async fn webhook_event_stored_once<S: Probe>(store: S) {
    let payload = serde_json::json!({"id": "evt_1", "data": {"object": {"amount_total": 2900, "note": "£ ✓"}}});
    let event = NewWebhookEvent {
        provider: "stripe",
        event_id: "evt_1",
        event_type: "checkout.session.completed",
        payload: &payload,
        received_at: at(0),
    };
    let mut tx = store.begin().await.unwrap();
    assert!(tx.insert_webhook_event(&event).await.unwrap());
    assert!(!tx.insert_webhook_event(&event).await.unwrap());
    // The same id from another provider is another event.
    assert!(
        tx.insert_webhook_event(&NewWebhookEvent {
            provider: "twilio",
            ..event.clone()
        })
        .await
        .unwrap()
    );
    tx.commit().await.unwrap();

    let mut tx = store.begin().await.unwrap();
    assert!(!tx.insert_webhook_event(&event).await.unwrap());
    tx.set_webhook_event_outcome(
        "stripe",
        "evt_1",
        EventOutcome::Failed,
        Some("no such owner"),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    // An event never stored has no outcome to record: the commit fails.
    let mut tx = store.begin().await.unwrap();
    tx.set_webhook_event_outcome("stripe", "evt_404", EventOutcome::Ignored, None)
        .await
        .unwrap();
    assert!(tx.commit().await.is_err());

    assert_eq!(
        store.count("SELECT COUNT(*) FROM webhook_events WHERE provider = 'stripe' AND status = 'failed' AND error = 'no such owner' AND processed_at IS NOT NULL").await,
        1
    );
    assert_eq!(
        store
            .count("SELECT COUNT(*) FROM webhook_events WHERE status = 'received'")
            .await,
        1
    );
    let stored = store
        .text("SELECT CAST(payload AS TEXT) FROM webhook_events WHERE provider = 'stripe'")
        .await
        .unwrap();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&stored).unwrap(),
        payload
    );
}

// --- the pool keeper's uncertain purchases ----------------------------------------------------

async fn uncertain_purchases_are_recorded_once_and_counted_until_resolved<S: Probe>(store: S) {
    let (first, second) = (us("415", 1), us("415", 2));
    store
        .record_uncertain_purchase(&first, at(0))
        .await
        .unwrap();
    store
        .record_uncertain_purchase(&second, at(1))
        .await
        .unwrap();
    // A second failed lookup of the same number keeps the first attempt.
    store
        .record_uncertain_purchase(&first, at(5))
        .await
        .unwrap();
    store
        .record_purchase("PN1", &us("415", 3), at(2))
        .await
        .unwrap();
    assert_eq!(store.uncertain_purchase_count().await.unwrap(), 2);
    assert_eq!(store.purchases_since(at(-1)).await.unwrap(), 3);
    assert_eq!(
        store.purchases_since(at(0)).await.unwrap(),
        2,
        "counted from the attempt"
    );

    store
        .mark_uncertain_purchase_checked(&first, at(10))
        .await
        .unwrap();
    store
        .mark_uncertain_purchase_checked(&first, at(20))
        .await
        .unwrap();
    let rows = store.uncertain_purchases().await.unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(
        (
            &rows[0].e164,
            rows[0].attempted_at,
            rows[0].last_checked_at,
            rows[0].checks
        ),
        (&first, at(0), Some(at(20)), 2)
    );
    assert_eq!(
        (
            &rows[1].e164,
            rows[1].attempted_at,
            rows[1].last_checked_at,
            rows[1].checks
        ),
        (&second, at(1), None, 0)
    );

    store.forget_uncertain_purchase(&first).await.unwrap();
    store.forget_uncertain_purchase(&first).await.unwrap();
    let rows = store.uncertain_purchases().await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].e164, second);
    assert_eq!(store.purchases_since(at(-1)).await.unwrap(), 2);

    assert!(!store.pool_has_number(&second).await.unwrap());
    add_numbers(&store, std::slice::from_ref(&second), at(30)).await;
    assert!(store.pool_has_number(&second).await.unwrap());
}

// --- migrations --------------------------------------------------------------------------------

/// Each back end has its own migrations folder; both must hold the same migrations, or a schema
/// change reaches one back end only.
#[test]
fn both_back_ends_have_the_same_migrations() {
    let names = |backend: &str| -> Vec<String> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("migrations")
            .join(backend);
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let postgres = names("postgres");
    assert!(!postgres.is_empty());
    assert_eq!(postgres, names("sqlite"));
}

// --- SQLite on disk ----------------------------------------------------------------------------

struct TempDb(std::path::PathBuf);

impl TempDb {
    fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!("onboard-{name}-{}.db", std::process::id()));
        Self::remove(&path);
        TempDb(path)
    }
    fn url(&self) -> String {
        format!("sqlite://{}", self.0.display())
    }
    fn remove(path: &std::path::Path) {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        Self::remove(&self.0);
    }
}

#[tokio::test]
async fn sqlite_file_is_created_in_wal_mode_and_persists() {
    let db = TempDb::new("persist");
    let store = SqliteStore::connect(&db.url()).await.unwrap();
    store.migrate().await.unwrap();
    store.migrate().await.unwrap(); // idempotent
    for (pragma, expected) in [
        ("PRAGMA journal_mode", "wal"),
        ("PRAGMA foreign_keys", "1"),
        ("PRAGMA busy_timeout", "10000"),
    ] {
        let row = sqlx::query(pragma)
            .fetch_one(&mut *store.conn().await.unwrap())
            .await
            .unwrap();
        let value = row
            .try_get::<String, _>(0)
            .or_else(|_| row.try_get::<i64, _>(0).map(|v| v.to_string()))
            .unwrap();
        assert_eq!(value, expected, "{pragma}");
    }
    create(&store, "c1", &uk(1)).await;
    store.close().await;

    let reopened = SqliteStore::connect(&db.url()).await.unwrap();
    reopened.migrate().await.unwrap();
    assert_eq!(
        reopened.owner_by_phone(&uk(1)).await.unwrap().unwrap().id,
        id("c1")
    );
}

/// The in-memory database is one connection: a second transaction waits for the first, and a
/// transaction dropped mid-way is rolled back before anyone else uses the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_in_memory_transactions_take_turns() {
    let store = sqlite().await;
    let mut first = store.begin().await.unwrap();
    first
        .lock_or_create_owner(&uk(1), || Owner::new(id("c1"), uk(1), at(0)))
        .await
        .unwrap();

    let second = tokio::spawn({
        let store = store.clone();
        async move {
            let mut tx = store.begin().await.unwrap();
            let (owner, created) = tx
                .lock_or_create_owner(&uk(1), || Owner::new(id("c2"), uk(1), at(1)))
                .await
                .unwrap();
            tx.commit().await.unwrap();
            (owner.id, created)
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !second.is_finished(),
        "the second transaction ran inside the first"
    );
    drop(first);

    let (owner_id, created) = promptly("the second transaction", second).await.unwrap();
    assert_eq!(
        (owner_id, created),
        (id("c2"), true),
        "the first was rolled back"
    );
}

#[tokio::test]
async fn sqlite_in_memory_store_closed_fails_instead_of_waiting() {
    let store = sqlite().await;
    create(&store, "c1", &uk(1)).await;
    store.close().await;
    let closed = promptly("begin on a closed store", store.begin()).await;
    assert!(closed.is_err());
    assert!(store.ping().await.is_err());
    assert!(store.owner_by_phone(&uk(1)).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_concurrent_first_texts_make_one_owner() {
    let db = TempDb::new("race");
    let store = SqliteStore::connect(&db.url()).await.unwrap();
    store.migrate().await.unwrap();
    let barrier = Arc::new(tokio::sync::Barrier::new(16));
    let tasks: Vec<_> = (0..16)
        .map(|n| {
            let (store, barrier) = (store.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                let mut tx = store.begin().await.unwrap();
                let new = || Owner::new(id(&format!("c{n}")), uk(1), at(n));
                let (owner, created) = tx.lock_or_create_owner(&uk(1), new).await.unwrap();
                tx.commit().await.unwrap();
                (owner.id, created)
            })
        })
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.unwrap());
    }
    assert_eq!(results.iter().filter(|(_, created)| *created).count(), 1);
    assert_eq!(
        results
            .iter()
            .map(|(id, _)| id)
            .collect::<HashSet<_>>()
            .len(),
        1
    );
    assert_eq!(store.count("SELECT COUNT(*) FROM owners").await, 1);
}

// --- PostgreSQL races --------------------------------------------------------------------------

/// Waits until `n` sessions on this database are waiting for a lock: a fact, not a guess at timing.
/// (The deadline only turns a lock that is never waited for into a failure instead of a hang.)
async fn until_blocked(store: &PgStore, n: i64) {
    let poll = async {
        loop {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM pg_stat_activity \
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
            )
            .fetch_one(&mut *store.conn().await.unwrap())
            .await
            .unwrap();
            if waiting >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(60), poll)
        .await
        .expect("no session ever waited for the lock");
}

/// Fails, rather than hangs, a test whose step waits on a lock it should have passed by.
async fn promptly<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), f)
        .await
        .unwrap_or_else(|_| panic!("{what} waited on a lock"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_allocation_race_gives_each_number_once() {
    const OWNERS: usize = 200;
    const NUMBERS: u32 = 150;
    let url = postgres_url().await;
    let stores = [
        PgStore::connect(&url, 8).await.unwrap(),
        PgStore::connect(&url, 8).await.unwrap(),
    ];
    let numbers: Vec<PhoneNumber> = (0..NUMBERS).map(|n| uk(900_000 + n)).collect();
    add_numbers(&stores[0], &numbers, at(0)).await;
    let mut tx = stores[0].begin().await.unwrap();
    for n in 0..OWNERS {
        let owner = uk(n as u32);
        let new = || Owner::new(id(&format!("c{n}")), owner.clone(), at(0));
        tx.lock_or_create_owner(&owner, new).await.unwrap();
    }
    tx.commit().await.unwrap();

    let barrier = Arc::new(tokio::sync::Barrier::new(OWNERS));
    let tasks: Vec<_> = (0..OWNERS)
        .map(|n| {
            let store = stores[n % 2].clone();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                let owner_id = id(&format!("c{n}"));
                let mut tx = store.begin().await.unwrap();
                tx.lock_owner(&owner_id)
                    .await
                    .unwrap()
                    .expect("the owner exists");
                let allocation = tx
                    .allocate_number(&owner_id, Country::Gb, None, at(1))
                    .await
                    .unwrap();
                tx.commit().await.unwrap();
                (owner_id, allocation)
            })
        })
        .collect();
    let mut winners = HashSet::new();
    let mut numbers_given = HashSet::new();
    let mut empty = 0;
    for task in tasks {
        match task.await.unwrap() {
            (owner, Allocation::Allocated(number)) => {
                assert!(winners.insert(owner), "an owner won twice");
                assert!(numbers_given.insert(number), "a number was given twice");
            }
            (_, Allocation::PoolEmpty) => empty += 1,
            (_, other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((winners.len(), numbers_given.len(), empty), (150, 150, 50));
    assert_eq!(
        stores[1].pool_stats().await.unwrap(),
        PoolStats {
            total: 150,
            assigned: 150,
            ..PoolStats::default()
        }
    );
    assert_eq!(
        stores[1]
            .count("SELECT COUNT(DISTINCT owner_id) FROM pool_numbers")
            .await,
        150
    );
}

#[tokio::test]
async fn postgres_allocation_skips_numbers_being_taken_and_serialises_one_owner() {
    let url = postgres_url().await;
    let (a, b) = (
        PgStore::connect(&url, 2).await.unwrap(),
        PgStore::connect(&url, 2).await.unwrap(),
    );
    add_numbers(&a, &[uk(900_001), uk(900_002), uk(900_003)], at(0)).await;
    for (owner_id, phone) in [("c1", uk(1)), ("c2", uk(2))] {
        create(&a, owner_id, &phone).await;
    }

    // c1's allocation is open; c2's passes it by without waiting and takes the next number.
    let mut first = a.begin().await.unwrap();
    first.lock_owner(&id("c1")).await.unwrap();
    let got = first
        .allocate_number(&id("c1"), Country::Gb, None, at(1))
        .await
        .unwrap();
    assert_eq!(got, Allocation::Allocated(uk(900_001)));
    let mut second = b.begin().await.unwrap();
    let got = promptly("c2's allocation", async {
        second.lock_owner(&id("c2")).await.unwrap();
        second
            .allocate_number(&id("c2"), Country::Gb, None, at(1))
            .await
    })
    .await
    .unwrap();
    assert_eq!(got, Allocation::Allocated(uk(900_002)));
    second.commit().await.unwrap();

    // A second event for c1 waits on the owner's lock, then its allocation finds the number the
    // first took.
    let again = tokio::spawn({
        let b = b.clone();
        async move {
            let mut tx = b.begin().await.unwrap();
            tx.lock_owner(&id("c1")).await.unwrap();
            let got = tx
                .allocate_number(&id("c1"), Country::Gb, None, at(2))
                .await
                .unwrap();
            tx.commit().await.unwrap();
            got
        }
    });
    until_blocked(&a, 1).await;
    first.commit().await.unwrap();
    assert_eq!(
        again.await.unwrap(),
        Allocation::AlreadyAssigned(uk(900_001))
    );
    assert_eq!(a.pool_stats().await.unwrap().available, 1);
}

/// An owner paying again as the keeper ends their number's quarantine: the allocation sees the
/// number as theirs, then waits on the keeper's row lock; when the keeper commits, the number is
/// free for anyone, the take-back finds nothing, and the allocation gives a free number (the
/// same one, oldest first) rather than failing or giving nothing.
#[tokio::test]
async fn postgres_a_take_back_that_loses_to_the_quarantines_end_allocates_a_free_number() {
    let url = postgres_url().await;
    let (keeper, payer) = (
        PgStore::connect(&url, 2).await.unwrap(),
        PgStore::connect(&url, 2).await.unwrap(),
    );
    add_numbers(&keeper, &[uk(900_001), uk(900_002)], at(0)).await;
    create(&keeper, "c1", &uk(1)).await;
    assert_eq!(
        allocate(&keeper, "c1", Country::Gb, None).await,
        Allocation::Allocated(uk(900_001))
    );
    let mut tx = keeper.begin().await.unwrap();
    tx.quarantine_number(&uk(900_001), at(100), true, at(20))
        .await
        .unwrap();
    tx.commit().await.unwrap();

    // The keeper's end of the quarantine, not yet committed, holds the number's row.
    let mut ending = keeper.begin().await.unwrap();
    assert_eq!(ending.end_quarantines(at(200)).await.unwrap(), 1);
    let paying = tokio::spawn(async move {
        let mut tx = payer.begin().await.unwrap();
        tx.lock_owner(&id("c1"))
            .await
            .unwrap()
            .expect("the owner exists");
        let got = tx
            .allocate_number(&id("c1"), Country::Gb, None, at(200))
            .await
            .unwrap();
        tx.commit().await.unwrap();
        got
    });
    until_blocked(&keeper, 1).await;
    ending.commit().await.unwrap();

    assert_eq!(
        promptly("the allocation", paying).await.unwrap(),
        Allocation::Allocated(uk(900_001))
    );
    let stats = keeper.pool_stats().await.unwrap();
    assert_eq!((stats.assigned, stats.available), (1, 1), "{stats:?}");
}

#[tokio::test]
async fn postgres_concurrent_first_texts_make_one_owner() {
    let url = postgres_url().await;
    let (a, b) = (
        PgStore::connect(&url, 2).await.unwrap(),
        PgStore::connect(&url, 2).await.unwrap(),
    );

    // A deterministic interleaving: the second insert waits on the first, uncommitted one.
    let mut first = a.begin().await.unwrap();
    let (mine, created) = first
        .lock_or_create_owner(&uk(1), || Owner::new(id("a1"), uk(1), at(0)))
        .await
        .unwrap();
    assert!(created);
    let second = tokio::spawn({
        let b = b.clone();
        async move {
            let mut tx = b.begin().await.unwrap();
            let got = tx
                .lock_or_create_owner(&uk(1), || Owner::new(id("b1"), uk(1), at(1)))
                .await
                .unwrap();
            tx.commit().await.unwrap();
            got
        }
    });
    until_blocked(&a, 1).await;
    first.commit().await.unwrap();
    let (theirs, created) = second.await.unwrap();
    assert!(!created);
    assert_eq!(theirs, mine);

    // And the same again the other way round, with the first rolled back: the second creates it.
    let mut first = b.begin().await.unwrap();
    first
        .lock_or_create_owner(&uk(2), || Owner::new(id("b2"), uk(2), at(0)))
        .await
        .unwrap();
    let second = tokio::spawn({
        let a = a.clone();
        async move {
            let mut tx = a.begin().await.unwrap();
            let got = tx
                .lock_or_create_owner(&uk(2), || Owner::new(id("a2"), uk(2), at(1)))
                .await
                .unwrap();
            tx.commit().await.unwrap();
            got
        }
    });
    until_blocked(&a, 1).await;
    drop(first);
    let (owner, created) = second.await.unwrap();
    assert!(created);
    assert_eq!(owner.id, id("a2"));
    assert_eq!(a.count("SELECT COUNT(*) FROM owners").await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_many_first_texts_from_two_pools_make_one_owner() {
    let url = postgres_url().await;
    let stores = [
        PgStore::connect(&url, 4).await.unwrap(),
        PgStore::connect(&url, 4).await.unwrap(),
    ];
    let barrier = Arc::new(tokio::sync::Barrier::new(16));
    let tasks: Vec<_> = (0..16)
        .map(|n| {
            let (store, barrier) = (stores[n % 2].clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                let mut tx = store.begin().await.unwrap();
                let new = || Owner::new(id(&format!("c{n}")), uk(1), at(0));
                let (owner, created) = tx.lock_or_create_owner(&uk(1), new).await.unwrap();
                tx.commit().await.unwrap();
                (owner.id, created)
            })
        })
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.unwrap());
    }
    assert_eq!(results.iter().filter(|(_, created)| *created).count(), 1);
    assert_eq!(
        results
            .iter()
            .map(|(id, _)| id)
            .collect::<HashSet<_>>()
            .len(),
        1
    );
    assert_eq!(stores[0].count("SELECT COUNT(*) FROM owners").await, 1);
}

#[tokio::test]
async fn postgres_duplicate_claim_waits_for_the_first_and_gets_its_answer() {
    let url = postgres_url().await;
    let (a, b) = (
        PgStore::connect(&url, 2).await.unwrap(),
        PgStore::connect(&url, 2).await.unwrap(),
    );
    let msg = NewInbound {
        message_sid: "SM1",
        from: "+447700000001",
        to: "+447700900000",
        body: "hi",
        received_at: at(0),
    };

    let mut first = a.begin().await.unwrap();
    assert_eq!(first.claim_inbound(&msg).await.unwrap(), Claim::Fresh);
    let retry = tokio::spawn({
        let (b, msg) = (
            b.clone(),
            NewInbound {
                received_at: at(1),
                ..msg.clone()
            },
        );
        async move {
            let mut tx = b.begin().await.unwrap();
            tx.claim_inbound(&msg).await.unwrap()
        }
    });
    until_blocked(&a, 1).await;
    first
        .finish_inbound("SM1", None, "<Response>first</Response>")
        .await
        .unwrap();
    first.commit().await.unwrap();
    assert_eq!(
        retry.await.unwrap(),
        Claim::Duplicate {
            response: "<Response>first</Response>".into()
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_outbox_workers_never_share_a_message() {
    const MESSAGES: usize = 120;
    let url = postgres_url().await;
    let stores = [
        PgStore::connect(&url, 4).await.unwrap(),
        PgStore::connect(&url, 4).await.unwrap(),
    ];
    let phone = uk(1);
    let owner = create(&stores[0], "c1", &phone).await;
    let mut tx = stores[0].begin().await.unwrap();
    for n in 0..MESSAGES {
        let body = format!("message {n}");
        let msg = NewOutbound {
            owner_id: &owner.id,
            to: &phone,
            body: &body,
            created_at: at(0),
        };
        tx.enqueue_outbound(&msg).await.unwrap();
    }
    tx.commit().await.unwrap();

    // Deterministic: a worker holding a claim open does not block another, which gets the rest.
    let mut held = stores[0].begin().await.unwrap();
    let first = held.claim_outbound(at(1), at(60), 10).await.unwrap();
    let mut other = stores[1].begin().await.unwrap();
    let rest = promptly(
        "the second worker",
        other.claim_outbound(at(1), at(60), 1000),
    )
    .await
    .unwrap();
    assert_eq!(first.len() + rest.len(), MESSAGES);
    let first_ids: HashSet<i64> = first.iter().map(|m| m.id).collect();
    assert!(rest.iter().all(|m| !first_ids.contains(&m.id)));
    // Rolled back at once: a dropped transaction keeps its locks until its connection is used
    // again, and the racing workers below would pass its rows by.
    other.rollback().await.unwrap();
    held.rollback().await.unwrap();

    // Racing: eight workers on two pools claim small batches until the outbox is empty.
    let barrier = Arc::new(tokio::sync::Barrier::new(8));
    let workers: Vec<_> = (0..8)
        .map(|n| {
            let (store, barrier) = (stores[n % 2].clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                let mut mine = Vec::new();
                loop {
                    let mut tx = store.begin().await.unwrap();
                    let batch = tx.claim_outbound(at(2), at(60), 3).await.unwrap();
                    tx.commit().await.unwrap();
                    if batch.is_empty() {
                        return mine;
                    }
                    mine.extend(batch);
                }
            })
        })
        .collect();
    let mut seen = HashSet::new();
    for worker in workers {
        for message in worker.await.unwrap() {
            assert_eq!(message.attempts, 1);
            assert!(
                seen.insert(message.id),
                "message {} claimed twice",
                message.id
            );
        }
    }
    assert_eq!(seen.len(), MESSAGES);
}

/// An event's one write keeps one plan per connection. Twenty texts from owners we know go
/// through a server whose pool has one connection; PostgreSQL plans a prepared statement for its
/// first five runs, then keeps a generic plan if that costs no more. Sent as arrays, a text's
/// write (its owner, transition, answer, reminder timer and ledger row) never did (an array's
/// length is seen only in its value), and each text paid for planning a ten-part statement.
#[tokio::test]
async fn postgres_a_texts_write_is_planned_once_per_connection() {
    let store = PgStore::connect(&postgres_url().await, 1).await.unwrap();
    // Tables of a live server: with a handful of rows any plan is cheap.
    for fill in [
        "INSERT INTO owners (id, owner_phone, country, locale, state, created_at, updated_at) \
         SELECT 'filler' || g, '+1555' || lpad(g::text, 7, '0'), 'US', 'en-US', \
             'S2_BUSINESS_NAME', now(), now() FROM generate_series(1, 5000) AS g",
        "INSERT INTO inbound_messages (message_sid, from_addr, to_addr, body, received_at) \
         SELECT 'SMfiller' || g, '+15550000001', '+447700900000', 'hi', now() \
         FROM generate_series(1, 5000) AS g",
        "INSERT INTO state_history (owner_id, from_state, to_state, cause, at) \
         SELECT 'filler' || g, 'S1_BUSINESS_TYPE_LOCATION', 'S2_BUSINESS_NAME', 'sms', now() \
         FROM generate_series(1, 5000) AS g",
    ] {
        sqlx::query(fill).execute(store.pool()).await.unwrap();
    }
    let app = support::app::spawn_app(store.clone(), support::app::test_config(&[])).await;
    for n in 0..21 {
        // The first makes the owner; then "Hi" again and again, each answered with the question.
        let response = app
            .text(&format!("SMplan{n:02}"), "+447700900123", "Hi")
            .await;
        assert_eq!(response.status(), 200);
    }
    let mut conn = store.conn().await.unwrap();
    let plans: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements \
         WHERE statement LIKE 'WITH owner_rows AS (%'",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    let (generic, custom) = plans.iter().fold((0, 0), |(g, c), (_, generic, custom)| {
        (g + generic, c + custom)
    });
    assert!(
        generic >= 15 && custom <= 5,
        "plans made for the writes: {plans:#?}"
    );
}

/// An allocation reads a few rows however large the pool, and keeps one plan per connection.
/// PostgreSQL plans a prepared statement for the values given for its first five runs, then
/// keeps one plan for any value if that costs no more. The allocation used to search the owner's
/// area code first even when they had none (every GB owner): planned for a NULL area code, that
/// search folded away, so the plan for any value could look dearer and each payment plan the
/// statement again; and that plan, on a table without statistics yet, walked every free number
/// looking for the NULL (1,988 rows here). An owner without an area code now searches their
/// country alone.
#[tokio::test]
async fn postgres_an_allocation_reads_a_few_rows_however_large_the_pool() {
    const FREE: usize = 2_000;
    let store = PgStore::connect(&postgres_url().await, 1).await.unwrap();
    sqlx::query(
        "INSERT INTO pool_numbers (e164, status, country, twilio_sid, created_at, updated_at) \
         SELECT '+4477009' || lpad(g::text, 5, '0'), 'AVAILABLE', 'GB', 'PN' || g, now(), now() \
         FROM generate_series(1, $1) AS g",
    )
    .bind(FREE as i32)
    .execute(store.pool())
    .await
    .unwrap();
    for n in 1..=13 {
        create(&store, &format!("g{n}"), &uk(100 + n)).await;
    }
    for n in 1..=12 {
        let allocation = allocate(&store, &format!("g{n}"), Country::Gb, None).await;
        assert!(
            matches!(allocation, Allocation::Allocated(_)),
            "g{n}: {allocation:?}"
        );
    }

    let mut conn = store.conn().await.unwrap();
    let (name, generic, custom): (String, i64, i64) = sqlx::query_as(
        "SELECT name, generic_plans, custom_plans FROM pg_prepared_statements \
         WHERE statement LIKE 'WITH held AS (%'",
    )
    .fetch_one(&mut *conn)
    .await
    .unwrap();
    assert!(
        generic >= 7 && custom <= 5,
        "12 allocations made {generic} generic and {custom} custom plans"
    );

    // The plan for any value, run for one more owner: without statistics (a new table, or
    // PostgreSQL's autovacuum not yet round) and with them (a live server).
    let before = rows_passed_by_generic_plan(&mut conn, &name, "g13").await;
    sqlx::query("ANALYZE pool_numbers")
        .execute(&mut *conn)
        .await
        .unwrap();
    let after = rows_passed_by_generic_plan(&mut conn, &name, "g13").await;
    assert!(
        before.0 <= 5 && after.0 <= 5,
        "of a pool of {FREE}, the allocation passed by {} rows without statistics, {} with: \
         {:#} {:#}",
        before.0,
        after.0,
        before.1,
        after.1
    );
}

/// The rows an allocation's plan read and passed by (and the plan, to show), with PostgreSQL made
/// to run the prepared statement `name` with its plan for any value; rolled back.
async fn rows_passed_by_generic_plan(
    conn: &mut sqlx::PgConnection,
    name: &str,
    owner_id: &str,
) -> (u64, serde_json::Value) {
    fn passed_by(node: &serde_json::Value) -> u64 {
        match node {
            serde_json::Value::Object(fields) => fields
                .iter()
                .map(|(key, value)| match key.as_str() {
                    "Rows Removed by Filter" | "Rows Removed by Index Recheck" => {
                        value.as_u64().unwrap_or(0)
                    }
                    _ => passed_by(value),
                })
                .sum(),
            serde_json::Value::Array(items) => items.iter().map(passed_by).sum(),
            _ => 0,
        }
    }
    let mut tx = sqlx::Connection::begin(conn).await.unwrap();
    sqlx::query("SET LOCAL plan_cache_mode = force_generic_plan")
        .execute(&mut *tx)
        .await
        .unwrap();
    // The name is PostgreSQL's own, read from its catalogue; the owner one of the test's.
    let (plan,): (serde_json::Value,) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE {name}('GB', '{owner_id}', now())"
    )))
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    tx.rollback().await.unwrap();
    (passed_by(&plan), plan)
}

/// A text's first statement reads the owner's reminder timer with them. When it waits for the
/// owner, it still reads the timer as the event that held the owner left it: here a text that
/// re-armed a conversation which had expired, so this one is not welcomed back a second time.
/// The statement's snapshot is older than that event's commit; the timer's row lock is what
/// makes the read see it.
#[tokio::test]
async fn postgres_a_text_waiting_for_its_owner_reads_the_timer_the_other_event_left() {
    use onboard::store::OwnerKey;
    use onboard::store::reminders::{ReminderTimer, ReminderTx as _};

    let url = postgres_url().await;
    let (a, b) = (
        PgStore::connect(&url, 2).await.unwrap(),
        PgStore::connect(&url, 2).await.unwrap(),
    );
    let owner = create(&a, "c1", &uk(1)).await;
    let expired = ReminderTimer {
        owner_id: owner.id.clone(),
        state: StateName::S2BusinessName,
        sent: 3,
        anchor_at: at(0),
        due_at: None,
        expired_at: Some(at(100)),
    };
    let mut tx = a.begin().await.unwrap();
    tx.put_reminder_timer(&expired).await.unwrap();
    tx.commit().await.unwrap();

    // An event holds the owner and re-arms their timer.
    let mut first = a.begin().await.unwrap();
    first.lock_owner(&owner.id).await.unwrap();
    let rearmed = ReminderTimer {
        sent: 0,
        anchor_at: at(200),
        due_at: Some(at(300)),
        expired_at: None,
        ..expired.clone()
    };
    first.put_reminder_timer(&rearmed).await.unwrap();

    let text = tokio::spawn({
        let b = b.clone();
        async move {
            let phone = uk(1);
            let mut tx = b.begin().await.unwrap();
            let msg = NewInbound {
                message_sid: "SM2",
                from: phone.as_str(),
                to: "+447700900000",
                body: "hello?",
                received_at: at(250),
            };
            let (claim, owner) = tx
                .claim_inbound_locking(&msg, OwnerKey::Phone(&phone))
                .await
                .unwrap();
            let timer = tx.reminder_timer(&owner.unwrap().id).await.unwrap();
            tx.commit().await.unwrap();
            (claim, timer)
        }
    });
    until_blocked(&a, 1).await;
    first.commit().await.unwrap();
    let (claim, timer) = text.await.unwrap();
    assert_eq!(claim, Claim::Fresh);
    assert_eq!(timer, Some(rearmed));
}
