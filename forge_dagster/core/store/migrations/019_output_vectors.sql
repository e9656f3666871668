-- Embeddings (issue 19) are kept compactly: a vector is little-endian float32 bytes, never a JSON number per
-- float. A result line keeps its vector beside its raw body (whose embedding is replaced by a note), and an
-- accepted embedding is one row of output_vectors for the job's succeeded attempt; the job's output names
-- the vector's dimensions and sha256, so the output digest that `succeeded` requires binds the vector too.
ALTER TABLE batch_results ADD COLUMN vector bytea;

CREATE TABLE output_vectors (
    job_id      bigint NOT NULL,
    attempt     integer NOT NULL,
    dimensions  integer NOT NULL CHECK (dimensions > 0),
    vector      bytea NOT NULL CHECK (length(vector) = 4 * dimensions),
    stored_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, attempt)
);
