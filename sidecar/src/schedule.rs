//! One tenant's refresh schedule as a pure state machine: events in (time
//! passed, a fetch finished, a token was installed, an upstream 401 was
//! reported), decisions out (start a fetch, withdraw a token, how long to
//! serve, when to retry). No I/O, no clock and no randomness of its own: the
//! driver in [`crate::refresh`] passes `now` and the random draws in, so the
//! tests replay any schedule instantly.
//!
//! The rules it enforces:
//! - **Lifetime**: `expires_in` is clamped to
//!   [`min_lifetime`, `max_lifetime`] (10 s and 24 h by default) for the
//!   refresh schedule. Serving never outlasts the real lifetime: a token
//!   shorter than the floor is served for its own (short) time and refreshed
//!   on the floor's schedule, so that tenant sees `no_token` gaps rather
//!   than the auth server a storm.
//! - **Serving**: a token is served until its lifetime less
//!   `expiry_margin`, the margin capped at a quarter of the lifetime. That
//!   instant is the snapshot's `expires_at_ms`; the filter stops using the
//!   token then (less only a small clock allowance).
//! - **Refresh** at `fraction ± jitter` of the lifetime, and never later than
//!   90% of the serving time, so with a healthy auth server the next token is
//!   in place well before the current one stops being served.
//! - **Backoff** by error kind (see [`backoff`]).
//! - **Rate bound**: at most `max_fetches_per_minute` fetch starts in any
//!   60 s window, whatever the server answers.
//! - **401 reports**: a report for the version being served forces a refresh,
//!   at most one per `rejection_min_interval`; a report inside that window is
//!   deferred to the window's end, not dropped. Re-reports of a version
//!   already scheduled, reports for older versions and reports while a fetch
//!   is in flight change nothing.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::RefreshPolicy;
use crate::oauth::{FetchError, Retry};

/// The window of the per-tenant fetch bound.
pub const RATE_WINDOW: Duration = Duration::from_secs(60);

/// How long a token is served, and when to refresh it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Plan {
    pub serve_for: Duration,
    pub refresh_after: Duration,
}

/// Plans a fresh token's life. `lifetime` is already clamped; `u` is a
/// uniform draw in [-1, 1] for jitter.
///
/// The margin is capped at a quarter of the lifetime, so a short-lived token
/// is still served; the refresh point (at most `fraction + jitter` < 1 of the
/// lifetime) is kept before 90% of the serving time.
pub fn plan(policy: &RefreshPolicy, lifetime: Duration, u: f64) -> Plan {
    let margin = policy.expiry_margin.min(lifetime / 4);
    let serve_for = lifetime.saturating_sub(margin);
    let fraction = (policy.fraction + policy.jitter * u.clamp(-1.0, 1.0)).clamp(0.01, 0.99);
    let refresh_after = lifetime.mul_f64(fraction).min(serve_for.mul_f64(0.9));
    Plan {
        serve_for,
        refresh_after,
    }
}

/// Delay before the next attempt after `failures` consecutive failures (1 for
/// the first). `u` is a uniform draw in [0, 1) for jitter.
///
/// Transient errors back off exponentially from `backoff_initial` to
/// `backoff_max`, jittered to 50–100% of the step, and never sooner than a
/// server's `Retry-After`. Permanent errors wait `permanent_retry` ±10%.
pub fn backoff(policy: &RefreshPolicy, failures: u32, err: &FetchError, u: f64) -> Duration {
    let u = u.clamp(0.0, 1.0);
    let base = match err.retry {
        Retry::Permanent => return policy.permanent_retry.mul_f64(0.9 + 0.2 * u),
        Retry::Transient => {
            let exp = failures.saturating_sub(1).min(30);
            policy
                .backoff_initial
                .saturating_mul(1u32 << exp)
                .min(policy.backoff_max)
        }
    };
    let jittered = base.mul_f64(0.5 + 0.5 * u);
    match err.retry_after {
        Some(after) => jittered.max(after.min(policy.permanent_retry)),
        None => jittered,
    }
}

/// Which bound a lifetime was clamped to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clamp {
    Floor,
    Ceiling,
}

impl Clamp {
    pub fn label(self) -> &'static str {
        match self {
            Clamp::Floor => "floor",
            Clamp::Ceiling => "ceiling",
        }
    }
}

/// What the driver must do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Start a token request. `forced_by` is the rejected version when an
    /// upstream 401 caused it.
    Fetch { forced_by: Option<u64> },
    /// Stop serving the token with this version: its serving time is over.
    Withdraw { version: u64 },
}

/// A successful fetch, planned.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Served {
    /// The lifetime used: `expires_in` clamped.
    pub lifetime: Duration,
    pub clamp: Option<Clamp>,
    /// Whether this is the first clamp for this tenant (log it loudly once).
    pub first_clamp: bool,
    pub plan: Plan,
}

/// A failed fetch, planned.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Retrying {
    pub delay: Duration,
    pub failures: u32,
    /// A token is still being served.
    pub serving: bool,
}

/// What became of an upstream 401 report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Report {
    /// A forced refresh starts now.
    RefreshNow,
    /// A forced refresh starts at the end of the rate-limit window.
    Deferred { at: Instant },
    /// This version's refresh is already scheduled.
    Duplicate,
    /// Not the token being served (already replaced, or none).
    Stale,
    /// A fetch is under way; its token replaces the rejected one.
    InFlight,
}

#[derive(Debug, Clone, Copy)]
struct Serving {
    version: u64,
    until: Instant,
}

