//! proxy-wasm filter that injects each tenant's bearer token, handed over by
//! the sidecar, into every request through Envoy.
//!
//! One `.wasm`, two roles, chosen by `root_id`:
//! - `token_fetcher`, a singleton Wasm service on Envoy's main thread, is the
//!   only part that talks to the sidecar. It long-polls `GET /v1/tokens`,
//!   publishes each snapshot into shared data, and forwards upstream-401
//!   reports from the workers' shared queue.
//! - `bearer_injector`, the HTTP filter, copies the snapshot into VM-local
//!   state on its root context's tick, so a request reads no shared data: it
//!   makes one hash lookup and one header write.
//!
//! # Layout
//! - [`config`]: both roles' plugin configuration, validated in `on_configure`.
//! - [`table`]: the VM-local token table and its counters.
//! - [`inject`]: per-request logic over the [`inject::Host`] trait.
//! - [`poll`]: the fetcher's long-poll and report state machine.
//! - `wasm` (wasm32 only): the thin adapters over `proxy_wasm::hostcalls`.

pub mod config;
pub mod inject;
pub mod poll;
pub mod table;

#[cfg(target_arch = "wasm32")]
mod wasm;
