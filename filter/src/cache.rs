//! The response cache's two roles, around Envoy's own `cache_v2` filter.
//! Plain Rust over the [`host`](crate::host) traits, unit-tested natively.
//!
//! ```text
//! ingress: health_check → tenant_gate → cache_v2 → router ─┬─ direct ──────────▶ API
//!                                                          └─ internal listener
//!                                        cache_fill → router (host rewrite) ──▶ API
//! ```
//!
//! - [`Gate`] (`root_id: tenant_gate`, on the ingress, before the cache) is
//!   the `bearer_injector` followed by one step. The injector decides as it
//!   always does (tenant, refusals, token), so a refused request never
//!   reaches the cache. For a request the [`Policy`] names cacheable
//!   (GET/HEAD on a configured path prefix) it then takes the token back
//!   out, removes any `authorization` (the cache stores nothing that
//!   carries one), and rewrites `:authority` to the tenant's own name,
//!   `<tenant>.tenant.authproxy.invalid`: `cache_v2` keys on scheme,
//!   authority, path and query, so the tenant is in the key. The route for
//!   that domain leads to the internal listener. Any other request keeps its
//!   injected token and takes the direct route, as without a cache.
//! - [`Fill`] (`root_id: cache_fill`, on the internal listener, which the
//!   cache's side channel calls on a miss) learns the tenant from the
//!   rewritten authority, never from anything the caller sent, injects that
//!   tenant's token through the same injector, and on the response imposes
//!   the route's TTL: `cache-control: max-age=TTL` on a 200, `no-store` on
//!   anything else.
//!
//! The TTL travels from the gate to the fill in `x-authproxy-cache-ttl`,
//! which the gate always overwrites on the cached path; the direct route
//! strips it. Per-tenant `cache.hit`, `cache.miss` and `cache.uncacheable`
//! counters are kept like the injector's: VM-local, flushed on the tick.
//!
//! The caller's identity and allow-list are checked by the gate's injector,
//! on the ingress where Envoy established the identity; the fill's injector
//! runs without one (it is reached only through the gate).

use std::cell::RefCell;

use log::warn;
use serde::Deserialize;

use crate::config::{InjectorConfig, ERROR_HEADER};
use crate::host::{Rewrite, Stream, Worker};
use crate::injector::{Injector, Outcome, Refusal};
use crate::metrics::{Counter, Stat};
use crate::table::Table;

/// Root id of the ingress role, before `cache_v2`.
pub const GATE_ROOT_ID: &str = "tenant_gate";
/// Root id of the internal listener's role, behind `cache_v2`.
pub const FILL_ROOT_ID: &str = "cache_fill";
/// Request header carrying the TTL (seconds) from the gate to the fill.
pub const TTL_HEADER: &str = "x-authproxy-cache-ttl";
/// Default domain under which each tenant gets its own authority.
pub const DEFAULT_SUFFIX: &str = "tenant.authproxy.invalid";
/// Longest TTL accepted: a week. Stale data lives at most this long.
pub const MAX_TTL_SECS: u64 = 7 * 24 * 3600;
/// Authority of every cached request in the unsafe shared-key mode.
const SHARED_LABEL: &[u8] = b"shared";

/// One cacheable route: method(s), a path prefix, a TTL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub path_prefix: String,
    pub get: bool,
    pub head: bool,
    pub ttl_secs: u64,
    /// `ttl_secs` in decimal, ready to be sent.
    ttl: String,
}

/// What may be cached and for how long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// The longest prefix that matches the path decides.
    pub routes: Vec<Route>,
    /// `false`: GET/HEAD on other paths also go through the cache, which
    /// then follows the upstream's own `cache-control` (a 200 without one,
    /// or with `private`, is not stored).
    pub only_configured: bool,
}

/// How a request goes through the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class<'a> {
    /// Not through the cache: keep the token, take the direct route.
    Uncacheable,
    /// Through the cache with this TTL (seconds, decimal).
    Imposed(&'a str),
    /// Through the cache, the upstream's own headers decide.
    Upstream,
}

