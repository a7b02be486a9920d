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
    let script = "Hi\nPlumber in Leeds\nSmith & Sons Plumbing\nJo Smith\nSMS\nYES\n/pay\n2\nDONE\n/call\n/state\n/missed\n/later 3m\n/missed\n/voicemail 35\n/quit\n";
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
    // Live: a customer's call is asked for a message, and with none left the owner is told.
    assert!(
        out.contains("caller hears: Thanks for calling Smith & Sons Plumbing. Sorry we missed you. Please leave a message"),
        "{out}"
    );
    assert!(
        out.contains("bot (text): Missed call to Smith & Sons Plumbing from"),
        "{out}"
    );
    assert!(out.contains("No voicemail left."), "{out}");
    assert!(out.contains("Voicemail (35s): https://"), "{out}");
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

/// `onboard chat` on a pseudo-terminal, as a person at a keyboard has it: keys go in as a
/// terminal sends them, and what the program draws comes back.
mod terminal {
    use std::fs::File;
    use std::io::{Read, Write};
    use std::os::fd::{FromRawFd, OwnedFd};
    use std::process::{Child, Command, Stdio};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    const PATIENCE: Duration = Duration::from_secs(30);

    pub struct Session {
        child: Child,
        keyboard: File,
        screen: Arc<Mutex<Vec<u8>>>,
        /// How much of the screen output the test has looked at.
        seen: usize,
    }

    impl Session {
        pub fn start() -> Session {
            let (mut master, mut slave) = (-1, -1);
            let size = libc::winsize {
                ws_row: 24,
                ws_col: 100,
                ws_xpixel: 0,
                ws_ypixel: 0,
            };
            // SAFETY: two valid out-pointers; no name wanted; default modes; a valid winsize.
            let opened = unsafe {
                libc::openpty(
                    &mut master,
                    &mut slave,
                    std::ptr::null_mut(),
                    std::ptr::null(),
                    &size,
                )
            };
            assert_eq!(opened, 0, "openpty: {}", std::io::Error::last_os_error());
            // SAFETY: openpty returned two open descriptors that nothing else owns.
            let (master, slave) =
                unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
            let child = Command::new(env!("CARGO_BIN_EXE_onboard"))
                .arg("chat")
                .current_dir(std::env::temp_dir())
                .env_remove("DATABASE_URL")
                .env_remove("FLOWS_DIR")
                .env_remove("STRIPE_PAYMENT_LINK")
                .env_remove("RUST_LOG")
                .stdin(Stdio::from(slave.try_clone().unwrap()))
                .stdout(Stdio::from(slave.try_clone().unwrap()))
                .stderr(Stdio::null())
                .spawn()
                .expect("the onboard binary starts");
            // Only the child holds the terminal now, so the screen ends when the child does.
            drop(slave);

            let keyboard = File::from(master.try_clone().unwrap());
            let screen = Arc::new(Mutex::new(Vec::new()));
            let mut reader = File::from(master);
            let sink = screen.clone();
            std::thread::spawn(move || {
                let mut buffer = [0u8; 4096];
                // Reading fails (EIO) once the child has closed the terminal.
                while let Ok(read @ 1..) = reader.read(&mut buffer) {
                    sink.lock().unwrap().extend_from_slice(&buffer[..read]);
                }
            });
            Session {
                child,
                keyboard,
                screen,
                seen: 0,
            }
        }

        pub fn screen(&self) -> String {
            String::from_utf8_lossy(&self.screen.lock().unwrap()).into_owned()
        }

