//! What the PostgreSQL benchmarks share: when to run, and the runtime around them.

use std::future::Future;
use std::process::ExitCode;

/// Runs `bench` with `DATABASE_URL` on a multi-threaded runtime, as `cargo bench --bench NAME`.
///
/// nextest and `cargo test --all-targets` also run bench targets: without `--bench` (or when asked
/// to `--list` tests) it does nothing. Without `DATABASE_URL` it says how to run it and exits 0; it
/// exits non-zero only on an error, never on a missed target.
pub fn main_with_database<F, Fut>(name: &str, bench: F) -> ExitCode
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        return ExitCode::SUCCESS;
    }
    if !args.iter().any(|a| a == "--bench") {
        println!("{name} bench: not run outside `cargo bench --bench {name}`");
        return ExitCode::SUCCESS;
    }
    let url = match std::env::var("DATABASE_URL") {
        Ok(url) if !url.trim().is_empty() => url,
        _ => {
            println!(
                "{name} bench: skipped, DATABASE_URL is not set; run it against a PostgreSQL \
                 server where it may CREATE DATABASE: \
                 DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres cargo bench --bench {name}"
            );
            return ExitCode::SUCCESS;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("{name} bench: error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(bench(url)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name} bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
