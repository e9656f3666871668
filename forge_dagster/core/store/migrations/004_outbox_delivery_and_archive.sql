-- Side effects and the archive: job stamps written by the transition itself, and cold storage for
-- collected batches and finished jobs that stays queryable.

-- A job that reaches a terminal state with a callback_url gets its `job.stamp` outbox row in the same
-- transaction as the transition, whichever path moved it (batch settling, a realtime finish or
-- failure, the lease sweep, an intake refusal): no code path can forget it, and a transition that
-- rolls back takes its stamp with it. The payload is the job's result as it was at that moment.
CREATE FUNCTION stamp_terminal_job() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO outbox (topic, key, payload)
    VALUES ('job.stamp', 'stamp:job:' || NEW.id, jsonb_build_object(
        'job_id', NEW.id, 'source', NEW.source, 'external_id', NEW.external_id,
        'processor', NEW.processor, 'processor_version', NEW.processor_version, 'mode', NEW.mode,
        'state', NEW.state, 'attempt', NEW.attempt, 'reason', NEW.reason,
        'output', CASE WHEN NEW.state = 'succeeded' THEN NEW.output END,
        'errors', CASE WHEN NEW.state <> 'succeeded' THEN NEW.errors END,
        'usage', NEW.usage, 'cost_usd', NEW.cost_usd, 'finished_at', NEW.finished_at,
        'callback_url', NEW.callback_url));
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_stamp_terminal
AFTER UPDATE OF state ON jobs
FOR EACH ROW
WHEN (NEW.callback_url IS NOT NULL
      AND NEW.state IN ('succeeded', 'invalid', 'failed', 'dead')
      AND OLD.state NOT IN ('succeeded', 'invalid', 'failed', 'dead'))
EXECUTE FUNCTION stamp_terminal_job();

-- Archive tables keep the whole row as jsonb beside a few indexed columns: a column added to the hot
-- table later needs no change here, and `jsonb_populate_record` gives the row back in today's shape.
-- An archived batch's row says state 'archived' (collected -> archived); its jobs keep their states.
CREATE TABLE batches_archive (
    id            bigint PRIMARY KEY,
    provider      text NOT NULL,
    created_at    timestamptz NOT NULL,
    collected_at  timestamptz,
    archived_at   timestamptz NOT NULL DEFAULT now(),
    row           jsonb NOT NULL
);
CREATE INDEX batches_archive_archived_idx ON batches_archive (archived_at);

CREATE TABLE jobs_archive (
    id           bigint PRIMARY KEY,
    batch_id     bigint,
    source       text NOT NULL,
    external_id  text,
    state        text NOT NULL,
    finished_at  timestamptz,
    archived_at  timestamptz NOT NULL DEFAULT now(),
    row          jsonb NOT NULL
);
CREATE UNIQUE INDEX jobs_archive_source_external_idx ON jobs_archive (source, external_id);
CREATE INDEX jobs_archive_batch_idx ON jobs_archive (batch_id) WHERE batch_id IS NOT NULL;

CREATE TABLE batch_results_archive (
    batch_id     bigint NOT NULL,
    custom_id    text NOT NULL,
    archived_at  timestamptz NOT NULL DEFAULT now(),
    row          jsonb NOT NULL,
    PRIMARY KEY (batch_id, custom_id)
);

CREATE TABLE outbox_archive (
    id            bigint PRIMARY KEY,
    topic         text NOT NULL,
    key           text NOT NULL,
    delivered_at  timestamptz,
    archived_at   timestamptz NOT NULL DEFAULT now(),
    row           jsonb NOT NULL
);

-- Intake stays idempotent after archiving: a (source, external_id) that was archived is skipped like
-- a duplicate (the intake reports it as one), so the same file submitted again enqueues nothing.
CREATE FUNCTION skip_archived_duplicate() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM jobs_archive a WHERE a.source = NEW.source AND a.external_id = NEW.external_id) THEN
        RETURN NULL;
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER jobs_skip_archived_duplicate
BEFORE INSERT ON jobs
FOR EACH ROW
WHEN (NEW.external_id IS NOT NULL)
EXECUTE FUNCTION skip_archived_duplicate();

-- Hot and archived rows together, for the operator and for audits.
CREATE VIEW all_jobs AS
SELECT j.*, false AS archived FROM jobs j
UNION ALL
SELECT (jsonb_populate_record(NULL::jobs, a.row)).*, true AS archived FROM jobs_archive a;

CREATE VIEW all_batches AS
SELECT b.*, false AS archived FROM batches b
UNION ALL
SELECT (jsonb_populate_record(NULL::batches, a.row)).*, true AS archived FROM batches_archive a;
