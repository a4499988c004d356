//! The `bearer_injector` role: the HTTP filter on every worker. Plain Rust
//! over the [`host`](crate::host) traits, so all of it (the per-request
//! decision and the tick) is unit-tested natively with a fake host.
//!
//! Hot path for a request with a token: read the caller's identity (set by
//! Envoy, never by a header), read every value of the tenant header in one
//! call, check the tenant's allow-list, write `authorization` (which
//! replaces any the caller sent), and record tenant and token version for
//! the audit log. Everything else is VM-local: a hash lookup, a short rule
//! scan and a counter bump. Envoy removes the tenant header before the
//! request goes upstream (route configuration). A write that fails refuses
//! the request: it must never go upstream without our token, with the
//! caller's, or unaudited.
//!
//! The tick reloads the VM-local [`Table`] when the snapshot's version
//! changed, drops tokens at their time, and flushes counters to stats.

use std::cell::{Cell, RefCell};

use log::{error, warn};

use crate::callers;
use crate::config::{
    Identity, InjectorConfig, AUDIT_TENANT, AUDIT_TOKEN_VERSION, ERROR_HEADER, REJECTION_QUEUE,
    SNAPSHOT_KEY, VERSION_KEY,
};
use crate::host::{Stream, Worker};
use crate::metrics::{Counter, Stat};
use crate::table::Table;

/// Why a request was refused. Each has a status and a stable `error` code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// An authenticated mode, but no caller identity: 401.
    Unauthenticated,
    /// No tenant header and no default tenant: 400.
    MissingTenant,
    /// An empty tenant header (not "use the default"): 400.
    EmptyTenant,
    /// More than one tenant header, or a list in one: 400.
    AmbiguousTenant,
    /// The tenant is not one the sidecar serves: 403.
    UnknownTenant,
    /// The caller is not on the tenant's allow-list: 403.
    CallerNotAllowed,
    /// No valid token for the tenant (yet, or any more): 503.
    NoToken,
    /// Envoy refused a header or filter-state write: 500, fail closed.
    HostCall,
}

impl Refusal {
    pub fn status(self) -> u32 {
        match self {
            Refusal::Unauthenticated => 401,
            Refusal::MissingTenant | Refusal::EmptyTenant | Refusal::AmbiguousTenant => 400,
            Refusal::UnknownTenant | Refusal::CallerNotAllowed => 403,
            Refusal::NoToken => 503,
            Refusal::HostCall => 500,
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            Refusal::Unauthenticated => "unauthenticated",
            Refusal::MissingTenant => "missing_tenant",
            Refusal::EmptyTenant => "empty_tenant",
            Refusal::AmbiguousTenant => "ambiguous_tenant",
            Refusal::UnknownTenant => "unknown_tenant",
            Refusal::CallerNotAllowed => "caller_not_allowed",
            Refusal::NoToken => "no_token",
            Refusal::HostCall => "internal_error",
        }
    }

    /// A static JSON body, so refusing allocates nothing.
    pub fn body(self) -> &'static [u8] {
        match self {
            Refusal::Unauthenticated => {
                br#"{"error":"unauthenticated","message":"the caller did not prove an identity"}"#
            }
            Refusal::MissingTenant => {
                br#"{"error":"missing_tenant","message":"the request names no tenant and no default tenant is configured"}"#
            }
            Refusal::EmptyTenant => {
                br#"{"error":"empty_tenant","message":"the tenant header is empty"}"#
            }
            Refusal::AmbiguousTenant => {
                br#"{"error":"ambiguous_tenant","message":"the request names more than one tenant"}"#
            }
            Refusal::UnknownTenant => {
                br#"{"error":"unknown_tenant","message":"the tenant is not configured in the auth proxy"}"#
            }
            Refusal::CallerNotAllowed => {
                br#"{"error":"caller_not_allowed","message":"this caller may not use this tenant for this request"}"#
            }
            Refusal::NoToken => {
                br#"{"error":"no_token","message":"no valid token for this tenant; retry later"}"#
            }
            Refusal::HostCall => {
                br#"{"error":"internal_error","message":"the proxy could not prepare the request"}"#
            }
        }
    }
}

