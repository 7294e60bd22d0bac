"""One full migration (01-04) and its rollback (05) on one twin, read by several tests.

The migration and the rollback are the suite's most expensive steps (about a minute of
CPU each on this machine), so the checks that need exactly this sequence share one run
(module-scoped :func:`journey`) instead of repeating it per test. The run, in order:

1. Before the migration the cluster gets a NetworkPolicy (kube-router keeps an ipset per
   selector) and a pod with a ``hostPort`` on fast-skunk (flannel's portmap plugin adds
   ``CNI-HOSTPORT-*`` and a ``CNI-DN-*`` chain for its sandbox); DNS through the kube-dns
   ClusterIP answers on every node.
2. 01-04 executed: every phase passes; verify's probe DaemonSet is journaled and removed.
3. A dry run of 05 shows the plan and changes nothing (node files, API objects).
4. 05 executed. Then the tests below check what it left: configs byte-identical, flannel
   back, Cilium's datapath gone (``bpftool`` seen over SSH), the stale portmap chains and
   kube-router ipsets removed, and 04-verify passing on the flannel side.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paramiko
import pytest

from test_verify_rollback import (NODES, api_state, assert_flannel_back, node_files, run, statuses)
from helpers.run_evidence import journal, steps
from helpers.twin_disks import interfaces, k3s_configs as configs

from runbook import params as params_mod
from runbook import runner
from runbook.cluster import Cluster
from runbook.nodes import Node

pytestmark = [pytest.mark.integration]

DNS_PROBE = "nslookup kubernetes.default.svc.cluster.local 10.43.0.10"
HOSTPORT_NODE = "fast-skunk"
APP = {"apiVersion": "apps/v1", "kind": "Deployment",
       "metadata": {"name": "hostport-demo", "namespace": "default"},
       "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "hostport-demo"}},
                "template": {"metadata": {"labels": {"app": "hostport-demo"}},
                             "spec": {"nodeSelector": {"kubernetes.io/hostname": HOSTPORT_NODE},
                                      "containers": [{"name": "web", "image": "nginx:1.27",
                                                      "ports": [{"containerPort": 80, "hostPort": 8088}]}]}}}}
POLICY = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
          "metadata": {"name": "web-only", "namespace": "default"},
          "spec": {"podSelector": {"matchLabels": {"app": "hostport-demo"}}, "policyTypes": ["Ingress"],
                   "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "client"}}}]}]}}


# ----------------------------------------------------------------------------- helpers
def ssh(twin: Any, node: str, command: str) -> tuple[int, str]:
    """``command`` on ``node`` as an operator runs it (OpenSSH-compatible client, host key checked)."""
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


def dnat_targets(node: Node) -> list[str]:
    dump = node.run("iptables-save -t nat", sudo=True).check_output()
    return re.findall(r"^-A CNI-DN-\S+ .*-j DNAT --to-destination (\S+)$", dump, re.M)


def ipsets(node: Node) -> list[str]:
    return node.run("ipset list -n", sudo=True).check_output().split()


def hostport_pod_ip(c: Cluster) -> str | None:
    pods = [p for p in c.list("pods", "default", label_selector="app=hostport-demo")
            if (p.get("status") or {}).get("podIP") and not p["metadata"].get("deletionTimestamp")]
    return pods[0]["status"]["podIP"] if pods else None


@dataclass
class Journey:
    """What the run saw at each step (the tests assert on it)."""

    twin: Any
    cluster: Cluster
    node: Node                                  # the hostPort pod's node
    configs_before: dict[str, bytes]
    dns_before: dict[str, int] = field(default_factory=dict)
    ip_before: str = ""
    dnat_before: list[str] = field(default_factory=list)
    ipsets_before: list[str] = field(default_factory=list)
    migration: runner.RunResult | None = None
    migration_journal: dict[str, Any] = field(default_factory=dict)   # as it was after 04
    dnat_migrated: list[str] = field(default_factory=list)
    dry_unchanged: tuple[bool, bool] = (False, False)
    dry: runner.RunResult | None = None
    rollback: runner.RunResult | None = None
    verify_after: runner.RunResult | None = None


@pytest.fixture(scope="module")
def journey(tmp_path_factory: pytest.TempPathFactory):
    from twin.api import Twin

    tmp = tmp_path_factory.mktemp("journey")
    twin = Twin(tmp / "twin").start()
    try:
        p = params_mod.load(twin.params_path)
        c = Cluster.from_params(p)
        node = next(n for n in Node.from_params(p) if n.name == HOSTPORT_NODE)
        j = Journey(twin=twin, cluster=c, node=node, configs_before=configs(twin))
        j.dns_before = {n: ssh(twin, n, DNS_PROBE)[0] for n in NODES}
        c.create("networkpolicies", POLICY, "default")
        c.create("deployments", APP, "default")
        c.wait_for(lambda: (hostport_pod_ip(c) is not None, ["the hostPort pod's address"]),
                   timeout=60, what="hostport pod", interval=0.5)
        j.ip_before = hostport_pod_ip(c) or ""
        j.dnat_before, j.ipsets_before = dnat_targets(node), ipsets(node)

        j.migration = run(twin, "preflight,reconfigure,install,verify", tmp, execute=True,
                          run_id="journey", proceed_despite_deferral=True)
        if not j.migration.ok:
            yield j
            return
        j.migration_journal = journal(j.migration)
        j.dnat_migrated = dnat_targets(node)
        files, objects = node_files(twin), api_state(twin)
        j.dry = run(twin, "rollback", tmp, execute=False, run_id="journey")
        j.dry_unchanged = (node_files(twin) == files, api_state(twin) == objects)
        j.rollback = run(twin, "rollback", tmp, execute=True, run_id="journey")
        if j.rollback.ok:
            j.verify_after = run(twin, "verify", tmp, execute=True, run_id="journey")
        yield j
    finally:
        twin.stop()


def migrated(j: Journey) -> None:
    assert j.migration is not None and statuses(j.migration) == dict.fromkeys(
        ["preflight", "reconfigure", "install", "verify"], "passed"), j.migration.failed and j.migration.failed.error


def rolled_back(j: Journey) -> runner.RunResult:
    migrated(j)
    assert j.rollback is not None and statuses(j.rollback) == {"rollback": "passed"}, j.rollback.phases[0].error
    return j.rollback


# ----------------------------------------------------------------------------- tests
@pytest.mark.timeout(900)   # the module's run: a migration, a dry run, a rollback and a verify
def test_the_migration_passes_and_verify_removes_its_probe(journey):
    migrated(journey)
    assert all(rc == 0 for rc in journey.dns_before.values()), f"DNS must work before: {journey.dns_before}"
    doc = journey.migration_journal
    assert doc["phases"]["verify"]["status"] == "passed"
    assert "argocd-resume" in steps(doc, "verify") or not doc["facts"].get("argocd_previous_policies")
    # verify's probe DaemonSet: journaled before it was created, removed afterwards
    probe = [(e["step"], e["status"]) for e in doc["entries"] if e["step"].startswith("probe-")]
    assert probe == [("probe-create", "done"), ("probe-delete", "done")]
    assert journey.cluster.get("daemonsets", "phase22-verify-probe", "kube-system") is None


def test_a_dry_run_of_the_rollback_changes_nothing(journey):
    migrated(journey)
    assert journey.dry is not None and statuses(journey.dry) == {"rollback": "passed"}, journey.dry.phases[0].error
    assert journey.dry_unchanged == (True, True), "node files / API objects changed by a dry run"


def test_the_rollback_restores_configs_and_flannel_in_order(journey):
    rb_res = rolled_back(journey)
    assert_flannel_back(journey.twin, journey.configs_before)
    rb = steps(journal(rb_res), "rollback")
    # Longhorn's volume users go down first (Argo CD paused again: verify re-enabled it), then Cilium
    first = [x for x in rb if not x.startswith("argocd-")]
    assert first[0].startswith("storage-"), rb[:5]
    assert [x for x in rb if not x.startswith(("argocd-", "storage-"))][0] == "helm-uninstall"
    assert max(i for i, x in enumerate(rb) if x == "storage-scale-down") < rb.index("helm-uninstall")
    assert "delete-cilium-ifaces" in rb and "restart-pods" in rb
    assert rb.index("storage-recycle-manager") > rb.index("restart-pods") and "storage-scale-up" in rb
    # the cluster after the rollback verifies on the flannel side
    assert journey.verify_after is not None and statuses(journey.verify_after) == {"verify": "passed"}, \
        journey.verify_after.phases[0].error


def test_the_rollback_leaves_no_cilium_datapath_and_dns_works_from_every_node(journey):
    """Without Cilium's own cleanup every node would keep Cilium's socket load balancer on
    its cgroup root, and the kube-dns ClusterIP would still go to the Cilium-era coredns
    address: DNS from the nodes would fail although flannel and kube-proxy are back."""
    rb_res = rolled_back(journey)
    twin = journey.twin
    for n in NODES:
        rc, out = ssh(twin, n, DNS_PROBE)
        assert rc == 0 and "Address: 10.43.0.1" in out, f"{n}: DNS through kube-dns fails:\n{out}"
        rc, tree = ssh(twin, n, "sudo bpftool cgroup tree /sys/fs/cgroup")
        assert rc == 0 and "cil_" not in tree, f"{n}: Cilium's socket LB is still attached:\n{tree}"
        rc, net = ssh(twin, n, "sudo bpftool net show")
        assert rc == 0 and "cil_" not in net, f"{n}: Cilium's tc programs are still attached:\n{net}"
        rc, maps = ssh(twin, n, "sudo bpftool map show -f")
        assert rc == 0 and "cilium_" not in maps, f"{n}: Cilium's maps are still pinned:\n{maps}"
        assert "flannel.1" in interfaces(twin, n)
    # each node's cleanup ran once, journaled, and its pod is gone
    assert journey.cluster.list("pods", label_selector="app.kubernetes.io/name=phase22-cilium-cleanup") == []
    doc = json.loads((rb_res.run_dir / "journal.json").read_text())
    cleanups = [e for e in doc["entries"] if e["step"] == "cilium-cleanup"]
    assert sorted(e["node"] for e in cleanups) == sorted(NODES)
    assert all(e["status"] == "done" and e["result"]["rc"] == 0 and e["result"]["deleted"] for e in cleanups)
    assert all(any("socketlb" in r for r in e["result"]["removed"]) for e in cleanups)


def test_the_rollback_removes_stale_cni_chains_and_kube_router_ipsets(journey):
    """What ``k3s-killall.sh`` would remove outlives the CNI swap (k3s cleans nothing up);
    the rollback removes it with k3s stopped, so the node keeps only the chains of the pod's
    new flannel sandbox, and the ipsets kube-router builds again."""
    assert f"{journey.ip_before}:80" in journey.dnat_before
    assert any(s.startswith(("KUBE-SRC-", "KUBE-DST-")) for s in journey.ipsets_before), journey.ipsets_before
    rb_res = rolled_back(journey)
    assert f"{journey.ip_before}:80" in journey.dnat_migrated          # k3s cleans nothing up
    doc = json.loads((rb_res.run_dir / "journal.json").read_text())
    [e] = [e for e in doc["entries"] if e["step"] == "remove-cni-chains-ipsets" and e["node"] == HOSTPORT_NODE]
    assert e["status"] == "done" and e["result"]["chains_removed"] > 0
    assert any(s.startswith(("KUBE-SRC-", "KUBE-DST-")) for s in e["result"]["ipsets_destroyed"])
    # only the new flannel sandbox's DNAT is left; kube-router built its sets again
    ip_after = hostport_pod_ip(journey.cluster)
    assert dnat_targets(journey.node) == [f"{ip_after}:80"]
    assert any(s.startswith(("KUBE-SRC-", "KUBE-DST-")) for s in ipsets(journey.node))
