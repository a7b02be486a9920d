//! Conversation steps per second, in-process (a benchmark, not a timed test).
//!
//! Every step is one inbound SMS through [`Engine::handle_sms`]: one database transaction. Beside
//! it, in the same run and on the same database, the *bare* limit runs the very SQL statements a
//! step issues, with the same parameters, straight through sqlx in one transaction per step. The
//! ratio engine/bare is what the engine costs over its own SQL.
//!
//! - SQLite in memory (`SqliteStore::in_memory`, one connection): steps run one after another.
//!   Target: at least 5,000 steps/s.
//! - PostgreSQL, when `DATABASE_URL` is set: a fresh database `onboard_bench_<pid>` (dropped at the
//!   end), owners driven by concurrent tasks. Target: at least 70% of the bare limit.
//!
//! Run: `cargo bench --bench conversation` (add `DATABASE_URL=postgres://...` for PostgreSQL).
//! Options (after `--`, or in the environment):
//!   `--owners N`       / `ONBOARD_BENCH_OWNERS`       owners per side (engine, bare) and back end
//!   `--concurrency N`  / `ONBOARD_BENCH_CONCURRENCY`  concurrent owners on PostgreSQL (default 16)
//!
//! A missed target prints MISS; the exit status is non-zero only when something fails.
//!
//! "Bare" runs on a connection the bench holds for a whole round; the engine goes through
//! `Store::begin` as the server does. On SQLite in memory that takes the store's one held
//! connection per transaction; on PostgreSQL it checks a connection out of the pool, and the
//! pool's check-in (a ping) is part of what the engine costs.
//!
//! Keep `bare_statements!` in step with `src/store/common.rs` and `Engine::handle_sms`: it is a
//! copy of the statements one step issues (the store's SQL is private to the crate). Each run
//! first walks one owner through the script on the engine and checks every state it lands in,
//! and at the end checks both sides wrote the same rows.

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration as StdDuration, Instant};

use anyhow::{Context as _, Result, ensure};
use chrono::{DateTime, Duration, Utc};
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection, Postgres, Row};

use onboard::clock::{ManualClock, SequentialIds};
use onboard::conversation::{Gate, StateName};
use onboard::engine::{Engine, InboundSms, Settings};
use onboard::flows::Flows;
use onboard::store::{PgStore, SqliteConn, SqliteStore, Store};

const SQLITE_TARGET_STEPS_PER_SEC: f64 = 5_000.0;
const POSTGRES_TARGET_RATIO: f64 = 0.70;

const DEFAULT_SQLITE_OWNERS: usize = 3_000;
const DEFAULT_POSTGRES_OWNERS: usize = 1_200;
const DEFAULT_CONCURRENCY: usize = 16;
/// Owners get `+447700` and six digits: a million numbers per database.
const MAX_OWNERS: usize = 400_000;

const TWILIO_TO: &str = "+447700100200";
const PAYMENT_LINK: &str = "https://buy.stripe.com/test_bench";

/// One inbound SMS of the script, with what it does to the owner (checked on the first owner).
struct ScriptStep {
    body: &'static str,
    /// The state after the step.
    state: StateName,
    gate: Option<Gate>,
    /// The transition it records in `state_history`, if any.
    transition: Option<(StateName, StateName)>,
    /// Whether it changes the owner's row (the engine writes only what changed).
    saves: bool,
}

/// A new owner's first eight texts: greeting, the four answers, a question, YES, HELP.
const SCRIPT: [ScriptStep; 8] = [
    ScriptStep {
        body: "Hi",
        state: StateName::S1BusinessTypeLocation,
        gate: None,
        transition: None,
        saves: false,
    },
    ScriptStep {
        body: "Plumber in Leeds",
        state: StateName::S2BusinessName,
        gate: None,
        transition: Some((StateName::S1BusinessTypeLocation, StateName::S2BusinessName)),
        saves: true,
    },
    ScriptStep {
        body: "Smith & Sons Plumbing",
        state: StateName::S3OwnerName,
        gate: None,
        transition: Some((StateName::S2BusinessName, StateName::S3OwnerName)),
        saves: true,
    },
    ScriptStep {
        body: "Jo Smith",
        state: StateName::S4NotificationPref,
        gate: None,
        transition: Some((StateName::S3OwnerName, StateName::S4NotificationPref)),
        saves: true,
    },
    ScriptStep {
        body: "text",
        state: StateName::S5ConfirmLive,
        gate: None,
        transition: Some((StateName::S4NotificationPref, StateName::S5ConfirmLive)),
        saves: true,
    },
    ScriptStep {
        body: "how much does it cost?",
        state: StateName::S5ConfirmLive,
        gate: None,
        transition: None,
        saves: true,
    },
    ScriptStep {
        body: "yes",
        state: StateName::S5ConfirmLive,
        gate: Some(Gate::PaymentRequired),
        transition: None,
        saves: true,
    },
    ScriptStep {
        body: "help",
        state: StateName::S5ConfirmLive,
        gate: Some(Gate::PaymentRequired),
        transition: None,
        saves: false,
    },
];
const STEPS_PER_OWNER: usize = SCRIPT.len();

