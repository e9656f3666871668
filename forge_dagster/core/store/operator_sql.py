"""SQL of the operator's audit: one row per retry or cancel an operator asked for."""

RECORD_ACTION = """
INSERT INTO operator_actions (action, actor, reason, selector, changed, skipped)
VALUES (%(action)s, %(actor)s, %(reason)s, %(selector)s, %(changed)s, %(skipped)s)
RETURNING id
"""

RECENT_ACTIONS = """
SELECT id, action, actor, reason, selector, changed, skipped, created_at
FROM operator_actions ORDER BY id DESC LIMIT %(limit)s
"""

# The operator's actions on one batch (cancel_batch), oldest first.
BATCH_ACTIONS = """
SELECT id, action, actor, reason, selector, changed, skipped, created_at
FROM operator_actions WHERE action = 'cancel_batch' AND (selector ->> 'batch_id')::bigint = %(batch_id)s
ORDER BY id
"""
