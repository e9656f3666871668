-- The prompt platform: processors in the registry (versions, status), budgets, cost estimates that
-- reserve budget for work in flight, and the reconciliation of OpenAI batches against the cost ledger.

-- One row per processor version. A version's definition never changes once registered (a new
-- definition is a new version); only its status moves: draft -> active -> retired (or draft -> retired).
CREATE TABLE processors (
    name         text NOT NULL,
    version      text NOT NULL,
    status       text NOT NULL DEFAULT 'draft' CHECK (status IN ('draft', 'active', 'retired')),
    provider     text NOT NULL,
    model        text NOT NULL,
    mode         text NOT NULL,
    tags         text[] NOT NULL DEFAULT '{}',
    definition   json NOT NULL,  -- json, not jsonb: it keeps the order of schema properties as written
    fingerprint  text NOT NULL,
    source       text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    promoted_at  timestamptz,
    retired_at   timestamptz,
    PRIMARY KEY (name, version)
);
-- Exactly one active version per name, whatever path writes the row.
CREATE UNIQUE INDEX processors_one_active_idx ON processors (name) WHERE status = 'active';

CREATE FUNCTION check_processor_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.name <> OLD.name OR NEW.version <> OLD.version OR NEW.definition::text <> OLD.definition::text
       OR NEW.fingerprint <> OLD.fingerprint THEN
        RAISE EXCEPTION 'processor % %: a registered definition never changes (register a new version)',
            OLD.name, OLD.version USING ERRCODE = 'check_violation';
    END IF;
    IF NEW.status <> OLD.status AND NOT (
        (OLD.status = 'draft' AND NEW.status IN ('active', 'retired'))
        OR (OLD.status = 'active' AND NEW.status = 'retired')) THEN
        RAISE EXCEPTION 'processor % %: % -> % is not allowed (draft -> active -> retired)',
            OLD.name, OLD.version, OLD.status, NEW.status USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER processors_change_rules
BEFORE UPDATE ON processors
FOR EACH ROW EXECUTE FUNCTION check_processor_change();

-- Who changed what, when: registrations, promotions, retirements.
CREATE TABLE processor_events (
    id           bigserial PRIMARY KEY,
    name         text NOT NULL,
    version      text NOT NULL,
    at           timestamptz NOT NULL DEFAULT now(),
    actor        text,
    from_status  text,
    to_status    text NOT NULL,
    note         text
);
CREATE INDEX processor_events_name_idx ON processor_events (name, id);

-- Daily USD budgets: scope is a processor name, or '*' for everything together. Days are UTC.
CREATE TABLE budgets (
    scope       text PRIMARY KEY,
    daily_usd   numeric(16, 8) NOT NULL CHECK (daily_usd >= 0),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- The estimated (worst case) cost of a job attempt admitted under a budget. While the job is in flight
-- at that attempt, the estimate holds budget; once it settles, the ledger row takes its place.
CREATE TABLE cost_estimates (
    job_id         bigint NOT NULL,
    attempt        integer NOT NULL,
    processor      text NOT NULL,
    estimated_usd  numeric(16, 8) NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, attempt)
);
CREATE INDEX cost_estimates_created_idx ON cost_estimates (created_at);

-- One row per scope and day on which a budget held work back: the operator is told once, on insert.
CREATE TABLE budget_alerts (
    scope         text NOT NULL,
    day           date NOT NULL,
    first_at      timestamptz NOT NULL DEFAULT now(),
    last_at       timestamptz NOT NULL DEFAULT now(),
    held_jobs     integer NOT NULL DEFAULT 0,
    PRIMARY KEY (scope, day)
);

-- The per-request sum (ledger and stored result lines) against the provider's own batch usage.
CREATE TABLE cost_reconciliations (
    batch_id           bigint PRIMARY KEY,
    provider           text NOT NULL,
    provider_batch_id  text NOT NULL,
    ledger             jsonb NOT NULL,
    results            jsonb NOT NULL,
    provider_usage     jsonb,
    matched            boolean NOT NULL,
    note               text,
    checked_at         timestamptz NOT NULL DEFAULT now()
);

-- Reports group the ledger by processor and day; repairs look up a job's earlier answers.
CREATE INDEX costs_processor_booked_idx ON costs (processor, booked_at);
CREATE INDEX costs_batch_idx ON costs (batch_id) WHERE batch_id IS NOT NULL;
CREATE INDEX batch_results_job_idx ON batch_results (job_id, attempt);
