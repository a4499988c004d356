//! Command line and environment, parsed by clap and validated into one typed [`Config`].
//!
//! Anything wrong here is a usage error: one line that names the key, exit code 64. There is no
//! default access mode: the console refuses to start until one is chosen.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use importer::db::DatabaseUrl;
use importer::registry::Registry;

use crate::auth::{Role, UserTable};

/// Exit code for bad usage or configuration (`EX_USAGE`).
pub const EX_USAGE: i32 = 64;

/// Bad command line, environment or file. The message names the key and the problem.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

fn usage(key: &str, problem: impl std::fmt::Display) -> UsageError {
    UsageError(format!("{key}: {problem}"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuthMode {
    /// Username and argon2 password hash from `--users-file`.
    Password,
    /// A trusted header set by an SSO proxy (oauth2-proxy), checked with a shared secret.
    Sso,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RerunMode {
    /// No re-run button.
    Off,
    /// Spawn `importer run` on this machine.
    Local,
    /// Create a Job from the importer CronJob's template through the Kubernetes API.
    Kubernetes,
}

#[derive(Debug, Parser)]
#[command(
    name = "console",
    version,
    about = "Admin console: import runs, rejects, data and tenants in a browser."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<CliCommand>,
    /// Address to listen on (HTTP; pages, static files, /livez, /readyz).
    #[arg(long, env = "CONSOLE_LISTEN", default_value = "127.0.0.1:8090")]
    pub listen: String,
    /// The importer's database: `postgres://…` or `sqlite://PATH`.
    #[arg(long, env = "DATABASE_URL", default_value = "sqlite://importer.db")]
    pub database_url: String,
    /// The importer's type registry (YAML): the data browser shows exactly its types and columns.
    #[arg(long, env = "IMPORTER_REGISTRY", default_value = "registry.yaml")]
    pub registry: PathBuf,
    /// How users sign in. Required: the console is never open.
    #[arg(long, env = "CONSOLE_AUTH")]
    pub auth: Option<AuthMode>,
    /// password mode: lines `user:role:$argon2id$…` (role admin or viewer); see `hash-password`.
    #[arg(long, env = "CONSOLE_USERS_FILE")]
    pub users_file: Option<PathBuf>,
    /// sso mode: header carrying the signed-in user (oauth2-proxy: X-Forwarded-Email).
    #[arg(
        long,
        env = "CONSOLE_SSO_USER_HEADER",
        default_value = "x-forwarded-email"
    )]
    pub sso_user_header: String,
    /// sso mode: header carrying the shared secret the SSO proxy adds to every request.
    #[arg(
        long,
        env = "CONSOLE_SSO_SECRET_HEADER",
        default_value = "x-console-proxy-secret"
    )]
    pub sso_secret_header: String,
    /// sso mode: file holding that shared secret (at least 16 bytes).
    #[arg(long, env = "CONSOLE_SSO_SECRET_FILE")]
    pub sso_secret_file: Option<PathBuf>,
    /// sso mode: users with the admin role (comma-separated); everyone else is a viewer.
    #[arg(long, env = "CONSOLE_ADMINS", value_delimiter = ',')]
    pub admins: Vec<String>,
    /// File with the key that signs session cookies and CSRF tokens (at least 32 bytes). Without
    /// it a random key is made at start: sessions end with the process and aren't shared by
    /// replicas.
    #[arg(long, env = "CONSOLE_SESSION_KEY_FILE")]
    pub session_key_file: Option<PathBuf>,
    /// Session lifetime in minutes.
    #[arg(long, env = "CONSOLE_SESSION_MINUTES", default_value_t = 480)]
    pub session_minutes: u64,
    /// Leave the `Secure` attribute off the session cookie (plain-HTTP loopback only).
    #[arg(long, env = "CONSOLE_INSECURE_COOKIES")]
    pub insecure_cookies: bool,
    /// Sidecar status endpoints (`http://host:15021/status`), comma-separated.
    #[arg(long, env = "CONSOLE_SIDECAR_STATUS_URLS", value_delimiter = ',')]
    pub sidecar_status_url: Vec<String>,
    /// How the re-run button starts an import.
    #[arg(long, env = "CONSOLE_RERUN", default_value = "off")]
    pub rerun: RerunMode,
    /// local re-runs: the importer binary.
    #[arg(long, env = "CONSOLE_IMPORTER_BIN", default_value = "importer")]
    pub importer_bin: PathBuf,
    /// local re-runs: the export API's base URL (the auth proxy).
    #[arg(long, env = "IMPORTER_API_BASE_URL")]
    pub importer_base_url: Option<String>,
    /// kubernetes re-runs: API server URL (default from KUBERNETES_SERVICE_HOST/PORT).
    #[arg(long, env = "CONSOLE_KUBE_API_URL")]
    pub kube_api_url: Option<String>,
    /// kubernetes re-runs: namespace of the CronJob (default: the pod's own).
    #[arg(long, env = "POD_NAMESPACE")]
    pub kube_namespace: Option<String>,
    /// kubernetes re-runs: the importer CronJob whose template the Job copies.
    #[arg(long, env = "CONSOLE_KUBE_CRONJOB", default_value = "importer")]
    pub kube_cronjob: String,
    /// kubernetes re-runs: service account token file.
    #[arg(
        long,
        env = "CONSOLE_KUBE_TOKEN_FILE",
        default_value = "/var/run/secrets/kubernetes.io/serviceaccount/token"
    )]
    pub kube_token_file: PathBuf,
    /// kubernetes re-runs: CA bundle of the API server (ignored for http:// API URLs).
    #[arg(
        long,
        env = "CONSOLE_KUBE_CA_FILE",
        default_value = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
    )]
    pub kube_ca_file: PathBuf,
    /// PostgreSQL: create the console's indexes (`CREATE INDEX IF NOT EXISTS`) at start.
    #[arg(long, env = "CONSOLE_ENSURE_INDEXES", default_value_t = true, action = clap::ArgAction::Set)]
    pub ensure_indexes: bool,
    /// PostgreSQL: also index every registry column as `(column, tenant_id, key…)`, so sorting,
    /// ranges and equality on any column stay fast at millions of rows. Off by default: each
    /// index slows the importer's loads and takes disk.
    #[arg(long, env = "CONSOLE_COLUMN_INDEXES", default_value_t = false, action = clap::ArgAction::Set)]
    pub column_indexes: bool,
    /// PostgreSQL (with `CONSOLE_ENSURE_INDEXES`): `CREATE EXTENSION IF NOT EXISTS pg_trgm` and
    /// a GIN trigram index on every registry text column, built in the background with
    /// `CREATE INDEX CONCURRENTLY`, so a *contains* filter reads only the matching rows.
    #[arg(long, env = "CONSOLE_TRIGRAM_INDEXES", default_value_t = true, action = clap::ArgAction::Set)]
    pub trigram_indexes: bool,
}

