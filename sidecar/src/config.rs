//! Typed configuration: one YAML file plus environment overrides, validated
//! in full at start-up.
//!
//! Overrides use `AUTHPROXY__<path>` where `__` separates keys, for example
//! `AUTHPROXY__LISTEN__TOKENS=127.0.0.1:15101` or
//! `AUTHPROXY__TENANTS__ACME__CLIENT_ID=acme-2`. Keys match existing keys
//! case-insensitively; values are parsed as YAML scalars.
//!
//! YAML is read with `serde-saphyr` into a `serde_json::Value` tree (so the
//! overrides can edit it), then deserialized with `serde_path_to_error`, so
//! every error names the key it is about.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::secret::SecretSource;

/// Prefix of environment variables that override configuration keys.
pub const ENV_PREFIX: &str = "AUTHPROXY__";

/// A configuration problem: which key, and what is wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config key {key}: {message}")]
    Invalid { key: String, message: String },
}

impl ConfigError {
    fn invalid(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// The whole sidecar configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: Listen,
    pub refresh: RefreshPolicy,
    pub shutdown: Shutdown,
    pub tenants: Vec<Tenant>,
    /// One token per tenant shared by all replicas through Redis (opt-in).
    pub shared: Option<crate::shared::SharedConfig>,
}

#[derive(Debug, Clone, Copy)]
pub struct Listen {
    /// Loopback-only listener that serves tokens to the filter.
    pub tokens: SocketAddr,
    /// Probes and metrics, reachable by the kubelet.
    pub probes: SocketAddr,
}

/// When to refresh, how to back off, when a token stops being served.
#[derive(Debug, Clone)]
pub struct RefreshPolicy {
    /// Refresh at this fraction of the token's lifetime.
    pub fraction: f64,
    /// Spread refreshes by up to this fraction of the lifetime, either way.
    pub jitter: f64,
    /// Stop serving a token this long before it actually expires.
    pub expiry_margin: Duration,
    /// Lifetime assumed when a token response has no `expires_in`.
    pub default_lifetime: Duration,
    /// First retry delay after a transient failure.
    pub backoff_initial: Duration,
    /// Ceiling of the exponential backoff.
    pub backoff_max: Duration,
    /// Retry delay after a permanent failure (`invalid_client`, ...).
    pub permanent_retry: Duration,
    /// At most one forced refresh per tenant per this interval (upstream 401s).
    pub rejection_min_interval: Duration,
    /// Timeout of one token request.
    pub request_timeout: Duration,
    /// Lifetimes below this (`expires_in` 0, 0.001, ...) are raised to it.
    pub min_lifetime: Duration,
    /// Lifetimes above this (10 years, ...) are lowered to it.
    pub max_lifetime: Duration,
    /// Hard cap on token requests per tenant in any 60 s window.
    pub max_fetches_per_minute: u32,
    /// Token requests in flight at once, across all tenants.
    pub max_concurrent_fetches: usize,
    /// First fetches start at a random point in this window (None: 2 ms per
    /// tenant, at most 2 s).
    pub start_spread: Option<Duration>,
    /// JWT assertions are dated this far in the past (`iat`, `nbf`), so an
    /// auth server whose clock is behind still accepts them.
    pub clock_skew: Duration,
}

impl RefreshPolicy {
    /// The window over which first fetches are spread for `tenants` tenants.
    pub fn start_spread_for(&self, tenants: usize) -> Duration {
        self.start_spread.unwrap_or_else(|| {
            (Duration::from_millis(2) * tenants.min(1000) as u32).min(Duration::from_secs(2))
        })
    }
}

/// What the sidecar does between SIGTERM and exit.
#[derive(Debug, Clone)]
pub struct Shutdown {
    /// Envoy's admin address: on SIGTERM the sidecar tells this Envoy to
    /// stop accepting and drain, then to quit. None: don't touch Envoy.
    pub envoy_admin: Option<SocketAddr>,
    /// How long Envoy may take to finish in-flight requests.
    pub drain_timeout: Duration,
    /// After SIGTERM, keep serving tokens at most this long while a client
    /// (Envoy's fetcher) still polls.
    pub serve_max: Duration,
    /// Exit once no client has polled for this long.
    pub idle: Duration,
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown {
            envoy_admin: None,
            drain_timeout: Duration::from_secs(30),
            serve_max: Duration::from_secs(40),
            idle: Duration::from_secs(2),
        }
    }
}

