"""k3s's embedded kube-proxy on a running twin follows Services and their endpoints.

A real kube-proxy rewrites its Service chains after every Service or EndpointSlice change
(at most once per ``minSyncPeriod``) while k3s runs it; once k3s stops, or runs with
``disable-kube-proxy``, its rules stay as its last sync left them, and a ClusterIP
translated by them goes to the endpoints of that sync. Driven through the store (a
Deployment and its Service), ``systemctl`` and ``iptables-save`` on the nodes.
"""
from __future__ import annotations

import re

import pytest

from twin_network_helpers import AGENT1, AGENT2, NODES, SERVER, Net, deployment, pod_ready

from test_twin_network_model import start

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

WEB_IP = "10.43.200.10"


@pytest.fixture
def env(tmp_path):
    n = start(tmp_path)
    yield n
    n.t.stop()


def web_service() -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"},
            "spec": {"clusterIP": WEB_IP, "selector": {"app": "web"},
                     "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}


def ready_endpoints(env: Net) -> set[str]:
    return {f"{p['status']['podIP']}:8080" for p in env.pods("default", "app=web")
            if pod_ready(p) and not p["metadata"].get("deletionTimestamp")}


def programmed(env: Net, node: str) -> set[str]:
    """What the node's rules DNAT the web Service to (iptables-save)."""
    return set(re.findall(r'"default/web:http" -m tcp -j DNAT --to-destination (\S+)', env.iptables(node)))


def settled(env: Net) -> None:
    """The pending kube-proxy sync (if any) has run."""
    env.until(lambda: env.call(env.net.kube_proxy_sync.idle), what="kube-proxy's sync")


def web_on_every_node(env: Net) -> set[str]:
    """Two web pods behind the web Service, programmed by every node; their endpoints."""
    env.create(deployment("web", 2))
    env.create(web_service())
    env.until(lambda: len(ready_endpoints(env)) == 2, timeout=60, what="2 web pods Ready")
    first = ready_endpoints(env)
    env.until(lambda: all(programmed(env, n) == first for n in NODES), what="every node programs web")
    return first


def replace_one_pod(env: Net) -> str:
    """Delete one web pod; the Deployment makes another. Returns the deleted pod's endpoint."""
    before = ready_endpoints(env)
    victim = next(p for p in env.pods("default", "app=web") if pod_ready(p))
    env.delete("pods", "default", victim["metadata"]["name"])
    env.until(lambda: len(ready_endpoints(env)) == 2 and ready_endpoints(env) != before,
              timeout=60, what="a replacement web pod Ready")
    return f"{victim['status']['podIP']}:8080"


def test_running_kube_proxies_follow_the_endpoints_and_a_stopped_one_keeps_its_last_sync(env):
    first = web_on_every_node(env)

    env.sh(AGENT2, "sudo systemctl stop k3s-agent")
    gone = replace_one_pod(env)
    second = ready_endpoints(env)
    env.until(lambda: all(programmed(env, n) == second for n in (SERVER, AGENT1)),
              what="the running kube-proxies follow the new endpoint")
    settled(env)
    # the stopped one: its rules are its last sync's, and they still translate the ClusterIP
    assert programmed(env, AGENT2) == first and gone not in second
    trace = env.call(env.net.reachability.trace, AGENT2, WEB_IP, 80, "tcp")
    assert f"kube-proxy rules left on {AGENT2}" in trace.reason, trace.reason
    assert f"to the endpoints of its last sync ({', '.join(sorted(first))})" in trace.reason, trace.reason

    env.sh(AGENT2, "sudo systemctl start k3s-agent")
    env.until(lambda: programmed(env, AGENT2) == ready_endpoints(env),
              what="the restarted kube-proxy syncs to the current endpoints")

    env.delete("services", "default", "web")
    env.until(lambda: all(f"{WEB_IP}/32" not in env.iptables(n) for n in NODES),
              what="the deleted Service's rules gone from every node")


def test_disable_kube_proxy_keeps_the_last_sync_on_every_node(env):
    first = web_on_every_node(env)

    env.add_config(SERVER, "disable-kube-proxy: true\n")    # agents take it from the server
    env.restart(SERVER, AGENT1, AGENT2)
    assert not any(env.call(env.node(n).kube_proxy_running) for n in NODES)
    sync = env.net.kube_proxy_sync
    generation = env.call(lambda: sync.generation)
    replace_one_pod(env)
    env.until(lambda: env.call(lambda: sync.generation) > generation, what="the endpoints' change seen")
    settled(env)
    for n in NODES:
        assert programmed(env, n) == first, n
        assert env.call(sync.node_generation, n) <= generation, n