fn owner_phone(k: usize) -> String {
    format!("+447700{k:06}")
}

/// Twilio's shape: `SM` and 32 hex digits.
fn message_sid(k: usize, step: usize) -> String {
    format!("SM{:032x}", k * STEPS_PER_OWNER + step)
}

fn inbound(k: usize, step: usize) -> InboundSms {
    InboundSms {
        message_sid: message_sid(k, step),
        from: owner_phone(k),
        to: TWILIO_TO.to_owned(),
        body: SCRIPT[step].body.to_owned(),
    }
}

fn epoch() -> DateTime<Utc> {
    onboard::replay::fixture_epoch()
}

fn engine_on<S: Store>(store: S) -> Result<Engine<S>> {
    let flows = Flows::embedded().context("loading the embedded flows")?;
    Ok(Engine::new(
        store,
        Arc::new(flows),
        Arc::new(ManualClock::new(epoch())),
        Arc::new(SequentialIds::default()),
        Settings {
            payment_link: PAYMENT_LINK.to_owned(),
            quarantine: Duration::days(onboard::engine::DEFAULT_QUARANTINE_DAYS),
            // The script stops before payment: no number is allocated, no call placed.
            pool_low_water: 0,
            verify_caller: None,
            verify_window: Duration::minutes(2),
            onboarding_number: None,
        },
    ))
}

// ---------------------------------------------------------------------------------------------
// Options

struct Options {
    /// Owners per side; `None`: each back end's default.
    owners: Option<usize>,
    concurrency: usize,
}

fn options() -> Result<Options> {
    let parse = |what: &str, raw: &str| -> Result<usize> {
        let n: usize = raw
            .trim()
            .replace(['_', ','], "")
            .parse()
            .with_context(|| format!("{what}: {raw:?} is not a number"))?;
        ensure!(n > 0, "{what} must be at least 1");
        Ok(n)
    };
    let mut owners = match std::env::var("ONBOARD_BENCH_OWNERS") {
        Ok(raw) if !raw.trim().is_empty() => Some(parse("ONBOARD_BENCH_OWNERS", &raw)?),
        _ => None,
    };
    let mut concurrency = match std::env::var("ONBOARD_BENCH_CONCURRENCY") {
        Ok(raw) if !raw.trim().is_empty() => parse("ONBOARD_BENCH_CONCURRENCY", &raw)?,
        _ => DEFAULT_CONCURRENCY,
    };
    // `cargo bench` adds `--bench`; other harness flags and filters are ignored too.
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) => (name.to_owned(), Some(value.to_owned())),
            None => (arg.clone(), None),
        };
        match name.as_str() {
            "--owners" | "--concurrency" => {
                let value = match inline {
                    Some(value) => value,
                    None => args
                        .next()
                        .with_context(|| format!("{name} needs a number"))?,
                };
                let n = parse(&name, &value)?;
                if name == "--owners" {
                    owners = Some(n);
                } else {
                    concurrency = n;
                }
            }
            _ => {}
        }
    }
    if let Some(n) = owners {
        ensure!(n <= MAX_OWNERS, "at most {MAX_OWNERS} owners");
    }
    Ok(Options {
        owners,
        concurrency,
    })
}

// ---------------------------------------------------------------------------------------------
// Measuring

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Side {
    Engine,
    Bare,
}

