//! The schedule's rules, replayed without a clock: each test feeds events at
//! chosen instants and checks the decisions.

use super::*;

/// The refresh policy the schedule and refresh-task tests share.
pub(crate) fn policy() -> RefreshPolicy {
    RefreshPolicy {
        rejection_min_interval: Duration::from_secs(10),
        ..RefreshPolicy::default()
    }
}

pub(crate) fn transient(reason: &'static str) -> FetchError {
    FetchError {
        url: "https://auth.example.com/token".into(),
        reason,
        retry: Retry::Transient,
        retry_after: None,
        detail: "test".into(),
    }
}

pub(crate) fn permanent() -> FetchError {
    FetchError {
        retry: Retry::Permanent,
        ..transient("invalid_client")
    }
}

const S: fn(u64) -> Duration = Duration::from_secs;

/// A schedule with `p`, whose first fetch is due at `t0`, plus a fake
/// store version counter.
struct Run {
    s: Schedule,
    t0: Instant,
    version: u64,
}

impl Run {
    fn new(p: RefreshPolicy) -> Run {
        let t0 = Instant::now();
        Run {
            s: Schedule::new(Arc::new(p), t0),
            t0,
            version: 0,
        }
    }

    fn at(&self, secs: f64) -> Instant {
        self.t0 + Duration::from_secs_f64(secs)
    }

    fn poll(&mut self, secs: f64) -> Option<Action> {
        let now = self.at(secs);
        self.s.poll(now)
    }

    /// Fetch finished with a token of `lifetime`; installed. Returns (version, served).
    fn issue(&mut self, secs: f64, lifetime: Duration) -> (u64, Served) {
        let now = self.at(secs);
        let served = self.s.fetched(now, lifetime, 0.0);
        self.version += 1;
        self.s.installed(self.version, now + served.plan.serve_for);
        (self.version, served)
    }
}

/// With no jitter, refresh at the fraction; the margin is capped at a quarter
/// of a short lifetime; jitter moves the refresh within ±jitter.
#[test]
fn plan_schedule() {
    let p = RefreshPolicy {
        jitter: 0.0,
        ..policy()
    };
    let plan1 = plan(&p, S(3600), 0.7);
    assert_eq!(plan1.refresh_after, S(1800));
    assert_eq!(plan1.serve_for, S(3570));
    let short = plan(&p, S(10), 0.0);
    assert_eq!(short.serve_for, Duration::from_millis(7500));
    assert_eq!(short.refresh_after, S(5));
    let p = policy();
    let lo = plan(&p, S(1000), -1.0).refresh_after;
    let hi = plan(&p, S(1000), 1.0).refresh_after;
    assert_eq!((lo.as_secs(), hi.as_secs()), (400, 600));
}

/// For every lifetime from the floor (10 s) to the ceiling (24 h) and any
/// jitter, the refresh comes at least a second and at least 10% of the
/// serving time before the token stops being served.
#[test]
fn refresh_always_well_before_serving_ends() {
    let p = policy();
    let mut lifetime = p.min_lifetime;
    while lifetime <= p.max_lifetime {
        for u in [-1.0, 0.0, 1.0] {
            let plan = plan(&p, lifetime, u);
            let headroom = plan.serve_for - plan.refresh_after;
            assert!(
                headroom >= S(1) && headroom >= plan.serve_for / 10,
                "lifetime {lifetime:?} u {u}: {plan:?}"
            );
        }
        lifetime = lifetime.mul_f64(1.37);
    }
}

/// Transient failures back off exponentially to the ceiling, jittered to
/// 50–100%; Retry-After is a floor; permanent failures wait long.
#[test]
fn backoff_schedule() {
    let p = policy();
    let full: Vec<u64> = (1..=8)
        .map(|n| backoff(&p, n, &transient("network"), 1.0).as_secs())
        .collect();
    assert_eq!(full, [1, 2, 4, 8, 16, 32, 60, 60]);
    let half = backoff(&p, 3, &transient("network"), 0.0);
    assert_eq!(half, S(2));
    let mut e = transient("rate_limited");
    e.retry_after = Some(S(45));
    assert_eq!(backoff(&p, 1, &e, 0.0), S(45));
    let slow = backoff(&p, 1, &permanent(), 0.5);
    assert_eq!(slow, S(300));
    assert!(backoff(&p, 1, &permanent(), 0.0) >= S(270));
    assert_eq!(backoff(&p, u32::MAX, &transient("x"), 1.0), p.backoff_max);
}

