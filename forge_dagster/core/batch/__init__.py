"""The batch path: shaping jobs into provider batches, building and submitting them, collecting results."""
