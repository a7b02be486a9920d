//! The pool keeper's low-water check: `POOL_LOW` once per crossing below the mark, per country,
//! whichever of two replicas on one database looks first. Runs on both back ends.

use crate::support;

use onboard::domain::{Country, PhoneNumber};
use onboard::store::{PgStore, SqliteStore, Store};
use support::app::{TestApp, spawn_app, test_config};

/// `spawn_app` runs the engine with a low-water mark of 3.
const LOW_WATER: i64 = 3;

fn gb(n: u32) -> PhoneNumber {
    format!("+447700900{n:03}").parse().unwrap()
}

#[tokio::test]
async fn a_crossing_is_reported_once_across_replicas_on_postgres() {
    let url = support::fresh_postgres_database().await;
    let store = PgStore::connect(&url, 5).await.unwrap();
    store.migrate().await.unwrap();
    let first = spawn_app(store.clone(), test_config(&[])).await;
    let second = spawn_app(store, test_config(&[])).await;
    a_crossing_is_reported_once_across_replicas(first, second).await;
}

#[tokio::test]
async fn a_crossing_is_reported_once_across_replicas_on_sqlite() {
    let store = SqliteStore::in_memory().await.unwrap();
    store.migrate().await.unwrap();
    let first = spawn_app(store.clone(), test_config(&[])).await;
    let second = spawn_app(store, test_config(&[])).await;
    a_crossing_is_reported_once_across_replicas(first, second).await;
}

async fn a_crossing_is_reported_once_across_replicas<S: Store>(
    first: TestApp<S>,
    second: TestApp<S>,
) {
    let (a, b) = (&first.engine, &second.engine);
    a.add_numbers(&[gb(901), gb(902)]).await.unwrap();

    // Two GB numbers and no US one, under a mark of 3: both countries cross, seen by one replica.
    assert_eq!(
        a.check_pool_levels().await.unwrap(),
        [(Country::Gb, 2), (Country::Us, 0)]
    );
    assert_eq!(b.check_pool_levels().await.unwrap(), []);
    assert_eq!(a.check_pool_levels().await.unwrap(), []);

    // Refilled above the mark: nothing to report, but the level is noted.
    a.add_numbers(&[gb(903), gb(904), gb(905)]).await.unwrap();
    assert_eq!(b.check_pool_levels().await.unwrap(), []);

    // Three numbers leave the pool: GB crosses again, reported once more.
    for n in [903, 904, 905] {
        a.release_number(&gb(n)).await.unwrap();
    }
    assert_eq!(
        b.check_pool_levels().await.unwrap(),
        [(Country::Gb, LOW_WATER - 1)]
    );
    assert_eq!(a.check_pool_levels().await.unwrap(), []);
}
