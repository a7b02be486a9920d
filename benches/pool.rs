//! Number-pool benchmark on PostgreSQL: `cargo bench --bench pool` (needs `DATABASE_URL`).
//!
//! A. Throughput: 1,000 owners paying at once, 64 at a time. Allocations per second through the
//!    store (`begin`, `allocate_number`, `commit`: what one allocation costs the service), beside the
//!    bare limit: the same SQL statements sent directly with sqlx, one transaction per allocation,
//!    over the same connections. Target: the store reaches at least 70% of the bare rate.
//! B. Scale: sequential single allocations with 1,000 numbers in the pool, and with 1,000,000 of
//!    which half are assigned. Target: the median within 1.5x. Also shows the plan of the allocation
//!    SELECT in the big pool, and whether it reads the partial index on available numbers.
//!
//! It creates its own database (`onboard_bench_pool_<pid>`) on the `DATABASE_URL` server, migrates
//! it with `PgStore::migrate` (part B's two pools in schemas of their own, `small` and `big`,
//! migrated the same way, so they can be measured in turns), and drops it at the end. Without `DATABASE_URL` it says how to run it
//! and exits 0; it exits non-zero only on errors, never on a missed target. Run by `cargo test` or
//! nextest (no `--bench` argument), it does nothing.

mod common;

use std::collections::VecDeque;
use std::future::Future;
use std::process::ExitCode;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use chrono::Utc;
use onboard::domain::{OwnerId, PhoneNumber};
use onboard::store::{self, Allocation, NewPoolNumber, PgStore, Store, Tx};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection};

/// Owners paying at once in part A.
const OWNERS: usize = 1_000;
/// Concurrent allocations in part A, and connections in the pool (as many, so none waits for one).
const CONCURRENCY: usize = 64;
/// Numbers in the pool in part A: more than the owners, so nobody meets an empty pool.
const POOL_A: usize = 2_000;
/// Part A's measured rounds of each kind, alternating store and bare; the median is compared.
const ROUNDS: usize = 3;
/// Owners allocated, unmeasured, before part A, to open connections and prepare statements.
const WARM_UP_A: usize = 256;
/// Sequential allocations measured in each pool of part B, after a few unmeasured ones.
const SAMPLES: usize = 500;
const WARM_UP_B: usize = 20;
/// Part B alternates between the two pools every this many allocations.
const CHUNK: usize = 25;
const SMALL_POOL: i64 = 1_000;
const BIG_POOL: i64 = 1_000_000;
/// Numbers of the big pool that are assigned (every other one), each to its own owner.
const BIG_ASSIGNED: i64 = BIG_POOL / 2;

const THROUGHPUT_TARGET: f64 = 0.70;
const LATENCY_TARGET: f64 = 1.5;

/// The partial index the allocation SELECT should read (migrations/postgres/0001_init.sql).
const PARTIAL_INDEX: &str = "pool_numbers_available";

// The least SQL that does an allocation's job on PostgreSQL for an owner without an area code (a
// GB owner): lock the owner (as every event does first), then, unless they hold a number, pick the
// first free one and assign it, in one statement, as the store does (`pool::ALLOCATE_ONCE`, which
// also looks for their own number in quarantine; a US owner's also searches their area code).
const SQL_LOCK_OWNER: &str = "SELECT id FROM owners WHERE id = $1 FOR UPDATE";
/// The pick alone, as both searches of the store's allocation run it: its plan is checked.
const SQL_PICK: &str = "SELECT e164 FROM pool_numbers WHERE status = 'AVAILABLE' AND country = $1 \
     ORDER BY created_at, e164 LIMIT 1 FOR UPDATE SKIP LOCKED";
const SQL_ALLOCATE: &str = "WITH held AS (SELECT e164 FROM pool_numbers WHERE owner_id = $2), \
     pick AS (SELECT e164 FROM pool_numbers \
         WHERE status = 'AVAILABLE' AND country = $1 AND NOT EXISTS (SELECT 1 FROM held) \
         ORDER BY created_at, e164 LIMIT 1 FOR UPDATE SKIP LOCKED) \
     UPDATE pool_numbers AS p SET status = 'ASSIGNED', owner_id = $2, assigned_at = $3, \
         updated_at = $3 \
     FROM pick WHERE p.e164 = pick.e164 RETURNING p.e164";

