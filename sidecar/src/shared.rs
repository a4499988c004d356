//! One token per tenant shared by every sidecar replica, through Redis or
//! Valkey (opt-in: the `shared` configuration block).
//!
//! Per tenant, three keys with the tenant's hash tag (one Cluster slot): the
//! token record, whose TTL is the token's remaining life; a fetch lock taken
//! with `SET NX PX` for longer than a token request may take; a version
//! counter. A replica that wants a token runs [`SharedTenant::obtain`]:
//!
//! 1. `ACQUIRE` (Lua): if the record holds a version other than the one the
//!    replica has (or rejects), adopt it; else take the lock; else wait.
//! 2. The lock winner fetches, then `PUBLISH` (Lua) writes the record and
//!    notifies the channel only while it still holds the lock (or the lock
//!    is free and the version unchanged: compare and set).
//! 3. Waiters wake on the notification (or when the lock's TTL runs out) and
//!    go back to 1, which now adopts. Every other replica adopts through its
//!    [`Watcher`], which reads the record on each notification.
//!
//! A 401 report runs the same `ACQUIRE` with the rejected version: if it is
//! still current the first replica fetches and the rest wait, so one storm
//! across all replicas costs one token request.
//!
//! When Redis cannot be reached, [`Mode::BestEffort`] fetches locally and
//! [`Mode::Exclusive`] fails the attempt (the refresh loop backs off and
//! keeps serving the current token until it expires). Readiness never
//! depends on Redis.
//!
//! # Layout
//! - [`config`]: the `shared` block.
//! - [`scripts`]: the Lua scripts.
//! - [`metrics`]: adopted and fetched tokens, lock waits, Redis errors.
//! - here: the client, the keys, the obtain procedure and the watcher.

pub mod config;
pub mod metrics;
pub mod scripts;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, IntoConnectionInfo, Script};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

pub use config::{Mode, SharedConfig};
pub use metrics::SharedMetrics;

use crate::config::Tenant;
use crate::oauth::{FetchError, IssuedToken, Retry};
use crate::secret::Secret;

