//! The one load algorithm, over the per-database parts of [`LoadTx`].

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{DbError, LiveCounts, LoadError, LoadPath, Loaded, Progress};
use crate::parse::{parse_csv, Counts, RowSink};
use crate::registry::TypeDef;
use crate::reject::RejectLog;
use crate::source::Prepared;

/// One file's parse, as each bulk write runs it (twice when a direct load falls back to
/// staging). Cheap to clone.
#[derive(Clone)]
pub struct ParseJob {
    pub def: Arc<TypeDef>,
    pub tenant: String,
    pub source: Arc<Prepared>,
    /// Rows for the progress bar; `false` stops the load.
    pub progress: Progress,
    /// Counts the progress recorder reads.
    pub live: Arc<LiveCounts>,
    /// Records longer than this are rejected.
    pub max_record: usize,
}

impl ParseJob {
    /// Parses the file into `sink` (in a blocking thread), turning the sink's own error into a
    /// load error with `sink_error`.
    pub fn parse<S: RowSink>(
        &self,
        sink: &mut S,
        sink_error: impl FnOnce(S::Error) -> LoadError,
    ) -> Result<(Counts, RejectLog), LoadError> {
        let mut rejects = RejectLog::new().map_err(LoadError::Spill)?;
        let mut reported = 0;
        let live = &self.live;
        let mut progress = |c: &Counts| {
            live.read.store(c.read, Ordering::Relaxed);
            live.loaded.store(c.loaded, Ordering::Relaxed);
            let go = (self.progress)(c.read - reported);
            reported = c.read;
            go
        };
        let counts = self
            .source
            .with_csv(|r| {
                parse_csv(
                    r,
                    &self.def,
                    self.max_record,
                    sink,
                    &mut rejects,
                    &mut progress,
                )
            })?
            .map_err(|e| LoadError::from_parse(e, sink_error))?;
        Ok((counts, rejects))
    }
}

/// Where a bulk write goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The target table itself.
    Direct,
    /// The staging table, each row with its line number.
    Staging,
}

/// The per-database parts of a load, inside one open transaction that holds the slice's lock.
/// Dropping it without [`LoadTx::commit`] rolls everything back.
pub(crate) trait LoadTx {
    /// Whether the tenant already has rows in the table.
    async fn occupied(&mut self) -> Result<bool, DbError>;
    async fn savepoint(&mut self) -> Result<(), DbError>;
    async fn release_savepoint(&mut self) -> Result<(), DbError>;
    async fn rollback_to_savepoint(&mut self) -> Result<(), DbError>;
    /// Creates the (empty) staging table.
    async fn create_staging(&mut self) -> Result<(), DbError>;
    /// Streams the file's accepted rows into `target`; rejects are collected, not written.
    async fn bulk_write(
        &mut self,
        target: Target,
        job: &ParseJob,
    ) -> Result<(Counts, RejectLog), LoadError>;
    /// Upserts the staging table into the target, keeping the last line of each key when
    /// `dedupe`; returns the rows inserted or changed.
    async fn upsert(&mut self, dedupe: bool) -> Result<u64, DbError>;
    async fn insert_rejects(
        &mut self,
        run_id: i64,
        file: &str,
        rejects: RejectLog,
    ) -> Result<(), LoadError>;
    async fn commit(self) -> Result<(), DbError>;
    /// The error a repeated natural key raises in a direct bulk write.
    fn is_key_conflict(e: &DbError) -> bool;
}

/// Loads one file: straight into an empty slice, through staging otherwise or when the file
/// repeats a key (the last occurrence wins); then the rejects; then one commit.
pub(crate) async fn load<T: LoadTx>(
    mut tx: T,
    run_id: i64,
    file: &str,
    job: &ParseJob,
) -> Result<Loaded, LoadError> {
    let mut direct = None;
    if !tx.occupied().await? {
        tx.savepoint().await?;
        match tx.bulk_write(Target::Direct, job).await {
            Ok(done) => {
                tx.release_savepoint().await?;
                direct = Some(done);
            }
            Err(LoadError::Db(e)) if T::is_key_conflict(&e) => {
                tracing::info!(table = %job.def.table.as_str(), tenant = %job.tenant,
                    "file repeats a natural key; loading through staging");
                tx.rollback_to_savepoint().await?;
            }
            Err(e) => return Err(e),
        }
    }
    let (counts, rejects, written, path) = match direct {
        Some((counts, rejects)) => (counts, rejects, counts.loaded, LoadPath::Direct),
        None => {
            tx.create_staging().await?;
            let (counts, rejects) = tx.bulk_write(Target::Staging, job).await?;
            let written = tx.upsert(!counts.keys_ascending).await?;
            (counts, rejects, written, LoadPath::Staged)
        }
    };
    tx.insert_rejects(run_id, file, rejects).await?;
    tx.commit().await?;
    Ok(Loaded {
        counts,
        written,
        path,
    })
}
