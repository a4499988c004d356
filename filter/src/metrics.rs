//! Counters kept VM-locally on the hot path (a `Cell` bump, no host call)
//! and flushed to Envoy's stats as deltas on the tick.

use std::cell::Cell;

use crate::host::Worker;

/// A hot-path counter.
#[derive(Debug, Default)]
pub struct Counter(Cell<u64>);

impl Counter {
    pub fn bump(&self) {
        self.0.set(self.0.get().wrapping_add(1));
    }
    pub fn get(&self) -> u64 {
        self.0.get()
    }
}

/// One Envoy stat and how much of its counter was already pushed.
#[derive(Debug, Default)]
pub struct Stat {
    id: Option<u32>,
    flushed: u64,
}

impl Stat {
    /// Defines the stat `name`; without an id (host refused) it is skipped.
    pub fn define(host: &impl Worker, name: &str) -> Stat {
        Stat {
            id: host.define_counter(name),
            flushed: 0,
        }
    }

    /// Pushes what `counter` gained since the last flush. A failed push is
    /// retried on the next tick, so nothing is lost.
    pub fn flush(&mut self, host: &impl Worker, counter: &Counter) {
        let now = counter.get();
        if let Some(id) = self.id {
            if now > self.flushed && host.increment_counter(id, now - self.flushed).is_ok() {
                self.flushed = now;
            }
        }
    }
}
