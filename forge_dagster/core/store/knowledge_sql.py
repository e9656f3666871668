"""SQL for memories (full-text search), fences, GPU results, research items and night steps."""

# A write under the GPU mutex first raises the resource's high-water fence to its own. The row lock taken
# here serialises fenced writers until commit. A lower number, or the same number from another holder
# (two holders sharing a number after the Redis counter was lost), updates nothing, so the caller rolls
# back; the same holder writing again under one lease is accepted. A row from before holders were
# recorded (holder NULL) accepts only a higher number.
ADVANCE_FENCE = """
INSERT INTO fence_tokens (resource, fence, holder) VALUES (%(resource)s, %(fence)s, %(holder)s)
ON CONFLICT (resource) DO UPDATE SET fence = EXCLUDED.fence, holder = EXCLUDED.holder, updated_at = now()
    WHERE fence_tokens.fence < EXCLUDED.fence
       OR (fence_tokens.fence = EXCLUDED.fence AND fence_tokens.holder = EXCLUDED.holder)
RETURNING fence
"""

CURRENT_FENCE = "SELECT fence FROM fence_tokens WHERE resource = %(resource)s"

INSERT_GPU_RESULT = """
INSERT INTO gpu_results (resource, fence, kind, detail) VALUES (%(resource)s, %(fence)s, %(kind)s, %(detail)s)
RETURNING id
"""

GPU_RESULTS = """
SELECT id, resource, fence, kind, detail, created_at FROM gpu_results WHERE resource = %(resource)s ORDER BY id
"""

# Deduplicated by fingerprint: the same finding is stored once, whoever writes it first.
INSERT_MEMORY = """
INSERT INTO memories (source, title, content, tags, fingerprint, night, fence)
VALUES (%(source)s, %(title)s, %(content)s, %(tags)s, %(fingerprint)s, %(night)s, %(fence)s)
ON CONFLICT (fingerprint) DO NOTHING
RETURNING id
"""

KNOWN_FINGERPRINTS = "SELECT fingerprint FROM memories WHERE fingerprint = ANY(%(fingerprints)s::text[])"

_MEMORY_COLUMNS = "m.id, m.source, m.title, m.content, m.tags, m.night, m.fence, m.compressed_into, m.created_at"

# websearch_to_tsquery accepts what people type ("gpu -disk", "\"rate limit\"", "a or b") without syntax
# errors; the GIN index on `search` serves the @@ match.
SEARCH_MEMORIES = f"""
SELECT {_MEMORY_COLUMNS}, ts_rank_cd(m.search, q) AS rank
FROM memories m, websearch_to_tsquery('english', %(query)s) AS q
WHERE m.search @@ q
  AND (%(include_compressed)s OR m.compressed_into IS NULL)
  AND (%(tag)s::text IS NULL OR %(tag)s::text = ANY(m.tags))
ORDER BY rank DESC, m.created_at DESC, m.id DESC
LIMIT %(limit)s
"""

MEMORIES_OF_NIGHT = f"SELECT {_MEMORY_COLUMNS}, 0.0 AS rank FROM memories m WHERE m.night = %(night)s ORDER BY m.id"

# The week's memories not yet folded into a weekly digest (digests themselves are never refolded).
MEMORIES_TO_COMPRESS = f"""
SELECT {_MEMORY_COLUMNS}, 0.0 AS rank FROM memories m
WHERE m.created_at >= %(since)s AND m.compressed_into IS NULL AND NOT ('weekly' = ANY(m.tags))
ORDER BY m.source, m.id
"""

MARK_COMPRESSED = """
UPDATE memories SET compressed_into = %(into)s WHERE id = ANY(%(ids)s::bigint[]) AND compressed_into IS NULL
"""

COUNT_MEMORIES = "SELECT count(*) FILTER (WHERE compressed_into IS NULL), count(*) FROM memories"

INSERT_RESEARCH_ITEM = """
INSERT INTO research_items (feed, item_id, title, link, published, summary, night)
VALUES (%(feed)s, %(item_id)s, %(title)s, %(link)s, %(published)s, %(summary)s, %(night)s)
ON CONFLICT (feed, item_id) DO NOTHING
RETURNING item_id
"""

SAVE_STEP = """
INSERT INTO nightly_steps (night, step, output, fence) VALUES (%(night)s, %(step)s, %(output)s, %(fence)s)
ON CONFLICT (night, step) DO UPDATE SET output = EXCLUDED.output, fence = EXCLUDED.fence, recorded_at = now()
"""

NIGHT_STEPS = "SELECT step, output, recorded_at FROM nightly_steps WHERE night = %(night)s ORDER BY recorded_at, step"

# The memories the atlas shows: every memory not folded into a digest, newest first.
ATLAS_MEMORIES = f"""
SELECT {_MEMORY_COLUMNS}, 0.0 AS rank FROM memories m
WHERE m.compressed_into IS NULL
ORDER BY m.created_at DESC, m.id DESC
LIMIT %(limit)s
"""
