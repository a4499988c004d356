-- Live progress and crash-safe bookkeeping: the owner of a running run and its heartbeat
-- (which doubles as its lease), and the statuses empty, interrupted and abandoned.
ALTER TABLE import_runs
    ADD COLUMN heartbeat_at timestamptz,
    ADD COLUMN owner        text;

ALTER TABLE import_runs DROP CONSTRAINT import_runs_status_check;
ALTER TABLE import_runs ADD CONSTRAINT import_runs_status_check CHECK (status IN
    ('running', 'succeeded', 'failed', 'duplicate', 'empty', 'interrupted', 'abandoned'));

-- Newest runs first, and the sweep for running runs whose owner is gone.
CREATE INDEX import_runs_started ON import_runs (started_at, id);
CREATE INDEX import_runs_running ON import_runs (status) WHERE status = 'running';
