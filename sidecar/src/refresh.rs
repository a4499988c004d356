//! The per-tenant refresh task: drives one [`Schedule`] with real time, the
//! token fetcher, the store and the 401 reports, and logs what it decides.
//!
//! One task per tenant owns that tenant's token, so at most one fetch per
//! tenant is ever in flight. Across tenants, a [`Limiter`] bounds how many
//! token requests run at once (`refresh.max_concurrent_fetches`); requests
//! beyond it wait in its queue. The rules themselves live in
//! [`crate::schedule`].

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, Semaphore};
use tokio::time::{sleep_until, Instant};
use tracing::{debug, error, info, warn};

use crate::config::{RefreshPolicy, Tenant};
use crate::metrics::{FetchGauges, TenantMetrics};
use crate::oauth::{FetchError, IssuedToken, Retry};
use crate::schedule::{Action, Report, Schedule};
use crate::shared::Outcome;
use crate::store::Store;

pub use crate::schedule::{backoff, plan, Plan};

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
        crate::oauth::fetch(&self.client, tenant, &self.policy)
    }
}

/// Bounds concurrent token requests across all tenants, and counts the
/// queue and the requests in flight for `/metrics`.
#[derive(Debug)]
pub struct Limiter {
    permits: Semaphore,
    gauges: Arc<FetchGauges>,
}

impl Limiter {
    pub fn new(max_concurrent: usize, gauges: Arc<FetchGauges>) -> Limiter {
        Limiter {
            permits: Semaphore::new(max_concurrent),
            gauges,
        }
    }

    /// Runs `fetch` once a permit is free.
    pub async fn run<T>(&self, fetch: impl Future<Output = T>) -> T {
        let g = &self.gauges;
        g.queued.fetch_add(1, Ordering::Relaxed);
        let permit = self.permits.acquire().await;
        g.queued.fetch_sub(1, Ordering::Relaxed);
        let now = g.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        g.in_flight_peak.fetch_max(now, Ordering::Relaxed);
        let out = fetch.await;
        g.in_flight.fetch_sub(1, Ordering::Relaxed);
        drop(permit);
        out
    }
}

/// Everything one tenant's task needs.
pub struct TenantLoop<F> {
    pub tenant: Arc<Tenant>,
    pub policy: Arc<RefreshPolicy>,
    pub fetcher: Arc<F>,
    pub limiter: Arc<Limiter>,
    pub store: Store,
    pub metrics: Arc<TenantMetrics>,
    /// Upstream 401 reports: the version of the rejected token.
    pub rejections: mpsc::Receiver<u64>,
    /// When the first fetch starts (spread over `start_spread`).
    pub first_fetch: Instant,
    /// The shared token store, when configured: the fetch action goes
    /// through its lock ([`crate::shared::SharedTenant::obtain`]: fetched or
    /// adopted), and tokens other replicas publish arrive as adopted events.
    pub shared: Option<crate::shared::Link>,
}

type FetchFuture = Pin<Box<dyn Future<Output = Result<Outcome, FetchError>> + Send>>;

impl<F: Fetcher> TenantLoop<F> {
    /// Runs until the task is aborted.
    pub async fn run(mut self) {
        let mut schedule = Schedule::new(self.policy.clone(), self.first_fetch);
        let mut in_flight: Option<FetchFuture> = None;
        // The served token's version in the shared store (None: a local
        // token, or no store).
        let mut shared_version: Option<u64> = None;
        loop {
            let now = Instant::now();
            while let Some(action) = schedule.poll(now) {
                match action {
                    Action::Fetch { forced_by } => {
                        if let Some(version) = forced_by {
                            self.metrics.forced_refresh();
                            warn!(tenant = %self.tenant.id, version, "upstream rejected the token; refreshing now");
                        }
                        let (fetcher, tenant) = (self.fetcher.clone(), self.tenant.clone());
                        let limiter = self.limiter.clone();
                        in_flight = Some(match &self.shared {
                            None => Box::pin(async move {
                                let token = limiter.run(fetcher.fetch(&tenant)).await?;
                                Ok(Outcome::Fetched {
                                    token,
                                    version: None,
                                })
                            }),
                            Some(link) => {
                                let shared = link.tenant.clone();
                                // The shared version of the token being served,
                                // refreshed or rejected (forced_by is its version).
                                let known = schedule.serving_version().and(shared_version);
                                Box::pin(async move {
                                    shared
                                        .obtain(known, || limiter.run(fetcher.fetch(&tenant)))
                                        .await
                                })
                            }
                        });
                    }
                    Action::Withdraw { version } => {
                        self.store.expire(&self.tenant.id, version);
                        error!(tenant = %self.tenant.id, version, "token expired with no replacement; requests for this tenant now fail closed");
                    }
                }
            }
            let deadline = schedule.deadline();
            let idle = in_flight.is_none();
            tokio::select! {
                _ = sleep_until(deadline.unwrap_or_else(far_future)), if deadline.is_some() => {}
                result = poll_opt(&mut in_flight) => {
                    in_flight = None;
                    self.finished(&mut schedule, &mut shared_version, result);
                }
                // Another replica's token. While a fetch is in flight it
                // waits: the fetch adopts or publishes on its own.
                Some(record) = adopted(&mut self.shared), if idle => {
                    // Versions only rise; an older record is a late read.
                    if record.version > shared_version.unwrap_or(0) || schedule.serving_version().is_none() {
                        if let Some(link) = &self.shared {
                            link.tenant.shared_metrics().adopted();
                        }
                        self.finished(&mut schedule, &mut shared_version, Ok(Outcome::Adopted(record)));
                    }
                }
                Some(version) = self.rejections.recv() => {
                    self.metrics.rejection();
                    let id = &self.tenant.id;
                    match schedule.rejected(Instant::now(), version) {
                        Report::RefreshNow => {}
                        Report::Deferred { at } => warn!(
                            tenant = %id, version,
                            refresh_in_secs = at.saturating_duration_since(Instant::now()).as_secs_f64(),
                            "upstream rejected the token again within rejection_min_interval; refreshing at the window's end"
                        ),
                        Report::Duplicate | Report::Stale | Report::InFlight => {
                            debug!(tenant = %id, version, "rejection report needs no new refresh");
                        }
                    }
                }
            }
        }
    }

