"""The queue peers of the lease-store benchmark: procrastinate and pgqueuer draining no-op jobs in worker
processes, each in a schema of its own, run the way their own documentation and benchmarks run them."""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import time

import psycopg

from benchmarks._common import (
    SESSIONS_EXIT_S,
    Cell,
    WorkerGroup,
    child_main,
    drain_usage,
    fresh_schema,
    schema_options,
)

PEER_WORKERS = 4
PGQUEUER_BATCH = 10  # pgqueuer's default dequeue batch size (PgQueuer.run and its own benchmark tool)


_executed = 0  # no-op task executions in this worker process


async def _noop_task() -> None:
    global _executed
    _executed += 1


async def _noop_entrypoint(job) -> None:
    global _executed
    _executed += 1


def _procrastinate_app(url: str, schema: str):
    import procrastinate

    logging.getLogger("procrastinate").setLevel(logging.ERROR)  # no per-job or "App in __main__" lines
    connector = procrastinate.PsycopgConnector(conninfo=url, kwargs={"options": schema_options(schema)})
    app = procrastinate.App(connector=connector)
    app.task(name="noop")(_noop_task)
    return app


def _procrastinate_worker(url: str, schema: str, events, commands) -> None:
    """One procrastinate worker per process (their documented way to scale), concurrency 1, an async no-op
    task, wait=False so each round ends once the queue is drained; otherwise their defaults."""

    def prepare():
        runner = asyncio.Runner()
        app = _procrastinate_app(url, schema)

        async def open_app():
            await app.open_async()

        runner.run(open_app())

        def work(_: object) -> int:
            before = _executed
            runner.run(app.run_worker_async(wait=False, concurrency=1, install_signal_handlers=False))
            return _executed - before

        def close() -> None:
            runner.run(app.close_async())
            runner.close()

        return work, close

    child_main(prepare, events, commands)


async def _procrastinate_fill(url: str, schema: str, jobs: int, install: bool) -> None:
    app = _procrastinate_app(url, schema)
    async with app.open_async():
        if install:
            await app.schema_manager.apply_schema_async()
        async with await psycopg.AsyncConnection.connect(url, options=schema_options(schema)) as conn:
            await conn.execute("TRUNCATE procrastinate_jobs, procrastinate_events, procrastinate_workers CASCADE")
        await app.tasks["noop"].batch_defer_async(*({} for _ in range(jobs)))


def _procrastinate_succeeded(url: str, schema: str) -> int:
    with psycopg.connect(url, options=schema_options(schema)) as conn:
        return conn.execute("SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'").fetchone()[0]


def measure_procrastinate(url: str, jobs: int, repeat: int, account: bool) -> Cell:
    cell = Cell("procrastinate", 1, PEER_WORKERS, note="4 processes x concurrency 1, 1 job per fetch")
    with fresh_schema(url, "procrastinate") as schema:
        asyncio.run(_procrastinate_fill(url, schema, 0, install=True))
        with WorkerGroup(_procrastinate_worker, (url, schema), PEER_WORKERS) as group:
            for _ in range(repeat):
                asyncio.run(_procrastinate_fill(url, schema, jobs, install=False))
                seconds, done = group.round()
                ok = _procrastinate_succeeded(url, schema)
                if done != jobs or ok != jobs:
                    raise RuntimeError(f"procrastinate: ran {done}, succeeded {ok}, expected {jobs}")
                cell.samples.append(jobs / seconds)
        if account:
            asyncio.run(_procrastinate_fill(url, schema, jobs, install=False))
            time.sleep(SESSIONS_EXIT_S)
            cell.usage = drain_usage(url, WorkerGroup(_procrastinate_worker, (url, schema), PEER_WORKERS), None, jobs)
    return cell


def _pgqueuer_driver() -> str:
    """pgqueuer's default driver is asyncpg; its psycopg driver holds the connection while it waits for
    NOTIFY (up to 1 s), which stalls a drain, so psycopg is only the fallback."""
    return "asyncpg" if importlib.util.find_spec("asyncpg") else "psycopg"


def _pgqueuer_worker(url: str, schema: str, events, commands) -> None:
    """One PgQueuer per process on its own connection, async no-op entrypoint, default batch size, drain
    mode, as in pgqueuer's own drain benchmark (which runs several PgQueuer instances)."""
    from pgqueuer import PgQueuer
    from pgqueuer.types import QueueExecutionMode

    def prepare():
        runner = asyncio.Runner()
        if _pgqueuer_driver() == "asyncpg":
            import asyncpg

            conn = runner.run(asyncpg.connect(url, server_settings={"search_path": schema}))
            build = PgQueuer.from_asyncpg_connection
        else:
            conn = runner.run(psycopg.AsyncConnection.connect(url, autocommit=True, options=schema_options(schema)))
            build = PgQueuer.from_psycopg_connection

        def work(_: object) -> int:
            before = _executed
            pgq = build(conn)  # a PgQueuer's shutdown event stays set after a drain: one per round
            pgq.entrypoint("noop")(_noop_entrypoint)
            runner.run(pgq.run(batch_size=PGQUEUER_BATCH, mode=QueueExecutionMode.drain))
            return _executed - before

        def close() -> None:
            runner.run(conn.close())
            runner.close()

        return work, close

    child_main(prepare, events, commands)


async def _pgqueuer_fill(url: str, schema: str, jobs: int, install: bool) -> None:
    from pgqueuer import PsycopgDriver, Queries

    async with await psycopg.AsyncConnection.connect(url, autocommit=True, options=schema_options(schema)) as conn:
        queries = Queries(PsycopgDriver(conn))
        if install:
            await queries.install()
        await queries.clear_queue()
        await queries.clear_queue_log()
        await queries.clear_statistics_log()
        if jobs:
            await queries.enqueue(["noop"] * jobs, [None] * jobs, [0] * jobs)


def measure_pgqueuer(url: str, jobs: int, repeat: int, account: bool) -> Cell:
    cell = Cell("pgqueuer", PGQUEUER_BATCH, PEER_WORKERS,
                note=f"4 processes, batch 10, drain mode, {_pgqueuer_driver()} driver")
    with fresh_schema(url, "pgqueuer") as schema:
        asyncio.run(_pgqueuer_fill(url, schema, 0, install=True))
        with WorkerGroup(_pgqueuer_worker, (url, schema), PEER_WORKERS) as group:
            for _ in range(repeat):
                asyncio.run(_pgqueuer_fill(url, schema, jobs, install=False))
                seconds, done = group.round()
                with psycopg.connect(url, options=schema_options(schema)) as conn:
                    left = conn.execute("SELECT count(*) FROM pgqueuer").fetchone()[0]
                if done != jobs or left:
                    raise RuntimeError(f"pgqueuer: ran {done}, {left} left in the queue, expected {jobs}")
                cell.samples.append(jobs / seconds)
        if account:
            asyncio.run(_pgqueuer_fill(url, schema, jobs, install=False))
            time.sleep(SESSIONS_EXIT_S)
            cell.usage = drain_usage(url, WorkerGroup(_pgqueuer_worker, (url, schema), PEER_WORKERS), None, jobs)
    return cell
