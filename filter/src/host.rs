//! What the filter's logic needs from Envoy, as small traits. The wasm
//! adapters (`wasm.rs`) implement them over `proxy_wasm::hostcalls`; the
//! unit tests implement them with fakes that model the real host's quirks
//! (a single-header read returns only the first of repeated headers).
//!
//! - [`Stream`]: one HTTP request (the injector's hot path).
//! - [`Worker`]: a root context's tick (shared data, clock, stats, queues).
//! - [`Calls`]: the fetcher's outgoing HTTP calls and shared-data writes.
//! - [`Rewrite`]: request-header removal and response headers, for the
//!   cache roles.

/// A host call failed; the `proxy_wasm` status, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostError(pub &'static str);

/// Host calls of one HTTP stream.
pub trait Stream {
    /// The first value of a request header (Envoy's single-header read).
    fn request_header(&self, name: &str) -> Option<Vec<u8>>;
    /// Every value of a request header, joined with `,` (Envoy's
    /// `request.headers` property), so a repeated header can be told apart
    /// from a single one in one call. Like the real host, it answers `None`
    /// for an empty value as for an absent header.
    fn request_header_all(&self, name: &str) -> Option<Vec<u8>>;
    /// Replaces every value of the header with `value`.
    fn set_request_header(&self, name: &str, value: &[u8]) -> Result<(), HostError>;
    /// A property of the stream (connection, dynamic metadata, ...).
    fn property(&self, path: &[String]) -> Option<Vec<u8>>;
    /// Writes `value` into the stream's filter state as `wasm.<name>`, where
    /// the access log reads it.
    fn set_property(&self, name: &str, value: &[u8]) -> Result<(), HostError>;
    fn response_status(&self) -> Option<Vec<u8>>;
    fn send_reply(&self, status: u32, headers: &[(&str, &str)], body: &[u8]);
}

/// Host calls of a root context's tick.
pub trait Worker {
    /// Wall-clock time, Unix milliseconds.
    fn now_ms(&self) -> u64;
    fn shared_data(&self, key: &str) -> Result<Option<Vec<u8>>, HostError>;
    /// Defines a counter in Envoy's stats; `None` if the host refused.
    fn define_counter(&self, name: &str) -> Option<u32>;
    fn increment_counter(&self, id: u32, delta: u64) -> Result<(), HostError>;
    /// Finds the shared queue `name` of VM `vm_id`.
    fn resolve_queue(&self, vm_id: &str, name: &str) -> Option<u32>;
}

/// Host calls of the fetcher, besides [`Worker`]'s.
pub trait Calls: Worker {
    /// Starts an HTTP call; returns its token.
    fn dispatch(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        timeout_ms: u64,
    ) -> Result<u32, HostError>;
    fn set_shared_data(&self, key: &str, value: &[u8]) -> Result<(), HostError>;
    fn register_queue(&self, name: &str) -> Result<u32, HostError>;
    fn dequeue(&self, queue: u32) -> Option<Vec<u8>>;
}

/// Further header calls of one HTTP stream, for the cache roles.
pub trait Rewrite {
    /// Removes every value of a request header.
    fn remove_request_header(&self, name: &str) -> Result<(), HostError>;
    /// The first value of a response header.
    fn response_header(&self, name: &str) -> Option<Vec<u8>>;
    /// Replaces every value of the header with `value`.
    fn set_response_header(&self, name: &str, value: &[u8]) -> Result<(), HostError>;
    fn remove_response_header(&self, name: &str) -> Result<(), HostError>;
}
