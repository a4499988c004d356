-- Every file the importer handles gets one row, whatever its outcome.
CREATE TABLE import_runs (
    id            bigserial PRIMARY KEY,
    tenant        text        NOT NULL,
    module        text        NOT NULL,
    source        text        NOT NULL,
    export_date   date,
    started_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz,
    status        text        NOT NULL CHECK (status IN ('running', 'succeeded', 'failed', 'duplicate')),
    rows_read     bigint      NOT NULL DEFAULT 0,
    rows_loaded   bigint      NOT NULL DEFAULT 0,
    rows_rejected bigint      NOT NULL DEFAULT 0,
    rows_written  bigint      NOT NULL DEFAULT 0,
    load_path     text,
    content_hash  text,
    duplicate_of  bigint REFERENCES import_runs (id),
    error         text
);

-- Duplicate detection: the same content for the same tenant, already loaded.
CREATE INDEX import_runs_content ON import_runs (tenant, content_hash) WHERE status = 'succeeded';

-- Rows refused by validation, with where they came from and why.
CREATE TABLE import_rejects (
    id          bigserial PRIMARY KEY,
    run_id      bigint NOT NULL REFERENCES import_runs (id) ON DELETE CASCADE,
    file        text   NOT NULL,
    line        bigint NOT NULL,
    column_name text,
    raw_record  text   NOT NULL,
    reason      text   NOT NULL
);

CREATE INDEX import_rejects_run ON import_rejects (run_id);
