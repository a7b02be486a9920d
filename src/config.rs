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

#[derive(Clone)]
pub struct Config {
    pub env: Environment,
    /// `postgres://...` or `sqlite://...`; SQLite file `onboard.db` when unset.
    pub database_url: String,
    pub listen_addr: SocketAddr,
    /// The URL Twilio and Stripe call us on: signatures are checked against it, never the Host header.
    pub public_url: String,
    pub twilio_account_sid: Option<String>,
    /// Without it, dev mode: signatures are not checked.
    pub twilio_auth_token: Option<String>,
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

    // --- reminders, quiet hours and expiry ----------------------------------------------------
    /// `REMINDERS`, `QUIET_HOURS`, `QUIET_SUNDAY_UNTIL`, `EXPIRE_AFTER`.
    pub reminders: crate::reminders::ReminderConfig,
}

/// Development's stand-in, so `serve` works with nothing set.
pub const DEV_PAYMENT_LINK: &str = "https://buy.stripe.com/test_onboard_dev";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{name}: {problem}")]
    Invalid { name: &'static str, problem: String },
    #[error("ONBOARD_ENV=production needs {0} to be set")]
    MissingInProduction(&'static str),
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
            .field("admin_token", &self.admin_token.as_ref().map(|_| "***"))
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
            Some(raw) => parse_duration(&raw).ok_or_else(|| ConfigError::Invalid {
                name: "VERIFY_WINDOW",
                problem: format!("{raw:?} is not a duration (e.g. 120, 90s or 2m)"),
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
        let config = Config {
            env,
            database_url: get("DATABASE_URL").unwrap_or_else(|| "sqlite://onboard.db".to_owned()),
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
            twilio_api_base: get("TWILIO_API_BASE")
                .unwrap_or_else(|| "https://api.twilio.com".to_owned())
                .trim_end_matches('/')
                .to_owned(),
            pool_low_water: match get("POOL_LOW_WATER") {
                None => 3,
                Some(raw) => raw.parse().ok().filter(|n: &i64| *n >= 0).ok_or_else(|| {
                    ConfigError::Invalid {
                        name: "POOL_LOW_WATER",
                        problem: format!("{raw:?} is not a whole number >= 0"),
                    }
                })?,
            },
            public_url,
            verify_caller_number,
            verify_window,
            verify_ring_seconds,
            pool_target,
            pool_max_buy_per_day,
            twilio_address_sid: get("TWILIO_ADDRESS_SID"),
            twilio_bundle_sid: get("TWILIO_BUNDLE_SID"),
            reminders: crate::reminders::ReminderConfig::from_lookup(get)?,
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
            if let Some((name, _)) = required.iter().find(|(_, present)| !present) {
                return Err(ConfigError::MissingInProduction(name));
            }
        }
        Ok(config)
    }

    /// Dev mode for sending: without an account sid and token, texts are logged, not sent.
    pub fn sends_for_real(&self) -> bool {
        self.twilio_account_sid.is_some() && self.twilio_auth_token.is_some()
    }

    /// Dev mode: no Twilio auth token, so webhook signatures are not checked.
    pub fn signatures_checked(&self) -> bool {
        self.twilio_auth_token.is_some()
    }
}

/// `120`, `90s` or `2m`.
fn parse_duration(raw: &str) -> Option<std::time::Duration> {
    let (digits, unit) = match raw.strip_suffix('m') {
        Some(minutes) => (minutes, 60),
        None => (raw.strip_suffix('s').unwrap_or(raw), 1),
    };
    let n: u64 = digits.trim().parse().ok()?;
    (n > 0).then(|| std::time::Duration::from_secs(n * unit))
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
            ConfigError::MissingInProduction("TWILIO_ACCOUNT_SID")
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
        let err = config(&[("POOL_LOW_WATER", "-1")]).unwrap_err();
        assert!(err.to_string().starts_with("POOL_LOW_WATER"), "{err}");
        let err = config(&[("LOG_FORMAT", "xml")]).unwrap_err();
        assert!(err.to_string().starts_with("LOG_FORMAT"), "{err}");
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
