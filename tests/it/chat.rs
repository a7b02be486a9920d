//! `onboard chat` driven as a tester would drive it: a script on stdin, the transcript on stdout.

use std::io::Write;
use std::process::{Command, Stdio};

/// Runs `onboard chat` in an empty folder with `script` as its input; returns stdout and the folder.
fn chat(args: &[&str], script: &str) -> (String, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!(
        "onboard-chat-test-{}-{}",
        std::process::id(),
        script.len()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_onboard"))
        .arg("chat")
        .args(args)
        .current_dir(&dir)
        // Nothing from the caller's environment may decide the outcome.
        .env_remove("DATABASE_URL")
        .env_remove("FLOWS_DIR")
        .env_remove("STRIPE_PAYMENT_LINK")
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the onboard binary starts");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(
        output.status.success(),
        "onboard chat failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    (stdout, dir)
}

#[test]
fn a_whole_journey_reaches_complete_with_pay_and_call() {
    let script = "Hi\nPlumber in Leeds\nSmith & Sons Plumbing\nJo Smith\nSMS\nYES\n/pay\n2\nDONE\n/call\n/state\n/quit\n";
    let (out, dir) = chat(&[], script);

    assert!(out.contains("bot: Hi, welcome to Onboard!"), "{out}");
    // The payment link is the reply to YES; the number comes later, as a text of its own.
    assert!(out.contains("client_reference_id="), "{out}");
    assert!(
        out.contains("-- Stripe checkout.session.completed: processed"),
        "{out}"
    );
    assert!(
        out.contains("bot (text): Your new business number is 07700 900901"),
        "{out}"
    );
    assert!(out.contains("**004*+447700900901#"), "{out}");
    assert!(out.contains("bot (calls you):"), "{out}");
    assert!(out.contains("caller hears: Forwarding works."), "{out}");
    assert!(out.contains("bot (text): It worked!"), "{out}");
    assert!(
        out.contains("-- state COMPLETE, gate none, paid yes, number +447700900901"),
        "{out}"
    );
    // In-process on an in-memory database: nothing written where it ran.
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn the_phone_decides_the_country_and_commands_for_a_phone_are_explained() {
    let script = "/pay\n/later soon\nHi\nElectrician in Austin, Texas\nSparky LLC\nSam\nSMS\nYES\n/pay\n/missed\n";
    let (out, _dir) = chat(&["--phone", "+15125550123"], script);

    // Before the first text there is no owner to pay for; the chat says so and goes on.
    assert!(out.contains("-- no owner yet: text the bot first"), "{out}");
    assert!(
        out.contains("-- \"soon\" is not an amount of time"),
        "{out}"
    );
    // A US owner is given a US number from the pool the chat adds itself.
    assert!(
        out.contains("bot (text): Your new business number is (202) 555-010"),
        "{out}"
    );
    // A customer calling the new number before forwarding is proven still reaches the bot's line.
    assert!(out.contains("caller hears:"), "{out}");
}

#[test]
fn restart_starts_a_fresh_owner_and_end_of_input_ends_the_chat() {
    let (out, _dir) = chat(&[], "Hi\n/restart\n/state\nHi\n");
    assert!(out.contains("-- started again"), "{out}");
    assert!(out.contains("-- no owner yet: text the bot first"), "{out}");
    assert_eq!(
        out.matches("bot: Hi, welcome to Onboard!").count(),
        2,
        "{out}"
    );
}
