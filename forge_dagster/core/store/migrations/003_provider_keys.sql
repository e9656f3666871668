-- Provider keys and what waits on them (realtime execution, rate limits, quota recovery).
-- A key is never stored in clear: only its alias, a masked display form and a sha256 prefix.

CREATE TABLE provider_keys (
    provider         text NOT NULL,
    alias            text NOT NULL,
    masked           text NOT NULL,
    fingerprint      text NOT NULL,             -- first 16 hex of sha256(key): tells a rotated key apart
    state            text NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'paused')),
    reason           text,
    paused_at        timestamptz,
    paused_until     timestamptz,               -- the next probe is due then
    probe_count      integer NOT NULL DEFAULT 0, -- probes in this pause episode (sets the next interval)
    last_probe_at    timestamptz,
    last_probe_error text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (provider, alias)
);
-- The probe sensor's scan: paused keys by due time.
CREATE INDEX provider_keys_due_idx ON provider_keys (paused_until) WHERE state = 'paused';

-- One row while every key of a provider is paused: the operator is told when it is inserted, once.
CREATE TABLE provider_outages (
    provider    text PRIMARY KEY,
    since       timestamptz NOT NULL DEFAULT now(),
    reason      text
);

-- Batch submission held for a model after the provider refused more enqueued tokens
-- (token_limit_exceeded): released once that model's in-flight batches have drained.
CREATE TABLE submission_holds (
    provider          text NOT NULL,
    model             text NOT NULL,
    reason            text NOT NULL,
    in_flight_batches integer NOT NULL DEFAULT 0,
    held_at           timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (provider, model)
);
