-- Rows other applications insert are reviewed before any worker may claim them, and a job may say when
-- its answer is due (an `auto` processor runs work due soon in realtime).

-- all_jobs expands the jobs row type: it is recreated below with the new columns.
DROP VIEW all_jobs;

-- Forge's own intake writes `reviewed = true`: it checked the row, pinned its processor version and
-- resolved its mode. A row another application inserts gets the default, false, and no claim takes it
-- until intake has reviewed it (accepted with its version and mode, or failed with the reason).
ALTER TABLE jobs ADD COLUMN reviewed boolean NOT NULL DEFAULT true;
ALTER TABLE jobs ALTER COLUMN reviewed SET DEFAULT false;
-- Until now intake reviewed pending rows without a processor version: they stay up for review.
UPDATE jobs SET reviewed = false WHERE state = 'pending' AND processor_version IS NULL;

-- An inserted row may leave its mode out (NULL): intake resolves it from the processor, as it does for
-- every other way in. Reviewed rows always carry one.
ALTER TABLE jobs ALTER COLUMN mode DROP NOT NULL, ALTER COLUMN mode DROP DEFAULT;
ALTER TABLE jobs ADD CONSTRAINT jobs_reviewed_mode_check
    CHECK (mode IS NOT NULL OR NOT reviewed OR state = 'failed');

ALTER TABLE jobs ADD COLUMN due_at timestamptz;

-- Intake's review scan reads unreviewed rows only.
CREATE INDEX jobs_unreviewed_idx ON jobs (id) WHERE NOT reviewed;

CREATE VIEW all_jobs AS
SELECT j.*, false AS archived FROM jobs j
UNION ALL
SELECT (jsonb_populate_record(NULL::jobs, a.row)).*, true AS archived FROM jobs_archive a;
