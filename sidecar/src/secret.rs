//! Secrets and private keys, read from files (Kubernetes Secret volumes) or
//! the environment, and never printed.
//!
//! A file source is read again on every use. Token fetches are rare, so this
//! costs nothing and a rotated Secret volume takes effect on the next fetch
//! without a restart.

use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;

/// Where a secret comes from.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawSource")]
pub enum SecretSource {
    File(PathBuf),
    Env(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    file: Option<PathBuf>,
    env: Option<String>,
}

impl TryFrom<RawSource> for SecretSource {
    type Error = SecretError;
    fn try_from(raw: RawSource) -> Result<Self, SecretError> {
        SecretSource::from_parts(raw.file, raw.env)
    }
}

/// Why a secret could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("set exactly one of `file` or `env`")]
    Ambiguous,
    #[error("secret file {path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("secret file {0} is empty")]
    EmptyFile(PathBuf),
    #[error("environment variable {0} is not set or empty")]
    Env(String),
}

impl SecretSource {
    pub fn from_parts(file: Option<PathBuf>, env: Option<String>) -> Result<Self, SecretError> {
        match (file, env) {
            (Some(path), None) => Ok(SecretSource::File(path)),
            (None, Some(name)) => Ok(SecretSource::Env(name)),
            _ => Err(SecretError::Ambiguous),
        }
    }

    /// Reads the secret now. Surrounding whitespace (a trailing newline in a
    /// mounted file) is trimmed.
    pub fn read(&self) -> Result<Secret, SecretError> {
        match self {
            SecretSource::File(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| SecretError::File {
                    path: path.clone(),
                    source,
                })?;
                let trimmed = text.trim();
                if trimmed.is_empty() {
                    return Err(SecretError::EmptyFile(path.clone()));
                }
                Ok(Secret(trimmed.to_owned()))
            }
            SecretSource::Env(name) => match std::env::var(name) {
                Ok(v) if !v.trim().is_empty() => Ok(Secret(v.trim().to_owned())),
                _ => Err(SecretError::Env(name.clone())),
            },
        }
    }

    /// Checks at start-up that the secret can be read.
    pub fn check(&self) -> Result<(), SecretError> {
        self.read().map(drop)
    }
}

impl fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretSource::File(p) => write!(f, "file:{}", p.display()),
            SecretSource::Env(n) => write!(f, "env:{n}"),
        }
    }
}

/// A secret value: a client secret, a private key, an access token or an
/// assertion. `Debug` and `Display` redact it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Secret(value)
    }

    /// The value itself. Call sites are few and none of them logs.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Debug and Display of a secret never show its value.
    #[test]
    fn secret_is_redacted() {
        let s = Secret::new("hunter2-very-secret".into());
        assert!(!format!("{s:?}").contains("hunter2"));
        assert!(!format!("{s}").contains("hunter2"));
    }

    /// A file source is re-read on every use, so rotation needs no restart.
    #[test]
    fn file_source_is_reread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "one\n").unwrap();
        let src = SecretSource::File(path.clone());
        assert_eq!(src.read().unwrap().expose(), "one");
        std::fs::write(&path, "two").unwrap();
        assert_eq!(src.read().unwrap().expose(), "two");
    }

    /// Missing and empty secrets name their source.
    #[test]
    fn missing_secret_names_source() {
        let err = SecretSource::File("/nonexistent/x".into())
            .read()
            .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/x"));
        let err = SecretSource::Env("AUTHPROXY_TEST_UNSET_VAR".into())
            .read()
            .unwrap_err();
        assert!(err.to_string().contains("AUTHPROXY_TEST_UNSET_VAR"));
    }
}
