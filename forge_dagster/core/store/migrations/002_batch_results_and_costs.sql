-- Every result line a provider returned, as received (the provider_results asset), and the cost ledger.

CREATE TABLE batch_results (
    batch_id       bigint NOT NULL REFERENCES batches (id),
    custom_id      text NOT NULL,
    job_id         bigint NOT NULL,
    attempt        integer NOT NULL,
    outcome        text NOT NULL,
    status_code    integer,
    text           text,
    tool_input     jsonb,
    stop_reason    text,
    usage          jsonb,
    error_class    text,
    error_message  text,
    raw            jsonb,
    received_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (batch_id, custom_id)
);

-- One row per job attempt that the provider billed: booked once, whatever is collected twice.
CREATE TABLE costs (
    job_id               bigint NOT NULL,
    attempt              integer NOT NULL,
    batch_id             bigint,
    provider             text NOT NULL,
    model                text NOT NULL,
    processor            text,
    input_tokens         integer NOT NULL DEFAULT 0,
    cached_input_tokens  integer NOT NULL DEFAULT 0,
    output_tokens        integer NOT NULL DEFAULT 0,
    reasoning_tokens     integer NOT NULL DEFAULT 0,
    cost_usd             numeric(16, 8) NOT NULL,
    pricing_version      text NOT NULL,
    batch_priced         boolean NOT NULL,
    booked_at            timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, attempt)
);
CREATE INDEX costs_booked_idx ON costs (booked_at);
