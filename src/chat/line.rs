//! Line editing for `onboard chat` in a terminal, without the terminal: the bytes a terminal
//! sends decoded into keys ([`decode`]), keys applied to the line being typed ([`Editor`]), and the
//! line drawn back ([`render`]). All pure, so every key is tested without a terminal;
//! `terminal.rs` does the reading and writing.

/// A key as the editor understands it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    Char(char),
    Enter,
    Backspace,
    /// The Delete key: the character under the cursor.
    Delete,
    Left,
    Right,
    /// Home or Ctrl-A.
    Home,
    /// End or Ctrl-E.
    End,
    /// Up arrow or Ctrl-P: the previous line of this session.
    Up,
    /// Down arrow or Ctrl-N.
    Down,
    /// Ctrl-Left, Alt-Left or Alt-B.
    WordLeft,
    /// Ctrl-Right, Alt-Right or Alt-F.
    WordRight,
    /// Ctrl-U: everything before the cursor.
    KillToStart,
    /// Ctrl-K: everything from the cursor on.
    KillToEnd,
    /// Ctrl-W or Alt-Backspace: the word before the cursor.
    KillWordBefore,
    /// Ctrl-C.
    Interrupt,
    /// Ctrl-D: deletes under the cursor, or leaves on an empty line.
    EndOfInput,
    /// Anything else (Tab, function keys, unknown escape sequences): nothing happens.
    Ignored,
}

/// What [`decode`] found at the start of the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded {
    /// A key and how many bytes it took.
    Key(Key, usize),
    /// Only the start of a key (an escape sequence or a UTF-8 character cut short): wait for
    /// more bytes. A lone Esc stays incomplete; the reader drops it when nothing follows soon.
    Incomplete,
}

const ESC: u8 = 0x1b;

/// Decodes the first key in `bytes` (raw mode: no echo, no signals, Enter sends `\r`).
pub fn decode(bytes: &[u8]) -> Decoded {
    let Some(&first) = bytes.first() else {
        return Decoded::Incomplete;
    };
    let key = |key| Decoded::Key(key, 1);
    match first {
        ESC => decode_escape(bytes),
        // A pasted Windows line ending is one Enter, not an Enter and an empty line.
        b'\r' if bytes.get(1) == Some(&b'\n') => Decoded::Key(Key::Enter, 2),
        b'\r' | b'\n' => key(Key::Enter),
        0x01 => key(Key::Home),
        0x02 => key(Key::Left),
        0x03 => key(Key::Interrupt),
        0x04 => key(Key::EndOfInput),
        0x05 => key(Key::End),
        0x06 => key(Key::Right),
        0x08 | 0x7f => key(Key::Backspace),
        0x0b => key(Key::KillToEnd),
        0x0e => key(Key::Down),
        0x10 => key(Key::Up),
        0x15 => key(Key::KillToStart),
        0x17 => key(Key::KillWordBefore),
        0x00..=0x1f => key(Key::Ignored),
        0x20..=0x7e => key(Key::Char(first as char)),
        _ => decode_utf8(bytes),
    }
}

/// A character of two to four bytes.
fn decode_utf8(bytes: &[u8]) -> Decoded {
    let len = match bytes[0] {
        0xc2..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf4 => 4,
        // A continuation byte or a byte UTF-8 never uses: skipped.
        _ => return Decoded::Key(Key::Ignored, 1),
    };
    if bytes.len() < len {
        // Only a valid start is worth waiting for.
        return match std::str::from_utf8(bytes) {
            Err(e) if e.error_len().is_some() => Decoded::Key(Key::Ignored, 1),
            _ => Decoded::Incomplete,
        };
    }
    match std::str::from_utf8(&bytes[..len]) {
        Ok(text) => Decoded::Key(text.chars().next().map_or(Key::Ignored, Key::Char), len),
        Err(_) => Decoded::Key(Key::Ignored, 1),
    }
}

