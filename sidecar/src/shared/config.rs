//! The optional `shared` block of the sidecar configuration.
//!
//! ```yaml
//! shared:
//!   url: rediss://redis.auth-proxy.svc:6379/0   # redis:// or rediss:// (TLS)
//!   username: authproxy                         # ACL user (optional)
//!   password: {file: /run/secrets/redis/password}
//!   ca_file: /run/secrets/redis/ca.crt          # TLS root (optional; system roots otherwise)
//!   key_prefix: authproxy
//!   mode: best_effort                           # or exclusive
//!   lock_ttl: 15s                               # > refresh.request_timeout
//!   timeout: 1s                                 # one Redis command
//! ```

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::config::{ConfigError, RefreshPolicy};
use crate::secret::SecretSource;

/// What a replica does when Redis cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Fall back to fetching its own token (the default).
    BestEffort,
    /// Never fetch outside the lock: serve the current token until it
    /// expires, then fail closed. For APIs that allow one token per client.
    Exclusive,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::BestEffort => "best_effort",
            Mode::Exclusive => "exclusive",
        }
    }
}

/// The validated `shared` block.
#[derive(Debug, Clone)]
pub struct SharedConfig {
    /// `redis://` or `rediss://` URL, without a password.
    pub url: url::Url,
    pub username: Option<String>,
    pub password: Option<SecretSource>,
    /// PEM root certificate(s) for `rediss://`.
    pub ca_file: Option<PathBuf>,
    pub key_prefix: String,
    pub mode: Mode,
    /// How long the fetch lock is held at most; longer than a token request.
    pub lock_ttl: Duration,
    /// Timeout of one Redis command or connection attempt.
    pub timeout: Duration,
}

/// The `shared` block as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawShared {
    url: String,
    username: Option<String>,
    password: Option<SecretSource>,
    ca_file: Option<PathBuf>,
    key_prefix: Option<String>,
    mode: Option<String>,
    lock_ttl: Option<String>,
    timeout: Option<String>,
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: format!("shared.{key}"),
        message: message.into(),
    }
}

fn duration(key: &str, raw: &Option<String>, default: Duration) -> Result<Duration, ConfigError> {
    match raw {
        None => Ok(default),
        Some(text) => humantime::parse_duration(text)
            .map_err(|e| invalid(key, format!("{text:?} is not a duration ({e})"))),
    }
}

impl RawShared {
    pub(crate) fn validate(self, refresh: &RefreshPolicy) -> Result<SharedConfig, ConfigError> {
        // The URL is never echoed back: it may carry a user name or a host an
        // operator considers private, and a password must not be in it.
        let url =
            url::Url::parse(&self.url).map_err(|e| invalid("url", format!("not a URL ({e})")))?;
        if !matches!(url.scheme(), "redis" | "rediss") {
            return Err(invalid("url", "scheme must be redis or rediss"));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(invalid("url", "has no host"));
        }
        if url.password().is_some() {
            return Err(invalid(
                "url",
                "must not contain a password; use shared.password (a file or env source)",
            ));
        }
        if let Some(db) = url.path().strip_prefix('/').filter(|p| !p.is_empty()) {
            if db.parse::<u32>().is_err() {
                return Err(invalid("url", "the path must be a database number"));
            }
        }
        if let Some(p) = &self.password {
            p.check().map_err(|e| invalid("password", e.to_string()))?;
        }
        if let Some(ca) = &self.ca_file {
            if url.scheme() != "rediss" {
                return Err(invalid("ca_file", "only applies to a rediss:// url"));
            }
            let pem = std::fs::read(ca)
                .map_err(|e| invalid("ca_file", format!("{}: {e}", ca.display())))?;
            if !pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") {
                return Err(invalid(
                    "ca_file",
                    format!("{} holds no PEM certificate", ca.display()),
                ));
            }
        }
        let key_prefix = self.key_prefix.unwrap_or_else(|| "authproxy".into());
        if key_prefix.is_empty()
            || key_prefix.len() > 64
            || !key_prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
        {
            return Err(invalid(
                "key_prefix",
                "must be 1-64 characters of [A-Za-z0-9._:-] (no braces: keys carry their own hash tag)",
            ));
        }
        let mode = match self.mode.as_deref().unwrap_or("best_effort") {
            "best_effort" => Mode::BestEffort,
            "exclusive" => Mode::Exclusive,
            other => {
                return Err(invalid(
                    "mode",
                    format!("{other:?} is not one of best_effort, exclusive"),
                ))
            }
        };
        let lock_ttl = duration(
            "lock_ttl",
            &self.lock_ttl,
            refresh.request_timeout + Duration::from_secs(5),
        )?;
        if lock_ttl <= refresh.request_timeout {
            return Err(invalid(
                "lock_ttl",
                format!(
                    "{} must be longer than refresh.request_timeout ({}), or a slow fetch loses the lock",
                    humantime::format_duration(lock_ttl),
                    humantime::format_duration(refresh.request_timeout)
                ),
            ));
        }
        let timeout = duration("timeout", &self.timeout, Duration::from_secs(1))?;
        if timeout.is_zero() || timeout > Duration::from_secs(30) {
            return Err(invalid("timeout", "must be above zero and at most 30s"));
        }
        Ok(SharedConfig {
            url,
            username: self.username.filter(|u| !u.is_empty()),
            password: self.password,
            ca_file: self.ca_file,
            key_prefix,
            mode,
            lock_ttl,
            timeout,
        })
    }
}
