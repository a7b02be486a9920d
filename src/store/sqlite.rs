//! SQLite, the embedded default: one file, one writer at a time. Every transaction begins with
//! `BEGIN IMMEDIATE`, taking the write lock up front, so the SQL needs no row locks and two
//! transactions never deadlock upgrading a read lock to a write lock.

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::{Sqlite, Transaction};

use super::common;
use super::{Result, Store};

#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if missing) the database at `url`, e.g. `sqlite://onboard.db`, in WAL mode
    /// with foreign keys on and a 10 s busy timeout.
    pub async fn connect(url: &str) -> Result<SqliteStore> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .test_before_acquire(false)
            .connect_with(options)
            .await?;
        Ok(SqliteStore { pool })
    }

    /// A fresh private in-memory database, for tests and fixture replay. It lives in the pool's
    /// one connection, which is never closed for idleness or age; a second transaction opened
    /// while one is live waits for it.
    pub async fn in_memory() -> Result<SqliteStore> {
        let options = SqliteConnectOptions::new() // filename ":memory:": private to its connection
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .test_before_acquire(false)
            .min_connections(1)
            .max_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await?;
        Ok(SqliteStore { pool })
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

/// One `BEGIN IMMEDIATE` transaction; dropped without commit, it rolls back.
pub struct SqliteTx(Transaction<'static, Sqlite>);

impl Store for SqliteStore {
    type Tx = SqliteTx;

    async fn migrate(&self) -> Result<()> {
        sqlx::migrate!("./migrations/sqlite")
            .run(&self.pool)
            .await?;
        Ok(())
    }

    async fn begin(&self) -> Result<SqliteTx> {
        Ok(SqliteTx(self.pool.begin_with("BEGIN IMMEDIATE").await?))
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    common::store_reads!();
}

common::impl_tx!(SqliteTx, for_update = "", skip_locked = "");
