//! Writing transcripts into fixture files (`onboard replay --update`), as golden-file runners do.
//!
//! Only the reply expectations of each `[[steps]]` table are replaced (`reply`,
//! `reply_contains`, `reply_not_contains`, `no_reply`); every other line, comment and blank line
//! stays byte for byte, so the diff of an update shows exactly the words that changed.

/// The keys an update owns: whatever the fixture said about replies, it now says it exactly.
const REPLY_KEYS: [&str; 4] = ["reply", "reply_contains", "reply_not_contains", "no_reply"];

/// Keys that describe what a step expects (not what it does): a new reply line goes before the
/// first of them when the step had no reply expectation yet.
const EXPECT_KEYS: [&str; 12] = [
    "state",
    "gate",
    "opted_out",
    "paid",
    "number",
    "rejected",
    "outcome",
    "answer_contains",
    "call_placed",
    "outbox_contains",
    "outbox_count",
    "description",
];

/// One key and its whole value (which may span lines), or a line that is no entry (blank,
/// comment, table header).
#[derive(Debug)]
struct Entry<'a> {
    key: Option<&'a str>,
    text: String,
}

/// `text` with each step's reply expectations replaced by `said[i]` (the step's exact words, or
/// nothing said). Steps beyond `said` are left alone.
pub fn with_transcript(text: &str, said: &[Option<String>]) -> String {
    let entries = entries(text);
    let mut out = String::with_capacity(text.len());
    let mut step: Option<usize> = None;
    let mut i = 0;
    while i < entries.len() {
        let entry = &entries[i];
        if entry.key.is_none() && entry.text.trim() == "[[steps]]" {
            step = Some(step.map_or(0, |s| s + 1));
            out.push_str(&entry.text);
            // The whole table: up to the next header.
            let end = entries[i + 1..]
                .iter()
                .position(|e| e.key.is_none() && e.text.trim_start().starts_with('['))
                .map_or(entries.len(), |p| i + 1 + p);
            let table = &entries[i + 1..end];
            match step.and_then(|s| said.get(s)) {
                Some(words) => out.push_str(&rewrite_table(table, words.as_deref())),
                None => table.iter().for_each(|e| out.push_str(&e.text)),
            }
            i = end;
            continue;
        }
        out.push_str(&entry.text);
        i += 1;
    }
    out
}

fn rewrite_table(table: &[Entry<'_>], words: Option<&str>) -> String {
    let line = match words {
        Some(words) => format!("reply = {}\n", basic_string(words)),
        None => "no_reply = true\n".to_owned(),
    };
    let owned = |e: &Entry<'_>| e.key.is_some_and(|k| REPLY_KEYS.contains(&k));
    let at = table.iter().position(owned).unwrap_or_else(|| {
        table
            .iter()
            .position(|e| e.key.is_some_and(|k| EXPECT_KEYS.contains(&k)))
            .unwrap_or_else(|| {
                // After the last entry, before the blank lines that part it from the next table.
                table
                    .iter()
                    .rposition(|e| e.key.is_some())
                    .map_or(0, |p| p + 1)
            })
    });
    let mut out = String::new();
    for (i, entry) in table.iter().enumerate() {
        if i == at {
            out.push_str(&line);
        }
        if !owned(entry) {
            out.push_str(&entry.text);
        }
    }
    if at >= table.len() {
        out.push_str(&line);
    }
    out
}

/// `text` as a one-line TOML basic string, so each reply is one line of a diff.
fn basic_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Splits TOML text into entries: a `key = value` with all the lines of its value, or any other
/// single line. Values are followed through strings (basic, literal, multi-line) and brackets.
fn entries(text: &str) -> Vec<Entry<'_>> {
    let mut entries = Vec::new();
    let mut lines = text.split_inclusive('\n').peekable();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        let key = trimmed.split_once('=').map(|(k, _)| k.trim()).filter(|k| {
            !k.is_empty()
                && !trimmed.starts_with('#')
                && !trimmed.starts_with('[')
                && k.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        });
        let mut text = line.to_owned();
        if key.is_some() {
            let mut scan = Scanner::default();
            scan.feed(line.split_once('=').map_or("", |(_, v)| v));
            while !scan.complete() {
                let Some(next) = lines.next() else { break };
                scan.feed(next);
                text.push_str(next);
            }
        }
        entries.push(Entry { key, text });
    }
    entries
}

/// Follows a TOML value across lines: open brackets, and the string we are inside.
#[derive(Default)]
struct Scanner {
    depth: i32,
    /// The delimiter of the open string: `"`, `'`, `"""` or `'''`.
    string: Option<&'static str>,
}

impl Scanner {
    fn complete(&self) -> bool {
        self.depth <= 0 && self.string.is_none()
    }

    fn feed(&mut self, line: &str) {
        // Bytes, not chars: every delimiter is ASCII, and no UTF-8 continuation byte is one.
        let bytes = line.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            let rest = &bytes[i..];
            match self.string {
                Some(delimiter) => {
                    if delimiter.starts_with('"') && bytes[i] == b'\\' {
                        i += 2;
                        continue;
                    }
                    if rest.starts_with(delimiter.as_bytes()) {
                        self.string = None;
                        i += delimiter.len();
                        continue;
                    }
                    if delimiter.len() == 1 && bytes[i] == b'\n' {
                        // A one-line string cannot go on; the file is invalid, stop here.
                        self.string = None;
                    }
                }
                None => {
                    if rest.starts_with(b"\"\"\"") {
                        self.string = Some("\"\"\"");
                        i += 3;
                        continue;
                    }
                    if rest.starts_with(b"'''") {
                        self.string = Some("'''");
                        i += 3;
                        continue;
                    }
                    match bytes[i] {
                        b'"' => self.string = Some("\""),
                        b'\'' => self.string = Some("'"),
                        b'[' | b'{' => self.depth += 1,
                        b']' | b'}' => self.depth -= 1,
                        b'#' => break,
                        _ => {}
                    }
                }
            }
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &str = "\
# A comment that stays, with ’curly’ quotes.
owner = \"+447700900123\"

[[steps]]
sms = \"I’m a plumber\"
reply_contains = [
  \"What's your trade\",  # a comment inside
  \"based?\",
]
state = \"S1_BUSINESS_TYPE_LOCATION\"

[[steps]]
event = \"timers\"
state = \"S1_BUSINESS_TYPE_LOCATION\"

[[steps]]
sms = \"STOP\"
";

    #[test]
    fn replies_become_exact_and_everything_else_stays() {
        let said = [
            Some("What's your trade?\nE.g. \"Plumber\"".to_owned()),
            None,
            Some("Bye".to_owned()),
        ];
        let updated = with_transcript(FIXTURE, &said);
        assert_eq!(
            updated,
            "\
# A comment that stays, with ’curly’ quotes.
owner = \"+447700900123\"

[[steps]]
sms = \"I’m a plumber\"
reply = \"What's your trade?\\nE.g. \\\"Plumber\\\"\"
state = \"S1_BUSINESS_TYPE_LOCATION\"

[[steps]]
event = \"timers\"
no_reply = true
state = \"S1_BUSINESS_TYPE_LOCATION\"

[[steps]]
sms = \"STOP\"
reply = \"Bye\"
"
        );
        // The transcript it wrote reads back as the same words.
        let value: toml::Value = toml::from_str(&updated).unwrap();
        assert_eq!(
            value["steps"][0]["reply"].as_str(),
            Some("What's your trade?\nE.g. \"Plumber\"")
        );
        // A second update with the same words changes nothing.
        assert_eq!(with_transcript(&updated, &said), updated);
    }
}
