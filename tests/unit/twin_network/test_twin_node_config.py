"""CiliumNodeConfig resolution and the migration-mode keys of cilium-config (pure parts):
as cilium's pkg/option/resolver.go (readNodeConfigs) and daemon/cmd/cni resolve them."""
from __future__ import annotations

import pytest

from twin.controllers.cilium.config import CiliumConfig
from twin.controllers.cilium.node_config import (cni_bin_dir, cni_conf_host_path, host_path,
                                                  overrides_for, selects, snapshot)

LABEL = "io.cilium.migration/cilium-default"


def cnc(name: str, defaults: dict, selector: dict | None = {"matchLabels": {LABEL: "true"}}) -> dict:
    spec: dict = {"defaults": defaults}
    if selector is not None:
        spec["nodeSelector"] = selector
    return {"metadata": {"name": name, "namespace": "kube-system"}, "spec": spec}


@pytest.mark.parametrize("selector, labels, expected", [
    ({"matchLabels": {LABEL: "true"}}, {LABEL: "true"}, True),
    ({"matchLabels": {LABEL: "true"}}, {LABEL: "false"}, False),
    ({"matchLabels": {LABEL: "true"}}, {}, False),
    ({}, {"anything": "x"}, True),                       # empty selector: every node
    (None, {LABEL: "true"}, False),                      # no selector: no node when listing
    ({"matchExpressions": [{"key": LABEL, "operator": "Exists"}]}, {LABEL: ""}, True),
    ({"matchExpressions": [{"key": LABEL, "operator": "Bogus"}]}, {LABEL: "true"}, False),
])
def test_selects(selector, labels, expected):
    assert selects(cnc("c", {"k": "v"}, selector), labels) is expected


def test_later_names_win_and_empty_defaults_are_ignored():
    objs = [cnc("b-second", {"cni-exclusive": "false", "only-b": "1"}),
            cnc("a-first", {"cni-exclusive": "true", "only-a": "1"}),
            cnc("c-empty", {})]
    over, names = overrides_for(objs, {LABEL: "true"})
    assert names == ["a-first", "b-second"]
    assert over == {"cni-exclusive": "false", "only-a": "1", "only-b": "1"}


def test_booleans_and_numbers_become_strings():
    over, _ = overrides_for([cnc("x", {"cni-exclusive": True, "tunnel-port": 8473})], {LABEL: "true"})
    assert over == {"cni-exclusive": "true", "tunnel-port": "8473"}


def test_snapshot_puts_overrides_over_the_configmap():
    snap = snapshot({"custom-cni-conf": "true", "tunnel-port": "8473"},
                    [cnc("cilium-default", {"custom-cni-conf": "false"})], {LABEL: "true"})
    assert snap["data"] == {"custom-cni-conf": "false", "tunnel-port": "8473"}
    assert snap["overrides"] == {"custom-cni-conf": "false"} and snap["sources"] == ["cilium-default"]


AGENT_POD = {"spec": {
    "volumes": [{"name": "etc-cni-netd", "hostPath": {"path": "/var/lib/rancher/k3s/agent/etc/cni/net.d"}},
                {"name": "cni-path", "hostPath": {"path": "/var/lib/rancher/k3s/data/cni"}},
                {"name": "tmp", "emptyDir": {}}],
    "containers": [{"name": "cilium-agent", "volumeMounts": [
        {"name": "etc-cni-netd", "mountPath": "/host/etc/cni/net.d"},
        {"name": "tmp", "mountPath": "/tmp"}]}],
    "initContainers": [{"name": "install-cni-binaries", "volumeMounts": [
        {"name": "cni-path", "mountPath": "/host/opt/cni/bin"}]}]}}


def test_container_paths_land_in_the_hostpath_volumes():
    assert cni_conf_host_path(AGENT_POD, "/host/etc/cni/net.d/05-cilium.conflist") == \
        "/var/lib/rancher/k3s/agent/etc/cni/net.d/05-cilium.conflist"
    assert cni_bin_dir(AGENT_POD) == "/var/lib/rancher/k3s/data/cni"
    assert cni_conf_host_path(AGENT_POD, "") is None                 # customConf: nothing written
    assert host_path(AGENT_POD, "cilium-agent", "/tmp/x") is None    # emptyDir: not the host's
    assert host_path(AGENT_POD, "cilium-agent", "/etc/cni/net.d/x") is None
    assert cni_bin_dir({"spec": {}}) == "/opt/cni/bin"


def test_migration_keys_of_cilium_config():
    c = CiliumConfig.from_data({
        "custom-cni-conf": "true", "enable-policy": "never", "enable-host-legacy-routing": "true",
        "tunnel-port": "8473", "ipam": "cluster-pool", "cluster-pool-ipv4-cidr": "10.245.0.0/16",
        "unmanaged-pod-watcher-interval": "0"})
    assert (c.write_cni_conf, c.cni_exclusive, c.custom_cni_conf, c.cni_uninstall) == ("", False, True, False)
    assert (c.policy_mode, c.host_legacy_routing, c.tunnel_port) == ("never", True, 8473)
    assert c.pool_cidrs == ["10.245.0.0/16"] and c.unmanaged_watcher_seconds == 0.0
    d = CiliumConfig.from_data({"write-cni-conf-when-ready": "/host/etc/cni/net.d/05-cilium.conflist",
                                "cni-exclusive": "true", "cni-uninstall": "true"})
    assert (d.write_cni_conf, d.cni_exclusive, d.cni_uninstall, d.cni_chaining_mode) == \
        ("/host/etc/cni/net.d/05-cilium.conflist", True, True, "none")
