//! Command line and environment, parsed by clap and validated into one typed [`Config`].
//!
//! Anything wrong here is a usage error: one line on stderr, exit code 64.

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};

use crate::db::DatabaseUrl;
use crate::registry::Registry;

/// Exit code for bad usage or configuration (`EX_USAGE`).
pub const EX_USAGE: i32 = 64;

/// Bad command line, environment or registry. The message names the key and the problem.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

#[derive(Debug, Parser)]
#[command(
    name = "importer",
    version,
    about = "Streams CSV exports, fetched through the auth proxy, into PostgreSQL or SQLite."
)]
pub struct Cli {
    /// `postgres://…` or `sqlite://PATH`.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "sqlite://importer.db",
        global = true
    )]
    pub database_url: String,
    /// The type registry (YAML).
    #[arg(
        long,
        env = "IMPORTER_REGISTRY",
        default_value = "registry.yaml",
        global = true
    )]
    pub registry: PathBuf,
    /// Where decoded payloads and downloads are spooled (anonymous files, never left behind).
    #[arg(long, env = "IMPORTER_TEMP_DIR", global = true)]
    pub temp_dir: Option<PathBuf>,
    /// Records longer than this many bytes are rejected without being held whole (a type's
    /// `max_record_bytes` in the registry overrides it).
    #[arg(long, env = "IMPORTER_MAX_RECORD_BYTES", default_value_t = crate::registry::DEFAULT_MAX_RECORD_BYTES, global = true)]
    pub max_record_bytes: usize,
    /// How often a running load records its counts and heartbeat (PostgreSQL; milliseconds,
    /// 100-30000, well inside the 60 s lease after which a silent run counts as abandoned).
    #[arg(
        long,
        env = "IMPORTER_PROGRESS_EVERY_MS",
        default_value_t = 1000,
        global = true
    )]
    pub progress_every_ms: u64,
    #[command(subcommand)]
    pub command: CliCommand,
}

#[derive(Debug, Subcommand)]
pub enum CliCommand {
    /// Apply the schema migrations and create or extend every registry table.
    Migrate,
    /// List the registry's types.
    Types,
    /// Fetch the exports of a date through the auth proxy and load them.
    Run {
        /// Base URL of the export API, i.e. the auth proxy.
        #[arg(long, env = "IMPORTER_API_BASE_URL")]
        base_url: String,
        /// Tenants to import (repeat or comma-separate).
        #[arg(
            long = "tenant",
            env = "IMPORTER_TENANTS",
            value_delimiter = ',',
            required = true
        )]
        tenants: Vec<String>,
        /// Export date: YYYY-MM-DD, `today`, `yesterday` or `today-N` (N days
        /// ago), in UTC. Defaults to today.
        #[arg(long, env = "IMPORTER_DATE")]
        date: Option<String>,
        /// Only these types (repeat or comma-separate). Defaults to every registry type.
        #[arg(long = "type", value_delimiter = ',')]
        types: Vec<String>,
        /// Header naming the tenant to the auth proxy.
        #[arg(long, env = "IMPORTER_TENANT_HEADER", default_value = "x-tenant-id")]
        tenant_header: String,
        /// The importer's identity towards the auth proxy: a file holding a
        /// token (a projected ServiceAccount token), sent as `Authorization:
        /// Bearer` and re-read for every request. Needed when the proxy runs
        /// in `jwt` identity mode, as in production.
        #[arg(long, env = "IMPORTER_CALLER_TOKEN_FILE")]
        caller_token_file: Option<PathBuf>,
        #[command(flatten)]
        opts: LoadArgs,
    },
    /// Load local files: payload JSON, zip or CSV (a directory loads every file in it).
    Load {
        /// Files or directories.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Tenant that owns the rows.
        #[arg(long)]
        tenant: String,
        /// Module for zips and CSVs. Defaults to the file name up to its first '.'.
        #[arg(long)]
        module: Option<String>,
        #[command(flatten)]
        opts: LoadArgs,
    },
}

#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Files processed at once.
    #[arg(long, env = "IMPORTER_JOBS", default_value_t = 4)]
    pub jobs: usize,
    /// This process's share of the work, `i/n` (e.g. the pod index of a Kubernetes Job).
    #[arg(long, env = "IMPORTER_SHARD", default_value = "0/1")]
    pub shard: String,
    /// Load even when identical bytes were already loaded.
    #[arg(long)]
    pub force: bool,
    /// An export without data rows: `warn` (recorded `empty`) or `fail` (recorded `failed`).
    #[arg(long, env = "IMPORTER_ON_EMPTY", default_value = "warn")]
    pub on_empty: String,
}

