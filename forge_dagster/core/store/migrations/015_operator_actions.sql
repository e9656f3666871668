-- An operator's hands on the work. An open job may be cancelled: it ends `cancelled` (terminal, with the
-- operator's reason), its lease token is cleared, so the worker holding it finds its fenced write refused
-- and a late provider result is never accepted. A job that ended without success (dead, invalid, failed,
-- cancelled) may be retried: back to pending with a fresh attempt budget, optionally pinned to another
-- processor version. Both are recorded in job_events (actor `operator:<who>`) and, once per action, in
-- operator_actions.
ALTER TABLE jobs DROP CONSTRAINT jobs_state_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_state_check CHECK (state IN (
    'pending', 'claimed', 'running', 'submitted', 'collected',
    'succeeded', 'invalid', 'failed', 'dead', 'cancelled'));

-- The attempts a job is given each time: at intake (NULL: its max_attempts as enqueued) and again by each
-- retry, which moves max_attempts to attempt + attempt_budget (attempts keep counting up, so every
-- attempt's ledger row and accepted output stay its own).
-- all_jobs expands the jobs row type: it is recreated with the new column.
DROP VIEW all_jobs;
ALTER TABLE jobs ADD COLUMN attempt_budget integer CHECK (attempt_budget >= 1);
CREATE VIEW all_jobs AS
SELECT j.*, false AS archived FROM jobs j
UNION ALL
SELECT (jsonb_populate_record(NULL::jobs, a.row)).*, true AS archived FROM jobs_archive a;

-- A cancelled job with a callback gets its stamp like any other terminal state.
DROP TRIGGER jobs_stamp_terminal ON jobs;
CREATE TRIGGER jobs_stamp_terminal
AFTER UPDATE OF state ON jobs
FOR EACH ROW
WHEN (NEW.callback_url IS NOT NULL
      AND NEW.state IN ('succeeded', 'invalid', 'failed', 'dead', 'cancelled')
      AND OLD.state NOT IN ('succeeded', 'invalid', 'failed', 'dead', 'cancelled'))
EXECUTE FUNCTION stamp_terminal_job();

CREATE TABLE operator_actions (
    id          bigserial PRIMARY KEY,
    action      text NOT NULL CHECK (action IN ('retry', 'cancel', 'cancel_batch')),
    actor       text NOT NULL,
    reason      text NOT NULL CHECK (length(trim(reason)) > 0),
    selector    jsonb NOT NULL,   -- what the operator asked for (ids, or state/processor/since filters)
    changed     integer NOT NULL, -- jobs moved by this action
    skipped     jsonb NOT NULL DEFAULT '[]'::jsonb,  -- [{"job": id, "why": ...}] asked for but not moved
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX operator_actions_created_idx ON operator_actions (created_at DESC);
