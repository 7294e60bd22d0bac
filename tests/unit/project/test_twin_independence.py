"""lib/twin stands alone: nothing in it imports the runbook.

The runbook side (only its CLI and rehearse command import ``twin``) is checked in
test_project_files.py; this is the twin side. Two views: every import statement in the
source (also those inside functions), and what importing every twin module really loads.
"""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.unit, pytest.mark.timeout(120)]
REPO = Path(__file__).resolve().parents[3]
TWIN = REPO / "lib" / "twin"


def _imported_modules(py: Path) -> list[tuple[int, str]]:
    """(line, module) of every absolute import in ``py``, wherever it sits."""
    found = []
    for node in ast.walk(ast.parse(py.read_text(), filename=str(py))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def _is_runbook(module: str) -> bool:
    return module == "runbook" or module.startswith("runbook.")


def test_no_twin_source_file_imports_the_runbook() -> None:
    sources = sorted(TWIN.rglob("*.py"))
    assert len(sources) > 20, "lib/twin's modules were not found"
    offenders = [f"{py.relative_to(REPO)}:{line}: {module}"
                 for py in sources for line, module in _imported_modules(py) if _is_runbook(module)]
    assert offenders == []


def test_importing_every_twin_module_loads_nothing_of_the_runbook() -> None:
    probe = (
        "import importlib, json, pkgutil, sys, twin\n"
        "names = [m.name for m in pkgutil.walk_packages(twin.__path__, 'twin.')]\n"
        "for name in names:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps({'modules': names,\n"
        "                  'runbook': sorted(n for n in sys.modules\n"
        "                                    if n == 'runbook' or n.startswith('runbook.'))}))\n"
    )
    p = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=90,
                       cwd=REPO)
    assert p.returncode == 0, p.stderr
    seen = json.loads(p.stdout.splitlines()[-1])
    assert {"twin.api", "twin.store", "twin.apiserver", "twin.chartrepo", "twin.errors"} <= set(seen["modules"])
    assert seen["runbook"] == []
