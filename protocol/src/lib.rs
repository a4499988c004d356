//! The token API between the sidecar and the filter, defined once: the wire
//! types, the paths, the long-poll limit and the tenant-id rule. Both sides
//! depend on this crate, so they cannot drift apart; one round-trip test
//! checks that what the sidecar writes is what the filter reads.
//!
//! Serde only, so it builds for the host and for `wasm32-wasip1`.
//!
//! # The API (loopback only)
//! - `GET /v1/tokens?after=V&wait_ms=M` answers a [`Snapshot`] as JSON. When
//!   the current version equals `after`, the sidecar waits up to `M` ms (at
//!   most [`MAX_WAIT_MS`]) for a change and answers `204` if none came.
//! - `POST /v1/tenants/{tenant}/rejected?version=V`: the upstream answered
//!   401 to the token with version `V`; `202`.
//! - Errors: [`ErrorBody`], `{"error": "<stable code>", "message": "..."}`.
//!
//! # Layout
//! All in this file: [`Snapshot`], [`Token`] and [`CallerRule`] (wire
//! types), the path
//! builders ([`poll_path`], [`rejected_path`]), the limits, and
//! [`valid_tenant_id`].

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Path of the snapshot long-poll.
pub const TOKENS_PATH: &str = "/v1/tokens";
/// Route of the 401 report, in axum's syntax (`{tenant}` is the tenant id).
pub const REJECTED_ROUTE: &str = "/v1/tenants/{tenant}/rejected";
/// Longest long-poll the sidecar honours; longer waits are cut to this.
pub const MAX_WAIT_MS: u64 = 60_000;
/// Longest tenant id.
pub const MAX_TENANT_ID_LEN: usize = 64;
/// The tenant-id rule, for error messages.
pub const TENANT_ID_RULE: &str = "1-64 characters of [A-Za-z0-9._-]";

/// Whether `id` is a tenant id: 1-64 of `[A-Za-z0-9._-]`. Such an id is safe
/// in a URL path, a metric name and a header, and never contains `,` (so a
/// comma in a tenant header means the caller sent more than one).
pub fn valid_tenant_id(id: &str) -> bool {
    valid_tenant_id_bytes(id.as_bytes())
}

/// [`valid_tenant_id`] on raw header bytes.
pub fn valid_tenant_id_bytes(id: &[u8]) -> bool {
    !id.is_empty()
        && id.len() <= MAX_TENANT_ID_LEN
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Path of a poll: the first one (`after` unknown) answers at once; later
/// ones wait up to `wait_ms` for a version other than `after`.
pub fn poll_path(after: Option<u64>, wait_ms: u64) -> String {
    match after {
        None => TOKENS_PATH.to_string(),
        Some(v) => format!("{TOKENS_PATH}?after={v}&wait_ms={wait_ms}"),
    }
}

/// Path of the 401 report for `tenant`'s token `version`. The tenant must
/// pass [`valid_tenant_id`] (it is written into the path as is).
pub fn rejected_path(tenant: &str, version: u64) -> String {
    format!("/v1/tenants/{tenant}/rejected?version={version}")
}

/// Query of `GET /v1/tokens`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PollQuery {
    pub after: Option<u64>,
    pub wait_ms: Option<u64>,
}

/// Query of the 401 report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectQuery {
    pub version: u64,
}

/// Error body of the token API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody<'a> {
    pub error: Cow<'a, str>,
    pub message: Cow<'a, str>,
}

/// Every tenant the sidecar serves, at one version, with who may use it.
///
/// Every tenant is listed, with `null` while it has no servable token. A
/// tenant not listed is not configured. `version` changes with every change
/// and never repeats across sidecar restarts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot<'a> {
    pub version: u64,
    #[serde(borrow)]
    pub tenants: BTreeMap<Cow<'a, str>, Option<Token<'a>>>,
    /// Who may use each tenant: the allow-lists from the sidecar's
    /// configuration (`tenants.<id>.callers`), the one place they are
    /// defined. A tenant without an entry allows no authenticated caller.
    #[serde(borrow, default, skip_serializing_if = "BTreeMap::is_empty")]
    pub callers: BTreeMap<Cow<'a, str>, Vec<CallerRule<'a>>>,
}

