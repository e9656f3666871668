-- Fail closed in the database itself: a job may be `succeeded` only with an accepted output, that is a
-- row of accepted_outputs for its current attempt, written by validation against the processor version
-- the job is pinned to (its registered fingerprint), whose digest is the job's output. Whatever code
-- path or other application writes `succeeded` without one is refused by the triggers below, so no
-- future path can fail open. (Rows that succeeded before this migration keep their state; the archive
-- moves rows the check already passed when they became succeeded.)

CREATE TABLE accepted_outputs (
    job_id             bigint NOT NULL,
    attempt            integer NOT NULL,
    processor          text NOT NULL,
    processor_version  text NOT NULL,
    fingerprint        text NOT NULL,   -- the registered definition (schema included) it validated against
    output_digest      text NOT NULL,   -- md5 of the accepted output as jsonb text
    accepted_by        text NOT NULL,   -- the validating path: batch, realtime, repair, handler module:function
    accepted_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, attempt)
);

-- Raises unless (job, attempt, processor, version, output) has its accepted row and the row's fingerprint
-- is the registered one of that version.
CREATE FUNCTION check_accepted_output(job_id bigint, attempt integer, processor text, processor_version text,
                                      output jsonb) RETURNS void
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    IF output IS NULL OR output = 'null'::jsonb OR processor_version IS NULL OR NOT EXISTS (
        SELECT 1 FROM accepted_outputs a
        JOIN processors p ON p.name = a.processor AND p.version = a.processor_version
                         AND p.fingerprint = a.fingerprint
        WHERE a.job_id = check_accepted_output.job_id AND a.attempt = check_accepted_output.attempt
          AND a.processor = check_accepted_output.processor
          AND a.processor_version = check_accepted_output.processor_version
          AND a.output_digest = md5(output::text)) THEN
        RAISE EXCEPTION 'job %: succeeded refused: no accepted output validated against % % for attempt %',
            job_id, processor, coalesce(processor_version, '(no pinned version)'), attempt
            USING ERRCODE = 'check_violation';
    END IF;
END
$$;

CREATE FUNCTION require_accepted_output() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    PERFORM check_accepted_output(NEW.id, NEW.attempt, NEW.processor, NEW.processor_version, NEW.output);
    RETURN NULL;
END
$$;

-- AFTER triggers (constraint triggers fire at the end of the statement): a statement that writes the
-- accepted row and the state change in sibling CTEs is checked once both are in place.
CREATE CONSTRAINT TRIGGER jobs_succeeded_insert_needs_accepted_output
AFTER INSERT ON jobs
FOR EACH ROW WHEN (NEW.state = 'succeeded')
EXECUTE FUNCTION require_accepted_output();

CREATE CONSTRAINT TRIGGER jobs_succeeded_update_needs_accepted_output
AFTER UPDATE ON jobs
FOR EACH ROW WHEN (NEW.state = 'succeeded' AND (
    OLD.state IS DISTINCT FROM NEW.state OR OLD.output IS DISTINCT FROM NEW.output
    OR OLD.attempt IS DISTINCT FROM NEW.attempt OR OLD.processor IS DISTINCT FROM NEW.processor
    OR OLD.processor_version IS DISTINCT FROM NEW.processor_version OR OLD.id IS DISTINCT FROM NEW.id))
EXECUTE FUNCTION require_accepted_output();

-- Non-LLM steps: a processor may name a handler (module:function) instead of a model. Its jobs run in
-- mode `handler`, claimed only by `forge work --handler` for that handler, never by a provider path.
ALTER TABLE jobs DROP CONSTRAINT jobs_mode_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_mode_check CHECK (mode IN ('batch', 'realtime', 'handler'));
ALTER TABLE processors ALTER COLUMN provider DROP NOT NULL, ALTER COLUMN model DROP NOT NULL;