#[derive(Debug, Subcommand)]
pub enum CliCommand {
    /// Read a password on stdin and print its argon2id hash for the users file.
    HashPassword,
}

/// How users are authenticated.
#[derive(Debug, Clone)]
pub enum Access {
    Password(Arc<UserTable>),
    Sso {
        user_header: axum::http::HeaderName,
        secret_header: axum::http::HeaderName,
        /// blake3 of the shared secret: compared in constant time, never kept in clear.
        secret_digest: blake3::Hash,
        admins: Vec<String>,
    },
}

impl Access {
    /// The role an SSO user gets.
    pub fn sso_role(admins: &[String], user: &str) -> Role {
        if admins.iter().any(|a| a.eq_ignore_ascii_case(user)) {
            Role::Admin
        } else {
            Role::Viewer
        }
    }
}

/// How re-runs are started.
#[derive(Debug, Clone)]
pub enum Rerun {
    Off,
    Local {
        importer_bin: PathBuf,
        base_url: String,
    },
    Kubernetes(KubeConfig),
}

#[derive(Debug, Clone)]
pub struct KubeConfig {
    pub api_url: String,
    pub namespace: String,
    pub cronjob: String,
    pub token_file: PathBuf,
    pub ca_file: Option<PathBuf>,
}

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub database: DatabaseUrl,
    pub registry_path: PathBuf,
    pub registry: Arc<Registry>,
    pub access: Access,
    /// Signs sessions and CSRF tokens; never printed.
    pub session_key: SessionKey,
    pub session_ttl: Duration,
    pub secure_cookies: bool,
    pub sidecars: Vec<reqwest::Url>,
    pub rerun: Rerun,
    pub ensure_indexes: bool,
    pub column_indexes: bool,
    pub trigram_indexes: bool,
}

