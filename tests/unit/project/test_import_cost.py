"""The runbook's processes do not pay for ``kubernetes_validate`` (runbook.import_cost)."""
from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = [pytest.mark.unit]

PROBE = """
import sys
from runbook.cluster import Cluster          # noqa: F401  (the module notebooks use)
from runbook.import_cost import import_kubernetes
import_kubernetes()
import kubernetes.client, kubernetes.dynamic.client as dyn
print("jsonschema" in sys.modules, "kubernetes_validate" in sys.modules, dyn.HAS_KUBERNETES_VALIDATE)
import kubernetes_validate                     # still installed and importable (the twin reads it)
print(kubernetes_validate.__file__.endswith("__init__.py"))
"""


def test_the_client_import_leaves_the_validator_and_jsonschema_out_and_importable_later():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False", "False", "True"]


def test_an_earlier_import_of_kubernetes_is_left_as_it_was():
    probe = ("import sys, kubernetes.dynamic.client as d\n"
             "from runbook.import_cost import import_kubernetes\n"
             "import_kubernetes(); print(d.HAS_KUBERNETES_VALIDATE)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "True"
