//! The per-tenant refresh loop and its schedule.
//!
//! One task per tenant owns that tenant's token, so at most one fetch per
//! tenant is ever in flight. It refreshes proactively at a jittered fraction
//! of the lifetime, backs off on failure by kind, stops serving a token at its
//! expiry less a margin, and refreshes early (rate-limited) when the filter
//! reports an upstream 401 for the token it holds.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;
use tokio::time::{sleep_until, Instant};
use tracing::{error, info, warn};

use crate::config::{RefreshPolicy, Tenant};
use crate::metrics::TenantMetrics;
use crate::oauth::{FetchError, IssuedToken, Retry};
use crate::shared::Outcome;
use crate::store::Store;

/// How long a token is served, and when to refresh it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Plan {
    pub serve_for: Duration,
    pub refresh_after: Duration,
}

/// Plans a fresh token's life. `u` is a uniform draw in [-1, 1] for jitter.
///
/// The margin is capped at a quarter of the lifetime, so a short-lived token
/// is still served; the refresh point (at most `fraction + jitter` < 1 of the
/// lifetime) is kept before the end of serving.
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

/// Something that fetches tokens: the real OAuth2 client, or a script in tests.
pub trait Fetcher: Send + Sync + 'static {
    fn fetch(
        &self,
        tenant: &Tenant,
    ) -> impl Future<Output = Result<IssuedToken, FetchError>> + Send;
}

/// The real fetcher: reqwest against the tenant's token endpoint.
#[derive(Debug, Clone)]
pub struct HttpFetcher {
    pub client: reqwest::Client,
    pub policy: Arc<RefreshPolicy>,
}

impl Fetcher for HttpFetcher {
    fn fetch(
        &self,
        tenant: &Tenant,
    ) -> impl Future<Output = Result<IssuedToken, FetchError>> + Send {
        crate::oauth::fetch(
            &self.client,
            tenant,
            self.policy.default_lifetime,
            self.policy.request_timeout,
        )
    }
}

/// Everything one tenant's loop needs.
pub struct TenantLoop<F> {
    pub tenant: Arc<Tenant>,
    pub policy: Arc<RefreshPolicy>,
    pub fetcher: Arc<F>,
    pub store: Store,
    pub metrics: Arc<TenantMetrics>,
    /// Upstream 401 reports: the version of the rejected token.
    pub rejections: mpsc::Receiver<u64>,
    /// The shared token store, when configured: fetches go through its lock
    /// and tokens other replicas publish arrive here.
    pub shared: Option<crate::shared::Link>,
}

type FetchFuture = Pin<Box<dyn Future<Output = Result<Outcome, FetchError>> + Send>>;

