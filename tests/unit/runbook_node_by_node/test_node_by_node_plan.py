"""runbook.node_by_node_plan: values, order, objects, resume point and rollback order (pure)."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from runbook import node_by_node_plan as nbp
from runbook.node_by_node_preflight import acceptance_verdict, cni_verdict

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]

VALUES = yaml.safe_load((Path(__file__).resolve().parents[3] / "params" / "cilium-values.yaml").read_text())
K3S_CONF = "/var/lib/rancher/k3s/agent/etc/cni/net.d"
K3S_BIN = "/var/lib/rancher/k3s/data/cni"


def _entry(step: str, node: str | None, status: str = "done", seq: int = 0, phase: str = "install") -> dict:
    return {"step": step, "node": node, "status": status, "seq": seq, "phase": phase}


def _node_done(node: str, start: int = 0) -> list[dict]:
    return [_entry(nbp.journal_step(s), node, seq=start + i) for i, s in enumerate(nbp.NODE_STEPS)]


# ------------------------------------------------------------------ values
def test_migration_values_are_the_guides_migration_mode_in_k3s_folders() -> None:
    v = nbp.migration_values(VALUES, cidr="10.44.0.0/16", mask=24, conf_dir=K3S_CONF, bin_dir=K3S_BIN)
    assert v["ipam"] == {"mode": "cluster-pool", "operator": {"clusterPoolIPv4PodCIDRList": ["10.44.0.0/16"],
                                                               "clusterPoolIPv4MaskSize": 24}}
    assert v["cni"] == {"customConf": True, "uninstall": False, "confPath": K3S_CONF, "binPath": K3S_BIN}
    assert (v["routingMode"], v["tunnelProtocol"], v["tunnelPort"]) == ("tunnel", "vxlan", 8473)
    assert v["operator"]["unmanagedPodWatcher"] == {"restart": False}
    assert v["operator"]["replicas"] == VALUES["operator"]["replicas"]   # the rest of the values kept
    assert v["policyEnforcementMode"] == "never" and v["bpf"] == {"hostLegacyRouting": True}
    assert v["kubeProxyReplacement"] is False and VALUES["kubeProxyReplacement"] is True
    assert (v["k8sServiceHost"], v["k8sServicePort"]) == ("127.0.0.1", 6444)
    assert v["updateStrategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}}
    assert VALUES["ipam"] == {"mode": "kubernetes"}   # the params' values are not changed in place


def test_migration_values_never_take_flannels_vxlan_port() -> None:
    assert nbp.migration_values({"tunnelPort": 8472}, cidr="10.44.0.0/16", mask=24, conf_dir="/a",
                                bin_dir="/b")["tunnelPort"] == 8473
    assert nbp.migration_values({"tunnelPort": 8475}, cidr="10.44.0.0/16", mask=24, conf_dir="/a",
                                bin_dir="/b")["tunnelPort"] == 8475


def test_final_values_keep_the_new_cidr_and_hand_the_cni_to_cilium() -> None:
    v = nbp.final_values(VALUES, cidr="10.44.0.0/16", mask=25)
    assert v["ipam"]["mode"] == "cluster-pool"
    assert v["ipam"]["operator"]["clusterPoolIPv4PodCIDRList"] == ["10.44.0.0/16"]
    assert v["ipam"]["operator"]["clusterPoolIPv4MaskSize"] == 25
    assert v["cni"] == {"customConf": False}            # confPath/binPath: containerd's defaults
    assert v["operator"]["unmanagedPodWatcher"] == {"restart": True}
    assert v["policyEnforcementMode"] == "default" and v["kubeProxyReplacement"] is True
    assert "bpf" not in v
    assert v["updateStrategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}}
    own = {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "50%"}}
    assert nbp.final_values({"updateStrategy": own}, cidr="10.44.0.0/16", mask=24)["updateStrategy"] == own


def test_cni_folders_must_agree() -> None:
    assert nbp.cni_folders({"a": (K3S_CONF, K3S_BIN), "b": (K3S_CONF, K3S_BIN)}) == ((K3S_CONF, K3S_BIN), [])
    common, differ = nbp.cni_folders({"a": (K3S_CONF, K3S_BIN), "b": (K3S_CONF, "/var/lib/rancher/k3s/data/abc/bin")})
    assert common is None and len(differ) == 2 and differ[1].startswith("b: ")


def test_cni_gate_wants_k3s_folders_on_every_node() -> None:
    ok = cni_verdict({"a": (K3S_CONF, K3S_BIN), "b": (K3S_CONF, K3S_BIN)}, K3S_CONF)
    assert ok.ok and ok.facts["folders"]["a"] == [K3S_CONF, K3S_BIN]
    bad = cni_verdict({"a": ("/etc/cni/net.d", "/opt/cni/bin")}, K3S_CONF + "/")
    assert not bad.ok and "not k3s's" in bad.details[0] and bad.actions
    split = cni_verdict({"a": (K3S_CONF, K3S_BIN), "b": ("/etc/cni/net.d", K3S_BIN)}, K3S_CONF)
    assert not split.ok and len(split.details) == 2


def test_in_cidr() -> None:
    assert nbp.in_cidr("10.44.3.7", "10.44.0.0/16") and not nbp.in_cidr("10.42.3.7", "10.44.0.0/16")
    assert not nbp.in_cidr(None, "10.44.0.0/16") and not nbp.in_cidr("nonsense", "10.44.0.0/16")


# ------------------------------------------------------------------ order and objects
def test_agents_first_servers_last_in_params_order() -> None:
    nodes = [("s1", "server"), ("a1", "agent"), ("s2", "server"), ("a2", "agent")]
    assert nbp.node_order(nodes) == ["a1", "a2", "s1", "s2"]


def test_the_cilium_node_config_is_the_guides() -> None:
    m = nbp.cnc_manifest("kube-system")
    assert (m["apiVersion"], m["kind"], m["metadata"]["name"]) == ("cilium.io/v2alpha1", "CiliumNodeConfig",
                                                                   "cilium-default")
    assert m["spec"]["nodeSelector"] == {"matchLabels": {"io.cilium.migration/cilium-default": "true"}}
    assert m["spec"]["defaults"] == {"write-cni-conf-when-ready": "/host/etc/cni/net.d/05-cilium.conflist",
                                     "custom-cni-conf": "false", "cni-chaining-mode": "none",
                                     "cni-exclusive": "true"}


def test_the_probe_pod_is_pinned_and_tolerates_the_cordon() -> None:
    m = nbp.probe_pod_manifest("fast-skunk", image="busybox:1.36", namespace="kube-system", run_id="r1")
    assert m["spec"]["nodeName"] == "fast-skunk" and m["spec"]["tolerations"] == [{"operator": "Exists"}]
    assert m["metadata"]["name"] == "phase22-nbn-probe-fast-skunk"
    assert m["spec"]["containers"][0]["image"] == "busybox:1.36"
    long = nbp.probe_pod_manifest("n" * 80, image="i", namespace="ns", run_id="r")
    assert len(long["metadata"]["name"]) <= 63


# ------------------------------------------------------------------ resume point
ORDER = ["fast-skunk", "fast-heron", "set-hog"]


def test_a_fresh_run_starts_with_the_first_agent() -> None:
    rp = nbp.resume_point([_entry("helm-install", None), _entry("nbn-cnc", None)], ORDER)
    assert (rp.node, rp.step, rp.done, rp.started, rp.pending) == ("fast-skunk", "cordon", [], False, [])
    assert str(rp) == "start with fast-skunk, next step cordon"


def test_a_run_killed_mid_drain_continues_with_that_node_and_repeats_the_drain() -> None:
    entries = _node_done("fast-skunk") + [_entry("nbn-cordon", "fast-heron", seq=20),
                                          _entry("nbn-drain", "fast-heron", status="intent", seq=21),
                                          _entry("nbn-delete-pod", "fast-heron", seq=22)]
    rp = nbp.resume_point(entries, ORDER)
    assert (rp.done, rp.node, rp.step, rp.pending) == (["fast-skunk"], "fast-heron", "drain", ["drain"])
    assert str(rp) == "done: fast-skunk; continue with fast-heron, next step drain (interrupted during drain: repeated)"


def test_a_failed_step_is_the_next_one_and_later_steps_are_not_skipped() -> None:
    entries = [_entry(nbp.journal_step(s), "fast-skunk") for s in ("cordon", "drain", "label", "agent", "pods")]
    entries.append(_entry("nbn-validate", "fast-skunk", status="failed"))
    rp = nbp.resume_point(entries, ORDER)
    assert (rp.node, rp.step, rp.pending) == ("fast-skunk", "validate", ["validate"])


def test_every_node_done_is_finished_and_rollback_entries_do_not_count() -> None:
    entries = [e for n in ORDER for e in _node_done(n)]
    rp = nbp.resume_point(entries, ORDER)
    assert rp.finished and rp.done == ORDER and str(rp).startswith("every node is on Cilium")
    # an entry of the rollback phase with a migration step name is not the migration's
    only_rollback = [dict(e, phase="rollback") for e in _node_done("fast-skunk")]
    assert nbp.resume_point(only_rollback, ORDER).node == "fast-skunk"


# ------------------------------------------------------------------ rollback order
def test_rollback_takes_nodes_back_newest_first_and_skips_those_reverted() -> None:
    entries = _node_done("fast-skunk", 1) + _node_done("fast-heron", 20) + [_entry("nbn-cordon", "set-hog", seq=40)]
    assert nbp.rollback_order(entries) == ["set-hog", "fast-heron", "fast-skunk"]
    assert nbp.needs_revert(entries, "fast-heron") and not nbp.needs_revert(entries, "set-hog")
    reverted = entries + [_entry("nbn-rb-uncordon", "set-hog", seq=50, phase="rollback")]
    assert nbp.rollback_order(reverted) == ["fast-heron", "fast-skunk"]
    # a revert recorded BEFORE the node's last migration step does not count (migrated again since)
    early = entries + [_entry("nbn-rb-uncordon", "fast-heron", seq=5, phase="rollback")]
    assert "fast-heron" in nbp.rollback_order(early)


def test_a_label_recorded_as_intent_needs_the_whole_revert() -> None:
    entries = [_entry("nbn-cordon", "a", seq=1), _entry("nbn-drain", "a", seq=2),
               _entry("nbn-label", "a", status="intent", seq=3)]
    assert nbp.rollback_order(entries) == ["a"] and nbp.needs_revert(entries, "a")


def test_the_switch_started_once_any_of_its_steps_is_recorded() -> None:
    base = [e for n in ORDER for e in _node_done(n)]
    assert not nbp.switch_started(base)
    assert nbp.switch_started(base + [_entry("nbn-final-values", None, status="intent")])
    assert nbp.switch_started(base + [_entry("restart-k3s", "set-hog")])
    assert not nbp.switch_started(base + [_entry("restart-k3s", "set-hog", phase="rollback")])


def test_a_real_target_records_who_accepted_the_strategy() -> None:
    v = acceptance_verdict("real", " Jo Operator ")
    assert v is not None and v.ok and v.name == "nbn-accepted"
    assert v.details == ["accepted by Jo Operator (node_by_node.accepted_on_real_target_by)"]
    assert v.facts == {"accepted_by": "Jo Operator"}
    refused = acceptance_verdict("real", "")
    assert refused is not None and not refused.ok and refused.hint
    assert acceptance_verdict("twin", "Jo") is None