impl Default for RefreshPolicy {
    fn default() -> Self {
        RefreshPolicy {
            fraction: 0.5,
            jitter: 0.1,
            expiry_margin: Duration::from_secs(30),
            default_lifetime: Duration::from_secs(300),
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            permanent_retry: Duration::from_secs(300),
            rejection_min_interval: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            min_lifetime: Duration::from_secs(10),
            max_lifetime: Duration::from_secs(86400),
            max_fetches_per_minute: 30,
            max_concurrent_fetches: 16,
            start_spread: None,
            clock_skew: Duration::from_secs(30),
        }
    }
}

/// One credential: how to obtain a token for one tenant.
#[derive(Debug, Clone)]
pub struct Tenant {
    pub id: String,
    pub token_url: url::Url,
    /// `token_url` may be plain `http://` to a host that is not loopback.
    pub allow_http: bool,
    pub client_id: String,
    pub auth: ClientAuth,
    pub grant: Grant,
    pub scope: Option<String>,
    pub audience: Option<String>,
    pub resource: Option<String>,
    pub extra_params: BTreeMap<String, String>,
    pub extra_headers: Vec<(reqwest::header::HeaderName, reqwest::header::HeaderValue)>,
    /// Opt-in, off by default: the pod is unready while this tenant has no
    /// token. Its consequence: one tenant's auth trouble takes every
    /// tenant's traffic off every replica.
    pub required: bool,
    /// Who may use this tenant through Envoy (delivered to the filter with
    /// the token snapshot). Empty: no authenticated caller may.
    pub callers: Vec<protocol::CallerRule<'static>>,
}

/// How the client authenticates to the token endpoint.
#[derive(Debug, Clone)]
pub enum ClientAuth {
    /// HTTP Basic with the client id and secret.
    SecretBasic(SecretSource),
    /// `client_id` and `client_secret` in the form body.
    SecretPost(SecretSource),
    /// RFC 7523 client assertion signed with a private key.
    PrivateKeyJwt(SigningKey),
}

