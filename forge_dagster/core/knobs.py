"""Every environment variable Forge reads or sets, as a list a docs generator and the tests enumerate.

The settings classes declare the knobs (`core/config.py`, `core/nightly/settings.py`); this module only
lists them, with the provider keys' variable families and the variables Forge sets for child processes.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic_settings import BaseSettings

from forge_dagster.core.config import ForgeSettings
from forge_dagster.core.nightly.settings import NightlySettings


@dataclass(frozen=True)
class Knob:
    """One environment variable: its name (`<NAME>` marks a family), its default as text, what it does."""

    env: str
    default: str
    help: str


def settings_knobs(model: type[BaseSettings]) -> tuple[Knob, ...]:
    """The knobs a settings class declares: a field's alias, else the class's prefix and its name."""
    prefix = model.model_config.get("env_prefix", "")
    knobs = []
    for name, field in model.model_fields.items():
        if field.default_factory is not None:
            default = f"{field.default_factory.__name__}()"
        else:
            default = "" if field.default is None else str(field.default)
        knobs.append(Knob(field.alias or f"{prefix}{name}".upper(), default, field.description or ""))
    return tuple(knobs)


# The provider keys' families, read by core/providers/keyring.py from `ForgeSettings.provider_environ`.
PROVIDER_KEY_FAMILIES = tuple(
    knob for prefix, who in (("OPENAI", "OpenAI"), ("ANTHROPIC", "Anthropic")) for knob in (
        Knob(f"{prefix}_API_KEY_<NAME>", "", f"Another {who} key, alias <name> in lower case."),
        Knob(f"{prefix}_BASE_URL_<NAME>", "", f"The base URL of {who} key <NAME>; unset: {prefix}_BASE_URL."),
        Knob(f"{prefix}_RPM", "", f"Requests per minute of every {who} key; unset: from the provider's headers."),
        Knob(f"{prefix}_TPM", "", f"Tokens per minute of every {who} key; unset: from the provider's headers."),
        Knob(f"{prefix}_RPM_<NAME>", "", f"Requests per minute of {who} key <NAME>."),
        Knob(f"{prefix}_TPM_<NAME>", "", f"Tokens per minute of {who} key <NAME>."),
    ))

# Set by Forge for the processes it starts, never read as a knob by Forge itself.
EXPORTED = (
    Knob("FORGE_ADAPTER_OUTPUT", "", "Set for an adapter's training command: the folder to write into."),
    Knob("FORGE_GPU_FENCE", "", "Set for an adapter's training command: the GPU mutex's fence it holds."),
)

KNOBS: tuple[Knob, ...] = (*settings_knobs(ForgeSettings), *settings_knobs(NightlySettings), *PROVIDER_KEY_FAMILIES)


def declared(name: str) -> bool:
    """True when `name` is a knob, an exported variable or a member of a family (`OPENAI_API_KEY_2`)."""
    for knob in (*KNOBS, *EXPORTED):
        head, family, _ = knob.env.partition("<NAME>")
        if name == knob.env or (family and name.startswith(head) and len(name) > len(head)):
            return True
    return False
