-- A stamp whose callback the policy refuses (a private, loopback or metadata address, plain http under
-- https-only) ends `refused` for good: `refused_at` set, the reason in `last_error`. It leaves the relay's
-- lane like a delivered row (it is never retried) without being counted as delivered.
ALTER TABLE outbox ADD COLUMN refused_at timestamptz;

-- The relay's indexes cover the rows still to deliver: neither delivered nor refused.
DROP INDEX outbox_pending_idx;
DROP INDEX outbox_key_idx;
CREATE INDEX outbox_pending_idx ON outbox (id) WHERE delivered_at IS NULL AND refused_at IS NULL;
CREATE INDEX outbox_key_idx ON outbox (key, id) WHERE delivered_at IS NULL AND refused_at IS NULL;
