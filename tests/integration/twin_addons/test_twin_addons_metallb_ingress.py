"""MetalLB and the HTTPS ingress endpoint on the twin."""
from __future__ import annotations

import socket
import ssl

import pytest

from runbook.checks import probe_ingress

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

CTRL = "app.kubernetes.io/component=controller,app.kubernetes.io/name=metallb"
PODINFO = "podinfo.10.0.0.200.nip.io"


def _status(at, host: str) -> int | None:
    """The HTTPS status, or None when the connection goes nowhere."""
    try:
        return at.https(host).status
    except (ssl.SSLError, OSError):
        return None


def _lb_service(name: str, ns: str = "default", **annotations: str) -> dict:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": ns, "annotations": dict(annotations)},
            "spec": {"type": "LoadBalancer", "selector": {"app": name},
                     "ports": [{"port": 80, "targetPort": 8080, "protocol": "TCP"}]}}


def _clear_ip(at, ns: str, name: str) -> None:
    at.cluster.request("PATCH", f"/api/v1/namespaces/{ns}/services/{name}/status",
                       body={"status": {"loadBalancer": {"ingress": None}}},
                       content_type="application/merge-patch+json")


def _restart_controller(at) -> str:
    """Delete the metallb controller pod; returns the name of its Ready replacement."""
    old = {p["metadata"]["name"] for p in at.ready_pods("metallb-system", CTRL)}
    for name in old:
        at.cluster.delete("pods", name, "metallb-system")
    pods = at.until(lambda: [p for p in at.ready_pods("metallb-system", CTRL)
                             if p["metadata"]["name"] not in old], what="new controller pod Ready")
    return pods[0]["metadata"]["name"]


def test_loadbalancer_ips_from_the_pool(addon_twin) -> None:
    at = addon_twin
    c = at.cluster
    # the fixture's IPs are registered: nothing moves at start
    assert at.lb_ip("ingress-nginx", "ingress-nginx-controller") == "10.0.0.200"
    assert at.lb_ip("nats", "nats-lb") == "10.0.0.201"
    c.create("services", _lb_service("web"), "default")
    assert at.until(lambda: at.lb_ip("default", "web")) == "10.0.0.202"
    svc = c.get("services", "web", "default")
    assert svc["metadata"]["annotations"]["metallb.universe.tf/ip-allocated-from-pool"] == "default"
    c.create("services", _lb_service("pinned", **{"metallb.universe.tf/loadBalancerIPs": "10.0.0.215"}),
             "default")
    assert at.until(lambda: at.lb_ip("default", "pinned")) == "10.0.0.215"
    pool = at.until(lambda: (p := c.get("ipaddresspools", "default", "metallb-system"))
                    and p["status"]["assignedIPv4"] == 4 and p)
    assert pool["status"]["availableIPv4"] == 21 - 4
    # A request for an IP outside every pool stays pending, with a Warning event.
    c.create("services", _lb_service("outside", **{"metallb.universe.tf/loadBalancerIPs": "192.168.9.9"}),
             "default")
    ev = at.until(lambda: [e for e in c.list("events", "default")
                           if e["involvedObject"]["name"] == "outside" and e["reason"] == "AllocationFailed"])
    assert "192.168.9.9" in ev[0]["message"]
    assert at.lb_ip("default", "outside") is None
    # Deleting a service frees its IP; without the fault a cleared IP is reassigned at once.
    c.delete("services", "web", "default")
    _clear_ip(at, "nats", "nats-lb")
    assert at.until(lambda: at.lb_ip("nats", "nats-lb")) == "10.0.0.201"
    assert at.until(lambda: [e for e in c.list("events", "nats")
                             if e["involvedObject"]["name"] == "nats-lb" and e["reason"] == "IPAllocated"])
    c.create("services", _lb_service("web2"), "default")
    assert at.until(lambda: at.lb_ip("default", "web2")) == "10.0.0.202"


def test_pending_while_the_controller_is_not_ready(addon_twin) -> None:
    at = addon_twin
    at.pause_app("metallb")
    at.scale("metallb-system", "metallb-controller", 0)
    at.until(lambda: not at.ready_pods("metallb-system", CTRL), what="controller gone")
    at.cluster.create("services", _lb_service("waiting"), "default")
    at.cluster_sleep(10)
    assert at.lb_ip("default", "waiting") is None
    assert at.lb_ip("ingress-nginx", "ingress-nginx-controller") == "10.0.0.200"   # kept
    at.scale("metallb-system", "metallb-controller", 1)
    assert at.until(lambda: at.lb_ip("default", "waiting")) == "10.0.0.202"


