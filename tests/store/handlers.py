"""Handlers that worker subprocesses in these tests load by `module:function` path."""

import threading


def block_forever(job):
    """Simulates a job that hangs until the process is killed."""
    threading.Event().wait()
