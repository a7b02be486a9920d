//! The schema's migrations, compiled into the binary and handed to sqlx's migrator at run time.
//!
//! Embedded with `include_str!` rather than `sqlx::migrate!`: the macro needs sqlx's `macros`
//! feature, whose proc-macro crate builds both database drivers a second time. The checksums are
//! sqlx's own (SHA-384 of the file), so a database migrated by either way accepts the other. A
//! test checks that this list and the folders hold the same files.

use sqlx::SqlStr;
use sqlx::migrate::{Migration, MigrationType, Migrator};

/// The file name and text of each migration of one back end, oldest first.
pub(super) type Embedded = &'static [(&'static str, &'static str)];

macro_rules! embed {
    ($dir:literal: $($file:literal),* $(,)?) => {
        &[$(($file, include_str!(concat!("../../migrations/", $dir, "/", $file)))),*]
    };
}

pub(super) const POSTGRES: Embedded = embed!("postgres":
    "0001_init.sql",
    "0002_payments_and_reconcile.sql",
    "0003_voice.sql",
    "0004_pool_purchases.sql",
    "0005_admin_reads.sql",
    "0006_uncertain_purchases.sql",
    "0007_outbox_hardening.sql",
    "0014_reminders.sql",
    "0015_owners.sql",
    "0016_console.sql",
    "0018_pool_levels.sql",
    "0019_after_onboarding.sql",
    "0020_costs.sql",
    "0021_ops_alert_emails.sql",
);

pub(super) const SQLITE: Embedded = embed!("sqlite":
    "0001_init.sql",
    "0002_payments_and_reconcile.sql",
    "0003_voice.sql",
    "0004_pool_purchases.sql",
    "0005_admin_reads.sql",
    "0006_uncertain_purchases.sql",
    "0007_outbox_hardening.sql",
    "0014_reminders.sql",
    "0015_owners.sql",
    "0016_console.sql",
    "0018_pool_levels.sql",
    "0019_after_onboarding.sql",
    "0020_costs.sql",
    "0021_ops_alert_emails.sql",
);

/// A migrator for one back end's files, read as `sqlx::migrate!` reads a folder:
/// `<version>_<description>.sql`, run in a transaction unless it starts `-- no-transaction`.
pub(super) fn migrator(files: Embedded) -> Migrator {
    Migrator::with_migrations(
        files
            .iter()
            .map(|(name, sql)| {
                let (version, rest) = name
                    .split_once('_')
                    .unwrap_or_else(|| panic!("migration {name}: no `<version>_` prefix"));
                let version = version
                    .parse()
                    .unwrap_or_else(|_| panic!("migration {name}: version is not a number"));
                Migration::new(
                    version,
                    rest.trim_end_matches(".sql").replace('_', " ").into(),
                    MigrationType::Simple,
                    SqlStr::from_static(sql),
                    sql.starts_with("-- no-transaction"),
                )
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder(dir: &str) -> Vec<String> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("migrations")
            .join(dir);
        let mut names: Vec<String> = std::fs::read_dir(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.ends_with(".sql"))
            .collect();
        names.sort();
        names
    }

    fn embedded(files: Embedded) -> Vec<String> {
        files.iter().map(|(name, _)| (*name).to_owned()).collect()
    }

    #[test]
    fn every_migration_in_the_folders_is_embedded() {
        assert_eq!(
            embedded(POSTGRES),
            folder("postgres"),
            "migrations/postgres"
        );
        assert_eq!(embedded(SQLITE), folder("sqlite"), "migrations/sqlite");
    }

    #[test]
    fn versions_ascend_and_both_back_ends_have_the_same() {
        let versions = |files| -> Vec<i64> { migrator(files).iter().map(|m| m.version).collect() };
        let postgres = versions(POSTGRES);
        assert!(postgres.windows(2).all(|w| w[0] < w[1]), "{postgres:?}");
        assert_eq!(postgres, versions(SQLITE));
    }
}
