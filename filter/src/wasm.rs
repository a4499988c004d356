//! The thin adapters: proxy-wasm callbacks dispatched to the roles, and the
//! [`host`](crate::host) traits implemented over `proxy_wasm::hostcalls`.
//! Every host call's `Status` is handled; nothing here panics, and nothing
//! here decides anything.

use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

use log::{error, info, warn};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType, MetricType, Status};

use crate::cache::{
    Fill, FillConfig, FillOutcome, Gate, GateConfig, GateOutcome, FILL_ROOT_ID, GATE_ROOT_ID,
};
use crate::config::{FetcherConfig, InjectorConfig, FETCHER_ROOT_ID, INJECTOR_ROOT_ID};
use crate::fetcher::{self, Fetcher};
use crate::host::{Calls, HostError, Rewrite, Stream, Worker};
use crate::injector::{Injector, Outcome};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|context_id| -> Box<dyn RootContext> {
        Box::new(Root { context_id, role: Role::Unconfigured })
    });
}}

fn status(s: Status) -> HostError {
    HostError(match s {
        Status::Ok => "Ok",
        Status::NotFound => "NotFound",
        Status::BadArgument => "BadArgument",
        Status::SerializationFailure => "SerializationFailure",
        Status::ParseFailure => "ParseFailure",
        Status::Empty => "Empty",
        Status::CasMismatch => "CasMismatch",
        Status::InternalFailure => "InternalFailure",
        _ => "other",
    })
}

/// The host as seen from any context: all calls go to the current one.
struct Envoy;

impl Worker for Envoy {
    fn now_ms(&self) -> u64 {
        hostcalls::get_current_time()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
    fn shared_data(&self, key: &str) -> Result<Option<Vec<u8>>, HostError> {
        hostcalls::get_shared_data(key)
            .map(|(v, _)| v)
            .map_err(status)
    }
    fn define_counter(&self, name: &str) -> Option<u32> {
        hostcalls::define_metric(MetricType::Counter, name).ok()
    }
    fn increment_counter(&self, id: u32, delta: u64) -> Result<(), HostError> {
        hostcalls::increment_metric(id, delta as i64).map_err(status)
    }
    fn resolve_queue(&self, vm_id: &str, name: &str) -> Option<u32> {
        hostcalls::resolve_shared_queue(vm_id, name).ok().flatten()
    }
}

impl Calls for Envoy {
    fn dispatch(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        timeout_ms: u64,
    ) -> Result<u32, HostError> {
        hostcalls::dispatch_http_call(
            cluster,
            headers.to_vec(),
            None,
            vec![],
            Duration::from_millis(timeout_ms),
        )
        .map_err(status)
    }
    fn set_shared_data(&self, key: &str, value: &[u8]) -> Result<(), HostError> {
        hostcalls::set_shared_data(key, Some(value), None).map_err(status)
    }
    fn register_queue(&self, name: &str) -> Result<u32, HostError> {
        hostcalls::register_shared_queue(name).map_err(status)
    }
    fn dequeue(&self, queue: u32) -> Option<Vec<u8>> {
        hostcalls::dequeue_shared_queue(queue).ok().flatten()
    }
}

impl Stream for Envoy {
    fn request_header(&self, name: &str) -> Option<Vec<u8>> {
        hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, name)
            .ok()
            .flatten()
    }
    fn request_header_all(&self, name: &str) -> Option<Vec<u8>> {
        // Envoy's `request.headers` map joins repeated headers with ",".
        hostcalls::get_property(vec!["request", "headers", name])
            .ok()
            .flatten()
    }
    fn property(&self, path: &[String]) -> Option<Vec<u8>> {
        hostcalls::get_property(path.iter().map(String::as_str).collect())
            .ok()
            .flatten()
    }
    fn set_property(&self, name: &str, value: &[u8]) -> Result<(), HostError> {
        hostcalls::set_property(vec![name], Some(value)).map_err(status)
    }
    fn set_request_header(&self, name: &str, value: &[u8]) -> Result<(), HostError> {
        hostcalls::set_map_value_bytes(MapType::HttpRequestHeaders, name, Some(value))
            .map_err(status)
    }
    fn response_status(&self) -> Option<Vec<u8>> {
        hostcalls::get_map_value_bytes(MapType::HttpResponseHeaders, ":status")
            .ok()
            .flatten()
    }
    fn send_reply(&self, status: u32, headers: &[(&str, &str)], body: &[u8]) {
        if let Err(s) = hostcalls::send_http_response(status, headers.to_vec(), Some(body)) {
            error!("authproxy: cannot send the local reply {status}: {s:?}");
        }
    }
}