/// A 32-byte key. `Debug` redacts it.
#[derive(Clone)]
pub struct SessionKey(pub [u8; 32]);

impl std::fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKey(***)")
    }
}

fn read_secret(key: &str, path: &Path, min: usize) -> Result<Vec<u8>, UsageError> {
    let mut bytes =
        std::fs::read(path).map_err(|e| usage(key, format!("{}: {e}", path.display())))?;
    while bytes.last().is_some_and(|b| b.is_ascii_whitespace()) {
        bytes.pop();
    }
    if bytes.len() < min {
        return Err(usage(
            key,
            format!("{}: must hold at least {min} bytes", path.display()),
        ));
    }
    Ok(bytes)
}

fn header_name(key: &str, value: &str) -> Result<axum::http::HeaderName, UsageError> {
    axum::http::HeaderName::from_bytes(value.trim().to_ascii_lowercase().as_bytes())
        .map_err(|_| usage(key, format!("{value:?} is not a header name")))
}

impl Config {
    /// Validates everything at start-up: files are read, the registry parsed, URLs checked.
    pub fn from_cli(cli: Cli) -> Result<Self, UsageError> {
        let listen: SocketAddr = cli.listen.parse().map_err(|_| {
            usage(
                "CONSOLE_LISTEN (--listen)",
                format!("{:?} is not host:port", cli.listen),
            )
        })?;
        let database =
            DatabaseUrl::parse(&cli.database_url).map_err(|e| usage("DATABASE_URL", e))?;
        let registry = Registry::load(&cli.registry)
            .map_err(|e| usage("IMPORTER_REGISTRY (--registry)", e))?;
        let access = match cli.auth {
            None => {
                return Err(usage(
                    "CONSOLE_AUTH (--auth)",
                    "required: password or sso (the console is never open)",
                ))
            }
            Some(AuthMode::Password) => {
                let key = "CONSOLE_USERS_FILE (--users-file)";
                let path = cli
                    .users_file
                    .as_ref()
                    .ok_or_else(|| usage(key, "required with --auth password"))?;
                let text = std::fs::read_to_string(path)
                    .map_err(|e| usage(key, format!("{}: {e}", path.display())))?;
                let table = UserTable::parse(&text)
                    .map_err(|e| usage(key, format!("{}: {e}", path.display())))?;
                Access::Password(Arc::new(table))
            }
            Some(AuthMode::Sso) => {
                let key = "CONSOLE_SSO_SECRET_FILE (--sso-secret-file)";
                let path = cli
                    .sso_secret_file
                    .as_ref()
                    .ok_or_else(|| usage(key, "required with --auth sso"))?;
                let secret = read_secret(key, path, 16)?;
                let user_header = header_name(
                    "CONSOLE_SSO_USER_HEADER (--sso-user-header)",
                    &cli.sso_user_header,
                )?;
                let secret_header = header_name(
                    "CONSOLE_SSO_SECRET_HEADER (--sso-secret-header)",
                    &cli.sso_secret_header,
                )?;
                if user_header == secret_header {
                    return Err(usage(
                        "CONSOLE_SSO_SECRET_HEADER (--sso-secret-header)",
                        "must differ from the user header",
                    ));
                }
                Access::Sso {
                    user_header,
                    secret_header,
                    secret_digest: blake3::hash(&secret),
                    admins: cli
                        .admins
                        .iter()
                        .map(|a| a.trim().to_string())
                        .filter(|a| !a.is_empty())
                        .collect(),
                }
            }
        };
        let session_key = match &cli.session_key_file {
            Some(path) => {
                let bytes = read_secret("CONSOLE_SESSION_KEY_FILE (--session-key-file)", path, 32)?;
                SessionKey(blake3::derive_key(
                    "authproxy console session key v1",
                    &bytes,
                ))
            }
            None => SessionKey(rand::random()),
        };
        if cli.session_minutes == 0 || cli.session_minutes > 7 * 24 * 60 {
            return Err(usage(
                "CONSOLE_SESSION_MINUTES (--session-minutes)",
                "must be 1-10080",
            ));
        }
        let mut sidecars = Vec::new();
        for u in &cli.sidecar_status_url {
            let u = u.trim();
            if u.is_empty() {
                continue;
            }
            let url = reqwest::Url::parse(u)
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https"))
                .ok_or_else(|| {
                    usage(
                        "CONSOLE_SIDECAR_STATUS_URLS (--sidecar-status-url)",
                        format!("{u:?} is not an http(s) URL"),
                    )
                })?;
            sidecars.push(url);
        }
        let rerun = match cli.rerun {
            RerunMode::Off => Rerun::Off,
            RerunMode::Local => {
                let key = "IMPORTER_API_BASE_URL (--importer-base-url)";
                let base = cli
                    .importer_base_url
                    .clone()
                    .ok_or_else(|| usage(key, "required with --rerun local"))?;
                reqwest::Url::parse(&base).map_err(|e| usage(key, format!("{base:?}: {e}")))?;
                Rerun::Local {
                    importer_bin: cli.importer_bin.clone(),
                    base_url: base,
                }
            }
            RerunMode::Kubernetes => Rerun::Kubernetes(kube_config(&cli)?),
        };
        Ok(Self {
            listen,
            database,
            registry_path: cli.registry.clone(),
            registry: Arc::new(registry),
            access,
            session_key,
            session_ttl: Duration::from_secs(cli.session_minutes * 60),
            secure_cookies: !cli.insecure_cookies,
            sidecars,
            rerun,
            ensure_indexes: cli.ensure_indexes,
            column_indexes: cli.column_indexes,
            trigram_indexes: cli.trigram_indexes,
        })
    }
}

