//! Configuration from the environment, checked once at start.

use std::net::SocketAddr;

use crate::domain::PhoneNumber;

/// Where the server may run: production refuses to start without its secrets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    Development,
    Production,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

/// PostgreSQL connections per process when `DATABASE_MAX_CONNECTIONS` is unset.
pub const DEFAULT_DATABASE_MAX_CONNECTIONS: u32 = 32;

#[derive(Clone)]
pub struct Config {
    pub env: Environment,
    /// `postgres://...` or `sqlite://...`; SQLite file `onboard.db` when unset.
    pub database_url: String,
    /// The most PostgreSQL connections this process opens (`DATABASE_MAX_CONNECTIONS`). Every
    /// event holds one for its transaction, so requests beyond it wait for one; each replica
    /// opens its own, within the server's `max_connections`.
    pub database_max_connections: u32,
    pub listen_addr: SocketAddr,
    /// The URL Twilio and Stripe call us on: signatures are checked against it, never the Host header.
    pub public_url: String,
    pub twilio_account_sid: Option<String>,
    pub twilio_auth_token: Option<String>,
    /// Whether webhook signatures (Twilio and Stripe) are checked; see [`Signatures`].
    pub signatures: Signatures,
    pub onboarding_number: Option<PhoneNumber>,
    pub stripe_payment_link: String,
    pub stripe_webhook_secrets: Vec<String>,
    /// The admin API is off when unset.
    pub admin_token: Option<String>,
    pub log_format: LogFormat,
    /// Override the flows compiled into the binary with files from this folder.
    pub flows_dir: Option<String>,
    /// Twilio's REST API; tests point it at a mock.
    pub twilio_api_base: String,
    /// Below this many AVAILABLE numbers, `POOL_LOW` is logged.
    pub pool_low_water: i64,
    /// Verification calls come from this number (default `ONBOARDING_NUMBER`).
    pub verify_caller_number: Option<PhoneNumber>,
    /// How long to wait for a test call before texting troubleshooting tips.
    pub verify_window: std::time::Duration,
    /// How long the verification call rings: longer than a phone's no-answer divert timer.
    pub verify_ring_seconds: u32,
    /// Keep this many numbers AVAILABLE by buying from Twilio; the buying keeper is off when unset.
    pub pool_target: Option<i64>,
    /// At most this many numbers bought in any 24 hours, across all replicas.
    pub pool_max_buy_per_day: i64,
    /// Sent with number purchases where Twilio requires regulatory documents (most UK numbers).
    pub twilio_address_sid: Option<String>,
    pub twilio_bundle_sid: Option<String>,
    /// A text not sent this long after it was queued is given up (`OUTBOX_GIVE_UP_AFTER`).
    pub outbox_give_up_after: std::time::Duration,
    /// Messages the outbox worker claims and sends at once (`OUTBOX_BATCH`).
    pub outbox_batch: i64,
    /// Where `/metrics` is served; on the main listener when unset.
    pub metrics_addr: Option<SocketAddr>,
    /// Limits that keep slow or idle clients from holding the server.
    pub http: HttpLimits,

    // --- reminders, quiet hours and expiry ----------------------------------------------------
    /// `REMINDERS`, `QUIET_HOURS`, `QUIET_SUNDAY_UNTIL`, `EXPIRE_AFTER`.
    pub reminders: crate::reminders::ReminderConfig,

    // --- prices and budgets -------------------------------------------------------------------
    /// `PRICES_DIR`, `REPORTING_CURRENCY`, `BUDGET_DAILY`, `BUDGET_MONTHLY`, `OPS_EMAIL`.
    pub costs: crate::costs::CostConfig,
    // --- after onboarding ---------------------------------------------------------------------
    /// `SMTP_URL`, `ALERT_FROM_EMAIL`, `CALLER_TEXT_BACK`, `PLAN_CALLS_INCLUDED`.
    pub after: AfterConfig,
}

/// What an owner's number does once they are live.
#[derive(Clone, PartialEq, Eq)]
pub struct AfterConfig {
    /// Where alert emails go out (`smtp://user:pass@host:port`, or `smtps://` for TLS from the
    /// first byte); checked when loaded. Unset in dev mode: emails are logged instead.
    pub smtp_url: Option<String>,
    /// The alert emails' From, an address or `Name <address>`.
    pub alert_from_email: String,
    /// `CALLER_TEXT_BACK=1`: a caller the owner missed gets one text a day from the owner's number.
    pub caller_text_back: bool,
    /// Missed calls included in a plan each billing month (`PLAN_CALLS_INCLUDED`, default 100).
    pub plan_calls_included: i64,
}

