//! One file from start to finish: fetch or open, hash and decode, skip if already loaded, load,
//! and record the run in `import_runs` whatever happens.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::db::{Db, LoadError, Loaded, Progress, RunEnd, RunStart, RunStatus};
use crate::fetch::{FetchError, Fetcher};
use crate::registry::Registry;
use crate::source::{fingerprint, prepare, Kind, SourceError};

/// Where a file comes from.
#[derive(Debug, Clone)]
pub enum Origin {
    /// A local payload, zip or CSV; `module` overrides the file-name default for zips and CSVs.
    Local {
        path: PathBuf,
        module: Option<String>,
    },
    /// An export to fetch for a date.
    Remote {
        fetcher: Fetcher,
        module: String,
        date: String,
    },
}

/// One unit of work.
#[derive(Debug, Clone)]
pub struct Job {
    pub tenant: String,
    pub origin: Origin,
}

/// How a file ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Loaded,
    Duplicate,
    /// The API has no export of this module for the date.
    Missing,
    Failed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Loaded => "loaded",
            Self::Duplicate => "duplicate",
            Self::Missing => "missing",
            Self::Failed => "failed",
        }
    }
}

/// The outcome of one job, for the summary.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub tenant: String,
    pub module: String,
    pub source: String,
    pub status: Status,
    pub loaded: Option<Loaded>,
    pub run_id: Option<i64>,
    pub error: Option<String>,
    pub elapsed: Duration,
}

/// Why a job failed, before or during its load.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("{0}")]
    Fetch(#[from] FetchError),
    #[error("{file}: {source}")]
    Open {
        file: String,
        source: std::io::Error,
    },
    #[error("{file}: {source}")]
    Source { file: String, source: SourceError },
    #[error("{file}: unknown module {module:?} (not in the registry)")]
    UnknownModule { file: String, module: String },
    #[error("{file}: payload module {got:?} but {wanted:?} was requested")]
    WrongModule {
        file: String,
        got: String,
        wanted: String,
    },
    #[error("{file}: {source}")]
    Load { file: String, source: LoadError },
}

/// The module a local file defaults to: its name up to the first '.'.
pub fn module_from_path(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default()
        .split('.')
        .next()
        .unwrap_or_default()
        .to_string()
}

/// What a job shares with the others.
pub struct Context {
    pub db: Db,
    pub registry: Arc<Registry>,
    pub temp_dir: PathBuf,
    pub force: bool,
    pub progress: Progress,
    /// Set on shutdown: jobs not started yet don't start, loads in flight stop and roll back.
    pub cancel: Arc<AtomicBool>,
}

/// Runs blocking file work off the async threads, passing panics on.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|join| std::panic::resume_unwind(join.into_panic()))
}

/// Runs one job. Every path that reaches a module records a row in `import_runs`.
pub async fn run_job(ctx: &Context, job: Job) -> Outcome {
    let started = Instant::now();
    let (source, hint, date) = match &job.origin {
        Origin::Local { path, module } => (
            path.display().to_string(),
            module.clone().unwrap_or_else(|| module_from_path(path)),
            None,
        ),
        Origin::Remote {
            fetcher,
            module,
            date,
        } => (
            fetcher.url(module, date).to_string(),
            module.clone(),
            Some(date.clone()),
        ),
    };
    let mut outcome = Outcome {
        tenant: job.tenant.clone(),
        module: hint.clone(),
        source: source.clone(),
        status: Status::Failed,
        loaded: None,
        run_id: None,
        error: None,
        elapsed: Duration::ZERO,
    };
    if ctx.cancel.load(Ordering::Relaxed) {
        outcome.error = Some("interrupted before it started".into());
        return outcome;
    }
    let result = attempt(ctx, &job, &source, &hint, date.clone(), &mut outcome).await;
    if let Err(e) = result {
        let message = e.to_string();
        tracing::error!(tenant = %job.tenant, module = %outcome.module, file = %source, cause = %message, "file failed");
        outcome.status = Status::Failed;
        outcome.error = Some(message.clone());
        let end = RunEnd {
            status: RunStatus::Failed,
            loaded: None,
            duplicate_of: None,
            error: Some(message),
        };
        let recorded = match outcome.run_id {
            Some(id) => ctx.db.finish_run(id, &end).await.map(|_| id),
            None => {
                let start = RunStart {
                    tenant: job.tenant.clone(),
                    module: outcome.module.clone(),
                    source: source.clone(),
                    export_date: date,
                    content_hash: None,
                };
                match ctx.db.start_run(&start).await {
                    Ok(id) => ctx.db.finish_run(id, &end).await.map(|_| id),
                    Err(e) => Err(e),
                }
            }
        };
        match recorded {
            Ok(id) => outcome.run_id = Some(id),
            Err(e) => {
                tracing::error!(tenant = %job.tenant, file = %source, cause = %e, "could not record the failed run")
            }
        }
    }
    outcome.elapsed = started.elapsed();
    outcome
}