impl<F: Fetcher> TenantLoop<F> {
    /// Runs until the task is aborted.
    pub async fn run(mut self) {
        let id = self.tenant.id.clone();
        let mut next_fetch = Some(Instant::now());
        let mut in_flight: Option<FetchFuture> = None;
        // (version, serve-until) of the token this tenant currently serves.
        let mut current: Option<(u64, Instant)> = None;
        // Its version in the shared store (None: local, or no store).
        let mut shared_version: Option<u64> = None;
        let mut last_forced: Option<Instant> = None;
        let mut failures: u32 = 0;
        loop {
            let expiry = current.map(|(_, at)| at);
            tokio::select! {
                _ = sleep_until(next_fetch.unwrap_or_else(far_future)), if next_fetch.is_some() && in_flight.is_none() => {
                    next_fetch = None;
                    let fetcher = self.fetcher.clone();
                    let tenant = self.tenant.clone();
                    in_flight = Some(match &self.shared {
                        None => Box::pin(async move {
                            fetcher.fetch(&tenant).await.map(|token| Outcome::Fetched { token, version: None })
                        }),
                        Some(link) => {
                            let shared = link.tenant.clone();
                            let known = current.and(shared_version);
                            Box::pin(async move {
                                shared.obtain(known, || fetcher.fetch(&tenant)).await
                            })
                        }
                    });
                }
                result = poll_opt(&mut in_flight) => {
                    in_flight = None;
                    let now = Instant::now();
                    match result {
                        Ok(outcome) => {
                            failures = 0;
                            let got = Obtained::from(outcome);
                            let plan = plan(&self.policy, got.lifetime, jitter_draw(got.shared_version));
                            let serve_for = plan.serve_for.saturating_sub(got.age);
                            let until_wall = SystemTime::now() + serve_for;
                            let same = got.shared_version.is_some() && got.shared_version == shared_version && current.is_some();
                            if !same {
                                let version = self.store.install(&id, &got.token, until_wall);
                                current = Some((version, now + serve_for));
                                shared_version = got.shared_version;
                            }
                            if got.fetched {
                                self.metrics.success(SystemTime::now());
                            }
                            next_fetch = Some(now + plan.refresh_after.saturating_sub(got.age));
                            info!(
                                tenant = %id,
                                version = current.map(|(v, _)| v).unwrap_or(0),
                                shared_version,
                                source = got.source,
                                lifetime_secs = got.lifetime.as_secs(),
                                default_lifetime = got.defaulted_lifetime,
                                serve_secs = serve_for.as_secs(),
                                refresh_in_secs = plan.refresh_after.saturating_sub(got.age).as_secs(),
                                "token obtained"
                            );
                        }
                        Err(err) => {
                            failures = failures.saturating_add(1);
                            let streak = self.metrics.failure(err.reason);
                            let delay = backoff(&self.policy, failures, &err, rand::random::<f64>());
                            next_fetch = Some(now + delay);
                            let serving = current.is_some();
                            match err.retry {
                                Retry::Permanent => error!(
                                    tenant = %id, reason = err.reason, cause = %err,
                                    consecutive_failures = streak, retry_in_secs = delay.as_secs_f64(),
                                    still_serving = serving,
                                    "token request refused; fix the credentials, retrying slowly"
                                ),
                                Retry::Transient => warn!(
                                    tenant = %id, reason = err.reason, cause = %err,
                                    consecutive_failures = streak, retry_in_secs = delay.as_secs_f64(),
                                    still_serving = serving,
                                    "token request failed, backing off"
                                ),
                            }
                        }
                    }
                }
                _ = sleep_until(expiry.unwrap_or_else(far_future)), if expiry.is_some() => {
                    if let Some((version, _)) = current.take() {
                        self.store.expire(&id, version);
                        error!(tenant = %id, version, "token expired with no replacement; requests for this tenant now fail closed");
                    }
                }
                Some(record) = adopted(&mut self.shared) => {
                    // Versions only rise; an older record can only be a late read.
                    if record.version > shared_version.unwrap_or(0) || current.is_none() {
                        let now = Instant::now();
                        let got = Obtained::from(Outcome::Adopted(record));
                        let plan = plan(&self.policy, got.lifetime, jitter_draw(got.shared_version));
                        let serve_for = plan.serve_for.saturating_sub(got.age);
                        if !serve_for.is_zero() {
                            if let Some(link) = &self.shared {
                                link.tenant.shared_metrics().adopted();
                            }
                            let version = self.store.install(&id, &got.token, SystemTime::now() + serve_for);
                            current = Some((version, now + serve_for));
                            shared_version = got.shared_version;
                            if in_flight.is_none() {
                                next_fetch = Some(now + plan.refresh_after.saturating_sub(got.age));
                            }
                            info!(tenant = %id, version, shared_version, source = got.source, serve_secs = serve_for.as_secs(), "token obtained");
                        }
                    }
                }
                Some(version) = self.rejections.recv() => {
                    self.metrics.rejection();
                    let now = Instant::now();
                    let is_current = current.map(|(v, _)| v) == Some(version);
                    let allowed = last_forced.is_none_or(|t| now.duration_since(t) >= self.policy.rejection_min_interval);
                    if is_current && allowed && in_flight.is_none() {
                        last_forced = Some(now);
                        self.metrics.forced_refresh();
                        next_fetch = Some(now);
                        warn!(tenant = %id, version, "upstream rejected the token; refreshing now");
                    }
                }
            }
        }
    }
}

/// A token ready to install, however it was obtained.
struct Obtained {
    token: crate::secret::Secret,
    lifetime: Duration,
    /// How much of `lifetime` had passed when it arrived (adopted tokens).
    age: Duration,
    defaulted_lifetime: bool,
    shared_version: Option<u64>,
    /// Whether this replica requested it from the auth server.
    fetched: bool,
    source: &'static str,
}

impl From<Outcome> for Obtained {
    fn from(o: Outcome) -> Obtained {
        match o {
            Outcome::Fetched { token, version } => Obtained {
                token: token.access_token,
                lifetime: token.lifetime,
                age: Duration::ZERO,
                defaulted_lifetime: token.defaulted_lifetime,
                shared_version: version,
                fetched: true,
                source: "fetched",
            },
            Outcome::Adopted(record) => {
                let (lifetime, age) = record.lifetime_and_age(SystemTime::now());
                Obtained {
                    token: record.token,
                    lifetime,
                    age,
                    defaulted_lifetime: false,
                    shared_version: Some(record.version),
                    fetched: false,
                    source: "adopted",
                }
            }
        }
    }
}

/// The jitter draw in [-1, 1] for a token's refresh point. A shared token's
/// is derived from its version, so every replica plans the same refresh
/// point: one of them takes the lock and the others adopt, and the refresh
/// rate doesn't grow with the replica count (with independent draws the
/// earliest of N would win). Tenants still spread, since versions differ.
fn jitter_draw(shared_version: Option<u64>) -> f64 {
    match shared_version {
        Some(v) => crate::shared::unit_from(v) * 2.0 - 1.0,
        None => rand::random::<f64>() * 2.0 - 1.0,
    }
}

async fn adopted(link: &mut Option<crate::shared::Link>) -> Option<crate::shared::Record> {
    match link {
        Some(link) => link.adopted.recv().await,
        None => std::future::pending().await,
    }
}

async fn poll_opt(f: &mut Option<FetchFuture>) -> Result<Outcome, FetchError> {
    match f.as_mut() {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86400 * 365)
}

#[cfg(test)]
mod tests;