/// `--shard i/n`: this process takes every item whose index is `i` modulo `n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    pub fn parse(s: &str) -> Result<Self, String> {
        let (i, n) = s
            .split_once('/')
            .ok_or_else(|| format!("--shard {s:?}: expected i/n"))?;
        let index: usize = i
            .trim()
            .parse()
            .map_err(|_| format!("--shard {s:?}: bad index"))?;
        let count: usize = n
            .trim()
            .parse()
            .map_err(|_| format!("--shard {s:?}: bad count"))?;
        if count == 0 || index >= count {
            return Err(format!("--shard {s:?}: need 0 <= i < n"));
        }
        Ok(Self { index, count })
    }

    pub fn takes(&self, item: usize) -> bool {
        item % self.count == self.index
    }
}

/// Options shared by `run` and `load`.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub jobs: usize,
    pub shard: Shard,
    pub force: bool,
    pub fail_on_empty: bool,
}

/// What to do, validated.
#[derive(Debug, Clone)]
pub enum Command {
    Migrate,
    Types,
    Run {
        base_url: reqwest::Url,
        tenants: Vec<String>,
        date: String,
        types: Vec<String>,
        tenant_header: reqwest::header::HeaderName,
        caller_token_file: Option<PathBuf>,
        opts: LoadOptions,
    },
    Load {
        paths: Vec<PathBuf>,
        tenant: String,
        module: Option<String>,
        opts: LoadOptions,
    },
}

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub database: DatabaseUrl,
    pub registry: Arc<Registry>,
    pub temp_dir: PathBuf,
    pub max_record_bytes: usize,
    pub progress_every: std::time::Duration,
    pub command: Command,
}

fn check_tenant(t: &str) -> Result<String, UsageError> {
    let t = t.trim();
    if t.is_empty() || t.len() > 200 || t.bytes().any(|c| c.is_ascii_control()) {
        return Err(UsageError(format!(
            "tenant {t:?}: must be 1-200 printable characters"
        )));
    }
    Ok(t.to_string())
}

/// Resolves `--date`: a calendar date as is, or a day relative to today (UTC).
fn check_date(d: &str) -> Result<String, UsageError> {
    let days_ago = match d.trim() {
        "today" => Some(0),
        "yesterday" => Some(1),
        other => match other.strip_prefix("today-") {
            Some(n) => Some(n.parse::<u32>().map_err(|_| {
                UsageError(format!(
                    "--date {d:?}: expected today-N with N a number of days"
                ))
            })?),
            None => None,
        },
    };
    if let Some(n) = days_ago {
        return Ok(utc_date_days_ago(n));
    }
    crate::value::parse_field(crate::registry::ColumnType::Date, true, d.as_bytes(), false)
        .map_err(|e| UsageError(format!("--date {d:?}: {e}")))?;
    Ok(d.to_string())
}

/// Today in UTC, `YYYY-MM-DD`.
pub fn today_utc() -> String {
    utc_date_days_ago(0)
}

/// The UTC date `n` days before today, `YYYY-MM-DD`.
pub fn utc_date_days_ago(n: u32) -> String {
    let days = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400) as i64
        - i64::from(n);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

fn load_options(a: LoadArgs) -> Result<LoadOptions, UsageError> {
    if a.jobs == 0 || a.jobs > 256 {
        return Err(UsageError(format!("--jobs {}: must be 1-256", a.jobs)));
    }
    let fail_on_empty = match a.on_empty.as_str() {
        "warn" => false,
        "fail" => true,
        other => {
            return Err(UsageError(format!(
                "--on-empty {other:?}: expected warn or fail"
            )))
        }
    };
    Ok(LoadOptions {
        jobs: a.jobs,
        shard: Shard::parse(&a.shard).map_err(UsageError)?,
        force: a.force,
        fail_on_empty,
    })
}

