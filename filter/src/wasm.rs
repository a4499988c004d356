//! Adapters from proxy-wasm callbacks to the plain-Rust logic. Every host
//! call's `Status` is handled; nothing here panics.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

use log::{error, info, warn};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MapType, MetricType};

use crate::config::{
    FetcherConfig, InjectorConfig, FETCHER_ROOT_ID, INJECTOR_ROOT_ID, REJECTION_QUEUE,
    SNAPSHOT_KEY, VERSION_KEY,
};
use crate::inject::{self, GlobalCounters, Host, Outcome};
use crate::poll::{PollResult, Poller};
use crate::table::Table;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|context_id| -> Box<dyn RootContext> {
        Box::new(Root { context_id, role: Role::Unconfigured })
    });
}}

fn now_ms() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A root context becomes a fetcher or an injector in `on_configure`.
struct Root {
    context_id: u32,
    role: Role,
}

enum Role {
    Unconfigured,
    Fetcher(Box<Fetcher>),
    Injector(Rc<Injector>),
}

impl Context for Root {
    fn on_http_call_response(
        &mut self,
        token: u32,
        _headers: usize,
        body: usize,
        _trailers: usize,
    ) {
        if let Role::Fetcher(f) = &mut self.role {
            f.on_response(self.context_id, token, body);
        }
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, size: usize) -> bool {
        let id = self.context_id;
        let bytes = match hostcalls::get_buffer(
            proxy_wasm::types::BufferType::PluginConfiguration,
            0,
            size,
        ) {
            Ok(b) => b.unwrap_or_default(),
            Err(s) => {
                error!("[{id}] authproxy: cannot read plugin configuration: {s:?}");
                return false;
            }
        };
        let root_id = hostcalls::get_property(vec!["plugin_root_id"])
            .ok()
            .flatten()
            .and_then(|b| String::from_utf8(b).ok())
            .unwrap_or_default();
        let role = match root_id.as_str() {
            FETCHER_ROOT_ID => {
                FetcherConfig::parse(&bytes).map(|c| Role::Fetcher(Box::new(Fetcher::new(c))))
            }
            INJECTOR_ROOT_ID => {
                InjectorConfig::parse(&bytes).map(|c| Role::Injector(Rc::new(Injector::new(c))))
            }
            other => Err(format!(
                "root_id {other:?} is not {FETCHER_ROOT_ID:?} or {INJECTOR_ROOT_ID:?}"
            )),
        };
        self.role = match role {
            Ok(role) => role,
            Err(e) => {
                error!("[{id}] authproxy: bad configuration for {root_id}: {e}");
                return false;
            }
        };
        let tick = match &mut self.role {
            Role::Fetcher(f) => {
                f.start(id);
                Duration::from_millis(50)
            }
            Role::Injector(i) => {
                i.refresh(id);
                Duration::from_millis(i.cfg.tick_ms)
            }
            Role::Unconfigured => return false,
        };
        if hostcalls::set_tick_period(tick).is_err() {
            error!("[{id}] authproxy: cannot set the tick period");
            return false;
        }
        info!("[{id}] authproxy: {root_id} configured");
        true
    }

    fn on_tick(&mut self) {
        match &mut self.role {
            Role::Fetcher(f) => f.tick(self.context_id),
            Role::Injector(i) => i.refresh(self.context_id),
            Role::Unconfigured => {}
        }
    }

    fn on_queue_ready(&mut self, queue_id: u32) {
        if let Role::Fetcher(f) = &mut self.role {
            f.drain_reports(self.context_id, queue_id);
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        match &self.role {
            Role::Injector(i) => Some(Box::new(Request {
                injector: i.clone(),
                outcome: None,
            })),
            // The fetcher's root_id used as an HTTP filter, or a context
            // before configuration: refuse every request rather than let it
            // through without a token (returning None would abort the VM).
            _ => Some(Box::new(Misconfigured)),
        }
    }
}

// ---- fetcher ---------------------------------------------------------------

struct Fetcher {
    poller: Poller,
    queue: Option<u32>,
    failures_metric: Option<u32>,
    publish_metric: Option<u32>,
}

impl Fetcher {
    fn new(cfg: FetcherConfig) -> Fetcher {
        Fetcher {
            poller: Poller::new(cfg),
            queue: None,
            failures_metric: hostcalls::define_metric(
                MetricType::Counter,
                "authproxy.fetcher.poll_failures",
            )
            .ok(),
            publish_metric: hostcalls::define_metric(
                MetricType::Counter,
                "authproxy.fetcher.snapshots",
            )
            .ok(),
        }
    }

