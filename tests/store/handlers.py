"""Handlers that worker subprocesses in these tests load by `module:function` path."""

import threading


def echo(job):
    """A step whose output is its input (the test fixture that was once a default)."""
    return {"echo": job.payload}


def off_schema(job):
    """A step that answers outside its processor's schema."""
    return {"unexpected": True}


def block_first_attempt(job):
    """Hangs on a job's first attempt (until the process is killed); echoes on the next."""
    if job.attempt == 1:
        threading.Event().wait()
    return {"echo": job.payload}
