//! Alert emails over SMTP: `lettre`, async on tokio, TLS through rustls on ring.
//!
//! Emails leave through the outbox like texts (kind `email`), so they get the same claims,
//! retries, deadline and never-twice rules; this module only turns one outbox row into one SMTP
//! transaction. `SMTP_URL` is `smtp://user:pass@host:port` (plain, or STARTTLS with
//! `?tls=required`) or `smtps://...` (TLS from the first byte). Without it in dev mode, emails are
//! logged as simulated texts are.

use std::time::Duration;

use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::Error as SmtpError;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

/// How long one SMTP conversation may take (connect to QUIT), shorter than an outbox lease.
pub const SMTP_TIMEOUT: Duration = Duration::from_secs(20);

/// Where emails go.
// Built once per worker: the size difference between the variants costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone)]
pub enum Mailer {
    /// Dev mode without `SMTP_URL`: logged, not sent.
    Simulated,
    Smtp {
        transport: AsyncSmtpTransport<Tokio1Executor>,
        from: Mailbox,
    },
}

/// One email as the outbox holds it.
#[derive(Debug, Clone)]
pub struct Email<'a> {
    pub to: &'a str,
    pub subject: &'a str,
    /// The plain-text part; the HTML part says the same, escaped, with links made clickable.
    pub text: &'a str,
    /// The same on every attempt of one outbox message, so a receiver can tell a resend.
    pub message_id: String,
}

/// Why an email did not go.
#[derive(Debug, thiserror::Error)]
pub enum EmailError {
    /// The server refused it for now (a 4xx), or could not be reached before the send: nothing
    /// was accepted, try again later.
    #[error("SMTP temporary failure: {0}")]
    Transient(String),
    /// Refused for good (a 5xx: a bad address, a rejected sender), or unbuildable.
    #[error("SMTP refused: {0}")]
    Permanent(String),
    /// The connection was lost or timed out during the send: the server may or may not have
    /// taken the message.
    #[error("SMTP outcome unknown: {0}")]
    Uncertain(String),
}

impl Mailer {
    /// The mailer the configuration asks for: SMTP with `SMTP_URL`; else logging in dev mode;
    /// else none (production without SMTP: emails fail, loudly, as the outbox gives them up).
    pub fn from_config(config: &crate::config::Config) -> Result<Option<Mailer>, String> {
        match &config.after.smtp_url {
            Some(url) => Ok(Some(Mailer::smtp(url, &config.after.alert_from_email)?)),
            None if config.env == crate::config::Environment::Production => Ok(None),
            None => Ok(Some(Mailer::Simulated)),
        }
    }

    /// An SMTP mailer for `url`, sending as `from`.
    pub fn smtp(url: &str, from: &str) -> Result<Mailer, String> {
        crate::tls::install_crypto_provider();
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(|e| format!("SMTP_URL: {e}"))?
            .timeout(Some(SMTP_TIMEOUT))
            .build();
        let from = from
            .parse::<Mailbox>()
            .map_err(|e| format!("ALERT_FROM_EMAIL: {e}"))?;
        Ok(Mailer::Smtp { transport, from })
    }

    /// Sends one email in one SMTP conversation.
    pub async fn send(&self, email: &Email<'_>) -> Result<(), EmailError> {
        let Mailer::Smtp { transport, from } = self else {
            return Ok(());
        };
        let message = build(from, email).map_err(EmailError::Permanent)?;
        // A server we cannot reach (or that will not greet us) has taken nothing: checked on a
        // connection of its own first, so that a failure of the send itself means it may have.
        match transport.test_connection().await {
            Ok(true) => {}
            Ok(false) => return Err(EmailError::Transient("the server did not answer".into())),
            Err(e) => return Err(classify(&e, false)),
        }
        match transport.send(message).await {
            Ok(_) => Ok(()),
            Err(e) => Err(classify(&e, true)),
        }
    }
}

