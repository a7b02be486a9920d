//! Hand-rolled TwiML: the few verbs we answer with do not justify an XML crate.
//!
//! Text is escaped and stripped of characters XML 1.0 forbids when rendered, so
//! whatever an owner typed can never break the document Twilio parses.

pub const CONTENT_TYPE: &str = "text/xml; charset=utf-8";

const DECLARATION: &str = r#"<?xml version="1.0" encoding="UTF-8"?>"#;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    Rejected,
    Busy,
}

impl RejectReason {
    fn as_str(self) -> &'static str {
        match self {
            Self::Rejected => "rejected",
            Self::Busy => "busy",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Verb {
    Message(String),
    Say { text: String, language: String },
    Pause(u32),
    Hangup,
    Reject(RejectReason),
    Record(Record),
}

/// `<Record>`: a voicemail. Twilio fetches `action` when the recording ends (without one it
/// would fetch the voice URL again and, answered the same, ask for a message again), and posts
/// the recording's fate to `status_callback` once it is stored (`completed`), or nothing was
/// said (`absent`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub max_length: u32,
    pub action: String,
    pub status_callback: String,
}

/// A `<Response>` under construction; verbs render in the order they were added.
#[must_use = "builder methods return the extended response"]
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Response {
    verbs: Vec<Verb>,
}

impl Response {
    pub fn new() -> Self {
        Self::default()
    }

    /// Without a `to` attribute Twilio sends the reply back to the sender.
    pub fn message(mut self, body: &str) -> Self {
        self.verbs.push(Verb::Message(body.to_owned()));
        self
    }

    /// An empty `language` omits the attribute so Twilio falls back to its default.
    pub fn say(mut self, text: &str, language: &str) -> Self {
        self.verbs.push(Verb::Say {
            text: text.to_owned(),
            language: language.to_owned(),
        });
        self
    }

    pub fn pause(mut self, seconds: u32) -> Self {
        self.verbs.push(Verb::Pause(seconds));
        self
    }

    pub fn record(mut self, record: &Record) -> Self {
        self.verbs.push(Verb::Record(record.clone()));
        self
    }

    pub fn hangup(mut self) -> Self {
        self.verbs.push(Verb::Hangup);
        self
    }

    /// Only as the first verb does this avoid answering (and being billed for) the call.
    pub fn reject(mut self, reason: RejectReason) -> Self {
        self.verbs.push(Verb::Reject(reason));
        self
    }

    /// No whitespace between elements: inside `<Message>` or `<Say>` it would be sent or spoken.
    pub fn to_xml(&self) -> String {
        let mut out = String::from(DECLARATION);
        if self.verbs.is_empty() {
            out.push_str("<Response/>");
            return out;
        }
        out.push_str("<Response>");
        for verb in &self.verbs {
            match verb {
                Verb::Message(body) => {
                    out.push_str("<Message>");
                    out.push_str(&escape_text(body));
                    out.push_str("</Message>");
                }
                Verb::Say { text, language } => {
                    out.push_str("<Say");
                    if !language.is_empty() {
                        out.push_str(" language=\"");
                        out.push_str(&escape_attr(language));
                        out.push('"');
                    }
                    out.push('>');
                    out.push_str(&escape_text(text));
                    out.push_str("</Say>");
                }
                Verb::Pause(seconds) => {
                    out.push_str("<Pause length=\"");
                    out.push_str(&seconds.to_string());
                    out.push_str("\"/>");
                }
                Verb::Hangup => out.push_str("<Hangup/>"),
                Verb::Record(record) => {
                    out.push_str("<Record maxLength=\"");
                    out.push_str(&record.max_length.to_string());
                    out.push_str("\" playBeep=\"true\" trim=\"trim-silence\" action=\"");
                    out.push_str(&escape_attr(&record.action));
                    out.push_str("\" method=\"POST\" recordingStatusCallback=\"");
                    out.push_str(&escape_attr(&record.status_callback));
                    out.push_str(
                        "\" recordingStatusCallbackMethod=\"POST\" \
                         recordingStatusCallbackEvent=\"completed absent\"/>",
                    );
                }
                Verb::Reject(reason) => {
                    out.push_str("<Reject reason=\"");
                    out.push_str(reason.as_str());
                    out.push_str("\"/>");
                }
            }
        }
        out.push_str("</Response>");
        out
    }

