"""Harness of the node-realism tests: the whole minicloud twin (API server, SSH servers,
admin endpoint, node/network/Cilium models) driven like an operator drives a cluster.

Setup may take the short road (objects rendered by the real ``helm template`` created in
the store, k3s configs edited on the node model), as the network tests do; every FACT a
test asserts is read over a real socket: SSH (paramiko, host keys verified) for node
commands, HTTPS for the Kubernetes API, HTTP for the admin endpoint. In-pod commands are
the ``twin.podexec.net`` handlers called on the twin's loop (the exec transport is
another part's)."""
from __future__ import annotations

import http.client
import json
import os
from pathlib import Path
from typing import Any

import paramiko

from twin.api import Twin
from twin.store.errors import NotFound
from twin_network_helpers import AGENT1, AGENT2, NODES, SERVER, SPEED, Net, render_cilium

__all__ = ["AGENT1", "AGENT2", "NODES", "SERVER", "SPEED", "Ops", "render_env"]

MIGRATE_LINES = ("flannel-backend: none", "disable-network-policy: true", "disable-kube-proxy: true")


def render_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBE", "HELM_"))}
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / "c"), XDG_CACHE_HOME=str(home / "k"),
               XDG_DATA_HOME=str(home / "d"))
    return env


class Ops(Net):
    """A started full twin with the operator's tools: SSH, the API, the admin endpoint."""

    def __init__(self, twin: Twin) -> None:
        super().__init__(twin)
        self._ssh: dict[str, paramiko.SSHClient] = {}
        self.admin_url = twin.endpoints["admin"]
        self.admin_token = (twin.state_dir / "admin-token").read_text().strip()

    @classmethod
    def start(cls, state_dir: Path, **kw: Any) -> "Ops":
        return cls(Twin(state_dir, speed=SPEED, **kw).start())

    def close(self) -> None:
        for c in self._ssh.values():
            c.close()
        self.t.stop()

    # -- SSH --------------------------------------------------------------------------
    def client(self, node: str) -> paramiko.SSHClient:
        c = self._ssh.get(node)
        if c is not None and c.get_transport() is not None and c.get_transport().is_active():
            return c
        c = paramiko.SSHClient()
        c.load_host_keys(str(self.t.state_dir / "ssh" / "known_hosts"))
        c.set_missing_host_key_policy(paramiko.RejectPolicy())
        c.connect("127.0.0.1", port=self.t.endpoints["ssh"][node], username="ubuntu",
                  key_filename=str(self.t.state_dir / "ssh" / "id_ed25519"), look_for_keys=False,
                  allow_agent=False, timeout=10, banner_timeout=10, auth_timeout=10)
        self._ssh[node] = c
        return c

    def ssh(self, node: str, command: str, stdin: bytes | None = None, timeout: float = 60) -> tuple[int, str, str]:
        """Run a command over SSH: (exit code, stdout, stderr)."""
        i, o, e = self.client(node).exec_command(command, timeout=timeout)
        if stdin is not None:
            i.write(stdin)
            i.channel.shutdown_write()
        out, err = o.read().decode(), e.read().decode()
        return o.channel.recv_exit_status(), out, err

    def ssh_ok(self, node: str, command: str, stdin: bytes | None = None) -> str:
        rc, out, err = self.ssh(node, command, stdin)
        assert rc == 0, f"{node}: {command}: rc={rc} {err!r}"
        return out

    # -- API (HTTPS) ------------------------------------------------------------------
    def api_node_ready(self, node: str) -> tuple[str, str]:
        from runbook.cluster import Cluster
        n = Cluster(str(self.t.kubeconfig), kind="twin", retry_for=20).get("nodes", node) or {}
        c = next((c for c in (n.get("status") or {}).get("conditions") or () if c["type"] == "Ready"), {})
        return c.get("status", ""), c.get("message", "")

    # -- admin (HTTP) -----------------------------------------------------------------
    def admin(self, body: dict) -> tuple[int, Any]:
        host, port = self.admin_url.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        try:
            conn.request("POST", "/faults", body=json.dumps(body),
                         headers={"Authorization": f"Bearer {self.admin_token}",
                                  "Content-Type": "application/json"})
            r = conn.getresponse()
            data = r.read()
            return r.status, json.loads(data) if data else None
        finally:
            conn.close()

    # -- the migration, the short road ------------------------------------------------
    def flannel_off(self) -> None:
        """The corrected k3s step: server-only options on the server, every node restarted."""
        self.add_config(SERVER, "".join(line + "\n" for line in MIGRATE_LINES))
        self.restart(SERVER, AGENT1, AGENT2)

    def flannel_on(self) -> None:
        """The config as it was, every node restarted (the rollback's k3s step)."""
        cfg = self.call(self.node(SERVER).read_text, "/etc/rancher/k3s/config.yaml")
        for line in MIGRATE_LINES:
            cfg = cfg.replace(line + "\n", "")
        self.call(self.node(SERVER).write, "/etc/rancher/k3s/config.yaml", cfg)
        self.restart(SERVER, AGENT1, AGENT2)

    def restart_pods(self, ns: str, selector: str) -> set[str]:
        """Delete the pods (their controller recreates them); returns their old IPs. A pod
        gone between the list and its delete (evicted, replaced) is already what we want."""
        old = set()
        for p in self.pods(ns, selector):
            old.add(p["status"].get("podIP"))
            try:
                self.delete("pods", ns, p["metadata"]["name"])
            except NotFound:
                pass
        return old

    def kube_dns(self) -> list[dict]:
        from twin_network_helpers import pod_ready
        return [p for p in self.pods("kube-system", "k8s-app=kube-dns")
                if pod_ready(p) and not p["metadata"].get("deletionTimestamp")]

    def migrate(self, helm: str, env: dict[str, str], **sets: Any) -> list[dict]:
        """flannel off, flannel.1 deleted, Cilium installed and Ready, kube-dns on Cilium."""
        from twin_network_helpers import sandbox
        self.flannel_off()
        for n in NODES:
            self.ssh_ok(n, "sudo ip link delete flannel.1")
        docs = render_cilium(helm, env, **sets)
        self.apply(docs)
        self.until(lambda: all(self.agent_ready(n) for n in NODES), timeout=60, what="agents Ready")
        self.restart_pods("kube-system", "k8s-app=kube-dns")
        self.until(lambda: self.kube_dns() and all(sandbox(p) == "cilium" for p in self.kube_dns()),
                   timeout=60, what="kube-dns on cilium")
        return docs

    def rollback_without_cleanup(self, docs: list[dict]) -> None:
        """What the runbook's rollback does today: helm uninstall, delete Cilium's
        interfaces, k3s config back, restart, restart the pods Cilium gave a sandbox."""
        from twin_network_helpers import sandbox
        self.delete_release(docs)
        self.until(lambda: not self.pods("kube-system", "k8s-app=cilium"), timeout=30, what="agents gone")
        for n in NODES:
            for dev in ("cilium_vxlan", "cilium_host", "cilium_net"):
                self.ssh(n, f"sudo ip link delete {dev}")
        self.flannel_on()
        self.until(lambda: all(self.cni(n) == "flannel" for n in NODES), timeout=30, what="flannel again")
        self.restart_pods("kube-system", "k8s-app=kube-dns")
        self.until(lambda: self.kube_dns() and all(sandbox(p) == "flannel" for p in self.kube_dns()),
                   timeout=60, what="kube-dns on flannel")
