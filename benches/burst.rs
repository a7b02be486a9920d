//! The server under a burst, over HTTP, on PostgreSQL: `cargo bench --bench burst` (needs
//! `DATABASE_URL`).
//!
//! The whole server runs in this process as `onboard serve` runs it (`app::serve`: the real router,
//! signature checks, outbox worker and keepers, logging to nowhere at `info`), on a database of its
//! own, with Twilio's API played by a local fake that accepts every message. Requests are signed as
//! Twilio and Stripe sign them.
//!
//! A. Inbound SMS: 1,000 new owners text the six messages that bring them to S5 with the payment
//!    link (a greeting, four answers, YES), 32 requests at a time. The limit is the bare
//!    5-statement transaction one inbound text must run (claim the `MessageSid`, lock or create the
//!    owner, record the transition, save the owner, store the reply), sent by the bench's own
//!    pool at 32 concurrent, before and after the HTTP round. Target: at least 90% of it.
//! B. Payment burst: those 1,000 owners pay at once, 1,000 signed `checkout.session.completed`
//!    events at 64 concurrent, timed until every owner's "your number" text has been accepted by
//!    the fake Twilio (so it holds a number). The limit is the bare allocation statement (pick an
//!    available number with `SKIP LOCKED` and assign it, one statement) sent by the bench's own pool
//!    at 64 concurrent, before and after the burst. Target: at least 60% of it.
//!
//! Each part ends with a ceiling: the same bare SQL behind the least HTTP server (the request's
//! body read, the SQL run, nothing else), from the same client at the same concurrency. No server
//! that answers over HTTP on this machine can beat it, so its ratio to the limit is the most a
//! target can ask here; the server's ratio to the ceiling is what its own work costs.
//!
//! After each round it prints the CPU each text or allocation took, on the whole machine and in
//! this process (the server and the bench's clients; the rest is mostly PostgreSQL's), read from
//! Linux's `/proc`: on 2 cores a round's rate is about the machine's CPU over that, so the two
//! sides' CPU per unit say where a ratio goes.
//!
//! It creates its own database (`onboard_bench_burst_<pid>`) on the `DATABASE_URL` server and drops
//! it at the end. Without `DATABASE_URL` it says how to run it and exits 0; it exits non-zero only
//! on errors, never on a missed target. Run by `cargo test` or nextest (no `--bench` argument), it
//! does nothing.
//!
//! Only the HTTP surface and `app::serve` are used, so the bench measures whatever the engine and
//! store do inside. The bare SQL names today's tables and columns.

mod common;

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::process::ExitCode;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use chrono::Utc;
use onboard::config::Config;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection};
use tokio::sync::Notify;

/// Owners measured over HTTP, and per bare round.
const OWNERS: usize = 1_000;
/// Owners sent through HTTP first, unmeasured, to open connections and warm caches.
const WARM_UP: usize = 64;
/// Numbers assigned by the end: part B's burst, its three bare rounds and its warm-up.
const ASSIGNED: usize = 4 * OWNERS + 2 * WARM_UP;
const SMS_CONCURRENCY: usize = 32;
const PAY_CONCURRENCY: usize = 64;
const INBOUND_TARGET: f64 = 0.90;
const PAYMENT_TARGET: f64 = 0.60;
/// How long the burst may take before the bench calls it stuck.
const PATIENCE: Duration = Duration::from_secs(300);

const ACCOUNT_SID: &str = "AC00000000000000000000000000000000";
const AUTH_TOKEN: &str = "bench_auth_token";
const STRIPE_SECRET: &str = "whsec_bench";
const ADMIN_TOKEN: &str = "bench_admin_token";
const PUBLIC_URL: &str = "https://onboard.example.com";
const ONBOARDING: &str = "+447700900000";

/// What a new owner texts to reach S5 with the payment link.
const SCRIPT: [&str; 6] = [
    "Hi",
    "Plumber in Leeds",
    "Smith & Sons Plumbing",
    "Jo Smith",
    "text",
    "yes",
];
/// The state each text of [`SCRIPT`] leaves the owner in, as the bare transaction records it.
const STATES: [&str; 6] = [
    "S1_BUSINESS_TYPE_LOCATION",
    "S2_BUSINESS_NAME",
    "S3_OWNER_NAME",
    "S4_NOTIFICATION_PREF",
    "S5_CONFIRM_LIVE",
    "S5_CONFIRM_LIVE",
];

fn http_owner_phone(k: usize) -> String {
    format!("+447700{k:06}")
}

fn warm_up_phone(k: usize) -> String {
    format!("+447702{k:06}")
}

fn bare_owner_phone(k: usize) -> String {
    format!("+447701{k:06}")
}

fn bare_owner_id(k: usize) -> String {
    format!("c_bare_{k:06}")
}

fn pool_number(i: usize) -> String {
    format!("+447800{i:06}")
}