    /// An empty response is Twilio's "do nothing" (no reply sent).
    pub fn is_empty(&self) -> bool {
        self.verbs.is_empty()
    }
}

/// Escapes text content: & < > ; and attribute values additionally " and '.
///
/// `>` is escaped too so `]]>` can never appear. Characters XML 1.0 forbids are
/// dropped rather than escaped: no escape makes them legal.
pub fn escape_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars().filter(|&c| is_kept(c)) {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            _ => out.push(c),
        }
    }
    out
}

/// Tab, newline and carriage return become character references: a parser would
/// otherwise normalise them to spaces inside an attribute value.
pub fn escape_attr(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars().filter(|&c| is_kept(c)) {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' => out.push_str("&#9;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            _ => out.push(c),
        }
    }
    out
}

/// Control characters other than tab, newline and carriage return are dropped
/// (C0 ones are illegal in XML 1.0; DEL and C1 are legal but never meant in a
/// text or call), as are the non-characters U+FFFE and U+FFFF. Rust `char`s are
/// never surrogates, so nothing else in XML 1.0's excluded ranges can occur.
fn is_kept(c: char) -> bool {
    match c {
        '\t' | '\n' | '\r' => true,
        '\u{FFFE}' | '\u{FFFF}' => false,
        _ => !c.is_control(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_voicemail_is_recorded_with_its_callbacks_then_the_call_ends() {
        let xml = Response::new()
            .say("Leave a message", "en-GB")
            .record(&Record {
                max_length: 120,
                action: "https://x.example/done?a=1&b=2".into(),
                status_callback: "https://x.example/rec".into(),
            })
            .hangup()
            .to_xml();
        assert_eq!(
            xml,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Say language=\"en-GB\">Leave a message</Say>\
             <Record maxLength=\"120\" playBeep=\"true\" trim=\"trim-silence\" \
             action=\"https://x.example/done?a=1&amp;b=2\" method=\"POST\" \
             recordingStatusCallback=\"https://x.example/rec\" recordingStatusCallbackMethod=\"POST\" \
             recordingStatusCallbackEvent=\"completed absent\"/><Hangup/></Response>"
        );
    }

    #[test]
    fn golden_message() {
        assert_eq!(
            Response::new().message("Hello").to_xml(),
            r#"<?xml version="1.0" encoding="UTF-8"?><Response><Message>Hello</Message></Response>"#
        );
    }

    #[test]
    fn golden_attribute_escaping() {
        assert_eq!(
            escape_attr("https://example.com?action=getTwiml&param=dial"),
            "https://example.com?action=getTwiml&amp;param=dial"
        );
    }

    #[test]
    fn empty_response() {
        let r = Response::new();
        assert!(r.is_empty());
        assert_eq!(
            r.to_xml(),
            r#"<?xml version="1.0" encoding="UTF-8"?><Response/>"#
        );
        assert_eq!(Response::default(), r);
        assert!(!Response::new().hangup().is_empty());
    }

    #[test]
    fn message_body_escaped() {
        assert_eq!(
            Response::new().message(r#"<b>&"'"#).to_xml(),
            r#"<?xml version="1.0" encoding="UTF-8"?><Response><Message>&lt;b&gt;&amp;"'</Message></Response>"#
        );
    }

    #[test]
    fn attribute_escaped() {
        assert_eq!(escape_attr(r#"<b>&"'"#), "&lt;b&gt;&amp;&quot;&apos;");
        assert_eq!(
            Response::new().say("hi", r#"<b>&"'"#).to_xml(),
            r#"<?xml version="1.0" encoding="UTF-8"?><Response><Say language="&lt;b&gt;&amp;&quot;&apos;">hi</Say></Response>"#
        );
    }

    #[test]
    fn attribute_whitespace_kept_as_references() {
        assert_eq!(escape_attr("a\tb\nc\rd"), "a&#9;b&#10;c&#13;d");
    }

    #[test]
    fn control_characters_stripped() {
        let input = "a\u{0}b\u{1}c\u{8}d\u{b}e\u{c}f\u{1f}g\u{7f}h\u{85}i\u{FFFE}j\u{FFFF}k";
        assert_eq!(escape_text(input), "abcdefghijk");
        assert_eq!(escape_attr(input), "abcdefghijk");
        assert_eq!(escape_text("tab\tnl\ncr\r"), "tab\tnl\ncr\r");
        assert_eq!(
            Response::new().message("x\u{0}y").to_xml(),
            r#"<?xml version="1.0" encoding="UTF-8"?><Response><Message>xy</Message></Response>"#
        );
    }

    #[test]
    fn non_ascii_kept() {
        assert_eq!(escape_text("café 😀 \u{FFFD}"), "café 😀 \u{FFFD}");
    }

    #[test]
    fn voice_verbs() {
        let xml = Response::new()
            .say("Hello & welcome", "en-GB")
            .pause(2)
            .say("Bye", "")
            .hangup()
            .to_xml();
        assert_eq!(
            xml,
            r#"<?xml version="1.0" encoding="UTF-8"?><Response><Say language="en-GB">Hello &amp; welcome</Say><Pause length="2"/><Say>Bye</Say><Hangup/></Response>"#
        );
    }

    #[test]
    fn reject_reasons() {
        assert_eq!(
            Response::new().reject(RejectReason::Rejected).to_xml(),
            r#"<?xml version="1.0" encoding="UTF-8"?><Response><Reject reason="rejected"/></Response>"#
        );
        assert_eq!(
            Response::new().reject(RejectReason::Busy).to_xml(),
            r#"<?xml version="1.0" encoding="UTF-8"?><Response><Reject reason="busy"/></Response>"#
        );
    }

    #[test]
    fn content_type() {
        assert_eq!(CONTENT_TYPE, "text/xml; charset=utf-8");
    }

    /// Reverses escape_text; used to show escaping loses nothing but illegal chars.
    fn unescape(s: &str) -> String {
        s.replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&amp;", "&")
    }

    const ENTITIES: [&str; 5] = ["&amp;", "&lt;", "&gt;", "&quot;", "&apos;"];

    /// Arbitrary chars, weighted towards the ones escaping and stripping care about.
    fn nasty_string() -> impl Strategy<Value = String> {
        let special = prop::sample::select(vec![
            '<', '>', '&', '"', '\'', ';', '#', '\0', '\t', '\n', '\r', '\u{7f}', '\u{FFFE}',
            '\u{FFFF}',
        ]);
        prop::collection::vec(prop_oneof![any::<char>(), special], 0..64)
            .prop_map(String::from_iter)
    }

    proptest! {
        #[test]
        fn message_body_is_always_well_escaped(s in nasty_string()) {
            let xml = Response::new().message(&s).to_xml();
            let prefix = r#"<?xml version="1.0" encoding="UTF-8"?><Response><Message>"#;
            let suffix = "</Message></Response>";
            prop_assert!(xml.starts_with(prefix));
            prop_assert!(xml.ends_with(suffix));
            let body = &xml[prefix.len()..xml.len() - suffix.len()];
            prop_assert!(!body.contains('<'));
            for (i, _) in body.match_indices('&') {
                prop_assert!(ENTITIES.iter().any(|e| body[i..].starts_with(e)));
            }
            prop_assert!(body.chars().all(is_kept));
            let kept: String = s.chars().filter(|&c| is_kept(c)).collect();
            prop_assert_eq!(unescape(body), kept);
        }

        #[test]
        fn attribute_never_breaks_out(s in nasty_string()) {
            let escaped = escape_attr(&s);
            prop_assert!(!escaped.contains(['<', '"', '\'']));
            for (i, _) in escaped.match_indices('&') {
                let rest = &escaped[i..];
                prop_assert!(
                    ENTITIES.iter().any(|e| rest.starts_with(e))
                        || ["&#9;", "&#10;", "&#13;"].iter().any(|e| rest.starts_with(e))
                );
            }
        }
    }
}