/// The first fetch is due at the start; a token is refreshed at its plan
/// and withdrawn at its serving end if no refresh succeeded.
#[test]
fn fetch_serve_refresh_withdraw() {
    let mut r = Run::new(policy());
    assert_eq!(r.s.deadline(), Some(r.t0));
    assert_eq!(r.poll(0.0), Some(Action::Fetch { forced_by: None }));
    assert_eq!(r.poll(0.0), None, "one fetch at a time");
    assert_eq!(r.s.deadline(), None, "nothing to wait for while in flight");
    let (v, served) = r.issue(0.1, S(100));
    assert_eq!(served.plan.serve_for, S(75));
    assert_eq!(r.s.deadline(), Some(r.at(50.1)));
    assert_eq!(r.poll(50.0), None);
    assert_eq!(r.poll(50.1), Some(Action::Fetch { forced_by: None }));
    let retry = r.s.failed(r.at(50.2), &transient("network"), 1.0);
    assert_eq!(retry.delay, S(1));
    assert!(retry.serving);
    assert_eq!(r.s.deadline(), Some(r.at(51.2)));
    // The outage lasts: at 75.1 s the token is withdrawn.
    for t in [51.2, 53.2, 57.2, 65.2] {
        assert!(matches!(r.poll(t), Some(Action::Fetch { .. })), "{t}");
        r.s.failed(r.at(t), &transient("network"), 1.0);
    }
    assert_eq!(r.poll(75.1), Some(Action::Withdraw { version: v }));
    assert_eq!(r.s.serving_version(), None);
}

/// `expires_in` 0, 0.001 and 10 years are clamped to the floor and the
/// ceiling for the refresh schedule; the first clamp is flagged for a loud
/// log, later ones not; a token is never served past its real lifetime.
#[test]
fn lifetimes_are_clamped() {
    let mut r = Run::new(policy());
    r.poll(0.0);
    let (_, s) = r.issue(0.0, Duration::ZERO);
    assert_eq!(
        (s.lifetime, s.clamp, s.first_clamp),
        (S(10), Some(Clamp::Floor), true)
    );
    assert_eq!(s.plan.serve_for, Duration::ZERO);
    assert_eq!(
        s.plan.refresh_after,
        S(5),
        "refreshed on the floor's schedule"
    );
    r.poll(6.0);
    let (_, s) = r.issue(6.0, Duration::from_millis(1));
    assert_eq!(
        (s.lifetime, s.clamp, s.first_clamp),
        (S(10), Some(Clamp::Floor), false)
    );
    assert!(s.plan.serve_for < Duration::from_millis(1));
    r.poll(12.0);
    let (_, s) = r.issue(12.0, S(10 * 365 * 86400));
    assert_eq!((s.lifetime, s.clamp), (S(86400), Some(Clamp::Ceiling)));
    assert_eq!(s.plan.serve_for, S(86400 - 30));
    let (_, s) = r.issue(12.0, S(3600));
    assert_eq!((s.lifetime, s.clamp), (S(3600), None));
}

/// Whatever happens, a tenant starts at most max_fetches_per_minute fetches
/// in any 60 s window: here every fetch fails at once with a Retry-After of
/// zero and a tiny backoff.
#[test]
fn fetches_per_minute_are_bounded() {
    let p = RefreshPolicy {
        backoff_initial: Duration::from_millis(1),
        backoff_max: Duration::from_millis(1),
        max_fetches_per_minute: 30,
        ..policy()
    };
    let mut r = Run::new(p);
    let mut starts = Vec::new();
    let mut now = r.t0;
    while now < r.at(300.0) {
        if let Some(Action::Fetch { .. }) = r.s.poll(now) {
            starts.push(now);
            r.s.failed(now, &transient("http_5xx"), 0.0);
        }
        now = r.s.deadline().unwrap().max(now + Duration::from_millis(1));
    }
    for (i, t) in starts.iter().enumerate() {
        let in_window = starts[i..]
            .iter()
            .take_while(|u| **u < *t + RATE_WINDOW)
            .count();
        assert!(
            in_window <= 30,
            "{in_window} fetches within 60 s of fetch {i}"
        );
    }
    assert!(
        starts.len() >= 5 * 30 - 1,
        "the bound is a cap, not a stop: {}",
        starts.len()
    );
}