fn main() -> ExitCode {
    common::main_with_database("burst", |url| async move { run(&url).await })
}

/// Creates the bench database, runs the bench in it, and drops it whatever happened.
async fn run(url: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    let server = PgConnectOptions::from_str(url).context("DATABASE_URL is not a PostgreSQL URL")?;
    let mut admin = PgConnection::connect_with(&server)
        .await
        .context("cannot connect to the server named by DATABASE_URL")?;
    let name = format!("onboard_bench_burst_{}", std::process::id());
    execute(&mut admin, &format!("DROP DATABASE IF EXISTS \"{name}\"")).await?;
    execute(&mut admin, &format!("CREATE DATABASE \"{name}\""))
        .await
        .context("cannot create the bench database (the role needs CREATE DATABASE)")?;
    let version: String = sqlx::query_scalar("SHOW server_version")
        .fetch_one(&mut admin)
        .await?;
    println!("burst bench: PostgreSQL {version}, database {name} (dropped at the end)");

    let outcome = bench(
        url_with_database(url, &name)?,
        server.clone().database(&name),
    )
    .await;

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
        "burst bench: done in {:.0} s",
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

/// `url` naming `database` instead of its own (the server takes a URL, not options).
fn url_with_database(url: &str, database: &str) -> anyhow::Result<String> {
    let (before_query, query) = match url.split_once('?') {
        Some((before, query)) => (before, Some(query)),
        None => (url, None),
    };
    let start = before_query
        .find("://")
        .map(|i| i + 3)
        .context("DATABASE_URL must look like postgres://user@host:port/database")?;
    let end = before_query[start..]
        .find('/')
        .map_or(before_query.len(), |i| start + i);
    let mut out = format!("{}/{}", &before_query[..end], database);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    Ok(out)
}

async fn bench(database_url: String, options: PgConnectOptions) -> anyhow::Result<Report> {
    // The server logs at `info` as in production, into nothing; named events are counted.
    {
        use tracing_subscriber::layer::SubscriberExt;
        use tracing_subscriber::util::SubscriberInitExt;
        use tracing_subscriber::{EnvFilter, Layer, fmt};
        let _ = tracing_subscriber::registry()
            .with(
                fmt::layer()
                    .json()
                    .with_writer(std::io::sink)
                    .with_filter(EnvFilter::new("info")),
            )
            .with(onboard::telemetry::EventCounter)
            .try_init();
    }
    onboard::tls::install_crypto_provider();

    let twilio = FakeTwilio::start().await?;
    let listen = free_port().await?;
    let config = Config::from_lookup(|name| {
        let value = match name {
            "DATABASE_URL" => database_url.as_str(),
            "LISTEN_ADDR" => listen.as_str(),
            "PUBLIC_URL" => PUBLIC_URL,
            "ONBOARDING_NUMBER" => ONBOARDING,
            "TWILIO_ACCOUNT_SID" => ACCOUNT_SID,
            "TWILIO_AUTH_TOKEN" => AUTH_TOKEN,
            "TWILIO_API_BASE" => twilio.base.as_str(),
            "STRIPE_WEBHOOK_SECRET" => STRIPE_SECRET,
            "ADMIN_TOKEN" => ADMIN_TOKEN,
            _ => return None,
        };
        Some(value.to_owned())
    })
    .context("the bench's server configuration")?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(onboard::app::serve(config, async move {
        let _ = stopped.await;
    }));
    let client = Client::new(format!("http://{listen}"))?;
    let bare = PgPoolOptions::new()
        .max_connections(PAY_CONCURRENCY as u32)
        // The limit is the statements alone: no ping before each transaction.
        .test_before_acquire(false)
        .connect_with(options)
        .await
        .context("cannot connect to the bench database")?;
    let bare_http = Client::new(BareOverHttp::start(bare.clone()).await?)?;

    let report = async {
        client.wait_until_up(&server).await?;
        // Every measured round allocates OWNERS numbers (the bare rounds and the burst), and
        // part B's warm-up a few.
        for chunk in (0..ASSIGNED).collect::<Vec<_>>().chunks(500) {
            client
                .add_numbers(&chunk.iter().map(|&i| pool_number(i)).collect::<Vec<_>>())
                .await?;
        }
        let inbound = part_a(&client, &bare, &bare_http).await?;
        let payments = part_b(&client, &bare, &bare_http, &twilio, &inbound.owner_ids).await?;
        anyhow::Ok(Report { inbound, payments })
    }
    .await;
    let _ = stop.send(());
    match tokio::time::timeout(Duration::from_secs(30), server).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) if report.is_ok() => bail!("the server stopped with an error: {e}"),
        Ok(Err(e)) if report.is_ok() => bail!("the server panicked: {e}"),
        Err(_) if report.is_ok() => bail!("the server did not stop within 30 s"),
        _ => {}
    }
    bare.close().await;
    report
}

