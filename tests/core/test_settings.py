"""Settings are the only readers of the environment, and every variable Forge names is a declared knob."""

import ast
import re
from pathlib import Path

from forge_dagster.core.config import load_settings
from forge_dagster.core.knobs import KNOBS, declared
from forge_dagster.core.ops.archive import archive_age_hours

PACKAGE = Path(__file__).resolve().parents[2] / "forge_dagster"
SETTINGS_MODULES = {PACKAGE / "core" / "config.py", PACKAGE / "core" / "nightly" / "settings.py"}
VARIABLE = re.compile(r"\b(?:FORGE|OPENAI|ANTHROPIC|OLLAMA)_[A-Z0-9_]+")


def _sources() -> list[tuple[Path, ast.Module]]:
    return [(path, ast.parse(path.read_text(), str(path))) for path in sorted(PACKAGE.rglob("*.py"))]


def _is_os(node: ast.AST, name: str) -> bool:
    return isinstance(node, ast.Attribute) and node.attr == name and isinstance(node.value, ast.Name) \
        and node.value.id == "os"


def _environment_reads(tree: ast.Module) -> list[int]:
    """Lines that read os.environ or call os.getenv. Writing a variable (`os.environ[X] = ...`) and copying
    the whole environment for a child process (`dict(os.environ)`, `{**os.environ, ...}`) are not reads."""
    parents = {child: parent for parent in ast.walk(tree) for child in ast.iter_child_nodes(parent)}
    lines = []
    for node in ast.walk(tree):
        if _is_os(node, "getenv"):
            lines.append(node.lineno)
        elif _is_os(node, "environ"):
            parent = parents.get(node)
            written = isinstance(parent, ast.Subscript) and isinstance(parent.ctx, ast.Store)
            copied = (isinstance(parent, ast.Call) and isinstance(parent.func, ast.Name) and parent.func.id == "dict"
                      and parent.args == [node]) or (isinstance(parent, ast.Dict) and None in parent.keys
                                                     and parent.values[parent.keys.index(None)] is node)
            if not (written or copied):
                lines.append(node.lineno)
    return lines


def test_only_the_settings_modules_read_the_environment():
    readers = {f"{path.relative_to(PACKAGE)}:{line}" for path, tree in _sources() if path not in SETTINGS_MODULES
               for line in _environment_reads(tree)}
    assert readers == set(), "read the knob through load_settings() (core/config.py) instead"


def test_the_guard_sees_a_read():
    tree = ast.parse("import os\nx = os.environ.get('FORGE_X')\ny = os.getenv('FORGE_Y')\nos.environ['FORGE_Z'] = '1'\n"
                     "env = {**os.environ, 'A': '1'}\nz = dict(os.environ)\nw = f(os.environ)\n")
    assert sorted(_environment_reads(tree)) == [2, 3, 7]


def variables_named_in_code() -> set[str]:
    """Every variable name (or prefix, ending in `_`) in a string of the package: code, messages, docstrings."""
    names = set()
    for _, tree in _sources():
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                names |= set(VARIABLE.findall(node.value))
    return names


def test_every_variable_named_in_the_code_is_a_declared_knob():
    names = variables_named_in_code()
    undeclared = {n for n in names if not (declared(n) or (n.endswith("_") and any(
        k.env.startswith(n) for k in KNOBS)))}
    assert undeclared == set(), "declare it in core/config.py (or core/nightly/settings.py) with its help"
    assert {"FORGE_DATABASE_URL", "FORGE_OUTBOX_MAX_LAG_S", "FORGE_PRICES_FILE"} <= names


def test_every_knob_says_what_it_does():
    assert all(k.help for k in KNOBS), [k.env for k in KNOBS if not k.help]
    assert len({k.env for k in KNOBS}) == len(KNOBS)


def test_settings_of_a_given_environment_ignore_the_process_environment(monkeypatch):
    monkeypatch.setenv("FORGE_ARCHIVE_AFTER_HOURS", "3")
    monkeypatch.setenv("OPENAI_API_KEY_BACKUP", "sk-from-the-process")
    given = load_settings({"FORGE_OUTBOX_MAX_LAG_S": "", "OPENAI_API_KEY": "sk-given"})
    assert given.archive_after_hours == 168.0 and given.outbox_max_lag_s == 900.0  # blank is unset
    assert given.provider_environ == {"OPENAI_API_KEY": "sk-given"}
    assert load_settings().archive_after_hours == 3.0 == archive_age_hours()
    assert load_settings().provider_environ["OPENAI_API_KEY_BACKUP"] == "sk-from-the-process"


def test_a_changed_environment_is_read_again_and_a_copy_changes_alone(monkeypatch):
    monkeypatch.setenv("FORGE_DB_SCHEMA", "one")
    first = load_settings()
    first.store_schema = "changed by its caller"
    assert load_settings().store_schema == "one"
    monkeypatch.setenv("FORGE_DB_SCHEMA", "two")
    assert load_settings().store_schema == "two"


def test_the_provider_environ_carries_the_variables_provider_keys_names():
    env = {"FORGE_PROVIDER_KEYS": '[{"provider": "openai", "alias": "team", "env": "TEAM_KEY"}]',
           "TEAM_KEY": "sk-team", "UNRELATED": "x", "FORGE_SIMULATOR_URL": "http://127.0.0.1:9"}
    assert load_settings(env).provider_environ == {k: v for k, v in env.items() if k != "UNRELATED"}


def test_nightly_settings_of_a_given_environment(monkeypatch):
    from forge_dagster.core.nightly.settings import load_nightly_settings

    monkeypatch.setenv("FORGE_NIGHTLY_MODEL", "from-the-process")
    given = load_nightly_settings({"FORGE_NIGHTLY_CRON": "0 3 * * *"})
    assert (given.cron, given.model) == ("0 3 * * *", "llama3.2:3b")
    assert load_nightly_settings().model == "from-the-process"
