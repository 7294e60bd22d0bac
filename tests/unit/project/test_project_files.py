"""The project's own files agree with each other."""
from __future__ import annotations

import ast
import json
import re
import tomllib
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.unit
REPO = Path(__file__).resolve().parents[3]


def test_environment_yml_lists_the_pyproject_dependencies():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = pyproject["optional-dependencies"]
    wanted = pyproject["dependencies"] + extras["test"] + extras["tools"]
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    assert sorted(x for x in pip if not x.startswith("-e")) == sorted(wanted)


def test_readme_opens_with_the_two_commands():
    head = "\n".join((REPO / "README.md").read_text().splitlines()[:8])
    assert "make rehearse" in head and "make test" in head


@pytest.mark.parametrize("nb", sorted((REPO / "notebooks").glob("*.ipynb")), ids=lambda p: p.name)
def test_source_notebooks_are_committed_without_outputs(nb):
    doc = json.loads(nb.read_text())
    code = [c for c in doc["cells"] if c["cell_type"] == "code"]
    assert code, "a phase notebook has code cells"
    assert all(not c.get("outputs") and not c.get("execution_count") for c in code)
    params = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(params) == 1, "exactly one cell tagged parameters"
    src = "".join(params[0]["source"])
    for name in ("params_file", "run_dir", "execute: bool = False", "confirm"):
        assert name in src


TWIN = REPO / "lib" / "twin"
RUNBOOK = REPO / "lib" / "runbook"
#: The runbook's CLI side: the only modules that may start (and so know) a twin.
MAY_KNOW_THE_TWIN = {RUNBOOK / "cli.py", RUNBOOK / "rehearse.py", RUNBOOK / "rehearse_probe.py"}
#: Twin-only names that are not found by the harvest below (bare annotation keys).
TWIN_ONLY_NAMES = ("sandbox-cni",)


def _twin_only_names() -> set[str]:
    """What only the twin knows: its annotation/label domains and keys, its module paths.

    Harvested from lib/twin, so a name the twin adds later is caught without editing
    this test: every ``<domain with 'twin'>/<key>`` string (its domain and the full key)
    and every ``twin.<module>`` dotted path.
    """
    names = set(TWIN_ONLY_NAMES)
    key = re.compile(r"\b([a-z0-9.-]*twin[a-z0-9.-]*\.[a-z]{2,})/([A-Za-z0-9._-]*)")
    for py in TWIN.rglob("*.py"):
        for m in key.finditer(py.read_text()):
            names.add(m.group(1))
            if m.group(2):
                names.add(f"{m.group(1)}/{m.group(2)}")
    for path in TWIN.rglob("*.py"):
        parts = path.relative_to(TWIN).with_suffix("").parts
        parts = parts[:-1] if parts[-1] == "__init__" else parts
        if parts:
            names.add("twin." + ".".join(parts))
    return names


def _twin_leaks(source: str, names: set[str]) -> list[str]:
    """Imports of the twin (static or dynamic) and twin-only names in Python ``source``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        mods: list[str] = []
        if isinstance(node, ast.Import):
            mods = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            mods = [node.module or ""]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            fn = node.func
            fname = fn.id if isinstance(fn, ast.Name) else fn.attr if isinstance(fn, ast.Attribute) else ""
            if fname in ("__import__", "import_module") and isinstance(node.args[0].value, str):
                mods = [node.args[0].value]
        found += [f"imports {m}" for m in mods if m == "twin" or m.startswith("twin.")]
    for name in sorted(names):
        if name not in source:      # the regex below needs the name itself: skip it cheaply
            continue
        # a module path must stand alone: ``params.twin.admin_url`` is a params field
        pattern = (r"(?<![\w.])" if name.startswith("twin.") else r"(?<![\w-])") + \
            re.escape(name) + r"(?![\w-])"
        if re.search(pattern, source):
            found.append(f"names {name}")
    return found


def _runbook_sources() -> list[tuple[str, str]]:
    """(label, Python source) of every runbook module and every notebook code cell."""
    out = [(str(py.relative_to(REPO)), py.read_text()) for py in sorted(RUNBOOK.rglob("*.py"))
           if py not in MAY_KNOW_THE_TWIN]
    for nb in sorted((REPO / "notebooks").glob("*.ipynb")):
        for i, cell in enumerate(json.loads(nb.read_text())["cells"]):
            if cell["cell_type"] == "code":
                src = "".join(cell["source"])
                # IPython magics and shell escapes are not Python
                src = "\n".join(ln for ln in src.splitlines() if not ln.lstrip().startswith(("%", "!")))
                out.append((f"{nb.relative_to(REPO)} cell {i}", src))
    return out


def test_the_twin_leak_detector_catches_every_kind_of_leak():
    names = _twin_only_names()
    assert {"twin.phase22.io", "twin.phase22.io/sandbox-cni", "sandbox-cni", "twin.node",
            "twin.fixtures", "twin.controllers.kubelet"} <= names
    leaky = {
        "import twin": "imports twin",
        "import twin.api as a": "imports twin.api",
        "from twin.fixtures import load": "imports twin.fixtures",
        "m = importlib.import_module('twin.store')": "imports twin.store",
        "m = __import__('twin')": "imports twin",
        "ann = pod['metadata']['annotations']['twin.phase22.io/sandbox-cni']":
            "names twin.phase22.io/sandbox-cni",
        "k = 'sandbox-cni'": "names sandbox-cni",
        "DOMAIN = 'twin.phase22.io'": "names twin.phase22.io",
        '"""Mirrors twin.node.NodeModel."""': "names twin.node",
    }
    for source, leak in leaky.items():
        assert leak in _twin_leaks(source, names), source
    for clean in ("url = p.twin.admin_url", "field = 'twin.chart_repo_url'",
                  "kind: Literal['real', 'twin']", "import twine", "from .twin_facts import x"):
        assert _twin_leaks(clean, names) == [], clean


def test_runbook_never_imports_or_names_the_twin():
    """Only the CLI's rehearse side may start a twin: the library and the notebooks work
    from what a real cluster offers, never from the twin's internals or annotations."""
    names = _twin_only_names()
    offenders = {label: leaks for label, src in _runbook_sources()
                 if (leaks := _twin_leaks(src, names))}
    assert offenders == {}


def test_test_modules_have_unique_basenames():
    """pytest's default import mode refuses two test modules with the same basename."""
    from collections import Counter

    names = Counter(p.name for p in (REPO / "tests").rglob("*.py")
                    if p.name not in ("conftest.py", "__init__.py"))
    assert [n for n, c in names.items() if c > 1] == []