fn main() -> ExitCode {
    common::main_with_database("pool", |url| async move { run(&url).await })
}

/// Creates the bench database, runs the bench in it, and drops it whatever happened.
async fn run(url: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    let server = PgConnectOptions::from_str(url).context("DATABASE_URL is not a PostgreSQL URL")?;
    let mut admin = PgConnection::connect_with(&server)
        .await
        .context("cannot connect to the server named by DATABASE_URL")?;
    let name = format!("onboard_bench_pool_{}", std::process::id());
    execute(&mut admin, &format!("DROP DATABASE IF EXISTS \"{name}\"")).await?;
    execute(&mut admin, &format!("CREATE DATABASE \"{name}\""))
        .await
        .context("cannot create the bench database (the role needs CREATE DATABASE)")?;
    let version: String = sqlx::query_scalar("SHOW server_version")
        .fetch_one(&mut admin)
        .await?;
    println!("pool bench: PostgreSQL {version}, database {name} (dropped at the end)");

    let outcome = bench(server.clone().database(&name)).await;

    let dropped = execute(
        &mut admin,
        &format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"),
    )
    .await;
    let _ = admin.close().await;
    let report = outcome?;
    dropped.context("cannot drop the bench database")?;
    report.print();
    println!(
        "pool bench: done in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn execute(conn: &mut PgConnection, sql: &str) -> anyhow::Result<()> {
    sqlx::raw_sql(AssertSqlSafe(sql))
        .execute(conn)
        .await
        .with_context(|| format!("{sql} failed"))?;
    Ok(())
}

async fn bench(options: PgConnectOptions) -> anyhow::Result<Report> {
    let pool = PgPoolOptions::new()
        .max_connections(CONCURRENCY as u32)
        .connect_with(options.clone())
        .await
        .context("cannot connect to the bench database")?;
    let store = PgStore::from_pool(pool.clone());
    let mut schema_pools = Vec::new();
    let report = async {
        store.migrate().await.context("migration failed")?;
        let owners = create_owners(&store).await?;
        let throughput = part_a(&store, &owners).await?;

        // Part B's two pools live in schemas of their own, migrated and filled alike, so they
        // differ only in size and can be measured in turns: a busy machine weighs on both alike.
        let mut stores = Vec::new();
        for schema in ["small", "big"] {
            sqlx::raw_sql(AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
                .execute(&pool)
                .await?;
            let schema_pool = PgPoolOptions::new()
                .max_connections(4)
                .connect_with(options.clone().options([("search_path", schema)]))
                .await?;
            schema_pools.push(schema_pool.clone());
            let store = PgStore::from_pool(schema_pool);
            store
                .migrate()
                .await
                .with_context(|| format!("migration of schema {schema} failed"))?;
            create_owners(&store).await?;
            stores.push(store);
        }
        let scale = part_b(&stores[0], &stores[1], &owners).await?;
        anyhow::Ok(Report { throughput, scale })
    }
    .await;
    for schema_pool in schema_pools {
        schema_pool.close().await;
    }
    pool.close().await;
    report
}

/// An owner as the engine knows them at allocation.
#[derive(Clone)]
struct Owner {
    id: OwnerId,
    phone: PhoneNumber,
}

/// `OWNERS` owners, created through the store as a first text creates them.
async fn create_owners(store: &PgStore) -> anyhow::Result<Vec<Owner>> {
    let now = Utc::now();
    let mut owners = Vec::with_capacity(OWNERS);
    let mut tx = store.begin().await?;
    for i in 0..OWNERS {
        let id = OwnerId::new(format!("c_bench_{i:06}"));
        let phone = PhoneNumber::parse(&format!("+447700{i:06}"))?;
        let (owner, created) = tx
            .lock_or_create_owner(&phone, || store::Owner::new(id.clone(), phone.clone(), now))
            .await?;
        ensure!(created && owner.id == id, "owner {id} already existed");
        owners.push(Owner { id, phone });
    }
    tx.commit().await?;
    Ok(owners)
}

// --- part A: throughput --------------------------------------------------------------------------

struct Throughput {
    store: Vec<f64>,
    bare: Vec<f64>,
}

impl Throughput {
    fn store_median(&self) -> f64 {
        median_f64(&self.store)
    }

    fn bare_median(&self) -> f64 {
        median_f64(&self.bare)
    }

    fn ratio(&self) -> f64 {
        self.store_median() / self.bare_median()
    }
}

async fn part_a(store: &PgStore, owners: &[Owner]) -> anyhow::Result<Throughput> {
    println!(
        "\nA. {} owners paying at once, {CONCURRENCY} concurrent, {} GB numbers, \
         {CONCURRENCY} connections",
        thousands(OWNERS as i64),
        thousands(POOL_A as i64)
    );
    // Open every connection first, so no round pays for connecting.
    let mut held = Vec::with_capacity(CONCURRENCY);
    for _ in 0..CONCURRENCY {
        held.push(store.pool().acquire().await?);
    }
    drop(held);

    reset_pool_a(store).await?;
    let store_ = store.clone();
    concurrently(&owners[..WARM_UP_A], move |owner| {
        let store = store_.clone();
        async move { allocate_via_store(&store, &owner).await }
    })
    .await?;
    let pool = store.pool().clone();
    concurrently(&owners[WARM_UP_A..2 * WARM_UP_A], move |owner| {
        let pool = pool.clone();
        async move { allocate_bare(&pool, &owner).await }
    })
    .await?;

    let mut result = Throughput {
        store: Vec::new(),
        bare: Vec::new(),
    };
    println!(
        "   round   store path (begin + allocate_number + commit)   bare SQL (same statements)"
    );
    for round in 1..=ROUNDS {
        reset_pool_a(store).await?;
        let store_ = store.clone();
        let took = concurrently(owners, move |owner| {
            let store = store_.clone();
            async move { allocate_via_store(&store, &owner).await }
        })
        .await?;
        check_all_assigned(store, owners.len()).await?;
        result.store.push(owners.len() as f64 / took.as_secs_f64());

        reset_pool_a(store).await?;
        let pool = store.pool().clone();
        let took = concurrently(owners, move |owner| {
            let pool = pool.clone();
            async move { allocate_bare(&pool, &owner).await }
        })
        .await?;
        check_all_assigned(store, owners.len()).await?;
        result.bare.push(owners.len() as f64 / took.as_secs_f64());
        println!(
            "   {round:<5}   {:>10} allocations/s                      {:>10} allocations/s",
            thousands(result.store[round - 1].round() as i64),
            thousands(result.bare[round - 1].round() as i64)
        );
    }
    println!(
        "   median  {:>10} allocations/s                      {:>10} allocations/s   ({:.0}%)",
        thousands(result.store_median().round() as i64),
        thousands(result.bare_median().round() as i64),
        100.0 * result.ratio()
    );
    Ok(result)
}

/// An empty pool of `POOL_A` fresh numbers added through the store, and fresh statistics: each
/// round starts from the same table, without the dead rows of the one before.
async fn reset_pool_a(store: &PgStore) -> anyhow::Result<()> {
    sqlx::raw_sql("TRUNCATE pool_numbers")
        .execute(store.pool())
        .await?;
    let numbers = (0..POOL_A)
        .map(|i| {
            Ok(NewPoolNumber {
                e164: PhoneNumber::parse(&format!("+447800{i:06}"))?,
                twilio_sid: None,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut tx = store.begin().await?;
    let added = tx.add_numbers(&numbers, Utc::now()).await?;
    tx.commit().await?;
    ensure!(added == POOL_A as u64, "added {added} of {POOL_A} numbers");
    sqlx::raw_sql("VACUUM ANALYZE pool_numbers")
        .execute(store.pool())
        .await?;
    Ok(())
}

/// Runs `allocate` for every owner from `CONCURRENCY` tasks taking owners from one queue; returns
/// the wall time of the whole lot.
async fn concurrently<F, Fut>(owners: &[Owner], allocate: F) -> anyhow::Result<Duration>
where
    F: Fn(Owner) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send,
{
    let queue = Arc::new(Mutex::new(owners.iter().cloned().collect::<VecDeque<_>>()));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..CONCURRENCY {
        let queue = queue.clone();
        let allocate = allocate.clone();
        tasks.spawn(async move {
            loop {
                let next = queue.lock().unwrap_or_else(|e| e.into_inner()).pop_front();
                let Some(owner) = next else {
                    return anyhow::Ok(());
                };
                allocate(owner).await?;
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.context("an allocation task panicked")??;
    }
    Ok(started.elapsed())
}

/// One allocation as the service pays for it: its own transaction, the owner locked (as every
/// event does first), then `allocate_number`.
async fn allocate_via_store(store: &PgStore, owner: &Owner) -> anyhow::Result<()> {
    let mut tx = store.begin().await?;
    tx.lock_owner(&owner.id).await?;
    let allocation = tx
        .allocate_number(
            &owner.id,
            owner.phone.country(),
            owner.phone.area_code(),
            Utc::now(),
        )
        .await?;
    tx.commit().await?;
    match allocation {
        Allocation::Allocated(_) => Ok(()),
        other => bail!("allocation for {} gave {other:?}", owner.id),
    }
}

/// An allocation's job in the least SQL, sent directly: the floor under the store's cost.
async fn allocate_bare(pool: &PgPool, owner: &Owner) -> anyhow::Result<()> {
    let id = owner.id.as_str();
    let mut tx = pool.begin().await?;
    let locked: Option<String> = sqlx::query_scalar(SQL_LOCK_OWNER)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
    ensure!(locked.is_some(), "owner {id} not found");
    let picked: Option<String> = sqlx::query_scalar(SQL_ALLOCATE)
        .bind(owner.phone.country().code())
        .bind(id)
        .bind(Utc::now())
        .fetch_optional(&mut *tx)
        .await?;
    ensure!(picked.is_some(), "the pool was empty for owner {id}");
    tx.commit().await?;
    Ok(())
}

async fn check_all_assigned(store: &PgStore, expected: usize) -> anyhow::Result<()> {
    let stats = store.pool_stats().await?;
    ensure!(
        stats.assigned == expected as i64,
        "expected {expected} numbers assigned, found {stats:?}"
    );
    Ok(())
}

// --- part B: scale -------------------------------------------------------------------------------

struct Latencies {
    median: Duration,
    p95: Duration,
    /// `Store::pool_stats`, which the engine runs after every allocation (`check_pool`).
    pool_stats: Duration,
}

struct Scale {
    small: Latencies,
    big: Latencies,
    uses_partial_index: bool,
    generic_plan_index: Option<String>,
}

impl Scale {
    fn ratio(&self) -> f64 {
        self.big.median.as_secs_f64() / self.small.median.as_secs_f64()
    }
}

async fn part_b(small: &PgStore, big: &PgStore, owners: &[Owner]) -> anyhow::Result<Scale> {
    println!(
        "\nB. sequential single allocations (begin + allocate_number + commit), {SAMPLES} measured \
         in each pool, in turns of {CHUNK}, after {WARM_UP_B} unmeasured"
    );
    let owners = &owners[..WARM_UP_B + SAMPLES];

    bulk_load(small, SMALL_POOL, 0).await?;
    let loading = Instant::now();
    bulk_load(big, BIG_POOL, BIG_ASSIGNED).await?;
    let stats = big.pool_stats().await?;
    ensure!(
        stats.total == BIG_POOL && stats.assigned == BIG_ASSIGNED,
        "the big pool did not load as meant: {stats:?}"
    );
    println!(
        "   (loaded {} numbers, {} assigned to as many owners, in {:.1} s)",
        thousands(BIG_POOL),
        thousands(BIG_ASSIGNED),
        loading.elapsed().as_secs_f64()
    );
    // Write the load out now rather than during the measurement (needs pg_checkpoint or superuser;
    // without it the server's own checkpoint may add noise).
    if let Err(e) = sqlx::raw_sql("CHECKPOINT").execute(big.pool()).await {
        println!("   (CHECKPOINT refused, measuring anyway: {e})");
    }

    let mut small_times = Vec::with_capacity(SAMPLES);
    let mut big_times = Vec::with_capacity(SAMPLES);
    time_allocations(small, &owners[..WARM_UP_B]).await?;
    time_allocations(big, &owners[..WARM_UP_B]).await?;
    for turn in owners[WARM_UP_B..].chunks(CHUNK) {
        small_times.extend(time_allocations(small, turn).await?);
        big_times.extend(time_allocations(big, turn).await?);
    }
    let small = latencies(small_times, small).await?;
    let (plan, uses_partial_index) = explain(big, false).await?;
    let (generic_plan, _) = explain(big, true).await?;
    let generic_plan_index = index_of(&generic_plan);
    let big = latencies(big_times, big).await?;

    println!("   pool                                      median       p95   pool_stats()");
    for (label, l) in [
        (format!("{} numbers", thousands(SMALL_POOL)), &small),
        (
            format!(
                "{} numbers, {} assigned",
                thousands(BIG_POOL),
                thousands(BIG_ASSIGNED)
            ),
            &big,
        ),
    ] {
        println!(
            "   {label:<40} {:>7.3} ms {:>7.3} ms {:>9.3} ms",
            ms(l.median),
            ms(l.p95),
            ms(l.pool_stats)
        );
    }
    println!(
        "   ratio                                    {:>7.2}x   {:>7.2}x {:>9.0}x",
        big.median.as_secs_f64() / small.median.as_secs_f64(),
        big.p95.as_secs_f64() / small.p95.as_secs_f64(),
        big.pool_stats.as_secs_f64() / small.pool_stats.as_secs_f64()
    );
    println!(
        "   (pool_stats() is the full count behind /admin/api/pool and /metrics; the engine's low-water check counts only up to the mark)"
    );
    println!(
        "\n   EXPLAIN (ANALYZE, BUFFERS) of the allocation SELECT, {} numbers:",
        thousands(BIG_POOL)
    );
    for line in &plan {
        println!("     {line}");
    }
    println!(
        "   partial index {PARTIAL_INDEX}: {} (as a prepared statement's generic plan: {})",
        if uses_partial_index {
            "used"
        } else {
            "NOT used"
        },
        generic_plan_index.as_deref().unwrap_or("no index")
    );
    Ok(Scale {
        small,
        big,
        uses_partial_index,
        generic_plan_index,
    })
}

/// A pool of `total` GB numbers, of which every other one up to `assigned` is ASSIGNED to an owner
/// of its own (created alongside, as paid owners at S6 holding it), in a few set-based statements.
async fn bulk_load(store: &PgStore, total: i64, assigned: i64) -> anyhow::Result<()> {
    let pool = store.pool();
    if assigned > 0 {
        let existing: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM owners WHERE id LIKE 'c_bulk_%'")
                .fetch_one(pool)
                .await?;
        if existing < assigned {
            sqlx::query(
                "INSERT INTO owners (id, owner_phone, country, locale, state, payment_active, \
                     paid_at, twilio_number, created_at, updated_at) \
                 SELECT 'c_bulk_' || lpad(g::text, 7, '0'), '+447900' || lpad(g::text, 6, '0'), \
                     'GB', 'en-GB', 'S6_PHONE_TYPE', true, now(), \
                     '+4475' || lpad((2 * g)::text, 8, '0'), now(), now() \
                 FROM generate_series($1::bigint, $2::bigint - 1) AS g",
            )
            .bind(existing)
            .bind(assigned)
            .execute(pool)
            .await?;
        }
    }
    // Number 2g is owned by c_bulk_g while g < assigned; created_at rises with the number, so the
    // available ones sit between assigned ones in allocation order.
    sqlx::query(
        "INSERT INTO pool_numbers (e164, status, owner_id, country, area_code, assigned_at, \
             created_at, updated_at) \
         SELECT '+4475' || lpad(n::text, 8, '0'), \
             CASE WHEN n % 2 = 0 AND n / 2 < $2 THEN 'ASSIGNED' ELSE 'AVAILABLE' END, \
             CASE WHEN n % 2 = 0 AND n / 2 < $2 THEN 'c_bulk_' || lpad((n / 2)::text, 7, '0') END, \
             'GB', NULL, \
             CASE WHEN n % 2 = 0 AND n / 2 < $2 THEN now() END, \
             timestamptz '2024-01-01' + n * interval '1 second', now() \
         FROM generate_series(0::bigint, $1::bigint - 1) AS n",
    )
    .bind(total)
    .bind(assigned)
    .execute(pool)
    .await?;
    sqlx::raw_sql("VACUUM ANALYZE pool_numbers, owners")
        .execute(pool)
        .await?;
    Ok(())
}

/// Times single allocations, one after another.
async fn time_allocations(store: &PgStore, owners: &[Owner]) -> anyhow::Result<Vec<Duration>> {
    let mut times = Vec::with_capacity(owners.len());
    for owner in owners {
        let started = Instant::now();
        allocate_via_store(store, owner).await?;
        times.push(started.elapsed());
    }
    Ok(times)
}

/// The median and p95 of `times`, and of the pool statistics query the engine runs after each
/// allocation.
async fn latencies(mut times: Vec<Duration>, store: &PgStore) -> anyhow::Result<Latencies> {
    let mut stats_times = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        store.pool_stats().await?;
        stats_times.push(started.elapsed());
    }
    times.sort();
    stats_times.sort();
    Ok(Latencies {
        median: times[times.len() / 2],
        p95: times[(times.len() * 95).div_ceil(100) - 1],
        pool_stats: stats_times[stats_times.len() / 2],
    })
}

/// The allocation SELECT's plan as run (rolled back: it locks the row it finds), and whether it
/// reads the partial index. `generic`: the plan a prepared statement settles on.
async fn explain(store: &PgStore, generic: bool) -> anyhow::Result<(Vec<String>, bool)> {
    let mut tx = store.pool().begin().await?;
    let mode = if generic {
        "force_generic_plan"
    } else {
        "force_custom_plan"
    };
    sqlx::raw_sql(AssertSqlSafe(format!("SET LOCAL plan_cache_mode = {mode}")))
        .execute(&mut *tx)
        .await?;
    let plan: Vec<String> = sqlx::query_scalar(AssertSqlSafe(format!(
        "EXPLAIN (ANALYZE, BUFFERS) {SQL_PICK}"
    )))
    .bind("GB")
    .fetch_all(&mut *tx)
    .await?;
    tx.rollback().await?;
    let uses = index_of(&plan).as_deref() == Some(PARTIAL_INDEX);
    Ok((plan, uses))
}

/// The index an `Index Scan` / `Index Only Scan` line of a plan reads, if any.
fn index_of(plan: &[String]) -> Option<String> {
    plan.iter().find_map(|line| {
        let (_, rest) = line.split_once(" using ")?;
        rest.split_whitespace().next().map(str::to_owned)
    })
}

// --- report --------------------------------------------------------------------------------------

struct Report {
    throughput: Throughput,
    scale: Scale,
}

impl Report {
    fn print(&self) {
        let t = &self.throughput;
        let s = &self.scale;
        let verdict = |ok: bool| if ok { "PASS" } else { "MISS" };
        let rows = [
            (
                "A  store allocations/s vs bare SQL, 64 concurrent".to_owned(),
                format!(
                    "{}/s vs {}/s = {:.0}%",
                    thousands(t.store_median().round() as i64),
                    thousands(t.bare_median().round() as i64),
                    100.0 * t.ratio()
                ),
                format!(">= {:.0}%", 100.0 * THROUGHPUT_TARGET),
                verdict(t.ratio() >= THROUGHPUT_TARGET),
            ),
            (
                format!(
                    "B  median allocation, {} numbers vs {}",
                    thousands(BIG_POOL),
                    thousands(SMALL_POOL)
                ),
                format!(
                    "{:.2} ms vs {:.2} ms = {:.2}x",
                    ms(s.big.median),
                    ms(s.small.median),
                    s.ratio()
                ),
                format!("<= {LATENCY_TARGET:.1}x"),
                verdict(s.ratio() <= LATENCY_TARGET),
            ),
        ];
        println!(
            "\n   {:<52} {:<30} {:<8} result",
            "target", "measured", "target"
        );
        for (what, measured, target, result) in rows {
            println!("   {what:<52} {measured:<30} {target:<8} {result}");
        }
        let on_index =
            s.uses_partial_index && s.generic_plan_index.as_deref() == Some(PARTIAL_INDEX);
        println!(
            "      (allocation SELECT on the partial index {PARTIAL_INDEX}: {})",
            if on_index { "yes" } else { "NO" }
        );
    }
}

/// `1000000` as `1,000,000`.
fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median_f64(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}
