"""SQL of output_vectors: the accepted embeddings of succeeded jobs, as float32 bytes (migration 019)."""

# Written in the transaction that succeeded the jobs, after it: only a job that is now `succeeded` at that
# attempt gets its vector (a settlement the fence refused writes none).
INSERT_OUTPUT_VECTORS = """
INSERT INTO output_vectors (job_id, attempt, dimensions, vector)
SELECT j.id, j.attempt, v.dimensions, v.vector
FROM unnest(%(ids)s::bigint[], %(dimensions)s::int[], %(vectors)s::bytea[]) AS v(job_id, dimensions, vector)
JOIN jobs j ON j.id = v.job_id AND j.state = 'succeeded'
ON CONFLICT (job_id, attempt) DO NOTHING
"""
