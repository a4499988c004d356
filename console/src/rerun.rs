//! Re-running an import (same tenant, type and export date). The importer's content hash keeps
//! it idempotent: unchanged content finishes as `duplicate` without touching the data.
//!
//! - **local**: spawns `importer run --tenant T --type M --date D --base-url URL` with the
//!   console's own `DATABASE_URL` and `IMPORTER_REGISTRY`; one at a time per tenant/type/date.
//! - **kubernetes**: reads the importer CronJob and creates a Job from its `jobTemplate`, as
//!   `kubectl create job --from=cronjob/importer` does, with the container's arguments replaced
//!   by that one tenant, type and date. The service account may only `get` that CronJob and
//!   `create` Jobs (deploy/k8s/console/rerun-rbac).

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use importer::db::DatabaseUrl;
use serde_json::{json, Value};

use crate::config::{KubeConfig, Rerun};
use crate::runs::Run;

#[derive(Debug, thiserror::Error)]
pub enum RerunError {
    #[error("re-runs are turned off (CONSOLE_RERUN=off)")]
    Off,
    #[error("run {0} has no export date (a local file load); re-run it with `importer load`")]
    NoDate(i64),
    #[error("a re-run of {0} is already in progress")]
    Busy(String),
    #[error("could not start {bin}: {source}")]
    Spawn {
        bin: PathBuf,
        source: std::io::Error,
    },
    #[error("kubernetes token {path}: {source}")]
    Token {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("kubernetes API: {0}")]
    Http(#[from] reqwest::Error),
    #[error("kubernetes API {what}: HTTP {status}: {message}")]
    Api {
        what: String,
        status: u16,
        message: String,
    },
    #[error("cronjob {0} has no jobTemplate with containers")]
    Template(String),
}

/// What a started re-run is.
#[derive(Debug, Clone)]
pub enum Started {
    Process { pid: Option<u32> },
    Job { name: String },
}

/// Starts re-runs as configured.
#[derive(Clone)]
pub struct Runner {
    mode: Rerun,
    database_url: String,
    registry: PathBuf,
    in_flight: Arc<Mutex<HashSet<String>>>,
    kube: Option<reqwest::Client>,
}

fn database_url(url: &DatabaseUrl) -> String {
    match url {
        DatabaseUrl::Postgres(u) => u.clone(),
        DatabaseUrl::Sqlite(p) => format!("sqlite://{}", p.display()),
    }
}

impl Runner {
    pub fn new(mode: Rerun, database: &DatabaseUrl, registry: PathBuf) -> Result<Self, RerunError> {
        let kube = match &mode {
            Rerun::Kubernetes(k) => {
                let mut b = reqwest::Client::builder().timeout(Duration::from_secs(10));
                if let Some(ca) = &k.ca_file {
                    let pem = std::fs::read(ca).map_err(|source| RerunError::Token {
                        path: ca.clone(),
                        source,
                    })?;
                    b = b
                        .tls_built_in_root_certs(false)
                        .add_root_certificate(reqwest::Certificate::from_pem(&pem)?);
                }
                Some(b.build()?)
            }
            _ => None,
        };
        Ok(Self {
            mode,
            database_url: database_url(database),
            registry,
            in_flight: Arc::default(),
            kube,
        })
    }

    pub fn enabled(&self) -> bool {
        !matches!(self.mode, Rerun::Off)
    }

    /// Starts a re-run of `run` on behalf of `user`.
    pub async fn start(&self, run: &Run, user: &str) -> Result<Started, RerunError> {
        let date = run.export_date.clone().ok_or(RerunError::NoDate(run.id))?;
        match &self.mode {
            Rerun::Off => Err(RerunError::Off),
            Rerun::Local {
                importer_bin,
                base_url,
            } => self.local(importer_bin, base_url, run, &date),
            Rerun::Kubernetes(k) => {
                let client = self.kube.as_ref().ok_or(RerunError::Off)?;
                create_job(client, k, run, &date, user)
                    .await
                    .map(|name| Started::Job { name })
            }
        }
    }

    fn local(
        &self,
        bin: &PathBuf,
        base_url: &str,
        run: &Run,
        date: &str,
    ) -> Result<Started, RerunError> {
        let key = format!("{}/{}/{}", run.tenant, run.module, date);
        {
            let mut set = self.in_flight.lock().map_err(|_| RerunError::Off)?;
            if !set.insert(key.clone()) {
                return Err(RerunError::Busy(key));
            }
        }
        let spawned = tokio::process::Command::new(bin)
            .args(["run", "--tenant", &run.tenant, "--type", &run.module])
            .args(["--date", date, "--base-url", base_url, "--jobs", "1"])
            .env("DATABASE_URL", &self.database_url)
            .env("IMPORTER_REGISTRY", &self.registry)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let mut child = match spawned {
            Ok(c) => c,
            Err(source) => {
                if let Ok(mut set) = self.in_flight.lock() {
                    set.remove(&key);
                }
                return Err(RerunError::Spawn {
                    bin: bin.clone(),
                    source,
                });
            }
        };
        let pid = child.id();
        let in_flight = self.in_flight.clone();
        tokio::spawn(async move {
            let status = child.wait().await;
            if let Ok(mut set) = in_flight.lock() {
                set.remove(&key);
            }
            match status {
                Ok(s) if s.success() => tracing::info!(rerun = %key, "re-run finished"),
                Ok(s) => tracing::warn!(rerun = %key, status = %s, "re-run failed"),
                Err(e) => tracing::warn!(rerun = %key, cause = %e, "re-run: wait failed"),
            }
        });
        Ok(Started::Process { pid })
    }
}

async fn api_error(what: String, resp: reqwest::Response) -> RerunError {
    let status = resp.status().as_u16();
    let message = resp
        .json::<Value>()
        .await
        .ok()
        .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_string))
        .unwrap_or_default()
        .chars()
        .take(300)
        .collect();
    RerunError::Api {
        what,
        status,
        message,
    }
}