/// `ESC [ ...` (CSI), `ESC O x` (keypad mode) and `ESC x` (Alt-x).
fn decode_escape(bytes: &[u8]) -> Decoded {
    match bytes.get(1) {
        None => Decoded::Incomplete,
        Some(b'[') => decode_csi(bytes),
        Some(b'O') => match bytes.get(2) {
            None => Decoded::Incomplete,
            Some(&last) => Decoded::Key(
                match last {
                    b'A' => Key::Up,
                    b'B' => Key::Down,
                    b'C' => Key::Right,
                    b'D' => Key::Left,
                    b'H' => Key::Home,
                    b'F' => Key::End,
                    _ => Key::Ignored,
                },
                3,
            ),
        },
        Some(b'b') => Decoded::Key(Key::WordLeft, 2),
        Some(b'f') => Decoded::Key(Key::WordRight, 2),
        Some(0x7f | 0x08) => Decoded::Key(Key::KillWordBefore, 2),
        // Esc then Esc: the first one alone.
        Some(&ESC) => Decoded::Key(Key::Ignored, 1),
        Some(_) => Decoded::Key(Key::Ignored, 2),
    }
}

/// `ESC [`, parameter bytes, intermediate bytes, one final byte (ECMA-48).
fn decode_csi(bytes: &[u8]) -> Decoded {
    let body = &bytes[2..];
    let Some(at) = body.iter().position(|b| !(0x20..=0x3f).contains(b)) else {
        return Decoded::Incomplete;
    };
    let last = body[at];
    if !(0x40..=0x7e).contains(&last) {
        // Not a sequence after all: drop the `ESC [` and read on from there.
        return Decoded::Key(Key::Ignored, 2);
    }
    let params = &body[..at];
    // Ctrl (5), Alt (3) or Meta (9) with an arrow: `ESC [ 1 ; 5 D`.
    let modified = matches!(params, b"1;5" | b"1;3" | b"1;9" | b"5" | b"3");
    let key = match (last, params) {
        (b'A', _) => Key::Up,
        (b'B', _) => Key::Down,
        (b'C', _) if modified => Key::WordRight,
        (b'D', _) if modified => Key::WordLeft,
        (b'C', _) => Key::Right,
        (b'D', _) => Key::Left,
        (b'H', _) => Key::Home,
        (b'F', _) => Key::End,
        (b'~', b"1" | b"7") => Key::Home,
        (b'~', b"4" | b"8") => Key::End,
        (b'~', b"3") => Key::Delete,
        _ => Key::Ignored,
    };
    Decoded::Key(key, 2 + at + 1)
}

/// What a key did to the line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Still typing: draw the line again.
    Editing,
    /// Enter: the line, now in the history.
    Submit(String),
    /// Ctrl-C: the line was cleared; a second Ctrl-C in a row leaves.
    Cleared,
    /// A second Ctrl-C, or Ctrl-D on an empty line.
    Quit,
}

/// The line being typed, the cursor in it, and this session's history.
#[derive(Debug, Default)]
pub struct Editor {
    line: Vec<char>,
    /// Index into `line`, from 0 to `line.len()`.
    cursor: usize,
    /// Submitted lines, oldest first; a line is not stored twice in a row.
    history: Vec<String>,
    /// The history entry shown, while going through it with Up and Down.
    browsing: Option<usize>,
    /// The line that was being typed when Up was first pressed, given back by Down.
    draft: Vec<char>,
    /// The last key was Ctrl-C.
    interrupted: bool,
}

impl Editor {
    pub fn new() -> Editor {
        Editor::default()
    }

    /// The line as typed so far.
    pub fn line(&self) -> String {
        self.line.iter().collect()
    }

