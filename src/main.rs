//! The `onboard` command line: serve, migrate, replay.

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

#[derive(Parser)]
#[command(version, about = "Onboards small-business owners over SMS and voice")]
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
    /// Replay fixture conversations in-process and report each.
    Replay {
        /// Fixture files, or folders of them.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
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
    let cli = Cli::parse();
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("onboard: configuration: {e}");
            return ExitCode::from(2);
        }
    };
    // A replay prints its own report; its log lines would only bury it.
    let default_filter = match cli.command {
        Command::Replay { .. } | Command::Pool(_) => "warn",
        _ => "info,sqlx=warn,tower_http=info",
    };
    init_tracing(config.log_format, default_filter);
    let result = match cli.command {
        Command::Serve => app::serve(config, shutdown_signal())
            .await
            .map_err(Into::into),
        Command::Migrate => migrate(&config).await,
        Command::Replay { paths } => match replay(&config, &paths).await {
            Ok(true) => Ok(()),
            Ok(false) => return ExitCode::FAILURE,
            Err(e) => Err(e),
        },
        Command::Pool(command) => pool(&config, command).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("onboard: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn migrate(config: &Config) -> anyhow::Result<()> {
    Database::connect(&config.database_url)
        .await?
        .migrate()
        .await?;
    println!("migrations applied");
    Ok(())
}

async fn replay(config: &Config, paths: &[PathBuf]) -> anyhow::Result<bool> {
    let flows = Arc::new(app::load_flows(config)?);
    Ok(onboard::replay::replay_all(paths, flows).await?)
}

async fn pool(config: &Config, command: PoolCommand) -> anyhow::Result<()> {
    let database = Database::connect(&config.database_url).await?;
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
        PoolCommand::Add { numbers } => Some(parse_or_report(numbers.iter().map(String::as_str))?),
        PoolCommand::Import { file } => {
            let text = std::fs::read_to_string(file)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
            Some(parse_or_report(text.lines())?)
        }
        PoolCommand::Stats => None,
        PoolCommand::Release { number } => {
            let number =
                PhoneNumber::parse(number).map_err(|e| anyhow::anyhow!("{number:?}: {e}"))?;
            engine.release_number(&number).await?;
            println!("{} quarantined", number);
            None
        }
    };
    if let Some(numbers) = numbers {
        let (added, served) = engine.add_numbers(&numbers).await?;
        println!(
            "{added} added, {} already in the pool; {} waiting owner(s) given a number",
            numbers.len() as u64 - added,
            served.len()
        );
    }
    let stats = engine.store().pool_stats().await?;
    println!(
        "{}",
        onboard::pool::format_stats(&stats, config.pool_low_water)
    );
    Ok(())
}

/// Every bad line named; nothing added unless the whole list is good.
fn parse_or_report<'a>(
    lines: impl IntoIterator<Item = &'a str>,
) -> anyhow::Result<Vec<PhoneNumber>> {
    onboard::pool::parse_numbers(lines).map_err(|bad| {
        for line in &bad {
            eprintln!("onboard: {line}");
        }
        anyhow::anyhow!("{} bad line(s): nothing was added", bad.len())
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
