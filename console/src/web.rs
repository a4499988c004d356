//! Routes and handlers. Pages render minijinja templates (autoescaped); fragments for htmx and
//! server-sent events render the same templates' partials.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use axum::extract::{FromRequestParts, Path, Query, Request, State};
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use futures_util::stream::Stream;
use minijinja::{context, Environment, Value};
use serde::Deserialize;

use crate::auth::{self, User};
use crate::browse;
use crate::config::Access;
use crate::runs::{self, Run, RunFilter};
use crate::store::StoreError;
use crate::{charts, tenants, AppState};

// ------------------------------------------------------------------ templates --

const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("../templates/base.html")),
    ("login.html", include_str!("../templates/login.html")),
    ("error.html", include_str!("../templates/error.html")),
    ("runs.html", include_str!("../templates/runs.html")),
    ("run.html", include_str!("../templates/run.html")),
    ("run_live.html", include_str!("../templates/run_live.html")),
    (
        "later_runs.html",
        include_str!("../templates/later_runs.html"),
    ),
    (
        "rejects_rows.html",
        include_str!("../templates/rejects_rows.html"),
    ),
    (
        "rerun_confirm.html",
        include_str!("../templates/rerun_confirm.html"),
    ),
    (
        "rerun_started.html",
        include_str!("../templates/rerun_started.html"),
    ),
    (
        "data_index.html",
        include_str!("../templates/data_index.html"),
    ),
    ("data.html", include_str!("../templates/data.html")),
    ("tenants.html", include_str!("../templates/tenants.html")),
    ("charts.html", include_str!("../templates/charts.html")),
];

fn fmt_int(v: i64) -> String {
    let s = v.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if v < 0 {
        format!("-{out}")
    } else {
        out
    }
}

fn fmt_secs(v: f64) -> String {
    if v < 1.0 {
        format!("{:.0} ms", v * 1000.0)
    } else if v < 120.0 {
        format!("{v:.1} s")
    } else if v < 7200.0 {
        format!("{:.0} min {:.0} s", (v / 60.0).floor(), v % 60.0)
    } else {
        format!("{:.1} h", v / 3600.0)
    }
}

/// The template environment with every template compiled in.
pub fn templates() -> Environment<'static> {
    let mut env = Environment::new();
    for (name, src) in TEMPLATES {
        // Compiled-in templates; a syntax error fails every handler test.
        if let Err(e) = env.add_template(name, src) {
            panic!("template {name}: {e}");
        }
    }
    env.add_filter("int", |v: i64| fmt_int(v));
    env.add_filter("secs", |v: f64| fmt_secs(v));
    env.add_filter("rate", |v: f64| {
        format!("{} rows/s", fmt_int(v.round() as i64))
    });
    env.add_filter("urlencode_pairs", |v: Value| -> String {
        let mut out = String::new();
        if let Ok(iter) = v.try_iter() {
            for k in iter {
                let val = v.get_item(&k).unwrap_or_default();
                if !out.is_empty() {
                    out.push('&');
                }
                out.push_str(&urlencode(&k.to_string()));
                out.push('=');
                out.push_str(&urlencode(&val.to_string()));
            }
        }
        out
    });
    env
}

fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn render(state: &AppState, name: &str, ctx: Value) -> Result<String, AppError> {
    state
        .templates
        .get_template(name)
        .and_then(|t| t.render(ctx))
        .map_err(|e| AppError::Internal(format!("template {name}: {e:#}")))
}

fn page(state: &AppState, name: &str, ctx: Value) -> Result<Response, AppError> {
    Ok(Html(render(state, name, ctx)?).into_response())
}

// --------------------------------------------------------------------- errors --

/// Every handler error. 5xx bodies hide details; they are logged once, here.
#[derive(Debug)]
pub enum AppError {
    NotFound(String),
    BadRequest(String),
    Forbidden(String),
    Conflict(String),
    Unavailable(String),
    Internal(String),
}

impl From<StoreError> for AppError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotMigrated => Self::Unavailable(e.to_string()),
            other => Self::Internal(other.to_string()),
        }
    }
}

