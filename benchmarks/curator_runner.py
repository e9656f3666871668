"""Run by curator's own interpreter (FORGE_BENCH_CURATOR_PYTHON), not by Forge's: curator's online mode
on the chat bodies of a JSON file, against a base URL, within an RPM and a concurrency; prints one JSON
line {"seconds", "cpu_s", "done"}. Imports nothing from Forge (curator pins its own SDK versions)."""

import importlib.util
import json
import os
import resource
import sys
import tempfile
import time

os.environ.setdefault("TELEMETRY_ENABLED", "False")
os.environ.setdefault("CURATOR_DISABLE_CACHE", "true")
os.environ.setdefault("CURATOR_DISABLE_RICH_DISPLAY", "1")
os.environ.setdefault("BESPOKE_CURATOR_TRACKER_DISABLED", "1")
# Offline: tiktoken's encodings from the copies LiteLLM (a dependency of curator) ships, not downloaded.
_litellm = importlib.util.find_spec("litellm")
if _litellm is not None and _litellm.origin:
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", os.path.join(os.path.dirname(_litellm.origin),
                                                             "litellm_core_utils", "tokenizers"))

from bespokelabs import curator  # noqa: E402


class Chat(curator.LLM):
    def prompt(self, row):
        return json.loads(row["messages"])

    def parse(self, row, response):
        return {"answer": response}


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    spec = json.load(open(sys.argv[1]))
    bodies = spec["bodies"]
    first = bodies[0]
    llm = Chat(model_name=first["model"], backend="openai",
               generation_params={"max_tokens": first.get("max_tokens"), "temperature": first.get("temperature")},
               backend_params={"base_url": spec["base_url"], "api_key": "sk-bench-curator",
                               "max_requests_per_minute": spec["rpm"], "max_tokens_per_minute": 10_000_000,
                               "max_concurrent_requests": spec["concurrency"], "max_retries": 5,
                               "require_all_responses": False})
    rows = [{"messages": json.dumps(b["messages"])} for b in bodies]
    cpu, began = cpu_s(), time.time()
    result = llm(rows, working_dir=tempfile.mkdtemp())
    seconds, cpu = time.time() - began, cpu_s() - cpu
    done = len(result.dataset) if hasattr(result, "dataset") else len(result)
    print(json.dumps({"seconds": seconds, "cpu_s": cpu, "done": done}))


if __name__ == "__main__":
    main()