impl Rewrite for Envoy {
    fn remove_request_header(&self, name: &str) -> Result<(), HostError> {
        hostcalls::remove_map_value(MapType::HttpRequestHeaders, name).map_err(status)
    }
    fn response_header(&self, name: &str) -> Option<Vec<u8>> {
        hostcalls::get_map_value_bytes(MapType::HttpResponseHeaders, name)
            .ok()
            .flatten()
    }
    fn set_response_header(&self, name: &str, value: &[u8]) -> Result<(), HostError> {
        hostcalls::set_map_value_bytes(MapType::HttpResponseHeaders, name, Some(value))
            .map_err(status)
    }
    fn remove_response_header(&self, name: &str) -> Result<(), HostError> {
        hostcalls::remove_map_value(MapType::HttpResponseHeaders, name).map_err(status)
    }
}

/// A root context becomes one role in `on_configure`.
struct Root {
    context_id: u32,
    role: Role,
}

/// The roles one `.wasm` can play. A new role (a response cache, say) is a
/// new arm here, its config in `config.rs` and its logic in its own module.
enum Role {
    Unconfigured,
    Fetcher(Box<Fetcher>),
    Injector(Rc<Injector>),
    Gate(Rc<Gate>),
    Fill(Rc<Fill>),
}

impl Context for Root {
    fn on_http_call_response(&mut self, token: u32, _headers: usize, body: usize, _: usize) {
        let Role::Fetcher(f) = &mut self.role else {
            return;
        };
        let code = hostcalls::get_map_value(MapType::HttpCallResponseHeaders, ":status")
            .ok()
            .flatten()
            .and_then(|s| s.parse::<u32>().ok());
        if !f.is_poll(token) {
            // A report's answer: nothing to do but note failures.
            if code != Some(202) {
                warn!("authproxy: rejection report answered {code:?}");
            }
            return;
        }
        let body = if body > 0 {
            hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body)
                .ok()
                .flatten()
        } else {
            None
        };
        f.on_poll_response(&Envoy, code, body.as_deref());
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, size: usize) -> bool {
        let id = self.context_id;
        let bytes = match hostcalls::get_buffer(BufferType::PluginConfiguration, 0, size) {
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
            FETCHER_ROOT_ID => FetcherConfig::parse(&bytes).map(|c| {
                let mut f = Fetcher::new(c, &Envoy);
                f.start(&Envoy);
                (Role::Fetcher(Box::new(f)), fetcher::TICK_MS)
            }),
            INJECTOR_ROOT_ID => InjectorConfig::parse(&bytes).map(|c| {
                let tick = c.tick_ms;
                let i = Injector::new(c, &Envoy);
                i.tick(&Envoy);
                (Role::Injector(Rc::new(i)), tick)
            }),
            GATE_ROOT_ID => GateConfig::parse(&bytes).map(|c| {
                let tick = c.injector.tick_ms;
                let g = Gate::new(c, &Envoy);
                g.tick(&Envoy);
                (Role::Gate(Rc::new(g)), tick)
            }),
            FILL_ROOT_ID => FillConfig::parse(&bytes).map(|c| {
                let tick = c.injector.tick_ms;
                let f = Fill::new(c, &Envoy);
                f.tick(&Envoy);
                (Role::Fill(Rc::new(f)), tick)
            }),
            other => Err(format!(
                "root_id {other:?} is not one of {FETCHER_ROOT_ID:?}, {INJECTOR_ROOT_ID:?}, \
                 {GATE_ROOT_ID:?}, {FILL_ROOT_ID:?}"
            )),
        };
        let tick = match role {
            Ok((role, tick)) => {
                self.role = role;
                tick
            }
            Err(e) => {
                error!("[{id}] authproxy: bad configuration for {root_id}: {e}");
                return false;
            }
        };
        if hostcalls::set_tick_period(Duration::from_millis(tick)).is_err() {
            error!("[{id}] authproxy: cannot set the tick period");
            return false;
        }
        info!("[{id}] authproxy: {root_id} configured");
        true
    }

    fn on_tick(&mut self) {
        match &mut self.role {
            Role::Fetcher(f) => f.tick(&Envoy),
            Role::Injector(i) => i.tick(&Envoy),
            Role::Gate(g) => g.tick(&Envoy),
            Role::Fill(f) => f.tick(&Envoy),
            Role::Unconfigured => {}
        }
    }

    fn on_queue_ready(&mut self, queue_id: u32) {
        if let Role::Fetcher(f) = &mut self.role {
            f.drain_reports(&Envoy, queue_id);
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
            Role::Gate(g) => Some(Box::new(GateRequest {
                gate: g.clone(),
                outcome: None,
            })),
            Role::Fill(f) => Some(Box::new(FillRequest {
                fill: f.clone(),
                outcome: None,
            })),
            // The fetcher's root_id used as an HTTP filter, or a context
            // before configuration: refuse every request rather than let it
            // through without a token (returning None would abort the VM).
            _ => Some(Box::new(Misconfigured)),
        }
    }
}