async fn attempt(
    ctx: &Context,
    job: &Job,
    source: &str,
    hint: &str,
    date: Option<String>,
    outcome: &mut Outcome,
) -> Result<(), JobError> {
    let file = match &job.origin {
        Origin::Local { path, .. } => std::fs::File::open(path).map_err(|e| JobError::Open {
            file: source.to_string(),
            source: e,
        })?,
        Origin::Remote {
            fetcher,
            module,
            date,
        } => match fetcher
            .fetch(&job.tenant, module, date, &ctx.temp_dir)
            .await?
        {
            Some(f) => f,
            None => {
                tracing::info!(tenant = %job.tenant, module = %module, date = %date, "no export");
                outcome.status = Status::Missing;
                return Ok(());
            }
        },
    };
    let source_err = |e: SourceError| JobError::Source {
        file: source.to_string(),
        source: e,
    };
    let load_err = |e: LoadError| JobError::Load {
        file: source.to_string(),
        source: e,
    };
    // Fingerprint first: an identical re-delivery stops here, before any decoding.
    let module_hint = hint.to_string();
    let (file, kind, hash) = blocking(move || {
        let mut file = file;
        let kind = Kind::sniff(&mut file)?;
        let hash = fingerprint(&mut file, kind, &module_hint)?;
        Ok::<_, SourceError>((file, kind, hash))
    })
    .await
    .map_err(source_err)?;
    // Every run this attempt records carries the same tenant, file, date and hash.
    let run_start = |module: String| RunStart {
        tenant: job.tenant.clone(),
        module,
        source: source.to_string(),
        export_date: date.clone(),
        content_hash: Some(hash.clone()),
    };
    if !ctx.force {
        if let Some((of, module)) = ctx
            .db
            .find_duplicate(&job.tenant, &hash)
            .await
            .map_err(|e| load_err(e.into()))?
        {
            outcome.module = module.clone();
            let id = ctx
                .db
                .start_run(&run_start(module.clone()))
                .await
                .map_err(|e| load_err(e.into()))?;
            outcome.run_id = Some(id);
            let end = RunEnd {
                status: RunStatus::Duplicate,
                loaded: None,
                duplicate_of: Some(of),
                error: None,
            };
            ctx.db
                .finish_run(id, &end)
                .await
                .map_err(|e| load_err(e.into()))?;
            tracing::info!(tenant = %job.tenant, module = %module, file = %source, duplicate_of = of, "identical to an earlier run; skipped");
            outcome.status = Status::Duplicate;
            return Ok(());
        }
    }
    let temp_dir = ctx.temp_dir.clone();
    let prepared = blocking(move || prepare(file, kind, &temp_dir))
        .await
        .map_err(source_err)?;
    let module = match &prepared.module {
        Some(m) => {
            if matches!(job.origin, Origin::Remote { .. }) && m != hint {
                outcome.module = m.clone();
                return Err(JobError::WrongModule {
                    file: source.to_string(),
                    got: m.clone(),
                    wanted: hint.to_string(),
                });
            }
            m.clone()
        }
        None => hint.to_string(),
    };
    outcome.module = module.clone();
    let def = ctx
        .registry
        .get(&module)
        .ok_or_else(|| JobError::UnknownModule {
            file: source.to_string(),
            module: module.clone(),
        })?;
    let id = ctx
        .db
        .start_run(&run_start(module.clone()))
        .await
        .map_err(|e| load_err(e.into()))?;
    outcome.run_id = Some(id);
    let loaded = ctx
        .db
        .load(
            id,
            Arc::new(def.clone()),
            &job.tenant,
            source,
            Arc::new(prepared),
            ctx.progress.clone(),
        )
        .await
        .map_err(load_err)?;
    let end = RunEnd {
        status: RunStatus::Succeeded,
        loaded: Some(loaded),
        duplicate_of: None,
        error: None,
    };
    ctx.db
        .finish_run(id, &end)
        .await
        .map_err(|e| load_err(e.into()))?;
    tracing::info!(
        tenant = %job.tenant, module = %module, file = %source,
        read = loaded.counts.read, loaded = loaded.counts.loaded, rejected = loaded.counts.rejected,
        written = loaded.written, path = loaded.path.as_str(), "file loaded"
    );
    outcome.status = Status::Loaded;
    outcome.loaded = Some(loaded);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Local files default to their name up to the first dot.
    #[test]
    fn module_names() {
        assert_eq!(module_from_path(Path::new("/x/orders.csv.zip")), "orders");
        assert_eq!(module_from_path(Path::new("invoices")), "invoices");
    }
}