/// What happened to a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Header written for tenant slot `tenant`, token `version`.
    Injected {
        tenant: usize,
        version: u64,
    },
    Refused(Refusal),
}

/// VM-wide counters for refusals that have no (valid) tenant to count under.
#[derive(Debug, Default)]
pub struct GlobalCounters {
    pub unauthenticated: Counter,
    pub missing_tenant: Counter,
    pub empty_tenant: Counter,
    pub ambiguous_tenant: Counter,
    pub unknown_tenant: Counter,
    pub internal_error: Counter,
}

/// Envoy stats of one tenant, by name.
#[derive(Debug, Default)]
struct TenantStats {
    injected: Stat,
    no_token: Stat,
    caller_not_allowed: Stat,
    upstream_401: Stat,
}

/// Envoy stats of the VM-wide counters, by name.
#[derive(Debug, Default)]
struct GlobalStats {
    unauthenticated: Stat,
    missing_tenant: Stat,
    empty_tenant: Stat,
    ambiguous_tenant: Stat,
    unknown_tenant: Stat,
    internal_error: Stat,
}

/// One worker's injector: configuration, VM-local table and counters,
/// shared by its root context (the tick) and its requests.
pub struct Injector {
    pub cfg: InjectorConfig,
    table: RefCell<Table>,
    pub global: GlobalCounters,
    /// Last `VERSION_KEY` value loaded.
    seen: RefCell<Vec<u8>>,
    /// The fetcher's report queue, once resolved.
    queue: Cell<Option<u32>>,
    /// One entry per table slot, in slot order.
    tenant_stats: RefCell<Vec<TenantStats>>,
    global_stats: RefCell<GlobalStats>,
}

impl Injector {
    pub fn new(cfg: InjectorConfig, host: &impl Worker) -> Injector {
        if cfg.identity == Identity::Anonymous {
            warn!(
                "authproxy: identity mode is anonymous: any caller that reaches this listener \
                 may use any tenant; use jwt or mtls outside local development"
            );
        }
        Injector::without_warning(cfg, host)
    }

    /// [`Injector::new`] without the anonymous-mode warning: for the cache's
    /// `cache_fill`, reached only through `tenant_gate`, whose injector
    /// checked the caller where Envoy established the identity.
    pub fn without_warning(cfg: InjectorConfig, host: &impl Worker) -> Injector {
        let define = |name: &str| Stat::define(host, &format!("authproxy.rejected.{name}"));
        Injector {
            cfg,
            table: RefCell::new(Table::default()),
            global: GlobalCounters::default(),
            seen: RefCell::new(Vec::new()),
            queue: Cell::new(None),
            tenant_stats: RefCell::new(Vec::new()),
            global_stats: RefCell::new(GlobalStats {
                unauthenticated: define("unauthenticated"),
                missing_tenant: define("missing_tenant"),
                empty_tenant: define("empty_tenant"),
                ambiguous_tenant: define("ambiguous_tenant"),
                unknown_tenant: define("unknown_tenant"),
                internal_error: define("internal_error"),
            }),
        }
    }