    fn finished(
        &self,
        schedule: &mut Schedule,
        shared_version: &mut Option<u64>,
        result: Result<Outcome, FetchError>,
    ) {
        let now = Instant::now();
        let id = &self.tenant.id;
        match result {
            Ok(outcome) => {
                let (token, source, new_shared) = match outcome {
                    Outcome::Fetched { token, version } => (token, "fetched", version),
                    // Planned on its remaining life: every replica then
                    // refreshes at (about) the same instant.
                    Outcome::Adopted(record) => {
                        let version = record.version;
                        (
                            record.into_issued(SystemTime::now()),
                            "adopted",
                            Some(version),
                        )
                    }
                };
                let served = schedule.fetched(now, token.lifetime, jitter_draw(new_shared));
                let plan = served.plan;
                let wall_now = SystemTime::now();
                let same = new_shared.is_some() && new_shared == *shared_version;
                let version = match schedule.serving_version() {
                    // The record we already serve (re-read): reschedule only.
                    Some(v) if same => v,
                    _ => {
                        let v =
                            self.store
                                .install(id, &token.access_token, wall_now + plan.serve_for);
                        *shared_version = new_shared;
                        v
                    }
                };
                schedule.installed(version, now + plan.serve_for);
                if source == "fetched" {
                    self.metrics.success(wall_now, served.lifetime);
                }
                if let Some(clamp) = served.clamp {
                    self.metrics.clamped(clamp);
                    let (issued, used) = (token.lifetime.as_secs_f64(), served.lifetime.as_secs());
                    if served.first_clamp {
                        warn!(tenant = %id, expires_in = issued, lifetime_secs = used, bound = clamp.label(),
                            "token lifetime outside [refresh.min_lifetime, refresh.max_lifetime]; clamped (logged once per tenant)");
                    } else {
                        debug!(tenant = %id, expires_in = issued, lifetime_secs = used, bound = clamp.label(), "token lifetime clamped");
                    }
                }
                info!(
                    tenant = %id,
                    version,
                    shared_version = *shared_version,
                    source,
                    lifetime_secs = served.lifetime.as_secs(),
                    default_lifetime = token.defaulted_lifetime,
                    serve_secs = plan.serve_for.as_secs(),
                    refresh_in_secs = plan.refresh_after.as_secs(),
                    "token obtained"
                );
            }
            Err(err) => {
                let r = schedule.failed(now, &err, rand::random::<f64>());
                self.metrics.failure(err.reason);
                let (streak, delay, serving) = (r.failures, r.delay.as_secs_f64(), r.serving);
                match err.retry {
                    Retry::Permanent => error!(
                        tenant = %id, reason = err.reason, cause = %err,
                        consecutive_failures = streak, retry_in_secs = delay,
                        still_serving = serving,
                        "token request refused; fix the credentials, retrying slowly"
                    ),
                    Retry::Transient => warn!(
                        tenant = %id, reason = err.reason, cause = %err,
                        consecutive_failures = streak, retry_in_secs = delay,
                        still_serving = serving,
                        "token request failed, backing off"
                    ),
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
