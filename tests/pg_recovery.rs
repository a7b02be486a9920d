//! After PostgreSQL restarts, every pooled connection is dead. The next event must not fail on one
//! of them, nor wait long for a new one: each checkout checks its connection first and replaces
//! a dead one at once. A restart is played by killing the pool's connections on the server.

mod support;

use std::time::{Duration, Instant};

use onboard::domain::ClientId;
use onboard::store::{PgStore, Store, Tx};
use sqlx::{Connection, PgConnection};

const POOL: u32 = 4;

#[tokio::test]
async fn postgres_the_event_after_its_connections_were_killed_succeeds_at_once() {
    let url = support::fresh_postgres_database().await;
    let store = PgStore::connect(&url, POOL).await.unwrap();
    store.migrate().await.unwrap();
    // Every connection of the pool opened and back in it, idle.
    let mut open = Vec::new();
    for _ in 0..POOL {
        open.push(store.begin().await.unwrap());
    }
    for tx in open {
        tx.commit().await.unwrap();
    }

    let mut admin = PgConnection::connect(&url).await.unwrap();
    let pids: Vec<i32> = sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert_eq!(pids.len(), POOL as usize, "the pool's connections are open");
    sqlx::query("SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) AS pid")
        .bind(&pids)
        .execute(&mut admin)
        .await
        .unwrap();
    // Wait until the server has really ended them, as after a restart.
    loop {
        let alive: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM pg_stat_activity WHERE pid = ANY($1::int[])")
                .bind(&pids)
                .fetch_one(&mut admin)
                .await
                .unwrap();
        if alive == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let started = Instant::now();
    // An event: one transaction, and it must work on the first try.
    let mut tx = store
        .begin()
        .await
        .expect("a transaction on a fresh connection");
    let owner = tx
        .lock_client(&ClientId::new("c_1"))
        .await
        .expect("the event's first query works");
    assert!(owner.is_none());
    tx.commit().await.expect("and it commits");
    store.ping().await.expect("the readiness ping works too");
    eprintln!(
        "first event after the pool's connections were killed: {:?}",
        started.elapsed()
    );
}