/// A 5xx is final and a 4xx worth another go later: the server answered, so nothing was taken.
/// Anything else (a connection lost, a timeout) is worth another go only before the message was
/// on its way; during the send it leaves us not knowing.
fn classify(e: &SmtpError, sending: bool) -> EmailError {
    let text = e.to_string();
    if e.is_permanent() {
        EmailError::Permanent(text)
    } else if e.is_transient() || !sending {
        EmailError::Transient(text)
    } else {
        EmailError::Uncertain(text)
    }
}

/// The message: From, To, Subject, Message-ID, and a plain-text and an HTML part.
pub fn build(from: &Mailbox, email: &Email<'_>) -> Result<Message, String> {
    let to = email
        .to
        .parse::<Mailbox>()
        .map_err(|e| format!("bad address: {e}"))?;
    Message::builder()
        .from(from.clone())
        .to(to)
        .subject(email.subject)
        .message_id(Some(email.message_id.clone()))
        .multipart(MultiPart::alternative_plain_html(
            email.text.to_owned(),
            html(email.text),
        ))
        .map_err(|e| e.to_string())
}

/// The HTML part: the text escaped, lines kept, `https://` links clickable.
pub fn html(text: &str) -> String {
    let mut body = String::new();
    for (i, line) in text.lines().enumerate() {
        if i > 0 {
            body.push_str("<br>\n");
        }
        for (j, word) in line.split(' ').enumerate() {
            if j > 0 {
                body.push(' ');
            }
            if word.starts_with("https://") || word.starts_with("http://") {
                let escaped = escape(word);
                body.push_str(&format!("<a href=\"{escaped}\">{escaped}</a>"));
            } else {
                body.push_str(&escape(word));
            }
        }
    }
    format!(
        "<!DOCTYPE html>\n<html><body><p style=\"font-family: sans-serif\">{body}</p></body></html>\n"
    )
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Checks `SMTP_URL` when the configuration loads, naming what is wrong.
pub fn check_smtp_url(url: &str) -> Result<(), String> {
    if !(url.starts_with("smtp://") || url.starts_with("smtps://")) {
        return Err("must start with smtp:// or smtps://".into());
    }
    crate::tls::install_crypto_provider();
    AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Checks an address (or `Name <address>`).
pub fn check_mailbox(raw: &str) -> Result<(), String> {
    raw.parse::<Mailbox>()
        .map(|_| ())
        .map_err(|e| format!("{raw:?} is not an email address: {e}"))
}

/// The Message-ID of outbox message `id`, the same on every attempt.
pub fn message_id(id: i64) -> String {
    format!("<outbound-{id}@onboard>")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_html_part_escapes_the_text_and_links_the_voicemail() {
        let html = html("From <+447700900123> & co\nVoicemail: https://x.example/r.mp3?a=1&b=2");
        assert!(html.contains("From &lt;+447700900123&gt; &amp; co<br>"));
        assert!(html.contains(
            "<a href=\"https://x.example/r.mp3?a=1&amp;b=2\">https://x.example/r.mp3?a=1&amp;b=2</a>"
        ));
    }

    #[test]
    fn smtp_urls_are_checked() {
        assert!(check_smtp_url("smtp://user:pass@127.0.0.1:2525").is_ok());
        assert!(check_smtp_url("smtps://user:pass@mail.example.com").is_ok());
        assert!(check_smtp_url("http://mail.example.com").is_err());
        assert!(check_smtp_url("smtp://").is_err());
    }

    #[test]
    fn a_message_has_both_parts_and_the_headers() {
        let from: Mailbox = "Onboard <alerts@onboard.example>".parse().unwrap();
        let message = build(
            &from,
            &Email {
                to: "jo@example.com",
                subject: "Missed call from +447700900555",
                text: "Missed call",
                message_id: message_id(7),
            },
        )
        .unwrap();
        let raw = String::from_utf8(message.formatted()).unwrap();
        assert!(raw.contains("To: jo@example.com"));
        assert!(raw.contains("Message-ID: <outbound-7@onboard>"));
        assert!(raw.contains("multipart/alternative"));
        assert!(raw.contains("text/plain"));
        assert!(raw.contains("text/html"));
    }
}