impl std::fmt::Debug for AfterConfig {
    // `SMTP_URL` may hold a password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AfterConfig")
            .field("smtp_url", &self.smtp_url.as_ref().map(|_| "***"))
            .field("alert_from_email", &self.alert_from_email)
            .field("caller_text_back", &self.caller_text_back)
            .field("plan_calls_included", &self.plan_calls_included)
            .finish()
    }
}

impl Default for AfterConfig {
    fn default() -> Self {
        Self {
            smtp_url: None,
            alert_from_email: DEFAULT_ALERT_FROM.to_owned(),
            caller_text_back: false,
            plan_calls_included: DEFAULT_PLAN_CALLS_INCLUDED,
        }
    }
}

/// The alert emails' From when `ALERT_FROM_EMAIL` is unset.
pub const DEFAULT_ALERT_FROM: &str = "Onboard <alerts@onboard.example>";

/// Missed calls a plan includes each month when `PLAN_CALLS_INCLUDED` is unset.
pub const DEFAULT_PLAN_CALLS_INCLUDED: i64 = 100;

impl AfterConfig {
    fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let smtp_url = get("SMTP_URL")
            .map(|url| {
                crate::email::check_smtp_url(&url).map_err(|problem| ConfigError::Invalid {
                    name: "SMTP_URL",
                    problem,
                })?;
                Ok(url)
            })
            .transpose()?;
        let alert_from_email = get("ALERT_FROM_EMAIL").unwrap_or_else(|| DEFAULT_ALERT_FROM.into());
        crate::email::check_mailbox(&alert_from_email).map_err(|problem| ConfigError::Invalid {
            name: "ALERT_FROM_EMAIL",
            problem,
        })?;
        let caller_text_back = match get("CALLER_TEXT_BACK").as_deref() {
            None | Some("0") | Some("false") => false,
            Some("1") | Some("true") => true,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    name: "CALLER_TEXT_BACK",
                    problem: format!("{other:?} is not 1 or 0"),
                });
            }
        };
        let plan_calls_included = match get("PLAN_CALLS_INCLUDED") {
            None => DEFAULT_PLAN_CALLS_INCLUDED,
            Some(raw) => raw
                .parse()
                .ok()
                .filter(|n: &i64| (1..=1_000_000).contains(n))
                .ok_or(ConfigError::Invalid {
                    name: "PLAN_CALLS_INCLUDED",
                    problem: format!("{raw:?} is not a whole number from 1 to 1000000"),
                })?,
        };
        Ok(Self {
            smtp_url,
            alert_from_email,
            caller_text_back,
            plan_calls_included,
        })
    }
}

/// How long a client may take and how many may be connected at once, on every listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// From the moment a connection is ready for a request (just opened, or the last response
    /// sent) to the end of the request's headers; slowloris clients are cut off by this.
    pub header_read_timeout: std::time::Duration,
    /// No byte in either direction for this long closes the connection (a stalled body, a client
    /// that stopped reading its response). Keep it above the 12 s request timeout.
    pub idle_timeout: std::time::Duration,
    /// Connections beyond this wait in the kernel's accept queue until one closes.
    pub max_connections: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: std::time::Duration::from_secs(10),
            idle_timeout: std::time::Duration::from_secs(60),
            max_connections: 1024,
        }
    }
}

/// Whether webhooks must prove they come from Twilio and Stripe.
///
/// Checks are off only when no provider secret at all is set (a laptop with nothing configured),
/// or when `ONBOARD_INSECURE_WEBHOOKS=1` says so explicitly. Any other mix of secrets refuses to
/// start: a forgotten `STRIPE_WEBHOOK_SECRET` must never quietly let anyone mark an owner paid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signatures {
    Checked,
    /// Dev mode: every webhook is taken at its word.
    Off(DevModeReason),
}

/// Why signature checks are off, for the start-up warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DevModeReason {
    NoSecretsSet,
    InsecureWebhooksSet,
}

/// The settings whose presence means "this is a real deployment": all of them, or none.
pub const PROVIDER_SECRETS: [&str; 3] = [
    "TWILIO_ACCOUNT_SID",
    "TWILIO_AUTH_TOKEN",
    "STRIPE_WEBHOOK_SECRET",
];

