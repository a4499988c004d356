//! The one fake Envoy the native unit tests run the roles against. It
//! implements every host trait, and models the real host's quirks: headers
//! are lists, as in Envoy's header map; the single-header read returns only
//! the first value; the all-values property read answers `None` for an
//! empty value.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};

use crate::config::{SNAPSHOT_KEY, VERSION_KEY};
use crate::host::{Calls, HostError, Rewrite, Stream, Worker};

type Headers = RefCell<Vec<(String, Vec<u8>)>>;
/// A local reply: status, headers, body.
pub(crate) type Reply = (u32, Vec<(String, String)>, Vec<u8>);
/// One dispatched HTTP call: cluster and headers.
pub(crate) type Call = (String, Vec<(String, String)>);

#[derive(Default)]
pub(crate) struct FakeHost {
    pub(crate) req: Headers,
    pub(crate) resp: Headers,
    pub(crate) reply: RefCell<Option<Reply>>,
    /// Every header and property write fails.
    pub(crate) fail_writes: bool,
    /// Writes to this one header fail.
    pub(crate) fail_on: Option<&'static str>,
    /// Stream properties by path (joined with `/`): the caller identity.
    pub(crate) props: HashMap<String, Vec<u8>>,
    /// Filter state written by the filter.
    pub(crate) state: RefCell<HashMap<String, Vec<u8>>>,
    /// Stream host calls made, by name, in order.
    pub(crate) calls: RefCell<Vec<&'static str>>,
    pub(crate) now: Cell<u64>,
    pub(crate) shared: RefCell<HashMap<String, Vec<u8>>>,
    pub(crate) counters: RefCell<Vec<(String, u64)>>,
    /// What `resolve_queue` finds.
    pub(crate) queue: Option<u32>,
    /// Messages waiting in the fetcher's queue.
    pub(crate) inbox: RefCell<VecDeque<Vec<u8>>>,
    pub(crate) dispatched: RefCell<Vec<Call>>,
    pub(crate) fail_dispatch: Cell<bool>,
}

fn first(h: &Headers, name: &str) -> Option<Vec<u8>> {
    h.borrow()
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
}

fn set(h: &Headers, name: &str, value: &[u8]) {
    let mut h = h.borrow_mut();
    h.retain(|(k, _)| k != name);
    h.push((name.into(), value.to_vec()));
}

impl FakeHost {
    /// A request with these headers, in order (repeats allowed).
    pub(crate) fn with(headers: &[(&str, &str)]) -> FakeHost {
        let h = FakeHost::default();
        for (k, v) in headers {
            h.req
                .borrow_mut()
                .push((k.to_string(), v.as_bytes().to_vec()));
        }
        h
    }

    /// The request header's first value.
    pub(crate) fn header(&self, name: &str) -> Option<String> {
        first(&self.req, name).map(|v| String::from_utf8(v).unwrap())
    }

    /// The response header's first value.
    pub(crate) fn resp_header(&self, name: &str) -> Option<String> {
        first(&self.resp, name).map(|v| String::from_utf8(v).unwrap())
    }

    /// The upstream's response headers arrive (each replaces its name).
    pub(crate) fn respond(&self, headers: &[(&str, &str)]) {
        for (k, v) in headers {
            set(&self.resp, k, v.as_bytes());
        }
    }

    pub(crate) fn reply_status(&self) -> Option<u32> {
        self.reply.borrow().as_ref().map(|r| r.0)
    }

    /// A counter's value, summed over its definitions (one per role).
    pub(crate) fn counter(&self, name: &str) -> u64 {
        let counters = self.counters.borrow();
        let mut found = counters.iter().filter(|(n, _)| n == name).peekable();
        assert!(found.peek().is_some(), "no counter {name}");
        found.map(|(_, v)| *v).sum()
    }

