//! The `onboard` command line: serve, migrate, chat, replay, pool.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use onboard::app::{self, Database};
use onboard::config::{Config, LogFormat};
use onboard::domain::PhoneNumber;
use onboard::engine::Engine;
use onboard::store::Store;
use tracing_subscriber::EnvFilter;

/// Shown under `--help`: everything is configured from the environment (or `.env`).
const ENVIRONMENT_HELP: &str = "\
Environment (also read from ./.env; the real environment wins):
  DATABASE_URL           postgres://... or sqlite:... (default sqlite://onboard.db)
  LISTEN_ADDR            where the server listens (default 127.0.0.1:3000)
  PUBLIC_URL             the URL Twilio and Stripe call (default http://LISTEN_ADDR)
  TWILIO_ACCOUNT_SID     with the token and ONBOARDING_NUMBER: texts are really sent
  TWILIO_AUTH_TOKEN      checks X-Twilio-Signature; unset is dev mode
  TWILIO_API_BASE        Twilio's REST API (default https://api.twilio.com)
  ONBOARDING_NUMBER      the number owners text
  STRIPE_PAYMENT_LINK    the Stripe Payment Link
  STRIPE_WEBHOOK_SECRET  whsec_...; several comma-separated while rotating; unset is dev mode
  ADMIN_TOKEN            bearer token of /admin/api/* and the console's sign-in (/admin); both off when unset
  POOL_LOW_WATER, POOL_TARGET, POOL_MAX_BUY_PER_DAY, TWILIO_ADDRESS_SID, TWILIO_BUNDLE_SID
  VERIFY_CALLER_NUMBER, VERIFY_WINDOW, VERIFY_RING_SECONDS
  ONBOARD_ENV            development (default) or production
  FLOWS_DIR              load the bot's wording from this folder
  PRICES_DIR             load prices from this folder (GB.toml, US.toml)
  REPORTING_CURRENCY     the currency of cost reports and budgets (default GBP)
  BUDGET_DAILY, BUDGET_MONTHLY  spending budgets in the reporting currency (unset: no limit)
  OPS_EMAIL              where budget alerts are emailed (through SMTP_URL)
  RUST_LOG               log filter (default info)
  LOG_FORMAT             pretty (default) or json
The README's Configuration section says more about each.";

#[derive(Parser)]
#[command(
    version,
    about = "Onboards small-business owners over SMS and voice",
    after_help = ENVIRONMENT_HELP
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP server (migrates first).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Talk to the bot in the terminal, as an owner would by SMS (in-process, nothing to set up).
    Chat {
        /// The owner's phone number (E.164).
        #[arg(long, default_value = onboard::chat::DEFAULT_PHONE)]
        phone: String,
        /// A running server to talk to instead, driven as Twilio and Stripe do (signed with
        /// TWILIO_AUTH_TOKEN and STRIPE_WEBHOOK_SECRET; texts read with ADMIN_TOKEN).
        #[arg(long, value_name = "URL")]
        target: Option<String>,
    },
    /// Replay fixture conversations and report each: in-process, or against a running server.
    Replay {
        /// Fixture files, or folders of them.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// A running server (e.g. http://127.0.0.1:3000) to drive as Twilio and Stripe do,
        /// signed with TWILIO_AUTH_TOKEN and STRIPE_WEBHOOK_SECRET and read through the admin
        /// API (ADMIN_TOKEN); PUBLIC_URL when it differs from the target.
        #[arg(long, value_name = "URL", conflicts_with = "update")]
        target: Option<String>,
        /// Rewrite each fixture's reply expectations into the exact transcript of what the bot
        /// says now (review the change with `git diff`).
        #[arg(long)]
        update: bool,
    },
    /// Operate the number pool.
    #[command(subcommand)]
    Pool(PoolCommand),
}

#[derive(Subcommand)]
enum PoolCommand {
    /// Add numbers (E.164); waiting owners are served at once.
    Add {
        #[arg(required = true)]
        numbers: Vec<String>,
    },
    /// Add every number in a file, one a line (blank lines and # comments skipped).
    Import { file: PathBuf },
    /// Show numbers by status.
    Stats,
    /// Send a number no owner holds to quarantine.
    Release { number: String },
}

#[tokio::main]
async fn main() -> ExitCode {
    // Before the arguments and the configuration, so both see it; never overrides the environment.
    let env_file = dotenvy::dotenv();
    let cli = Cli::parse();
    match &env_file {
        Ok(path) => eprintln!("onboard: read {}", path.display()),
        Err(e) if e.not_found() => {}
        Err(e) => {
            eprintln!("onboard: .env: {e}");
            return ExitCode::from(2);
        }
    }
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("onboard: configuration: {e}");
            return ExitCode::from(2);
        }
    };
    // A replay prints its own report; its log lines would only bury it.
    let default_filter = match cli.command {
        Command::Replay { .. } | Command::Pool(_) | Command::Chat { .. } => "warn",
        _ => "info,sqlx=warn,tower_http=info",
    };
    init_tracing(config.log_format, default_filter);
    let database_url = config.database_url.clone();
    let result = match cli.command {
        Command::Serve => app::serve(config, shutdown_signal())
            .await
            .map_err(Into::into),
        Command::Migrate => migrate(&config).await,
        Command::Chat { phone, target } => chat(&config, &phone, target.as_deref()).await,
        Command::Replay {
            paths,
            update: true,
            ..
        } => match update(&config, &paths).await {
            Ok(true) => Ok(()),
            Ok(false) => return ExitCode::FAILURE,
            Err(e) => Err(e),
        },
        Command::Replay {
            paths,
            target: Some(target),
            ..
        } => match replay_live(&config, &target, &paths).await {
            Ok(true) => Ok(()),
            Ok(false) => return ExitCode::FAILURE,
            Err(e) => Err(e),
        },
        Command::Replay {
            paths,
            target: None,
            ..
        } => match replay(&config, &paths).await {
            Ok(true) => Ok(()),
            Ok(false) => return ExitCode::FAILURE,
            Err(e) => Err(e),
        },
        Command::Pool(command) => pool(&config, command).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // Whoever read our output went away (`onboard pool stats | head`): nothing more to say.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            match missing_database(&e, &database_url) {
                Some(hint) => eprintln!("onboard: {hint}"),
                None => eprintln!("onboard: {e:#}"),
            }
            ExitCode::FAILURE
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// For a PostgreSQL database that does not exist (SQLSTATE 3D000): one line saying so, with the
/// command that creates it.
fn missing_database(e: &anyhow::Error, url: &str) -> Option<String> {
    let missing = e.chain().any(|cause| {
        cause
            .downcast_ref::<sqlx::Error>()
            .and_then(|e| e.as_database_error())
            .is_some_and(|db| db.code().as_deref() == Some("3D000"))
    });
    if !missing {
        return None;
    }
    let url = reqwest::Url::parse(url).ok()?;
    let name = url.path().trim_start_matches('/');
    let mut command = String::from("createdb");
    if let Some(host) = url.host_str() {
        command.push_str(&format!(" -h {host}"));
    }
    if let Some(port) = url.port() {
        command.push_str(&format!(" -p {port}"));
    }
    if !url.username().is_empty() {
        command.push_str(&format!(" -U {}", url.username()));
    }
    Some(format!(
        "the database {name:?} named by DATABASE_URL does not exist; create it with: {command} {name}"
    ))
}

/// `onboard chat`: the owner's side of the conversation on stdin and stdout.
async fn chat(config: &Config, phone: &str, target: Option<&str>) -> anyhow::Result<()> {
    use std::io::IsTerminal;

    let owner = PhoneNumber::parse(phone).map_err(|e| anyhow::anyhow!("--phone {phone:?}: {e}"))?;
    let interactive = std::io::stdin().is_terminal();
    let mut out = std::io::stdout().lock();
    let input = onboard::chat::Input::stdin(std::io::stdin().lock());
    match target {
        Some(target) => {
            let remote = onboard::live::Remote::new(live_target(config, target)?);
            let mut backend = onboard::chat::Live::new(remote, owner.clone()).await?;
            if interactive {
                writeln!(
                    out,
                    "onboard chat: you are the owner of {owner}, texting the server at {target}.\n\
                     /help lists the commands, /quit leaves."
                )?;
            }
            onboard::chat::run(&mut backend, input, &mut out).await
        }
        None => {
            let flows = Arc::new(app::load_flows(config)?);
            let mut backend =
                onboard::chat::Local::new(flows, owner.clone(), config.stripe_payment_link.clone())
                    .await?;
            if interactive {
                writeln!(
                    out,
                    "onboard chat: you are the owner of {owner}, texting the onboarding number.\n\
                     In-process, on an in-memory database; /help lists the commands, /quit leaves."
                )?;
            }
            // The engine's futures are awaited here, one line at a time.
            onboard::chat::run(&mut backend, input, &mut out).await
        }
    }
}

async fn migrate(config: &Config) -> anyhow::Result<()> {
    Database::connect(&config.database_url, config.database_max_connections)
        .await?
        .migrate()
        .await?;
    writeln!(std::io::stdout(), "migrations applied")?;
    Ok(())
}

async fn replay(config: &Config, paths: &[PathBuf]) -> anyhow::Result<bool> {
    let flows = Arc::new(app::load_flows(config)?);
    Ok(onboard::replay::replay_all(paths, flows, &mut std::io::stdout().lock()).await?)
}

async fn update(config: &Config, paths: &[PathBuf]) -> anyhow::Result<bool> {
    let flows = Arc::new(app::load_flows(config)?);
    Ok(onboard::replay::update_all(paths, flows, &mut std::io::stdout().lock()).await?)
}

/// How to drive the server at `target`, from the environment the server reads too.
fn live_target(config: &Config, target: &str) -> anyhow::Result<onboard::live::Target> {
    let url = target.trim_end_matches('/').to_owned();
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        anyhow::bail!("--target {target:?} is not an http:// or https:// URL");
    }
    let admin_token = config.admin_token.clone().ok_or_else(|| {
        anyhow::anyhow!(
            "ADMIN_TOKEN is not set: the target's admin API is how state and texts are read"
        )
    })?;
    let verify_caller = config
        .verify_caller_number
        .clone()
        .or_else(|| config.onboarding_number.clone())
        .unwrap_or(PhoneNumber::parse(onboard::replay::FIXTURE_CALLER)?);
    Ok(onboard::live::Target {
        // Signatures are over the server's PUBLIC_URL; without one, the target is it.
        public_url: std::env::var("PUBLIC_URL")
            .ok()
            .filter(|u| !u.trim().is_empty())
            .map(|u| u.trim().trim_end_matches('/').to_owned())
            .unwrap_or_else(|| url.clone()),
        url,
        twilio_auth_token: config.twilio_auth_token.clone(),
        stripe_secret: config.stripe_webhook_secrets.first().cloned(),
        admin_token,
        payment_link: config.stripe_payment_link.clone(),
        verify_caller,
    })
}

async fn replay_live(config: &Config, target: &str, paths: &[PathBuf]) -> anyhow::Result<bool> {
    let remote = onboard::live::Remote::new(live_target(config, target)?);
    onboard::live::replay_all(&remote, paths, &mut std::io::stdout().lock()).await
}

async fn pool(config: &Config, command: PoolCommand) -> anyhow::Result<()> {
    let database = Database::connect(&config.database_url, config.database_max_connections).await?;
    database.migrate().await?;
    let flows = Arc::new(app::load_flows(config)?);
    match database {
        Database::Postgres(store) => {
            pool_on(app::engine(store, config, flows), config, command).await
        }
        Database::Sqlite(store) => {
            pool_on(app::engine(store, config, flows), config, command).await
        }
    }
}

async fn pool_on<S: Store>(
    engine: Engine<S>,
    config: &Config,
    command: PoolCommand,
) -> anyhow::Result<()> {
    let numbers = match &command {
        PoolCommand::Add { numbers } => Some(parse_or_report(
            numbers.iter().map(String::as_str),
            "argument",
        )?),
        PoolCommand::Import { file } => {
            let text = std::fs::read_to_string(file)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
            Some(parse_or_report(text.lines(), "line")?)
        }
        PoolCommand::Stats => None,
        PoolCommand::Release { number } => {
            let number =
                PhoneNumber::parse(number).map_err(|e| anyhow::anyhow!("{number:?}: {e}"))?;
            engine.release_number(&number).await?;
            writeln!(std::io::stdout(), "{number} quarantined")?;
            None
        }
    };
    if let Some(numbers) = numbers {
        let (added, served) = engine.add_numbers(&numbers).await?;
        writeln!(
            std::io::stdout(),
            "{added} added, {} already in the pool; {} waiting owner(s) given a number",
            numbers.len() as u64 - added,
            served.len()
        )?;
    }
    let stats = engine.store().pool_stats().await?;
    writeln!(
        std::io::stdout(),
        "{}",
        onboard::pool::format_stats(&stats, config.pool_low_water)
    )?;
    Ok(())
}

/// Every bad line (or argument: `unit`) named; nothing added unless the whole list is good.
fn parse_or_report<'a>(
    lines: impl IntoIterator<Item = &'a str>,
    unit: &str,
) -> anyhow::Result<Vec<PhoneNumber>> {
    onboard::pool::parse_numbers(lines).map_err(|bad| {
        for line in &bad {
            eprintln!("onboard: {}", line.describe(unit));
        }
        anyhow::anyhow!("{} bad {unit}(s): nothing was added", bad.len())
    })
}

fn init_tracing(format: LogFormat, default_filter: &str) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{Layer, fmt};

    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    // The filter is the log's alone: named events are counted for /metrics at every level.
    let log = match format {
        LogFormat::Json => fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
        LogFormat::Pretty => fmt::layer()
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
    };
    tracing_subscriber::registry()
        .with(log)
        .with(onboard::telemetry::EventCounter)
        .init();
}

/// Resolves on Ctrl-C or SIGTERM, so in-flight requests can finish.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!(event = "SHUTDOWN", "signal received, draining requests");
}
