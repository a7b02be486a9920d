//! Helpers shared by the integration tests (`crate::support` in every module of `tests/it/`).
//!
//! PostgreSQL tests get their server from `DATABASE_URL`, which `scripts/test` sets up
//! (it starts a throwaway server when `DATABASE_URL` is not already set).
#![allow(dead_code)]

use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{AssertSqlSafe, Connection};

const HOW_TO_RUN: &str = "set DATABASE_URL to a PostgreSQL server on which the tests may \
    create databases, or run the tests with `scripts/test`, which starts a throwaway server";

/// How long to keep retrying to reach the server before giving up.
const CONNECT_PATIENCE: Duration = Duration::from_secs(5);

/// The URL of a brand-new, empty database on the test PostgreSQL server, unique to this call.
///
/// Panics with a clear message (naming `DATABASE_URL` and `scripts/test`) when `DATABASE_URL`
/// is unset or the server cannot be reached: PostgreSQL tests must fail loudly, never skip.
pub async fn fresh_postgres_database() -> String {
    let base_url = match std::env::var("DATABASE_URL") {
        Ok(url) if !url.trim().is_empty() => url,
        _ => panic!("DATABASE_URL is not set, and this test needs PostgreSQL: {HOW_TO_RUN}"),
    };
    let options = PgConnectOptions::from_str(&base_url).unwrap_or_else(|err| {
        panic!("DATABASE_URL is not a valid PostgreSQL URL ({err}): {HOW_TO_RUN}")
    });
    let server = describe(&options);

    let name = unique_database_name();
    let mut conn = connect(&options, &server).await;
    create_database(&mut conn, &name, &server).await;
    let _ = conn.close().await;

    url_with_database(&base_url, &name)
}

/// `onboard_t_<pid>_<counter>_<nanos>`: unique across the parallel test processes
/// (nextest runs one process per test) and across runs against a persistent server.
fn unique_database_name() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("onboard_t_{}_{}_{}", std::process::id(), n, nanos)
}

/// `user@host:port/database` (never the password), for messages.
fn describe(options: &PgConnectOptions) -> String {
    let place = match options.get_socket() {
        Some(dir) => format!("socket {}", dir.display()),
        None => format!("{}:{}", options.get_host(), options.get_port()),
    };
    format!(
        "{}@{}/{}",
        options.get_username(),
        place,
        options.get_database().unwrap_or("")
    )
}

async fn connect(options: &PgConnectOptions, server: &str) -> PgConnection {
    let deadline = Instant::now() + CONNECT_PATIENCE;
    loop {
        let attempt =
            tokio::time::timeout(Duration::from_secs(10), PgConnection::connect_with(options))
                .await;
        let err = match attempt {
            Ok(Ok(conn)) => return conn,
            Ok(Err(err)) => err.to_string(),
            Err(_) => "timed out".to_owned(),
        };
        if Instant::now() >= deadline {
            panic!(
                "cannot connect to the PostgreSQL server named by DATABASE_URL ({server}): \
                 {err}. This test needs PostgreSQL: {HOW_TO_RUN}"
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn create_database(conn: &mut PgConnection, name: &str, server: &str) {
    let sql = format!("CREATE DATABASE \"{name}\"");
    let mut attempts = 0;
    loop {
        attempts += 1;
        let err = match sqlx::raw_sql(AssertSqlSafe(sql.as_str()))
            .execute(&mut *conn)
            .await
        {
            Ok(_) => return,
            Err(err) => err,
        };
        // 55006 object_in_use: someone is connected to the template database; it passes.
        let busy = err
            .as_database_error()
            .and_then(|e| e.code())
            .is_some_and(|code| code == "55006");
        if !busy || attempts >= 40 {
            panic!(
                "cannot create the test database {name} on the PostgreSQL server named by \
                 DATABASE_URL ({server}): {err}. The tests need a role that may CREATE \
                 DATABASE: {HOW_TO_RUN}"
            );
        }
        tokio::time::sleep(Duration::from_millis(50 * attempts.min(10))).await;
    }
}

/// `url` with its database replaced by `database`: the path is replaced, and a `dbname=`
/// query parameter (which would override the path) is dropped; other parameters are kept.
fn url_with_database(url: &str, database: &str) -> String {
    let (before_query, query) = match url.split_once('?') {
        Some((before, query)) => (before, Some(query)),
        None => (url, None),
    };
    let authority_start = before_query.find("://").map(|i| i + 3).unwrap_or_else(|| {
        panic!("DATABASE_URL must look like postgres://user@host:port/database: {HOW_TO_RUN}")
    });
    let authority_end = before_query[authority_start..]
        .find('/')
        .map_or(before_query.len(), |i| authority_start + i);

    let mut out = format!("{}/{}", &before_query[..authority_end], database);
    if let Some(query) = query {
        let kept: Vec<&str> = query
            .split('&')
            .filter(|pair| !pair.is_empty())
            .filter(|pair| pair.split('=').next() != Some("dbname"))
            .collect();
        if !kept.is_empty() {
            out.push('?');
            out.push_str(&kept.join("&"));
        }
    }
    out
}

pub mod app;

/// Runs each named test, written once as `async fn name<B: BackEnd>()`, on both back ends: as
/// `name::on_sqlite` and `name::on_postgres` (a module and a function may share a name).
#[allow(unused_macros)] // not every test binary that includes this module uses it
macro_rules! on_both_back_ends {
    ($($name:ident),* $(,)?) => {
        $(mod $name {
            #[tokio::test]
            async fn on_sqlite() {
                super::$name::<$crate::support::app::Sqlite>().await;
            }

            #[tokio::test]
            async fn on_postgres() {
                super::$name::<$crate::support::app::Postgres>().await;
            }
        })*
    };
}
#[allow(unused_imports)]
pub(crate) use on_both_back_ends;
pub mod smtp;
