-- The night tells the truth about itself (issue 23).

-- Steps that did not run because they are not configured (or not due: the atlas is weekly), with why.
-- Kept apart from `nightly_steps`, which holds what steps produced: a step is either one or the other.
CREATE TABLE nightly_skips (
    night        text NOT NULL,
    step         text NOT NULL,
    reason       text NOT NULL,
    recorded_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (night, step)
);

-- Notices the night sends once (a failed run, a GPU wait, a run held by the GPU pool): the key is
-- claimed in the transaction that writes the outbox row, so a sensor tick run twice sends one message.
CREATE TABLE nightly_notices (
    key      text PRIMARY KEY,
    topic    text NOT NULL,
    night    text,
    text     text,
    sent_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX nightly_notices_night_idx ON nightly_notices (night);

-- What Slack was last told about a night's briefing (its level and what failed, as a digest), and how
-- many versions were sent: a re-run that changes either posts a correction that replaces it.
ALTER TABLE briefings ADD COLUMN sent_digest text;
ALTER TABLE briefings ADD COLUMN sent_versions integer NOT NULL DEFAULT 1;
