//! proxy-wasm filter that injects each tenant's bearer token, handed over by
//! the sidecar, into every request through Envoy.
//!
//! One `.wasm`, one role per root context, chosen by `root_id`:
//! - `token_fetcher`, a singleton Wasm service on Envoy's main thread, is the
//!   only part that talks to the sidecar. It long-polls `GET /v1/tokens`,
//!   publishes each snapshot into shared data, and forwards upstream-401
//!   reports from the workers' shared queue.
//! - `bearer_injector`, the HTTP filter, copies the snapshot into VM-local
//!   state on its root context's tick, so a request reads no shared data: it
//!   makes one hash lookup and one header write.
//! - `tenant_gate` and `cache_fill`, the opt-in response cache's two sides
//!   around Envoy's `cache_v2` (`envoy/cache.yaml`): the gate is the injector
//!   plus turning cacheable requests towards the cache under a per-tenant
//!   authority; the fill injects on the cache's misses and imposes the TTL.
//!
//! # Layout
//! - [`config`]: each role's plugin configuration, validated in `on_configure`.
//! - [`host`]: the small traits the logic uses instead of host calls.
//! - [`fetcher`]: the fetcher role over [`host::Calls`]; [`poll`] is its pure
//!   long-poll and report state machine.
//! - [`injector`]: the injector role over [`host::Stream`] (per request) and
//!   [`host::Worker`] (the tick); [`table`] is its VM-local token table.
//! - [`callers`]: the per-tenant allow-lists, compiled from the snapshot.
//! - [`cache`]: the cache roles over the same traits plus [`host::Response`].
//! - [`metrics`]: hot-path counters flushed to Envoy stats on the tick.
//! - `wasm` (wasm32 only): the thin adapters over `proxy_wasm::hostcalls`
//!   and the `Role` dispatch.
//!
//! A new role (for example a response cache) gets its own module beside
//! `injector`, its config in [`config`], and one arm in `wasm`'s `Role`.
//! The wire format of the token API comes from the `protocol` crate.

pub mod cache;
pub mod callers;
pub mod config;
#[cfg(test)]
mod fake;
pub mod fetcher;
pub mod host;
pub mod injector;
pub mod metrics;
pub mod poll;
pub mod table;

#[cfg(target_arch = "wasm32")]
mod wasm;
