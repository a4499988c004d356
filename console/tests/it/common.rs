//! What the console's test modules share: a database filled by the real importer binary from a fake export API, a users file, the app
//! built from command-line arguments, and request and HTML helpers.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use admin_console::config::{Cli, Config};
use admin_console::AppState;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use axum::Router;
use clap::Parser;
use http_body_util::BodyExt;
use tower::ServiceExt;

pub const PASSWORD: &str = "correct horse battery staple";
/// The export date the fixtures import.
pub const DATE: &str = "2026-01-15";

/// An orders export with two bad rows (lines 3 and 5) among four good ones.
pub const ORDERS_CSV: &str =
    "Order ID,Customer ID,Order Date,status,currency,Order Total,updated_at\n\
1,10,2026-01-01,open,EUR,10.50,\n\
2,11,2026-01-02,open,USD,not-a-number,\n\
3,12,2026-01-03,closed,EUR,3.00,\n\
4,13,2026-13-45,closed,EUR,4.00,\n\
5,14,2026-01-05,open,,5.25,2026-01-05T10:00:00Z\n\
6,15,2026-01-06,open,GBP,99.99,\n";

/// The importer binary beside this test (`cargo build -p importer`; scripts/test does).
pub fn importer_bin() -> PathBuf {
    testkit::binary("importer")
}

pub fn registry_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../importer/registry/example.yaml")
}

/// A users file with `admin` (admin) and `viewer` (viewer), both with [`PASSWORD`].
pub fn users_text() -> &'static str {
    static TEXT: OnceLock<String> = OnceLock::new();
    TEXT.get_or_init(|| {
        let h = admin_console::auth::hash_password(PASSWORD).unwrap();
        format!("# test users\nadmin:admin:{h}\nviewer:viewer:{h}\n")
    })
}

/// The export API the importer fetches from: `GET /exports/{module}` serves
/// `{dir}/{module}.csv` as the export payload. Only the third party is faked.
pub async fn export_api(dir: PathBuf) -> String {
    testkit::serve(testkit::export::api(dir)).await
}

/// A test world: a database, the export files and API, a users file.
pub struct World {
    pub dir: tempfile::TempDir,
    pub database_url: String,
    pub exports: PathBuf,
    pub api: String,
    pub users: PathBuf,
}