    fn start(&mut self, id: u32) {
        match hostcalls::register_shared_queue(REJECTION_QUEUE) {
            Ok(q) => self.queue = Some(q),
            Err(s) => warn!("[{id}] authproxy: cannot register the rejection queue: {s:?}"),
        }
        self.tick(id);
    }

    fn tick(&mut self, id: u32) {
        let now = now_ms();
        if !self.poller.due(now) {
            return;
        }
        let cfg = self.poller.config();
        let path = self.poller.path();
        let headers = vec![
            (":method", "GET"),
            (":path", path.as_str()),
            (":authority", cfg.sidecar_authority.as_str()),
        ];
        match hostcalls::dispatch_http_call(
            &cfg.sidecar_cluster,
            headers,
            None,
            vec![],
            Duration::from_millis(self.poller.timeout_ms()),
        ) {
            Ok(token) => self.poller.started(token),
            Err(s) => {
                let result = self.poller.finished(now, None, None);
                self.failed(id, &result, &format!("dispatch: {s:?}"));
            }
        }
    }

    fn failed(&self, id: u32, result: &PollResult, extra: &str) {
        if let PollResult::Failed { retry_in_ms, why } = result {
            if let Some(m) = self.failures_metric {
                let _ = hostcalls::increment_metric(m, 1);
            }
            warn!(
                "[{id}] authproxy: token poll failed: {why} {extra}; retrying in {retry_in_ms} ms"
            );
        }
    }

    fn on_response(&mut self, id: u32, token: u32, body_size: usize) {
        if !self.poller.is_poll(token) {
            // A report's answer: nothing to do but note failures.
            if let Ok(Some(status)) =
                hostcalls::get_map_value(MapType::HttpCallResponseHeaders, ":status")
            {
                if status != "202" {
                    warn!("[{id}] authproxy: rejection report answered HTTP {status}");
                }
            }
            return;
        }
        let status = hostcalls::get_map_value(MapType::HttpCallResponseHeaders, ":status")
            .ok()
            .flatten()
            .and_then(|s| s.parse::<u32>().ok());
        let body = if body_size > 0 {
            hostcalls::get_buffer(
                proxy_wasm::types::BufferType::HttpCallResponseBody,
                0,
                body_size,
            )
            .ok()
            .flatten()
        } else {
            None
        };
        let result = self.poller.finished(now_ms(), status, body.as_deref());
        match &result {
            PollResult::Publish(version) => {
                let published = body
                    .as_deref()
                    .map(|b| hostcalls::set_shared_data(SNAPSHOT_KEY, Some(b), None))
                    .unwrap_or(Err(proxy_wasm::types::Status::BadArgument))
                    .and_then(|()| {
                        hostcalls::set_shared_data(
                            VERSION_KEY,
                            Some(version.to_string().as_bytes()),
                            None,
                        )
                    });
                match published {
                    Ok(()) => {
                        if let Some(m) = self.publish_metric {
                            let _ = hostcalls::increment_metric(m, 1);
                        }
                    }
                    Err(s) => error!("[{id}] authproxy: cannot publish snapshot {version}: {s:?}"),
                }
                self.tick(id);
            }
            PollResult::Unchanged => self.tick(id),
            PollResult::Failed { .. } => self.failed(id, &result, ""),
        }
    }

