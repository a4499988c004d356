//! Helpers shared by the importer's integration tests: registries (the example plus generated
//! types), payload builders, a backend-neutral query helper, and running commands in-process.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use importer::config::{Cli, Config};
use importer::Report;

/// Number of generated types, besides the example registry's.
pub const GENERATED_TYPES: usize = 60;

/// The csv-spectrum cases (tests/data/csv-spectrum), each loaded as type `spectrum_<case>`.
pub const SPECTRUM: [&str; 12] = [
    "comma_in_quotes",
    "empty",
    "empty_crlf",
    "escaped_quotes",
    "json",
    "location_coordinates",
    "newlines",
    "newlines_crlf",
    "quotes_and_newlines",
    "simple",
    "simple_crlf",
    "utf8",
];

/// Types besides the example's and the generated ones: reserved words, a wide one, one with
/// a small record limit, and the csv-spectrum cases.
pub const EXTRA_TYPES: usize = 3 + SPECTRUM.len();

/// A csv-spectrum file.
pub fn spectrum_file(case: &str, ext: &str) -> PathBuf {
    let dir = if ext == "csv" { "csvs" } else { "json" };
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("tests/data/csv-spectrum/{dir}/{case}.{ext}"))
}

/// The column types the generator cycles through, with a valid sample value for row `i`.
fn generated_column(j: usize, i: usize) -> (&'static str, String) {
    match j % 8 {
        0 => ("int", format!("{}", i * 7)),
        1 => ("text", format!("\"name, {i}\"")),
        2 => ("decimal(12,2)", format!("{}.{:02}", i, i % 100)),
        3 => ("date", format!("2026-{:02}-{:02}", i % 12 + 1, i % 28 + 1)),
        4 => (
            "timestamp",
            format!("2026-01-01T{:02}:{:02}:00", i % 24, i % 60),
        ),
        5 => (
            "bool",
            if i.is_multiple_of(2) { "true" } else { "no" }.to_string(),
        ),
        6 => ("bigint", format!("{}", (i as i64) << 33)),
        _ => ("float", format!("{}.5", i)),
    }
}