impl From<browse::BadFilter> for AppError {
    fn from(e: browse::BadFilter) -> Self {
        Self::BadRequest(e.to_string())
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            Self::NotFound(m) => (StatusCode::NOT_FOUND, m),
            Self::BadRequest(m) => (StatusCode::BAD_REQUEST, m),
            Self::Forbidden(m) => (StatusCode::FORBIDDEN, m),
            Self::Conflict(m) => (StatusCode::CONFLICT, m),
            Self::Unavailable(m) => {
                tracing::warn!(cause = %m, "unavailable");
                (StatusCode::SERVICE_UNAVAILABLE, m)
            }
            Self::Internal(m) => {
                tracing::error!(cause = %m, "internal error");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error; see the console's log".to_string(),
                )
            }
        };
        let body = templates()
            .get_template("error.html")
            .and_then(|t| t.render(context! { status => status.as_u16(), message }))
            .unwrap_or_else(|_| "error".into());
        (status, Html(body)).into_response()
    }
}

// ----------------------------------------------------------------------- auth --

/// A request from a signed-in user. Without one: a redirect to the login page (or, for htmx, an
/// `HX-Redirect`); in SSO mode, 401 when the proxy's secret is missing or wrong.
impl FromRequestParts<AppState> for User {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        match &state.config.access {
            Access::Password(_) => {
                let user = parts
                    .headers
                    .get_all(header::COOKIE)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .filter_map(|h| auth::cookie_value(h, auth::COOKIE))
                    .find_map(|v| auth::verify(&state.config.session_key, v));
                user.ok_or_else(|| to_login(parts))
            }
            Access::Sso {
                user_header,
                secret_header,
                secret_digest,
                admins,
            } => {
                let secret_ok = parts
                    .headers
                    .get(secret_header)
                    .is_some_and(|v| blake3::hash(v.as_bytes()) == *secret_digest);
                let name = parts
                    .headers
                    .get(user_header)
                    .and_then(|v| v.to_str().ok())
                    .map(str::trim)
                    .filter(|n| !n.is_empty() && n.len() <= 200);
                match (secret_ok, name) {
                    (true, Some(name)) => Ok(User {
                        name: name.to_string(),
                        role: Access::sso_role(admins, name),
                        csrf: auth::csrf_token(&state.config.session_key, &format!("sso:{name}")),
                    }),
                    _ => {
                        let mut r = AppError::Forbidden(
                            "sign in through the SSO proxy: this request did not come from it"
                                .into(),
                        )
                        .into_response();
                        *r.status_mut() = StatusCode::UNAUTHORIZED;
                        Err(r)
                    }
                }
            }
        }
    }
}

fn to_login(parts: &Parts) -> Response {
    let next = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let target = format!("/login?next={}", urlencode(&next));
    if parts.headers.contains_key("hx-request") {
        let mut r = StatusCode::UNAUTHORIZED.into_response();
        if let Ok(v) = HeaderValue::from_str(&target) {
            r.headers_mut().insert("hx-redirect", v);
        }
        return r;
    }
    Redirect::to(&target).into_response()
}

/// A local path to return to after login (never another site).
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n.into(),
        _ => "/runs".into(),
    }
}

fn require_csrf(
    user: &User,
    form_token: Option<&str>,
    headers: &HeaderMap,
) -> Result<(), AppError> {
    let submitted =
        form_token.or_else(|| headers.get(auth::CSRF_HEADER).and_then(|v| v.to_str().ok()));
    if auth::csrf_ok(user, submitted) {
        Ok(())
    } else {
        Err(AppError::Forbidden(
            "missing or wrong CSRF token; reload the page and try again".into(),
        ))
    }
}

#[derive(Deserialize)]
struct LoginQuery {
    next: Option<String>,
}

async fn login_page(
    State(state): State<AppState>,
    Query(q): Query<LoginQuery>,
) -> Result<Response, AppError> {
    if let Access::Sso { .. } = state.config.access {
        return Ok(Redirect::to("/runs").into_response());
    }
    page(
        &state,
        "login.html",
        context! { next => safe_next(q.next.as_deref()), error => () },
    )
}

#[derive(Deserialize)]
struct LoginForm {
    username: String,
    password: String,
    next: Option<String>,
}

