//! SQLite, the embedded default: one file, one writer at a time. Every transaction begins with
//! `BEGIN IMMEDIATE`, taking the write lock up front, so the SQL needs no row locks and two
//! transactions never deadlock upgrading a read lock to a write lock.

use std::ops::{Deref, DerefMut};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
};
use sqlx::{Connection, Sqlite, Transaction};
use tokio::sync::{Mutex, OwnedMutexGuard};

use super::common;
use super::write::Writes;
use super::{OutboxBell, Queued, Result, Store};

/// How long a caller waits for the in-memory connection before giving up, as a pool's acquire
/// timeout would.
/// SQLite has no `INSERT` or `UPDATE` inside `WITH`: what PostgreSQL does in one statement it
/// does in a few, in turn (its transaction holds the database's write lock from `BEGIN
/// IMMEDIATE` anyway, and its statements are calls into the process, not round trips).
pub(super) const DATA_MODIFYING_CTES: bool = false;

const HELD_WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct SqliteStore {
    db: Db,
    bell: OutboxBell,
}

#[derive(Debug, Clone)]
enum Db {
    /// A file: a pool, so readers run beside the one writer (WAL).
    Pool(SqlitePool),
    /// A private in-memory database lives in exactly one connection, so it is held here rather
    /// than in a pool of one: a pool pings the connection and spawns a task each time a
    /// transaction gives it back, which costs more than the transaction itself. `None` once
    /// closed.
    Held(Arc<Mutex<Option<HeldConn>>>),
}

#[derive(Debug)]
struct HeldConn {
    conn: SqliteConnection,
    /// A transaction was begun and neither committed nor rolled back (its [`SqliteTx`] was
    /// dropped): the next checkout rolls it back first.
    in_tx: bool,
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
        Ok(SqliteStore {
            db: Db::Pool(pool),
            bell: OutboxBell::default(),
        })
    }

    /// A fresh private in-memory database, for tests and fixture replay. It lives in one
    /// connection, held until [`Self::close`]; a second transaction opened while one is live
    /// waits for it.
    pub async fn in_memory() -> Result<SqliteStore> {
        let options = SqliteConnectOptions::new() // filename ":memory:": private to its connection
            .foreign_keys(true);
        let conn = SqliteConnection::connect_with(&options).await?;
        let held = HeldConn { conn, in_tx: false };
        Ok(SqliteStore {
            db: Db::Held(Arc::new(Mutex::new(Some(held)))),
            bell: OutboxBell::default(),
        })
    }

    /// A connection of the store's own, for SQL the store does not offer (tests, benchmarks).
    /// While it is out, an in-memory store's transactions wait.
    pub async fn conn(&self) -> Result<SqliteConn> {
        match &self.db {
            Db::Pool(pool) => Ok(SqliteConn(Conn::Pooled(pool.acquire().await?))),
            Db::Held(held) => Ok(SqliteConn(Conn::Held(check_out(held).await?))),
        }
    }

    /// Closes the database: later calls fail with a closed-pool error (an in-memory database is
    /// gone for good).
    pub async fn close(&self) {
        match &self.db {
            Db::Pool(pool) => pool.close().await,
            Db::Held(held) => {
                if let Some(held) = held.lock().await.take() {
                    let _ = held.conn.close().await;
                }
            }
        }
    }
}

/// The held connection, with any transaction a dropped [`SqliteTx`] left open rolled back.
async fn check_out(
    held: &Arc<Mutex<Option<HeldConn>>>,
) -> Result<OwnedMutexGuard<Option<HeldConn>>> {
    let mut guard = tokio::time::timeout(HELD_WAIT, held.clone().lock_owned())
        .await
        .map_err(|_| sqlx::Error::PoolTimedOut)?;
    let Some(held) = guard.as_mut() else {
        return Err(sqlx::Error::PoolClosed.into());
    };
    if held.in_tx {
        sqlx::raw_sql("ROLLBACK").execute(&mut held.conn).await?;
        held.in_tx = false;
    }
    Ok(guard)
}

/// A connection checked out of a [`SqliteStore`].
pub struct SqliteConn(Conn);

enum Conn {
    Pooled(PoolConnection<Sqlite>),
    Held(OwnedMutexGuard<Option<HeldConn>>),
}

fn held_conn(guard: &mut OwnedMutexGuard<Option<HeldConn>>) -> &mut HeldConn {
    guard.as_mut().expect("checked open at check-out")
}

impl Deref for SqliteConn {
    type Target = SqliteConnection;