        /// Waits until `text` is on the screen after what was already seen, and moves past it.
        pub fn wait_for(&mut self, text: &str) {
            let started = Instant::now();
            loop {
                let screen = self.screen();
                if let Some(at) = screen.get(self.seen..).and_then(|rest| rest.find(text)) {
                    self.seen += at + text.len();
                    return;
                }
                assert!(
                    started.elapsed() < PATIENCE,
                    "{text:?} did not appear on the screen:\n{screen}"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }

        /// Waits for the prompt (drawn once the terminal is in raw mode), then types `keys`.
        pub fn type_at_prompt(&mut self, keys: &[u8]) {
            self.wait_for("you> ");
            self.keyboard.write_all(keys).unwrap();
        }

        /// Waits for the program to end; its exit status and the whole screen.
        pub fn finish(mut self) -> (std::process::ExitStatus, String) {
            let started = Instant::now();
            let status = loop {
                if let Some(status) = self.child.try_wait().unwrap() {
                    break status;
                }
                if started.elapsed() > PATIENCE {
                    let _ = self.child.kill();
                    panic!("onboard chat did not end:\n{}", self.screen());
                }
                std::thread::sleep(Duration::from_millis(20));
            };
            (status, self.screen())
        }
    }
}

const LEFT: &str = "\x1b[D";
const UP: &str = "\x1b[A";
const HOME: &str = "\x1b[H";
const END: &str = "\x1b[F";
const BACKSPACE: &str = "\x7f";
const DELETE: &str = "\x1b[3~";
const CTRL_A: &str = "\x01";
const CTRL_C: &str = "\x03";
const CTRL_D: &str = "\x04";
const CTRL_E: &str = "\x05";
const CTRL_K: &str = "\x0b";
const CTRL_U: &str = "\x15";
const CTRL_W: &str = "\x17";

#[test]
fn in_a_terminal_lines_are_edited_before_the_bot_gets_them() {
    let mut chat = terminal::Session::start();
    chat.wait_for("onboard chat: you are the owner of");

    // "Hxi", back one, Backspace: the bot is sent "Hi".
    chat.type_at_prompt(format!("Hxi{LEFT}{BACKSPACE}\r").as_bytes());
    chat.wait_for("bot: Hi, welcome to Onboard!");

    // Typed from the middle out: Ctrl-K drops " xyz", Home puts the trade in front, and a
    // stray Z typed after Ctrl-A goes again with Delete.
    chat.type_at_prompt(
        format!(
            "in Leeds xyz{LEFT}{LEFT}{LEFT}{LEFT}{CTRL_K}{HOME}Plumber {CTRL_A}Z{LEFT}{DELETE}{CTRL_E}{END}\r"
        )
        .as_bytes(),
    );
    chat.wait_for("bot: Great - Plumber in Leeds. What's the name of your business?");

    // Ctrl-U drops what was typed before the cursor; Ctrl-W the last word.
    chat.type_at_prompt(
        format!("junk{CTRL_U}Smith & Sons Plumbing oops{CTRL_W}{BACKSPACE}\r").as_bytes(),
    );
    chat.wait_for("bot: Thanks - Smith & Sons Plumbing it is.");

    // Ctrl-C clears the line, and the chat goes on.
    chat.type_at_prompt(format!("nonsense{CTRL_C}").as_bytes());
    chat.wait_for("line cleared");

    // Up brings back this session's lines: /state again, then the business name, cut down to
    // "Smith " with Ctrl-W and put behind "Jo ".
    chat.type_at_prompt(b"/state\r");
    chat.wait_for("-- state");
    chat.type_at_prompt(format!("{UP}\r").as_bytes());
    chat.wait_for("-- state");
    chat.type_at_prompt(
        format!("{UP}{UP}{CTRL_W}{CTRL_W}{CTRL_W}{CTRL_A}Jo {CTRL_E}{BACKSPACE}\r").as_bytes(),
    );
    chat.wait_for("bot: Nice to meet you, Jo Smith.");

    // Ctrl-D on an empty line leaves.
    chat.type_at_prompt(CTRL_D.as_bytes());
    let (status, screen) = chat.finish();
    assert!(status.success(), "{status}\n{screen}");
}

#[test]
fn in_a_terminal_ctrl_c_twice_leaves() {
    let mut chat = terminal::Session::start();
    chat.type_at_prompt(format!("Hi{CTRL_C}").as_bytes());
    chat.wait_for("line cleared");
    chat.type_at_prompt(CTRL_C.as_bytes());
    let (status, screen) = chat.finish();
    assert!(status.success(), "{status}\n{screen}");
    assert!(!screen.contains("bot:"), "{screen}");
}