    fn drain_reports(&mut self, id: u32, queue_id: u32) {
        while let Ok(Some(message)) = hostcalls::dequeue_shared_queue(queue_id) {
            let Some(path) = self.poller.report(&message) else {
                continue;
            };
            let cfg = self.poller.config();
            let headers = vec![
                (":method", "POST"),
                (":path", path.as_str()),
                (":authority", cfg.sidecar_authority.as_str()),
                ("content-length", "0"),
            ];
            if let Err(s) = hostcalls::dispatch_http_call(
                &cfg.sidecar_cluster,
                headers,
                None,
                vec![],
                Duration::from_secs(5),
            ) {
                warn!("[{id}] authproxy: cannot report a rejected token: {s:?}");
            }
        }
    }
}

// ---- injector --------------------------------------------------------------

/// Metric ids of one tenant, defined when the tenant is first seen.
struct TenantMetrics {
    injected: Option<u32>,
    no_token: Option<u32>,
    upstream_401: Option<u32>,
    /// Counter values already flushed.
    flushed: [u64; 3],
}

/// The worker's state, shared by its root context and its requests.
struct Injector {
    cfg: InjectorConfig,
    table: RefCell<Table>,
    global: GlobalCounters,
    /// Last `VERSION_KEY` value seen.
    seen: RefCell<Vec<u8>>,
    queue: Cell<Option<u32>>,
    metrics: RefCell<Vec<TenantMetrics>>,
    global_metrics: [Option<u32>; 2],
    global_flushed: Cell<[u64; 2]>,
}

impl Injector {
    fn new(cfg: InjectorConfig) -> Injector {
        let define = |name: &str| hostcalls::define_metric(MetricType::Counter, name).ok();
        Injector {
            cfg,
            table: RefCell::new(Table::default()),
            global: GlobalCounters::default(),
            seen: RefCell::new(Vec::new()),
            queue: Cell::new(None),
            metrics: RefCell::new(Vec::new()),
            global_metrics: [
                define("authproxy.rejected.missing_tenant"),
                define("authproxy.rejected.unknown_tenant"),
            ],
            global_flushed: Cell::new([0; 2]),
        }
    }

    /// The tick: reload the table if the snapshot changed, drop tokens about
    /// to expire, flush counters, resolve the report queue.
    fn refresh(&self, id: u32) {
        let now = now_ms();
        let margin = self.cfg.expiry_margin_ms;
        let Ok(mut table) = self.table.try_borrow_mut() else {
            return;
        };
        match hostcalls::get_shared_data(VERSION_KEY) {
            Ok((Some(version), _)) if *self.seen.borrow() != version => {
                match hostcalls::get_shared_data(SNAPSHOT_KEY) {
                    Ok((Some(snapshot), _)) => match table.load(&snapshot, now, margin) {
                        Ok(added) => {
                            self.define_tenant_metrics(&table, &added);
                            *self.seen.borrow_mut() = version;
                        }
                        Err(e) => error!("[{id}] authproxy: {e}"),
                    },
                    Ok((None, _)) => {}
                    Err(s) => warn!("[{id}] authproxy: cannot read the snapshot: {s:?}"),
                }
            }
            Ok(_) => {}
            Err(s) => warn!("[{id}] authproxy: cannot read the snapshot version: {s:?}"),
        }
        let dropped = table.drop_expiring(now, margin);
        if dropped > 0 {
            warn!("[{id}] authproxy: {dropped} token(s) expired without a replacement");
        }
        self.flush(&table);
        drop(table);
        if self.queue.get().is_none() {
            if let Ok(Some(q)) = hostcalls::resolve_shared_queue(&self.cfg.vm_id, REJECTION_QUEUE) {
                self.queue.set(Some(q));
            }
        }
    }

    fn define_tenant_metrics(&self, table: &Table, added: &[usize]) {
        let mut metrics = self.metrics.borrow_mut();
        for &index in added {
            let Some(slot) = table.slot(index) else {
                continue;
            };
            let define = |what: &str| {
                hostcalls::define_metric(
                    MetricType::Counter,
                    &format!("authproxy.tenant.{}.{what}", slot.name),
                )
                .ok()
            };
            // Slots are appended in order, so the metric index matches.
            if metrics.len() == index {
                metrics.push(TenantMetrics {
                    injected: define("injected"),
                    no_token: define("rejected.no_token"),
                    upstream_401: define("upstream_401"),
                    flushed: [0; 3],
                });
            }
        }
    }