impl Policy {
    /// Classifies a request by method and path. `path` is read only when
    /// the method can be cached, to spare a host call on the others.
    pub fn classify(&self, method: &[u8], path: impl FnOnce() -> Option<Vec<u8>>) -> Class<'_> {
        let (get, head) = (method == b"GET", method == b"HEAD");
        if !get && !head {
            return Class::Uncacheable;
        }
        let Some(path) = path() else {
            return Class::Uncacheable;
        };
        let longest = self
            .routes
            .iter()
            .filter(|r| path.starts_with(r.path_prefix.as_bytes()))
            .max_by_key(|r| r.path_prefix.len());
        if let Some(r) = longest {
            return if (get && r.get) || (head && r.head) {
                Class::Imposed(&r.ttl)
            } else {
                Class::Uncacheable
            };
        }
        if self.only_configured {
            Class::Uncacheable
        } else {
            Class::Upstream
        }
    }
}

/// Configuration of the `tenant_gate` role: the injector's own keys plus
/// `cache`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateConfig {
    pub injector: InjectorConfig,
    pub suffix: String,
    pub policy: Policy,
    /// Test-only negative control: every tenant's cached requests share one
    /// authority (so one key per path), and the tenant travels in the
    /// tenant header to a plain `bearer_injector`. This leaks across
    /// tenants; it exists to prove the tests can see such a leak.
    pub unsafe_shared_key: bool,
}

/// Configuration of the `cache_fill` role: the injector's own keys but
/// `identity` (anonymous: the gate checked the caller), plus
/// `authority_suffix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FillConfig {
    pub injector: InjectorConfig,
    pub suffix: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCache {
    authority_suffix: Option<String>,
    only_configured: Option<bool>,
    routes: Option<Vec<RawRoute>>,
    unsafe_shared_key_for_tests: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    path_prefix: Option<String>,
    ttl: Option<serde_json::Value>,
    methods: Option<Vec<String>>,
}

/// Splits `key` off a JSON object; the rest goes to the injector's parser.
fn split(bytes: &[u8], key: &str) -> Result<(Vec<u8>, Option<serde_json::Value>), String> {
    let text = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}".as_slice()
    } else {
        bytes
    };
    let mut map: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(text)
        .map_err(|e| format!("plugin configuration is not valid: {e}"))?;
    let value = map.remove(key);
    let rest = serde_json::to_vec(&map).map_err(|e| format!("plugin configuration: {e}"))?;
    Ok((rest, value))
}

/// `300`, `"300"`, `"300s"`, `"5m"`, `"1h"`, `"1d"` → seconds.
pub fn parse_ttl(v: &serde_json::Value) -> Option<u64> {
    if let Some(n) = v.as_u64() {
        return Some(n);
    }
    let s = v.as_str()?.trim();
    let (digits, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = digits.parse().ok()?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return None,
    };
    n.checked_mul(mult)
}