/// Answers every request with 500: this root is not a `bearer_injector`.
struct Misconfigured;

impl Context for Misconfigured {}

impl HttpContext for Misconfigured {
    fn on_http_request_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        Envoy.send_reply(
            500,
            &[("content-type", "application/json")],
            br#"{"error":"misconfigured","message":"this filter's root_id is not bearer_injector"}"#,
        );
        Action::Pause
    }
}

/// One request through the injector.
struct Request {
    injector: Rc<Injector>,
    outcome: Option<Outcome>,
}

impl Context for Request {}

impl HttpContext for Request {
    fn on_http_request_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        let outcome = self.injector.on_request(&Envoy);
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
        if let Some(report) = self.injector.on_response(&Envoy, outcome) {
            if let Some(q) = self.injector.queue() {
                if let Err(s) = hostcalls::enqueue_shared_queue(q, Some(report.as_bytes())) {
                    warn!("authproxy: cannot queue the 401 report {report}: {s:?}");
                }
            }
        }
        Action::Continue
    }
}

/// Queues a 401 report for the fetcher.
fn enqueue_report(queue: Option<u32>, report: Option<String>) {
    if let (Some(q), Some(report)) = (queue, report) {
        if let Err(s) = hostcalls::enqueue_shared_queue(q, Some(report.as_bytes())) {
            warn!("authproxy: cannot queue the 401 report {report}: {s:?}");
        }
    }
}

/// One request through the cache gate.
struct GateRequest {
    gate: Rc<Gate>,
    outcome: Option<GateOutcome>,
}

impl Context for GateRequest {}

impl HttpContext for GateRequest {
    fn on_http_request_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        let outcome = self.gate.on_request(&Envoy);
        self.outcome = Some(outcome);
        match outcome {
            GateOutcome::Direct(Outcome::Refused(_)) => Action::Pause,
            _ => Action::Continue,
        }
    }

    fn on_http_response_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        if let Some(outcome) = self.outcome {
            let report = self.gate.on_response(&Envoy, outcome);
            enqueue_report(self.gate.injector.queue(), report);
        }
        Action::Continue
    }
}

/// One cache fill on the internal listener.
struct FillRequest {
    fill: Rc<Fill>,
    outcome: Option<FillOutcome>,
}

impl Context for FillRequest {}

impl HttpContext for FillRequest {
    fn on_http_request_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        let outcome = self.fill.on_request(&Envoy);
        self.outcome = Some(outcome);
        match outcome.outcome {
            Outcome::Refused(_) => Action::Pause,
            Outcome::Injected { .. } => Action::Continue,
        }
    }

    fn on_http_response_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        if let Some(outcome) = self.outcome {
            let report = self.fill.on_response(&Envoy, outcome);
            enqueue_report(self.fill.injector.queue(), report);
        }
        Action::Continue
    }
}
