"""Harness of the add-on tests: a minicloud twin with the add-on models, the ingress and the
admin endpoint, and small helpers to drive it over real sockets (Kubernetes API, HTTPS ingress, admin)."""
from __future__ import annotations

import http.client
import json
import socket
import ssl
import time
from dataclasses import dataclass
from typing import Any, Callable

import pytest

SPEED = 0.02   # 1 cluster second = 20 ms: self-heal (5 s) = 0.1 s, pod start (2 s) = 40 ms


def addon_components(rt: Any, *, ssh: bool = False) -> list[Any]:
    """The lead's core components (as twin.api builds them) plus ours."""
    from twin.admin import AdminEndpoint
    from twin.apiserver import APIServer
    from twin.controllers import WorkloadControllers
    from twin.controllers.addons import AddonControllers
    from twin.ingress import IngressEndpoint
    from twin.node import NodesComponent

    comps: list[Any] = [NodesComponent(), APIServer(), WorkloadControllers()]
    if ssh:
        from twin.ssh import SSHServers
        comps.append(SSHServers())
    return comps + [AddonControllers(), IngressEndpoint(), AdminEndpoint()]


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: str


class AddonTwin:
    """A started twin plus helpers."""

    def __init__(self, twin: Any) -> None:
        from runbook.cluster import Cluster

        self.twin = twin
        self.cluster = Cluster(str(twin.kubeconfig), kind="twin", retry_for=20)
        self.ca = str(twin.state_dir / "pki" / "ca.crt")
        self.ingress_port = int(twin.endpoints["ingress_port"])
        self.admin_url = twin.endpoints["admin"]
        self.admin_token = (twin.state_dir / "admin-token").read_text().strip()

    @property
    def addons(self) -> Any:
        return self.twin.rt.component("addons")

    # -- waiting ----------------------------------------------------------------------
    @staticmethod
    def until(pred: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
        end = time.monotonic() + timeout
        last = None
        while time.monotonic() < end:
            last = pred()
            if last:
                return last
            time.sleep(0.02)
        raise AssertionError(f"timed out after {timeout}s waiting for {what or pred} (last: {last!r})")

    def cluster_sleep(self, cluster_seconds: float) -> None:
        time.sleep(cluster_seconds * SPEED)

    # -- ingress ----------------------------------------------------------------------
    def https(self, host: str, path: str = "/") -> Answer:
        """GET over HTTPS to the ingress endpoint, SNI and Host = ``host``, verified
        against the twin's CA (raises on TLS or connection failures)."""
        ctx = ssl.create_default_context(cafile=self.ca)
        sock = socket.create_connection(("127.0.0.1", self.ingress_port), timeout=5)
        conn = http.client.HTTPSConnection(host, self.ingress_port, timeout=5, context=ctx)
        conn.sock = ctx.wrap_socket(sock, server_hostname=host)
        try:
            conn.request("GET", path, headers={"Host": host})
            r = conn.getresponse()
            return Answer(r.status, {k.lower(): v for k, v in r.getheaders()}, r.read().decode())
        finally:
            conn.close()

    # -- admin ------------------------------------------------------------------------
    def admin(self, method: str, path: str, body: Any = None, token: str | None = "default") -> tuple[int, Any]:
        host, port = self.admin_url.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        headers = {"Content-Type": "application/json"}
        if token == "default":
            token = self.admin_token
        if token:
            headers["Authorization"] = f"Bearer {token}"
        try:
            conn.request(method, path, body=None if body is None else json.dumps(body), headers=headers)
            r = conn.getresponse()
            data = r.read()
            return r.status, json.loads(data) if data else None
        finally:
            conn.close()

    # -- objects --------------------------------------------------------------------------
    def pause_app(self, name: str) -> None:
        """Pause an Argo CD app (so a test may change what it owns without self-heal)."""
        self.cluster.patch("applications", name, {"spec": {"syncPolicy": {"automated": None}}}, "argocd")

    def scale(self, ns: str, name: str, replicas: int) -> None:
        self.cluster.patch("deployments", name, {"spec": {"replicas": replicas}}, ns)

    def ready_pods(self, ns: str, selector: str) -> list[dict]:
        from runbook.cluster import pod_ready
        return [p for p in self.cluster.list("pods", ns, label_selector=selector)
                if pod_ready(p) and not p["metadata"].get("deletionTimestamp")]

    def lb_ip(self, ns: str, name: str) -> str | None:
        svc = self.cluster.get("services", name, ns) or {}
        ing = ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
        return ing[0].get("ip") if ing else None


def _start(tmp_path_factory: pytest.TempPathFactory, *, ssh: bool = False,
           faults: dict | None = None) -> AddonTwin:
    from twin.api import Twin

    t = Twin(tmp_path_factory.mktemp("twin"), speed=SPEED, faults=faults,
             components=lambda rt: addon_components(rt, ssh=ssh)).start()
    return AddonTwin(t)