def test_sticky_fault_a_cleared_ip_waits_for_a_controller_restart(addon_twin) -> None:
    at = addon_twin
    status, _ = at.admin("POST", "/faults", {"metallb_sticky": True})
    assert status == 200
    _clear_ip(at, "nats", "nats-lb")
    at.cluster_sleep(10)
    assert at.lb_ip("nats", "nats-lb") is None
    _restart_controller(at)
    assert at.until(lambda: at.lb_ip("nats", "nats-lb")) == "10.0.0.201"


def test_sticky_fault_restart_drops_ips_until_another_restart(twin_factory) -> None:
    at = twin_factory(faults={"metallb_sticky": True})
    assert at.https(PODINFO).status == 200
    _restart_controller(at)             # e.g. the "restart every pod" step after the swap
    at.until(lambda: at.lb_ip("ingress-nginx", "ingress-nginx-controller") is None, what="IP dropped")
    assert at.lb_ip("nats", "nats-lb") is None
    at.cluster_sleep(10)
    assert at.lb_ip("ingress-nginx", "ingress-nginx-controller") is None
    # the ingress IP is no longer announced: connections go nowhere
    probe = probe_ingress(f"https://{PODINFO}/", ca_file=at.ca,
                          resolve_to=f"127.0.0.1:{at.ingress_port}", kind="twin", timeout=3)
    assert not probe.ok and probe.status is None
    # Argo CD sees it too: the ingress-nginx app waits for its load balancer address
    app = at.until(lambda: (a := at.cluster.get("applications", "ingress-nginx", "argocd"))
                   ["status"]["health"]["status"] == "Progressing" and a, what="app Progressing")
    svc_health = next(r["health"] for r in app["status"]["resources"]
                      if r["kind"] == "Service" and r["name"] == "ingress-nginx-controller")
    assert svc_health["status"] == "Progressing" and "load balancer" in svc_health["message"]
    # and ingress-nginx publishes the (missing) address on every Ingress
    at.until(lambda: not (at.cluster.get("ingresses", "podinfo", "podinfo").get("status") or {})
             .get("loadBalancer"), what="Ingress status emptied")
    # the remediation of the original step 4: restart the controller once more
    _restart_controller(at)
    assert at.until(lambda: at.lb_ip("ingress-nginx", "ingress-nginx-controller")) == "10.0.0.200"
    assert at.until(lambda: at.lb_ip("nats", "nats-lb")) == "10.0.0.201"
    assert at.until(lambda: probe_ingress(f"https://{PODINFO}/", ca_file=at.ca,
                                          resolve_to=f"127.0.0.1:{at.ingress_port}",
                                          kind="twin").ok, what="ingress answers again")
    at.until(lambda: at.cluster.get("applications", "ingress-nginx", "argocd")
             ["status"]["health"]["status"] == "Healthy", what="app Healthy again")
    at.until(lambda: at.cluster.get("ingresses", "podinfo", "podinfo")["status"]["loadBalancer"]
             == {"ingress": [{"ip": "10.0.0.200"}]}, what="Ingress status back")
    # a third restart does not drop them again (the fault fires once per switch-on)
    _restart_controller(at)
    at.cluster_sleep(10)
    assert at.lb_ip("ingress-nginx", "ingress-nginx-controller") == "10.0.0.200"


def test_ingress_https_verified_with_the_twin_ca(addon_twin) -> None:
    at = addon_twin
    at.cluster_sleep(5)
    # the fixture's Ingress statuses already match what ingress-nginx publishes
    assert at.twin.call(lambda: at.twin.rt.component("ingress").status_writes) == 0
    r = at.https(PODINFO)
    assert r.status == 200
    pod = r.headers["x-twin-backend-pod"]
    assert pod.startswith("podinfo/podinfo-") and "podinfo/podinfo:9898" in r.body and pod in r.body
    # the runbook's own probe agrees (pinned SNI, CA verification, loopback guard)
    assert probe_ingress(f"https://{PODINFO}/", ca_file=at.ca,
                         resolve_to=f"127.0.0.1:{at.ingress_port}", kind="twin").ok
    # every fixture Ingress host answers 200
    hosts = [r_["host"] for i in at.cluster.list("ingresses") for r_ in i["spec"]["rules"]]
    assert len(hosts) >= 10
    assert {h: at.https(h).status for h in hosts} == {h: 200 for h in hosts}
    # an unknown host under the wildcard: nginx's default backend
    assert at.https("nothing.10.0.0.200.nip.io").status == 404
    # a certificate the client does not trust is refused
    sock = socket.create_connection(("127.0.0.1", at.ingress_port), timeout=5)
    with pytest.raises(ssl.SSLCertVerificationError):
        ssl.create_default_context().wrap_socket(sock, server_hostname=PODINFO)
    sock.close()