/// The Job a re-run creates, from the CronJob object.
pub fn job_from_cronjob(
    cronjob: &Value,
    run: &Run,
    date: &str,
    user: &str,
) -> Result<Value, RerunError> {
    let name = cronjob["metadata"]["name"].as_str().unwrap_or("importer");
    let mut spec = cronjob["spec"]["jobTemplate"]["spec"].clone();
    let containers = spec["template"]["spec"]["containers"]
        .as_array_mut()
        .filter(|c| !c.is_empty())
        .ok_or_else(|| RerunError::Template(name.to_string()))?;
    let idx = containers
        .iter()
        .position(|c| c["name"] == "importer")
        .unwrap_or(0);
    containers[idx]["args"] =
        json!(["run", "--tenant", run.tenant, "--type", run.module, "--date", date]);
    let mut labels = cronjob["spec"]["jobTemplate"]["metadata"]["labels"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    labels.insert("app.kubernetes.io/managed-by".into(), json!("console"));
    Ok(json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "generateName": format!("{name}-rerun-"),
            "namespace": cronjob["metadata"]["namespace"],
            "labels": labels,
            "annotations": {
                "cronjob.kubernetes.io/instantiate": "manual",
                "console.auth-proxy/rerun-of": run.id.to_string(),
                "console.auth-proxy/requested-by": user,
            },
            "ownerReferences": [{
                "apiVersion": "batch/v1",
                "kind": "CronJob",
                "name": name,
                "uid": cronjob["metadata"]["uid"],
                "controller": true,
            }],
        },
        "spec": spec,
    }))
}

async fn create_job(
    client: &reqwest::Client,
    k: &KubeConfig,
    run: &Run,
    date: &str,
    user: &str,
) -> Result<String, RerunError> {
    // Read at every call: projected service account tokens rotate.
    let token = std::fs::read_to_string(&k.token_file).map_err(|source| RerunError::Token {
        path: k.token_file.clone(),
        source,
    })?;
    let token = token.trim();
    let base = format!("{}/apis/batch/v1/namespaces/{}", k.api_url, k.namespace);
    let resp = client
        .get(format!("{base}/cronjobs/{}", k.cronjob))
        .bearer_auth(token)
        .send()
        .await?;
    if !resp.status().is_success() {
        return Err(api_error(format!("get cronjob {}", k.cronjob), resp).await);
    }
    let cronjob: Value = resp.json().await?;
    let job = job_from_cronjob(&cronjob, run, date, user)?;
    let resp = client
        .post(format!("{base}/jobs"))
        .bearer_auth(token)
        .json(&job)
        .send()
        .await?;
    if !resp.status().is_success() {
        return Err(api_error("create job".into(), resp).await);
    }
    let created: Value = resp.json().await?;
    Ok(created["metadata"]["name"]
        .as_str()
        .unwrap_or("?")
        .to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run() -> Run {
        Run {
            id: 7,
            tenant: "acme".into(),
            module: "orders".into(),
            source: String::new(),
            export_date: Some("2026-01-15".into()),
            started_at: String::new(),
            finished_at: None,
            status: "failed".into(),
            rows_read: 0,
            rows_loaded: 0,
            rows_rejected: 0,
            rows_written: 0,
            load_path: None,
            content_hash: None,
            duplicate_of: None,
            error: None,
            duration_s: 0.0,
            heartbeat_at: None,
            rate: 0.0,
        }
    }

    /// The Job is the CronJob's template with only the importer's arguments replaced, owned by
    /// the CronJob and marked as a manual run by the console.
    #[test]
    fn job_from_the_shipped_cronjob() {
        let text = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../deploy/k8s/base/importer-cronjob.yaml"),
        )
        .unwrap();
        let mut cronjob: Value = serde_saphyr::from_str(&text).unwrap();
        cronjob["metadata"]["namespace"] = json!("auth-proxy");
        cronjob["metadata"]["uid"] = json!("u-1");
        let job = job_from_cronjob(&cronjob, &run(), "2026-01-15", "ann").unwrap();
        let c = &job["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(
            c["args"],
            json!([
                "run",
                "--tenant",
                "acme",
                "--type",
                "orders",
                "--date",
                "2026-01-15"
            ])
        );
        assert_eq!(
            c["image"],
            cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["image"]
        );
        assert_eq!(
            c["env"],
            cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["env"]
        );
        assert_eq!(job["metadata"]["generateName"], "importer-rerun-");
        assert_eq!(job["metadata"]["namespace"], "auth-proxy");
        assert_eq!(job["metadata"]["ownerReferences"][0]["uid"], "u-1");
        assert_eq!(
            job["metadata"]["annotations"]["console.auth-proxy/rerun-of"],
            "7"
        );
        assert_eq!(
            job["metadata"]["labels"]["app.kubernetes.io/name"],
            "importer"
        );
        assert_eq!(job["spec"]["activeDeadlineSeconds"], 7200);
    }
}
