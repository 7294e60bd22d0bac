"""The project's own files agree with each other."""
from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.unit
REPO = Path(__file__).resolve().parents[3]


def test_environment_yml_lists_the_pyproject_dependencies():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = pyproject["dependencies"] + pyproject["optional-dependencies"]["test"]
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


def test_runbook_library_never_imports_the_twin():
    """Only the CLI's rehearse module may start a twin; notebooks' modules must not know it."""
    offenders = []
    for py in (REPO / "lib" / "runbook").glob("*.py"):
        if py.name in ("rehearse.py", "cli.py"):
            continue
        text = py.read_text()
        if "import twin" in text or "from twin" in text:
            offenders.append(py.name)
    assert offenders == []


def test_test_modules_have_unique_basenames():
    """pytest's default import mode refuses two test modules with the same basename."""
    from collections import Counter

    names = Counter(p.name for p in (REPO / "tests").rglob("*.py")
                    if p.name not in ("conftest.py", "__init__.py"))
    assert [n for n, c in names.items() if c > 1] == []
