//! Stripe delivers the same event twice at the same moment (its retries overlap a slow first
//! delivery): exactly one delivery processes it, the other is a duplicate. On both back ends.

mod support;

use chrono::Utc;
use onboard::domain::{OwnerId, PhoneNumber};
use onboard::engine::Engine;
use onboard::payments::{self, Receipt};
use onboard::store::{Owner, PgStore, SqliteStore, Store, Tx};
use support::app::{TestApp, spawn_postgres, spawn_sqlite, test_config};

/// Owners, each paying once; every payment event is delivered twice at once.
const OWNERS: usize = 20;

#[tokio::test]
async fn sqlite_concurrent_deliveries_of_one_event_are_processed_once() {
    let app: TestApp<SqliteStore> = spawn_sqlite(test_config(&[])).await;
    concurrent_deliveries_are_processed_once(&app.engine).await;
}

#[tokio::test]
async fn postgres_concurrent_deliveries_of_one_event_are_processed_once() {
    let app: TestApp<PgStore> = spawn_postgres(test_config(&[])).await;
    concurrent_deliveries_are_processed_once(&app.engine).await;
}

async fn concurrent_deliveries_are_processed_once<S: Store>(engine: &Engine<S>) {
    let mut tx = engine.store().begin().await.unwrap();
    for n in 0..OWNERS {
        let phone: PhoneNumber = format!("+4477009001{n:02}").parse().unwrap();
        let id = OwnerId::new(format!("c_race{n}"));
        tx.lock_or_create_owner(&phone, || {
            Owner::new(id.clone(), phone.clone(), Utc::now())
        })
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();

    let mut receipts = Vec::new();
    for n in 0..OWNERS {
        let event = serde_json::json!({
            "id": format!("evt_race{n}"), "object": "event", "type": "checkout.session.completed",
            "data": {"object": {"payment_status": "paid", "client_reference_id": format!("c_race{n}")}}
        })
        .to_string();
        let (first, second) = tokio::join!(
            payments::receive(engine, &[], None, event.as_bytes()),
            payments::receive(engine, &[], None, event.as_bytes()),
        );
        let mut pair = [first.unwrap(), second.unwrap()];
        pair.sort_by_key(|r| r.name());
        receipts.push(pair);
    }
    for (n, pair) in receipts.iter().enumerate() {
        assert_eq!(
            pair,
            &[Receipt::Duplicate, Receipt::Processed],
            "event {n}: one delivery processed, the other a duplicate"
        );
    }
}