async fn login(
    State(state): State<AppState>,
    Form(f): Form<LoginForm>,
) -> Result<Response, AppError> {
    let Access::Password(users) = &state.config.access else {
        return Err(AppError::NotFound("no password login in SSO mode".into()));
    };
    let next = safe_next(f.next.as_deref());
    let _permit = state
        .login_gate
        .acquire()
        .await
        .map_err(|_| AppError::Unavailable("shutting down".into()))?;
    // Checked while holding the permit, so concurrent guesses can't slip past.
    if let Err(wait) = state
        .login_throttle
        .check(&f.username, std::time::Instant::now())
    {
        let secs = (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1);
        tracing::warn!(user = %f.username, retry_after_s = secs, "login throttled after repeated wrong passwords");
        let body = render(
            &state,
            "login.html",
            context! { next, error => format!("Too many wrong passwords for this user. Try again in {secs} s.") },
        )?;
        let mut r = (StatusCode::TOO_MANY_REQUESTS, Html(body)).into_response();
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        return Ok(r);
    }
    let users = users.clone();
    let (name, password) = (f.username.clone(), f.password);
    let role = tokio::task::spawn_blocking(move || users.verify(&name, &password))
        .await
        .map_err(|e| AppError::Internal(e.to_string()))?;
    let Some(role) = role else {
        state
            .login_throttle
            .failed(&f.username, std::time::Instant::now());
        tracing::info!(user = %f.username, "login refused");
        let body = render(
            &state,
            "login.html",
            context! { next, error => "Wrong user name or password." },
        )?;
        return Ok((StatusCode::UNAUTHORIZED, Html(body)).into_response());
    };
    state.login_throttle.succeeded(&f.username);
    tracing::info!(user = %f.username, role = role.as_str(), "login");
    let cookie = auth::issue(
        &state.config.session_key,
        &f.username,
        role,
        state.config.session_ttl,
    );
    let mut r = Redirect::to(&next).into_response();
    if let Ok(v) = HeaderValue::from_str(&auth::set_cookie(
        &cookie,
        state.config.session_ttl,
        state.config.secure_cookies,
    )) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(r)
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf: Option<String>,
}

async fn logout(
    State(state): State<AppState>,
    user: User,
    headers: HeaderMap,
    Form(f): Form<CsrfForm>,
) -> Result<Response, AppError> {
    require_csrf(&user, f.csrf.as_deref(), &headers)?;
    tracing::info!(user = %user.name, "logout");
    let target = match state.config.access {
        Access::Password(_) => "/login",
        // oauth2-proxy's sign-out endpoint ends the SSO session.
        Access::Sso { .. } => "/oauth2/sign_out",
    };
    let mut r = Redirect::to(target).into_response();
    if let Ok(v) = HeaderValue::from_str(&auth::clear_cookie(state.config.secure_cookies)) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    if headers.contains_key("hx-request") {
        r.headers_mut()
            .insert("hx-redirect", HeaderValue::from_static("/login"));
    }
    Ok(r)
}

// ----------------------------------------------------------------------- runs --

#[derive(Deserialize, Default)]
struct RunsQuery {
    tenant: Option<String>,
    r#type: Option<String>,
    status: Option<String>,
    from: Option<String>,
    to: Option<String>,
    before: Option<String>,
}