/// What a back end offers the measuring loop: one owner's step through the engine, or the same
/// statements bare on a connection the caller holds.
trait Bench: Send + Sync + 'static {
    type Conn: Send;
    fn engine_step(&self, k: usize, step: usize) -> impl Future<Output = Result<()>> + Send;
    /// A connection of the engine's own pool, held for a whole round of bare steps.
    fn connection(&self) -> impl Future<Output = Result<Self::Conn>> + Send;
    fn bare_step(
        &self,
        conn: &mut Self::Conn,
        k: usize,
        step: usize,
    ) -> impl Future<Output = Result<()>> + Send;
}

/// The rounds of one side. Its rate is the median round's: on a shared machine a round now and
/// then runs while something else has the CPU, and the median ignores it.
#[derive(Default)]
struct Tally {
    rates: Vec<f64>,
}

impl Tally {
    fn add(&mut self, steps: usize, elapsed: StdDuration) {
        self.rates.push(steps as f64 / elapsed.as_secs_f64());
    }

    fn sorted(&self) -> Vec<f64> {
        let mut rates = self.rates.clone();
        rates.sort_by(f64::total_cmp);
        rates
    }

    fn rate(&self) -> f64 {
        let rates = self.sorted();
        match rates.len() {
            0 => 0.0,
            n if n % 2 == 1 => rates[n / 2],
            n => f64::midpoint(rates[n / 2 - 1], rates[n / 2]),
        }
    }

    fn spread(&self) -> String {
        let rates = self.sorted();
        match (rates.first(), rates.last()) {
            (Some(min), Some(max)) => format!("{}..{}", thousands(*min), thousands(*max)),
            _ => "-".to_owned(),
        }
    }
}

/// Hands out owner numbers: engine and bare owners share one database, never one owner.
struct Owners(usize);

impl Owners {
    fn take(&mut self, n: usize) -> std::ops::Range<usize> {
        let start = self.0;
        self.0 += n;
        start..self.0
    }
}

/// Runs `owners` through the whole script on `concurrency` tasks, each taking its share of owners
/// step by step (every owner's first text, then every owner's second, ...), so consecutive
/// transactions touch different rows. Returns the wall time.
async fn run_round<B: Bench>(
    bench: &Arc<B>,
    side: Side,
    owners: std::ops::Range<usize>,
    concurrency: usize,
) -> Result<StdDuration> {
    let owners: Vec<usize> = owners.collect();
    let started = Instant::now();
    if concurrency <= 1 {
        drive(&**bench, side, &owners).await?;
    } else {
        let per_task = owners.len().div_ceil(concurrency);
        let mut tasks = tokio::task::JoinSet::new();
        for chunk in owners.chunks(per_task.max(1)) {
            let bench = bench.clone();
            let chunk = chunk.to_vec();
            tasks.spawn(async move { drive(&*bench, side, &chunk).await });
        }
        while let Some(done) = tasks.join_next().await {
            done.context("a bench task panicked")??;
        }
    }
    Ok(started.elapsed())
}

async fn drive<B: Bench>(bench: &B, side: Side, owners: &[usize]) -> Result<()> {
    match side {
        Side::Engine => {
            for step in 0..STEPS_PER_OWNER {
                for &k in owners {
                    bench.engine_step(k, step).await?;
                }
            }
        }
        Side::Bare => {
            let mut conn = bench.connection().await?;
            for step in 0..STEPS_PER_OWNER {
                for &k in owners {
                    bench.bare_step(&mut conn, k, step).await?;
                }
            }
        }
    }
    Ok(())
}

/// Rounds per side: short rounds, alternating E B B E E B ..., so drift in the machine's load
/// and the tables' growth fall on both sides alike.
const ROUNDS_PER_SIDE: usize = 10;

/// Warms both sides up (connections, statement caches, allocator), then measures.
async fn measure<B: Bench>(
    bench: &Arc<B>,
    ids: &mut Owners,
    owners: usize,
    concurrency: usize,
) -> Result<(Tally, Tally)> {
    let warm = (owners / 10).clamp(concurrency.max(50), 500);
    run_round(bench, Side::Engine, ids.take(warm), concurrency).await?;
    run_round(bench, Side::Bare, ids.take(warm), concurrency).await?;

    let per_round = owners.div_ceil(ROUNDS_PER_SIDE).max(concurrency);
    let (mut engine, mut bare) = (Tally::default(), Tally::default());
    for round in 0..ROUNDS_PER_SIDE {
        let order = if round % 2 == 0 {
            [Side::Engine, Side::Bare]
        } else {
            [Side::Bare, Side::Engine]
        };
        for side in order {
            let elapsed = run_round(bench, side, ids.take(per_round), concurrency).await?;
            let tally = match side {
                Side::Engine => &mut engine,
                Side::Bare => &mut bare,
            };
            tally.add(per_round * STEPS_PER_OWNER, elapsed);
        }
    }
    Ok((engine, bare))
}

