"""runbook.cilium_cleanup: the pod Cilium's post-uninstall-cleanup runs in (pure parts)."""
from __future__ import annotations

import pytest

from runbook import cilium_cleanup as cc

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]

IMAGE = "quay.io/cilium/cilium:v1.19.3@sha256:2e61680593cddca8b6c055f6d4c849d87a26a1c91c7e3b8b56c7fb76ab7b7b10"


def test_the_pod_reaches_what_the_cleanup_needs_and_nothing_runs_by_itself() -> None:
    pod = cc.manifest("fast-skunk", image=IMAGE, namespace="kube-system", run_id="r1",
                      cni_conf_dir="/etc/cni/custom")
    spec = pod["spec"]
    assert spec["nodeName"] == "fast-skunk" and spec["hostNetwork"] is True
    assert spec["restartPolicy"] == "Never" and spec["automountServiceAccountToken"] is False
    assert spec["tolerations"] == [{"operator": "Exists"}]          # NotReady, NoSchedule, NoExecute
    [c] = spec["containers"]
    assert c["image"] == IMAGE and c["imagePullPolicy"] == "IfNotPresent"
    assert c["securityContext"] == {"privileged": True}
    assert c["command"][0] == "sleep"      # the cleanup itself runs through kubectl exec
    assert int(c["command"][1]) == spec["activeDeadlineSeconds"]  # it ends by itself
    host = {v["name"]: v["hostPath"]["path"] for v in spec["volumes"]}
    mounts = {m["mountPath"]: host[m["name"]] for m in c["volumeMounts"]}
    # the pid file guard needs the host's /run/cilium where cilium-dbg looks for it
    assert mounts == {"/sys/fs/bpf": "/sys/fs/bpf", "/var/run/cilium": "/run/cilium",
                      "/etc/cni/net.d": "/etc/cni/custom", "/var/lib/cilium": "/var/lib/cilium"}
    assert pod["metadata"]["labels"]["app.kubernetes.io/name"] == cc.APP_LABEL


def test_pod_names_and_labels_stay_valid_for_long_names() -> None:
    long = "node-" + "x" * 200
    name = cc.pod_name(long)
    assert len(name) <= 63 and name != cc.pod_name(long + "y")
    pod = cc.manifest(long, image=IMAGE, namespace="kube-system", run_id="r" * 80)
    assert len(pod["metadata"]["labels"]["phase22.io/run-id"]) <= 63


def test_the_image_the_values_select() -> None:
    assert cc.image_from_values({"image": {"override": "reg/cilium@sha256:1"}}, "1.19.3") == "reg/cilium@sha256:1"
    assert cc.image_from_values({"image": {"repository": "r/c", "tag": "v9", "digest": "sha256:1",
                                           "useDigest": False}}, "1.19.3") == "r/c:v9"


def test_output_lines_are_sorted_into_removed_and_errors() -> None:
    out = ("Warning: Destructive operation. You are about to remove:\n- tc filters\n"
           "removed tc filter cil_from_netdev (ingress) of eth0\nremoved all socketlb bpf programs\n")
    removed, errors = cc.parse_output(out, "Error: Failed to unmount /run/cilium/cgroupv2: busy\n")
    assert removed == ["removed tc filter cil_from_netdev (ingress) of eth0",
                       "removed all socketlb bpf programs"]
    assert errors == ["Error: Failed to unmount /run/cilium/cgroupv2: busy"]
