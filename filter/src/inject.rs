//! Per-request logic of the HTTP filter, written against a small [`Host`]
//! trait so it can be tested natively with a fake host.
//!
//! Hot path for a request with a token: read the tenant header, remove it,
//! write `authorization` (which replaces any the caller sent). Everything
//! else is VM-local: a hash lookup and a counter bump.

use crate::config::InjectorConfig;
use crate::table::Table;

/// What the filter needs from Envoy.
pub trait Host {
    fn request_header(&self, name: &str) -> Option<Vec<u8>>;
    fn remove_request_header(&self, name: &str);
    fn set_request_header(&self, name: &str, value: &[u8]);
    fn response_status(&self) -> Option<Vec<u8>>;
    fn send_reply(&self, status: u32, headers: &[(&str, &str)], body: &[u8]);
}

/// Why a request was refused. Each has a stable `error` code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No tenant header and no default tenant: 400.
    MissingTenant,
    /// The tenant is not one the sidecar serves: 403.
    UnknownTenant,
    /// No valid token for the tenant (yet, or any more): 503.
    NoToken,
}

impl Refusal {
    pub fn status(self) -> u32 {
        match self {
            Refusal::MissingTenant => 400,
            Refusal::UnknownTenant => 403,
            Refusal::NoToken => 503,
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            Refusal::MissingTenant => "missing_tenant",
            Refusal::UnknownTenant => "unknown_tenant",
            Refusal::NoToken => "no_token",
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
    pub missing_tenant: std::cell::Cell<u64>,
    pub unknown_tenant: std::cell::Cell<u64>,
}

fn bump(c: &std::cell::Cell<u64>) {
    c.set(c.get().wrapping_add(1));
}

/// Handles request headers: picks the tenant, injects or refuses.
pub fn on_request(
    host: &impl Host,
    cfg: &InjectorConfig,
    table: &Table,
    global: &GlobalCounters,
) -> Outcome {
    let header = host.request_header(&cfg.tenant_header);
    if header.is_some() {
        host.remove_request_header(&cfg.tenant_header);
    }
    let outcome = decide(host, cfg, table, global, header.as_deref());
    if let Outcome::Refused(r) = outcome {
        let json = ("content-type", "application/json");
        if r == Refusal::NoToken {
            let headers = [json, ("retry-after", cfg.retry_after.as_str())];
            host.send_reply(r.status(), &headers, r.body());
        } else {
            host.send_reply(r.status(), &[json], r.body());
        }
    }
    outcome
}

fn decide(
    host: &impl Host,
    cfg: &InjectorConfig,
    table: &Table,
    global: &GlobalCounters,
    header: Option<&[u8]>,
) -> Outcome {
    let name: &[u8] = match header.filter(|h| !h.is_empty()) {
        Some(h) => h,
        None => match &cfg.default_tenant {
            Some(d) => d.as_bytes(),
            None => {
                bump(&global.missing_tenant);
                return Outcome::Refused(Refusal::MissingTenant);
            }
        },
    };
    let Some(index) = table.lookup(name) else {
        // Before the first snapshot nothing is known: fail closed with 503,
        // not 403, since the tenant may well be valid.
        if table.version().is_none() {
            return Outcome::Refused(Refusal::NoToken);
        }
        bump(&global.unknown_tenant);
        return Outcome::Refused(Refusal::UnknownTenant);
    };
    let Some(slot) = table.slot(index) else {
        return Outcome::Refused(Refusal::NoToken);
    };
    if !slot.known {
        bump(&global.unknown_tenant);
        return Outcome::Refused(Refusal::UnknownTenant);
    }
    match &slot.token {
        Some(token) => {
            host.set_request_header("authorization", &token.header);
            bump(&slot.counters.injected);
            Outcome::Injected {
                tenant: index,
                version: token.version,
            }
        }
        None => {
            bump(&slot.counters.no_token);
            Outcome::Refused(Refusal::NoToken)
        }
    }
}

/// Handles response headers of a request we injected. Returns the (tenant
/// slot, token version) to report when the upstream answered 401 to a token
/// this VM has not reported yet.
pub fn on_response(host: &impl Host, table: &Table, outcome: Outcome) -> Option<(usize, u64)> {
    let Outcome::Injected { tenant, version } = outcome else {
        return None;
    };
    if host.response_status()?.as_slice() != b"401" {
        return None;
    }
    let slot = table.slot(tenant)?;
    bump(&slot.counters.upstream_401);
    if slot.reported.get() == version {
        return None;
    }
    slot.reported.set(version);
    Some((tenant, version))
}

#[cfg(test)]
mod tests;