fn valid_suffix(s: &str) -> bool {
    // A name that can never resolve or be a real upstream (RFC 6761).
    s.ends_with(".invalid")
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

fn parse_suffix(raw: Option<String>, key: &str) -> Result<String, String> {
    let s = raw.unwrap_or_else(|| DEFAULT_SUFFIX.into());
    if !valid_suffix(&s) {
        return Err(format!(
            "{key}: {s:?} must be lower-case DNS labels ending in .invalid"
        ));
    }
    Ok(s)
}

impl GateConfig {
    /// Parses and validates the JSON plugin configuration.
    pub fn parse(bytes: &[u8]) -> Result<GateConfig, String> {
        let (rest, cache) = split(bytes, "cache")?;
        let injector = InjectorConfig::parse(&rest)?;
        let Some(cache) = cache else {
            return Err("cache: missing; name the cacheable routes".into());
        };
        let raw: RawCache =
            serde_json::from_value(cache).map_err(|e| format!("cache: not valid: {e}"))?;
        let suffix = parse_suffix(raw.authority_suffix, "cache.authority_suffix")?;
        let only_configured = raw.only_configured.unwrap_or(true);
        let mut routes = Vec::new();
        for (i, r) in raw.routes.unwrap_or_default().into_iter().enumerate() {
            let key = format!("cache.routes[{i}]");
            let path_prefix = r
                .path_prefix
                .ok_or_else(|| format!("{key}.path_prefix: missing"))?;
            if !path_prefix.starts_with('/') {
                return Err(format!(
                    "{key}.path_prefix: {path_prefix:?} must start with /"
                ));
            }
            let ttl_secs = r
                .ttl
                .as_ref()
                .ok_or_else(|| format!("{key}.ttl: missing"))
                .and_then(|v| {
                    parse_ttl(v).ok_or_else(|| {
                        format!("{key}.ttl: {v} is not seconds or a duration like \"5m\"")
                    })
                })?;
            if !(1..=MAX_TTL_SECS).contains(&ttl_secs) {
                return Err(format!(
                    "{key}.ttl: {ttl_secs}s is not in 1s..={MAX_TTL_SECS}s"
                ));
            }
            let methods = r
                .methods
                .unwrap_or_else(|| vec!["GET".into(), "HEAD".into()]);
            let (mut get, mut head) = (false, false);
            for m in &methods {
                match m.as_str() {
                    "GET" => get = true,
                    "HEAD" => head = true,
                    other => {
                        return Err(format!(
                            "{key}.methods: {other:?} is not cacheable (GET and HEAD only)"
                        ))
                    }
                }
            }
            if !get && !head {
                return Err(format!("{key}.methods: empty"));
            }
            routes.push(Route {
                path_prefix,
                get,
                head,
                ttl_secs,
                ttl: ttl_secs.to_string(),
            });
        }
        if routes.is_empty() && only_configured {
            return Err(
                "cache.routes: empty while only_configured is true; nothing would be cached".into(),
            );
        }
        Ok(GateConfig {
            injector,
            suffix,
            policy: Policy {
                routes,
                only_configured,
            },
            unsafe_shared_key: raw.unsafe_shared_key_for_tests.unwrap_or(false),
        })
    }
}

impl FillConfig {
    /// Parses and validates the JSON plugin configuration.
    pub fn parse(bytes: &[u8]) -> Result<FillConfig, String> {
        let (rest, suffix) = split(bytes, "authority_suffix")?;
        // The gate checked the caller; here no identity exists to check.
        let (rest, identity) = split(&rest, "identity")?;
        if identity.is_some() {
            return Err(
                "identity: not used by cache_fill: tenant_gate checks the caller, \
                        where Envoy established the identity"
                    .into(),
            );
        }
        let mut rest: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(&rest).map_err(|e| format!("plugin configuration: {e}"))?;
        rest.insert("identity".into(), serde_json::json!({"mode": "anonymous"}));
        let rest = serde_json::to_vec(&rest).map_err(|e| format!("plugin configuration: {e}"))?;
        let suffix = match suffix {
            None => None,
            Some(serde_json::Value::String(s)) => Some(s),
            Some(other) => return Err(format!("authority_suffix: {other} is not a string")),
        };
        Ok(FillConfig {
            injector: InjectorConfig::parse(&rest)?,
            suffix: parse_suffix(suffix, "authority_suffix")?,
        })
    }
}

/// The authority naming `tenant`: `<tenant>.<suffix>`, lower case.
/// Tenant ids may hold upper case and `_`, and host names compare without
/// case, so those bytes are escaped as `_XX` (hex): `Acme` and `acme` never
/// share an authority, and [`tenant_from_authority`] inverts it exactly.
pub fn tenant_authority(tenant: &[u8], suffix: &str) -> Vec<u8> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = Vec::with_capacity(tenant.len() * 3 + 1 + suffix.len());
    for &b in tenant {
        if b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.' {
            out.push(b);
        } else {
            out.push(b'_');
            out.extend(HEX.get(usize::from(b >> 4)));
            out.extend(HEX.get(usize::from(b & 15)));
        }
    }
    out.push(b'.');
    out.extend_from_slice(suffix.as_bytes());
    out
}