    /// The table, for inspection (tests, the response path).
    pub fn table(&self) -> std::cell::Ref<'_, Table> {
        self.table.borrow()
    }

    /// The table, unless borrowed mutably (never, in a single-threaded VM).
    pub fn try_table(&self) -> Option<std::cell::Ref<'_, Table>> {
        self.table.try_borrow().ok()
    }

    /// The fetcher's report queue, once the tick resolved it.
    pub fn queue(&self) -> Option<u32> {
        self.queue.get()
    }

    /// The tick: reload the table if the snapshot changed, drop tokens at
    /// their time, flush counters, resolve the report queue.
    pub fn tick(&self, host: &impl Worker) {
        let now = host.now_ms();
        let allowance = self.cfg.clock_allowance_ms;
        let Ok(mut table) = self.table.try_borrow_mut() else {
            return;
        };
        match host.shared_data(VERSION_KEY) {
            Ok(Some(version)) if *self.seen.borrow() != version => {
                match host.shared_data(SNAPSHOT_KEY) {
                    Ok(Some(snapshot)) => match table.load(&snapshot, now, allowance) {
                        Ok(added) => {
                            self.define_tenant_stats(host, &table, &added);
                            *self.seen.borrow_mut() = version;
                        }
                        Err(e) => error!("authproxy: {e}"),
                    },
                    Ok(None) => {}
                    Err(e) => warn!("authproxy: cannot read the snapshot: {e:?}"),
                }
            }
            Ok(_) => {}
            Err(e) => warn!("authproxy: cannot read the snapshot version: {e:?}"),
        }
        let dropped = table.drop_expiring(now, allowance);
        if dropped > 0 {
            warn!("authproxy: {dropped} token(s) expired without a replacement");
        }
        self.flush(host, &table);
        drop(table);
        if self.queue.get().is_none() {
            self.queue
                .set(host.resolve_queue(&self.cfg.vm_id, REJECTION_QUEUE));
        }
    }

    fn define_tenant_stats(&self, host: &impl Worker, table: &Table, added: &[usize]) {
        let mut stats = self.tenant_stats.borrow_mut();
        for &index in added {
            let Some(slot) = table.slot(index) else {
                continue;
            };
            let define =
                |what: &str| Stat::define(host, &format!("authproxy.tenant.{}.{what}", slot.name));
            // Slots are appended in order, so the stats index matches.
            if stats.len() == index {
                stats.push(TenantStats {
                    injected: define("injected"),
                    no_token: define("rejected.no_token"),
                    caller_not_allowed: define("rejected.caller_not_allowed"),
                    upstream_401: define("upstream_401"),
                });
            }
        }
    }

    /// Pushes counter deltas to Envoy's stats: a few host calls per tick
    /// instead of one per request.
    fn flush(&self, host: &impl Worker, table: &Table) {
        let mut stats = self.tenant_stats.borrow_mut();
        for (slot, s) in table.slots().iter().zip(stats.iter_mut()) {
            s.injected.flush(host, &slot.counters.injected);
            s.no_token.flush(host, &slot.counters.no_token);
            s.caller_not_allowed
                .flush(host, &slot.counters.caller_not_allowed);
            s.upstream_401.flush(host, &slot.counters.upstream_401);
        }
        let mut g = self.global_stats.borrow_mut();
        let c = &self.global;
        g.unauthenticated.flush(host, &c.unauthenticated);
        g.missing_tenant.flush(host, &c.missing_tenant);
        g.empty_tenant.flush(host, &c.empty_tenant);
        g.ambiguous_tenant.flush(host, &c.ambiguous_tenant);
        g.unknown_tenant.flush(host, &c.unknown_tenant);
        g.internal_error.flush(host, &c.internal_error);
    }

    /// Handles request headers: picks the tenant, injects or refuses (the
    /// refusal is sent here).
    pub fn on_request(&self, host: &impl Stream) -> Outcome {
        let outcome = match self.table.try_borrow() {
            Ok(table) => self.decide(host, &table),
            // Unreachable in a single-threaded VM; fail closed regardless.
            Err(_) => Outcome::Refused(Refusal::NoToken),
        };
        if let Outcome::Refused(r) = outcome {
            let json = ("content-type", "application/json");
            let code = (ERROR_HEADER, r.code());
            if r == Refusal::NoToken {
                let headers = [json, code, ("retry-after", self.cfg.retry_after.as_str())];
                host.send_reply(r.status(), &headers, r.body());
            } else {
                host.send_reply(r.status(), &[json, code], r.body());
            }
        }
        outcome
    }

    /// The decision, in order: who is calling (401), which tenant (400),
    /// is it served (403/503), may this caller use it (403), its token
    /// (503). Host calls: the identity property (not when anonymous), the
    /// tenant header (all values in one call), the audit tenant, the
    /// `authorization` write, the audit token version; `:method`/`:path`
    /// only for a rule that restricts them.
    fn decide(&self, host: &impl Stream, table: &Table) -> Outcome {
        let cfg = &self.cfg;
        let global = &self.global;
        let caller = match cfg.identity.properties() {
            None => None,
            Some(paths) => match paths
                .iter()
                .find_map(|p| host.property(p).filter(|c| !c.is_empty()))
            {
                Some(c) => Some(c),
                None => {
                    global.unauthenticated.bump();
                    return Outcome::Refused(Refusal::Unauthenticated);
                }
            },
        };
        // The property answers nothing for an empty value: only then ask
        // the single-header read, which tells empty from absent.
        let header = host
            .request_header_all(&cfg.tenant_header)
            .or_else(|| host.request_header(&cfg.tenant_header));
        let name: &[u8] = match header.as_deref() {
            None => match &cfg.default_tenant {
                Some(d) => d.as_bytes(),
                None => {
                    global.missing_tenant.bump();
                    return Outcome::Refused(Refusal::MissingTenant);
                }
            },
            Some([]) => {
                global.empty_tenant.bump();
                return Outcome::Refused(Refusal::EmptyTenant);
            }
            // Tenant ids never contain a comma: Envoy joined repeated
            // headers, or the caller sent a list.
            Some(h) if h.contains(&b',') => {
                global.ambiguous_tenant.bump();
                return Outcome::Refused(Refusal::AmbiguousTenant);
            }
            Some(h) => h,
        };
        // Only a well-formed id goes into the audit log.
        if protocol::valid_tenant_id_bytes(name) && host.set_property(AUDIT_TENANT, name).is_err() {
            global.internal_error.bump();
            return Outcome::Refused(Refusal::HostCall);
        }
        let Some(index) = table.lookup(name) else {
            // Before the first snapshot nothing is known: fail closed with
            // 503, not 403, since the tenant may well be valid.
            if table.version().is_none() {
                return Outcome::Refused(Refusal::NoToken);
            }
            global.unknown_tenant.bump();
            return Outcome::Refused(Refusal::UnknownTenant);
        };
        let Some(slot) = table.slot(index) else {
            return Outcome::Refused(Refusal::NoToken);
        };
        if !slot.known {
            global.unknown_tenant.bump();
            return Outcome::Refused(Refusal::UnknownTenant);
        }
        if let Some(caller) = &caller {
            if !callers::allowed(&slot.rules, caller, &RequestView(host)) {
                slot.counters.caller_not_allowed.bump();
                return Outcome::Refused(Refusal::CallerNotAllowed);
            }
        }
        let Some(token) = &slot.token else {
            slot.counters.no_token.bump();
            return Outcome::Refused(Refusal::NoToken);
        };
        let mut digits = [0u8; 20];
        if host
            .set_request_header("authorization", &token.header)
            .is_err()
            || host
                .set_property(AUDIT_TOKEN_VERSION, decimal(token.version, &mut digits))
                .is_err()
        {
            // The caller's own authorization may still be there, or the
            // spend would go unaudited: never let the request through.
            global.internal_error.bump();
            return Outcome::Refused(Refusal::HostCall);
        }
        slot.counters.injected.bump();
        Outcome::Injected {
            tenant: index,
            version: token.version,
        }
    }

    /// Handles response headers. Returns the report to queue
    /// (`tenant:version`) when the upstream answered 401 to a token this VM
    /// injected and has not reported yet.
    pub fn on_response(&self, host: &impl Stream, outcome: Outcome) -> Option<String> {
        let Outcome::Injected { tenant, version } = outcome else {
            return None;
        };
        if host.response_status()?.as_slice() != b"401" {
            return None;
        }
        let table = self.table.try_borrow().ok()?;
        let slot = table.slot(tenant)?;
        slot.counters.upstream_401.bump();
        if slot.reported.get() == version {
            return None;
        }
        slot.reported.set(version);
        Some(format!("{}:{version}", slot.name))
    }
}

/// The request as the allow-list sees it: method and path, read lazily.
struct RequestView<'a, H>(&'a H);

impl<H: Stream> callers::Request for RequestView<'_, H> {
    fn method(&self) -> Option<Vec<u8>> {
        self.0.request_header(":method")
    }
    fn path(&self) -> Option<Vec<u8>> {
        self.0.request_header(":path")
    }
}

/// `n` in decimal, written into `buf`, without allocating.
fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        if let Some(d) = buf.get_mut(i) {
            *d = b'0' + (n % 10) as u8;
        }
        n /= 10;
        if n == 0 || i == 0 {
            break;
        }
    }
    buf.get(i..).unwrap_or_default()
}

#[cfg(test)]
mod tests;
