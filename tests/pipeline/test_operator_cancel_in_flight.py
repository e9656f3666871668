"""A job an operator cancels while its batch is at the provider: the batch's late result for it is refused
by the fence (never accepted, never succeeded), and the rest of the batch settles as usual."""

from __future__ import annotations

from forge_dagster.core.batch.building import build_and_submit
from forge_dagster.core.batch.collection import collect_results, poll_open_batches, validate_batch
from forge_dagster.core.ops.operator import cancel_jobs
from tests.pipeline.conftest import ticket
from tests.pipeline.test_engine import enqueue


def test_a_late_batch_result_for_a_cancelled_job_is_refused(store, catalog, ports, sim):
    ids = enqueue(store, [ticket(i) for i in range(4)])
    build_and_submit(store, catalog, ports)
    assert store.jobs.counts() == {"submitted": 4}
    report = cancel_jobs(store, [ids[0]], reason="wrong customer")
    assert report.changed == {ids[0]: "submitted"}

    [batch_id] = poll_open_batches(store, ports).ended
    collect_results(store, ports, batch_id)  # the provider answered all four
    validate_batch(store, catalog, batch_id)

    assert store.jobs.counts() == {"succeeded": 3, "cancelled": 1}
    cancelled = store.jobs.get(ids[0])
    assert cancelled["output"] is None and cancelled["reason"] == "cancelled: wrong customer"
    assert store.jobs.story(ids[0])["accepted"] == []
    assert store.jobs.stranded_count() == 0
    assert store.batches.get(batch_id)["state"] == "collected"
