//! The current tokens, versioned, and a watch channel that wakes long-polls.
//!
//! Every change (a new token, an expiry) bumps one global version. The first
//! version is the start time in microseconds, so a restarted sidecar never
//! repeats a version that a filter has already seen.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Serialize, Serializer};
use tokio::sync::watch;

use crate::secret::Secret;

/// A token as the filter sees it.
#[derive(Debug)]
pub struct Entry {
    /// The ready-made header value: `Bearer <token>`.
    pub header: Secret,
    /// Wall-clock time after which the sidecar stops serving it (the token's
    /// real expiry less the safety margin).
    pub serve_until: SystemTime,
    /// The store version that installed it: the token's identity in upstream
    /// 401 reports.
    pub version: u64,
}

/// Allow-lists per tenant, from the configuration.
pub type Callers = BTreeMap<String, Vec<protocol::CallerRule<'static>>>;

/// An immutable view of all tenants.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub version: u64,
    pub tenants: Arc<BTreeMap<String, Option<Arc<Entry>>>>,
    /// Who may use each tenant: sent with every snapshot, so the filter
    /// learns tokens and allow-lists from one source.
    pub callers: Arc<Callers>,
}

impl Snapshot {
    /// The tenant's token, if it is still servable at `now`.
    pub fn valid(&self, tenant: &str, now: SystemTime) -> Option<&Arc<Entry>> {
        self.tenants
            .get(tenant)?
            .as_ref()
            .filter(|e| e.serve_until > now)
    }
}

/// Serializes for the filter's token API, in the wire format of
/// [`protocol::Snapshot`]. This is the only place a token value is written
/// anywhere, and it goes only to the loopback listener.
impl Serialize for Snapshot {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let tenants = self
            .tenants
            .iter()
            .map(|(id, entry)| {
                let token = entry.as_ref().map(|e| protocol::Token {
                    header: Cow::Borrowed(e.header.expose()),
                    expires_at_ms: unix_ms(e.serve_until),
                    version: e.version,
                });
                (Cow::Borrowed(id.as_str()), token)
            })
            .collect();
        let callers = self
            .callers
            .iter()
            .map(|(id, rules)| (Cow::Borrowed(id.as_str()), rules.clone()))
            .collect();
        protocol::Snapshot {
            version: self.version,
            tenants,
            callers,
        }
        .serialize(s)
    }
}

pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The shared token store.
#[derive(Debug, Clone)]
pub struct Store {
    tx: Arc<watch::Sender<Snapshot>>,
}

impl Store {
    pub fn new<'a>(tenant_ids: impl IntoIterator<Item = &'a str>) -> Store {
        Store::with_callers(tenant_ids, Callers::new())
    }

    /// A store whose snapshots also carry the tenants' allow-lists.
    pub fn with_callers<'a>(
        tenant_ids: impl IntoIterator<Item = &'a str>,
        callers: Callers,
    ) -> Store {
        let start = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_micros() as u64;
        let tenants = tenant_ids
            .into_iter()
            .map(|id| (id.to_owned(), None))
            .collect();
        let (tx, _) = watch::channel(Snapshot {
            version: start,
            tenants: Arc::new(tenants),
            callers: Arc::new(callers),
        });
        Store { tx: Arc::new(tx) }
    }

    pub fn snapshot(&self) -> Snapshot {
        self.tx.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<Snapshot> {
        self.tx.subscribe()
    }

    /// Installs a token for `tenant`; returns the version that identifies it.
    pub fn install(&self, tenant: &str, access_token: &Secret, serve_until: SystemTime) -> u64 {
        let mut installed = 0;
        self.tx.send_modify(|snap| {
            snap.version += 1;
            installed = snap.version;
            let header = Secret::new(format!("Bearer {}", access_token.expose()));
            let mut tenants = (*snap.tenants).clone();
            tenants.insert(
                tenant.to_owned(),
                Some(Arc::new(Entry {
                    header,
                    serve_until,
                    version: installed,
                })),
            );
            snap.tenants = Arc::new(tenants);
        });
        installed
    }

    /// Stops serving `tenant`'s token if it is still the one with `version`.
    pub fn expire(&self, tenant: &str, version: u64) -> bool {
        self.tx.send_if_modified(|snap| {
            let current = snap.tenants.get(tenant).and_then(|e| e.as_ref());
            if current.map(|e| e.version) != Some(version) {
                return false;
            }
            snap.version += 1;
            let mut tenants = (*snap.tenants).clone();
            tenants.insert(tenant.to_owned(), None);
            snap.tenants = Arc::new(tenants);
            true
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Installing and expiring bump the version and wake subscribers; a stale
    /// expiry (for a token already replaced) changes nothing.
    #[tokio::test]
    async fn versions_and_wakeups() {
        let store = Store::new(["a", "b"]);
        let mut rx = store.subscribe();
        let v0 = store.snapshot().version;
        let until = SystemTime::now() + Duration::from_secs(60);
        let v1 = store.install("a", &Secret::new("t1".into()), until);
        assert_eq!(v1, v0 + 1);
        assert!(rx.has_changed().unwrap());
        rx.borrow_and_update();
        let v2 = store.install("a", &Secret::new("t2".into()), until);
        assert!(!store.expire("a", v1), "stale expiry must be ignored");
        assert!(!rx.has_changed().unwrap() || rx.borrow().version == v2);
        assert!(store.expire("a", v2));
        let snap = store.snapshot();
        assert_eq!(snap.version, v2 + 1);
        assert!(snap.valid("a", SystemTime::now()).is_none());
    }

    /// The wire format carries the ready-made header, expiry and version.
    #[test]
    fn wire_format() {
        let store = Store::new(["a", "b"]);
        let until = UNIX_EPOCH + Duration::from_millis(1_900_000_000_000);
        let v = store.install("a", &Secret::new("tok".into()), until);
        let json = serde_json::to_value(store.snapshot()).unwrap();
        assert_eq!(json["version"], v);
        assert_eq!(json["tenants"]["a"]["header"], "Bearer tok");
        assert_eq!(json["tenants"]["a"]["expires_at_ms"], 1_900_000_000_000u64);
        assert_eq!(json["tenants"]["a"]["version"], v);
        assert!(json["tenants"]["b"].is_null());
        assert!(json.get("callers").is_none(), "no allow-lists, no key");
        let rule = protocol::CallerRule {
            id: "system:serviceaccount:ns:*".into(),
            methods: vec!["GET".into()],
            paths: vec![],
        };
        let store = Store::with_callers(["a"], [("a".to_string(), vec![rule])].into());
        let json = serde_json::to_value(store.snapshot()).unwrap();
        assert_eq!(
            json["callers"],
            serde_json::json!({"a": [{"id": "system:serviceaccount:ns:*", "methods": ["GET"]}]})
        );
    }

    /// A token past its serve-until time is not valid, even before the
    /// refresh task removes it.
    #[test]
    fn valid_checks_time() {
        let store = Store::new(["a"]);
        let until = SystemTime::now() + Duration::from_secs(1);
        store.install("a", &Secret::new("tok".into()), until);
        let snap = store.snapshot();
        assert!(snap.valid("a", SystemTime::now()).is_some());
        assert!(snap.valid("a", until + Duration::from_millis(1)).is_none());
    }
}