    /// Applies one key.
    pub fn apply(&mut self, key: Key) -> Outcome {
        let interrupted = std::mem::take(&mut self.interrupted);
        match key {
            Key::Char(c) => {
                self.line.insert(self.cursor, c);
                self.cursor += 1;
            }
            Key::Enter => {
                let line = self.line();
                if !line.is_empty() && self.history.last() != Some(&line) {
                    self.history.push(line.clone());
                }
                self.start_over();
                return Outcome::Submit(line);
            }
            Key::Backspace => {
                if self.cursor > 0 {
                    self.cursor -= 1;
                    self.line.remove(self.cursor);
                }
            }
            Key::Delete => self.delete_under_cursor(),
            Key::EndOfInput if self.line.is_empty() => return Outcome::Quit,
            Key::EndOfInput => self.delete_under_cursor(),
            Key::Left => self.cursor = self.cursor.saturating_sub(1),
            Key::Right => self.cursor = (self.cursor + 1).min(self.line.len()),
            Key::Home => self.cursor = 0,
            Key::End => self.cursor = self.line.len(),
            Key::WordLeft => self.cursor = self.word_start_before(),
            Key::WordRight => self.cursor = self.word_end_after(),
            Key::KillToStart => {
                self.line.drain(..self.cursor);
                self.cursor = 0;
            }
            Key::KillToEnd => self.line.truncate(self.cursor),
            Key::KillWordBefore => {
                let start = self.word_start_before();
                self.line.drain(start..self.cursor);
                self.cursor = start;
            }
            Key::Up => self.go_back_in_history(),
            Key::Down => self.go_forward_in_history(),
            Key::Interrupt if interrupted => return Outcome::Quit,
            Key::Interrupt => {
                self.start_over();
                self.interrupted = true;
                return Outcome::Cleared;
            }
            Key::Ignored => {}
        }
        Outcome::Editing
    }

    fn start_over(&mut self) {
        self.line.clear();
        self.cursor = 0;
        self.browsing = None;
        self.draft.clear();
    }

    fn delete_under_cursor(&mut self) {
        if self.cursor < self.line.len() {
            self.line.remove(self.cursor);
        }
    }

    /// The start of the word before the cursor (spaces right before the cursor are skipped).
    fn word_start_before(&self) -> usize {
        let mut at = self.cursor;
        while at > 0 && self.line[at - 1].is_whitespace() {
            at -= 1;
        }
        while at > 0 && !self.line[at - 1].is_whitespace() {
            at -= 1;
        }
        at
    }

    /// The end of the word after the cursor.
    fn word_end_after(&self) -> usize {
        let mut at = self.cursor;
        while at < self.line.len() && self.line[at].is_whitespace() {
            at += 1;
        }
        while at < self.line.len() && !self.line[at].is_whitespace() {
            at += 1;
        }
        at
    }

    fn go_back_in_history(&mut self) {
        let Some(last) = self.history.len().checked_sub(1) else {
            return;
        };
        let shown = match self.browsing {
            None => {
                self.draft = std::mem::take(&mut self.line);
                last
            }
            Some(shown) => shown.saturating_sub(1),
        };
        self.show_history(shown);
    }

    fn go_forward_in_history(&mut self) {
        match self.browsing {
            None => {}
            Some(shown) if shown + 1 < self.history.len() => self.show_history(shown + 1),
            Some(_) => {
                self.browsing = None;
                self.line = std::mem::take(&mut self.draft);
                self.cursor = self.line.len();
            }
        }
    }

    fn show_history(&mut self, shown: usize) {
        self.browsing = Some(shown);
        self.line = self.history[shown].chars().collect();
        self.cursor = self.line.len();
    }
}

