-- Realtime provider calls counted for metrics, and the pacing of each provider key shared by every
-- process that calls with it.

-- Provider calls made by realtime workers, by class of outcome: ok (answered), rate_limited,
-- quota_exhausted, transient, invalid_request, auth. Each flush of outcomes adds its calls in the same
-- transaction; the rows only grow (Prometheus counters).
CREATE TABLE provider_call_counts (
    provider    text NOT NULL,
    outcome     text NOT NULL,
    calls       bigint NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (provider, outcome)
);

-- One row per provider key (by fingerprint: the same key under two aliases is one limit), holding its
-- GCRA state so that every worker process paces its calls against the same schedule. Times are epoch
-- seconds on the database clock (the one clock every worker shares).
CREATE TABLE key_pacing (
    provider       text NOT NULL,
    fingerprint    text NOT NULL,
    rpm            integer,                      -- the limits last reported by a worker (config, headers)
    tpm            integer,
    tat_r          double precision,             -- theoretical arrival times (NULL: start afresh)
    tat_t          double precision,
    blocked_until  double precision NOT NULL DEFAULT 0,  -- a 429's retry-after, or exhausted headers
    last_admit     double precision NOT NULL DEFAULT 0,
    generation     bigint NOT NULL DEFAULT 0,    -- bumped when limits change or the key is blocked
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (provider, fingerprint)
);
