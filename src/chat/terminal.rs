//! The terminal side of line editing: raw mode while a line is typed, keys read from stdin,
//! the line drawn on stdout. What the keys do is decided in `line.rs`.
//!
//! The terminal is raw only while a line is read, and put back as it was before the line is
//! handed on (and when anything unwinds), so the bot's output prints as usual and Ctrl-C while
//! the bot works stops the program as it would anywhere else.

use std::io::{self, Write};
use std::os::fd::RawFd;

use super::line::{Decoded, Editor, Outcome, decode, render};

/// How long the rest of an escape sequence may take to arrive before a lone Esc is dropped.
const ESCAPE_PATIENCE_MS: i32 = 50;

/// The prompt before the owner's lines.
pub const PROMPT: &str = "you> ";

/// Reads lines from a terminal on stdin, with line editing and this session's history.
pub struct Terminal {
    editor: Editor,
    /// Bytes read but not yet decoded: the rest of a paste, or a key cut short.
    pending: Vec<u8>,
}

impl Terminal {
    /// The terminal on stdin, if stdin is one and its modes can be read.
    pub fn on_stdin() -> Option<Terminal> {
        modes(libc::STDIN_FILENO).ok()?;
        Some(Terminal {
            editor: Editor::new(),
            pending: Vec::new(),
        })
    }

    /// The next line, or `None` when the owner leaves (Ctrl-D on an empty line, Ctrl-C twice,
    /// or the terminal closing).
    pub fn read_line(&mut self, out: &mut dyn Write) -> io::Result<Option<String>> {
        let _raw = RawMode::enter(libc::STDIN_FILENO)?;
        self.draw(out)?;
        loop {
            match decode(&self.pending) {
                Decoded::Key(key, len) => {
                    self.pending.drain(..len);
                    match self.editor.apply(key) {
                        Outcome::Editing => self.draw(out)?,
                        Outcome::Submit(line) => {
                            write!(out, "\r\n")?;
                            out.flush()?;
                            return Ok(Some(line));
                        }
                        Outcome::Cleared => {
                            write!(
                                out,
                                "^C\r\n-- line cleared; Ctrl-C again or Ctrl-D leaves\r\n"
                            )?;
                            self.draw(out)?;
                        }
                        Outcome::Quit => {
                            write!(out, "\r\n")?;
                            out.flush()?;
                            return Ok(None);
                        }
                    }
                }
                Decoded::Incomplete => {
                    if !self.pending.is_empty() && !input_within(ESCAPE_PATIENCE_MS)? {
                        // A lone Esc, or a key cut short that will not be finished.
                        self.pending.clear();
                        continue;
                    }
                    let mut buffer = [0u8; 256];
                    let read = read_stdin(&mut buffer)?;
                    if read == 0 {
                        write!(out, "\r\n")?;
                        out.flush()?;
                        return Ok(None);
                    }
                    self.pending.extend_from_slice(&buffer[..read]);
                }
            }
        }
    }

    fn draw(&self, out: &mut dyn Write) -> io::Result<()> {
        out.write_all(render(PROMPT, &self.editor, columns()).as_bytes())?;
        out.flush()
    }
}

/// Raw mode on a terminal for as long as this lives: no echo, no line buffering, no signals from
/// keys, Enter as `\r`. Output is processed as usual, so `\n` still starts a new line.
struct RawMode {
    fd: RawFd,
    saved: libc::termios,
}

impl RawMode {
    fn enter(fd: RawFd) -> io::Result<RawMode> {
        let saved = modes(fd)?;
        let mut raw = saved;
        raw.c_iflag &= !(libc::ICRNL | libc::INLCR | libc::IXON | libc::BRKINT | libc::ISTRIP);
        raw.c_lflag &= !(libc::ECHO | libc::ICANON | libc::ISIG | libc::IEXTEN);
        raw.c_cc[libc::VMIN] = 1;
        raw.c_cc[libc::VTIME] = 0;
        // TCSADRAIN: what is already typed stays to be read (TCSAFLUSH would drop it).
        // SAFETY: a valid pointer to a termios built from the terminal's own.
        if unsafe { libc::tcsetattr(fd, libc::TCSADRAIN, &raw) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(RawMode { fd, saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // SAFETY: the termios read from this descriptor when raw mode began.
        unsafe { libc::tcsetattr(self.fd, libc::TCSADRAIN, &self.saved) };
    }
}

/// The modes of the terminal on `fd` (an error when `fd` is not a terminal).
fn modes(fd: RawFd) -> io::Result<libc::termios> {
    // SAFETY: termios is plain data that tcgetattr fills in, and only a filled one is returned.
    let mut modes: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a termios.
    if unsafe { libc::tcgetattr(fd, &mut modes) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(modes)
}

/// Reads what stdin has (at least one byte, or 0 at its end).
fn read_stdin(buffer: &mut [u8]) -> io::Result<usize> {
    loop {
        // SAFETY: reads at most buffer.len() bytes into the buffer.
        let read =
            unsafe { libc::read(libc::STDIN_FILENO, buffer.as_mut_ptr().cast(), buffer.len()) };
        if read >= 0 {
            return Ok(read as usize);
        }
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
}

/// Whether stdin has something to read within `millis`.
fn input_within(millis: i32) -> io::Result<bool> {
    let mut poll = libc::pollfd {
        fd: libc::STDIN_FILENO,
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        // SAFETY: one valid pollfd.
        let ready = unsafe { libc::poll(&mut poll, 1, millis) };
        if ready >= 0 {
            return Ok(ready > 0);
        }
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
}

/// The terminal's width in columns (80 when it does not say).
fn columns() -> usize {
    // SAFETY: winsize is plain data that the ioctl fills in.
    let mut size: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ writes one winsize through a valid pointer.
    let ok = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut size) } == 0;
    if ok && size.ws_col > 0 {
        usize::from(size.ws_col)
    } else {
        80
    }
}
