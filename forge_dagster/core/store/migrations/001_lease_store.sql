-- The lease store: jobs, batches, the append-only job_events audit, and the transactional outbox.
-- Tables live in the schema named by the connection's search_path (default "forge").

CREATE TABLE batches (
    id                bigserial PRIMARY KEY,
    -- Globally unique name given to the provider (metadata), so reconciliation never matches a batch
    -- another Forge installation created.
    forge_batch_id    text NOT NULL UNIQUE DEFAULT 'fb_' || replace(gen_random_uuid()::text, '-', ''),
    provider          text NOT NULL,
    model             text NOT NULL,
    processor         text,
    processor_version text,
    state             text NOT NULL DEFAULT 'building' CHECK (state IN (
                          'building', 'submitting', 'in_progress', 'cancelling', 'ended_completed',
                          'ended_expired', 'ended_cancelled', 'ended_failed', 'collected', 'archived')),
    provider_batch_id text,
    input_file_id     text,
    request_count     integer NOT NULL DEFAULT 0,
    bytes             bigint NOT NULL DEFAULT 0,
    counts            jsonb,
    raw_status        text,
    submit_attempts   integer NOT NULL DEFAULT 0,
    last_error        text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    submitted_at      timestamptz,
    ended_at          timestamptz,
    collected_at      timestamptz,
    UNIQUE (provider, provider_batch_id)
);
-- Open batches only: the status sensor scans these each tick.
CREATE INDEX batches_open_idx ON batches (state, id)
    WHERE state NOT IN ('collected', 'archived');

CREATE TABLE jobs (
    id                bigserial PRIMARY KEY,
    source            text NOT NULL DEFAULT 'api',
    external_id       text,
    processor         text NOT NULL,
    processor_version text,
    mode              text NOT NULL DEFAULT 'batch' CHECK (mode IN ('batch', 'realtime')),
    payload           jsonb NOT NULL,
    state             text NOT NULL DEFAULT 'pending' CHECK (state IN (
                          'pending', 'claimed', 'running', 'submitted', 'collected',
                          'succeeded', 'invalid', 'failed', 'dead')),
    attempt           integer NOT NULL DEFAULT 0,
    max_attempts      integer NOT NULL DEFAULT 3 CHECK (max_attempts >= 1),
    run_after         timestamptz NOT NULL DEFAULT now(),
    lease_owner       text,
    lease_token       uuid,
    lease_expires_at  timestamptz,
    batch_id          bigint REFERENCES batches (id),
    custom_id         text,
    output            jsonb,
    raw_output        text,
    errors            jsonb,
    reason            text,
    usage             jsonb,
    cost_usd          numeric(16, 8),
    callback_url      text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    finished_at       timestamptz,
    UNIQUE (source, external_id)
);
-- The hot claim path: pending rows only, in the order the claim reads them.
CREATE INDEX jobs_claim_idx ON jobs (mode, run_after, id) WHERE state = 'pending';
-- Lease recovery: leased rows only, by expiry.
CREATE INDEX jobs_lease_idx ON jobs (lease_expires_at) WHERE state IN ('claimed', 'running');
CREATE INDEX jobs_batch_idx ON jobs (batch_id) WHERE batch_id IS NOT NULL;
CREATE INDEX jobs_state_idx ON jobs (state);

CREATE TABLE job_events (
    id          bigserial PRIMARY KEY,
    job_id      bigint NOT NULL,
    at          timestamptz NOT NULL DEFAULT now(),
    actor       text,
    from_state  text,
    to_state    text NOT NULL,
    attempt     integer NOT NULL,
    reason      text
);
CREATE INDEX job_events_job_idx ON job_events (job_id, id);

CREATE TABLE outbox (
    id            bigserial PRIMARY KEY,
    -- The writing transaction's id: the relay reads only rows below its snapshot's xmin, so a
    -- transaction that commits late is never skipped.
    txid          xid8 NOT NULL DEFAULT pg_current_xact_id(),
    topic         text NOT NULL,
    key           text NOT NULL,
    payload       jsonb NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    available_at  timestamptz NOT NULL DEFAULT now(),
    attempts      integer NOT NULL DEFAULT 0,
    last_error    text,
    delivered_at  timestamptz
);
CREATE INDEX outbox_pending_idx ON outbox (id) WHERE delivered_at IS NULL;
CREATE INDEX outbox_key_idx ON outbox (key, id) WHERE delivered_at IS NULL;
