-- Fenced writes name their holder: the store accepts a fence equal to the recorded one only from the
-- lease that recorded it (several writes under one lease share a number), so two holders can never share
-- a number even if the Redis counter was reset. `holder` is a digest of the lock token, not the token.
ALTER TABLE fence_tokens ADD COLUMN holder text;

-- The fence a night's step output was written under (NULL for steps that did not use the GPU).
ALTER TABLE nightly_steps ADD COLUMN fence bigint;
