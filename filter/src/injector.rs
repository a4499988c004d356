//! The `bearer_injector` role: the HTTP filter on every worker. Plain Rust
//! over the [`host`](crate::host) traits, so all of it (the per-request
//! decision and the tick) is unit-tested natively with a fake host.
//!
//! Hot path for a request with a token: read the tenant header, remove it,
//! write `authorization` (which replaces any the caller sent). Everything
//! else is VM-local: a hash lookup and a counter bump. A header write that
//! fails refuses the request: the request must never go upstream without
//! our token, nor with the caller's.
//!
//! The tick reloads the VM-local [`Table`] when the snapshot's version
//! changed, drops tokens at their time, and flushes counters to stats.

use std::cell::{Cell, RefCell};

use log::{error, warn};

use crate::config::{InjectorConfig, REJECTION_QUEUE, SNAPSHOT_KEY, VERSION_KEY};
use crate::host::{Stream, Worker};
use crate::metrics::{Counter, Stat};
use crate::table::Table;

/// Why a request was refused. Each has a status and a stable `error` code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No tenant header and no default tenant: 400.
    MissingTenant,
    /// The tenant is not one the sidecar serves: 403.
    UnknownTenant,
    /// No valid token for the tenant (yet, or any more): 503.
    NoToken,
    /// Envoy refused a header write or removal: 500, fail closed.
    HeaderWrite,
}

impl Refusal {
    pub fn status(self) -> u32 {
        match self {
            Refusal::MissingTenant => 400,
            Refusal::UnknownTenant => 403,
            Refusal::NoToken => 503,
            Refusal::HeaderWrite => 500,
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            Refusal::MissingTenant => "missing_tenant",
            Refusal::UnknownTenant => "unknown_tenant",
            Refusal::NoToken => "no_token",
            Refusal::HeaderWrite => "header_write_failed",
        }
    }

    /// A static JSON body, so refusing allocates nothing.
    pub fn body(self) -> &'static [u8] {
        match self {
            Refusal::MissingTenant => {
                br#"{"error":"missing_tenant","message":"the request names no tenant and no default tenant is configured"}"#
            }
            Refusal::UnknownTenant => {
                br#"{"error":"unknown_tenant","message":"the tenant is not configured in the auth proxy"}"#
            }
            Refusal::NoToken => {
                br#"{"error":"no_token","message":"no valid token for this tenant; retry later"}"#
            }
            Refusal::HeaderWrite => {
                br#"{"error":"header_write_failed","message":"the proxy could not set the request's credentials"}"#
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
    pub missing_tenant: Counter,
    pub unknown_tenant: Counter,
    pub header_write_failed: Counter,
}

/// Envoy stats of one tenant, by name.
#[derive(Debug, Default)]
struct TenantStats {
    injected: Stat,
    no_token: Stat,
    upstream_401: Stat,
}

/// Envoy stats of the VM-wide counters, by name.
#[derive(Debug, Default)]
struct GlobalStats {
    missing_tenant: Stat,
    unknown_tenant: Stat,
    header_write_failed: Stat,
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
        Injector {
            cfg,
            table: RefCell::new(Table::default()),
            global: GlobalCounters::default(),
            seen: RefCell::new(Vec::new()),
            queue: Cell::new(None),
            tenant_stats: RefCell::new(Vec::new()),
            global_stats: RefCell::new(GlobalStats {
                missing_tenant: Stat::define(host, "authproxy.rejected.missing_tenant"),
                unknown_tenant: Stat::define(host, "authproxy.rejected.unknown_tenant"),
                header_write_failed: Stat::define(host, "authproxy.rejected.header_write_failed"),
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
            s.upstream_401.flush(host, &slot.counters.upstream_401);
        }
        let mut g = self.global_stats.borrow_mut();
        g.missing_tenant.flush(host, &self.global.missing_tenant);
        g.unknown_tenant.flush(host, &self.global.unknown_tenant);
        g.header_write_failed
            .flush(host, &self.global.header_write_failed);
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
            if r == Refusal::NoToken {
                let headers = [json, ("retry-after", self.cfg.retry_after.as_str())];
                host.send_reply(r.status(), &headers, r.body());
            } else {
                host.send_reply(r.status(), &[json], r.body());
            }
        }
        outcome
    }

    fn decide(&self, host: &impl Stream, table: &Table) -> Outcome {
        let cfg = &self.cfg;
        let global = &self.global;
        let header = host.request_header(&cfg.tenant_header);
        if header.is_some() && host.remove_request_header(&cfg.tenant_header).is_err() {
            global.header_write_failed.bump();
            return Outcome::Refused(Refusal::HeaderWrite);
        }
        let name: &[u8] = match header.as_deref().filter(|h| !h.is_empty()) {
            Some(h) => h,
            None => match &cfg.default_tenant {
                Some(d) => d.as_bytes(),
                None => {
                    global.missing_tenant.bump();
                    return Outcome::Refused(Refusal::MissingTenant);
                }
            },
        };
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
        let Some(token) = &slot.token else {
            slot.counters.no_token.bump();
            return Outcome::Refused(Refusal::NoToken);
        };
        if host
            .set_request_header("authorization", &token.header)
            .is_err()
        {
            // The caller's own authorization may still be there: never let
            // the request through.
            global.header_write_failed.bump();
            return Outcome::Refused(Refusal::HeaderWrite);
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

#[cfg(test)]
mod tests;