/// One tenant's schedule.
#[derive(Debug)]
pub struct Schedule {
    policy: Arc<RefreshPolicy>,
    next_fetch: Option<Instant>,
    in_flight: bool,
    serving: Option<Serving>,
    /// A forced refresh owed to a 401 report: (rejected version, not before).
    forced: Option<(u64, Instant)>,
    last_forced: Option<Instant>,
    failures: u32,
    /// Start times of this tenant's fetches within the last [`RATE_WINDOW`].
    recent: VecDeque<Instant>,
    clamped_before: bool,
}

impl Schedule {
    /// A schedule whose first fetch starts at `first_fetch`.
    pub fn new(policy: Arc<RefreshPolicy>, first_fetch: Instant) -> Schedule {
        Schedule {
            policy,
            next_fetch: Some(first_fetch),
            in_flight: false,
            serving: None,
            forced: None,
            last_forced: None,
            failures: 0,
            recent: VecDeque::new(),
            clamped_before: false,
        }
    }

    /// When [`Schedule::poll`] next has something to do (None: only an
    /// event can change anything).
    pub fn deadline(&self) -> Option<Instant> {
        let fetch = self.next_fetch.filter(|_| !self.in_flight);
        let expiry = self.serving.map(|s| s.until);
        match (fetch, expiry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The next thing due at `now`, if any. Call until it returns None.
    pub fn poll(&mut self, now: Instant) -> Option<Action> {
        if let Some(s) = self.serving.filter(|s| s.until <= now) {
            self.serving = None;
            self.forced = None;
            return Some(Action::Withdraw { version: s.version });
        }
        let due = self.next_fetch.filter(|at| *at <= now && !self.in_flight)?;
        while self
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= RATE_WINDOW)
        {
            self.recent.pop_front();
        }
        if self.recent.len() >= self.policy.max_fetches_per_minute as usize {
            // The bound is reached: wait until the oldest start leaves the window.
            let free_at = self.recent.front().map_or(due, |t| *t + RATE_WINDOW);
            self.next_fetch = Some(free_at.max(due));
            return None;
        }
        self.recent.push_back(now);
        self.next_fetch = None;
        self.in_flight = true;
        let forced_by = match self.forced.take() {
            Some((version, at)) if at <= now && self.serving_version() == Some(version) => {
                self.last_forced = Some(now);
                Some(version)
            }
            // Not yet due (a proactive refresh came first): this fetch
            // replaces the rejected token anyway.
            _ => None,
        };
        Some(Action::Fetch { forced_by })
    }

    /// A fetch returned a token with `expires_in` = `issued` (unclamped).
    /// Call [`Schedule::installed`] once the store has it.
    pub fn fetched(&mut self, now: Instant, issued: Duration, u: f64) -> Served {
        self.in_flight = false;
        self.failures = 0;
        let p = &self.policy;
        let (lifetime, clamp) = if issued < p.min_lifetime {
            (p.min_lifetime, Some(Clamp::Floor))
        } else if issued > p.max_lifetime {
            (p.max_lifetime, Some(Clamp::Ceiling))
        } else {
            (issued, None)
        };
        let first_clamp = clamp.is_some() && !self.clamped_before;
        self.clamped_before |= clamp.is_some();
        // The refresh follows the clamped lifetime (so a tiny `expires_in`
        // can't cause a storm); serving never outlasts the real one (so a
        // token is never served past its expiry).
        let plan = Plan {
            serve_for: plan(p, issued.min(lifetime), u).serve_for,
            refresh_after: plan(p, lifetime, u).refresh_after,
        };
        self.next_fetch = Some(now + plan.refresh_after);
        Served {
            lifetime,
            clamp,
            first_clamp,
            plan,
        }
    }

    /// The token from the last [`Schedule::fetched`] is served as `version`
    /// until `until`.
    pub fn installed(&mut self, version: u64, until: Instant) {
        self.serving = Some(Serving { version, until });
        self.forced = None;
    }

    /// A fetch failed. `u` is a uniform draw in [0, 1).
    pub fn failed(&mut self, now: Instant, err: &FetchError, u: f64) -> Retrying {
        self.in_flight = false;
        self.failures = self.failures.saturating_add(1);
        let delay = backoff(&self.policy, self.failures, err, u);
        self.next_fetch = Some(now + delay);
        Retrying {
            delay,
            failures: self.failures,
            serving: self.serving.is_some(),
        }
    }

    /// The upstream answered 401 to the token with `version`.
    pub fn rejected(&mut self, now: Instant, version: u64) -> Report {
        if self.serving_version() != Some(version) {
            return Report::Stale;
        }
        if self.in_flight {
            return Report::InFlight;
        }
        if self.forced.is_some_and(|(v, _)| v == version) {
            return Report::Duplicate;
        }
        let at = self
            .last_forced
            .map_or(now, |t| t + self.policy.rejection_min_interval)
            .max(now);
        self.forced = Some((version, at));
        self.next_fetch = Some(self.next_fetch.map_or(at, |n| n.min(at)));
        if at <= now {
            Report::RefreshNow
        } else {
            Report::Deferred { at }
        }
    }

    /// The version being served, if any.
    pub fn serving_version(&self) -> Option<u64> {
        self.serving.map(|s| s.version)
    }

    /// Whether a fetch is under way.
    pub fn in_flight(&self) -> bool {
        self.in_flight
    }
}

#[cfg(test)]
pub(crate) mod tests;
