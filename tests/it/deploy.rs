//! The systemd unit in `deploy/` is one systemd accepts as written, and keeps its hardening.

use std::path::{Path, PathBuf};
use std::process::Command;

const UNIT: &str = include_str!("../../deploy/onboard.service");

/// Runs `systemd-analyze verify` on `unit` (its `ExecStart` pointed at the binary under test, as
/// verify checks that it exists); answers everything it printed.
fn verify(name: &str, unit: &str) -> String {
    let dir = std::env::temp_dir().join(format!("onboard-unit-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path: PathBuf = dir.join(name);
    let unit = unit.replace("/usr/local/bin/onboard", env!("CARGO_BIN_EXE_onboard"));
    std::fs::write(&path, unit).unwrap();
    let output = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "systemd-analyze cannot run ({e}): install systemd (apt-get install systemd), \
                 as scripts/test does"
            )
        });
    std::fs::remove_dir_all(&dir).unwrap();
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{printed}");
    printed
}

#[test]
fn systemd_accepts_the_unit_without_a_warning() {
    // verify exits 0 on unknown keys and bad values: anything it prints is a finding.
    let printed = verify("onboard.service", UNIT);
    assert_eq!(printed.trim(), "", "systemd-analyze verify: {printed}");
}

#[test]
fn the_check_catches_a_broken_unit() {
    let broken = UNIT.replace("ProtectSystem=strict", "ProtectSystem=sometimes");
    let printed = verify("broken.service", &broken);
    assert!(
        printed.contains("ProtectSystem") || printed.contains("protect system"),
        "{printed}"
    );
}

#[test]
fn the_unit_runs_hardened_as_its_own_user_and_restarts_on_failure() {
    let lines: Vec<&str> = UNIT.lines().map(str::trim).collect();
    for needed in [
        "User=onboard",
        "EnvironmentFile=/etc/onboard/onboard.env",
        "ProtectSystem=strict",
        "Restart=on-failure",
        "NoNewPrivileges=yes",
        "ExecStart=/usr/local/bin/onboard serve",
    ] {
        assert!(
            lines.contains(&needed),
            "deploy/onboard.service lacks {needed}"
        );
    }
    assert!(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("deploy/onboard.service")
            .is_file()
    );
}
