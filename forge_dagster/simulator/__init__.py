"""Forge provider SIMULATOR: a local test double (not a provider) for the OpenAI, Anthropic, Ollama and
Slack-incoming-webhook wire formats, with deterministic fault injection.

    from forge_dagster.simulator import Simulator, SimConfig
    with Simulator(seed=0, config=SimConfig(batch_processing_s=1)) as sim:
        client = openai.OpenAI(base_url=sim.openai_base_url, api_key="sk-test")
"""

from forge_dagster.simulator.config import SimConfig, add_cli_arguments, config_from_args
from forge_dagster.simulator.server import Simulator, serve

__all__ = ["SimConfig", "Simulator", "add_cli_arguments", "config_from_args", "serve"]