/// Why Redis could not be used. `Display` never includes a token or password.
#[derive(Debug, thiserror::Error)]
pub enum SharedError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis: no answer within {0:?}")]
    Timeout(Duration),
    #[error("redis: unexpected reply to {0}")]
    Reply(&'static str),
    #[error("shared.{key}: {message}")]
    Setup { key: &'static str, message: String },
}

/// A token record as stored in Redis.
#[derive(Debug, Clone)]
pub struct Record {
    pub version: u64,
    pub token: Secret,
    /// When the lock winner received it (the winner's clock).
    pub issued_at: SystemTime,
    /// When the token itself expires (`issued_at` + `expires_in`).
    pub expires_at: SystemTime,
}

impl Record {
    /// As an issued token whose lifetime is what remains of it at `now`.
    pub fn into_issued(self, now: SystemTime) -> IssuedToken {
        IssuedToken {
            lifetime: self
                .expires_at
                .duration_since(now)
                .unwrap_or(Duration::ZERO),
            access_token: self.token,
            defaulted_lifetime: false,
        }
    }

    /// The token's full lifetime, and how much of it has passed at `now`.
    pub fn lifetime_and_age(&self, now: SystemTime) -> (Duration, Duration) {
        let lifetime = self
            .expires_at
            .duration_since(self.issued_at)
            .unwrap_or(Duration::ZERO);
        let age = now.duration_since(self.issued_at).unwrap_or(Duration::ZERO);
        (lifetime, age.min(lifetime))
    }
}

/// How [`SharedTenant::obtain`] got a token.
#[derive(Debug)]
pub enum Outcome {
    /// This replica fetched it. `version` is the shared version when it was
    /// published, `None` when Redis was unreachable (a local token).
    Fetched {
        token: IssuedToken,
        version: Option<u64>,
    },
    /// Another replica fetched it; this one adopted the record.
    Adopted(Record),
}

/// The connection to Redis, shared by every tenant.
#[derive(Clone)]
pub struct Shared {
    inner: Arc<Inner>,
}

struct Inner {
    config: SharedConfig,
    /// Rebuilt when Redis refuses the password and the password source
    /// holds a new one (a rotated Secret), so rotation needs no restart.
    connection: RwLock<Arc<Connection>>,
    owner: String,
    channel: String,
    acquire: Script,
    publish: Script,
    release: Script,
    metrics: Arc<SharedMetrics>,
    /// Wake-ups per tenant tag, fed by the subscriber task.
    wakeups: HashMap<String, watch::Sender<u64>>,
}

/// A client (for the subscriber's connections) and the command connection,
/// both with the password they were made with.
struct Connection {
    client: Client,
    conn: ConnectionManager,
    password: Option<Secret>,
}

impl Connection {
    /// Sets the client up; connects lazily, on the first command.
    fn open(config: &SharedConfig, password: Option<Secret>) -> Result<Connection, SharedError> {
        let mut info = config.url.as_str().into_connection_info()?;
        let mut settings = info.redis_settings().clone();
        if let Some(user) = &config.username {
            settings = settings.set_username(user);
        }
        if let Some(p) = &password {
            settings = settings.set_password(p.expose());
        }
        settings = settings.set_lib_name("authproxy-sidecar", env!("CARGO_PKG_VERSION"));
        info = info.set_redis_settings(settings);
        let client = match &config.ca_file {
            Some(path) => {
                let pem = std::fs::read(path).map_err(|e| SharedError::Setup {
                    key: "ca_file",
                    message: format!("{}: {e}", path.display()),
                })?;
                Client::build_with_tls(
                    info,
                    redis::TlsCertificates {
                        client_tls: None,
                        root_cert: Some(pem),
                    },
                )?
            }
            None => Client::open(info)?,
        };
        let manager = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.timeout))
            .set_response_timeout(Some(config.timeout))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500));
        let conn = client.get_connection_manager_lazy(manager)?;
        Ok(Connection {
            client,
            conn,
            password,
        })
    }
}

/// The password from its source (a file is read again each time).
fn read_password(config: &SharedConfig) -> Result<Option<Secret>, SharedError> {
    config
        .password
        .as_ref()
        .map(|source| {
            source.read().map_err(|e| SharedError::Setup {
                key: "password",
                message: e.to_string(),
            })
        })
        .transpose()
}

/// One tenant's view of the shared store.
#[derive(Clone)]
pub struct SharedTenant {
    shared: Shared,
    tenant: String,
    tag: String,
    keys: [String; 3],
    wake: watch::Receiver<u64>,
}

impl Shared {
    /// Sets up the client for `tenants`. Does not connect: Redis may be down
    /// at start-up without delaying readiness. Spawns the subscriber task.
    pub fn start(
        config: SharedConfig,
        tenants: &[Tenant],
        metrics: Arc<SharedMetrics>,
    ) -> Result<Shared, SharedError> {
        let password = read_password(&config)?;
        let connection = Connection::open(&config, password)?;
        let mut wakeups = HashMap::new();
        for t in tenants {
            wakeups.insert(tag(t), watch::channel(0u64).0);
        }
        let shared = Shared {
            inner: Arc::new(Inner {
                channel: format!("{}:events", config.key_prefix),
                owner: owner_id(),
                config,
                connection: RwLock::new(Arc::new(connection)),
                acquire: Script::new(scripts::ACQUIRE),
                publish: Script::new(scripts::PUBLISH),
                release: Script::new(scripts::RELEASE),
                metrics,
                wakeups,
            }),
        };
        tokio::spawn(shared.clone().subscribe());
        Ok(shared)
    }

    pub fn mode(&self) -> Mode {
        self.inner.config.mode
    }

