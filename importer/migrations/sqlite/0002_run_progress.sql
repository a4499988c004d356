-- Live progress and crash-safe bookkeeping: the owner of a running run and its heartbeat
-- (which doubles as its lease), and the statuses empty, interrupted and abandoned.
-- SQLite can't change a CHECK constraint in place, so the table is rebuilt (the importer
-- switches foreign keys off around migrations, so import_rejects keeps its rows).
CREATE TABLE import_runs_new (
    id            INTEGER PRIMARY KEY,
    tenant        text        NOT NULL,
    module        text        NOT NULL,
    source        text        NOT NULL,
    export_date   text,
    started_at    text NOT NULL,
    finished_at   text,
    status        text        NOT NULL CHECK (status IN
        ('running', 'succeeded', 'failed', 'duplicate', 'empty', 'interrupted', 'abandoned')),
    rows_read     bigint      NOT NULL DEFAULT 0,
    rows_loaded   bigint      NOT NULL DEFAULT 0,
    rows_rejected bigint      NOT NULL DEFAULT 0,
    rows_written  bigint      NOT NULL DEFAULT 0,
    load_path     text,
    content_hash  text,
    duplicate_of  INTEGER REFERENCES import_runs (id),
    error         text,
    heartbeat_at  text,
    owner         text
);

INSERT INTO import_runs_new (id, tenant, module, source, export_date, started_at, finished_at, status,
    rows_read, rows_loaded, rows_rejected, rows_written, load_path, content_hash, duplicate_of, error)
SELECT id, tenant, module, source, export_date, started_at, finished_at, status,
    rows_read, rows_loaded, rows_rejected, rows_written, load_path, content_hash, duplicate_of, error
FROM import_runs;

DROP TABLE import_runs;
ALTER TABLE import_runs_new RENAME TO import_runs;

CREATE INDEX import_runs_content ON import_runs (tenant, content_hash) WHERE status = 'succeeded';
CREATE INDEX import_runs_started ON import_runs (started_at, id);
CREATE INDEX import_runs_running ON import_runs (status) WHERE status = 'running';