/// Walks owner `k` through the script on the engine alone, checking each step lands where the bare
/// statements assume, and returns the TwiML answered at each step (the bare side writes the same).
async fn rehearse<S: Store>(engine: &Engine<S>, k: usize) -> Result<Vec<String>> {
    let phone = onboard::domain::PhoneNumber::parse(&owner_phone(k))
        .map_err(|_| anyhow::anyhow!("{} is not E.164", owner_phone(k)))?;
    let mut responses = Vec::new();
    let mut before = None;
    for (step, expect) in SCRIPT.iter().enumerate() {
        let response = engine.handle_sms(&inbound(k, step)).await?;
        let owner = engine
            .owner_by_phone(&phone)
            .await?
            .context("the rehearsal owner was not created")?;
        // The engine writes the owner's row exactly when the step changed it.
        let saved = before.as_ref().is_some_and(|b| *b != owner);
        ensure!(
            saved == expect.saves,
            "step {} ({:?}) {} the owner, the bench expects it {}: update SCRIPT",
            step + 1,
            expect.body,
            if saved { "changed" } else { "left alone" },
            if expect.saves {
                "changed"
            } else {
                "left alone"
            },
        );
        before = Some(owner.clone());
        ensure!(
            owner.state == expect.state && owner.gate == expect.gate,
            "step {} ({:?}) left the owner at {} gate {:?}, the bench expects {} gate {:?}: \
             update SCRIPT and the bare statements",
            step + 1,
            expect.body,
            owner.state,
            owner.gate,
            expect.state,
            expect.gate,
        );
        ensure!(
            response.contains("<Message>"),
            "step {} ({:?}) got no reply: {response}",
            step + 1,
            expect.body
        );
        responses.push(response);
    }
    Ok(responses)
}

// ---------------------------------------------------------------------------------------------
// The bare statements

/// What the bare side binds: an owner shaped like the engine's at each step.
struct BareShape {
    responses: Vec<String>,
    now: DateTime<Utc>,
}

fn bare_owner_id(k: usize) -> String {
    format!("c_x{k:09}")
}

/// The mutable columns after `step`, as the engine's `save_owner` writes them.
struct Columns {
    gate: Option<&'static str>,
    business_type: Option<&'static str>,
    location: Option<&'static str>,
    business_name: Option<&'static str>,
    owner_name: Option<&'static str>,
    notify: Option<&'static str>,
    misses: i32,
}

fn columns_after(step: usize) -> Columns {
    Columns {
        gate: SCRIPT[step].gate.map(Gate::as_str),
        business_type: (step >= 1).then_some("Plumber"),
        location: (step >= 1).then_some("Leeds"),
        business_name: (step >= 2).then_some("Smith & Sons Plumbing"),
        owner_name: (step >= 3).then_some("Jo Smith"),
        notify: (step >= 4).then_some("sms"),
        misses: i32::from(step == 5),
    }
}