/// An upstream 401 for the token being served forces a refresh now; a
/// report for the replacement inside rejection_min_interval is deferred to
/// the window's end (not dropped); re-reports of that version, reports for
/// older versions and reports while a fetch is under way change nothing.
#[test]
fn rejections_defer_instead_of_dropping() {
    let mut r = Run::new(policy());
    r.poll(0.0);
    let (v1, _) = r.issue(0.0, S(3600));
    assert_eq!(r.s.rejected(r.at(1.0), v1), Report::RefreshNow);
    assert_eq!(
        r.poll(1.0),
        Some(Action::Fetch {
            forced_by: Some(v1)
        })
    );
    assert_eq!(r.s.rejected(r.at(1.05), v1), Report::InFlight);
    let (v2, _) = r.issue(1.1, S(3600));
    assert_eq!(r.s.rejected(r.at(1.2), v1), Report::Stale);
    // The replacement is rejected too, 0.1 s later: deferred to 1.0 + 10 s.
    assert_eq!(
        r.s.rejected(r.at(1.2), v2),
        Report::Deferred { at: r.at(11.0) }
    );
    assert_eq!(r.s.rejected(r.at(1.3), v2), Report::Duplicate);
    assert_eq!(r.s.rejected(r.at(5.0), v2), Report::Duplicate);
    assert_eq!(r.s.deadline(), Some(r.at(11.0)));
    assert_eq!(r.poll(10.9), None);
    assert_eq!(
        r.poll(11.0),
        Some(Action::Fetch {
            forced_by: Some(v2)
        })
    );
    let (v3, _) = r.issue(11.1, S(3600));
    // The third token, rejected within the window of the second forced
    // refresh, is deferred again: at most one forced refresh per interval.
    assert_eq!(
        r.s.rejected(r.at(12.0), v3),
        Report::Deferred { at: r.at(21.0) }
    );
}

/// A deferred forced refresh is dropped when a proactive refresh replaces
/// the token first, and when the token is withdrawn.
#[test]
fn deferred_refresh_is_dropped_when_token_changes() {
    let p = RefreshPolicy {
        jitter: 0.0,
        rejection_min_interval: S(30),
        ..policy()
    };
    let mut r = Run::new(p);
    r.poll(0.0);
    let (v1, _) = r.issue(0.0, S(40)); // refresh at 20 s
    assert_eq!(r.s.rejected(r.at(1.0), v1), Report::RefreshNow);
    assert_eq!(
        r.poll(1.0),
        Some(Action::Fetch {
            forced_by: Some(v1)
        })
    );
    let (v2, _) = r.issue(1.0, S(40)); // refresh at 21 s
    assert_eq!(
        r.s.rejected(r.at(2.0), v2),
        Report::Deferred { at: r.at(31.0) }
    );
    assert_eq!(r.poll(21.0), Some(Action::Fetch { forced_by: None }));
    r.issue(21.0, S(40));
    assert_eq!(
        r.s.deadline(),
        Some(r.at(41.0)),
        "no leftover forced refresh"
    );
}

/// A permanent error waits permanent_retry, not the fast backoff.
#[test]
fn permanent_errors_retry_slowly() {
    let mut r = Run::new(policy());
    r.poll(0.0);
    let retry = r.s.failed(r.at(0.1), &permanent(), 0.5);
    assert_eq!(retry.delay, S(300));
    assert!(!retry.serving);
    assert_eq!(r.poll(250.0), None);
    assert!(matches!(r.poll(300.1), Some(Action::Fetch { .. })));
}