fn nonempty(v: Option<String>) -> Option<String> {
    v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

fn check_date(param: &str, v: Option<String>) -> Result<Option<String>, AppError> {
    match nonempty(v) {
        Some(d) => {
            importer::value::parse_field(
                importer::registry::ColumnType::Date,
                true,
                d.as_bytes(),
                false,
            )
            .map_err(|e| AppError::BadRequest(format!("{param}: {e}")))?;
            Ok(Some(d))
        }
        None => Ok(None),
    }
}

async fn runs_page(
    State(state): State<AppState>,
    user: User,
    Query(q): Query<RunsQuery>,
) -> Result<Response, AppError> {
    let status = nonempty(q.status);
    if let Some(s) = &status {
        if !runs::STATUSES.contains(&s.as_str()) {
            return Err(AppError::BadRequest(format!(
                "status: unknown status {s:?}"
            )));
        }
    }
    let before = match nonempty(q.before) {
        Some(b) => Some(
            b.parse::<i64>()
                .map_err(|_| AppError::BadRequest("before: not a run id".into()))?,
        ),
        None => None,
    };
    let filter = RunFilter {
        tenant: nonempty(q.tenant),
        module: nonempty(q.r#type),
        status,
        from: check_date("from", q.from)?,
        to: check_date("to", q.to)?,
        before,
    };
    let (list, more) = runs::list(&state.store, &filter).await?;
    let tenants = runs::distinct(&state.store, "tenant").await?;
    let modules: Vec<String> = state
        .config
        .registry
        .types()
        .map(|t| t.module.clone())
        .collect();
    let mut keep: Vec<(String, String)> = Vec::new();
    for (k, v) in [
        ("tenant", &filter.tenant),
        ("type", &filter.module),
        ("status", &filter.status),
        ("from", &filter.from),
        ("to", &filter.to),
    ] {
        if let Some(v) = v {
            keep.push((k.into(), v.clone()));
        }
    }
    let next = more.then(|| {
        let mut q: Vec<String> = keep
            .iter()
            .map(|(k, v)| format!("{}={}", urlencode(k), urlencode(v)))
            .collect();
        q.push(format!("before={}", list.last().map_or(0, |r| r.id)));
        format!("/runs?{}", q.join("&"))
    });
    page(
        &state,
        "runs.html",
        context! {
            title => "Runs", nav => "runs", user, runs => list, next,
            filter, tenants, modules, statuses => runs::STATUSES,
            first_page => before.is_some(),
        },
    )
}

async fn load_run(state: &AppState, id: i64) -> Result<Run, AppError> {
    runs::get(&state.store, id)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("no run {id}")))
}

#[derive(Deserialize)]
struct AfterQuery {
    after: Option<String>,
}

/// The `after` cursor of the last reject shown, `line-id`.
fn reject_cursor(r: &runs::Reject) -> String {
    format!("{}-{}", r.line, r.id)
}

async fn run_page(
    State(state): State<AppState>,
    user: User,
    Path(id): Path<i64>,
) -> Result<Response, AppError> {
    let run = load_run(&state, id).await?;
    let later = runs::later(&state.store, &run).await?;
    let (rejects, more) = runs::rejects(&state.store, id, None).await?;
    let next_after = more.then(|| rejects.last().map(reject_cursor)).flatten();
    page(
        &state,
        "run.html",
        context! {
            title => format!("Run {id}"), nav => "runs", user, run, later, rejects, next_after,
            can_rerun => user.is_admin() && state.rerun.enabled() && run.export_date.is_some(),
            rerun_enabled => state.rerun.enabled(),
            live_note => if state.store.pg_pool().is_some() {
                "Live: updated as the importer reports progress."
            } else {
                "SQLite: the page re-reads the run every second; progress shows when the importer records it."
            },
        },
    )
}

async fn rejects_rows(
    State(state): State<AppState>,
    _user: User,
    Path(id): Path<i64>,
    Query(q): Query<AfterQuery>,
) -> Result<Response, AppError> {
    let after = match q.after.as_deref().filter(|a| !a.is_empty()) {
        Some(a) => Some(
            runs::parse_cursor(a)
                .ok_or_else(|| AppError::BadRequest("after: expected line-id".into()))?,
        ),
        None => None,
    };
    let (rejects, more) = runs::rejects(&state.store, id, after).await?;
    let next_after = more.then(|| rejects.last().map(reject_cursor)).flatten();
    page(
        &state,
        "rejects_rows.html",
        context! { run => context!{ id }, rejects, next_after },
    )
}

/// Streams CSV rows from a channel of text rows.
fn csv_response(
    filename: String,
    header_row: Vec<String>,
    mut rx: tokio::sync::mpsc::Receiver<Result<Vec<Option<String>>, StoreError>>,
) -> Response {
    let stream = async_stream(move |tx| async move {
        let new_writer = || csv::Writer::from_writer(Vec::with_capacity(64 * 1024));
        let mut w = new_writer();
        let _ = w.write_record(&header_row);
        let mut n = 0usize;
        loop {
            let row = rx.recv().await;
            let done = match row {
                Some(Ok(row)) => {
                    let _ = w.write_record(row.iter().map(|v| v.as_deref().unwrap_or("")));
                    n += 1;
                    false
                }
                Some(Err(e)) => {
                    tracing::error!(cause = %e, "CSV download failed part way");
                    let _ = tx.send(Err(std::io::Error::other("query failed"))).await;
                    return;
                }
                None => true,
            };
            if done || n.is_multiple_of(512) {
                let chunk = std::mem::replace(&mut w, new_writer())
                    .into_inner()
                    .unwrap_or_default();
                if tx.send(Ok(chunk)).await.is_err() || done {
                    return;
                }
            }
        }
    });
    let mut r = axum::body::Body::from_stream(stream).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{filename}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    r
}