/// The statements of one `handle_sms` of an existing or new owner, in order. `$tx` is an open
/// transaction; `$lock_sql` the back end's owner SELECT (with `FOR UPDATE` on PostgreSQL).
macro_rules! bare_statements {
    ($tx:ident, $lock_sql:expr, $shape:expr, $k:expr, $step:expr) => {{
        let (shape, k, step): (&BareShape, usize, usize) = ($shape, $k, $step);
        let now = shape.now;
        let sid = message_sid(k, step);
        let phone = owner_phone(k);
        let id = bare_owner_id(k);
        let script = &SCRIPT[step];

        // Tx::claim_inbound
        let claimed = sqlx::query(
            "INSERT INTO inbound_messages \
                 (message_sid, from_addr, to_addr, body, received_at) \
             VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (message_sid) DO NOTHING",
        )
        .bind(sid.as_str())
        .bind(phone.as_str())
        .bind(TWILIO_TO)
        .bind(script.body)
        .bind(now)
        .execute(&mut *$tx)
        .await?
        .rows_affected();
        ensure!(claimed == 1, "bare: {sid} was already claimed");

        // Tx::lock_or_create_owner: look, and only for a new owner insert and look again.
        let found = sqlx::query($lock_sql)
            .bind(phone.as_str())
            .fetch_optional(&mut *$tx)
            .await?;
        let row = match found {
            Some(row) => row,
            None => {
                sqlx::query(
                    "INSERT INTO owners (id, owner_phone, country, locale, state, gate, \
                 business_type, location, business_name, owner_name, notify, \
                 phone_type, misses, opted_out, payment_active, paid_at, \
                 twilio_number, waitlisted_at, verify_started_at, created_at, \
                 updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, \
                 $15, $16, $17, $18, $19, $20, $21) \
             ON CONFLICT (owner_phone) DO NOTHING",
                )
                .bind(id.as_str())
                .bind(phone.as_str())
                .bind("GB")
                .bind("en-GB")
                .bind(StateName::S1BusinessTypeLocation.as_str())
                .bind(None::<&str>)
                .bind(None::<&str>)
                .bind(None::<&str>)
                .bind(None::<&str>)
                .bind(None::<&str>)
                .bind(None::<&str>)
                .bind(None::<&str>)
                .bind(0_i32)
                .bind(false)
                .bind(false)
                .bind(None::<DateTime<Utc>>)
                .bind(None::<&str>)
                .bind(None::<DateTime<Utc>>)
                .bind(None::<DateTime<Utc>>)
                .bind(now)
                .bind(now)
                .execute(&mut *$tx)
                .await?;
                sqlx::query($lock_sql)
                    .bind(phone.as_str())
                    .fetch_one(&mut *$tx)
                    .await?
            }
        };
        let id: String = row.try_get("id")?;

        // Engine::step: one state_history row per transition.
        if let Some((from, to)) = script.transition {
            sqlx::query(
                "INSERT INTO state_history (owner_id, from_state, to_state, cause, at) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(id.as_str())
            .bind(from.as_str())
            .bind(to.as_str())
            .bind("sms")
            .bind(now)
            .execute(&mut *$tx)
            .await?;
        }

        // Tx::save_owner, after a step that changed the owner.
        if script.saves {
            let c = columns_after(step);
            sqlx::query(
                "UPDATE owners SET locale = $2, state = $3, gate = $4, \
                     business_type = $5, location = $6, business_name = $7, \
                     owner_name = $8, notify = $9, phone_type = $10, misses = $11, \
                     opted_out = $12, payment_active = $13, paid_at = $14, \
                     twilio_number = $15, waitlisted_at = $16, verify_started_at = $17, \
                     updated_at = $18 \
                 WHERE id = $1",
            )
            .bind(id.as_str())
            .bind("en-GB")
            .bind(script.state.as_str())
            .bind(c.gate)
            .bind(c.business_type)
            .bind(c.location)
            .bind(c.business_name)
            .bind(c.owner_name)
            .bind(c.notify)
            .bind(None::<&str>)
            .bind(c.misses)
            .bind(false)
            .bind(false)
            .bind(None::<DateTime<Utc>>)
            .bind(None::<&str>)
            .bind(None::<DateTime<Utc>>)
            .bind(None::<DateTime<Utc>>)
            .bind(now)
            .execute(&mut *$tx)
            .await?;
        }

        // Tx::finish_inbound
        sqlx::query(
            "UPDATE inbound_messages SET owner_id = $2, response = $3 \
             WHERE message_sid = $1",
        )
        .bind(sid.as_str())
        .bind(id.as_str())
        .bind(shape.responses[step].as_str())
        .execute(&mut *$tx)
        .await?;
    }};
}

/// `store/common.rs`'s `owner_columns!()`, and the owner SELECT of `lock_or_create_owner`.
macro_rules! lock_owner_sql {
    ($for_update:literal) => {
        concat!(
            "SELECT id, owner_phone, locale, state, gate, business_type, location, business_name, \
             owner_name, notify, phone_type, misses, opted_out, payment_active, paid_at, \
             twilio_number, waitlisted_at, verify_started_at, created_at, updated_at \
             FROM owners WHERE owner_phone = $1",
            $for_update
        )
    };
}

// ---------------------------------------------------------------------------------------------
// SQLite in memory

struct SqliteBench {
    engine: Engine<SqliteStore>,
    shape: BareShape,
}

impl Bench for SqliteBench {
    type Conn = SqliteConn;

    async fn engine_step(&self, k: usize, step: usize) -> Result<()> {
        self.engine.handle_sms(&inbound(k, step)).await?;
        Ok(())
    }

    async fn connection(&self) -> Result<Self::Conn> {
        Ok(self.engine.store().conn().await?)
    }

    async fn bare_step(&self, conn: &mut Self::Conn, k: usize, step: usize) -> Result<()> {
        // As `SqliteStore::begin`: the write lock up front.
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
        bare_statements!(tx, lock_owner_sql!(""), &self.shape, k, step);
        tx.commit().await?;
        Ok(())
    }
}

async fn bench_sqlite(opts: &Options) -> Result<Line> {
    let store = SqliteStore::in_memory().await?;
    store.migrate().await?;
    let engine = engine_on(store)?;
    let mut ids = Owners(0);
    let responses = rehearse(&engine, ids.take(1).start).await?;
    let bench = Arc::new(SqliteBench {
        engine,
        shape: BareShape {
            responses,
            now: epoch(),
        },
    });
    let owners = opts.owners.unwrap_or(DEFAULT_SQLITE_OWNERS);
    let (engine, bare) = measure(&bench, &mut ids, owners, 1).await?;
    check_history(bench.engine.store(), ids.0).await?;
    Ok(Line {
        name: "sqlite-memory",
        setup: format!("{owners} owners per side, sequential"),
        engine,
        bare,
    })
}

async fn check_history(store: &SqliteStore, owners: usize) -> Result<()> {
    let (owners, history, inbound): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT COUNT(*) FROM owners), (SELECT COUNT(*) FROM state_history), \
                (SELECT COUNT(*) FROM inbound_messages WHERE response IS NOT NULL)",
    )
    .fetch_one(&mut *store.conn().await?)
    .await?;
    check_counts(owners, owners, history, inbound)
}

