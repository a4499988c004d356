//! The worker's VM-local token table, rebuilt from the sidecar's snapshot and
//! read on every request without a host call.
//!
//! Tenants are interned: a tenant keeps its slot (and its counters) for the
//! life of the VM, so a request only needs a hash lookup on the header bytes.

use std::cell::Cell;
use std::collections::HashMap;

use crate::callers::Rule;
use crate::metrics::Counter;

/// A token ready to be written as the `authorization` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// `Bearer <token>`, ready-made by the sidecar.
    pub header: Vec<u8>,
    pub expires_at_ms: u64,
    /// Identity of this token in upstream-401 reports.
    pub version: u64,
}

/// Per-tenant counters, updated on the hot path without a host call and
/// flushed to Envoy's stats on the tick.
#[derive(Debug, Default)]
pub struct Counters {
    pub injected: Counter,
    pub no_token: Counter,
    pub caller_not_allowed: Counter,
    pub upstream_401: Counter,
}

/// One tenant's state.
#[derive(Debug)]
pub struct Slot {
    pub name: String,
    /// Listed in the latest snapshot.
    pub known: bool,
    pub token: Option<Token>,
    /// Who may use this tenant (from the snapshot's `callers`).
    pub rules: Vec<Rule>,
    /// Version of the last token reported as rejected by this VM.
    pub reported: Cell<u64>,
    pub counters: Counters,
}

/// All tenants this VM has seen.
#[derive(Debug, Default)]
pub struct Table {
    index: HashMap<Box<[u8]>, usize>,
    slots: Vec<Slot>,
    /// Version of the snapshot loaded; `None` until the first one.
    version: Option<u64>,
}

fn parse(bytes: &[u8]) -> Result<protocol::Snapshot<'_>, String> {
    serde_json::from_slice(bytes).map_err(|e| format!("sidecar snapshot is not valid: {e}"))
}

/// Parses a snapshot only to check it, without loading it.
pub fn snapshot_version(bytes: &[u8]) -> Result<u64, String> {
    parse(bytes).map(|s| s.version)
}

impl Table {
    pub fn version(&self) -> Option<u64> {
        self.version
    }

    pub fn slots(&self) -> &[Slot] {
        &self.slots
    }

    pub fn slot(&self, index: usize) -> Option<&Slot> {
        self.slots.get(index)
    }

    /// Finds a tenant by the bytes of its id.
    pub fn lookup(&self, tenant: &[u8]) -> Option<usize> {
        self.index.get(tenant).copied()
    }

    /// Loads a snapshot. Returns the slots of tenants seen for the first time.
    ///
    /// A tenant listed with a token gets that token, unless `now_ms` is
    /// already within `allowance_ms` of its `expires_at_ms` (the instant the
    /// sidecar stops serving it) or it is not a valid bearer
    /// header. A tenant listed without one keeps the token this VM holds, if
    /// that is still valid: tokens leave the table only by expiring or being
    /// replaced, so a restarted sidecar, whose first snapshot has no tokens,
    /// can't take away tokens that still work. A tenant no longer listed is
    /// unknown, and loses its token.
    pub fn load(
        &mut self,
        bytes: &[u8],
        now_ms: u64,
        allowance_ms: u64,
    ) -> Result<Vec<usize>, String> {
        let snap = parse(bytes)?;
        let deadline = now_ms.saturating_add(allowance_ms);
        for slot in &mut self.slots {
            slot.known = false;
        }
        let mut added = Vec::new();
        let mut callers = snap.callers;
        for (name, wire) in snap.tenants {
            let rules: Vec<Rule> = callers
                .remove(&name)
                .unwrap_or_default()
                .iter()
                .filter_map(Rule::compile)
                .collect();
            let index = match self.index.get(name.as_bytes()) {
                Some(&i) => i,
                None => {
                    let i = self.slots.len();
                    self.index.insert(name.as_bytes().into(), i);
                    self.slots.push(Slot {
                        name: name.into_owned(),
                        known: false,
                        token: None,
                        rules: Vec::new(),
                        reported: Cell::new(0),
                        counters: Counters::default(),
                    });
                    added.push(i);
                    i
                }
            };
            let fresh = wire
                .filter(|w| w.expires_at_ms > deadline)
                .filter(|w| valid_bearer(w.header.as_bytes()))
                .map(|w| Token {
                    header: w.header.into_owned().into_bytes(),
                    expires_at_ms: w.expires_at_ms,
                    version: w.version,
                });
            if let Some(slot) = self.slots.get_mut(index) {
                slot.known = true;
                slot.rules = rules;
                if fresh.is_some() {
                    slot.token = fresh;
                }
            }
        }
        for slot in &mut self.slots {
            if !slot.known
                || slot
                    .token
                    .as_ref()
                    .is_some_and(|t| t.expires_at_ms <= deadline)
            {
                slot.token = None;
            }
        }
        self.version = Some(snap.version);
        Ok(added)
    }

