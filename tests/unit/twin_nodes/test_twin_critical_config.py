"""The critical values k3s servers must share (k3s CriticalControlArgs), compared when a
server joins (pkg/cluster/bootstrap.go compareConfig)."""
from __future__ import annotations

import pytest

from twin.node.k3s_config import critical_mismatch, embedded_etcd, server_settings

CLUSTER = {"cluster_cidr": "10.42.0.0/16", "service_cidr": "10.43.0.0/16"}


def settings(**cfg) -> dict:
    return server_settings(cfg, CLUSTER, "n")


@pytest.mark.parametrize("local, remote, expected", [
    ({}, {}, []),
    ({"flannel-backend": "none"}, {}, ["flannel-backend"]),
    ({"disable-network-policy": True}, {}, ["disable-network-policy"]),
    ({"cluster-cidr": "10.52.0.0/16"}, {}, ["cluster-cidr"]),
    ({"disable": ["servicelb"]}, {"disable": ["servicelb", "traefik"]}, []),     # traefik: not critical
    ({"disable": ["coredns"]}, {}, ["disable=coredns"]),
    ({"disable-kube-proxy": True}, {}, []),      # not among k3s's critical values
])
def test_critical_mismatch(local, remote, expected):
    assert critical_mismatch(settings(**local), settings(**remote)) == expected


def test_embedded_etcd_members():
    assert embedded_etcd({"cluster-init": True}) and embedded_etcd({"server": "https://10.0.0.2:6443"})
    assert not embedded_etcd({"write-kubeconfig-mode": "0644"})
