"""Intake: JSONL lines, the inbox folder, and routing each job to its mode and pinned version."""