/// The tenant an authority names, if it is `<escaped tenant>.<suffix>`
/// (any port stripped) and decodes to a valid tenant id.
pub fn tenant_from_authority(authority: &[u8], suffix: &str) -> Option<Vec<u8>> {
    let host = match authority.iter().rposition(|&b| b == b':') {
        Some(i) => authority.get(..i)?,
        None => authority,
    };
    let label = host.strip_suffix(suffix.as_bytes())?.strip_suffix(b".")?;
    let mut out = Vec::with_capacity(label.len());
    let mut bytes = label.iter();
    while let Some(&b) = bytes.next() {
        if b == b'_' {
            let hi = hex_digit(*bytes.next()?)?;
            let lo = hex_digit(*bytes.next()?)?;
            out.push(hi << 4 | lo);
        } else if b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.' {
            out.push(b);
        } else {
            return None;
        }
    }
    protocol::valid_tenant_id_bytes(&out).then_some(out)
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
}

/// One tenant's cache counters.
#[derive(Debug, Default)]
pub struct CacheCounters {
    pub hit: Counter,
    pub miss: Counter,
    pub uncacheable: Counter,
}

#[derive(Debug, Default)]
struct CacheStats {
    hit: Stat,
    miss: Stat,
    uncacheable: Stat,
}

/// Per-slot counters and their Envoy stats, slots in the table's order.
#[derive(Default)]
struct PerTenant {
    counters: RefCell<Vec<CacheCounters>>,
    stats: RefCell<Vec<CacheStats>>,
}

impl PerTenant {
    /// Defines stats for slots the table gained, then flushes.
    fn tick(&self, host: &impl Worker, table: &Table) {
        let (Ok(mut counters), Ok(mut stats)) =
            (self.counters.try_borrow_mut(), self.stats.try_borrow_mut())
        else {
            return;
        };
        for slot in table.slots().iter().skip(stats.len()) {
            let define = |what: &str| {
                Stat::define(
                    host,
                    &format!("authproxy.tenant.{}.cache.{what}", slot.name),
                )
            };
            stats.push(CacheStats {
                hit: define("hit"),
                miss: define("miss"),
                uncacheable: define("uncacheable"),
            });
            counters.push(CacheCounters::default());
        }
        for (s, c) in stats.iter_mut().zip(counters.iter()) {
            s.hit.flush(host, &c.hit);
            s.miss.flush(host, &c.miss);
            s.uncacheable.flush(host, &c.uncacheable);
        }
    }

    fn bump(&self, tenant: usize, which: fn(&CacheCounters) -> &Counter) {
        if let Ok(counters) = self.counters.try_borrow() {
            if let Some(c) = counters.get(tenant) {
                which(c).bump();
            }
        }
    }

    /// A tenant's counters, for tests.
    fn get(&self, tenant: usize, which: fn(&CacheCounters) -> &Counter) -> u64 {
        self.counters
            .try_borrow()
            .ok()
            .and_then(|c| c.get(tenant).map(|c| which(c).get()))
            .unwrap_or(0)
    }
}

/// Refuses with 500 `header_write_failed`: the request must not go on half
/// rewritten.
fn header_write_failed(injector: &Injector, host: &impl Stream) -> GateOutcome {
    injector.global.internal_error.bump();
    let r = Refusal::HostCall;
    host.send_reply(
        r.status(),
        &[
            ("content-type", "application/json"),
            (ERROR_HEADER, r.code()),
        ],
        r.body(),
    );
    GateOutcome::Direct(Outcome::Refused(r))
}

/// What the gate did with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateOutcome {
    /// As the injector decided: injected (direct route) or refused.
    Direct(Outcome),
    /// Sent through the cache as tenant slot `tenant`.
    Cached { tenant: usize },
}

/// The `tenant_gate` role: one per worker.
pub struct Gate {
    pub injector: Injector,
    suffix: String,
    policy: Policy,
    unsafe_shared_key: bool,
    tenants: PerTenant,
}

