//! One file from start to finish: fetch or open, hash and decode, skip if already loaded, load,
//! and record the run in `import_runs` whatever happens.
//!
//! [`attempt`] returns what happened ([`Attempted`]) or why it failed ([`Failure`], with the
//! module and run known so far); [`run_job`] turns either into the [`Outcome`] and the run's
//! final record.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::db::{
    Db, LiveCounts, LoadError, Loaded, ParseJob, Progress, RunEnd, RunStart, RunStatus,
};
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
    /// The export had no data rows (a warning).
    Empty,
    Failed,
    /// A shutdown signal stopped it.
    Interrupted,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Loaded => "loaded",
            Self::Duplicate => "duplicate",
            Self::Missing => "missing",
            Self::Empty => "empty",
            Self::Failed => "failed",
            Self::Interrupted => "interrupted",
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

/// Why a job failed, before or during its load. Each message names the file.
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
    #[error("{file}: empty export (no data rows) and --on-empty fail")]
    Empty { file: String },
}

impl JobError {
    fn interrupted(&self) -> bool {
        matches!(self, Self::Load { source, .. } if source.is_interrupted())
    }
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
    /// Records longer than this are rejected, unless the type sets its own limit.
    pub max_record_bytes: usize,
    /// An export without data rows fails instead of warning.
    pub fail_on_empty: bool,
    /// How often a running load records its counts and heartbeat.
    pub progress_every: Duration,
    pub progress: Progress,
    /// Set on shutdown: jobs not started yet don't start, loads in flight stop and roll back.
    pub cancel: Arc<AtomicBool>,
    /// Runs started and not yet recorded as finished; what a cut-off shutdown marks interrupted.
    pub active: Mutex<BTreeSet<i64>>,
}

impl Context {
    fn activate(&self, id: i64) {
        self.active
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id);
    }

    fn deactivate(&self, id: i64) {
        self.active
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
    }

    /// The runs still in flight.
    pub fn active_runs(&self) -> Vec<i64> {
        self.active
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .copied()
            .collect()
    }
}

/// Runs blocking file work off the async threads, passing panics on.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|join| std::panic::resume_unwind(join.into_panic()))
}

/// Records a running load's counts and heartbeat every `every` until dropped.
struct Heartbeat(tokio::task::JoinHandle<()>);

impl Heartbeat {
    fn start(db: Db, id: i64, live: Arc<LiveCounts>, every: Duration) -> Self {
        Self(tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let (read, loaded) = live.get();
                if let Err(e) = db.progress(id, read, loaded).await {
                    tracing::warn!(run = id, cause = %e, "could not record progress");
                }
            }
        }))
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A file, named before anything is read.
struct FileRef {
    /// The path or URL, as recorded.
    source: String,
    /// The module the job asks for (or the file name implies).
    hint: String,
    date: Option<String>,
}

impl FileRef {
    fn of(job: &Job) -> Self {
        match &job.origin {
            Origin::Local { path, module } => Self {
                source: path.display().to_string(),
                hint: module.clone().unwrap_or_else(|| module_from_path(path)),
                date: None,
            },
            Origin::Remote {
                fetcher,
                module,
                date,
            } => Self {
                source: fetcher.url(module, date).to_string(),
                hint: module.clone(),
                date: Some(date.clone()),
            },
        }
    }
}

/// What an attempt came to.
#[derive(Debug)]
pub enum Attempted {
    Missing,
    Duplicate {
        run_id: i64,
        module: String,
        of: i64,
    },
    Loaded {
        run_id: i64,
        module: String,
        loaded: Loaded,
    },
    Empty {
        run_id: i64,
        module: String,
        loaded: Loaded,
    },
}

/// Why an attempt failed, with what was known by then.
#[derive(Debug)]
pub struct Failure {
    pub error: JobError,
    pub module: String,
    pub run_id: Option<i64>,
}