/// A free port on this machine for the server to listen on.
async fn free_port() -> anyhow::Result<String> {
    let probe = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    Ok(probe.local_addr()?.to_string())
}

// --- the HTTP side -------------------------------------------------------------------------------

#[derive(Clone)]
struct Client {
    base: String,
    http: reqwest::Client,
}

impl Client {
    fn new(base: String) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(PAY_CONCURRENCY)
            .build()?;
        Ok(Self { base, http })
    }

    async fn wait_until_up(
        &self,
        server: &tokio::task::JoinHandle<Result<(), onboard::app::StartError>>,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if server.is_finished() {
                bail!("the server stopped while starting");
            }
            if let Ok(response) = self.http.get(format!("{}/healthz", self.base)).send().await
                && response.status().is_success()
            {
                return Ok(());
            }
            ensure!(
                Instant::now() < deadline,
                "the server did not start in 30 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn add_numbers(&self, numbers: &[String]) -> anyhow::Result<()> {
        let response = self
            .http
            .post(format!("{}/admin/api/pool", self.base))
            .bearer_auth(ADMIN_TOKEN)
            .json(&serde_json::json!({ "numbers": numbers }))
            .send()
            .await?;
        ensure!(
            response.status() == StatusCode::OK,
            "adding numbers: {} {}",
            response.status(),
            response.text().await.unwrap_or_default()
        );
        Ok(())
    }

    async fn assigned_numbers(&self) -> anyhow::Result<i64> {
        let pool: serde_json::Value = self
            .http
            .get(format!("{}/admin/api/pool", self.base))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        pool["by_status"]["ASSIGNED"]
            .as_i64()
            .with_context(|| format!("GET /admin/api/pool: no ASSIGNED count in {pool}"))
    }

    /// An inbound text, signed as Twilio signs it; returns the reply's text.
    async fn text(&self, sid: &str, from: &str, body: &str) -> anyhow::Result<String> {
        let params: Vec<(String, String)> = [
            ("MessageSid", sid),
            ("SmsSid", sid),
            ("AccountSid", ACCOUNT_SID),
            ("From", from),
            ("To", ONBOARDING),
            ("Body", body),
            ("NumMedia", "0"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let path = "/webhooks/twilio/sms";
        let signature = onboard::twilio::signature::compute(
            AUTH_TOKEN,
            &format!("{PUBLIC_URL}{path}"),
            &params,
        );
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .header("X-Twilio-Signature", signature)
            .form(&params)
            .send()
            .await?;
        let status = response.status();
        let twiml = response.text().await?;
        ensure!(status == StatusCode::OK, "text {sid}: {status} {twiml}");
        Ok(onboard::replay::message_text(&twiml).unwrap_or_default())
    }

    /// A paid `checkout.session.completed` for `owner_id`, signed as Stripe signs it.
    async fn pay(&self, k: usize, owner_id: &str) -> anyhow::Result<()> {
        let event = serde_json::json!({
            "id": format!("evt_burst_{k:06}"), "object": "event",
            "type": "checkout.session.completed",
            "data": {"object": {"id": format!("cs_burst_{k:06}"), "object": "checkout.session",
                "payment_status": "paid", "client_reference_id": owner_id,
                "customer": format!("cus_burst_{k:06}")}}
        })
        .to_string();
        let signature = onboard::stripe::signature::sign(
            event.as_bytes(),
            STRIPE_SECRET,
            Utc::now().timestamp(),
        );
        let response = self
            .http
            .post(format!("{}/webhooks/stripe", self.base))
            .header("Stripe-Signature", signature)
            .header("Content-Type", "application/json")
            .body(event)
            .send()
            .await?;
        let status = response.status();
        let body = response.text().await?;
        ensure!(
            status == StatusCode::OK && body.contains("processed"),
            "payment {k}: {status} {body}"
        );
        Ok(())
    }
}

/// Runs `job` for every item from `concurrency` tasks taking items from one queue; returns the
/// wall time of the whole lot.
async fn concurrently<T, F, Fut>(
    items: Vec<T>,
    concurrency: usize,
    job: F,
) -> anyhow::Result<Duration>
where
    T: Send + 'static,
    F: Fn(T) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send,
{
    let queue = Arc::new(Mutex::new(items.into_iter().collect::<VecDeque<_>>()));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let queue = queue.clone();
        let job = job.clone();
        tasks.spawn(async move {
            loop {
                let next = queue.lock().unwrap_or_else(|e| e.into_inner()).pop_front();
                let Some(item) = next else {
                    return anyhow::Ok(());
                };
                job(item).await?;
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.context("a task panicked")??;
    }
    Ok(started.elapsed())
}

/// Every owner's first text, then every owner's second, ... (so consecutive requests touch
/// different owners), each owner's texts in order. Returns the wall time and the owners' ids, read
/// from the payment link of the last reply.
async fn walk_to_s5(
    client: &Client,
    phones: Vec<String>,
    tag: &str,
) -> anyhow::Result<(Duration, Vec<String>)> {
    let ids = Arc::new(Mutex::new(HashMap::new()));
    let mut took = Duration::ZERO;
    for (step, body) in SCRIPT.iter().enumerate() {
        let client = client.clone();
        let ids = ids.clone();
        let tag = tag.to_owned();
        let items: Vec<(usize, String)> = phones.iter().cloned().enumerate().collect();
        took += concurrently(items, SMS_CONCURRENCY, move |(k, phone)| {
            let (client, ids, tag) = (client.clone(), ids.clone(), tag.clone());
            async move {
                let sid = format!("SM{tag}{k:06}{step:02}");
                let reply = client.text(&sid, &phone, body).await?;
                if step == SCRIPT.len() - 1 {
                    let id = reply
                        .split("client_reference_id=")
                        .nth(1)
                        .and_then(|rest| rest.split(|c: char| c.is_whitespace()).next())
                        .with_context(|| format!("no payment link in the reply to YES: {reply}"))?;
                    ids.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(k, id.to_owned());
                }
                Ok(())
            }
        })
        .await?;
    }
    let ids = ids.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let ids = (0..phones.len())
        .map(|k| ids.get(&k).cloned().context("an owner got no payment link"))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok((took, ids))
}

// --- part A: inbound SMS -------------------------------------------------------------------------

struct Inbound {
    http: f64,
    bare: Vec<f64>,
    /// The bare transaction behind a bare HTTP handler: what any server here could reach.
    ceiling: f64,
    owner_ids: Vec<String>,
}

impl Inbound {
    fn limit(&self) -> f64 {
        mean(&self.bare)
    }
}

async fn part_a(client: &Client, bare: &PgPool, bare_http: &Client) -> anyhow::Result<Inbound> {
    let texts = OWNERS * SCRIPT.len();
    println!(
        "\nA. inbound SMS: {} owners x {} texts, {SMS_CONCURRENCY} concurrent",
        thousands(OWNERS as i64),
        SCRIPT.len()
    );
    // Unmeasured: opens connections on both sides and prepares statements.
    walk_to_s5(client, (0..WARM_UP).map(warm_up_phone).collect(), "w").await?;
    bare_inbound_round(bare, 2 * OWNERS..2 * OWNERS + WARM_UP).await?;
    bare_http
        .bare_inbound_round(2 * OWNERS + WARM_UP..2 * OWNERS + 2 * WARM_UP)
        .await?;

    let cpu = Cpu::now();
    let before = texts as f64 / bare_inbound_round(bare, 0..OWNERS).await?.as_secs_f64();
    println!(
        "   bare 5-statement transaction     {:>8} texts/s",
        thousands(before as i64)
    );
    let cpu = cpu.print_per("text", texts);
    let (took, owner_ids) =
        walk_to_s5(client, (0..OWNERS).map(http_owner_phone).collect(), "a").await?;
    let http = texts as f64 / took.as_secs_f64();
    println!(
        "   over HTTP (POST /webhooks/twilio/sms) {:>8} texts/s",
        thousands(http as i64)
    );
    let cpu = cpu.print_per("text", texts);
    let after = texts as f64
        / bare_inbound_round(bare, OWNERS..2 * OWNERS)
            .await?
            .as_secs_f64();
    println!(
        "   bare 5-statement transaction     {:>8} texts/s",
        thousands(after as i64)
    );
    let cpu = cpu.print_per("text", texts);
    let ceiling = texts as f64
        / bare_http
            .bare_inbound_round(3 * OWNERS..4 * OWNERS)
            .await?
            .as_secs_f64();
    println!(
        "   the bare transaction behind a bare HTTP handler {:>5} texts/s (the ceiling here)",
        thousands(ceiling as i64)
    );
    cpu.print_per("text", texts);
    Ok(Inbound {
        http,
        bare: vec![before, after],
        ceiling,
        owner_ids,
    })
}

/// The owners `range` text the script with the bare statements, as `walk_to_s5` does over HTTP.
async fn bare_inbound_round(
    pool: &PgPool,
    range: std::ops::Range<usize>,
) -> anyhow::Result<Duration> {
    let mut took = Duration::ZERO;
    for step in 0..SCRIPT.len() {
        let pool = pool.clone();
        took += concurrently(range.clone().collect(), SMS_CONCURRENCY, move |k| {
            let pool = pool.clone();
            async move { bare_text(&pool, k, step).await }
        })
        .await?;
    }
    Ok(took)
}

/// The reply the bare transaction stores (and [`BareOverHttp`] answers).
const BARE_REPLY: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Message>What's \
    your trade, and where are you based?</Message></Response>";

/// What one inbound text must do, in one transaction of five statements: claim the `MessageSid`,
/// lock the owner (creating them on their first text), record the transition, save the owner,
/// store the reply.
async fn bare_text(pool: &PgPool, k: usize, step: usize) -> anyhow::Result<()> {
    let now = Utc::now();
    let sid = format!("SMbare{k:06}{step:02}");
    let phone = bare_owner_phone(k);
    let mut tx = pool.begin().await?;
    let claimed = sqlx::query(
        "INSERT INTO inbound_messages (message_sid, from_addr, to_addr, body, received_at) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (message_sid) DO NOTHING",
    )
    .bind(&sid)
    .bind(&phone)
    .bind(ONBOARDING)
    .bind(SCRIPT[step])
    .bind(now)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    ensure!(claimed == 1, "bare: {sid} was already claimed");
    let id: String = sqlx::query_scalar(
        "INSERT INTO owners (id, owner_phone, country, locale, state, created_at, updated_at) \
         VALUES ($1, $2, 'GB', 'en-GB', 'S1_BUSINESS_TYPE_LOCATION', $3, $3) \
         ON CONFLICT (owner_phone) DO UPDATE SET updated_at = EXCLUDED.updated_at \
         RETURNING id",
    )
    .bind(bare_owner_id(k))
    .bind(&phone)
    .bind(now)
    .fetch_one(&mut *tx)
    .await?;
    let from = if step == 0 {
        "S1_BUSINESS_TYPE_LOCATION"
    } else {
        STATES[step - 1]
    };
    sqlx::query(
        "INSERT INTO state_history (owner_id, from_state, to_state, cause, at) \
         VALUES ($1, $2, $3, 'sms', $4)",
    )
    .bind(&id)
    .bind(from)
    .bind(STATES[step])
    .bind(now)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE owners SET state = $2, business_type = $3, location = $4, business_name = $5, \
             owner_name = $6, notify = $7, updated_at = $8 \
         WHERE id = $1",
    )
    .bind(&id)
    .bind(STATES[step])
    .bind((step >= 1).then_some("Plumber"))
    .bind((step >= 1).then_some("Leeds"))
    .bind((step >= 2).then_some("Smith & Sons Plumbing"))
    .bind((step >= 3).then_some("Jo Smith"))
    .bind((step >= 4).then_some("sms"))
    .bind(now)
    .execute(&mut *tx)
    .await?;
    sqlx::query("UPDATE inbound_messages SET owner_id = $2, response = $3 WHERE message_sid = $1")
        .bind(&sid)
        .bind(&id)
        .bind(BARE_REPLY)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

// --- part B: payment burst -----------------------------------------------------------------------

struct Payments {
    /// Allocations per second over HTTP, until the last text was accepted.
    http: f64,
    /// Until the last payment was answered (the texts may still be on their way).
    answered: f64,
    bare: Vec<f64>,
    /// The bare statement behind a bare HTTP handler: what any server here could reach.
    ceiling: f64,
}

impl Payments {
    fn limit(&self) -> f64 {
        mean(&self.bare)
    }
}

async fn part_b(
    client: &Client,
    bare: &PgPool,
    bare_http: &Client,
    twilio: &FakeTwilio,
    owner_ids: &[String],
) -> anyhow::Result<Payments> {
    println!(
        "\nB. payment burst: {} owners at S5 pay at once, {PAY_CONCURRENCY} concurrent",
        thousands(OWNERS as i64)
    );
    // Unmeasured: the bare pool opens the connections beyond part A's 32 (as the server's are
    // open), for the bare owners of part A's warm-ups.
    bare_allocation_round(bare, 2 * OWNERS..2 * OWNERS + 2 * WARM_UP).await?;
    let cpu = Cpu::now();
    let before = OWNERS as f64 / bare_allocation_round(bare, 0..OWNERS).await?.as_secs_f64();
    println!(
        "   bare allocation statement        {:>8} allocations/s",
        thousands(before as i64)
    );
    let cpu = cpu.print_per("allocation", OWNERS);

    twilio.expect(OWNERS);
    let client_ = client.clone();
    let items: Vec<(usize, String)> = owner_ids.iter().cloned().enumerate().collect();
    let started = Instant::now();
    let answered = concurrently(items, PAY_CONCURRENCY, move |(k, id)| {
        let client = client_.clone();
        async move { client.pay(k, &id).await }
    })
    .await?;
    let delivered = twilio
        .all_accepted(started, PATIENCE)
        .await
        .context("not every owner's text reached the fake Twilio")?;
    let http = OWNERS as f64 / delivered.as_secs_f64();
    let answered = OWNERS as f64 / answered.as_secs_f64();
    println!(
        "   over HTTP until every text was accepted {:>5} allocations/s (payments answered at {}/s)",
        thousands(http as i64),
        thousands(answered as i64)
    );
    let cpu = cpu.print_per("allocation", OWNERS);
    twilio.check_one_each(&(0..OWNERS).map(http_owner_phone).collect::<Vec<_>>())?;

    let cpu = cpu.restart();
    let after = OWNERS as f64
        / bare_allocation_round(bare, OWNERS..2 * OWNERS)
            .await?
            .as_secs_f64();
    println!(
        "   bare allocation statement        {:>8} allocations/s",
        thousands(after as i64)
    );
    let cpu = cpu.print_per("allocation", OWNERS);
    let pool = bare_http.clone();
    let ceiling = OWNERS as f64
        / concurrently(
            (3 * OWNERS..4 * OWNERS).collect(),
            PAY_CONCURRENCY,
            move |k| {
                let pool = pool.clone();
                async move { pool.bare_allocation(k).await }
            },
        )
        .await?
        .as_secs_f64();
    println!(
        "   the bare statement behind a bare HTTP handler {:>5} allocations/s (the ceiling here)",
        thousands(ceiling as i64)
    );
    cpu.print_per("allocation", OWNERS);
    let assigned = client.assigned_numbers().await?;
    ensure!(
        assigned == ASSIGNED as i64,
        "expected {ASSIGNED} numbers assigned (the burst, three bare rounds and a warm-up), \
         found {assigned}"
    );
    Ok(Payments {
        http,
        answered,
        bare: vec![before, after],
        ceiling,
    })
}

/// The owners `range` of the bare rounds each get a number, one statement each.
async fn bare_allocation_round(
    pool: &PgPool,
    range: std::ops::Range<usize>,
) -> anyhow::Result<Duration> {
    let pool = pool.clone();
    concurrently(range.collect(), PAY_CONCURRENCY, move |k| {
        let pool = pool.clone();
        async move { bare_allocation(&pool, k).await }
    })
    .await
}

/// Bare owner `k` gets a number: the allocation statement alone.
async fn bare_allocation(pool: &PgPool, k: usize) -> anyhow::Result<()> {
    let picked: Option<String> = sqlx::query_scalar(
        "WITH pick AS ( \
             SELECT e164 FROM pool_numbers WHERE status = 'AVAILABLE' AND country = $1 \
             ORDER BY created_at, e164 LIMIT 1 FOR UPDATE SKIP LOCKED) \
         UPDATE pool_numbers AS p SET status = 'ASSIGNED', owner_id = $2, \
             assigned_at = $3, updated_at = $3 \
         FROM pick WHERE p.e164 = pick.e164 RETURNING p.e164",
    )
    .bind("GB")
    .bind(bare_owner_id(k))
    .bind(Utc::now())
    .fetch_optional(pool)
    .await?;
    ensure!(picked.is_some(), "bare: the pool was empty for owner {k}");
    Ok(())
}

// --- the ceiling: the bare SQL behind HTTP ------------------------------------------------------

/// The bare SQL behind the least HTTP server: each request's body is read (a text's form, a
/// payment's JSON) and the bare transaction or statement run, nothing else (no signature, no
/// logging). A server that must answer over HTTP on this machine can go no faster than this, so
/// its rate over the bare SQL's is the highest ratio a target could ask of any server here.
struct BareOverHttp;

impl BareOverHttp {
    /// Serves on a free port; returns its base address.
    async fn start(pool: PgPool) -> anyhow::Result<String> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let app = axum::Router::new()
            .route("/text/{k}/{step}", post(bare_text_handler))
            .route("/allocate/{k}", post(bare_allocation_handler))
            .with_state(pool);
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(base)
    }
}

async fn bare_text_handler(
    State(pool): State<PgPool>,
    axum::extract::Path((k, step)): axum::extract::Path<(usize, usize)>,
    axum::Form(_text): axum::Form<HashMap<String, String>>,
) -> Result<&'static str, (StatusCode, String)> {
    bare_text(&pool, k, step)
        .await
        .map(|()| BARE_REPLY)
        .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

async fn bare_allocation_handler(
    State(pool): State<PgPool>,
    axum::extract::Path(k): axum::extract::Path<usize>,
    axum::Json(_event): axum::Json<serde_json::Value>,
) -> Result<&'static str, (StatusCode, String)> {
    bare_allocation(&pool, k)
        .await
        .map(|()| "processed")
        .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

impl Client {
    /// As [`bare_inbound_round`], each text posted to [`BareOverHttp`] with a text's form.
    async fn bare_inbound_round(&self, range: std::ops::Range<usize>) -> anyhow::Result<Duration> {
        let mut took = Duration::ZERO;
        for (step, body) in SCRIPT.iter().enumerate() {
            let client = self.clone();
            took += concurrently(range.clone().collect(), SMS_CONCURRENCY, move |k| {
                let client = client.clone();
                async move {
                    let sid = format!("SMbare{k:06}{step:02}");
                    let params = [
                        ("MessageSid", sid.as_str()),
                        ("SmsSid", sid.as_str()),
                        ("AccountSid", ACCOUNT_SID),
                        ("From", &bare_owner_phone(k)),
                        ("To", ONBOARDING),
                        ("Body", body),
                        ("NumMedia", "0"),
                    ];
                    let response = client
                        .http
                        .post(format!("{}/text/{k}/{step}", client.base))
                        .form(&params)
                        .send()
                        .await?;
                    let status = response.status();
                    let body = response.text().await?;
                    ensure!(status == StatusCode::OK, "bare text {sid}: {status} {body}");
                    Ok(())
                }
            })
            .await?;
        }
        Ok(took)
    }

    /// [`bare_allocation`] for bare owner `k`, posted to [`BareOverHttp`] with a payment's JSON.
    async fn bare_allocation(&self, k: usize) -> anyhow::Result<()> {
        let event = serde_json::json!({
            "id": format!("evt_bare_{k:06}"), "object": "event",
            "type": "checkout.session.completed",
            "data": {"object": {"id": format!("cs_bare_{k:06}"), "object": "checkout.session",
                "payment_status": "paid", "client_reference_id": bare_owner_id(k),
                "customer": format!("cus_bare_{k:06}")}}
        });
        let response = self
            .http
            .post(format!("{}/allocate/{k}", self.base))
            .json(&event)
            .send()
            .await?;
        let status = response.status();
        let body = response.text().await?;
        ensure!(
            status == StatusCode::OK,
            "bare allocation {k}: {status} {body}"
        );
        Ok(())
    }
}

// --- where the CPU went ------------------------------------------------------------------------

/// The machine's CPU time and this process's, read from Linux's `/proc` at one instant, to say
/// after a round how its work was shared: on 2 cores the server, the bench's clients and
/// PostgreSQL compete, and a round's rate is about the machine's CPU over the CPU each unit took.
/// Silent where `/proc` cannot be read.
#[derive(Clone, Copy)]
struct Cpu(Option<CpuReading>);

#[derive(Clone, Copy)]
struct CpuReading {
    at: Instant,
    /// Clock ticks, summed over every core: all of them, and the busy ones.
    total: u64,
    busy: u64,
    /// This process's ticks (user and system).
    process: u64,
    cores: u64,
}

impl Cpu {
    fn now() -> Cpu {
        Cpu(CpuReading::now())
    }

    /// A fresh start, not printing the time since the last one.
    fn restart(self) -> Cpu {
        Cpu::now()
    }

    /// Prints the CPU each of `units` took since this reading, on the machine and in this
    /// process; returns a fresh reading.
    fn print_per(self, unit: &str, units: usize) -> Cpu {
        let now = Cpu::now();
        if let (Some(a), Some(b)) = (self.0, now.0)
            && b.total > a.total
        {
            // Seconds per tick, from the wall time the ticks were counted over.
            let tick = (b.at - a.at).as_secs_f64() * b.cores as f64 / (b.total - a.total) as f64;
            let ms = |ticks: u64| ticks as f64 * tick * 1_000.0 / units as f64;
            println!(
                "      CPU per {unit}: {:.2} ms on the machine, {:.2} ms of it in this process \
                 (the rest mostly PostgreSQL's)",
                ms(b.busy - a.busy),
                ms(b.process - a.process)
            );
        }
        now
    }
}

impl CpuReading {
    fn now() -> Option<CpuReading> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let mut lines = stat.lines();
        // cpu  user nice system idle iowait irq softirq steal ...
        let ticks: Vec<u64> = lines
            .next()?
            .split_whitespace()
            .skip(1)
            .take(8)
            .map(str::parse)
            .collect::<Result<_, _>>()
            .ok()?;
        let total: u64 = ticks.iter().sum();
        let idle = ticks.get(3)? + ticks.get(4)?;
        let cores = lines
            .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
            .count() as u64;
        // After the command's closing parenthesis: state, ..., utime (the 12th), stime.
        let own = std::fs::read_to_string("/proc/self/stat").ok()?;
        let fields: Vec<&str> = own.rsplit_once(')')?.1.split_whitespace().collect();
        let process = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        Some(CpuReading {
            at: Instant::now(),
            total,
            busy: total - idle,
            process,
            cores,
        })
    }
}

// --- the fake Twilio -----------------------------------------------------------------------------

/// Twilio's Messages API as far as the outbox uses it: every message accepted (201, queued).
struct FakeTwilio {
    base: String,
    state: Arc<Accepted>,
}

#[derive(Default)]
struct Accepted {
    inner: Mutex<AcceptedInner>,
    done: Notify,
}

#[derive(Default)]
struct AcceptedInner {
    /// Messages accepted per recipient.
    per_to: HashMap<String, usize>,
    sent: usize,
    expected: usize,
    /// When the expected count was reached.
    finished: Option<Instant>,
}

impl FakeTwilio {
    async fn start() -> anyhow::Result<Self> {
        let state = Arc::new(Accepted::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let app = axum::Router::new()
            .route(
                "/2010-04-01/Accounts/{account}/Messages.json",
                post(accept_message),
            )
            .with_state(state.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(Self { base, state })
    }

    /// Starts counting afresh, to be done at `expected` messages.
    fn expect(&self, expected: usize) {
        let mut inner = self.state.inner.lock().unwrap_or_else(|e| e.into_inner());
        *inner = AcceptedInner {
            expected,
            ..AcceptedInner::default()
        };
    }

    /// How long after `started` the expected count was reached.
    async fn all_accepted(&self, started: Instant, patience: Duration) -> anyhow::Result<Duration> {
        let deadline = started + patience;
        loop {
            let notified = self.state.done.notified();
            {
                let inner = self.state.inner.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(at) = inner.finished {
                    return Ok(at - started);
                }
                ensure!(
                    Instant::now() < deadline,
                    "{} of {} messages accepted after {} s",
                    inner.sent,
                    inner.expected,
                    patience.as_secs()
                );
            }
            let _ = tokio::time::timeout(Duration::from_millis(100), notified).await;
        }
    }

    /// Each of `phones` was sent exactly one message, and no one else any.
    fn check_one_each(&self, phones: &[String]) -> anyhow::Result<()> {
        let inner = self.state.inner.lock().unwrap_or_else(|e| e.into_inner());
        for phone in phones {
            let n = inner.per_to.get(phone).copied().unwrap_or(0);
            ensure!(n == 1, "{phone} was sent {n} messages, not 1");
        }
        ensure!(
            inner.per_to.len() == phones.len(),
            "messages went to {} recipients, not {}",
            inner.per_to.len(),
            phones.len()
        );
        Ok(())
    }
}

async fn accept_message(
    State(state): State<Arc<Accepted>>,
    axum::Form(form): axum::Form<HashMap<String, String>>,
) -> (StatusCode, axum::Json<serde_json::Value>) {
    let to = form.get("To").cloned().unwrap_or_default();
    let n = {
        let mut inner = state.inner.lock().unwrap_or_else(|e| e.into_inner());
        *inner.per_to.entry(to.clone()).or_default() += 1;
        inner.sent += 1;
        if inner.sent == inner.expected && inner.finished.is_none() {
            inner.finished = Some(Instant::now());
            state.done.notify_waiters();
        }
        inner.sent
    };
    (
        StatusCode::CREATED,
        axum::Json(serde_json::json!({
            "sid": format!("SM{n:032x}"),
            "status": "queued",
            "to": to,
            "from": form.get("From"),
            "body": form.get("Body"),
        })),
    )
}

// --- report --------------------------------------------------------------------------------------

struct Report {
    inbound: Inbound,
    payments: Payments,
}

impl Report {
    fn print(&self) {
        let verdict = |ok: bool| if ok { "PASS" } else { "MISS" };
        let a = &self.inbound;
        let b = &self.payments;
        let a_ratio = a.http / a.limit();
        let b_ratio = b.http / b.limit();
        let rows = [
            (
                "A  inbound texts/s over HTTP vs bare transaction, 32 concurrent",
                format!(
                    "{}/s vs {}/s = {a_ratio:.2}",
                    thousands(a.http as i64),
                    thousands(a.limit() as i64)
                ),
                format!(">= {INBOUND_TARGET:.2}"),
                verdict(a_ratio >= INBOUND_TARGET),
            ),
            (
                "B  allocations/s over HTTP vs bare statement, 64 concurrent",
                format!(
                    "{}/s vs {}/s = {b_ratio:.2}",
                    thousands(b.http as i64),
                    thousands(b.limit() as i64)
                ),
                format!(">= {PAYMENT_TARGET:.2}"),
                verdict(b_ratio >= PAYMENT_TARGET),
            ),
        ];
        println!(
            "\n   {:<64} {:<28} {:<8} result",
            "target", "measured", "target"
        );
        for (what, measured, target, result) in rows {
            println!("   {what:<64} {measured:<28} {target:<8} {result}");
        }
        println!(
            "      (limits: the mean of a bare round before and one after; payments alone were \
             answered at {}/s, {:.2} of the limit)",
            thousands(b.answered as i64),
            b.answered / b.limit()
        );
        println!(
            "      ceilings: the bare SQL behind a bare HTTP handler reached A {:.2} and B {:.2} of \
             the limits (no server answering over HTTP here does better)",
            a.ceiling / a.limit(),
            b.ceiling / b.limit()
        );
    }
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
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
