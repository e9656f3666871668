-- Prompt-cache writes are priced apart from plain input (Anthropic: 1.25x for a 5-minute TTL, 2x for 1 hour):
-- the ledger keeps them per attempt, beside the cache reads (cached_input_tokens). Both are part of
-- input_tokens, as cached_input_tokens is.
ALTER TABLE costs ADD COLUMN cache_write_5m_tokens integer NOT NULL DEFAULT 0;
ALTER TABLE costs ADD COLUMN cache_write_1h_tokens integer NOT NULL DEFAULT 0;
