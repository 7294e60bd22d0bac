"""The runbook's rollback on a twin whose nodes keep Cilium's datapath (issues #11, #12).

The full migration (01-04) and then 05-rollback run with papermill against a fresh
twin, as in ``test_verify_rollback``. Without Cilium's own cleanup every node would keep
Cilium's socket load balancer on its cgroup root, and the kube-dns ClusterIP would still
go to the Cilium-era coredns address: DNS from the nodes would fail although flannel and
kube-proxy are back. The rollback runs ``cilium-dbg post-uninstall-cleanup`` in a pod on
every node after ``helm uninstall``; seen over SSH with the operator's tools, no Cilium
program is left and DNS through the ClusterIP answers on every node.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import paramiko
import pytest

from test_verify_rollback import NODES, run, statuses

from runbook import params as params_mod
from runbook.cluster import Cluster

pytestmark = [pytest.mark.integration]

DNS_PROBE = "nslookup kubernetes.default.svc.cluster.local 10.43.0.10"


def ssh(twin: Any, node: str, command: str) -> tuple[int, str]:
    c = paramiko.SSHClient()
    c.load_host_keys(str(Path(twin.state_dir) / "ssh" / "known_hosts"))
    c.set_missing_host_key_policy(paramiko.RejectPolicy())
    c.connect("127.0.0.1", port=twin.endpoints["ssh"][node], username="ubuntu",
              key_filename=str(Path(twin.state_dir) / "ssh" / "id_ed25519"), look_for_keys=False,
              allow_agent=False, timeout=10)
    try:
        _, o, _ = c.exec_command(command, timeout=120)
        out = o.read().decode()
        return o.channel.recv_exit_status(), out
    finally:
        c.close()


@pytest.mark.timeout(420)
def test_rollback_leaves_no_cilium_datapath_and_dns_works_from_every_node(fresh_twin, tmp_path):
    twin = fresh_twin
    for n in NODES:
        assert ssh(twin, n, DNS_PROBE)[0] == 0, f"{n}: DNS must work before the migration"
    res = run(twin, "preflight,reconfigure,install,verify", tmp_path, execute=True, run_id="dp",
              proceed_despite_deferral=True)
    assert statuses(res) == dict.fromkeys(["preflight", "reconfigure", "install", "verify"], "passed"), \
        res.failed and res.failed.error
    res = run(twin, "rollback", tmp_path, execute=True, run_id="dp")
    assert statuses(res) == {"rollback": "passed"}, res.phases[0].error
    for n in NODES:
        rc, out = ssh(twin, n, DNS_PROBE)
        assert rc == 0 and "Address: 10.43.0.1" in out, f"{n}: DNS through kube-dns fails:\n{out}"
        rc, tree = ssh(twin, n, "sudo bpftool cgroup tree /sys/fs/cgroup")
        assert rc == 0 and "cil_" not in tree, f"{n}: Cilium's socket LB is still attached:\n{tree}"
        rc, net = ssh(twin, n, "sudo bpftool net show")
        assert rc == 0 and "cil_" not in net, f"{n}: Cilium's tc programs are still attached:\n{net}"
        rc, maps = ssh(twin, n, "sudo bpftool map show -f")
        assert rc == 0 and "cilium_" not in maps, f"{n}: Cilium's maps are still pinned:\n{maps}"
    # each node's cleanup ran once, journaled, and its pod is gone
    c = Cluster.from_params(params_mod.load(twin.params_path))
    assert c.list("pods", label_selector="app.kubernetes.io/name=phase22-cilium-cleanup") == []
    doc = json.loads((res.run_dir / "journal.json").read_text())
    cleanups = [e for e in doc["entries"] if e["step"] == "cilium-cleanup"]
    assert sorted(e["node"] for e in cleanups) == sorted(NODES)
    assert all(e["status"] == "done" and e["result"]["rc"] == 0 and e["result"]["deleted"] for e in cleanups)
    assert all(any("socketlb" in r for r in e["result"]["removed"]) for e in cleanups)
