//! A small SMTP server for the tests: a tokio TCP listener speaking enough SMTP (EHLO/HELO,
//! AUTH PLAIN, MAIL, RCPT, DATA, RSET, NOOP, QUIT) to take messages from a real client and keep
//! them, so email is tested over a real connection, not a mocked transport.

use std::sync::{Arc, Mutex};

use base64::Engine as _;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// One message as the sink received it.
#[derive(Debug, Clone, Default)]
pub struct Received {
    /// `user` and `password` from AUTH PLAIN, if the client authenticated.
    pub auth: Option<(String, String)>,
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    /// The message as sent after DATA (headers and body), dots unstuffed, CRLF line ends.
    pub data: String,
}

impl Received {
    /// A header's value (the first of that name), unfolded.
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.data.split("\r\n\r\n").next()?;
        let mut value: Option<String> = None;
        for line in head.split("\r\n") {
            if let Some(v) = value.as_mut() {
                if line.starts_with(' ') || line.starts_with('\t') {
                    v.push_str(line);
                    continue;
                }
                break;
            }
            if let Some((n, v)) = line.split_once(':')
                && n.eq_ignore_ascii_case(name)
            {
                value = Some(v.trim().to_owned());
            }
        }
        value
    }

    /// The decoded body of the part with this content type (`text/plain`, `text/html`).
    pub fn part(&self, content_type: &str) -> Option<String> {
        let start = self.data.find(&format!("Content-Type: {content_type}"))?;
        let part = &self.data[start..];
        let body_start = part.find("\r\n\r\n")? + 4;
        let headers = &part[..body_start];
        let body = &part[body_start..];
        let body = &body[..body.find("\r\n--").unwrap_or(body.len())];
        if headers.contains("quoted-printable") {
            Some(decode_quoted_printable(body))
        } else if headers.contains("base64") {
            let joined: String = body.split_whitespace().collect();
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(joined)
                .ok()?;
            String::from_utf8(bytes).ok()
        } else {
            Some(body.to_owned())
        }
    }
}

fn decode_quoted_printable(body: &str) -> String {
    let joined = body.replace("=\r\n", "");
    let bytes = joined.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'='
            && i + 2 < bytes.len()
            && let Ok(hex) = std::str::from_utf8(&bytes[i + 1..i + 3])
            && let Ok(byte) = u8::from_str_radix(hex, 16)
        {
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The `refusal` that means "take the message, then hang up without a word".
const DROP_AFTER_DATA: &str = "drop after data";

/// A running sink: its `smtp://` URL and what it has received.
pub struct SmtpSink {
    pub port: u16,
    received: Arc<Mutex<Vec<Received>>>,
}

impl SmtpSink {
    /// Listens on a free port of 127.0.0.1 until the test's runtime ends.
    pub async fn start() -> SmtpSink {
        Self::answering_mail_from(None).await
    }

    /// A sink that answers every `MAIL FROM` with `reply` (e.g. `451 4.3.0 try later` or
    /// `550 5.7.1 refused`), so nothing is ever accepted.
    pub async fn refusing(reply: &'static str) -> SmtpSink {
        Self::answering_mail_from(Some(reply)).await
    }

    /// A sink that keeps each message but drops the connection instead of answering its end
    /// of DATA: the client cannot know whether it was taken.
    pub async fn dropping_after_data() -> SmtpSink {
        Self::answering_mail_from(Some(DROP_AFTER_DATA)).await
    }

    async fn answering_mail_from(refusal: Option<&'static str>) -> SmtpSink {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let store = received.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(session(stream, store.clone(), refusal));
            }
        });
        SmtpSink { port, received }
    }

    /// `smtp://user:password@127.0.0.1:<port>`.
    pub fn url(&self, user: &str, password: &str) -> String {
        format!("smtp://{user}:{password}@127.0.0.1:{}", self.port)
    }

    pub fn messages(&self) -> Vec<Received> {
        self.received.lock().expect("lock").clone()
    }
}

async fn session(
    stream: TcpStream,
    store: Arc<Mutex<Vec<Received>>>,
    refusal: Option<&'static str>,
) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    let mut current = Received::default();
    let mut auth = None;
    macro_rules! reply {
        ($text:expr) => {
            if write.write_all($text.as_bytes()).await.is_err() {
                return;
            }
        };
    }
    reply!("220 sink.test ESMTP test sink\r\n");
    let mut line = String::new();
    loop {
        line.clear();
        match lines.read_line(&mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let command = line.trim_end_matches(['\r', '\n']).to_owned();
        let upper = command.to_ascii_uppercase();
        if upper.starts_with("EHLO") {
            reply!("250-sink.test\r\n250-AUTH PLAIN\r\n250 8BITMIME\r\n");
        } else if upper.starts_with("HELO") {
            reply!("250 sink.test\r\n");
        } else if upper.starts_with("AUTH PLAIN") {
            let encoded = command[10..].trim();
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .unwrap_or_default();
            let parts: Vec<String> = decoded
                .split(|b| *b == 0)
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .collect();
            if parts.len() == 3 {
                auth = Some((parts[1].clone(), parts[2].clone()));
                reply!("235 2.7.0 authenticated\r\n");
            } else {
                reply!("535 5.7.8 bad credentials\r\n");
            }
        } else if let (true, Some(refusal)) = (
            upper.starts_with("MAIL FROM:"),
            refusal.filter(|r| *r != DROP_AFTER_DATA),
        ) {
            reply!(format!("{refusal}\r\n"));
        } else if upper.starts_with("MAIL FROM:") {
            current = Received {
                auth: auth.clone(),
                mail_from: address(&command[10..]),
                ..Received::default()
            };
            reply!("250 2.1.0 ok\r\n");
        } else if upper.starts_with("RCPT TO:") {
            current.rcpt_to.push(address(&command[8..]));
            reply!("250 2.1.5 ok\r\n");
        } else if upper == "DATA" {
            reply!("354 end data with <CR><LF>.<CR><LF>\r\n");
            let mut data = String::new();
            loop {
                line.clear();
                match lines.read_line(&mut line).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                if line == ".\r\n" || line == ".\n" {
                    break;
                }
                let unstuffed = line.strip_prefix('.').unwrap_or(&line);
                data.push_str(unstuffed);
            }
            current.data = data;
            store.lock().expect("lock").push(current.clone());
            if refusal == Some(DROP_AFTER_DATA) {
                return;
            }
            reply!("250 2.0.0 queued\r\n");
        } else if upper == "RSET" || upper == "NOOP" {
            reply!("250 2.0.0 ok\r\n");
        } else if upper == "QUIT" {
            reply!("221 2.0.0 bye\r\n");
            return;
        } else {
            reply!("502 5.5.2 command not implemented\r\n");
        }
    }
}

/// `<a@b>` (maybe followed by parameters) as `a@b`.
fn address(raw: &str) -> String {
    let raw = raw.trim();
    match (raw.find('<'), raw.find('>')) {
        (Some(start), Some(end)) if start < end => raw[start + 1..end].to_owned(),
        _ => raw.split_whitespace().next().unwrap_or_default().to_owned(),
    }
}
