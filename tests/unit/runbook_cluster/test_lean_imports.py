"""runbook.lean_imports: the official client and jsonschema without the optional parts
the runbook never uses, in a fresh interpreter (an import is once per process)."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

pytestmark = [pytest.mark.unit, pytest.mark.timeout(120)]


def _fresh(code: str) -> dict:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                         check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_kubernetes_without_its_optional_validator():
    got = _fresh("""
        import json, sys
        from runbook import lean_imports
        k8s = lean_imports.kubernetes()
        seen = {m: m in sys.modules for m in ("kubernetes_validate", "jsonschema", "rfc3987_syntax")}
        usable = hasattr(k8s.client, "CoreV1Api") and hasattr(k8s.config, "load_kube_config") \\
            and hasattr(k8s.stream, "stream")
        import kubernetes_validate   # still there for whoever imports it later
        print(json.dumps({"seen": seen, "usable": usable,
                          "dynamic_validates": k8s.dynamic.client.HAS_KUBERNETES_VALIDATE,
                          "later": kubernetes_validate.__name__}))
    """)
    assert got == {"seen": {"kubernetes_validate": False, "jsonschema": False, "rfc3987_syntax": False},
                   "usable": True, "dynamic_validates": False, "later": "kubernetes_validate"}


def test_jsonschema_without_the_iri_grammars_still_validates():
    got = _fresh("""
        import json, sys
        from runbook import lean_imports
        js = lean_imports.jsonschema()
        hidden = "rfc3987_syntax" not in sys.modules
        errors = [e.message for e in js.Draft7Validator({"type": "object", "required": ["a"]}).iter_errors({})]
        import rfc3987_syntax   # still there for whoever imports it later
        print(json.dumps({"hidden": hidden, "errors": errors, "later": rfc3987_syntax.__name__}))
    """)
    assert got == {"hidden": True, "errors": ["'a' is a required property"], "later": "rfc3987_syntax"}