/// A stream fed by a task through a small channel.
fn async_stream<F, Fut>(f: F) -> impl Stream<Item = Result<Vec<u8>, std::io::Error>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<Vec<u8>, std::io::Error>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(f(tx));
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|v| (v, rx)) })
}

async fn rejects_csv(
    State(state): State<AppState>,
    _user: User,
    Path(id): Path<i64>,
) -> Result<Response, AppError> {
    load_run(&state, id).await?;
    let rx = runs::rejects_stream(&state.store, id);
    let header_row = ["id", "file", "line", "column", "reason", "raw_record"]
        .map(String::from)
        .to_vec();
    Ok(csv_response(
        format!("run-{id}-rejects.csv"),
        header_row,
        rx,
    ))
}

/// Server-sent events for a run page: `run` (the progress block) and `later` (re-runs), sent
/// when they change: on a notification for the run (PostgreSQL) or on the poll timer.
async fn run_events(
    State(state): State<AppState>,
    _user: User,
    Path(id): Path<i64>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, AppError> {
    load_run(&state, id).await?;
    let mut notes = state.hub.subscribe();
    let (tx, rx) = tokio::sync::mpsc::channel::<Event>(8);
    let poll = state.hub.poll_every();
    tokio::spawn(async move {
        let mut last: (String, String) = Default::default();
        let mut tick = tokio::time::interval(poll);
        loop {
            let run = match runs::get(&state.store, id).await {
                Ok(Some(r)) => r,
                _ => return,
            };
            let later = runs::later(&state.store, &run).await.unwrap_or_default();
            let live = render(&state, "run_live.html", context! { run }).unwrap_or_default();
            let later_html =
                render(&state, "later_runs.html", context! { later }).unwrap_or_default();
            if live != last.0
                && tx
                    .send(Event::default().event("run").data(&live))
                    .await
                    .is_err()
            {
                return;
            }
            if later_html != last.1
                && tx
                    .send(Event::default().event("later").data(&later_html))
                    .await
                    .is_err()
            {
                return;
            }
            last = (live, later_html);
            // Wake on a notification for this run or a later one, or on the timer.
            loop {
                tokio::select! {
                    _ = tick.tick() => break,
                    n = notes.recv() => match n {
                        // Negative: a reconnect or a payload that isn't an id.
                        Ok(n) if n >= id || n < 0 => break,
                        Ok(_) => continue,
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => break,
                        Err(_) => return,
                    },
                    () = tx.closed() => return,
                }
            }
        }
    });
    let stream =
        futures_util::stream::unfold(
            rx,
            |mut rx| async move { rx.recv().await.map(|e| (Ok(e), rx)) },
        );
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

async fn rerun_confirm(
    State(state): State<AppState>,
    user: User,
    Path(id): Path<i64>,
) -> Result<Response, AppError> {
    if !user.is_admin() {
        return Err(AppError::Forbidden("re-runs are for admins".into()));
    }
    let run = load_run(&state, id).await?;
    page(&state, "rerun_confirm.html", context! { run, user })
}

#[derive(Deserialize)]
struct RerunForm {
    csrf: Option<String>,
    confirm: Option<String>,
}

async fn rerun(
    State(state): State<AppState>,
    user: User,
    Path(id): Path<i64>,
    headers: HeaderMap,
    Form(f): Form<RerunForm>,
) -> Result<Response, AppError> {
    if !user.is_admin() {
        return Err(AppError::Forbidden("re-runs are for admins".into()));
    }
    require_csrf(&user, f.csrf.as_deref(), &headers)?;
    if f.confirm.as_deref() != Some("yes") {
        return Err(AppError::BadRequest(
            "confirm: the re-run was not confirmed".into(),
        ));
    }
    let run = load_run(&state, id).await?;
    let started = state
        .rerun
        .start(&run, &user.name)
        .await
        .map_err(|e| match e {
            crate::rerun::RerunError::Busy(_) => AppError::Conflict(e.to_string()),
            crate::rerun::RerunError::NoDate(_) | crate::rerun::RerunError::Off => {
                AppError::BadRequest(e.to_string())
            }
            other => AppError::Internal(other.to_string()),
        })?;
    let what = match &started {
        crate::rerun::Started::Process { pid } => {
            format!(
                "importer process {}",
                pid.map_or("?".into(), |p| p.to_string())
            )
        }
        crate::rerun::Started::Job { name } => format!("Kubernetes Job {name}"),
    };
    tracing::info!(user = %user.name, run = id, started = %what, "re-run started");
    page(&state, "rerun_started.html", context! { run, what })
}

// ----------------------------------------------------------------------- data --

async fn data_index(State(state): State<AppState>, user: User) -> Result<Response, AppError> {
    let types: Vec<Value> = state
        .config
        .registry
        .types()
        .map(|t| {
            context! {
                module => t.module, table => t.table.as_str(), description => t.description,
                columns => t.columns.len(), key => t.key_names().collect::<Vec<_>>(),
            }
        })
        .collect();
    page(
        &state,
        "data_index.html",
        context! { title => "Data", nav => "data", user, types },
    )
}

fn type_def(
    state: &AppState,
    module: &str,
) -> Result<std::sync::Arc<importer::registry::TypeDef>, AppError> {
    state
        .config
        .registry
        .get(module)
        .cloned()
        .map(std::sync::Arc::new)
        .ok_or_else(|| AppError::NotFound(format!("no type {module:?} in the registry")))
}

fn column_ctx(def: &importer::registry::TypeDef) -> Vec<Value> {
    def.columns
        .iter()
        .map(|c| {
            context! {
                name => c.name.as_str(), ty => c.ty.name(), kind => browse::kind(c.ty),
                key => def.key_names().any(|k| k == c.name.as_str()),
            }
        })
        .collect()
}

async fn data_page(
    State(state): State<AppState>,
    user: User,
    Path(module): Path<String>,
    Query(pairs): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let def = type_def(&state, &module)?;
    let tenants = runs::distinct(&state.store, "tenant").await?;
    let columns = column_ctx(&def);
    let b = match browse::parse(&def, state.store.dialect(), &pairs) {
        Ok(b) => b,
        Err(e) => {
            let body = render(
                &state,
                "data.html",
                context! {
                    title => module.clone(), nav => "data", user, module, columns, tenants,
                    params => pairs.into_iter().collect::<std::collections::BTreeMap<_, _>>(),
                    error => e.to_string(), rows => Vec::<Vec<Option<String>>>::new(),
                },
            )?;
            return Ok((StatusCode::BAD_REQUEST, Html(body)).into_response());
        }
    };
    let sql = browse::select(&def, state.store.dialect(), &b, Some(browse::PAGE + 1));
    let mut rows = state.store.rows(sql, browse::PAGE + 1).await?;
    let more = rows.len() > browse::PAGE;
    rows.truncate(browse::PAGE);
    let mut base = b.params.clone();
    base.remove("after");
    let next = more
        .then(|| rows.last().map(|r| browse::cursor_after(&def, &b, r)))
        .flatten()
        .map(|c| {
            let mut p = base.clone();
            p.insert("after".into(), c);
            p
        });
    let partial = headers.contains_key("hx-request") && !headers.contains_key("hx-boosted");
    let template = "data.html";
    page(
        &state,
        template,
        context! {
            title => module.clone(), nav => "data", user, module, columns, tenants, rows,
            params => b.params, base, next, partial,
            sort => b.sort.map(|i| def.columns[i].name.as_str().to_string()), desc => b.desc,
        },
    )
}

async fn data_csv(
    State(state): State<AppState>,
    _user: User,
    Path(module): Path<String>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Response, AppError> {
    let def = type_def(&state, &module)?;
    let pairs: Vec<(String, String)> = pairs.into_iter().filter(|(k, _)| k != "after").collect();
    let b = browse::parse(&def, state.store.dialect(), &pairs)?;
    let sql = browse::select(&def, state.store.dialect(), &b, None);
    let header_row = std::iter::once(importer::registry::TENANT_COLUMN.to_string())
        .chain(def.columns.iter().map(|c| c.name.as_str().to_string()))
        .collect();
    Ok(csv_response(
        format!("{}.csv", def.table.as_str()),
        header_row,
        state.store.stream(sql),
    ))
}

// ------------------------------------------------------------ tenants, charts --

async fn tenants_page(State(state): State<AppState>, user: User) -> Result<Response, AppError> {
    let (rows, sources) = tenants::fetch_all(&state.http, &state.config.sidecars).await;
    page(
        &state,
        "tenants.html",
        context! { title => "Tenants", nav => "tenants", user, rows, sources,
        configured => !state.config.sidecars.is_empty() },
    )
}

async fn charts_page(State(state): State<AppState>, user: User) -> Result<Response, AppError> {
    let stats = runs::last_30_days(&state.store).await?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let days = charts::last_days(now);
    page(
        &state,
        "charts.html",
        context! {
            title => "Charts", nav => "charts", user,
            rows_chart => Value::from_safe_string(charts::rows_per_day(&stats, &days)),
            duration_chart => Value::from_safe_string(charts::duration_per_type(&stats, &days)),
        },
    )
}

// --------------------------------------------------------- probes and statics --

async fn livez() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<AppState>) -> Response {
    match state.store.ping().await {
        Ok(()) => "ready\n".into_response(),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "database unreachable\n").into_response(),
    }
}

const STATIC: &[(&str, &str, &[u8])] = &[
    (
        "htmx.min.js",
        "text/javascript",
        include_bytes!("../static/htmx.min.js"),
    ),
    (
        "htmx-ext-sse.js",
        "text/javascript",
        include_bytes!("../static/htmx-ext-sse.js"),
    ),
    (
        "console.css",
        "text/css",
        include_bytes!("../static/console.css"),
    ),
];

async fn static_file(Path(name): Path<String>) -> Response {
    match STATIC.iter().find(|(n, _, _)| *n == name) {
        Some((_, ty, body)) => (
            [
                (header::CONTENT_TYPE, HeaderValue::from_static(ty)),
                (
                    header::CACHE_CONTROL,
                    HeaderValue::from_static("public, max-age=3600"),
                ),
            ],
            *body,
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

// ------------------------------------------------------------------ middleware --

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Security headers on every response; one log line per request (not probes or static files)
/// with its server time.
async fn around(req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    let quiet = matches!(path.as_str(), "/livez" | "/readyz") || path.starts_with("/static/");
    let started = Instant::now();
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert("content-security-policy", HeaderValue::from_static(CSP));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    if !path.starts_with("/static/") {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    if let Ok(v) = HeaderValue::from_str(&format!("app;dur={ms:.1}")) {
        h.insert("server-timing", v);
    }
    if !quiet {
        tracing::info!(method = %method, path = %path, status = resp.status().as_u16(), ms = format!("{ms:.1}"), "request");
    }
    resp
}

/// The console's routes.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::to("/runs") }))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/runs", get(runs_page))
        .route("/runs/{id}", get(run_page))
        .route("/runs/{id}/rejects", get(rejects_rows))
        .route("/runs/{id}/rejects.csv", get(rejects_csv))
        .route("/runs/{id}/events", get(run_events))
        .route("/runs/{id}/rerun", get(rerun_confirm).post(rerun))
        .route("/data", get(data_index))
        .route("/data/{module}", get(data_page))
        .route("/data/{module}/csv", get(data_csv))
        .route("/tenants", get(tenants_page))
        .route("/charts", get(charts_page))
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/static/{name}", get(static_file))
        .layer(axum::middleware::from_fn(around))
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only local paths are followed after login.
    #[test]
    fn next_is_local() {
        assert_eq!(safe_next(Some("/runs/3")), "/runs/3");
        assert_eq!(safe_next(Some("//evil.example")), "/runs");
        assert_eq!(safe_next(Some("https://evil.example")), "/runs");
        assert_eq!(safe_next(None), "/runs");
    }

    /// Numbers get thousands separators.
    #[test]
    fn formats() {
        assert_eq!(fmt_int(1234567), "1,234,567");
        assert_eq!(fmt_int(-12), "-12");
        assert_eq!(fmt_secs(0.25), "250 ms");
    }
}