impl Gate {
    pub fn new(cfg: GateConfig, host: &impl Worker) -> Gate {
        if cfg.unsafe_shared_key {
            warn!(
                "authproxy: tenant_gate: unsafe_shared_key_for_tests is on: cached \
                 responses are shared across tenants; never use this outside tests"
            );
        }
        Gate {
            injector: Injector::new(cfg.injector, host),
            suffix: cfg.suffix,
            policy: cfg.policy,
            unsafe_shared_key: cfg.unsafe_shared_key,
            tenants: PerTenant::default(),
        }
    }

    /// The injector's tick, then the cache counters.
    pub fn tick(&self, host: &impl Worker) {
        self.injector.tick(host);
        if let Some(table) = self.injector.try_table() {
            self.tenants.tick(host, &table);
        }
    }

    /// Handles request headers: the injector decides (and refuses), then a
    /// cacheable request is turned towards the cache.
    pub fn on_request(&self, host: &(impl Stream + Rewrite)) -> GateOutcome {
        let out = self.injector.on_request(host);
        let Outcome::Injected { tenant, .. } = out else {
            return GateOutcome::Direct(out);
        };
        let method = host.request_header(":method").unwrap_or_default();
        let ttl = match self
            .policy
            .classify(&method, || host.request_header(":path"))
        {
            Class::Uncacheable => {
                self.tenants.bump(tenant, |c| &c.uncacheable);
                return GateOutcome::Direct(out);
            }
            Class::Imposed(ttl) => ttl,
            Class::Upstream => "",
        };
        let Some(table) = self.injector.try_table() else {
            return header_write_failed(&self.injector, host);
        };
        let Some(slot) = table.slot(tenant) else {
            return header_write_failed(&self.injector, host);
        };
        let name = slot.name.as_bytes();
        let authority = if self.unsafe_shared_key {
            tenant_authority(SHARED_LABEL, &self.suffix)
        } else {
            tenant_authority(name, &self.suffix)
        };
        // The cache stores nothing that carries authorization, and the key
        // must not depend on the token: take ours (and any caller's) out.
        let ok = host.remove_request_header("authorization").is_ok()
            && host.set_request_header(":authority", &authority).is_ok()
            && if ttl.is_empty() {
                host.remove_request_header(TTL_HEADER).is_ok()
            } else {
                host.set_request_header(TTL_HEADER, ttl.as_bytes()).is_ok()
            }
            && (!self.unsafe_shared_key
                || host
                    .set_request_header(&self.injector.cfg.tenant_header, name)
                    .is_ok());
        drop(table);
        if !ok {
            return header_write_failed(&self.injector, host);
        }
        GateOutcome::Cached { tenant }
    }

    /// Handles response headers: counts hits (the cache adds `age`) and
    /// misses; returns a 401 report from the direct path, if any.
    pub fn on_response(&self, host: &(impl Stream + Rewrite), out: GateOutcome) -> Option<String> {
        match out {
            GateOutcome::Direct(o) => self.injector.on_response(host, o),
            GateOutcome::Cached { tenant } => {
                if host.response_header("age").is_some() {
                    self.tenants.bump(tenant, |c| &c.hit);
                } else {
                    self.tenants.bump(tenant, |c| &c.miss);
                }
                None
            }
        }
    }

    /// A tenant's cache counters (hit, miss, uncacheable), for tests.
    pub fn counts(&self, tenant: &str) -> (u64, u64, u64) {
        let Some(i) = self
            .injector
            .try_table()
            .and_then(|t| t.lookup(tenant.as_bytes()))
        else {
            return (0, 0, 0);
        };
        (
            self.tenants.get(i, |c| &c.hit),
            self.tenants.get(i, |c| &c.miss),
            self.tenants.get(i, |c| &c.uncacheable),
        )
    }
}

/// The fill's answer to a request that carries authorization.
const MISROUTED: &[u8] = br#"{"error":"misrouted","message":"a request with authorization reached the cache fill; check the cache route's guard"}"#;

/// What the fill did with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FillOutcome {
    pub outcome: Outcome,
    /// The gate's TTL in seconds; `None`: the upstream's headers decide.
    pub ttl: Option<u64>,
}