    /// Pushes counter deltas to Envoy's stats: a few host calls per tick
    /// instead of one per request.
    fn flush(&self, table: &Table) {
        let push = |id: Option<u32>, now: u64, flushed: &mut u64| {
            if let Some(id) = id {
                if now > *flushed
                    && hostcalls::increment_metric(id, (now - *flushed) as i64).is_ok()
                {
                    *flushed = now;
                }
            }
        };
        let mut metrics = self.metrics.borrow_mut();
        for (slot, m) in table.slots().iter().zip(metrics.iter_mut()) {
            let [a, b, c] = &mut m.flushed;
            push(m.injected, slot.counters.injected.get(), a);
            push(m.no_token, slot.counters.no_token.get(), b);
            push(m.upstream_401, slot.counters.upstream_401.get(), c);
        }
        let mut g = self.global_flushed.get();
        let [a, b] = &mut g;
        push(self.global_metrics[0], self.global.missing_tenant.get(), a);
        push(self.global_metrics[1], self.global.unknown_tenant.get(), b);
        self.global_flushed.set(g);
    }
}

/// Host calls of an HTTP stream.
struct StreamHost;

impl Host for StreamHost {
    fn request_header(&self, name: &str) -> Option<Vec<u8>> {
        hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, name)
            .ok()
            .flatten()
    }
    fn remove_request_header(&self, name: &str) {
        let _ = hostcalls::remove_map_value(MapType::HttpRequestHeaders, name);
    }
    fn set_request_header(&self, name: &str, value: &[u8]) {
        let _ = hostcalls::set_map_value_bytes(MapType::HttpRequestHeaders, name, Some(value));
    }
    fn response_status(&self) -> Option<Vec<u8>> {
        hostcalls::get_map_value_bytes(MapType::HttpResponseHeaders, ":status")
            .ok()
            .flatten()
    }
    fn send_reply(&self, status: u32, headers: &[(&str, &str)], body: &[u8]) {
        let _ = hostcalls::send_http_response(status, headers.to_vec(), Some(body));
    }
}

/// Answers every request with 500: this root is not a `bearer_injector`.
struct Misconfigured;

impl Context for Misconfigured {}

impl HttpContext for Misconfigured {
    fn on_http_request_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        StreamHost.send_reply(
            500,
            &[("content-type", "application/json")],
            br#"{"error":"misconfigured","message":"this filter's root_id is not bearer_injector"}"#,
        );
        Action::Pause
    }
}

/// One request.
struct Request {
    injector: Rc<Injector>,
    outcome: Option<Outcome>,
}

impl Context for Request {}

impl HttpContext for Request {
    fn on_http_request_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        let Ok(table) = self.injector.table.try_borrow() else {
            // Unreachable in a single-threaded VM; fail closed regardless.
            StreamHost.send_reply(
                503,
                &[("content-type", "application/json")],
                inject::Refusal::NoToken.body(),
            );
            return Action::Pause;
        };
        let outcome = inject::on_request(
            &StreamHost,
            &self.injector.cfg,
            &table,
            &self.injector.global,
        );
        self.outcome = Some(outcome);
        match outcome {
            Outcome::Injected { .. } => Action::Continue,
            Outcome::Refused(_) => Action::Pause,
        }
    }

    fn on_http_response_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        let Some(outcome) = self.outcome else {
            return Action::Continue;
        };
        let Ok(table) = self.injector.table.try_borrow() else {
            return Action::Continue;
        };
        if let Some((tenant, version)) = inject::on_response(&StreamHost, &table, outcome) {
            if let (Some(q), Some(slot)) = (self.injector.queue.get(), table.slot(tenant)) {
                let message = format!("{}:{version}", slot.name);
                if let Err(s) = hostcalls::enqueue_shared_queue(q, Some(message.as_bytes())) {
                    warn!(
                        "authproxy: cannot queue the 401 report for {}: {s:?}",
                        slot.name
                    );
                }
            }
        }
        Action::Continue
    }
}
