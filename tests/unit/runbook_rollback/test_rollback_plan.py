"""runbook.rollback planning: golden journals -> plans, and the pod selection.

Each case folder under ``tests/fixtures/rollback/`` holds a ``journal.json`` (what a run
recorded up to where it stopped) and the ``plan.json`` the rollback must compute from
it. A new case is a new folder, not new code. The assertions after the golden
comparison spell out the rules the golden files encode, so a reviewer can check that
the expected plans are right rather than merely stable.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from runbook import rollback
from runbook.rollback import plan_from_journal, pods_to_restart

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "rollback"
NODES = [("set-hog", "server"), ("fast-skunk", "agent"), ("fast-heron", "agent")]
CASES = sorted(p.name for p in FIXTURES.iterdir() if (p / "journal.json").is_file())


def _plan(case: str) -> rollback.RollbackPlan:
    """The plan of ``case``; its ``options.json`` (when present) holds the keyword arguments
    the params would give (``reboot_nodes``, ``remove_crds``, ``cilium_files``)."""
    doc = json.loads((FIXTURES / case / "journal.json").read_text())
    opts = FIXTURES / case / "options.json"
    return plan_from_journal(doc, NODES, **(json.loads(opts.read_text()) if opts.is_file() else {}))


def test_cases_present() -> None:
    assert {"after-preflight", "reconfigure-agent-unreached", "install-failed",
            "full-migration-partial-rollback", "reboot-after-full-migration", "cleanup-resumed"} <= set(CASES)


@pytest.mark.parametrize("case", CASES)
def test_golden_plan(case: str) -> None:
    expected = json.loads((FIXTURES / case / "plan.json").read_text())
    assert _plan(case).to_dict() == expected


def test_after_preflight_touches_nothing() -> None:
    p = _plan("after-preflight")
    assert p.nothing_to_do
    assert p.helm_uninstall is None and p.touched_nodes == [] and p.pods_since is None
    # Argo CD and Velero come from preflight's facts and are still restorable
    assert p.argocd_recorded == ["argocd/homer", "argocd/manual", "argocd/root"]
    assert p.velero_backup == "phase22-r1"


def test_unreached_agent_is_left_alone() -> None:
    p = _plan("reconfigure-agent-unreached")
    server, skunk, heron = p.node("set-hog"), p.node("fast-skunk"), p.node("fast-heron")
    assert p.helm_uninstall is None                      # install never started
    assert server.restore_config == {"path": "/etc/rancher/k3s/config.yaml",
                                     "backup": "/var/backups/phase22/config.yaml.r1.bak",
                                     "sha256": "a" * 64}
    assert server.restart and not server.delete_cilium and not server.remove_cilium_cni
    assert skunk.restart and skunk.restore_config is None   # agents' configs were not written
    assert not heron.touched and heron.reasons == []
    # agents stop before the server; the server starts first
    assert [n.node for n in p._restart_order()] == ["fast-skunk", "set-hog"]
    assert [n.node for n in p._restart_order(start=True)] == ["set-hog", "fast-skunk"]
    assert p.pods_since == "2026-11-26T05:01:05.000Z"     # the first restart, before the fact


def test_install_failed_undoes_everything_recorded() -> None:
    p = _plan("install-failed")
    assert p.helm_uninstall == {"release": "cilium", "namespace": "kube-system"}
    assert not p.helm_done
    for n in p.nodes:
        assert n.delete_cilium and n.remove_cilium_cni and n.restart
        assert n.lost_bridge                              # cni0 deleted (or maybe deleted)
        paths = [f["path"] for f in n.restore_files]
        assert "/var/lib/cni/networks/cbr0" in paths
        assert "/var/lib/rancher/k3s/agent/etc/cni/net.d/10-flannel.conflist" in paths
    # the failed cleanup on fast-heron: the planned moves may have happened, so they are
    # candidates (the executor checks which backups exist)
    assert len(p.node("fast-heron").restore_files) == 3
    assert [n.node for n in p.nodes if n.restore_config] == ["set-hog"]


def test_rerun_after_partial_rollback_skips_done_steps() -> None:
    p = _plan("full-migration-partial-rollback")
    assert p.helm_done                                  # uninstall done after the migration
    assert p.node("set-hog").done == ["delete-cilium-ifaces"]
    assert p.node("fast-skunk").done == []              # failed there: redo
    assert not p.pods_done


def test_rollback_steps_before_a_later_migration_do_not_count() -> None:
    doc = json.loads((FIXTURES / "full-migration-partial-rollback" / "journal.json").read_text())
    last = max(e["seq"] for e in doc["entries"])
    # the operator re-ran install after the partial rollback: the uninstall is undone
    doc["entries"].append({**doc["entries"][-1], "id": "again", "seq": last + 1, "step": "helm-install",
                           "phase": "install", "node": None, "status": "done",
                           "data": {"release": "cilium", "namespace": "kube-system"}})
    p = plan_from_journal(doc, NODES)
    assert not p.helm_done and p.node("set-hog").done == []


def test_backup_from_write_entry_when_add_backup_was_not_reached() -> None:
    doc = json.loads((FIXTURES / "reconfigure-agent-unreached" / "journal.json").read_text())
    doc["facts"].pop("backups")
    p = plan_from_journal(doc, NODES)
    assert p.node("set-hog").restore_config["sha256"] == "a" * 64


def test_write_without_restart_restores_without_restarting() -> None:
    doc = json.loads((FIXTURES / "reconfigure-agent-unreached" / "journal.json").read_text())
    doc["entries"] = [e for e in doc["entries"] if e["step"] != "restart-k3s"]
    doc["facts"].pop("no_cni_window")
    p = plan_from_journal(doc, NODES)
    assert p.node("set-hog").restore_config and not p.node("set-hog").restart
    assert not p.node("fast-skunk").touched


def test_other_config_paths_are_not_restored() -> None:
    doc = json.loads((FIXTURES / "reconfigure-agent-unreached" / "journal.json").read_text())
    p = plan_from_journal(doc, NODES, k3s_config="/etc/other.yaml")
    assert p.node("set-hog").restore_config is None


# ----------------------------------------------------------------------------- pods
POD_CASES = sorted(p.name for p in FIXTURES.iterdir() if (p / "pods.json").is_file())


def test_pod_cases_present() -> None:
    assert {"reconfigure-agent-unreached", "install-failed", "nbn-mid-nodes-reverted"} <= set(POD_CASES)


@pytest.mark.parametrize("case", POD_CASES)
def test_golden_pod_restart(case: str) -> None:
    """pods.json (the cluster's pods) + the case's plan -> restart.json: which pods the
    rollback deletes (kube-system first) and which it leaves for a person, with owners."""
    items = json.loads((FIXTURES / case / "pods.json").read_text())
    want = json.loads((FIXTURES / case / "restart.json").read_text())
    rp = rollback.restart_plan(items, _plan(case))
    assert [f"{p['metadata']['namespace']}/{p['metadata']['name']}" for p in rp.restart] == want["restart"]
    assert [[s.pod, s.owner] for s in rp.skipped] == want["skipped"]
    assert rp.policy.name == "workloads-only"          # a custom resource's pod is never deleted here


def _pod(name: str, node: str | None, created: str, *, host: bool = False, owner: str | None = "ReplicaSet",
         phase: str = "Running", ns: str = "apps") -> dict:
    md: dict = {"name": name, "namespace": ns, "creationTimestamp": created, "uid": name}
    if owner:
        md["ownerReferences"] = [{"kind": owner, "name": f"{name}-owner", "controller": True}]
    spec: dict = {"hostNetwork": host}
    if node:
        spec["nodeName"] = node
    return {"metadata": md, "spec": spec, "status": {"phase": phase}}


def test_pods_to_restart_selection() -> None:
    p = _plan("reconfigure-agent-unreached")   # since 05:01:05; set-hog and fast-skunk restart
    pods = [
        _pod("old-on-server", "set-hog", "2026-11-26T04:00:00Z"),          # flannel, bridge kept
        _pod("new-on-server", "set-hog", "2026-11-26T05:02:00Z"),          # no-CNI window
        _pod("new-on-skunk", "fast-skunk", "2026-11-26T05:02:00Z"),
        _pod("new-on-heron", "fast-heron", "2026-11-26T05:02:00Z"),        # node left alone
        _pod("host", "set-hog", "2026-11-26T05:02:00Z", host=True),
        _pod("bare", "set-hog", "2026-11-26T05:02:00Z", owner=None),
        _pod("operator-owned", "set-hog", "2026-11-26T05:02:00Z", owner="InstanceManager"),
        _pod("sts-0", "set-hog", "2026-11-26T05:02:00Z", owner="StatefulSet"),
        _pod("done-job", "set-hog", "2026-11-26T05:02:00Z", phase="Succeeded"),
        _pod("unscheduled", None, "2026-11-26T05:02:00Z", phase="Pending"),
        _pod("dns", "fast-skunk", "2026-11-26T05:03:00Z", ns="kube-system"),
    ]
    owned, bare = pods_to_restart(pods, p)
    assert [x["metadata"]["name"] for x in owned] == ["dns", "new-on-server", "new-on-skunk", "sts-0"]
    # nothing would recreate these (or an operator must): listed, never deleted
    assert [x["metadata"]["name"] for x in bare] == ["bare", "operator-owned"]


def test_pods_on_a_node_whose_bridge_was_deleted_all_restart() -> None:
    p = _plan("install-failed")
    pods = [_pod("old", "fast-heron", "2026-11-26T01:00:00Z"),
            _pod("older", "set-hog", "2025-01-01T00:00:00Z")]
    owned, _ = pods_to_restart(pods, p)
    assert {x["metadata"]["name"] for x in owned} == {"old", "older"}


def test_plan_tables_render() -> None:
    p = _plan("install-failed")
    df = p.frame()
    assert list(df["node"]) == ["set-hog", "fast-skunk", "fast-heron"]
    assert set(df["stop/start k3s"]) == {"k3s", "k3s-agent"}
    assert "helm uninstall cilium" in p._repr_html_()
    assert "Nothing to roll back" in rollback.PlanView(_plan("after-preflight"))._repr_html_()
    assert "Nothing to roll back" in repr(rollback.PlanView(_plan("after-preflight")))


def test_velero_policy_is_checked_and_explained() -> None:
    from runbook.errors import ParamsError

    assert "only objects deleted since the backup" in rollback.velero_policy("none")
    assert "overwritten" in rollback.velero_policy("update")
    with pytest.raises(ParamsError) as ei:
        rollback.velero_policy("merge")
    assert "existing_resource_policy" in str(ei.value)


def test_reboot_path_reboots_every_restarted_node_servers_first_and_restarts_no_pod() -> None:
    p = _plan("reboot-after-full-migration")
    assert p.reboot_nodes and p.remove_crds and not p.crds_done
    assert [n.node for n in p._restart_order(start=True)] == ["set-hog", "fast-skunk", "fast-heron"]
    assert p.cilium_files == ["/etc/cni/net.d/05-cilium.conflist", "/opt/cni/bin/cilium-cni",
                              "/etc/sysctl.d/99-zzz-override_cilium.conf"]
    steps = " | ".join(p.steps()["step"])
    assert "reboot: servers first, one node at a time" in steps
    assert "stop k3s" not in steps and "delete cilium interfaces" not in steps
    # a reboot re-creates every sandbox with flannel: no pod is deleted
    pods = json.loads((FIXTURES / "install-failed" / "pods.json").read_text())
    assert rollback.restart_candidates(pods, p) == []


def test_an_interrupted_cleanup_resumes_with_what_the_journal_shows_done() -> None:
    p = _plan("cleanup-resumed")
    assert p.helm_done and p.crds_done and not p.reboot_nodes
    assert p.node("set-hog").done == ["cilium-cleanup", "remove-cilium-files"]
    # the failed cleanup on fast-skunk is not done: the rerun runs it again
    assert p.node("fast-skunk").done == ["remove-cilium-files"]
    assert p.node("fast-heron").done == []
    assert set(p.steps()["journal says / targets"][:2]) == {"done"}


def test_crds_are_never_planned_without_an_install() -> None:
    doc = json.loads((FIXTURES / "reconfigure-agent-unreached" / "journal.json").read_text())
    p = plan_from_journal(doc, NODES, remove_crds=True, cilium_files=["/x"])
    assert not p.remove_crds and p.cilium_files == []


# ----------------------------------------------------------------------------- node-by-node tail
# nbn-after-switch-*: a twin run's journal (trimmed: long results cut to three items), killed
# mid-unswitch and resumed, up to the end of the per-node rollback (reverted) or up to fast-skunk's
# pod restart, before its validation (one-node-pending). nbn-mid-nodes-reverted: the same run's
# entries up to fast-heron's agent step (killed there), followed by the per-node rollback of
# fast-heron and fast-skunk; set-hog was never reached.


def test_node_by_node_cases_present() -> None:
    assert {"nbn-after-switch-reverted", "nbn-after-switch-one-node-pending", "nbn-mid-nodes-reverted"} <= set(CASES)


def _rb(doc: dict, step: str, node: str) -> dict:
    return next(e for e in doc["entries"] if e["step"] == step and e["node"] == node and e["phase"] == "rollback"
                and e["status"] == "done")


def test_nodes_taken_back_keep_k3s_running_and_lose_only_cilium() -> None:
    doc = json.loads((FIXTURES / "nbn-after-switch-reverted" / "journal.json").read_text())
    p = _plan("nbn-after-switch-reverted")
    assert p.helm_uninstall == {"release": "cilium", "namespace": "kube-system"} and not p.helm_done
    for n in p.nodes:
        # Cilium's agent ran here: its files, cleanup pod, devices and chains still go
        assert n.delete_cilium and n.remove_cilium_cni
        # the unswitch restarted k3s with flannel, the per-node rollback proved a flannel address
        assert not n.restart and n.on_flannel["since"] == _rb(doc, "nbn-rb-restore-cni", n.node)["completed_at"]
        assert "a flannel address" in n.on_flannel["evidence"]
    assert p._restart_order() == [] and p._restart_order(start=True) == []
    # the config the switch wrote is still planned (the restore is idempotent: done by the unswitch)
    assert p.node("set-hog").restore_config and p.node("set-hog").done == ["restore-config", "restore-flannel-files"]
    # the per-node rollback's own restart-pods entries are not the tail's pod restart
    assert not p.pods_done
    steps = dict(zip(p.steps()["step"], p.steps()["journal says / targets"]))
    assert steps["start k3s: servers first (wait for the API), then agents; wait for flannel.1"] == \
        "not needed: set-hog, fast-skunk, fast-heron on flannel already"
    assert set(p.frame()["stop/start k3s"]) == {"no: on flannel already"}


def test_a_node_not_yet_validated_gets_big_bangs_tail() -> None:
    p = _plan("nbn-after-switch-one-node-pending")
    assert [n.node for n in p.nodes if n.on_flannel] == ["set-hog", "fast-heron"]
    skunk = p.node("fast-skunk")
    assert skunk.restart and skunk.on_flannel is None      # flannel's config back, no probe yet: not proven
    assert [n.node for n in p._restart_order(start=True)] == ["fast-skunk"]
    assert not p.pods_done                                 # its restart-pods ran inside nbn-rb-pods


def test_the_tails_own_pod_restart_is_done_once_recorded_after_the_per_node_steps() -> None:
    doc = json.loads((FIXTURES / "nbn-after-switch-reverted" / "journal.json").read_text())
    last = doc["entries"][-1]
    doc["entries"].append({**last, "id": "tail-pods", "seq": last["seq"] + 1, "step": "restart-pods", "node": None,
                           "recorded_at": "2026-12-04T18:45:00.000Z", "completed_at": "2026-12-04T18:45:01.000Z"})
    assert plan_from_journal(doc, NODES).pods_done


def test_without_the_unswitchs_restart_a_node_is_not_on_flannel() -> None:
    doc = json.loads((FIXTURES / "nbn-after-switch-reverted" / "journal.json").read_text())
    doc["entries"] = [e for e in doc["entries"] if not (e["step"] == "nbn-us-restart-k3s" and e["node"] == "fast-heron")]
    p = plan_from_journal(doc, NODES)
    # the switch restarted it with flannel-backend none and deleted flannel's devices: big-bang's tail
    assert p.node("fast-heron").restart and p.node("fast-heron").on_flannel is None
    assert not p.node("set-hog").restart and not p.node("fast-skunk").restart


def test_a_migration_step_after_the_per_node_rollback_voids_its_proof() -> None:
    doc = json.loads((FIXTURES / "nbn-mid-nodes-reverted" / "journal.json").read_text())
    last = doc["entries"][-1]
    doc["entries"].append({**last, "id": "again", "seq": last["seq"] + 1, "step": "nbn-label", "node": "fast-skunk",
                           "phase": "install"})
    assert plan_from_journal(doc, NODES).node("fast-skunk").restart


def test_mid_nodes_every_node_keeps_k3s_and_never_reached_ones_restart_no_pod() -> None:
    p = _plan("nbn-mid-nodes-reverted")
    assert p.helm_uninstall and all(n.remove_cilium_cni and n.delete_cilium and not n.restart for n in p.nodes)
    assert p.node("set-hog").on_flannel == {"since": None, "evidence": "never labelled for Cilium's CNI config: "
                                                                       "its pods never left flannel"}
    assert p.node("fast-heron").on_flannel["since"] == "2026-12-04T18:42:04.295Z"
    pods = json.loads((FIXTURES / "nbn-mid-nodes-reverted" / "pods.json").read_text())
    names = {x["metadata"]["name"] for x in rollback.restart_candidates(pods, p)}
    # only what predates flannel's config on a node taken back; set-hog's new pod never left flannel
    assert names == {"cilium-era-on-heron", "instance-manager-h"}


def test_without_node_by_node_evidence_nothing_is_assumed_on_flannel() -> None:
    doc = json.loads((FIXTURES / "nbn-mid-nodes-reverted" / "journal.json").read_text())
    doc["entries"] = [e for e in doc["entries"] if e["step"] != "nbn-cnc"]   # killed before its CiliumNodeConfig
    p = plan_from_journal(doc, NODES)
    assert all(n.restart and n.on_flannel is None for n in p.nodes)
    for case in ("install-failed", "full-migration-partial-rollback", "reboot-after-full-migration"):
        assert not _plan(case).on_flannel_nodes, case


def test_on_the_reboot_path_a_node_on_flannel_is_cleaned_not_rebooted() -> None:
    doc = json.loads((FIXTURES / "nbn-after-switch-one-node-pending" / "journal.json").read_text())
    p = plan_from_journal(doc, NODES, reboot_nodes=True)
    assert [n.node for n in p.nodes if p.rebooted(n)] == ["fast-skunk"]
    frame = p.frame().set_index("node")
    assert frame.loc["set-hog", "Cilium's cleanup"] == "files, cleanup pod"
    assert frame.loc["set-hog", "delete cilium ifaces/chains"] == "yes"
    assert frame.loc["fast-skunk", "Cilium's cleanup"] == "files; reboot clears the kernel state"
    assert frame.loc["set-hog", "reboot"] == "no: on flannel already"
    assert "on set-hog, fast-heron, not rebooted" in " ".join(p.steps()["step"])
