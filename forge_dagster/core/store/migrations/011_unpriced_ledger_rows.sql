-- An attempt the provider billed for a model the pricing table does not know is still booked, with its
-- tokens and a NULL cost (unpriced): the ledger keeps every billed attempt, and reports say how many
-- attempts have no price instead of leaving them out.
ALTER TABLE costs ALTER COLUMN cost_usd DROP NOT NULL;