/// Runs one job. Every path that reaches a module records a row in `import_runs`.
pub async fn run_job(ctx: &Context, job: Job) -> Outcome {
    let started = Instant::now();
    let file = FileRef::of(&job);
    let mut outcome = Outcome {
        tenant: job.tenant.clone(),
        module: file.hint.clone(),
        source: file.source.clone(),
        status: Status::Interrupted,
        loaded: None,
        run_id: None,
        error: Some("interrupted before it started".into()),
        elapsed: Duration::ZERO,
    };
    if ctx.cancel.load(Ordering::Relaxed) {
        return outcome;
    }
    outcome = match attempt(ctx, &job, &file).await {
        Ok(done) => {
            let (status, module, loaded, run_id, error) = match done {
                Attempted::Missing => (Status::Missing, file.hint.clone(), None, None, None),
                Attempted::Duplicate { run_id, module, .. } => {
                    (Status::Duplicate, module, None, Some(run_id), None)
                }
                Attempted::Loaded {
                    run_id,
                    module,
                    loaded,
                } => (Status::Loaded, module, Some(loaded), Some(run_id), None),
                Attempted::Empty {
                    run_id,
                    module,
                    loaded,
                } => (
                    Status::Empty,
                    module,
                    Some(loaded),
                    Some(run_id),
                    Some("empty export (no data rows)".to_string()),
                ),
            };
            Outcome {
                status,
                module,
                loaded,
                run_id,
                error,
                ..outcome
            }
        }
        Err(failure) => record_failure(ctx, &job, &file, failure, outcome).await,
    };
    outcome.elapsed = started.elapsed();
    outcome
}

/// Records a failed (or interrupted) attempt, starting its run row if it had none yet.
async fn record_failure(
    ctx: &Context,
    job: &Job,
    file: &FileRef,
    failure: Failure,
    outcome: Outcome,
) -> Outcome {
    let Failure {
        error,
        module,
        run_id,
    } = failure;
    let message = error.to_string();
    let (status, run_status) = if error.interrupted() {
        tracing::warn!(tenant = %job.tenant, module = %module, file = %file.source, "load interrupted; rolled back");
        (Status::Interrupted, RunStatus::Interrupted)
    } else {
        tracing::error!(tenant = %job.tenant, module = %module, file = %file.source, cause = %message, "file failed");
        (Status::Failed, RunStatus::Failed)
    };
    let end = RunEnd {
        status: run_status,
        loaded: None,
        duplicate_of: None,
        error: Some(message.clone()),
    };
    let recorded = match run_id {
        Some(id) => ctx.db.finish_run(id, &end).await.map(|_| id),
        None => {
            let start = RunStart {
                tenant: job.tenant.clone(),
                module: module.clone(),
                source: file.source.clone(),
                export_date: file.date.clone(),
                content_hash: None,
            };
            match ctx.db.start_run(&start).await {
                Ok(id) => ctx.db.finish_run(id, &end).await.map(|_| id),
                Err(e) => Err(e),
            }
        }
    };
    if let Some(id) = run_id {
        ctx.deactivate(id);
    }
    let run_id = match recorded {
        Ok(id) => Some(id),
        Err(e) => {
            tracing::error!(tenant = %job.tenant, file = %file.source, cause = %e, "could not record the failed run");
            run_id
        }
    };
    Outcome {
        module,
        status,
        run_id,
        error: Some(message),
        ..outcome
    }
}

