//! Plugin configuration, parsed and validated once in `on_configure`.
//!
//! The same `.wasm` runs in several roles, chosen by the plugin's `root_id`:
//! - `token_fetcher`: a singleton Wasm service that long-polls the sidecar and
//!   publishes tokens into shared data;
//! - `bearer_injector`: the HTTP filter on every worker.
//!
//! A new role (for example a response cache) adds its root id and its
//! config type here, its module beside `injector.rs`, and one arm in
//! `wasm.rs`'s `Role`.

use serde::Deserialize;

/// Root id of the singleton service that talks to the sidecar.
pub const FETCHER_ROOT_ID: &str = "token_fetcher";
/// Root id of the HTTP filter.
pub const INJECTOR_ROOT_ID: &str = "bearer_injector";

/// Shared-data key holding the sidecar's latest snapshot (JSON, verbatim).
pub const SNAPSHOT_KEY: &str = "authproxy.tokens";
/// Shared-data key holding the snapshot's version (decimal ASCII), read on
/// every tick so the snapshot itself is copied only when it changed.
pub const VERSION_KEY: &str = "authproxy.version";
/// Shared queue on which filters report upstream 401s to the fetcher.
pub const REJECTION_QUEUE: &str = "authproxy.rejections";
/// Largest `clock_allowance_ms`: it is an allowance, not a second margin.
pub const MAX_CLOCK_ALLOWANCE_MS: u64 = 5_000;

/// Filter-state names (Envoy: `wasm.<name>`) the injector writes for the
/// audit access log: `%FILTER_STATE(wasm.authproxy_tenant:PLAIN)%`.
pub const AUDIT_TENANT: &str = "authproxy_tenant";
/// The version of the token injected (never the token).
pub const AUDIT_TOKEN_VERSION: &str = "authproxy_token_version";
/// Response header of every refusal, with its stable code, for the audit
/// log (`%RESP(X-AUTHPROXY-ERROR)%`); Envoy's own refusals (JWT, method)
/// get it from the `local_reply_config` in the Envoy configuration.
pub const ERROR_HEADER: &str = "x-authproxy-error";

/// How the caller is identified. Envoy establishes the identity before the
/// filter runs (a verified client certificate, a verified JWT); the filter
/// reads it from a property no request header can set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// No caller identity: any caller that reaches the listener may use any
    /// tenant. Only for local development and the demo; logged at start.
    Anonymous,
    /// Envoy's `jwt_authn` verified a JWT; the identity is a claim of its
    /// payload, read from the dynamic metadata at the one property path.
    Jwt { properties: Vec<Vec<String>> },
    /// The listener required a client certificate; the identity is its
    /// first URI SAN (SPIFFE ID), DNS SAN or subject: the first of the
    /// configured fields the certificate has.
    Mtls { properties: Vec<Vec<String>> },
}

impl Identity {
    pub fn mode(&self) -> &'static str {
        match self {
            Identity::Anonymous => "anonymous",
            Identity::Jwt { .. } => "jwt",
            Identity::Mtls { .. } => "mtls",
        }
    }

    /// The property paths to read the identity from, in order (the first
    /// non-empty one is the identity); `None` when anonymous.
    pub fn properties(&self) -> Option<&[Vec<String>]> {
        match self {
            Identity::Anonymous => None,
            Identity::Jwt { properties } | Identity::Mtls { properties } => Some(properties),
        }
    }
}

/// Configuration of the `bearer_injector` HTTP filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InjectorConfig {
    /// How callers are identified (required: no silent default).
    pub identity: Identity,
    /// Lower-case request header naming the tenant.
    pub tenant_header: String,
    /// Tenant used when the request has no tenant header.
    pub default_tenant: Option<String>,
    /// How often each worker refreshes its VM-local copy from shared data.
    pub tick_ms: u64,
    /// A token is dropped this long before its `expires_at_ms` (the instant
    /// the sidecar stops serving it): room for tick lateness and clock
    /// differences between Envoy and the sidecar, nothing more. The sidecar
    /// owns the expiry rule (issue 10).
    pub clock_allowance_ms: u64,
    /// `Retry-After` value (seconds) on a 503, ready to send.
    pub retry_after: String,
    /// vm_id whose shared queue carries 401 reports (the fetcher's).
    pub vm_id: String,
}

