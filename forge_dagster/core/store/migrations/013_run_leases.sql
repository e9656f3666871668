-- A Dagster run that does Forge's work holds a lease here while its steps work (a heartbeat off the work
-- thread extends it). A run whose lease expired, or that never took one, has no live process: it is
-- reported failed to Dagster and its work asked for again. `owners` are the store owners of the run's
-- step processes, so the jobs a dead run had claimed can be given back without waiting for their leases.
CREATE TABLE run_leases (
    run_id           text PRIMARY KEY,
    job_name         text NOT NULL,
    partition_key    text,
    owners           text[] NOT NULL DEFAULT '{}',
    taken_at         timestamptz NOT NULL DEFAULT now(),
    heartbeat_at     timestamptz,
    lease_expires_at timestamptz NOT NULL,
    dead_at          timestamptz,
    reason           text
);

CREATE INDEX run_leases_heartbeat_idx ON run_leases (heartbeat_at);

-- The store owner that wrote a batch's submission intent (or last resumed it): when that owner's run is
-- found dead, its unfinished submission is resumed at once instead of after the stale-submission delay.
ALTER TABLE batches ADD COLUMN submitter text;