    /// Drops every token whose `expires_at_ms` is within `allowance_ms` of
    /// `now_ms`; returns how many were dropped.
    pub fn drop_expiring(&mut self, now_ms: u64, allowance_ms: u64) -> usize {
        let deadline = now_ms.saturating_add(allowance_ms);
        let mut dropped = 0;
        for slot in &mut self.slots {
            if slot
                .token
                .as_ref()
                .is_some_and(|t| t.expires_at_ms <= deadline)
            {
                slot.token = None;
                dropped += 1;
            }
        }
        dropped
    }
}

/// `Bearer ` followed by visible ASCII: anything else must never reach a
/// header.
fn valid_bearer(header: &[u8]) -> bool {
    header.len() > 7
        && header.starts_with(b"Bearer ")
        && header.iter().skip(7).all(u8::is_ascii_graphic)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn snap(version: u64, tenants: &str) -> Vec<u8> {
        format!(r#"{{"version":{version},"tenants":{{{tenants}}}}}"#).into_bytes()
    }

    /// Loading interns tenants, keeps tokens, and marks tenants without a
    /// token as known.
    #[test]
    fn load_and_lookup() {
        let mut t = Table::default();
        assert_eq!(t.version(), None);
        let added = t
            .load(
                &snap(
                    7,
                    r#""a":{"header":"Bearer x","expires_at_ms":10000,"version":5},"b":null"#,
                ),
                1000,
                100,
            )
            .unwrap();
        assert_eq!(added.len(), 2);
        assert_eq!(t.version(), Some(7));
        let a = t.slot(t.lookup(b"a").unwrap()).unwrap();
        assert_eq!(a.token.as_ref().unwrap().header, b"Bearer x");
        let b = t.slot(t.lookup(b"b").unwrap()).unwrap();
        assert!(b.known && b.token.is_none());
        assert!(t.lookup(b"c").is_none());
    }

    /// A tenant removed from the sidecar's configuration becomes unknown but
    /// keeps its slot; a re-load does not re-add it.
    #[test]
    fn removed_tenant_is_unknown() {
        let mut t = Table::default();
        t.load(&snap(1, r#""a":null,"b":null"#), 0, 0).unwrap();
        let added = t.load(&snap(2, r#""a":null"#), 0, 0).unwrap();
        assert!(added.is_empty());
        assert!(!t.slot(t.lookup(b"b").unwrap()).unwrap().known);
    }

    /// Tokens already inside the allowance are never loaded, and the tick
    /// drops tokens as they reach it.
    #[test]
    fn expiring_tokens_are_dropped() {
        let mut t = Table::default();
        t.load(
            &snap(
                1,
                r#""a":{"header":"Bearer x","expires_at_ms":5000,"version":1},"b":{"header":"Bearer y","expires_at_ms":1050,"version":1}"#,
            ),
            1000,
            100,
        )
        .unwrap();
        assert!(t.slot(t.lookup(b"b").unwrap()).unwrap().token.is_none());
        assert_eq!(t.drop_expiring(4899, 100), 0);
        assert_eq!(t.drop_expiring(4900, 100), 1);
        assert!(t.slot(t.lookup(b"a").unwrap()).unwrap().token.is_none());
    }

    /// A header that is not `Bearer <visible ascii>` is refused.
    #[test]
    fn malformed_header_is_refused() {
        let mut t = Table::default();
        t.load(
            &snap(
                1,
                r#""a":{"header":"Bearer x\r\nInjected: 1","expires_at_ms":5000,"version":1},"b":{"header":"Basic eA==","expires_at_ms":5000,"version":1}"#,
            ),
            0,
            0,
        )
        .unwrap();
        assert!(t.slots().iter().all(|s| s.token.is_none()));
    }

    /// A snapshot without a token for a tenant (a restarted sidecar's first)
    /// keeps the token this VM holds while it is valid, never past its time.
    #[test]
    fn null_keeps_a_valid_token() {
        let mut t = Table::default();
        t.load(
            &snap(
                1,
                r#""a":{"header":"Bearer x","expires_at_ms":5000,"version":1}"#,
            ),
            1000,
            100,
        )
        .unwrap();
        t.load(&snap(2, r#""a":null"#), 2000, 100).unwrap();
        let a = t.lookup(b"a").unwrap();
        assert_eq!(
            t.slot(a).unwrap().token.as_ref().unwrap().header,
            b"Bearer x"
        );
        t.load(&snap(3, r#""a":null"#), 4900, 100).unwrap();
        assert!(t.slot(a).unwrap().token.is_none(), "gone at its time");
        // A replacement still replaces.
        t.load(
            &snap(
                4,
                r#""a":{"header":"Bearer y","expires_at_ms":9000,"version":4}"#,
            ),
            4900,
            100,
        )
        .unwrap();
        assert_eq!(t.slot(a).unwrap().token.as_ref().unwrap().version, 4);
    }

    /// Garbage is an error and leaves the table as it was.
    #[test]
    fn garbage_keeps_table() {
        let mut t = Table::default();
        t.load(&snap(1, r#""a":null"#), 0, 0).unwrap();
        assert!(t.load(b"<html>", 0, 0).is_err());
        assert_eq!(t.version(), Some(1));
        assert!(t.lookup(b"a").is_some());
    }
}