fn kube_config(cli: &Cli) -> Result<KubeConfig, UsageError> {
    let key = "CONSOLE_KUBE_API_URL (--kube-api-url)";
    let api_url = match &cli.kube_api_url {
        Some(u) => u.trim_end_matches('/').to_string(),
        None => match (
            std::env::var("KUBERNETES_SERVICE_HOST"),
            std::env::var("KUBERNETES_SERVICE_PORT"),
        ) {
            (Ok(h), Ok(p)) if h.contains(':') => format!("https://[{h}]:{p}"),
            (Ok(h), Ok(p)) => format!("https://{h}:{p}"),
            _ => return Err(usage(
                key,
                "required with --rerun kubernetes outside a pod (KUBERNETES_SERVICE_HOST unset)",
            )),
        },
    };
    reqwest::Url::parse(&api_url).map_err(|e| usage(key, format!("{api_url:?}: {e}")))?;
    let namespace = match &cli.kube_namespace {
        Some(n) => n.trim().to_string(),
        None => std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
            .map(|s| s.trim().to_string())
            .map_err(|_| {
                usage(
                    "POD_NAMESPACE (--kube-namespace)",
                    "required with --rerun kubernetes outside a pod",
                )
            })?,
    };
    if namespace.is_empty() {
        return Err(usage("POD_NAMESPACE (--kube-namespace)", "is empty"));
    }
    read_secret(
        "CONSOLE_KUBE_TOKEN_FILE (--kube-token-file)",
        &cli.kube_token_file,
        1,
    )?;
    let ca_file = if api_url.starts_with("https://") {
        let key = "CONSOLE_KUBE_CA_FILE (--kube-ca-file)";
        let pem = std::fs::read(&cli.kube_ca_file)
            .map_err(|e| usage(key, format!("{}: {e}", cli.kube_ca_file.display())))?;
        reqwest::Certificate::from_pem(&pem)
            .map_err(|e| usage(key, format!("{}: {e}", cli.kube_ca_file.display())))?;
        Some(cli.kube_ca_file.clone())
    } else {
        None
    };
    Ok(KubeConfig {
        api_url,
        namespace,
        cronjob: cli.kube_cronjob.clone(),
        token_file: cli.kube_token_file.clone(),
        ca_file,
    })
}
