"""Imports run one way: a module imports from its own folder or from a layer below it (README: Architecture)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Bottom to top. Folders on one line are one layer and do not import each other.
LAYERS = [
    ["simulator.core"],
    ["simulator.models"],
    ["simulator.conversation"],
    ["evaluations.judge", "simulator.storage"],
    ["simulator.runs", "evaluations.analysis"],
    ["simulator.api"],
    ["simulator.view"],  # the viewer: a layer of its own that reads the store and the analysis, never the models
    ["simulator.cli"],
    ["simulator.__main__"],
]
RANK = {folder: rank for rank, folders in enumerate(LAYERS) for folder in folders}
ONLY = {"simulator.storage": {"simulator.core"},  # the store reads and writes records and nothing else
        "simulator.view": {"simulator.core", "simulator.storage", "evaluations.analysis"}}


def folder(module: str) -> str | None:
    """The layer folder a dotted module name lives in: `folder('simulator.models.chat')` -> 'simulator.models'."""
    parts = module.split(".")
    for n in (2, 1):
        if ".".join(parts[:n]) in RANK:
            return ".".join(parts[:n])
    return None


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) for every first-party import in a file, relative ones resolved, function-level ones included."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]) if node.level else ""
            module = ".".join(p for p in (base, node.module) if p)
            found += [(node.lineno, f"{module}.{a.name}" if node.module is None else module) for a in node.names]
    return [(line, m) for line, m in found if m.split(".")[0] in ("simulator", "evaluations")]


def modules() -> list[Path]:
    return sorted(p for top in ("simulator", "evaluations") for p in (ROOT / top).rglob("*.py") if "_data" not in p.parts)


def upward(path: Path) -> list[str]:
    """The imports in `path` that break the layering, as 'file:line imports module (why)'."""
    source = folder(".".join(path.relative_to(ROOT).with_suffix("").parts))
    if source is None:  # a package's own __init__ at the top (docstring only)
        return [f"{path.relative_to(ROOT)}:{line} imports {m} (a top-level __init__ stays empty)" for line, m in imports(path)]
    problems = []
    for line, module in imports(path):
        target = folder(module)
        if target == source:
            continue
        if target is None or RANK[target] >= RANK[source] or (source in ONLY and target not in ONLY[source]):
            problems.append(f"{path.relative_to(ROOT)}:{line} imports {module} ({source} may not import {target})")
    return problems


def test_every_module_is_in_a_layer_folder():
    loose = [str(p.relative_to(ROOT)) for p in modules()
             if folder(".".join(p.relative_to(ROOT).with_suffix("").parts)) is None and p.name != "__init__.py"]
    assert loose == []


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_run_one_way(path):
    assert upward(path) == []


def test_the_check_sees_an_upward_import(tmp_path, monkeypatch):
    """The rule can fail: a store that imports the conversation graph, or a relative import up from the chat layer."""
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    (tmp_path / "simulator" / "storage").mkdir(parents=True)
    (tmp_path / "simulator" / "models").mkdir()
    store = tmp_path / "simulator" / "storage" / "store.py"
    store.write_text("def f():\n    from simulator.conversation.runner import usage\n")
    chat = tmp_path / "simulator" / "models" / "chat.py"
    chat.write_text("from ..runs.batch import run_grid\nfrom .openai_backend import x\n")
    assert upward(store) == ["simulator/storage/store.py:2 imports simulator.conversation.runner "
                             "(simulator.storage may not import simulator.conversation)"]  # fmt: skip
    assert upward(chat) == ["simulator/models/chat.py:1 imports simulator.runs.batch (simulator.models may not import simulator.runs)"]