/// Fetches or opens the file, fingerprints it, skips an identical re-delivery, decodes it and
/// loads it, recording the run's start and end.
async fn attempt(ctx: &Context, job: &Job, file: &FileRef) -> Result<Attempted, Failure> {
    let fail = |module: &str, run_id: Option<i64>| {
        let module = module.to_string();
        move |error: JobError| Failure {
            error,
            module,
            run_id,
        }
    };
    let source = file.source.as_str();
    let load_err = |e: LoadError| JobError::Load {
        file: source.to_string(),
        source: e,
    };
    let source_err = |e: SourceError| JobError::Source {
        file: source.to_string(),
        source: e,
    };
    let hint = file.hint.as_str();
    let opened = match &job.origin {
        Origin::Local { path, .. } => std::fs::File::open(path).map_err(|e| JobError::Open {
            file: source.to_string(),
            source: e,
        }),
        Origin::Remote {
            fetcher,
            module,
            date,
        } => match fetcher
            .fetch(&job.tenant, module, date, &ctx.temp_dir)
            .await
        {
            Ok(Some(f)) => Ok(f),
            Ok(None) => {
                tracing::info!(tenant = %job.tenant, module = %module, date = %date, "no export");
                return Ok(Attempted::Missing);
            }
            Err(e) => Err(e.into()),
        },
    }
    .map_err(fail(hint, None))?;
    // Fingerprint first: an identical re-delivery stops here, before any decoding.
    let module_hint = hint.to_string();
    let (opened, kind, hash) = blocking(move || {
        let mut f = opened;
        let kind = Kind::sniff(&mut f)?;
        let hash = fingerprint(&mut f, kind, &module_hint)?;
        Ok::<_, SourceError>((f, kind, hash))
    })
    .await
    .map_err(|e| fail(hint, None)(source_err(e)))?;
    // Every run this attempt records carries the same tenant, file, date and hash.
    let run_start = |module: &str| RunStart {
        tenant: job.tenant.clone(),
        module: module.to_string(),
        source: source.to_string(),
        export_date: file.date.clone(),
        content_hash: Some(hash.clone()),
    };
    if !ctx.force {
        let found = ctx
            .db
            .find_duplicate(&job.tenant, &hash)
            .await
            .map_err(|e| fail(hint, None)(load_err(e.into())))?;
        if let Some((of, module)) = found {
            let run_id = ctx
                .db
                .start_run(&run_start(&module))
                .await
                .map_err(|e| fail(&module, None)(load_err(e.into())))?;
            let end = RunEnd {
                status: RunStatus::Duplicate,
                loaded: None,
                duplicate_of: Some(of),
                error: None,
            };
            ctx.db
                .finish_run(run_id, &end)
                .await
                .map_err(|e| fail(&module, Some(run_id))(load_err(e.into())))?;
            tracing::info!(tenant = %job.tenant, module = %module, file = %source, duplicate_of = of, "identical to an earlier run; skipped");
            return Ok(Attempted::Duplicate { run_id, module, of });
        }
    }
    let temp_dir = ctx.temp_dir.clone();
    let prepared = blocking(move || prepare(opened, kind, &temp_dir))
        .await
        .map_err(|e| fail(hint, None)(source_err(e)))?;
    let module = match &prepared.module {
        Some(m) if matches!(job.origin, Origin::Remote { .. }) && m != hint => {
            return Err(fail(m, None)(JobError::WrongModule {
                file: source.to_string(),
                got: m.clone(),
                wanted: hint.to_string(),
            }));
        }
        Some(m) => m.clone(),
        None => hint.to_string(),
    };
    let def = ctx.registry.get(&module).ok_or_else(|| {
        fail(&module, None)(JobError::UnknownModule {
            file: source.to_string(),
            module: module.clone(),
        })
    })?;
    let run_id = ctx
        .db
        .start_run(&run_start(&module))
        .await
        .map_err(|e| fail(&module, None)(load_err(e.into())))?;
    ctx.activate(run_id);
    let failed = |e: JobError| fail(&module, Some(run_id))(e);
    let live = Arc::new(LiveCounts::default());
    let parse = ParseJob {
        def: Arc::new(def.clone()),
        tenant: job.tenant.clone(),
        source: Arc::new(prepared),
        progress: ctx.progress.clone(),
        live: live.clone(),
        max_record: def.max_record_bytes.unwrap_or(ctx.max_record_bytes),
    };
    let heartbeat = ctx
        .db
        .live_progress()
        .then(|| Heartbeat::start(ctx.db.clone(), run_id, live, ctx.progress_every));
    let loaded = ctx.db.load(run_id, source, &parse).await;
    drop(heartbeat);
    let loaded = loaded.map_err(|e| failed(load_err(e)))?;
    let empty = loaded.counts.read == 0;
    if empty && ctx.fail_on_empty {
        return Err(failed(JobError::Empty {
            file: source.to_string(),
        }));
    }
    let end = RunEnd {
        status: if empty {
            RunStatus::Empty
        } else {
            RunStatus::Succeeded
        },
        loaded: Some(loaded),
        duplicate_of: None,
        error: empty.then(|| "empty export (no data rows)".to_string()),
    };
    ctx.db
        .finish_run(run_id, &end)
        .await
        .map_err(|e| failed(load_err(e.into())))?;
    ctx.deactivate(run_id);
    if empty {
        tracing::warn!(tenant = %job.tenant, module = %module, file = %source, "empty export (no data rows)");
        return Ok(Attempted::Empty {
            run_id,
            module,
            loaded,
        });
    }
    tracing::info!(
        tenant = %job.tenant, module = %module, file = %source,
        read = loaded.counts.read, loaded = loaded.counts.loaded, rejected = loaded.counts.rejected,
        written = loaded.written, path = loaded.path.as_str(), "file loaded"
    );
    Ok(Attempted::Loaded {
        run_id,
        module,
        loaded,
    })
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
