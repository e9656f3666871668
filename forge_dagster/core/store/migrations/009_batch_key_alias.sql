-- The provider key a batch was submitted with (its alias in provider_keys). A provider batch is visible
-- to the key's organization or project only, so its status, results and cancellation go through the
-- same key. NULL: submitted before keys were tracked per batch (the provider's first key is used).
-- The all_batches view (migration 004) is built on the row type of batches: it is recreated around the
-- change, so it shows the new column too.
DROP VIEW all_batches;
ALTER TABLE batches ADD COLUMN key_alias text;
CREATE VIEW all_batches AS
SELECT b.*, false AS archived FROM batches b
UNION ALL
SELECT (jsonb_populate_record(NULL::batches, a.row)).*, true AS archived FROM batches_archive a;