fn check_counts(owners: usize, owners: i64, history: i64, inbound: i64) -> Result<()> {
    let transitions = SCRIPT.iter().filter(|s| s.transition.is_some()).count();
    let expected = (
        owners as i64,
        (owners * transitions) as i64,
        (owners * STEPS_PER_OWNER) as i64,
    );
    ensure!(
        (owners, history, inbound) == expected,
        "after the run: {owners} owners, {history} transitions, {inbound} answered SMS; \
         expected {expected:?}: the engine and the bare statements wrote different things"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL

struct PgBench {
    engine: Engine<PgStore>,
    shape: BareShape,
}

impl Bench for PgBench {
    type Conn = PoolConnection<Postgres>;

    async fn engine_step(&self, k: usize, step: usize) -> Result<()> {
        self.engine.handle_sms(&inbound(k, step)).await?;
        Ok(())
    }

    async fn connection(&self) -> Result<Self::Conn> {
        Ok(self.engine.store().pool().acquire().await?)
    }

    async fn bare_step(&self, conn: &mut Self::Conn, k: usize, step: usize) -> Result<()> {
        let mut tx = conn.begin().await?;
        bare_statements!(tx, lock_owner_sql!(" FOR UPDATE"), &self.shape, k, step);
        tx.commit().await?;
        Ok(())
    }
}

async fn bench_postgres(url: &str, opts: &Options) -> Result<Line> {
    let admin_options =
        PgConnectOptions::from_str(url).context("DATABASE_URL is not a PostgreSQL URL")?;
    let name = format!("onboard_bench_{}", std::process::id());
    let mut admin = sqlx::PgConnection::connect_with(&admin_options)
        .await
        .context("connecting to DATABASE_URL")?;
    sqlx::raw_sql(AssertSqlSafe(format!("DROP DATABASE IF EXISTS \"{name}\"")))
        .execute(&mut admin)
        .await?;
    sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
        .execute(&mut admin)
        .await
        .with_context(|| format!("creating the bench database {name}"))?;

    let result = bench_postgres_in(admin_options.clone().database(&name), opts).await;

    let dropped = sqlx::raw_sql(AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await
    .with_context(|| format!("dropping the bench database {name}"));
    let _ = admin.close().await;
    let line = result?;
    dropped?;
    Ok(line)
}

async fn bench_postgres_in(options: PgConnectOptions, opts: &Options) -> Result<Line> {
    let concurrency = opts.concurrency;
    // As `PgStore::connect` builds its pool, with one connection per concurrent owner.
    let pool = PgPoolOptions::new()
        .max_connections(concurrency as u32)
        .connect_with(options)
        .await?;
    let store = PgStore::from_pool(pool.clone());
    store.migrate().await?;
    let engine = engine_on(store)?;
    let mut ids = Owners(0);
    let responses = rehearse(&engine, ids.take(1).start).await?;
    let bench = Arc::new(PgBench {
        engine,
        shape: BareShape {
            responses,
            now: epoch(),
        },
    });
    let owners = opts.owners.unwrap_or(DEFAULT_POSTGRES_OWNERS);
    let (engine, bare) = measure(&bench, &mut ids, owners, concurrency).await?;

    let (owners, history, inbound): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT COUNT(*) FROM owners), (SELECT COUNT(*) FROM state_history), \
                (SELECT COUNT(*) FROM inbound_messages WHERE response IS NOT NULL)",
    )
    .fetch_one(&pool)
    .await?;
    check_counts(ids.0, owners, history, inbound)?;
    pool.close().await;
    Ok(Line {
        name: "postgres",
        setup: format!("{owners} owners per side, {concurrency} concurrent"),
        engine,
        bare,
    })
}

// ---------------------------------------------------------------------------------------------
// Output

struct Line {
    name: &'static str,
    setup: String,
    engine: Tally,
    bare: Tally,
}

impl Line {
    fn ratio(&self) -> f64 {
        self.engine.rate() / self.bare.rate()
    }

    fn print(&self, target: &str, pass: bool) {
        println!(
            "{:<14} engine {:>7} steps/s  bare {:>7} steps/s  ratio {:.2}  target {target}: {}",
            self.name,
            thousands(self.engine.rate()),
            thousands(self.bare.rate()),
            self.ratio(),
            if pass { "PASS" } else { "MISS" },
        );
    }

    fn detail(&self) -> String {
        format!(
            "{:<14} {}; {ROUNDS_PER_SIDE} rounds per side (median shown): engine {} / bare {} \
             steps/s",
            self.name,
            self.setup,
            self.engine.spread(),
            self.bare.spread()
        )
    }
}

fn thousands(x: f64) -> String {
    let digits = format!("{:.0}", x.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[tokio::main]
async fn main() -> Result<()> {
    let opts = options()?;
    let started = Instant::now();
    println!(
        "conversation steps/s: a step is one inbound SMS, one transaction; {STEPS_PER_OWNER} per \
         owner ({})",
        SCRIPT.map(|s| s.body).join(" / ")
    );
    println!(
        "engine = Engine::handle_sms; bare = the same SQL statements and parameters, one \
         transaction per step, on a connection held by the bench"
    );

    let sqlite = bench_sqlite(&opts).await.context("SQLite in memory")?;
    let postgres = match std::env::var("DATABASE_URL") {
        Ok(url) if !url.trim().is_empty() => {
            Some(bench_postgres(&url, &opts).await.context("PostgreSQL")?)
        }
        _ => None,
    };

    println!();
    sqlite.print(
        &format!(">= {} steps/s", thousands(SQLITE_TARGET_STEPS_PER_SEC)),
        sqlite.engine.rate() >= SQLITE_TARGET_STEPS_PER_SEC,
    );
    match &postgres {
        Some(pg) => pg.print(
            &format!(">= {POSTGRES_TARGET_RATIO:.2} of bare"),
            pg.ratio() >= POSTGRES_TARGET_RATIO,
        ),
        None => println!(
            "{:<14} skipped: DATABASE_URL is unset (run `DATABASE_URL=postgres://... cargo bench \
             --bench conversation`; the role must be allowed to CREATE DATABASE)",
            "postgres"
        ),
    }
    println!();
    println!("{}", sqlite.detail());
    if let Some(pg) = &postgres {
        println!("{}", pg.detail());
    }
    println!("total {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}