    /// The sidecar's snapshot, as the fetcher publishes it into shared data.
    pub(crate) fn publish(&self, version: u64, tenants: &str) {
        let snap = format!(r#"{{"version":{version},"tenants":{{{tenants}}}}}"#);
        let mut shared = self.shared.borrow_mut();
        shared.insert(SNAPSHOT_KEY.into(), snap.into_bytes());
        shared.insert(VERSION_KEY.into(), version.to_string().into_bytes());
    }

    /// The `:path` of the last dispatched call.
    pub(crate) fn last_path(&self) -> String {
        let calls = self.dispatched.borrow();
        let (_, headers) = calls.last().unwrap();
        headers
            .iter()
            .find(|(k, _)| k == ":path")
            .unwrap()
            .1
            .clone()
    }

    fn check(&self, name: &str) -> Result<(), HostError> {
        if self.fail_writes || self.fail_on == Some(name) {
            Err(HostError("BadArgument"))
        } else {
            Ok(())
        }
    }
}

impl Stream for FakeHost {
    fn request_header(&self, name: &str) -> Option<Vec<u8>> {
        self.calls.borrow_mut().push("request_header");
        first(&self.req, name)
    }
    fn request_header_all(&self, name: &str) -> Option<Vec<u8>> {
        self.calls.borrow_mut().push("request_header_all");
        let values: Vec<Vec<u8>> = self
            .req
            .borrow()
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .collect();
        Some(values.join(&b","[..])).filter(|v| !v.is_empty())
    }
    fn property(&self, path: &[String]) -> Option<Vec<u8>> {
        self.calls.borrow_mut().push("property");
        self.props.get(&path.join("/")).cloned()
    }
    fn set_property(&self, name: &str, value: &[u8]) -> Result<(), HostError> {
        self.calls.borrow_mut().push("set_property");
        self.check(name)?;
        self.state
            .borrow_mut()
            .insert(name.to_string(), value.to_vec());
        Ok(())
    }
    fn set_request_header(&self, name: &str, value: &[u8]) -> Result<(), HostError> {
        self.calls.borrow_mut().push("set_request_header");
        self.check(name)?;
        set(&self.req, name, value);
        Ok(())
    }
    fn response_status(&self) -> Option<Vec<u8>> {
        first(&self.resp, ":status")
    }
    fn send_reply(&self, status: u32, headers: &[(&str, &str)], body: &[u8]) {
        let headers = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        *self.reply.borrow_mut() = Some((status, headers, body.to_vec()));
    }
}

impl Rewrite for FakeHost {
    fn remove_request_header(&self, name: &str) -> Result<(), HostError> {
        self.check(name)?;
        self.req.borrow_mut().retain(|(k, _)| k != name);
        Ok(())
    }
    fn response_header(&self, name: &str) -> Option<Vec<u8>> {
        first(&self.resp, name)
    }
    fn set_response_header(&self, name: &str, value: &[u8]) -> Result<(), HostError> {
        self.check(name)?;
        set(&self.resp, name, value);
        Ok(())
    }
    fn remove_response_header(&self, name: &str) -> Result<(), HostError> {
        self.check(name)?;
        self.resp.borrow_mut().retain(|(k, _)| k != name);
        Ok(())
    }
}

impl Worker for FakeHost {
    fn now_ms(&self) -> u64 {
        self.now.get()
    }
    fn shared_data(&self, key: &str) -> Result<Option<Vec<u8>>, HostError> {
        Ok(self.shared.borrow().get(key).cloned())
    }
    fn define_counter(&self, name: &str) -> Option<u32> {
        let mut c = self.counters.borrow_mut();
        c.push((name.to_string(), 0));
        Some(c.len() as u32 - 1)
    }
    fn increment_counter(&self, id: u32, delta: u64) -> Result<(), HostError> {
        self.counters.borrow_mut()[id as usize].1 += delta;
        Ok(())
    }
    fn resolve_queue(&self, _vm_id: &str, _name: &str) -> Option<u32> {
        self.queue
    }
}

impl Calls for FakeHost {
    fn dispatch(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        _timeout_ms: u64,
    ) -> Result<u32, HostError> {
        if self.fail_dispatch.get() {
            return Err(HostError("InternalFailure"));
        }
        let mut calls = self.dispatched.borrow_mut();
        calls.push((
            cluster.to_string(),
            headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ));
        Ok(calls.len() as u32)
    }
    fn set_shared_data(&self, key: &str, value: &[u8]) -> Result<(), HostError> {
        self.shared
            .borrow_mut()
            .insert(key.to_string(), value.to_vec());
        Ok(())
    }
    fn register_queue(&self, _: &str) -> Result<u32, HostError> {
        Ok(1)
    }
    fn dequeue(&self, _: u32) -> Option<Vec<u8>> {
        self.inbox.borrow_mut().pop_front()
    }
}