def test_ingress_503_without_controller_and_502_without_backend(addon_twin) -> None:
    at = addon_twin
    at.pause_app("ingress-nginx")
    at.scale("ingress-nginx", "ingress-nginx-controller", 0)
    at.until(lambda: not at.ready_pods("ingress-nginx", "app.kubernetes.io/component=controller"))
    r = at.https(PODINFO)
    assert r.status == 503 and "ingress-nginx controller" in r.headers["x-twin-reason"]
    at.scale("ingress-nginx", "ingress-nginx-controller", 2)
    at.until(lambda: at.https(PODINFO).status == 200, what="200 with the controller back")
    at.pause_app("podinfo")
    at.scale("podinfo", "podinfo", 0)
    r = at.until(lambda: (a := at.https(PODINFO)).status == 502 and a, what="502 without backend")
    assert "podinfo/podinfo:9898" in r.headers["x-twin-reason"]
    assert at.https("whoami.10.0.0.200.nip.io").status == 200      # other sites unaffected
    at.scale("podinfo", "podinfo", 1)
    at.until(lambda: at.https(PODINFO).status == 200, what="200 with a backend back")


def test_ingress_host_added_later_gets_a_certificate(addon_twin) -> None:
    at = addon_twin
    host = "late.example.test"
    at.cluster.create("ingresses", {
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": "late", "namespace": "podinfo"},
        "spec": {"ingressClassName": "nginx", "rules": [{"host": host, "http": {"paths": [
            {"path": "/", "pathType": "Prefix",
             "backend": {"service": {"name": "podinfo", "port": {"number": 9898}}}}]}}]}}, "podinfo")
    r = at.https(host)
    assert r.status == 200 and r.headers["x-twin-backend-pod"].startswith("podinfo/")


def test_exhausted_pool_leaves_a_service_pending_until_an_ip_frees(addon_twin) -> None:
    at = addon_twin
    c = at.cluster
    for i in range(19):                  # 10.0.0.202 .. 10.0.0.220
        c.create("services", _lb_service(f"s{i}"), "default")
    at.until(lambda: all(at.lb_ip("default", f"s{i}") for i in range(19)), what="19 IPs assigned")
    c.create("services", _lb_service("one-too-many"), "default")
    ev = at.until(lambda: [e for e in c.list("events", "default")
                           if e["involvedObject"]["name"] == "one-too-many"
                           and e["reason"] == "AllocationFailed"], what="AllocationFailed")
    assert "no available IPs" in ev[0]["message"]
    freed = at.lb_ip("default", "s7")
    c.delete("services", "s7", "default")
    assert at.until(lambda: at.lb_ip("default", "one-too-many")) == freed


def test_ingress_ip_unreachable_without_a_ready_speaker(addon_twin) -> None:
    at = addon_twin
    c = at.cluster
    at.pause_app("metallb")
    # no speaker may run anywhere: a nodeSelector no node has
    c.request("PATCH", "/apis/apps/v1/namespaces/metallb-system/daemonsets/metallb-speaker",
              body={"spec": {"template": {"spec": {"nodeSelector": {"twin.test/none": "x"}}}}},
              content_type="application/merge-patch+json")
    at.until(lambda: not at.ready_pods("metallb-system", "app.kubernetes.io/component=speaker"),
             what="speakers gone")
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        at.https(PODINFO)
    assert at.lb_ip("ingress-nginx", "ingress-nginx-controller") == "10.0.0.200"   # still assigned
    c.request("PATCH", "/apis/apps/v1/namespaces/metallb-system/daemonsets/metallb-speaker",
              body={"spec": {"template": {"spec": {"nodeSelector": None}}}},
              content_type="application/merge-patch+json")
    at.until(lambda: _status(at, PODINFO) == 200, what="announced again")
