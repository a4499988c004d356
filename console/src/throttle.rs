//! Failed-login throttling for password mode. After [`FREE_FAILURES`] wrong
//! passwords for one user name, each further attempt for that name must wait
//! a delay that doubles with every failure (1 s, 2 s, 4 s … capped at
//! [`MAX_DELAY`]); a success clears the name. Keyed by the submitted user
//! name, not the client address: behind the ingress or SSO proxy every client
//! has the proxy's address. A backoff rather than a lockout, so an attacker
//! can slow a user's login down, not shut it.
//!
//! Per replica and in memory, bounded to [`MAX_NAMES`] names (the oldest
//! failure is forgotten first), so a flood of made-up names can't grow it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Wrong passwords allowed before the backoff starts.
pub const FREE_FAILURES: u32 = 5;
/// The longest wait between attempts.
pub const MAX_DELAY: Duration = Duration::from_secs(15 * 60);
/// Failures are forgotten after this long without one.
pub const FORGET_AFTER: Duration = Duration::from_secs(60 * 60);
/// The most user names tracked at once.
pub const MAX_NAMES: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
}

#[derive(Default)]
pub struct Throttle {
    names: Mutex<HashMap<String, Failures>>,
}

impl Throttle {
    /// `Err(wait)` when `name` must wait before another attempt.
    pub fn check(&self, name: &str, now: Instant) -> Result<(), Duration> {
        let names = self.names.lock().unwrap_or_else(|p| p.into_inner());
        let Some(f) = names.get(name) else {
            return Ok(());
        };
        let ready = f.last + delay(f.count);
        if now < ready {
            Err(ready - now)
        } else {
            Ok(())
        }
    }

    /// Records a wrong password for `name`.
    pub fn failed(&self, name: &str, now: Instant) {
        let mut names = self.names.lock().unwrap_or_else(|p| p.into_inner());
        if names.len() >= MAX_NAMES && !names.contains_key(name) {
            names.retain(|_, f| now.duration_since(f.last) < FORGET_AFTER);
            if names.len() >= MAX_NAMES {
                if let Some(oldest) = names
                    .iter()
                    .min_by_key(|(_, f)| f.last)
                    .map(|(n, _)| n.clone())
                {
                    names.remove(&oldest);
                }
            }
        }
        let f = names.entry(name.to_string()).or_insert(Failures {
            count: 0,
            last: now,
        });
        if now.duration_since(f.last) >= FORGET_AFTER {
            f.count = 0;
        }
        f.count = f.count.saturating_add(1);
        f.last = now;
    }

    /// A successful login clears `name`.
    pub fn succeeded(&self, name: &str) {
        self.names
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
    }
}

/// The wait after `count` failures.
fn delay(count: u32) -> Duration {
    match count.checked_sub(FREE_FAILURES) {
        None => Duration::ZERO,
        Some(over) => Duration::from_secs(1u64 << over.min(20)).min(MAX_DELAY),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_after_free_failures_doubles_and_caps() {
        let t = Throttle::default();
        let t0 = Instant::now();
        for _ in 0..FREE_FAILURES - 1 {
            t.failed("admin", t0);
        }
        assert_eq!(t.check("admin", t0), Ok(()), "still free");
        t.failed("admin", t0);
        assert_eq!(t.check("admin", t0), Err(Duration::from_secs(1)));
        assert_eq!(t.check("admin", t0 + Duration::from_secs(1)), Ok(()));
        t.failed("admin", t0);
        assert_eq!(t.check("admin", t0), Err(Duration::from_secs(2)));
        assert_eq!(t.check("other", t0), Ok(()), "per name");
        for _ in 0..30 {
            t.failed("admin", t0);
        }
        assert_eq!(t.check("admin", t0), Err(MAX_DELAY));
        t.succeeded("admin");
        assert_eq!(t.check("admin", t0), Ok(()));
    }

    #[test]
    fn old_failures_are_forgotten_and_names_are_bounded() {
        let t = Throttle::default();
        let t0 = Instant::now();
        for _ in 0..FREE_FAILURES {
            t.failed("admin", t0);
        }
        let later = t0 + FORGET_AFTER;
        t.failed("admin", later);
        assert_eq!(t.check("admin", later), Ok(()), "counting starts again");
        for i in 0..MAX_NAMES + 10 {
            t.failed(
                &format!("made-up-{i}"),
                later + Duration::from_millis(i as u64),
            );
        }
        assert!(t.names.lock().unwrap().len() <= MAX_NAMES);
    }
}
