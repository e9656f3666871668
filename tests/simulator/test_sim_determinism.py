"""Answers and faults are fixed by the seed and the request, not by timing or request order."""

from __future__ import annotations

import json
import time

import openai

from forge_dagster.simulator import SimConfig, Simulator

FAULTS = SimConfig(malformed_rate=0.3, truncation_rate=0.2, refusal_rate=0.2, line_4xx_rate=0.2,
                   out_of_order=True)


def _stable(line: dict) -> dict:
    """A batch output line without ids and timestamps."""
    body = line["response"]["body"]
    if "choices" in body:
        return {"custom_id": line["custom_id"], "status": line["response"]["status_code"],
                "choices": body["choices"], "usage": body["usage"]}
    return {"custom_id": line["custom_id"], "status": line["response"]["status_code"], "error": body["error"]}


def _run(seed: int, make_batch_file, order: list[int]) -> tuple[list, list]:
    with Simulator(seed=seed, config=FAULTS) as sim:
        client = openai.OpenAI(base_url=sim.openai_base_url, api_key="sk-det", max_retries=0)
        chats = {}
        for i in order:
            reply = client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": f"prompt {i}"}])
            chats[i] = reply.choices[0].model_dump()
        uploaded = client.files.create(file=("in.jsonl", make_batch_file(20)), purpose="batch")
        batch = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                      completion_window="24h")
        deadline = time.monotonic() + 10
        while (batch := client.batches.retrieve(batch.id)).status != "completed":
            assert time.monotonic() < deadline
        lines = [json.loads(x) for x in client.files.content(batch.output_file_id).text.splitlines()]
        return [chats[i] for i in sorted(chats)], [_stable(line) for line in lines]


def test_same_seed_gives_the_same_answers_faults_and_line_order_whatever_the_request_order(make_batch_file):
    chats_a, lines_a = _run(7, make_batch_file, order=list(range(12)))
    chats_b, lines_b = _run(7, make_batch_file, order=list(reversed(range(12))))
    assert chats_a == chats_b
    assert lines_a == lines_b
    finish = {c["finish_reason"] for c in chats_a} | {str(c["message"]["refusal"] is not None) for c in chats_a}
    assert len(finish) > 1  # the fault rates really produced a mix


def test_a_different_seed_gives_different_answers(make_batch_file):
    chats_a, lines_a = _run(1, make_batch_file, order=list(range(4)))
    chats_b, lines_b = _run(2, make_batch_file, order=list(range(4)))
    assert chats_a != chats_b and lines_a != lines_b
