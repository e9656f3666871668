-- The operator's console (issue 21): the live fleet, each batch's status history, and the indexes its
-- pages read through.

-- Every `forge work` process registers here at start and beats a heartbeat; `owner` is the lease owner its
-- claims carry (jobs.lease_owner), so what it holds now is read from the jobs themselves. A process that
-- stops cleanly sets stopped_at; one that died is told by its heartbeat growing old.
CREATE TABLE workers (
    id            bigserial PRIMARY KEY,
    kind          text NOT NULL,           -- realtime | handler
    owner         text NOT NULL,
    host          text NOT NULL,
    pid           integer NOT NULL,
    detail        text,                    -- the handler it runs, its concurrency
    started_at    timestamptz NOT NULL DEFAULT now(),
    heartbeat_at  timestamptz NOT NULL DEFAULT now(),
    holding       integer NOT NULL DEFAULT 0,  -- leases held at the last heartbeat
    stopped_at    timestamptz
);
CREATE INDEX workers_recent_idx ON workers (heartbeat_at DESC);

-- The provider's status as Forge saw it at each change of a batch (state, raw status, request counts),
-- written by a trigger so every path that moves a batch is recorded.
CREATE TABLE batch_status_history (
    id          bigserial PRIMARY KEY,
    batch_id    bigint NOT NULL,
    at          timestamptz NOT NULL DEFAULT now(),
    state       text NOT NULL,
    raw_status  text,
    counts      jsonb
);
CREATE INDEX batch_status_history_batch_idx ON batch_status_history (batch_id, id);

CREATE FUNCTION record_batch_status() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' OR NEW.state IS DISTINCT FROM OLD.state OR NEW.raw_status IS DISTINCT FROM OLD.raw_status
       OR NEW.counts IS DISTINCT FROM OLD.counts THEN
        INSERT INTO batch_status_history (batch_id, state, raw_status, counts)
        VALUES (NEW.id, NEW.state, NEW.raw_status, NEW.counts);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER batches_status_history
AFTER INSERT OR UPDATE OF state, raw_status, counts ON batches
FOR EACH ROW EXECUTE FUNCTION record_batch_status();

-- The console's list filtered by state walks ids downwards within the state: (state, id) answers it and
-- everything (state) answered, so it replaces that index (the same writes per transition as before).
DROP INDEX jobs_state_idx;
CREATE INDEX jobs_state_id_idx ON jobs (state, id);
-- Likewise a batch's jobs, newest first (a batch page, the list filtered by batch).
DROP INDEX jobs_batch_idx;
CREATE INDEX jobs_batch_id_idx ON jobs (batch_id, id) WHERE batch_id IS NOT NULL;

-- The console's free text on intake ids is a prefix match (LIKE 'abc%'), which this index answers.
CREATE INDEX jobs_external_id_prefix_idx ON jobs (external_id text_pattern_ops) WHERE external_id IS NOT NULL;

-- Lease takeovers in the last hour read the recent end of the append-only audit: a BRIN index on its time
-- costs next to nothing to keep (rows arrive in time order) and spares a scan of every event.
CREATE INDEX job_events_at_brin ON job_events USING brin (at);