/// A registry with the shipped example types plus `GENERATED_TYPES` generated ones, `gen_00`…
pub fn write_registry(dir: &Path) -> PathBuf {
    let example = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("registry/example.yaml"),
    )
    .unwrap();
    let mut text = example;
    for t in 0..GENERATED_TYPES {
        text.push_str(&format!(
            "  - module: gen_{t:02}\n    natural_key: [id]\n    columns:\n      - {{ name: id, type: bigint, required: true, aliases: [ID] }}\n"
        ));
        for j in 0..(t % 6 + 2) {
            let (ty, _) = generated_column(j, 0);
            text.push_str(&format!("      - {{ name: c{j}, type: \"{ty}\" }}\n"));
        }
    }
    // Reserved words as table and column names.
    for line in [
        "  - module: reserved",
        "    table: order",
        "    natural_key: [user]",
        "    columns:",
        "      - { name: user, type: int, required: true }",
        "      - { name: select, type: text }",
        "      - { name: group, type: \"decimal(5,2)\" }",
    ] {
        text.push_str(line);
        text.push('\n');
    }
    // 200 columns: more parameters per row than SQLite's default multi-row insert allows.
    text.push_str("  - module: wide\n    natural_key: [id]\n    columns:\n      - { name: id, type: bigint, required: true }\n");
    for j in 1..200 {
        text.push_str(&format!("      - {{ name: c{j}, type: text }}\n"));
    }
    for line in [
        "  - module: small-records",
        "    max_record_bytes: 100",
        "    natural_key: [id]",
        "    columns:",
        "      - { name: id, type: int, required: true }",
        "      - { name: v, type: text }",
    ] {
        text.push_str(line);
        text.push('\n');
    }
    // csv-spectrum: every column text and part of the key, named c0… with the header as alias.
    for case in SPECTRUM {
        let csv = std::fs::read(spectrum_file(case, "csv")).unwrap();
        let header = String::from_utf8_lossy(&csv);
        let header = header.lines().next().unwrap();
        let names: Vec<&str> = header.split(',').collect();
        let keys: Vec<String> = (0..names.len()).map(|i| format!("c{i}")).collect();
        text.push_str(&format!(
            "  - module: spectrum_{case}\n    natural_key: [{}]\n    columns:\n",
            keys.join(", ")
        ));
        for (i, n) in names.iter().enumerate() {
            text.push_str(&format!(
                "      - {{ name: c{i}, type: text, required: true, aliases: [\"{n}\"] }}\n"
            ));
        }
    }
    let path = dir.join("registry.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

/// CSV for generated type `t` with `rows` rows.
pub fn generated_csv(t: usize, rows: usize) -> String {
    let cols = t % 6 + 2;
    let mut s = String::from("ID");
    for j in 0..cols {
        s.push_str(&format!(",c{j}"));
    }
    s.push('\n');
    for i in 0..rows {
        s.push_str(&i.to_string());
        for j in 0..cols {
            s.push(',');
            s.push_str(&generated_column(j, i).1);
        }
        s.push('\n');
    }
    s
}

pub use testkit::export::zip_of;

/// The export API's payload for a module's CSV, as bytes.
pub fn payload(module: &str, csv: &str) -> Vec<u8> {
    serde_json::to_vec(&testkit::export::payload(module, csv.as_bytes())).unwrap()
}

/// A test's scratch directory, its registry and its temp dir for the importer.
pub struct Scratch {
    pub dir: tempfile::TempDir,
    pub registry: PathBuf,
    pub temp: PathBuf,
}

impl Scratch {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let registry = write_registry(dir.path());
        let temp = dir.path().join("spool");
        std::fs::create_dir(&temp).unwrap();
        Self {
            dir,
            registry,
            temp,
        }
    }

    /// Writes a file into the scratch directory.
    pub fn file(&self, name: &str, body: impl AsRef<[u8]>) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, body).unwrap();
        path
    }

    /// True when the importer left nothing in its temp dir.
    pub fn spool_is_empty(&self) -> bool {
        std::fs::read_dir(&self.temp).unwrap().next().is_none()
    }
}

/// Where a test's data goes.
#[derive(Clone)]
pub enum Backend {
    Sqlite(PathBuf),
    Postgres(String),
}

impl Backend {
    pub fn url(&self) -> String {
        match self {
            Self::Sqlite(p) => format!("sqlite://{}", p.display()),
            Self::Postgres(u) => u.clone(),
        }
    }

    /// Runs a query whose columns are all cast to text; NULL comes back as "∅".
    pub async fn rows(&self, sql: &str) -> Vec<Vec<String>> {
        match self {
            Self::Sqlite(p) => {
                let conn = rusqlite::Connection::open(p).unwrap();
                conn.busy_timeout(std::time::Duration::from_secs(30))
                    .unwrap();
                let mut stmt = conn.prepare(sql).unwrap();
                let n = stmt.column_count();
                stmt.query_map([], |r| {
                    (0..n)
                        .map(|i| {
                            r.get::<_, Option<String>>(i)
                                .map(|v| v.unwrap_or("∅".into()))
                        })
                        .collect::<Result<Vec<_>, _>>()
                })
                .unwrap()
                .map(Result::unwrap)
                .collect()
            }
            Self::Postgres(u) => {
                use sqlx::{Connection, Row};
                let mut conn = sqlx::PgConnection::connect(u).await.unwrap();
                let rows = sqlx::query(sql).fetch_all(&mut conn).await.unwrap();
                rows.iter()
                    .map(|r| {
                        (0..r.len())
                            .map(|i| r.get::<Option<String>, _>(i).unwrap_or("∅".into()))
                            .collect()
                    })
                    .collect()
            }
        }
    }