    fn deref(&self) -> &SqliteConnection {
        match &self.0 {
            Conn::Pooled(conn) => conn,
            Conn::Held(guard) => &guard.as_ref().expect("checked open at check-out").conn,
        }
    }
}

impl DerefMut for SqliteConn {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        match &mut self.0 {
            Conn::Pooled(conn) => conn,
            Conn::Held(guard) => &mut held_conn(guard).conn,
        }
    }
}

/// One `BEGIN IMMEDIATE` transaction, with the writes it holds until commit; dropped without
/// commit, it rolls back.
pub struct SqliteTx(OpenTx, Writes, Queued);

impl SqliteTx {
    /// Runs the writes held so far, if any.
    pub(super) async fn flush(&mut self) -> Result<()> {
        if self.1.is_empty() {
            return Ok(());
        }
        let writes = std::mem::take(&mut self.1);
        if !writes.outbound.is_empty() {
            self.2.note();
        }
        super::write::run_on_sqlite(&mut self.0, writes).await
    }
}

enum OpenTx {
    Pooled(Transaction<'static, Sqlite>),
    /// Begun and ended by plain statements, as `sqlx::Transaction` cannot own a mutex guard; a
    /// drop without commit leaves `in_tx` set for the next check-out to roll back.
    Held(OwnedMutexGuard<Option<HeldConn>>),
}

impl OpenTx {
    async fn commit(self) -> sqlx::Result<()> {
        match self {
            OpenTx::Pooled(tx) => tx.commit().await,
            OpenTx::Held(mut guard) => {
                let held = held_conn(&mut guard);
                sqlx::raw_sql("COMMIT").execute(&mut held.conn).await?;
                held.in_tx = false;
                Ok(())
            }
        }
    }

    async fn rollback(self) -> sqlx::Result<()> {
        match self {
            OpenTx::Pooled(tx) => tx.rollback().await,
            OpenTx::Held(mut guard) => {
                let held = held_conn(&mut guard);
                sqlx::raw_sql("ROLLBACK").execute(&mut held.conn).await?;
                held.in_tx = false;
                Ok(())
            }
        }
    }
}

impl Deref for OpenTx {
    type Target = SqliteConnection;

    fn deref(&self) -> &SqliteConnection {
        match self {
            OpenTx::Pooled(tx) => tx,
            OpenTx::Held(guard) => &guard.as_ref().expect("checked open at check-out").conn,
        }
    }
}

impl DerefMut for OpenTx {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        match self {
            OpenTx::Pooled(tx) => tx,
            OpenTx::Held(guard) => &mut held_conn(guard).conn,
        }
    }
}

impl Store for SqliteStore {
    type Tx = SqliteTx;

    async fn migrate(&self) -> Result<()> {
        let migrator = super::migrations::migrator(super::migrations::SQLITE);
        match &self.db {
            Db::Pool(pool) => migrator.run(pool).await?,
            Db::Held(_) => {
                // `run` takes an `Acquire`, whose `&mut` impl trips the compiler's Send check
                // inside this trait's future; `run_direct` is sqlx's own way round it.
                let mut conn = self.conn().await?;
                migrator.run_direct(None, &mut *conn, false).await?
            }
        }
        Ok(())
    }

    async fn begin(&self) -> Result<SqliteTx> {
        let tx = match &self.db {
            Db::Pool(pool) => OpenTx::Pooled(pool.begin_with("BEGIN IMMEDIATE").await?),
            Db::Held(held) => {
                let mut guard = check_out(held).await?;
                let held = held_conn(&mut guard);
                sqlx::raw_sql("BEGIN IMMEDIATE")
                    .execute(&mut held.conn)
                    .await?;
                held.in_tx = true;
                OpenTx::Held(guard)
            }
        };
        Ok(SqliteTx(tx, Writes::default(), Queued::new(&self.bell)))
    }

    fn outbox_bell(&self) -> &OutboxBell {
        &self.bell
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1")
            .execute(&mut *self.conn().await?)
            .await?;
        Ok(())
    }

    common::store_reads!();
}

common::impl_tx!(SqliteTx, dialect = sqlite);

super::reminders::impl_reminder_tx!(SqliteTx, claim_locks = "");

super::ledger::impl_ledger_tx!(
    SqliteTx,
    skip_locked = "",
    by_day = super::ledger::sqlite::BY_DAY,
);

super::after::impl_after_tx!(SqliteTx, for_update = "", skip_locked = "");