/// Configuration of the `token_fetcher` singleton service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetcherConfig {
    /// Envoy cluster of the sidecar's loopback token listener.
    pub sidecar_cluster: String,
    /// `:authority` sent to the sidecar.
    pub sidecar_authority: String,
    /// Long-poll duration asked of the sidecar.
    pub poll_wait_ms: u64,
    /// First retry delay after a failed poll; doubles up to `retry_max_ms`.
    pub retry_initial_ms: u64,
    pub retry_max_ms: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIdentity {
    mode: String,
    /// jwt: the `payload_in_metadata` name of Envoy's `jwt_authn` provider.
    jwt_payload: Option<String>,
    /// jwt: the claim that names the caller.
    claim: Option<String>,
    /// mtls: `uri` (SPIFFE ID), `dns` or `subject`.
    san: Option<RawSan>,
}

/// `san`: one field, or several tried in order (`["uri", "dns"]`: the DNS
/// SAN when the certificate has no URI SAN).
#[derive(Deserialize)]
#[serde(untagged)]
enum RawSan {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInjector {
    identity: Option<RawIdentity>,
    tenant_header: Option<String>,
    default_tenant: Option<String>,
    tick_ms: Option<u64>,
    clock_allowance_ms: Option<u64>,
    /// Renamed: refused with a message that says so.
    expiry_margin_ms: Option<serde_json::Value>,
    retry_after_secs: Option<u32>,
    vm_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFetcher {
    sidecar_cluster: Option<String>,
    sidecar_authority: Option<String>,
    poll_wait_ms: Option<u64>,
    retry_initial_ms: Option<u64>,
    retry_max_ms: Option<u64>,
}

fn parse_json<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, String> {
    let bytes = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}".as_slice()
    } else {
        bytes
    };
    serde_json::from_slice(bytes).map_err(|e| format!("plugin configuration is not valid: {e}"))
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

impl RawIdentity {
    fn validate(self) -> Result<Identity, String> {
        let mode = self.mode.as_str();
        let unused = |key: &str, set: bool| match set {
            true => Err(format!("identity.{key}: not used by mode {mode:?}")),
            false => Ok(()),
        };
        match mode {
            "anonymous" => {
                unused("jwt_payload", self.jwt_payload.is_some())?;
                unused("claim", self.claim.is_some())?;
                unused("san", self.san.is_some())?;
                Ok(Identity::Anonymous)
            }
            "jwt" => {
                unused("san", self.san.is_some())?;
                let payload = self.jwt_payload.unwrap_or_else(|| "jwt_payload".into());
                let claim = self.claim.unwrap_or_else(|| "sub".into());
                if payload.is_empty() || claim.is_empty() {
                    return Err("identity.jwt_payload/claim: must not be empty".into());
                }
                Ok(Identity::Jwt {
                    properties: vec![vec![
                        "metadata".into(),
                        "filter_metadata".into(),
                        "envoy.filters.http.jwt_authn".into(),
                        payload,
                        claim,
                    ]],
                })
            }
            "mtls" => {
                unused("jwt_payload", self.jwt_payload.is_some())?;
                unused("claim", self.claim.is_some())?;
                let fields = match self.san {
                    None => vec!["uri".to_string()],
                    Some(RawSan::One(f)) => vec![f],
                    Some(RawSan::Many(fs)) => fs,
                };
                if fields.is_empty() {
                    return Err("identity.san: must name at least one field".into());
                }
                let properties = fields
                    .iter()
                    .map(|f| {
                        let field = match f.as_str() {
                            "uri" => "uri_san_peer_certificate",
                            "dns" => "dns_san_peer_certificate",
                            "subject" => "subject_peer_certificate",
                            other => {
                                return Err(format!(
                                    "identity.san: {other:?} is not uri, dns or subject"
                                ))
                            }
                        };
                        Ok(vec!["connection".to_string(), field.to_string()])
                    })
                    .collect::<Result<Vec<_>, String>>()?;
                Ok(Identity::Mtls { properties })
            }
            other => Err(format!(
                "identity.mode: {other:?} is not jwt, mtls or anonymous"
            )),
        }
    }
}

impl InjectorConfig {
    /// Parses and validates the JSON plugin configuration.
    pub fn parse(bytes: &[u8]) -> Result<InjectorConfig, String> {
        let raw: RawInjector = parse_json(bytes)?;
        let identity = raw
            .identity
            .ok_or("identity: required: {\"mode\": \"jwt\" | \"mtls\" | \"anonymous\"}")?
            .validate()?;
        let tenant_header = raw
            .tenant_header
            .unwrap_or_else(|| "x-tenant-id".into())
            .to_ascii_lowercase();
        if !is_token(&tenant_header) || tenant_header.starts_with(':') {
            return Err(format!(
                "tenant_header: {tenant_header:?} is not a valid header name"
            ));
        }
        if tenant_header == "authorization" {
            return Err("tenant_header: must not be authorization".into());
        }
        if let Some(t) = &raw.default_tenant {
            if !protocol::valid_tenant_id(t) {
                return Err(format!(
                    "default_tenant: {t:?} is not a tenant id ({})",
                    protocol::TENANT_ID_RULE
                ));
            }
        }
        let tick_ms = raw.tick_ms.unwrap_or(20);
        if !(1..=1000).contains(&tick_ms) {
            return Err(format!("tick_ms: {tick_ms} is not in 1..=1000"));
        }
        if raw.expiry_margin_ms.is_some() {
            return Err(
                "expiry_margin_ms: renamed to clock_allowance_ms, which is only \
                 an allowance for tick lateness and clock skew (default 100); the \
                 sidecar's expires_at_ms decides when a token stops being used"
                    .into(),
            );
        }
        let clock_allowance_ms = raw.clock_allowance_ms.unwrap_or(100.max(2 * tick_ms));
        if clock_allowance_ms < 2 * tick_ms || clock_allowance_ms > MAX_CLOCK_ALLOWANCE_MS {
            return Err(format!(
                "clock_allowance_ms: {clock_allowance_ms} must be at least twice tick_ms \
                 ({tick_ms}) and at most {MAX_CLOCK_ALLOWANCE_MS}"
            ));
        }
        let retry_after_secs = raw.retry_after_secs.unwrap_or(1);
        let vm_id = raw.vm_id.unwrap_or_else(|| "authproxy".into());
        if vm_id.is_empty() {
            return Err("vm_id: must not be empty".into());
        }
        Ok(InjectorConfig {
            identity,
            tenant_header,
            default_tenant: raw.default_tenant,
            tick_ms,
            clock_allowance_ms,
            retry_after: retry_after_secs.to_string(),
            vm_id,
        })
    }
}

impl FetcherConfig {
    /// Parses and validates the JSON plugin configuration.
    pub fn parse(bytes: &[u8]) -> Result<FetcherConfig, String> {
        let raw: RawFetcher = parse_json(bytes)?;
        let sidecar_cluster = raw.sidecar_cluster.unwrap_or_else(|| "sidecar".into());
        if sidecar_cluster.is_empty() {
            return Err("sidecar_cluster: must not be empty".into());
        }
        let sidecar_authority = raw
            .sidecar_authority
            .unwrap_or_else(|| sidecar_cluster.clone());
        let poll_wait_ms = raw.poll_wait_ms.unwrap_or(25_000);
        if !(100..=protocol::MAX_WAIT_MS).contains(&poll_wait_ms) {
            return Err(format!(
                "poll_wait_ms: {poll_wait_ms} is not in 100..={}",
                protocol::MAX_WAIT_MS
            ));
        }
        let retry_initial_ms = raw.retry_initial_ms.unwrap_or(200);
        let retry_max_ms = raw.retry_max_ms.unwrap_or(5_000);
        if retry_initial_ms == 0 || retry_max_ms < retry_initial_ms {
            return Err(format!(
                "retry_initial_ms/retry_max_ms: need 0 < {retry_initial_ms} <= {retry_max_ms}"
            ));
        }
        Ok(FetcherConfig {
            sidecar_cluster,
            sidecar_authority,
            poll_wait_ms,
            retry_initial_ms,
            retry_max_ms,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// An empty configuration takes the documented defaults.
    #[test]
    fn defaults() {
        let err = InjectorConfig::parse(b"").unwrap_err();
        assert!(err.starts_with("identity: required"), "{err}");
        let c = InjectorConfig::parse(br#"{"identity": {"mode": "anonymous"}}"#).unwrap();
        assert_eq!(c.identity, Identity::Anonymous);
        assert_eq!(c.tenant_header, "x-tenant-id");
        assert_eq!(c.default_tenant, None);
        assert_eq!(c.tick_ms, 20);
        assert_eq!(c.clock_allowance_ms, 100);
        let jwt = InjectorConfig::parse(br#"{"identity": {"mode": "jwt"}}"#).unwrap();
        assert_eq!(
            jwt.identity.properties().unwrap()[0].join("/"),
            "metadata/filter_metadata/envoy.filters.http.jwt_authn/jwt_payload/sub"
        );
        let mtls = InjectorConfig::parse(br#"{"identity": {"mode": "mtls"}}"#).unwrap();
        assert_eq!(
            mtls.identity.properties().unwrap()[0].join("/"),
            "connection/uri_san_peer_certificate"
        );
        let fallback =
            InjectorConfig::parse(br#"{"identity": {"mode": "mtls", "san": ["uri", "dns"]}}"#)
                .unwrap();
        let paths: Vec<String> = fallback
            .identity
            .properties()
            .unwrap()
            .iter()
            .map(|p| p.join("/"))
            .collect();
        assert_eq!(
            paths,
            [
                "connection/uri_san_peer_certificate",
                "connection/dns_san_peer_certificate"
            ]
        );
        let f = FetcherConfig::parse(b"{}").unwrap();
        assert_eq!(f.sidecar_cluster, "sidecar");
        assert_eq!(f.poll_wait_ms, 25_000);
    }

    /// Each bad value is refused with a message naming the key.
    #[test]
    fn bad_values_name_their_key() {
        for (json, key) in [
            (r#"{"tenant_header": "bad header"}"#, "tenant_header"),
            (r#"{"tenant_header": "Authorization"}"#, "tenant_header"),
            (r#"{"default_tenant": "no spaces"}"#, "default_tenant"),
            (r#"{"tick_ms": 0}"#, "tick_ms"),
            (
                r#"{"tick_ms": 100, "clock_allowance_ms": 150}"#,
                "clock_allowance_ms",
            ),
            (r#"{"clock_allowance_ms": 60000}"#, "clock_allowance_ms"),
            (
                r#"{"expiry_margin_ms": 5000}"#,
                "renamed to clock_allowance_ms",
            ),
            (r#"{"typo": 1}"#, "typo"),
            (r#"not json"#, "not valid"),
            (r#"{"identity": {"mode": "none"}}"#, "identity.mode"),
            (
                r#"{"identity": {"mode": "mtls", "san": "ip"}}"#,
                "identity.san",
            ),
            (
                r#"{"identity": {"mode": "mtls", "san": []}}"#,
                "identity.san",
            ),
            (
                r#"{"identity": {"mode": "anonymous", "claim": "sub"}}"#,
                "identity.claim",
            ),
        ] {
            let json = if json.starts_with('{') && !json.contains("identity") {
                json.replacen('{', r#"{"identity": {"mode": "anonymous"}, "#, 1)
            } else {
                json.to_string()
            };
            let err = InjectorConfig::parse(json.as_bytes()).unwrap_err();
            assert!(err.contains(key), "{json}: {err}");
        }
        let err = FetcherConfig::parse(br#"{"poll_wait_ms": 5}"#).unwrap_err();
        assert!(err.contains("poll_wait_ms"));
    }
}
