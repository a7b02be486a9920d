//! The `onboard` command line: serve, migrate, replay.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use onboard::app::{self, Database};
use onboard::config::{Config, LogFormat};
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
        Command::Replay { .. } => "warn",
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

fn init_tracing(format: LogFormat, default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Pretty => builder.init(),
    }
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
