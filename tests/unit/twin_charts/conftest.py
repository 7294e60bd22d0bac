"""Fixtures of the twin chart unit tests (helm_bin, tool_env, cilium_chart come from
tests/conftest.py)."""
from __future__ import annotations

import pytest

from twin_charts_helpers import STANDIN, helm_template, objects


@pytest.fixture(scope="module")
def module_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A helm environment whose HOME and XDG dirs are in a temporary directory."""
    import os

    home = tmp_path_factory.mktemp("helmhome")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBE", "HELM_"))}
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"),
               XDG_CACHE_HOME=str(home / ".cache"), XDG_DATA_HOME=str(home / ".local/share"))
    return env


@pytest.fixture(scope="module")
def standin_phase22(helm_bin: str, module_env: dict[str, str]):
    """The stand-in rendered with the Phase 22 values, by (kind, namespace, name)."""
    return objects(helm_template(helm_bin, module_env, STANDIN).stdout)