    /// The current client and command connection.
    fn connection(&self) -> Arc<Connection> {
        self.inner
            .connection
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// After an error: if Redis refused the credentials, reads the password
    /// source again and, when it holds another password, reconnects with it.
    fn on_error(&self, e: &SharedError) {
        let SharedError::Redis(e) = e else { return };
        if e.kind() != redis::ErrorKind::AuthenticationFailed {
            return;
        }
        let password = match read_password(&self.inner.config) {
            Ok(p) => p,
            Err(e) => {
                warn!(cause = %e, "redis refused the credentials, and the password source can't be read");
                return;
            }
        };
        if password == self.connection().password {
            return;
        }
        match Connection::open(&self.inner.config, password) {
            Ok(c) => {
                *self
                    .inner
                    .connection
                    .write()
                    .unwrap_or_else(|p| p.into_inner()) = Arc::new(c);
                info!("redis refused the credentials and shared.password changed; reconnecting with the new password");
            }
            Err(e) => warn!(cause = %e, "reconnecting with the new shared.password failed"),
        }
    }

    /// This replica's lock owner id: `host/pid/random`.
    pub fn owner(&self) -> &str {
        &self.inner.owner
    }

    pub fn metrics(&self) -> &Arc<SharedMetrics> {
        &self.inner.metrics
    }

    /// The handle for one configured tenant.
    pub fn tenant(&self, tenant: &Tenant) -> SharedTenant {
        let tag = tag(tenant);
        let prefix = &self.inner.config.key_prefix;
        let keys = ["token", "lock", "version"].map(|k| format!("{prefix}:{{{tag}}}:{k}"));
        let wake = self
            .inner
            .wakeups
            .get(&tag)
            .map(watch::Sender::subscribe)
            .unwrap_or_else(|| watch::channel(0).1);
        SharedTenant {
            shared: self.clone(),
            tenant: tenant.id.clone(),
            tag,
            keys,
            wake,
        }
    }

    /// Runs a command with the configured timeout.
    async fn run<T>(
        &self,
        what: &'static str,
        f: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, SharedError> {
        // The manager has its own timeouts; this bounds reconnect attempts too.
        let limit = self.inner.config.timeout * 2;
        let r = match tokio::time::timeout(limit, f).await {
            Ok(r) => r.map_err(SharedError::from),
            Err(_) => Err(SharedError::Timeout(limit)),
        };
        if let Err(e) = &r {
            self.inner.metrics.redis_error();
            debug!(op = what, cause = %e, "redis command failed");
            self.on_error(e);
        }
        r
    }

    /// Keeps one subscription to the channel; on each message wakes the
    /// tenant it names, and after every (re)subscription wakes all tenants,
    /// since messages sent while disconnected are lost.
    async fn subscribe(self) {
        let mut delay = Duration::from_millis(100);
        let mut reported = false;
        loop {
            let attempt = async {
                let client = self.connection().client.clone();
                let mut pubsub = client.get_async_pubsub().await?;
                pubsub.subscribe(&self.inner.channel).await?;
                redis::RedisResult::Ok(pubsub)
            };
            match tokio::time::timeout(self.inner.config.timeout * 2, attempt).await {
                Ok(Ok(pubsub)) => {
                    delay = Duration::from_millis(100);
                    if reported {
                        info!("shared token store reachable again");
                    }
                    reported = false;
                    self.inner.metrics.set_subscribed(true);
                    for tx in self.inner.wakeups.values() {
                        tx.send_modify(|n| *n += 1);
                    }
                    let mut messages = pubsub.into_on_message();
                    while let Some(msg) = messages.next().await {
                        let Ok(payload) = msg.get_payload::<String>() else {
                            continue;
                        };
                        let Some((tag, _version)) = payload.rsplit_once(' ') else {
                            continue;
                        };
                        if let Some(tx) = self.inner.wakeups.get(tag) {
                            tx.send_modify(|n| *n += 1);
                        }
                    }
                    self.inner.metrics.set_subscribed(false);
                    self.inner.metrics.redis_error();
                    warn!("shared token store subscription lost; reconnecting");
                }
                Ok(Err(e)) => {
                    self.inner.metrics.redis_error();
                    self.on_error(&SharedError::Redis(e.clone()));
                    if !reported {
                        warn!(cause = %e, "shared token store unreachable; retrying");
                        reported = true;
                    }
                }
                Err(_) => {
                    self.inner.metrics.redis_error();
                    if !reported {
                        warn!("shared token store unreachable (timeout); retrying");
                        reported = true;
                    }
                }
            }
            tokio::time::sleep(delay.mul_f64(0.5 + rand::random::<f64>() * 0.5)).await;
            delay = (delay * 2).min(Duration::from_secs(2));
        }
    }
}

/// What a tenant's refresh loop holds: its handle on the store, and the
/// records other replicas publish (fed by a [`Watcher`] task).
pub struct Link {
    pub tenant: SharedTenant,
    pub adopted: mpsc::Receiver<Record>,
}

impl Shared {
    /// The link for one tenant's refresh loop; spawns its watcher.
    pub fn link(&self, tenant: &Tenant) -> Link {
        let shared = self.tenant(tenant);
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(
            Watcher {
                shared: shared.clone(),
                adopted: tx,
            }
            .run(),
        );
        Link {
            tenant: shared,
            adopted: rx,
        }
    }
}

/// What `ACQUIRE` decided.
#[derive(Debug)]
pub enum Acquired {
    Adopt(Record),
    Won,
    Wait(Duration),
}

impl SharedTenant {
    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    pub fn shared_metrics(&self) -> &SharedMetrics {
        &self.shared.inner.metrics
    }

    /// The Redis keys: token record, lock, version counter.
    pub fn keys(&self) -> &[String; 3] {
        &self.keys
    }

    /// A receiver that changes whenever this tenant's record may have changed.
    pub fn wakeups(&self) -> watch::Receiver<u64> {
        self.wake.clone()
    }

    /// Adopt a record other than `known`, take the lock, or learn how long
    /// to wait for its holder.
    pub async fn acquire(&self, known: Option<u64>) -> Result<Acquired, SharedError> {
        let inner = &self.shared.inner;
        let mut conn = self.shared.connection().conn.clone();
        let mut inv = inner.acquire.prepare_invoke();
        inv.key(&self.keys[0])
            .key(&self.keys[1])
            .key(&self.keys[2])
            .arg(&inner.owner)
            .arg(inner.config.lock_ttl.as_millis() as u64)
            .arg(known.map(|v| v.to_string()).unwrap_or_default());
        let reply: Vec<String> = self
            .shared
            .run("acquire", inv.invoke_async(&mut conn))
            .await?;
        match reply.first().map(String::as_str) {
            Some("adopt") => parse_record(&reply[1..])
                .map(Acquired::Adopt)
                .ok_or(SharedError::Reply("acquire")),
            Some("won") => Ok(Acquired::Won),
            Some("wait") => {
                let ms: i64 = reply.get(1).and_then(|s| s.parse().ok()).unwrap_or(0);
                Ok(Acquired::Wait(Duration::from_millis(ms.max(0) as u64)))
            }
            _ => Err(SharedError::Reply("acquire")),
        }
    }

    /// Writes `token` as the new record if this replica still may (see
    /// [`scripts::PUBLISH`]). `Ok(Some(v))`: published as version `v`;
    /// `Ok(None)`: another replica's token won.
    pub async fn publish(
        &self,
        replaced: Option<u64>,
        token: &IssuedToken,
        issued_at: SystemTime,
    ) -> Result<Option<u64>, SharedError> {
        let inner = &self.shared.inner;
        let mut conn = self.shared.connection().conn.clone();
        let expires_at = issued_at + token.lifetime;
        let ttl_ms = token.lifetime.as_millis().max(1) as u64;
        let floor = unix_micros(SystemTime::now());
        let mut inv = inner.publish.prepare_invoke();
        inv.key(&self.keys[0])
            .key(&self.keys[1])
            .key(&self.keys[2])
            .arg(&inner.owner)
            .arg(replaced.map(|v| v.to_string()).unwrap_or_default())
            .arg(token.access_token.expose())
            .arg(unix_ms(expires_at))
            .arg(unix_ms(issued_at))
            .arg(ttl_ms)
            .arg(floor)
            .arg(&inner.channel)
            .arg(&self.tag);
        let reply: Vec<String> = self
            .shared
            .run("publish", inv.invoke_async(&mut conn))
            .await?;
        match (
            reply.first().map(String::as_str),
            reply.get(1).and_then(|v| v.parse::<u64>().ok()),
        ) {
            (Some("ok"), Some(v)) => Ok(Some(v)),
            (Some("lost"), _) => Ok(None),
            _ => Err(SharedError::Reply("publish")),
        }
    }

    /// Gives the lock up (after a failed fetch) if this replica holds it.
    pub async fn release(&self) -> Result<(), SharedError> {
        let inner = &self.shared.inner;
        let mut conn = self.shared.connection().conn.clone();
        let mut inv = inner.release.prepare_invoke();
        inv.key(&self.keys[0])
            .key(&self.keys[1])
            .key(&self.keys[2])
            .arg(&inner.owner);
        let _: i64 = self
            .shared
            .run("release", inv.invoke_async(&mut conn))
            .await?;
        Ok(())
    }

    /// Reads the current record.
    pub async fn read(&self) -> Result<Option<Record>, SharedError> {
        let mut conn = self.shared.connection().conn.clone();
        let cmd = redis::cmd("HMGET")
            .arg(&self.keys[0])
            .arg(&["v", "exp", "iat", "tok"])
            .to_owned();
        let fields: Vec<Option<String>> =
            self.shared.run("read", cmd.query_async(&mut conn)).await?;
        if fields.iter().any(Option::is_none) {
            return Ok(None);
        }
        let fields: Vec<String> = fields.into_iter().flatten().collect();
        parse_record(&fields)
            .map(Some)
            .ok_or(SharedError::Reply("read"))
    }

    /// Obtains a token the replicas agree on. `known` is the shared version
    /// this replica serves (a refresh) or the one the upstream rejected (a
    /// 401 report); `None` when it has none or only a local token. `fetch`
    /// requests a token from the auth server, and runs only while this
    /// replica holds the lock, or when Redis is unreachable in best-effort
    /// mode.
    ///
    /// The lock is given up after a failed fetch so another replica may try
    /// at once; a replica whose lock expired mid-fetch does not publish.
    pub async fn obtain<Fut>(
        &self,
        known: Option<u64>,
        fetch: impl Fn() -> Fut,
    ) -> Result<Outcome, FetchError>
    where
        Fut: Future<Output = Result<IssuedToken, FetchError>>,
    {
        let metrics = &self.shared.inner.metrics;
        let mut wake = self.wake.clone();
        wake.borrow_and_update();
        loop {
            let decision = match self.acquire(known).await {
                Ok(d) => d,
                Err(e) => return self.unreachable(e, &fetch).await,
            };
            match decision {
                Acquired::Adopt(record) => {
                    metrics.adopted();
                    return Ok(Outcome::Adopted(record));
                }
                Acquired::Wait(pttl) => {
                    metrics.lock_wait();
                    // Wake on the holder's notification, or when its lock
                    // runs out (it may have died mid-fetch).
                    let until = pttl.max(Duration::from_millis(5)) + Duration::from_millis(5);
                    tokio::select! {
                        _ = wake.changed() => {}
                        _ = tokio::time::sleep(until) => {}
                    }
                }
                Acquired::Won => {
                    let issued_at = SystemTime::now();
                    let token = match fetch().await {
                        Ok(t) => t,
                        Err(e) => {
                            let _ = self.release().await;
                            return Err(e);
                        }
                    };
                    match self.publish(known, &token, issued_at).await {
                        Ok(Some(version)) => {
                            metrics.fetched();
                            return Ok(Outcome::Fetched {
                                token,
                                version: Some(version),
                            });
                        }
                        Ok(None) => {
                            // Our lock ran out and another replica took over:
                            // its token is the one to use; ours is dropped.
                            metrics.lost_lock();
                            warn!(tenant = %self.tenant, "fetch lock expired before the token was published; adopting the other replica's token");
                        }
                        Err(e) => {
                            // Redis went away after we fetched: this token is
                            // the newest issued either way, so serve it.
                            warn!(tenant = %self.tenant, cause = %e, "could not publish the token to the shared store; serving it locally");
                            metrics.fetched_local();
                            return Ok(Outcome::Fetched {
                                token,
                                version: None,
                            });
                        }
                    }
                }
            }
        }
    }

    async fn unreachable<Fut>(
        &self,
        err: SharedError,
        fetch: &impl Fn() -> Fut,
    ) -> Result<Outcome, FetchError>
    where
        Fut: Future<Output = Result<IssuedToken, FetchError>>,
    {
        match self.shared.mode() {
            Mode::BestEffort => {
                warn!(tenant = %self.tenant, cause = %err, "shared token store unreachable; fetching locally (best_effort)");
                let token = fetch().await?;
                self.shared.inner.metrics.fetched_local();
                Ok(Outcome::Fetched {
                    token,
                    version: None,
                })
            }
            Mode::Exclusive => Err(FetchError {
                url: format!("shared token store ({})", self.keys[0]),
                reason: "shared_store_unavailable",
                retry: Retry::Transient,
                retry_after: None,
                detail: format!("{err}; exclusive mode never fetches without the lock"),
            }),
        }
    }
}

/// Reads the record on every wake-up and sends it on when its version is
/// new: how replicas that did not fetch learn of a new token.
pub struct Watcher {
    pub shared: SharedTenant,
    pub adopted: mpsc::Sender<Record>,
}

impl Watcher {
    /// Runs until the receiver is dropped.
    pub async fn run(self) {
        let mut wake = self.shared.wakeups();
        let mut last: Option<u64> = None;
        while wake.changed().await.is_ok() {
            match self.shared.read().await {
                Ok(Some(record)) if Some(record.version) != last => {
                    last = Some(record.version);
                    if self.adopted.send(record).await.is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    debug!(tenant = %self.shared.tenant, cause = %e, "reading the shared record failed")
                }
            }
        }
    }
}

fn parse_record(fields: &[String]) -> Option<Record> {
    let [v, exp, iat, tok] = fields else {
        return None;
    };
    let ms = |s: &String| {
        s.parse::<u64>()
            .ok()
            .map(|ms| UNIX_EPOCH + Duration::from_millis(ms))
    };
    Some(Record {
        version: v.parse().ok()?,
        expires_at: ms(exp)?,
        issued_at: ms(iat)?,
        token: Secret::new(tok.clone()),
    })
}

/// The tenant's hash tag: its id and a fingerprint of what identifies its
/// credentials, so replicas configured differently (a rollout that changes
/// the client) never share a token.
pub fn tag(tenant: &Tenant) -> String {
    let grant = match &tenant.grant {
        crate::config::Grant::ClientCredentials => "client_credentials".to_string(),
        crate::config::Grant::JwtBearer {
            issuer, subject, ..
        } => format!("jwt_bearer {issuer} {subject}"),
    };
    let parts = [
        tenant.token_url.as_str(),
        tenant.client_id.as_str(),
        tenant.scope.as_deref().unwrap_or(""),
        tenant.audience.as_deref().unwrap_or(""),
        tenant.resource.as_deref().unwrap_or(""),
        grant.as_str(),
    ];
    // FNV-1a: stable across builds and platforms; not a security boundary.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.bytes().chain([0u8]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    format!("{}:{:08x}", tenant.id, h as u32)
}

/// A uniform draw in [0, 1) determined by `v` (SplitMix64), the same on
/// every replica.
pub fn unit_from(v: u64) -> f64 {
    let mut z = v.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

fn owner_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into());
    format!(
        "{host}/{}/{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn unix_micros(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;
