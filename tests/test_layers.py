"""Imports flow one way: a module imports only modules of its own layer or of a layer below.

The map below is the architecture in one table, top to bottom. A module in
no layer fails ``test_every_module_has_a_layer`` with a message saying where
to add it. Every import counts, wherever it is (a function body, a
TYPE_CHECKING block): a lazy upward import is still an upward dependency.
"""

from __future__ import annotations

import ast
from fnmatch import fnmatchcase
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parent.parent / "src"

# (layer, module patterns), from the top. Patterns are fnmatch-style; a
# package's modules are "susee.links" and "susee.links.*".
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("cli", ("susee.cli", "susee.__main__", "susee.logs")),
    ("commands", ("susee.commands", "susee.profile_commands", "susee.legacy", "susee.report.command",
                  "susee.report.arguments", "susee.report.outputs", "susee.storage_commands")),
    ("supervision", ("susee.supervisor", "susee.workers", "susee.http", "susee.http.*", "susee.web", "susee.web.*",
                     "susee.status", "susee.upkeep")),
    # The report's figures (reader, counter arithmetic, bands): `susee report` and the live page use them.
    ("figures", ("susee.report", "susee.report.*")),
    # devices composes settings, profiles, a link endpoint and the sinks' param rows into a device's plan.
    ("acquisition", ("susee.poller", "susee.backoff", "susee.writer", "susee.devices")),
    ("io", ("susee.links", "susee.links.*",
            "susee.store", "susee.replay", "susee.rollup", "susee.partitions", "susee.retention", "susee.compact",
            "susee.sinks", "susee.sinks.*", "susee.spool", "susee.dbcheck",
            "susee.simulator")),
    ("foundation", ("susee", "susee.config", "susee.validation", "susee.codec", "susee.planner", "susee.profiles",
                    "susee.quality", "susee.sample", "susee.ticks", "susee.shown", "susee.migrations",
                    "susee.runtime", "susee.simulator_model", "susee.expressions", "susee.bus_key")),
]


def layer_of(module: str) -> int | None:
    """Index of the layer ``module`` belongs to (0 is the top), or None."""
    for index, (_, patterns) in enumerate(LAYERS):
        if any(fnmatchcase(module, pattern) for pattern in patterns):
            return index
    return None


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SOURCE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(path): path for path in sorted(SOURCE.rglob("*.py"))}


def imported_modules(module: str, tree: ast.AST) -> set[str]:
    """The susee modules ``tree`` imports (``from susee import commands`` is susee.commands)."""
    found: set[str] = set()
    package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . import x, from .sinks import y
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.add(submodule if submodule in MODULES else base)
    return {name for name in found if name == "susee" or name.startswith("susee.")}


def upward(module: str, imported: str) -> bool:
    """True if ``module`` importing ``imported`` goes against the direction of the layers."""
    mine, theirs = layer_of(module), layer_of(imported)
    return mine is not None and theirs is not None and theirs < mine


@pytest.mark.parametrize(
    ("module", "imported", "is_upward"),
    [
        ("susee.spool", "susee.writer", True),  # io -> acquisition
        ("susee.config", "susee.sinks", True),  # foundation -> io
        ("susee.links.tcp", "susee.poller", True),  # a future package module has its layer already
        ("susee.store", "susee.replay", False),  # same layer
        ("susee.writer", "susee.store", False),  # down
        ("susee.cli", "susee.sample", False),
        ("susee.sinks.prepared", "susee.sinks.packets", False),
        ("susee.rollup", "susee.status", True),
    ],
)
def test_the_rule(module, imported, is_upward) -> None:
    assert upward(module, imported) is is_upward


@pytest.mark.parametrize("module", sorted(MODULES))
def test_every_module_has_a_layer(module) -> None:
    assert layer_of(module) is not None, (
        f"{module} is in no layer of tests/test_layers.py: add it to LAYERS, in the layer of the modules it "
        f"serves (at or below the lowest layer that imports it, at or above everything it imports)"
    )


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_imports_a_layer_above_its_own(module) -> None:
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"), str(MODULES[module]))
    wrong = sorted(name for name in imported_modules(module, tree) if upward(module, name))
    layers = {name: LAYERS[layer_of(name)][0] for name in [module, *wrong]}
    assert not wrong, f"{module} ({layers[module]}) imports from above: " + ", ".join(
        f"{name} ({layers[name]})" for name in wrong
    )
