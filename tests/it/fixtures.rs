//! Every fixture conversation in `fixtures/conversations`, replayed on SQLite and on PostgreSQL.

use crate::support;

use std::path::PathBuf;
use std::sync::Arc;

use onboard::flows::Flows;
use onboard::replay::{self, Fixture};
use onboard::store::{PgStore, Store};

fn fixture_files() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/conversations");
    let files = replay::collect(&[dir]).expect("fixtures/conversations is readable");
    assert!(!files.is_empty(), "no fixtures found");
    files
}

fn load_all() -> Vec<(PathBuf, Fixture)> {
    fixture_files()
        .into_iter()
        .map(|file| {
            let fixture = Fixture::load(&file).unwrap_or_else(|e| panic!("{e}"));
            (file, fixture)
        })
        .collect()
}

#[tokio::test]
async fn every_fixture_passes_on_sqlite() {
    let flows = Arc::new(Flows::embedded().expect("flows are valid"));
    let mut failures = Vec::new();
    for (file, fixture) in load_all() {
        if let Err(failure) = replay::run(&fixture, flows.clone())
            .await
            .expect("replay runs")
        {
            failures.push(format!("{}: {failure}", file.display()));
        }
    }
    assert!(
        failures.is_empty(),
        "failing fixtures:\n{}",
        failures.join("\n")
    );
}

#[tokio::test]
async fn every_fixture_passes_on_postgres() {
    let flows = Arc::new(Flows::embedded().expect("flows are valid"));
    let mut failures = Vec::new();
    for (file, fixture) in load_all() {
        let url = support::fresh_postgres_database().await;
        let store = PgStore::connect(&url, 4).await.expect("connect");
        store.migrate().await.expect("migrate");
        if let Err(failure) = replay::run_on(store, &fixture, flows.clone())
            .await
            .expect("replay runs")
        {
            failures.push(format!("{}: {failure}", file.display()));
        }
    }
    assert!(
        failures.is_empty(),
        "failing fixtures:\n{}",
        failures.join("\n")
    );
}