/// Development's stand-in, so `serve` works with nothing set.
pub const DEV_PAYMENT_LINK: &str = "https://buy.stripe.com/test_onboard_dev";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{name}: {problem}")]
    Invalid { name: &'static str, problem: String },
    #[error("ONBOARD_ENV=production needs these to be set: {}", .0.join(", "))]
    MissingInProduction(Vec<&'static str>),
    #[error(
        "some provider secrets are set but not all, so webhook signatures could not be checked; \
         set {}, or unset every provider secret for dev mode, or set ONBOARD_INSECURE_WEBHOOKS=1 \
         to accept unsigned webhooks knowingly",
        .0.join(", ")
    )]
    PartialSecrets(Vec<&'static str>),
}

impl std::fmt::Debug for Config {
    // Secrets stay out of logs and panics.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("env", &self.env)
            .field("listen_addr", &self.listen_addr)
            .field("public_url", &self.public_url)
            .field(
                "twilio_auth_token",
                &self.twilio_auth_token.as_ref().map(|_| "***"),
            )
            .field("signatures", &self.signatures)
            .field("admin_token", &self.admin_token.as_ref().map(|_| "***"))
            .field("smtp_url", &self.after.smtp_url.as_ref().map(|_| "***"))
            .finish_non_exhaustive()
    }
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads settings through `lookup`, so tests need not touch the process environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| {
            lookup(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let env = match get("ONBOARD_ENV").as_deref() {
            None | Some("development") | Some("dev") => Environment::Development,
            Some("production") | Some("prod") => Environment::Production,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    name: "ONBOARD_ENV",
                    problem: format!("{other:?} is not development or production"),
                });
            }
        };
        let listen_addr = get("LISTEN_ADDR")
            .unwrap_or_else(|| "127.0.0.1:3000".to_owned())
            .parse()
            .map_err(|e| ConfigError::Invalid {
                name: "LISTEN_ADDR",
                problem: format!("{e} (expected host:port, e.g. 127.0.0.1:3000)"),
            })?;
        let public_url = match get("PUBLIC_URL") {
            Some(url) if url.starts_with("http://") || url.starts_with("https://") => {
                url.trim_end_matches('/').to_owned()
            }
            Some(url) => {
                return Err(ConfigError::Invalid {
                    name: "PUBLIC_URL",
                    problem: format!("{url:?} must start with http:// or https://"),
                });
            }
            None => format!("http://{listen_addr}"),
        };
        let onboarding_number = get("ONBOARDING_NUMBER")
            .map(|raw| {
                PhoneNumber::parse(&raw).map_err(|e| ConfigError::Invalid {
                    name: "ONBOARDING_NUMBER",
                    problem: e.to_string(),
                })
            })
            .transpose()?;
        let verify_caller_number = match get("VERIFY_CALLER_NUMBER") {
            Some(raw) => Some(PhoneNumber::parse(&raw).map_err(|e| ConfigError::Invalid {
                name: "VERIFY_CALLER_NUMBER",
                problem: e.to_string(),
            })?),
            None => onboarding_number.clone(),
        };
        let verify_window = match get("VERIFY_WINDOW") {
            None => std::time::Duration::from_secs(120),
            Some(raw) => duration_setting("VERIFY_WINDOW", &raw, MAX_VERIFY_WINDOW)?,
        };
        let outbox_give_up_after = match get("OUTBOX_GIVE_UP_AFTER") {
            None => crate::outbox::DEFAULT_GIVE_UP_AFTER,
            Some(raw) => duration_setting("OUTBOX_GIVE_UP_AFTER", &raw, MAX_OUTBOX_GIVE_UP_AFTER)?,
        };
        let outbox_batch = match get("OUTBOX_BATCH") {
            None => crate::outbox::DEFAULT_BATCH,
            Some(raw) => raw
                .parse()
                .ok()
                .filter(|n: &i64| (1..=100).contains(n))
                .ok_or_else(|| ConfigError::Invalid {
                    name: "OUTBOX_BATCH",
                    problem: format!("{raw:?} is not a whole number from 1 to 100"),
                })?,
        };
        let verify_ring_seconds = match get("VERIFY_RING_SECONDS") {
            None => 30,
            Some(raw) => raw
                .parse()
                .ok()
                .filter(|s| (5..=600).contains(s))
                .ok_or_else(|| ConfigError::Invalid {
                    name: "VERIFY_RING_SECONDS",
                    problem: format!("{raw:?} is not a whole number of seconds from 5 to 600"),
                })?,
        };
        let whole_number = |name: &'static str, raw: String| {
            raw.parse()
                .ok()
                .filter(|n: &i64| (0..=10_000).contains(n))
                .ok_or(ConfigError::Invalid {
                    name,
                    problem: format!("{raw:?} is not a whole number from 0 to 10000"),
                })
        };
        let pool_target = get("POOL_TARGET")
            .map(|raw| whole_number("POOL_TARGET", raw))
            .transpose()?;
        let pool_max_buy_per_day = get("POOL_MAX_BUY_PER_DAY")
            .map(|raw| whole_number("POOL_MAX_BUY_PER_DAY", raw))
            .transpose()?
            .unwrap_or(10);
        let log_format = match get("LOG_FORMAT").as_deref() {
            None | Some("pretty") => LogFormat::Pretty,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    name: "LOG_FORMAT",
                    problem: format!("{other:?} is not json or pretty"),
                });
            }
        };
        let stripe_payment_link = get("STRIPE_PAYMENT_LINK");
        if let Some(link) = &stripe_payment_link
            && (!link.starts_with("https://") || link.contains('?'))
        {
            return Err(ConfigError::Invalid {
                name: "STRIPE_PAYMENT_LINK",
                problem: "must be an https:// Payment Link without a query string".to_owned(),
            });
        }
        let insecure_webhooks = match get("ONBOARD_INSECURE_WEBHOOKS").as_deref() {
            None | Some("0") | Some("false") => false,
            Some("1") | Some("true") => true,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    name: "ONBOARD_INSECURE_WEBHOOKS",
                    problem: format!("{other:?} is not 1 or 0"),
                });
            }
        };
        if insecure_webhooks && env == Environment::Production {
            return Err(ConfigError::Invalid {
                name: "ONBOARD_INSECURE_WEBHOOKS",
                problem: "cannot be set with ONBOARD_ENV=production".to_owned(),
            });
        }
        let missing_secrets: Vec<&'static str> = PROVIDER_SECRETS
            .into_iter()
            .filter(|name| get(name).is_none())
            .collect();
        let signatures = if insecure_webhooks {
            Signatures::Off(DevModeReason::InsecureWebhooksSet)
        } else if missing_secrets.len() == PROVIDER_SECRETS.len() && env == Environment::Development
        {
            Signatures::Off(DevModeReason::NoSecretsSet)
        } else {
            Signatures::Checked
        };
        let metrics_addr = get("METRICS_ADDR")
            .map(|raw| {
                raw.parse().map_err(|e| ConfigError::Invalid {
                    name: "METRICS_ADDR",
                    problem: format!("{e} (expected host:port, e.g. 127.0.0.1:9100)"),
                })
            })
            .transpose()?;
        let defaults = HttpLimits::default();
        let http = HttpLimits {
            header_read_timeout: match get("HTTP_HEADER_READ_TIMEOUT") {
                None => defaults.header_read_timeout,
                Some(raw) => duration_setting(
                    "HTTP_HEADER_READ_TIMEOUT",
                    &raw,
                    std::time::Duration::from_secs(300),
                )?,
            },
            idle_timeout: match get("HTTP_IDLE_TIMEOUT") {
                None => defaults.idle_timeout,
                Some(raw) => duration_setting(
                    "HTTP_IDLE_TIMEOUT",
                    &raw,
                    std::time::Duration::from_secs(3600),
                )?,
            },
            max_connections: match get("HTTP_MAX_CONNECTIONS") {
                None => defaults.max_connections,
                Some(raw) => raw
                    .parse()
                    .ok()
                    .filter(|n: &usize| (1..=100_000).contains(n))
                    .ok_or_else(|| ConfigError::Invalid {
                        name: "HTTP_MAX_CONNECTIONS",
                        problem: format!("{raw:?} is not a whole number from 1 to 100000"),
                    })?,
            },
        };
        let config = Config {
            env,
            signatures,
            metrics_addr,
            http,
            database_url: get("DATABASE_URL").unwrap_or_else(|| "sqlite://onboard.db".to_owned()),
            database_max_connections: match get("DATABASE_MAX_CONNECTIONS") {
                None => DEFAULT_DATABASE_MAX_CONNECTIONS,
                Some(raw) => raw
                    .parse()
                    .ok()
                    .filter(|n: &u32| (1..=1_000).contains(n))
                    .ok_or_else(|| ConfigError::Invalid {
                        name: "DATABASE_MAX_CONNECTIONS",
                        problem: format!("{raw:?} is not a whole number from 1 to 1000"),
                    })?,
            },
            listen_addr,
            twilio_account_sid: get("TWILIO_ACCOUNT_SID"),
            twilio_auth_token: get("TWILIO_AUTH_TOKEN"),
            onboarding_number,
            stripe_payment_link: stripe_payment_link
                .clone()
                .unwrap_or_else(|| DEV_PAYMENT_LINK.to_owned()),
            stripe_webhook_secrets: get("STRIPE_WEBHOOK_SECRET")
                .map(|v| {
                    v.split(',')
                        .map(|s| s.trim().to_owned())
                        .filter(|s| !s.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
            admin_token: get("ADMIN_TOKEN"),
            log_format,
            flows_dir: get("FLOWS_DIR"),
            twilio_api_base: match get("TWILIO_API_BASE") {
                None => "https://api.twilio.com".to_owned(),
                Some(raw) => twilio_api_base(&raw)?,
            },
            pool_low_water: get("POOL_LOW_WATER")
                .map(|raw| whole_number("POOL_LOW_WATER", raw))
                .transpose()?
                .unwrap_or(3),
            public_url,
            verify_caller_number,
            verify_window,
            verify_ring_seconds,
            pool_target,
            pool_max_buy_per_day,
            twilio_address_sid: get("TWILIO_ADDRESS_SID"),
            twilio_bundle_sid: get("TWILIO_BUNDLE_SID"),
            outbox_give_up_after,
            outbox_batch,
            reminders: crate::reminders::ReminderConfig::from_lookup(get)?,
            costs: crate::costs::CostConfig::from_lookup(get)?,
            after: AfterConfig::from_lookup(get)?,
        };
        if env == Environment::Production {
            let required: [(&'static str, bool); 6] = [
                ("TWILIO_ACCOUNT_SID", config.twilio_account_sid.is_some()),
                ("TWILIO_AUTH_TOKEN", config.twilio_auth_token.is_some()),
                ("PUBLIC_URL", get("PUBLIC_URL").is_some()),
                ("ONBOARDING_NUMBER", config.onboarding_number.is_some()),
                ("STRIPE_PAYMENT_LINK", stripe_payment_link.is_some()),
                (
                    "STRIPE_WEBHOOK_SECRET",
                    !config.stripe_webhook_secrets.is_empty(),
                ),
            ];
            // Every missing setting at once: one failed start, not one per restart.
            let missing: Vec<&'static str> = required
                .iter()
                .filter(|(_, present)| !present)
                .map(|(name, _)| *name)
                .collect();
            if !missing.is_empty() {
                return Err(ConfigError::MissingInProduction(missing));
            }
        }
        if config.signatures == Signatures::Checked && !missing_secrets.is_empty() {
            return Err(ConfigError::PartialSecrets(missing_secrets));
        }
        Ok(config)
    }

    /// False only in dev mode (see [`Signatures`]): then no webhook signature is checked.
    pub fn signatures_checked(&self) -> bool {
        self.signatures == Signatures::Checked
    }
}

/// The longest `VERIFY_WINDOW`: a test call comes within minutes, never days.
const MAX_VERIFY_WINDOW: std::time::Duration = std::time::Duration::from_secs(24 * 60 * 60);

/// The longest `OUTBOX_GIVE_UP_AFTER`: a text about a sign-up is stale long before a month.
const MAX_OUTBOX_GIVE_UP_AFTER: std::time::Duration =
    std::time::Duration::from_secs(30 * 24 * 60 * 60);

/// A duration setting from 1 second to `max`: anything longer is a typo, and unbounded values
/// would overflow later in date arithmetic rather than fail here.
fn duration_setting(
    name: &'static str,
    raw: &str,
    max: std::time::Duration,
) -> Result<std::time::Duration, ConfigError> {
    parse_duration(raw)
        .filter(|d| *d <= max)
        .ok_or_else(|| ConfigError::Invalid {
            name,
            problem: format!(
                "{raw:?} is not a duration from 1s to {}s (e.g. 120, 90s or 2m)",
                max.as_secs()
            ),
        })
}

/// `120`, `90s`, `2m` or `24h`; `None` for zero, junk, or a number too big to count.
fn parse_duration(raw: &str) -> Option<std::time::Duration> {
    let (digits, unit) = if let Some(hours) = raw.strip_suffix('h') {
        (hours, 3600)
    } else if let Some(minutes) = raw.strip_suffix('m') {
        (minutes, 60)
    } else {
        (raw.strip_suffix('s').unwrap_or(raw), 1)
    };
    let n: u64 = digits.trim().parse().ok()?;
    let secs = n.checked_mul(unit)?;
    (secs > 0).then(|| std::time::Duration::from_secs(secs))
}

/// Twilio's API base, which gets our credentials in basic auth: `https://`, or `http://` only to
/// this machine (a local mock).
fn twilio_api_base(raw: &str) -> Result<String, ConfigError> {
    let base = raw.trim_end_matches('/');
    let invalid = |problem: &str| ConfigError::Invalid {
        name: "TWILIO_API_BASE",
        problem: format!("{raw:?} {problem}"),
    };
    if let Some(rest) = base.strip_prefix("https://") {
        return if rest.is_empty() {
            Err(invalid("has no host"))
        } else {
            Ok(base.to_owned())
        };
    }
    let rest = base
        .strip_prefix("http://")
        .ok_or_else(|| invalid("must start with https://"))?;
    let authority = rest.split('/').next().unwrap_or_default();
    let host = match authority.strip_prefix('[') {
        // `[::1]:8080`
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.split(':').next().unwrap_or_default(),
    };
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if loopback {
        Ok(base.to_owned())
    } else {
        Err(invalid(
            "must start with https:// (plain http:// only to 127.0.0.1, ::1 or localhost): \
             it carries the Twilio credentials",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
    }

    #[test]
    fn after_onboarding_settings_are_checked_and_named() {
        let c = config(&[]).unwrap();
        assert_eq!(c.after, AfterConfig::default());
        assert_eq!(c.after.plan_calls_included, 100);
        let c = config(&[
            ("SMTP_URL", "smtps://alerts:pw@mail.example.com:465"),
            ("ALERT_FROM_EMAIL", "Smith Alerts <alerts@smith.example>"),
            ("CALLER_TEXT_BACK", "1"),
            ("PLAN_CALLS_INCLUDED", "250"),
        ])
        .unwrap();
        assert!(c.after.caller_text_back);
        assert_eq!(c.after.plan_calls_included, 250);
        // The password stays out of Debug.
        assert!(!format!("{c:?}").contains("pw@"));
        for (name, value) in [
            ("SMTP_URL", "https://mail.example.com"),
            ("SMTP_URL", "smtp://"),
            ("ALERT_FROM_EMAIL", "not an address"),
            ("CALLER_TEXT_BACK", "yes"),
            ("PLAN_CALLS_INCLUDED", "0"),
            ("PLAN_CALLS_INCLUDED", "lots"),
        ] {
            match config(&[(name, value)]) {
                Err(ConfigError::Invalid { name: named, .. }) => assert_eq!(named, name),
                other => panic!("{name}={value}: {other:?}"),
            }
        }
    }

    #[test]
    fn runs_with_nothing_set() {
        let c = config(&[]).unwrap();
        assert_eq!(c.database_url, "sqlite://onboard.db");
        assert_eq!(c.listen_addr.to_string(), "127.0.0.1:3000");
        assert_eq!(c.public_url, "http://127.0.0.1:3000");
        assert!(!c.signatures_checked());
        assert!(c.admin_token.is_none());
    }

    #[test]
    fn production_refuses_to_start_without_secrets() {
        assert_eq!(
            config(&[("ONBOARD_ENV", "production")]).unwrap_err(),
            ConfigError::MissingInProduction(vec![
                "TWILIO_ACCOUNT_SID",
                "TWILIO_AUTH_TOKEN",
                "PUBLIC_URL",
                "ONBOARDING_NUMBER",
                "STRIPE_PAYMENT_LINK",
                "STRIPE_WEBHOOK_SECRET",
            ])
        );
        let err = config(&[
            ("ONBOARD_ENV", "production"),
            ("TWILIO_ACCOUNT_SID", "AC123"),
            ("TWILIO_AUTH_TOKEN", "secret"),
            ("PUBLIC_URL", "https://onboard.example.com/"),
        ])
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "ONBOARD_ENV=production needs these to be set: ONBOARDING_NUMBER, \
             STRIPE_PAYMENT_LINK, STRIPE_WEBHOOK_SECRET"
        );
        let full = [
            ("ONBOARD_ENV", "production"),
            ("TWILIO_ACCOUNT_SID", "AC123"),
            ("TWILIO_AUTH_TOKEN", "secret"),
            ("PUBLIC_URL", "https://onboard.example.com/"),
            ("ONBOARDING_NUMBER", "+447700900000"),
            ("STRIPE_PAYMENT_LINK", "https://buy.stripe.com/abc"),
            ("STRIPE_WEBHOOK_SECRET", "whsec_a, whsec_b"),
        ];
        let c = config(&full).unwrap();
        assert_eq!(c.public_url, "https://onboard.example.com");
        assert_eq!(c.stripe_webhook_secrets, vec!["whsec_a", "whsec_b"]);
    }

    #[test]
    fn dev_mode_only_when_no_provider_secret_is_set() {
        let c = config(&[]).unwrap();
        assert_eq!(c.signatures, Signatures::Off(DevModeReason::NoSecretsSet));
        let c = config(&[
            ("TWILIO_ACCOUNT_SID", "AC123"),
            ("TWILIO_AUTH_TOKEN", "secret"),
            ("STRIPE_WEBHOOK_SECRET", "whsec_a"),
        ])
        .unwrap();
        assert!(c.signatures_checked());
    }

    #[test]
    fn partial_secrets_refuse_to_start_naming_every_missing_one() {
        // The case that once let an unsigned Stripe event mark an owner paid.
        assert_eq!(
            config(&[
                ("TWILIO_ACCOUNT_SID", "AC123"),
                ("TWILIO_AUTH_TOKEN", "secret")
            ])
            .unwrap_err(),
            ConfigError::PartialSecrets(vec!["STRIPE_WEBHOOK_SECRET"])
        );
        let err = config(&[("STRIPE_WEBHOOK_SECRET", "whsec_a")]).unwrap_err();
        assert_eq!(
            err,
            ConfigError::PartialSecrets(vec!["TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN"])
        );
        assert!(
            err.to_string().contains("ONBOARD_INSECURE_WEBHOOKS=1"),
            "{err}"
        );
        // Blank counts as unset.
        let c = config(&[("TWILIO_AUTH_TOKEN", "  ")]).unwrap();
        assert!(!c.signatures_checked());
    }

    #[test]
    fn insecure_webhooks_must_be_asked_for_and_never_in_production() {
        let c = config(&[
            ("TWILIO_ACCOUNT_SID", "AC123"),
            ("TWILIO_AUTH_TOKEN", "secret"),
            ("ONBOARD_INSECURE_WEBHOOKS", "1"),
        ])
        .unwrap();
        assert_eq!(
            c.signatures,
            Signatures::Off(DevModeReason::InsecureWebhooksSet)
        );
        let err = config(&[("ONBOARD_INSECURE_WEBHOOKS", "yes")]).unwrap_err();
        assert!(
            err.to_string().starts_with("ONBOARD_INSECURE_WEBHOOKS"),
            "{err}"
        );
        let err = config(&[
            ("ONBOARD_ENV", "production"),
            ("ONBOARD_INSECURE_WEBHOOKS", "1"),
        ])
        .unwrap_err();
        assert!(
            err.to_string().starts_with("ONBOARD_INSECURE_WEBHOOKS"),
            "{err}"
        );
    }

    #[test]
    fn bad_values_are_named() {
        let err = config(&[("LISTEN_ADDR", "nope")]).unwrap_err();
        assert!(err.to_string().starts_with("LISTEN_ADDR"), "{err}");
        let err = config(&[("ONBOARDING_NUMBER", "07700900000")]).unwrap_err();
        assert!(err.to_string().starts_with("ONBOARDING_NUMBER"), "{err}");
        let err = config(&[("STRIPE_PAYMENT_LINK", "http://x")]).unwrap_err();
        assert!(err.to_string().starts_with("STRIPE_PAYMENT_LINK"), "{err}");
        let err = config(&[("VERIFY_WINDOW", "soon")]).unwrap_err();
        assert!(err.to_string().starts_with("VERIFY_WINDOW"), "{err}");
        assert_eq!(
            config(&[("VERIFY_WINDOW", "3m")])
                .unwrap()
                .verify_window
                .as_secs(),
            180
        );
        let outbox = |v| config(&[("OUTBOX_GIVE_UP_AFTER", v)]);
        assert_eq!(config(&[]).unwrap().outbox_give_up_after.as_secs(), 86_400);
        assert_eq!(outbox("2h").unwrap().outbox_give_up_after.as_secs(), 7_200);
        for bad in ["0", "tomorrow", "18446744073709551615h", "31d", "745h"] {
            let err = outbox(bad).unwrap_err();
            assert!(err.to_string().starts_with("OUTBOX_GIVE_UP_AFTER"), "{err}");
        }
        let err = config(&[("POOL_LOW_WATER", "-1")]).unwrap_err();
        assert!(err.to_string().starts_with("POOL_LOW_WATER"), "{err}");
        let err = config(&[("LOG_FORMAT", "xml")]).unwrap_err();
        assert!(err.to_string().starts_with("LOG_FORMAT"), "{err}");
    }

    #[test]
    fn durations_and_numbers_too_big_to_use_are_refused() {
        for raw in [
            "18446744073709551615m",
            "307445734561825861m",
            "99999999999999999999",
            "86401",
            "0",
        ] {
            let err = config(&[("VERIFY_WINDOW", raw)]).unwrap_err();
            assert!(err.to_string().starts_with("VERIFY_WINDOW"), "{raw}: {err}");
        }
        assert_eq!(
            config(&[("VERIFY_WINDOW", "1440m")])
                .unwrap()
                .verify_window
                .as_secs(),
            86_400
        );
        for raw in ["9223372036854775807", "10001"] {
            let err = config(&[("POOL_LOW_WATER", raw)]).unwrap_err();
            assert!(err.to_string().starts_with("POOL_LOW_WATER"), "{err}");
        }
    }

    #[test]
    fn http_limits_have_defaults_and_bounds() {
        let c = config(&[]).unwrap();
        assert_eq!(c.http, HttpLimits::default());
        assert_eq!(c.metrics_addr, None);
        let c = config(&[
            ("HTTP_HEADER_READ_TIMEOUT", "2s"),
            ("HTTP_IDLE_TIMEOUT", "1m"),
            ("HTTP_MAX_CONNECTIONS", "8"),
            ("METRICS_ADDR", "127.0.0.1:9100"),
            ("DATABASE_MAX_CONNECTIONS", "64"),
            ("OUTBOX_BATCH", "100"),
        ])
        .unwrap();
        assert_eq!(c.database_max_connections, 64);
        assert_eq!(c.outbox_batch, 100);
        assert_eq!(config(&[]).unwrap().outbox_batch, 32);
        assert_eq!(c.http.header_read_timeout.as_secs(), 2);
        assert_eq!(c.http.idle_timeout.as_secs(), 60);
        assert_eq!(c.http.max_connections, 8);
        assert_eq!(c.metrics_addr.unwrap().port(), 9100);
        for (name, bad) in [
            ("HTTP_HEADER_READ_TIMEOUT", "301"),
            ("HTTP_HEADER_READ_TIMEOUT", "0"),
            ("HTTP_IDLE_TIMEOUT", "99999999999999999m"),
            ("HTTP_MAX_CONNECTIONS", "0"),
            ("HTTP_MAX_CONNECTIONS", "18446744073709551616"),
            ("METRICS_ADDR", "9100"),
            ("DATABASE_MAX_CONNECTIONS", "0"),
            ("DATABASE_MAX_CONNECTIONS", "lots"),
            ("OUTBOX_BATCH", "0"),
            ("OUTBOX_BATCH", "101"),
            ("OUTBOX_BATCH", "-1"),
        ] {
            let err = config(&[(name, bad)]).unwrap_err();
            assert!(err.to_string().starts_with(name), "{name}={bad}: {err}");
        }
    }

    #[test]
    fn the_twilio_api_is_reached_over_https_except_on_this_machine() {
        for ok in [
            "https://api.twilio.com/",
            "https://mock.example.com:8443",
            "http://127.0.0.1:4010",
            "http://127.8.9.10",
            "http://localhost:4010/",
            "http://[::1]:4010",
        ] {
            let c = config(&[("TWILIO_API_BASE", ok)]).unwrap();
            assert_eq!(c.twilio_api_base, ok.trim_end_matches('/'));
        }
        for bad in [
            "http://api.twilio.com",
            "http://10.0.0.1:4010",
            "http://localhost.example.com",
            "http://127.0.0.1.example.com",
            "ftp://127.0.0.1",
            "api.twilio.com",
            "https://",
        ] {
            let err = config(&[("TWILIO_API_BASE", bad)]).unwrap_err();
            assert!(
                err.to_string().starts_with("TWILIO_API_BASE"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn pool_buying_is_off_unless_a_target_is_set() {
        let c = config(&[]).unwrap();
        assert_eq!((c.pool_target, c.pool_max_buy_per_day), (None, 10));
        let c = config(&[("POOL_TARGET", "20"), ("POOL_MAX_BUY_PER_DAY", "5")]).unwrap();
        assert_eq!((c.pool_target, c.pool_max_buy_per_day), (Some(20), 5));
        for bad in ["-1", "lots", "2.5", "10001"] {
            let err = config(&[("POOL_TARGET", bad)]).unwrap_err();
            assert!(err.to_string().starts_with("POOL_TARGET"), "{err}");
            let err = config(&[("POOL_MAX_BUY_PER_DAY", bad)]).unwrap_err();
            assert!(err.to_string().starts_with("POOL_MAX_BUY_PER_DAY"), "{err}");
        }
    }
}