/// One allow-list entry: a caller identity pattern, optionally restricted
/// to methods and path prefixes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallerRule<'a> {
    /// The caller identity (a SPIFFE ID, `system:serviceaccount:NS:NAME`,
    /// ...): exact, or a prefix when it ends in `*`; `*` alone is any
    /// authenticated caller. See [`valid_caller_pattern`].
    #[serde(borrow)]
    pub id: Cow<'a, str>,
    /// Allowed methods (upper case); empty: any method the proxy accepts.
    #[serde(borrow, default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<Cow<'a, str>>,
    /// Allowed path prefixes (each starts with `/`); empty: any path.
    #[serde(borrow, default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<Cow<'a, str>>,
}

/// Longest caller pattern.
pub const MAX_CALLER_LEN: usize = 512;

/// Why a caller pattern is not valid, or `None` when it is: 1-512 visible
/// ASCII characters (no space, no `,`), with `*` only as the last one.
pub fn invalid_caller_pattern(id: &str) -> Option<&'static str> {
    if id.is_empty() || id.len() > MAX_CALLER_LEN {
        return Some("must be 1-512 characters");
    }
    if !id.bytes().all(|b| b.is_ascii_graphic() && b != b',') {
        return Some("must be visible ASCII without spaces or commas");
    }
    if id.trim_end_matches('*').contains('*') || id.ends_with("**") {
        return Some("may contain `*` only once, as its last character (a prefix)");
    }
    None
}

/// Methods a caller rule may name.
pub const METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

/// One tenant's token as the filter uses it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token<'a> {
    /// The ready-made header value, `Bearer <token>`.
    #[serde(borrow)]
    pub header: Cow<'a, str>,
    /// Wall-clock time (Unix ms) at which the sidecar stops serving this
    /// token: its real expiry less the sidecar's margin. The filter stops
    /// using it at this instant, less at most a small clock allowance.
    pub expires_at_ms: u64,
    /// Identity of this token in 401 reports.
    pub version: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the sidecar writes is what the filter reads, field for field,
    /// including tenants without a token; and the JSON has the documented
    /// shape.
    #[test]
    fn snapshot_round_trip() {
        let mut tenants = BTreeMap::new();
        tenants.insert(
            Cow::Borrowed("acme"),
            Some(Token {
                header: Cow::Borrowed("Bearer abc"),
                expires_at_ms: 1_900_000_000_000,
                version: 7,
            }),
        );
        tenants.insert(Cow::Borrowed("globex"), None);
        let mut callers = BTreeMap::new();
        callers.insert(
            Cow::Borrowed("acme"),
            vec![
                CallerRule {
                    id: Cow::Borrowed("spiffe://cluster.local/ns/a/sa/b"),
                    methods: vec![Cow::Borrowed("GET")],
                    paths: vec![Cow::Borrowed("/v1/")],
                },
                CallerRule {
                    id: Cow::Borrowed("system:serviceaccount:team-a:*"),
                    methods: vec![],
                    paths: vec![],
                },
            ],
        );
        let snap = Snapshot {
            version: 9,
            tenants,
            callers,
        };
        let json = serde_json::to_string(&snap).unwrap();
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"version": 9, "tenants": {
                "acme": {"header": "Bearer abc", "expires_at_ms": 1_900_000_000_000u64, "version": 7},
                "globex": null},
                "callers": {"acme": [
                    {"id": "spiffe://cluster.local/ns/a/sa/b", "methods": ["GET"], "paths": ["/v1/"]},
                    {"id": "system:serviceaccount:team-a:*"}]}})
        );
        let back: Snapshot = serde_json::from_str(&json).unwrap();
        assert_eq!(back, snap);
    }

    /// The paths and the tenant-id rule.
    #[test]
    fn paths_and_ids() {
        assert_eq!(poll_path(None, 5), "/v1/tokens");
        assert_eq!(poll_path(Some(3), 5), "/v1/tokens?after=3&wait_ms=5");
        assert_eq!(
            rejected_path("acme", 4),
            "/v1/tenants/acme/rejected?version=4"
        );
        assert!(valid_tenant_id("a.B-c_9"));
        assert!(valid_tenant_id(&"a".repeat(64)));
        for bad in ["", "a b", "a,b", "a/b", &"a".repeat(65)] {
            assert!(!valid_tenant_id(bad), "{bad:?}");
        }
        for good in ["*", "system:serviceaccount:ns:*", "spiffe://x/ns/a/sa/b"] {
            assert_eq!(invalid_caller_pattern(good), None, "{good}");
        }
        for bad in ["", "a*b", "**", "a b", "a,b", "x**"] {
            assert!(invalid_caller_pattern(bad).is_some(), "{bad:?}");
        }
    }
}