/// A private key used to sign assertions.
#[derive(Debug, Clone)]
pub struct SigningKey {
    pub alg: JwtAlg,
    pub kid: Option<String>,
    pub key: SecretSource,
    pub lifetime: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum JwtAlg {
    RS256,
    ES256,
}

/// The grant type of the token request.
#[derive(Debug, Clone)]
pub enum Grant {
    ClientCredentials,
    /// RFC 7523 §2.1: a signed assertion is the grant itself.
    JwtBearer {
        key: SigningKey,
        issuer: String,
        subject: String,
    },
}

// ---- raw, as written in YAML ------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    listen: RawListen,
    #[serde(default)]
    refresh: RawRefresh,
    #[serde(default)]
    shutdown: RawShutdown,
    #[serde(default)]
    tenants: BTreeMap<String, RawTenant>,
    shared: Option<crate::shared::config::RawShared>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawListen {
    tokens: Option<String>,
    probes: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRefresh {
    fraction: Option<f64>,
    jitter: Option<f64>,
    expiry_margin: Option<String>,
    default_lifetime: Option<String>,
    backoff_initial: Option<String>,
    backoff_max: Option<String>,
    permanent_retry: Option<String>,
    rejection_min_interval: Option<String>,
    request_timeout: Option<String>,
    min_lifetime: Option<String>,
    max_lifetime: Option<String>,
    max_fetches_per_minute: Option<u32>,
    max_concurrent_fetches: Option<usize>,
    start_spread: Option<String>,
    clock_skew: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawShutdown {
    envoy_admin: Option<String>,
    drain_timeout: Option<String>,
    serve_max: Option<String>,
    idle: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTenant {
    token_url: String,
    #[serde(default)]
    allow_http: bool,
    client_id: String,
    auth: RawAuth,
    #[serde(default)]
    grant: Option<RawGrant>,
    scope: Option<String>,
    audience: Option<String>,
    resource: Option<String>,
    #[serde(default)]
    extra_params: BTreeMap<String, String>,
    #[serde(default)]
    extra_headers: BTreeMap<String, String>,
    #[serde(default)]
    required: bool,
    #[serde(default)]
    callers: Vec<RawCaller>,
}

/// One allow-list entry under `tenants.<id>.callers`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCaller {
    id: String,
    #[serde(default)]
    methods: Vec<String>,
    #[serde(default)]
    paths: Vec<String>,
}

impl RawCaller {
    fn validate(self, key: &str) -> Result<protocol::CallerRule<'static>, ConfigError> {
        if let Some(why) = protocol::invalid_caller_pattern(&self.id) {
            return Err(ConfigError::invalid(
                format!("{key}.id"),
                format!("{:?} {why}", self.id),
            ));
        }
        for (i, m) in self.methods.iter().enumerate() {
            if !protocol::METHODS.contains(&m.as_str()) {
                return Err(ConfigError::invalid(
                    format!("{key}.methods[{i}]"),
                    format!("{m:?} is not one of {}", protocol::METHODS.join(", ")),
                ));
            }
        }
        for (i, p) in self.paths.iter().enumerate() {
            let ok = p.starts_with('/')
                && p.len() <= 1024
                && p.bytes()
                    .all(|b| b.is_ascii_graphic() && b != b'?' && b != b'#');
            if !ok {
                return Err(ConfigError::invalid(
                    format!("{key}.paths[{i}]"),
                    format!("{p:?} is not a path prefix (starts with /, visible ASCII, no ? or #)"),
                ));
            }
        }
        Ok(protocol::CallerRule {
            id: self.id.into(),
            methods: self.methods.into_iter().map(Into::into).collect(),
            paths: self.paths.into_iter().map(Into::into).collect(),
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    method: String,
    secret: Option<SecretSource>,
    key: Option<RawKey>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKey {
    alg: JwtAlg,
    kid: Option<String>,
    file: Option<PathBuf>,
    env: Option<String>,
    lifetime: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGrant {
    #[serde(rename = "type")]
    kind: String,
    issuer: Option<String>,
    subject: Option<String>,
    key: Option<RawKey>,
}

impl Config {
    /// Reads `path`, applies `AUTHPROXY__*` overrides from `env`, validates.
    pub fn load(
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::from_yaml(&text, path, env)
    }

    /// Parses YAML text (named `origin` in errors), applies overrides, validates.
    pub fn from_yaml(
        text: &str,
        origin: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut doc: Value = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_saphyr::from_str_with_options(text, yaml_options()).map_err(|e| {
                ConfigError::Parse {
                    path: origin.to_owned(),
                    message: e.to_string(),
                }
            })?
        };
        if doc.is_null() {
            doc = Value::Object(Default::default());
        }
        let mut overrides: Vec<(String, String)> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX))
            .collect();
        overrides.sort();
        for (key, value) in overrides {
            apply_override(&mut doc, &key[ENV_PREFIX.len()..], &value)?;
        }
        let raw: RawConfig = serde_path_to_error::deserialize(doc).map_err(|e| {
            let key = e.path().to_string();
            let message = e.into_inner().to_string();
            if key.is_empty() || key == "." {
                ConfigError::Parse {
                    path: origin.to_owned(),
                    message,
                }
            } else {
                ConfigError::invalid(key, message)
            }
        })?;
        raw.validate()
    }

    /// Looks up a tenant by id.
    pub fn tenant(&self, id: &str) -> Option<&Tenant> {
        self.tenants.iter().find(|t| t.id == id)
    }
}

/// Sets `path` (segments separated by `__`) in `doc` to the YAML scalar `value`.
fn apply_override(doc: &mut Value, path: &str, value: &str) -> Result<(), ConfigError> {
    let key_name = format!("{ENV_PREFIX}{path}");
    let segments: Vec<&str> = path.split("__").collect();
    if segments.iter().any(|s| s.is_empty()) {
        return Err(ConfigError::invalid(key_name, "empty key segment"));
    }
    let parsed: Value = serde_saphyr::from_str_with_options::<Value>(value, yaml_options())
        .ok()
        .filter(|v| !v.is_object() && !v.is_array() && !v.is_null())
        .unwrap_or_else(|| Value::String(value.to_owned()));
    let mut node = doc;
    for (i, segment) in segments.iter().enumerate() {
        let map = match node {
            Value::Object(m) => m,
            _ => {
                return Err(ConfigError::invalid(
                    key_name,
                    "overrides a key below a value that is not a mapping",
                ))
            }
        };
        let existing = map
            .keys()
            .find(|k| k.eq_ignore_ascii_case(segment))
            .cloned();
        let key = existing.unwrap_or_else(|| segment.to_ascii_lowercase());
        if i + 1 == segments.len() {
            map.insert(key, parsed);
            return Ok(());
        }
        node = map
            .entry(key)
            .or_insert_with(|| Value::Object(Default::default()));
    }
    Ok(())
}

fn duration(key: &str, raw: &Option<String>, default: Duration) -> Result<Duration, ConfigError> {
    match raw {
        None => Ok(default),
        Some(text) => humantime::parse_duration(text)
            .map_err(|e| ConfigError::invalid(key, format!("{text:?} is not a duration ({e})"))),
    }
}

fn addr(key: &str, raw: &Option<String>, default: &str) -> Result<SocketAddr, ConfigError> {
    let text = raw.as_deref().unwrap_or(default);
    text.parse()
        .map_err(|_| ConfigError::invalid(key, format!("{text:?} is not an ip:port address")))
}

impl RawConfig {
    fn validate(self) -> Result<Config, ConfigError> {
        let listen = Listen {
            tokens: addr("listen.tokens", &self.listen.tokens, "127.0.0.1:15001")?,
            probes: addr("listen.probes", &self.listen.probes, "0.0.0.0:15021")?,
        };
        if !listen.tokens.ip().is_loopback() {
            return Err(ConfigError::invalid(
                "listen.tokens",
                format!(
                    "{} is not a loopback address; tokens are served on loopback only",
                    listen.tokens
                ),
            ));
        }
        let refresh = self.refresh.validate()?;
        let shutdown = self.shutdown.validate()?;
        if self.tenants.is_empty() {
            return Err(ConfigError::invalid(
                "tenants",
                "at least one tenant is required",
            ));
        }
        let tenants = self
            .tenants
            .into_iter()
            .map(|(id, raw)| raw.validate(id))
            .collect::<Result<Vec<_>, _>>()?;
        let shared = self.shared.map(|s| s.validate(&refresh)).transpose()?;
        for tenant in &tenants {
            for key in [&tenant.auth_key(), &tenant.grant_key()]
                .into_iter()
                .flatten()
            {
                if key.lifetime <= refresh.clock_skew {
                    return Err(ConfigError::invalid(
                        "refresh.clock_skew",
                        format!(
                            "must be shorter than every assertion lifetime (tenant {} has {:?})",
                            tenant.id, key.lifetime
                        ),
                    ));
                }
            }
        }
        Ok(Config {
            listen,
            refresh,
            shutdown,
            tenants,
            shared,
        })
    }
}

impl RawRefresh {
    fn validate(self) -> Result<RefreshPolicy, ConfigError> {
        let d = RefreshPolicy::default();
        let fraction = self.fraction.unwrap_or(d.fraction);
        if !(fraction > 0.0 && fraction < 1.0) {
            return Err(ConfigError::invalid(
                "refresh.fraction",
                format!("{fraction} is not between 0 and 1 (exclusive)"),
            ));
        }
        let jitter = self.jitter.unwrap_or(d.jitter);
        if !(0.0..=0.5).contains(&jitter) || fraction - jitter <= 0.0 || fraction + jitter >= 1.0 {
            return Err(ConfigError::invalid(
                "refresh.jitter",
                format!("{jitter} must be in 0..=0.5 and keep fraction±jitter inside (0, 1)"),
            ));
        }
        let policy = RefreshPolicy {
            fraction,
            jitter,
            expiry_margin: duration(
                "refresh.expiry_margin",
                &self.expiry_margin,
                d.expiry_margin,
            )?,
            default_lifetime: duration(
                "refresh.default_lifetime",
                &self.default_lifetime,
                d.default_lifetime,
            )?,
            backoff_initial: duration(
                "refresh.backoff_initial",
                &self.backoff_initial,
                d.backoff_initial,
            )?,
            backoff_max: duration("refresh.backoff_max", &self.backoff_max, d.backoff_max)?,
            permanent_retry: duration(
                "refresh.permanent_retry",
                &self.permanent_retry,
                d.permanent_retry,
            )?,
            rejection_min_interval: duration(
                "refresh.rejection_min_interval",
                &self.rejection_min_interval,
                d.rejection_min_interval,
            )?,
            request_timeout: duration(
                "refresh.request_timeout",
                &self.request_timeout,
                d.request_timeout,
            )?,
            min_lifetime: duration("refresh.min_lifetime", &self.min_lifetime, d.min_lifetime)?,
            max_lifetime: duration("refresh.max_lifetime", &self.max_lifetime, d.max_lifetime)?,
            max_fetches_per_minute: self
                .max_fetches_per_minute
                .unwrap_or(d.max_fetches_per_minute),
            max_concurrent_fetches: self
                .max_concurrent_fetches
                .unwrap_or(d.max_concurrent_fetches),
            start_spread: match &self.start_spread {
                None => None,
                Some(_) => Some(duration(
                    "refresh.start_spread",
                    &self.start_spread,
                    Duration::ZERO,
                )?),
            },
            clock_skew: duration("refresh.clock_skew", &self.clock_skew, d.clock_skew)?,
        };
        if policy.backoff_initial.is_zero() {
            return Err(ConfigError::invalid(
                "refresh.backoff_initial",
                "must be above zero",
            ));
        }
        if policy.backoff_max < policy.backoff_initial {
            return Err(ConfigError::invalid(
                "refresh.backoff_max",
                "must be at least refresh.backoff_initial",
            ));
        }
        if policy.default_lifetime <= policy.expiry_margin {
            return Err(ConfigError::invalid(
                "refresh.default_lifetime",
                "must be longer than refresh.expiry_margin",
            ));
        }
        if policy.request_timeout.is_zero() {
            return Err(ConfigError::invalid(
                "refresh.request_timeout",
                "must be above zero",
            ));
        }
        if policy.min_lifetime < Duration::from_secs(1) {
            return Err(ConfigError::invalid(
                "refresh.min_lifetime",
                "must be at least 1s (the default, 10s, is what production should use)",
            ));
        }
        if policy.max_lifetime < policy.min_lifetime {
            return Err(ConfigError::invalid(
                "refresh.max_lifetime",
                "must be at least refresh.min_lifetime",
            ));
        }
        if policy.max_fetches_per_minute == 0 {
            return Err(ConfigError::invalid(
                "refresh.max_fetches_per_minute",
                "must be above zero",
            ));
        }
        if policy.max_concurrent_fetches == 0 {
            return Err(ConfigError::invalid(
                "refresh.max_concurrent_fetches",
                "must be above zero",
            ));
        }
        Ok(policy)
    }
}

impl RawShutdown {
    fn validate(self) -> Result<Shutdown, ConfigError> {
        let d = Shutdown::default();
        let envoy_admin = match &self.envoy_admin {
            None => None,
            Some(_) => Some(addr("shutdown.envoy_admin", &self.envoy_admin, "")?),
        };
        if envoy_admin.is_some_and(|a| !a.ip().is_loopback()) {
            return Err(ConfigError::invalid(
                "shutdown.envoy_admin",
                "must be a loopback address (Envoy's admin interface in this pod)",
            ));
        }
        let shutdown = Shutdown {
            envoy_admin,
            drain_timeout: duration(
                "shutdown.drain_timeout",
                &self.drain_timeout,
                d.drain_timeout,
            )?,
            serve_max: duration("shutdown.serve_max", &self.serve_max, d.serve_max)?,
            idle: duration("shutdown.idle", &self.idle, d.idle)?,
        };
        if shutdown.idle.is_zero() {
            return Err(ConfigError::invalid("shutdown.idle", "must be above zero"));
        }
        Ok(shutdown)
    }
}

/// `localhost`, 127.0.0.0/8 or ::1: a token server in this pod or on this host.
fn is_loopback_host(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

impl Tenant {
    /// The client-authentication signing key, if any.
    pub fn auth_key(&self) -> Option<&SigningKey> {
        match &self.auth {
            ClientAuth::PrivateKeyJwt(k) => Some(k),
            _ => None,
        }
    }

    /// The JWT-bearer grant's signing key, if any.
    pub fn grant_key(&self) -> Option<&SigningKey> {
        match &self.grant {
            Grant::JwtBearer { key, .. } => Some(key),
            Grant::ClientCredentials => None,
        }
    }
}
impl RawKey {
    fn validate(self, key: &str) -> Result<SigningKey, ConfigError> {
        let lifetime = duration(
            &format!("{key}.lifetime"),
            &self.lifetime,
            Duration::from_secs(60),
        )?;
        if lifetime.is_zero() || lifetime > Duration::from_secs(300) {
            return Err(ConfigError::invalid(
                format!("{key}.lifetime"),
                "must be above zero and at most 5m (assertions are short-lived)",
            ));
        }
        let source = SecretSource::from_parts(self.file, self.env)
            .map_err(|e| ConfigError::invalid(key, e.to_string()))?;
        let signing = SigningKey {
            alg: self.alg,
            kid: self.kid,
            key: source,
            lifetime,
        };
        crate::oauth::check_signing_key(&signing).map_err(|e| ConfigError::invalid(key, e))?;
        Ok(signing)
    }
}

impl RawTenant {
    fn validate(self, id: String) -> Result<Tenant, ConfigError> {
        let at = |field: &str| format!("tenants.{id}.{field}");
        if !protocol::valid_tenant_id(&id) {
            return Err(ConfigError::invalid(
                format!("tenants.{id}"),
                format!("tenant ids are {}", protocol::TENANT_ID_RULE),
            ));
        }
        let token_url = url::Url::parse(&self.token_url).map_err(|e| {
            ConfigError::invalid(at("token_url"), format!("{:?}: {e}", self.token_url))
        })?;
        match token_url.scheme() {
            "https" => {}
            "http" if self.allow_http || is_loopback_host(&token_url) => {}
            "http" => {
                return Err(ConfigError::invalid(
                    at("token_url"),
                    "must be https (plain http only to a loopback host, or with allow_http: true)",
                ))
            }
            _ => {
                return Err(ConfigError::invalid(
                    at("token_url"),
                    "scheme must be https",
                ))
            }
        }
        if self.client_id.is_empty() {
            return Err(ConfigError::invalid(at("client_id"), "must not be empty"));
        }
        let secret = |s: Option<SecretSource>| -> Result<SecretSource, ConfigError> {
            let s = s.ok_or_else(|| {
                ConfigError::invalid(at("auth.secret"), "required by this auth.method")
            })?;
            s.check()
                .map_err(|e| ConfigError::invalid(at("auth.secret"), e.to_string()))?;
            Ok(s)
        };
        let auth = match self.auth.method.as_str() {
            "client_secret_basic" => ClientAuth::SecretBasic(secret(self.auth.secret)?),
            "client_secret_post" => ClientAuth::SecretPost(secret(self.auth.secret)?),
            "private_key_jwt" => {
                let key = self.auth.key.ok_or_else(|| {
                    ConfigError::invalid(at("auth.key"), "required by auth.method private_key_jwt")
                })?;
                ClientAuth::PrivateKeyJwt(key.validate(&at("auth.key"))?)
            }
            other => {
                return Err(ConfigError::invalid(
                    at("auth.method"),
                    format!(
                        "{other:?} is not one of client_secret_basic, client_secret_post, private_key_jwt"
                    ),
                ))
            }
        };
        let grant = match self.grant {
            None => Grant::ClientCredentials,
            Some(g) if g.kind == "client_credentials" => Grant::ClientCredentials,
            Some(g) if g.kind == "jwt_bearer" => {
                let key = g.key.ok_or_else(|| {
                    ConfigError::invalid(at("grant.key"), "required by grant type jwt_bearer")
                })?;
                Grant::JwtBearer {
                    key: key.validate(&at("grant.key"))?,
                    issuer: g.issuer.unwrap_or_else(|| self.client_id.clone()),
                    subject: g.subject.unwrap_or_else(|| self.client_id.clone()),
                }
            }
            Some(g) => {
                return Err(ConfigError::invalid(
                    at("grant.type"),
                    format!("{:?} is not one of client_credentials, jwt_bearer", g.kind),
                ))
            }
        };
        const RESERVED: [&str; 6] = [
            "grant_type",
            "client_id",
            "client_secret",
            "client_assertion",
            "client_assertion_type",
            "assertion",
        ];
        for name in self.extra_params.keys() {
            if RESERVED.contains(&name.as_str()) {
                return Err(ConfigError::invalid(
                    at(&format!("extra_params.{name}")),
                    "is set by the sidecar itself",
                ));
            }
        }
        let mut extra_headers = Vec::new();
        for (name, value) in self.extra_headers {
            let key = at(&format!("extra_headers.{name}"));
            let n = reqwest::header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| ConfigError::invalid(&key, "not a valid header name"))?;
            if n == reqwest::header::AUTHORIZATION {
                return Err(ConfigError::invalid(&key, "is set by the sidecar itself"));
            }
            let v = reqwest::header::HeaderValue::from_str(&value)
                .map_err(|_| ConfigError::invalid(&key, "not a valid header value"))?;
            extra_headers.push((n, v));
        }
        let callers = self
            .callers
            .into_iter()
            .enumerate()
            .map(|(i, c)| c.validate(&at(&format!("callers[{i}]"))))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Tenant {
            id,
            callers,
            token_url,
            allow_http: self.allow_http,
            client_id: self.client_id,
            auth,
            grant,
            scope: self.scope,
            audience: self.audience,
            resource: self.resource,
            extra_params: self.extra_params,
            extra_headers,
            required: self.required,
        })
    }
}

#[cfg(test)]
mod tests;

/// YAML 1.2 scalars: only `true`/`false` are booleans, so a caller id, a
/// tenant or a secret spelt `y`, `no` or `on` stays a string.
fn yaml_options() -> serde_saphyr::Options {
    serde_saphyr::options! { strict_booleans: true }
}
