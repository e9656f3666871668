-- The nightly agent runtime: memories (full-text searchable), fencing tokens for results written under
-- the GPU mutex, the night's step outputs, research feed items seen, briefings and self-healing attempts.

-- Findings kept as memories. `fingerprint` deduplicates (the same finding is stored once); `fence` is
-- the GPU mutex's fencing token the memory was written under.
CREATE TABLE memories (
    id               bigserial PRIMARY KEY,
    source           text NOT NULL,
    title            text NOT NULL,
    content          text NOT NULL,
    tags             text[] NOT NULL DEFAULT '{}',
    fingerprint      text NOT NULL UNIQUE,
    night            text,
    fence            bigint,
    compressed_into  bigint REFERENCES memories (id),
    created_at       timestamptz NOT NULL DEFAULT now(),
    search           tsvector GENERATED ALWAYS AS (
                         setweight(to_tsvector('english', title), 'A')
                         || setweight(to_tsvector('english', content), 'B')) STORED
);
CREATE INDEX memories_search_idx ON memories USING gin (search);
CREATE INDEX memories_tags_idx ON memories USING gin (tags);
CREATE INDEX memories_created_idx ON memories (created_at);

-- The highest fencing token that wrote under each guarded resource. A write carrying a lower token
-- (a holder that lost the lock while frozen) is rejected.
CREATE TABLE fence_tokens (
    resource    text PRIMARY KEY,
    fence       bigint NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Results of GPU work other than memories (training runs, ...), each with the token it ran under.
CREATE TABLE gpu_results (
    id          bigserial PRIMARY KEY,
    resource    text NOT NULL,
    fence       bigint NOT NULL,
    kind        text NOT NULL,
    detail      jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- What each step of one night produced (night = the chain's date in its timezone, YYYY-MM-DD).
CREATE TABLE nightly_steps (
    night        text NOT NULL,
    step         text NOT NULL,
    output       jsonb NOT NULL,
    recorded_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (night, step)
);

-- Research feed items already seen: a scan reports only the ones inserted now.
CREATE TABLE research_items (
    feed           text NOT NULL,
    item_id        text NOT NULL,
    title          text NOT NULL,
    link           text,
    published      text,
    summary        text,
    night          text,
    first_seen_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (feed, item_id)
);

CREATE TABLE briefings (
    night       text PRIMARY KEY,
    level       text NOT NULL,
    markdown    text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Every self-healing decision: a remedy tried (with its outcome), or giving up after the cap.
CREATE TABLE healing_attempts (
    id       bigserial PRIMARY KEY,
    signal   text NOT NULL,
    run_id   text,
    action   text NOT NULL CHECK (action IN ('remedy', 'gave_up')),
    outcome  text NOT NULL,
    detail   text,
    at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX healing_attempts_signal_idx ON healing_attempts (signal, at);