/// The bytes that draw `prompt` and the editor's line on the current terminal row, with the
/// cursor in place. A line wider than the terminal scrolls sideways so the cursor stays in view
/// (the row never wraps, so redrawing it stays simple). Every character counts one column.
pub fn render(prompt: &str, editor: &Editor, width: usize) -> String {
    let prompt_width = prompt.chars().count();
    // One column spare, so the cursor at the end of a full row does not wrap.
    let room = width.saturating_sub(prompt_width + 1).max(1);
    let line = &editor.line;
    let start = editor.cursor.saturating_sub(room);
    let end = (start + room).min(line.len());
    let shown: String = line[start..end].iter().collect();
    let column = prompt_width + editor.cursor - start;
    let mut out = format!("\r{prompt}{shown}\x1b[K\r");
    if column > 0 {
        out.push_str(&format!("\x1b[{column}C"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every key in `bytes`, as a terminal would send them in one read.
    fn keys(bytes: &[u8]) -> Vec<Key> {
        let mut keys = Vec::new();
        let mut rest = bytes;
        while !rest.is_empty() {
            match decode(rest) {
                Decoded::Key(key, len) => {
                    keys.push(key);
                    rest = &rest[len..];
                }
                Decoded::Incomplete => panic!("incomplete: {rest:?}"),
            }
        }
        keys
    }

    /// Types `bytes` into `editor`; returns the outcomes that were not `Editing`.
    fn type_into(editor: &mut Editor, bytes: &[u8]) -> Vec<Outcome> {
        keys(bytes)
            .into_iter()
            .map(|key| editor.apply(key))
            .filter(|outcome| *outcome != Outcome::Editing)
            .collect()
    }

    /// The line `bytes` leave in a fresh editor, and where the cursor is.
    fn typed(bytes: &[u8]) -> (String, usize) {
        let mut editor = Editor::new();
        assert_eq!(type_into(&mut editor, bytes), vec![]);
        (editor.line(), editor.cursor)
    }

    #[test]
    fn printable_bytes_and_utf8_are_characters() {
        assert_eq!(
            keys("a é€😀".as_bytes()),
            vec![
                Key::Char('a'),
                Key::Char(' '),
                Key::Char('é'),
                Key::Char('€'),
                Key::Char('😀')
            ]
        );
    }

    #[test]
    fn control_keys() {
        assert_eq!(
            keys(b"\x01\x02\x03\x04\x05\x06\x08\x7f\x0b\x0e\x10\x15\x17\t\r\n\r"),
            vec![
                Key::Home,
                Key::Left,
                Key::Interrupt,
                Key::EndOfInput,
                Key::End,
                Key::Right,
                Key::Backspace,
                Key::Backspace,
                Key::KillToEnd,
                Key::Down,
                Key::Up,
                Key::KillToStart,
                Key::KillWordBefore,
                Key::Ignored,
                Key::Enter,
                Key::Enter,
            ]
        );
    }

    #[test]
    fn escape_sequences_of_common_terminals() {
        assert_eq!(
            keys(b"\x1b[A\x1b[B\x1b[C\x1b[D\x1b[H\x1b[F\x1bOH\x1bOF\x1bOA\x1b[1~\x1b[7~\x1b[4~\x1b[8~\x1b[3~"),
            vec![
                Key::Up,
                Key::Down,
                Key::Right,
                Key::Left,
                Key::Home,
                Key::End,
                Key::Home,
                Key::End,
                Key::Up,
                Key::Home,
                Key::Home,
                Key::End,
                Key::End,
                Key::Delete,
            ]
        );
        assert_eq!(
            keys(b"\x1b[1;5D\x1b[1;5C\x1b[1;3D\x1bb\x1bf\x1b\x7f"),
            vec![
                Key::WordLeft,
                Key::WordRight,
                Key::WordLeft,
                Key::WordLeft,
                Key::WordRight,
                Key::KillWordBefore,
            ]
        );
    }

    #[test]
    fn unknown_sequences_are_swallowed_whole() {
        // F5, a focus report and Alt-x do nothing, and what follows them is read as usual.
        assert_eq!(
            keys(b"\x1b[15~x\x1b[Iy\x1bxz"),
            vec![
                Key::Ignored,
                Key::Char('x'),
                Key::Ignored,
                Key::Char('y'),
                Key::Ignored,
                Key::Char('z')
            ]
        );
        // Esc Esc: the first one alone.
        assert_eq!(decode(b"\x1b\x1b[A"), Decoded::Key(Key::Ignored, 1));
        // `ESC [` then a byte no sequence has: only the `ESC [` goes.
        assert_eq!(decode(b"\x1b[\x01"), Decoded::Key(Key::Ignored, 2));
    }

    #[test]
    fn a_key_cut_short_waits_for_the_rest() {
        for start in [
            &b"\x1b"[..],
            b"\x1b[",
            b"\x1b[1;5",
            b"\x1bO",
            &"é".as_bytes()[..1],
            &"😀".as_bytes()[..3],
            b"",
        ] {
            assert_eq!(decode(start), Decoded::Incomplete, "{start:?}");
        }
    }

    #[test]
    fn bytes_that_are_not_utf8_are_skipped_one_at_a_time() {
        assert_eq!(decode(b"\x80a"), Decoded::Key(Key::Ignored, 1));
        assert_eq!(decode(b"\xffa"), Decoded::Key(Key::Ignored, 1));
        assert_eq!(decode(b"\xc3a"), Decoded::Key(Key::Ignored, 1));
        assert_eq!(decode(b"\xe2\x28\xa1"), Decoded::Key(Key::Ignored, 1));
        // A start that can never become a character is not waited for.
        assert_eq!(decode(b"\xe2\x28"), Decoded::Key(Key::Ignored, 1));
    }

    #[test]
    fn typing_inserts_at_the_cursor() {
        // "Hxi", Left, Backspace: the x goes.
        assert_eq!(typed(b"Hxi\x1b[D\x7f"), ("Hi".into(), 1));
        // Home then typing puts it in front; End then typing at the back.
        assert_eq!(
            typed(b"in Leeds\x01Plumber \x05!"),
            ("Plumber in Leeds!".into(), 17)
        );
        assert_eq!(typed(b"ab\x1b[H\x1b[F\x1bOH"), ("ab".into(), 0));
    }

    #[test]
    fn the_cursor_stays_inside_the_line() {
        assert_eq!(typed(b"ab\x1b[D\x1b[D\x1b[D\x7f\x1b[3~"), ("b".into(), 0));
        assert_eq!(typed(b"ab\x1b[C\x1b[C"), ("ab".into(), 2));
        assert_eq!(typed(b"ab\x1b[3~\x04"), ("ab".into(), 2));
        assert_eq!(typed(b"\x7f\x1b[D\x15\x0b\x17"), ("".into(), 0));
    }

    #[test]
    fn delete_and_ctrl_d_take_the_character_under_the_cursor() {
        assert_eq!(typed(b"abc\x01\x1b[3~"), ("bc".into(), 0));
        assert_eq!(typed(b"abc\x01\x04"), ("bc".into(), 0));
    }

    #[test]
    fn kills_before_and_after_the_cursor() {
        assert_eq!(typed(b"junk\x15Jo"), ("Jo".into(), 2));
        assert_eq!(
            typed(b"Leeds xyz\x1b[D\x1b[D\x1b[D\x1b[D\x0b"),
            ("Leeds".into(), 5)
        );
        assert_eq!(typed(b"one two\x1b[D\x1b[D\x1b[D\x15"), ("two".into(), 0));
    }

    #[test]
    fn ctrl_w_takes_the_word_before_the_cursor_and_the_spaces_after_it() {
        assert_eq!(
            typed(b"Smith & Sons oops\x17"),
            ("Smith & Sons ".into(), 13)
        );
        assert_eq!(typed(b"Smith & Sons   \x17"), ("Smith & ".into(), 8));
        assert_eq!(typed(b"one two\x01\x1b[1;5C\x17"), (" two".into(), 0));
    }

    #[test]
    fn word_moves() {
        assert_eq!(
            typed(b"one two three\x1bb\x1bb"),
            ("one two three".into(), 4)
        );
        assert_eq!(
            typed(b"one two three\x01\x1bf\x1bf"),
            ("one two three".into(), 7)
        );
        assert_eq!(typed(b"one  \x1b[1;5D"), ("one  ".into(), 0));
    }

    #[test]
    fn enter_submits_the_whole_line_wherever_the_cursor_is() {
        let mut editor = Editor::new();
        assert_eq!(
            type_into(&mut editor, b"Hello\x01\r"),
            vec![Outcome::Submit("Hello".into())]
        );
        assert_eq!((editor.line(), editor.cursor), ("".into(), 0));
        assert_eq!(
            type_into(&mut editor, b"\r"),
            vec![Outcome::Submit("".into())]
        );
    }

    #[test]
    fn up_and_down_go_through_this_sessions_lines_and_back_to_the_draft() {
        let mut editor = Editor::new();
        type_into(&mut editor, b"first\rsecond\rsecond\r\r");
        // Up: the latest first; a line sent twice in a row and an empty one are there once/never.
        type_into(&mut editor, b"dra");
        type_into(&mut editor, b"\x1b[A");
        assert_eq!((editor.line(), editor.cursor), ("second".into(), 6));
        type_into(&mut editor, b"\x1b[A");
        assert_eq!(editor.line(), "first");
        // The oldest line stays when there is nothing older.
        type_into(&mut editor, b"\x10");
        assert_eq!(editor.line(), "first");
        type_into(&mut editor, b"\x1b[B");
        assert_eq!(editor.line(), "second");
        // Past the newest: the line that was being typed, then nothing more.
        type_into(&mut editor, b"\x0e\x1b[B");
        assert_eq!((editor.line(), editor.cursor), ("dra".into(), 3));
        // A line from the history can be edited and sent.
        assert_eq!(
            type_into(&mut editor, b"\x15\x1b[A\x1b[A!\r"),
            vec![Outcome::Submit("first!".into())]
        );
        type_into(&mut editor, b"\x1b[A");
        assert_eq!(editor.line(), "first!");
    }

    #[test]
    fn up_with_no_history_does_nothing() {
        assert_eq!(typed(b"ab\x1b[A\x1b[B"), ("ab".into(), 2));
    }

    #[test]
    fn ctrl_c_clears_the_line_and_twice_in_a_row_leaves() {
        let mut editor = Editor::new();
        assert_eq!(type_into(&mut editor, b"junk\x03"), vec![Outcome::Cleared]);
        assert_eq!(editor.line(), "");
        // Any key in between and Ctrl-C only clears again.
        assert_eq!(
            type_into(&mut editor, b"x\x03y\x03"),
            vec![Outcome::Cleared, Outcome::Cleared]
        );
        assert_eq!(type_into(&mut editor, b"\x03"), vec![Outcome::Quit]);
    }

    #[test]
    fn ctrl_d_on_an_empty_line_leaves() {
        let mut editor = Editor::new();
        assert_eq!(type_into(&mut editor, b"\x04"), vec![Outcome::Quit]);
    }

    #[test]
    fn render_draws_the_row_and_puts_the_cursor_back() {
        let mut editor = Editor::new();
        type_into(&mut editor, b"Hello\x1b[D\x1b[D");
        assert_eq!(render("you> ", &editor, 80), "\ryou> Hello\x1b[K\r\x1b[8C");
        assert_eq!(render("", &Editor::new(), 80), "\r\x1b[K\r");
    }

    #[test]
    fn a_line_wider_than_the_terminal_scrolls_to_keep_the_cursor_in_view() {
        let mut editor = Editor::new();
        type_into(&mut editor, b"abcdefghij");
        // 5 of prompt, 1 spare: 4 columns for the line, its last 4 with the cursor after them.
        assert_eq!(render("you> ", &editor, 10), "\ryou> ghij\x1b[K\r\x1b[9C");
        type_into(&mut editor, b"\x01");
        assert_eq!(render("you> ", &editor, 10), "\ryou> abcd\x1b[K\r\x1b[5C");
    }
}