/// The `cache_fill` role: one per worker, on the internal listener.
pub struct Fill {
    pub injector: Injector,
    suffix: String,
    tenants: PerTenant,
}

impl Fill {
    pub fn new(cfg: FillConfig, host: &impl Worker) -> Fill {
        Fill {
            injector: Injector::without_warning(cfg.injector, host),
            suffix: cfg.suffix,
            tenants: PerTenant::default(),
        }
    }

    pub fn tick(&self, host: &impl Worker) {
        self.injector.tick(host);
        if let Some(table) = self.injector.try_table() {
            self.tenants.tick(host, &table);
        }
    }

    /// Handles request headers: the tenant comes from the authority the
    /// gate wrote, and is handed to the injector as its tenant header (any
    /// value the caller sent is overwritten). A request that carries
    /// authorization is refused with 500 `misrouted`.
    pub fn on_request(&self, host: &impl Stream) -> FillOutcome {
        let refused = |r: Refusal| {
            host.send_reply(
                r.status(),
                &[
                    ("content-type", "application/json"),
                    (ERROR_HEADER, r.code()),
                ],
                r.body(),
            );
            FillOutcome {
                outcome: Outcome::Refused(r),
                ttl: None,
            }
        };
        // The gate sends nothing here with authorization: such a request
        // was routed here by mistake (a route that lost its guard) and may
        // have been checked as another tenant. Never inject for it.
        if host.request_header("authorization").is_some() {
            self.injector.global.internal_error.bump();
            let headers = [
                ("content-type", "application/json"),
                (ERROR_HEADER, "misrouted"),
            ];
            host.send_reply(500, &headers, MISROUTED);
            return FillOutcome {
                outcome: Outcome::Refused(Refusal::HostCall),
                ttl: None,
            };
        }
        let tenant = host
            .request_header(":authority")
            .and_then(|a| tenant_from_authority(&a, &self.suffix));
        let Some(tenant) = tenant else {
            self.injector.global.missing_tenant.bump();
            return refused(Refusal::MissingTenant);
        };
        if host
            .set_request_header(&self.injector.cfg.tenant_header, &tenant)
            .is_err()
        {
            self.injector.global.internal_error.bump();
            return refused(Refusal::HostCall);
        }
        let ttl = host
            .request_header(TTL_HEADER)
            .and_then(|v| std::str::from_utf8(&v).ok()?.parse::<u64>().ok())
            .filter(|t| (1..=MAX_TTL_SECS).contains(t));
        FillOutcome {
            outcome: self.injector.on_request(host),
            ttl,
        }
    }

    /// Handles response headers: imposes the TTL on a 200, `no-store` on
    /// anything else; returns a 401 report, if any.
    pub fn on_response(&self, host: &(impl Stream + Rewrite), out: FillOutcome) -> Option<String> {
        let report = self.injector.on_response(host, out.outcome);
        let Outcome::Injected { tenant, .. } = out.outcome else {
            return report;
        };
        let ok = host.response_status().as_deref() == Some(b"200");
        let result = match (ok, out.ttl) {
            (true, Some(ttl)) => {
                let value = format!("max-age={ttl}");
                // Ours alone decides freshness: an upstream `age` or
                // `expires` would shorten or contradict it.
                host.set_response_header("cache-control", value.as_bytes())
                    .and_then(|()| host.remove_response_header("age"))
                    .and_then(|()| host.remove_response_header("expires"))
            }
            (true, None) => Ok(()),
            (false, _) => {
                self.tenants.bump(tenant, |c| &c.uncacheable);
                host.set_response_header("cache-control", b"no-store")
            }
        };
        if let Err(e) = result {
            warn!("authproxy: cache_fill: cannot set cache-control: {e:?}");
        }
        report
    }

    /// A tenant's `uncacheable` count, for tests.
    pub fn uncacheable(&self, tenant: &str) -> u64 {
        let Some(i) = self
            .injector
            .try_table()
            .and_then(|t| t.lookup(tenant.as_bytes()))
        else {
            return 0;
        };
        self.tenants.get(i, |c| &c.uncacheable)
    }
}

#[cfg(test)]
mod tests;
