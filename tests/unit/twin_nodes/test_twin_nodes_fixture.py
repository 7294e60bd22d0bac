"""Nodes built from fixture objects: leases from pods, kube-proxy chains from Services."""
from __future__ import annotations

import asyncio

import pytest

from twin.clock import Clock
from twin.node import NodesComponent, build_nodes, fixture_pods, fixture_services
from twin_nodes_cases import CLUSTER, SPECS, run

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]


def pod(name, node, ip, labels, host_network=False, ports=()):
    return {"kind": "Pod", "metadata": {"name": name, "namespace": "web", "labels": labels},
            "spec": {"nodeName": node, "hostNetwork": host_network,
                     "containers": [{"name": "c", "ports": [{"name": n, "containerPort": p}
                                                            for n, p in ports]}]},
            "status": {"phase": "Running", "podIP": ip}}


OBJECTS = [
    pod("web-1", "agent-1", "10.42.1.7", {"app": "web"}, ports=[("http", 8080)]),
    pod("web-2", "agent-2", "10.42.2.9", {"app": "web"}, ports=[("http", 8080)]),
    pod("agent", "agent-1", "10.0.0.3", {"app": "x"}, host_network=True),
    {"kind": "Service", "metadata": {"name": "web", "namespace": "web"},
     "spec": {"clusterIP": "10.43.5.5", "selector": {"app": "web"},
              "ports": [{"name": "http", "port": 80, "targetPort": "http", "nodePort": 30080}]},
     "status": {"loadBalancer": {"ingress": [{"ip": "10.0.0.200"}]}}},
    {"kind": "Service", "metadata": {"name": "empty", "namespace": "web"},
     "spec": {"clusterIP": "10.43.5.6", "selector": {"app": "nobody"},
              "ports": [{"name": "http", "port": 80}]}},
    {"kind": "Service", "metadata": {"name": "kubernetes", "namespace": "default"},
     "spec": {"clusterIP": "10.43.0.1", "ports": [{"name": "https", "port": 443}]}},
]


def test_fixture_pods_and_services():
    pods = fixture_pods(OBJECTS)
    assert [ip for ip, _ in pods["agent-1"]] == ["10.42.1.7"]          # hostNetwork excluded
    svcs = {s.name: s for s in fixture_services(OBJECTS)}
    assert svcs["web"].endpoints == ["10.42.1.7:8080", "10.42.2.9:8080"]  # named targetPort
    assert svcs["web"].node_port == 30080 and svcs["web"].lb_ips == ["10.0.0.200"]
    assert svcs["empty"].endpoints == []


def test_nodes_from_objects(tmp_path):
    nodes = build_nodes(SPECS, CLUSTER, tmp_path, Clock(0.001), pods=fixture_pods(OBJECTS),
                        services=fixture_services(OBJECTS))
    a = nodes["agent-1"]
    assert list(a.leases()) == ["10.42.1.7"]
    assert a.read_text("/var/lib/cni/networks/cbr0/last_reserved_ip.0") == "10.42.1.7"
    assert sum(1 for i in a.interfaces if i.startswith("veth")) == 1
    assert nodes["server-1"].leases() == {}
    save = a.iptables_save()
    assert "--to-destination 10.42.2.9:8080" in save and "--probability 0.5000000000" in save
    assert '"web/web:http loadbalancer IP"' in save and "--dport 30080 -j KUBE-EXT-" in save
    assert '"web/empty:http has no endpoints"' in save and "-j REJECT" in save
    assert "KUBE-SVC-NPX46M4PTMTKRN6Y" in save and "--to-destination 10.0.0.2:6443" in save


def test_component_with_minicloud_fixture(tmp_path):
    from twin import fixtures

    fx = fixtures.load("minicloud")
    from twin.faults import Faults
    from twin.runtime import Runtime

    outages = []

    class FakeAPI:
        """Records each time the nodes hold the API down as [start, end] in cluster seconds."""

        name = "apiserver"

        def __init__(self):
            self.holds = set()

        def hold_down(self, reason):
            if reason not in self.holds:
                self.holds.add(reason)
                outages.append([rt.clock.cluster_now(), None])

        def release(self, reason):
            if reason in self.holds:
                self.holds.discard(reason)
                outages[-1][1] = rt.clock.cluster_now()

        def held_down(self, reason=None):
            return bool(self.holds) if reason is None else reason in self.holds

    rt = Runtime(state_dir=tmp_path, clock=Clock(0.001), faults=Faults(), fixture=fx)

    async def scenario():
        rt.components.append(FakeAPI())
        comp = NodesComponent()
        await comp.start(rt)
        server = next(n for n in rt.nodes.values() if n.role == "server")
        res = [await server.exec("sudo systemctl restart k3s")]
        await asyncio.sleep(0.01)
        back = outages[0][1] is not None     # the API listened again when the unit was up
        # stopped k3s: the API stays down until k3s starts again
        res.append(await server.exec("sudo systemctl stop k3s"))
        await rt.clock.sleep(50)
        still_down = outages[-1][1] is None
        res.append(await server.exec("sudo systemctl start k3s"))
        await asyncio.sleep(0.01)
        # with the fault, a restart keeps the API down for api_down_seconds (1000 cluster
        # seconds = 1 s of wall time at this speed: longer than the restart takes even on a
        # loaded machine, where 60 ms once was not)
        rt.faults.api_down_on_restart, rt.faults.api_down_seconds = True, 1000.0
        res.append(await server.exec("sudo systemctl restart k3s"))
        mid = outages[-1][1] is None
        for _ in range(1000):
            if outages[-1][1] is not None:
                break
            await asyncio.sleep(0.005)
        await comp.stop()
        return res, still_down, mid, back
    res, still_down, mid, back = run(scenario())
    assert [r.rc for r in res] == [0, 0, 0, 0]
    assert len(outages) == 3 and all(end is not None for _, end in outages)
    restart = outages[0][1] - outages[0][0]
    assert restart >= 4 and back                    # down while k3s restarted, back once it was up
    assert still_down and outages[1][1] - outages[1][0] >= 50
    assert mid and outages[2][1] - outages[2][0] >= 999, outages
    assert set(rt.nodes) == {n.name for n in fx.nodes}
    for spec in fx.nodes:
        n = rt.nodes[spec.name]
        assert n.host_path("/").parent == tmp_path / "nodes"
        assert n.kernel == spec.kernel
        assert "KUBE-SVC-" in n.iptables_save() and n.leases()