impl World {
    /// SQLite in a temp dir.
    pub async fn sqlite() -> World {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("importer.db").display());
        Self::with(dir, url).await
    }

    /// A fresh database in the PostgreSQL named by `TEST_POSTGRES_URL` (required: these tests
    /// fail without it, they never skip), migrated by `importer migrate`.
    pub async fn postgres() -> World {
        let base = std::env::var("TEST_POSTGRES_URL")
            .expect("TEST_POSTGRES_URL is not set: run `eval \"$(scripts/pg start)\"` first");
        let name = format!("console_{}", rand::random::<u32>());
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&base)
            .await
            .unwrap();
        sqlx::Executor::execute(&mut conn, format!("CREATE DATABASE {name}").as_str())
            .await
            .unwrap();
        // Same server, another database; plaintext on loopback said out loud, as the importer
        // requires (it refuses a URL that might fall back to plaintext silently).
        let (path, query) = base.split_once('?').unwrap_or((&base, ""));
        let (head, _) = path.rsplit_once('/').unwrap();
        let query = if query.is_empty() {
            "sslmode=disable"
        } else {
            query
        };
        let url = format!("{head}/{name}?{query}");
        let w = Self::with(tempfile::tempdir().unwrap(), url).await;
        w.importer(&["migrate"]).await.success();
        w
    }

    async fn with(dir: tempfile::TempDir, database_url: String) -> World {
        let exports = dir.path().join("exports");
        std::fs::create_dir_all(&exports).unwrap();
        std::fs::write(exports.join("orders.csv"), ORDERS_CSV).unwrap();
        let users = dir.path().join("users");
        std::fs::write(&users, users_text()).unwrap();
        let api = export_api(exports.clone()).await;
        World {
            dir,
            database_url,
            exports,
            api,
            users,
        }
    }

    /// Runs the real importer binary to completion.
    pub async fn importer(&self, args: &[&str]) -> Finished {
        let out = tokio::process::Command::new(importer_bin())
            .args(args)
            .env("DATABASE_URL", &self.database_url)
            .env("IMPORTER_REGISTRY", registry_path())
            .env("RUST_LOG", "warn")
            .output()
            .await
            .unwrap();
        Finished(out)
    }

    /// Imports `module` for `tenant` on [`DATE`] through the export API.
    pub async fn import(&self, tenant: &str, module: &str) -> Finished {
        self.importer(&[
            "run",
            "--base-url",
            &self.api,
            "--tenant",
            tenant,
            "--type",
            module,
            "--date",
            DATE,
        ])
        .await
    }

    /// Console arguments for this world (password access, cookies over plain HTTP).
    pub fn args(&self) -> Vec<String> {
        [
            "console",
            "--database-url",
            &self.database_url,
            "--registry",
            registry_path().to_str().unwrap(),
            "--auth",
            "password",
            "--users-file",
            self.users.to_str().unwrap(),
            "--insecure-cookies",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// The app, built from [`World::args`] plus `extra`.
    pub async fn app(&self, extra: &[&str]) -> Router {
        let mut args = self.args();
        args.extend(extra.iter().map(|s| s.to_string()));
        app_from(&args).await
    }
}

pub async fn app_from(args: &[String]) -> Router {
    let config = Config::from_cli(Cli::try_parse_from(args).unwrap()).unwrap();
    admin_console::web::app(AppState::new(config).await.unwrap())
}

pub struct Finished(pub std::process::Output);

impl Finished {
    pub fn success(&self) -> &Self {
        assert!(
            self.0.status.success(),
            "importer failed: {}\n{}",
            String::from_utf8_lossy(&self.0.stdout),
            String::from_utf8_lossy(&self.0.stderr)
        );
        self
    }
}

/// A response, its body read.
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Text of every element matching a CSS selector.
    pub fn texts(&self, css: &str) -> Vec<String> {
        let doc = scraper::Html::parse_document(&self.body);
        let sel = scraper::Selector::parse(css).unwrap();
        doc.select(&sel)
            .map(|e| e.text().collect::<String>().trim().to_string())
            .collect()
    }

    /// An attribute of every element matching a CSS selector.
    pub fn attrs(&self, css: &str, attr: &str) -> Vec<String> {
        let doc = scraper::Html::parse_document(&self.body);
        let sel = scraper::Selector::parse(css).unwrap();
        doc.select(&sel)
            .filter_map(|e| e.value().attr(attr).map(str::to_string))
            .collect()
    }

    /// Rows of a table as cell texts.
    pub fn table(&self, css: &str) -> Vec<Vec<String>> {
        let doc = scraper::Html::parse_document(&self.body);
        let rows = scraper::Selector::parse(&format!("{css} tbody tr")).unwrap();
        let cells = scraper::Selector::parse("td").unwrap();
        doc.select(&rows)
            .map(|r| {
                r.select(&cells)
                    .map(|c| c.text().collect::<String>().trim().to_string())
                    .collect()
            })
            .collect()
    }
}

pub async fn send(app: &Router, req: Request<Body>) -> Resp {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    Resp {
        status,
        headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

pub async fn get(app: &Router, path: &str, cookie: Option<&str>) -> Resp {
    let mut b = Request::get(path);
    if let Some(c) = cookie {
        b = b.header("cookie", c);
    }
    send(app, b.body(Body::empty()).unwrap()).await
}

pub async fn post_form(app: &Router, path: &str, cookie: Option<&str>, form: &str) -> Resp {
    let mut b = Request::post(path).header("content-type", "application/x-www-form-urlencoded");
    if let Some(c) = cookie {
        b = b.header("cookie", c);
    }
    send(app, b.body(Body::from(form.to_string())).unwrap()).await
}

/// Signs in; returns the `Cookie` header value.
pub async fn login(app: &Router, user: &str) -> String {
    let r = post_form(
        app,
        "/login",
        None,
        &format!("username={user}&password={}&next=/runs", urlenc(PASSWORD)),
    )
    .await;
    assert_eq!(
        r.status,
        StatusCode::SEE_OTHER,
        "login as {user}: {}",
        r.body
    );
    let set = r.header("set-cookie").expect("a session cookie");
    set.split(';').next().unwrap().to_string()
}

/// The CSRF token of the page's logout form.
pub async fn csrf_of(app: &Router, cookie: &str) -> String {
    let r = get(app, "/data", Some(cookie)).await;
    r.attrs("form[action='/logout'] input[name=csrf]", "value")
        .pop()
        .expect("csrf field")
}

pub fn urlenc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