impl Config {
    /// Validates everything at start-up, registry included.
    pub fn from_cli(cli: Cli) -> Result<Self, UsageError> {
        let database = DatabaseUrl::parse(&cli.database_url)
            .map_err(|e| UsageError(format!("--database-url: {e}")))?;
        let registry =
            Arc::new(Registry::load(&cli.registry).map_err(|e| UsageError(e.to_string()))?);
        let temp_dir = cli.temp_dir.unwrap_or_else(std::env::temp_dir);
        if !(64..=1 << 30).contains(&cli.max_record_bytes) {
            return Err(UsageError(format!(
                "--max-record-bytes {}: must be between 64 and 1073741824",
                cli.max_record_bytes
            )));
        }
        if !(100..=30_000).contains(&cli.progress_every_ms) {
            return Err(UsageError(format!(
                "--progress-every-ms {}: must be between 100 and 30000",
                cli.progress_every_ms
            )));
        }
        if !temp_dir.is_dir() {
            return Err(UsageError(format!(
                "--temp-dir {}: not a directory",
                temp_dir.display()
            )));
        }
        let known = |flag: &str, m: &str| -> Result<String, UsageError> {
            if registry.get(m).is_some() {
                Ok(m.to_string())
            } else {
                Err(UsageError(format!("{flag} {m:?}: not in the registry")))
            }
        };
        let command = match cli.command {
            CliCommand::Migrate => Command::Migrate,
            CliCommand::Types => Command::Types,
            CliCommand::Run {
                base_url,
                tenants,
                date,
                types,
                tenant_header,
                caller_token_file,
                opts,
            } => {
                if let Some(path) = &caller_token_file {
                    // Fail at start, not per file, when the token is missing.
                    crate::fetch::caller_authorization(path)
                        .map_err(|e| UsageError(format!("--caller-token-file: {e}")))?;
                }
                let url = reqwest::Url::parse(&base_url)
                    .map_err(|e| UsageError(format!("--base-url {base_url:?}: {e}")))?;
                if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
                    return Err(UsageError(format!(
                        "--base-url {base_url:?}: must be an http(s) URL"
                    )));
                }
                let tenant_header = reqwest::header::HeaderName::try_from(tenant_header.as_str())
                    .map_err(|e| {
                    UsageError(format!("--tenant-header {tenant_header:?}: {e}"))
                })?;
                Command::Run {
                    base_url: url,
                    tenants: tenants
                        .iter()
                        .map(|t| check_tenant(t))
                        .collect::<Result<_, _>>()?,
                    date: check_date(&date.unwrap_or_else(today_utc))?,
                    types: types
                        .iter()
                        .map(|t| known("--type", t))
                        .collect::<Result<_, _>>()?,
                    tenant_header,
                    caller_token_file,
                    opts: load_options(opts)?,
                }
            }
            CliCommand::Load {
                paths,
                tenant,
                module,
                opts,
            } => {
                for p in &paths {
                    if !p.exists() {
                        return Err(UsageError(format!("{}: no such file", p.display())));
                    }
                }
                Command::Load {
                    paths,
                    tenant: check_tenant(&tenant)?,
                    module: module.map(|m| known("--module", &m)).transpose()?,
                    opts: load_options(opts)?,
                }
            }
        };
        Ok(Self {
            database,
            registry,
            temp_dir,
            max_record_bytes: cli.max_record_bytes,
            progress_every: std::time::Duration::from_millis(cli.progress_every_ms),
            command,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Shards parse and split work without overlap.
    #[test]
    fn shards() {
        let s = Shard::parse("1/3").unwrap();
        assert_eq!(
            (0..7).filter(|i| s.takes(*i)).collect::<Vec<_>>(),
            vec![1, 4]
        );
        assert!(Shard::parse("3/3").is_err());
        assert!(Shard::parse("0/0").is_err());
        assert!(Shard::parse("1").is_err());
    }

    /// Today's date is well-formed.
    #[test]
    fn today_is_a_date() {
        check_date(&today_utc()).unwrap();
    }

    /// Relative dates resolve to calendar dates; `yesterday` is the day
    /// before `today`, also across a month boundary; junk is refused.
    #[test]
    fn relative_dates() {
        assert_eq!(check_date("today").unwrap(), today_utc());
        let y = check_date("yesterday").unwrap();
        assert_eq!(y, check_date("today-1").unwrap());
        assert_ne!(y, today_utc());
        check_date(&y).unwrap();
        check_date("today-400").unwrap();
        assert!(check_date("today-x").is_err());
        assert!(check_date("2026-02-30").is_err());
        assert_eq!(check_date("2026-02-28").unwrap(), "2026-02-28");
    }
}