    /// A single text value.
    pub async fn value(&self, sql: &str) -> String {
        self.rows(sql).await[0][0].clone()
    }
}

/// A fresh SQLite file in the scratch directory.
pub fn sqlite(scratch: &Scratch) -> Backend {
    Backend::Sqlite(scratch.dir.path().join("importer.db"))
}

/// A fresh PostgreSQL database on the server named by `TEST_POSTGRES_URL`. Panics when it is
/// unset: PostgreSQL tests never skip.
pub async fn postgres() -> Backend {
    use sqlx::{Connection, Executor};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let admin = std::env::var("TEST_POSTGRES_URL").unwrap_or_else(|_| {
        panic!(
            "TEST_POSTGRES_URL is not set: the PostgreSQL tests need a server \
             (start one with `eval \"$(scripts/pg start)\"`)"
        )
    });
    let name = format!(
        "importer_t{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    );
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .unwrap_or_else(|e| panic!("TEST_POSTGRES_URL {admin}: cannot connect: {e}"));
    conn.execute(format!("DROP DATABASE IF EXISTS {name}").as_str())
        .await
        .unwrap();
    conn.execute(format!("CREATE DATABASE {name}").as_str())
        .await
        .unwrap();
    let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
    let base = base.split('?').next().unwrap_or(base);
    // The throwaway server is on loopback: plaintext, allowed explicitly.
    Backend::Postgres(format!("{base}/{name}?sslmode=disable"))
}

/// Runs an importer command in-process, as the binary would (global options first).
pub async fn importer(scratch: &Scratch, backend: &Backend, args: &[&str]) -> Report {
    importer_until(scratch, backend, args, std::future::pending()).await
}

/// Like [`importer`], with a shutdown signal.
pub async fn importer_until(
    scratch: &Scratch,
    backend: &Backend,
    args: &[&str],
    shutdown: impl std::future::Future<Output = ()>,
) -> Report {
    let mut argv: Vec<String> = vec![
        "importer".into(),
        "--database-url".into(),
        backend.url(),
        "--registry".into(),
        scratch.registry.display().to_string(),
        "--temp-dir".into(),
        scratch.temp.display().to_string(),
    ];
    argv.extend(args.iter().map(|s| s.to_string()));
    let cli = <Cli as clap::Parser>::try_parse_from(&argv).unwrap();
    let config = Config::from_cli(cli).unwrap();
    importer::run(config, shutdown).await.unwrap()
}

/// Like [`importer`], returning configuration and command errors as text.
pub async fn try_importer(
    scratch: &Scratch,
    backend: &Backend,
    args: &[&str],
) -> Result<Report, String> {
    let mut argv: Vec<String> = vec![
        "importer".into(),
        "--database-url".into(),
        backend.url(),
        "--registry".into(),
        scratch.registry.display().to_string(),
        "--temp-dir".into(),
        scratch.temp.display().to_string(),
    ];
    argv.extend(args.iter().map(|s| s.to_string()));
    let cli = <Cli as clap::Parser>::try_parse_from(&argv).map_err(|e| e.to_string())?;
    let config = Config::from_cli(cli).map_err(|e| e.to_string())?;
    importer::run(config, std::future::pending())
        .await
        .map_err(|e| e.to_string())
}

/// The importer binary with the test's database, registry and temp dir, logging warnings.
pub fn importer_bin(scratch: &Scratch, backend: &Backend) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_importer"));
    cmd.env("RUST_LOG", "warn")
        .arg("--database-url")
        .arg(backend.url())
        .arg("--registry")
        .arg(&scratch.registry)
        .arg("--temp-dir")
        .arg(&scratch.temp);
    cmd
}

/// Migrates (needed for PostgreSQL; SQLite migrates itself, and again is harmless).
pub async fn migrate(scratch: &Scratch, backend: &Backend) {
    importer(scratch, backend, &["migrate"]).await;
}
