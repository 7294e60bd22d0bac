"""Helpers for the lifecycle tests: the real kubectl and helm against a twin."""
from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[3]
CHART_DEMO = REPO / "tests" / "integration" / "twin_api" / "chart-demo"
STANDIN_CHART = REPO / "lib" / "twin" / "charts" / "cilium"
CILIUM_VALUES = REPO / "params" / "cilium-values.yaml"


class Kube:
    """kubectl and helm with a twin's kubeconfig (never the user's)."""

    def __init__(self, kubectl: str, helm: str, env: dict[str, str], twin: Any) -> None:
        self.kubectl_bin, self.helm_bin, self.env, self.twin = kubectl, helm, env, twin

    def _run(self, args: list[str], check: bool, timeout: float, input: str | None) -> subprocess.CompletedProcess:
        p = subprocess.run(args, env=self.env, capture_output=True, text=True, timeout=timeout, input=input)
        if check and p.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
        return p

    def kubectl(self, *args: str, check: bool = True, timeout: float = 120,
                input: str | None = None) -> subprocess.CompletedProcess:
        return self._run([self.kubectl_bin, *args], check, timeout, input)

    def helm(self, *args: str, check: bool = True, timeout: float = 180) -> subprocess.CompletedProcess:
        return self._run([self.helm_bin, *args], check, timeout, None)

    def get(self, *args: str) -> dict:
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)

    def try_get(self, *args: str) -> dict | None:
        p = self.kubectl("get", *args, "-o", "json", check=False)
        if p.returncode != 0:
            assert "NotFound" in p.stderr, p.stderr
            return None
        return json.loads(p.stdout)

    def apply(self, manifest: str) -> None:
        self.kubectl("apply", "-f", "-", input=manifest)

    def until(self, pred: Callable[[], Any], *, timeout: float = 60, what: str = "") -> Any:
        end = time.monotonic() + timeout
        while True:
            v = pred()
            if v:
                return v
            if time.monotonic() > end:
                raise AssertionError(f"timed out waiting for {what or pred}")
            time.sleep(0.1)

    def events(self, ns: str, name: str) -> list[dict]:
        """core/v1 Events about object ``name`` in ``ns``, as kubectl describe selects them."""
        return self.get("events", "-n", ns, "--field-selector", f"involvedObject.name={name}")["items"]


def container_status(pod: dict, name: str) -> dict:
    return next(c for c in pod["status"].get("containerStatuses") or () if c["name"] == name)


def condition(obj: dict, ctype: str) -> dict | None:
    return next((c for c in (obj.get("status") or {}).get("conditions") or () if c["type"] == ctype), None)


def start_twin(tmp_path_factory: Any, kubectl: str, helm: str, **kw: Any) -> Kube:
    """A minicloud twin of its own (``Twin`` keyword arguments) with kubectl/helm set up."""
    from twin.api import Twin

    twin = Twin(tmp_path_factory.mktemp("twin"), **kw).start()
    home = tmp_path_factory.mktemp("home")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBE", "HELM_"))}
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"), XDG_CACHE_HOME=str(home / ".cache"),
               XDG_DATA_HOME=str(home / ".local/share"), KUBECONFIG=str(twin.kubeconfig))
    return Kube(kubectl, helm, env, twin)
