"""The rehearsal's prober, round by round, against stand-ins for the twin's ingress and
network model (no twin, no loop): what it asks, and what each sample keeps."""
from __future__ import annotations

import contextlib
from types import SimpleNamespace

import pytest

from runbook.rehearse_probe import AvailabilityProber

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]

KUBE_DNS = {"metadata": {"namespace": "kube-system", "name": "kube-dns"},
            "spec": {"clusterIP": "10.43.0.10", "ports": [{"port": 53, "protocol": "UDP"}]}}


class Ingress:
    name = "ingress"

    def __init__(self) -> None:
        self.answers: dict[str, tuple[int, str]] = {}
        self.up = True

    def announced(self) -> bool:
        return self.up

    def route(self, host: str, path: str) -> SimpleNamespace:
        status, reason = self.answers.get(host, (200, "served by web/a"))
        return SimpleNamespace(status=status, reason=reason)


class Network:
    name = "network"

    def __init__(self) -> None:
        self.down: dict[str, str] = {}
        self.asked: list[tuple] = []
        self.instants = 0

    def reach(self, node: str, ip: str, port: int, proto: str) -> tuple[bool, str]:
        self.asked.append((node, ip, port, proto))
        return (node not in self.down, self.down.get(node, "reached pod kube-system/coredns"))

    @contextlib.contextmanager
    def one_instant(self):
        self.instants += 1
        yield


class Clock:
    now = 0.0

    def cluster_now(self) -> float:
        return self.now


def _rt(ingress: Ingress, net: Network, service: dict | None = KUBE_DNS) -> SimpleNamespace:
    store = SimpleNamespace(lookup=lambda *a: "svc", peek=lambda t, ns, name: service)
    comps = {"ingress": ingress, "network": net}

    def component(name: str):
        return comps[name]

    return SimpleNamespace(store=store, nodes={"n2": None, "n1": None}, component=component,
                           endpoints={"ingress_hosts": ["a.example", "b.example"]}, clock=Clock())


def _prober(rt: SimpleNamespace) -> tuple[AvailabilityProber, list]:
    p = AvailabilityProber(SimpleNamespace(rt=rt))
    plan = p._plan(rt)
    p.targets = [t for t, _ in plan]
    return p, plan


def test_every_ingress_host_and_the_service_from_every_node_in_one_instant_per_round() -> None:
    ing, net = Ingress(), Network()
    rt = _rt(ing, net)
    p, plan = _prober(rt)
    assert [t["name"] for t in p.targets] == [
        "https://a.example/", "https://b.example/",
        "service kube-system/kube-dns 10.43.0.10:53/udp from n1",
        "service kube-system/kube-dns 10.43.0.10:53/udp from n2"]
    p._round(rt.clock, plan)
    assert net.instants == 1 and net.asked == [("n1", "10.43.0.10", 53, "udp"), ("n2", "10.43.0.10", 53, "udp")]
    assert all(t["samples"] == [{"t": t["samples"][0]["t"], "ct": 0.0, "ok": True}] for t in p.targets)


def test_a_failure_keeps_its_reason_once_and_again_when_it_changes() -> None:
    ing, net = Ingress(), Network()
    rt = _rt(ing, net)
    p, plan = _prober(rt)
    reasons = [None, (503, "no controller"), (503, "no controller"), (502, "no backend"), None]
    for i, r in enumerate(reasons):
        rt.clock.now = 2.0 * i
        ing.answers = {"a.example": r} if r else {}
        p._round(rt.clock, plan)
    a = p.section()[0]["samples"]
    assert [s["ok"] for s in a] == [True, False, False, False, True]
    assert [s.get("why") for s in a] == [None, "503 no controller", None, "502 no backend", None]
    assert "_why" not in p.section()[0]


def test_an_unannounced_ingress_ip_fails_every_host_and_a_model_error_is_a_failure() -> None:
    ing, net = Ingress(), Network()
    rt = _rt(ing, net)
    p, plan = _prober(rt)
    ing.up = False
    net.reach = lambda *a: 1 / 0
    p._round(rt.clock, plan)
    whys = [t["samples"][0]["why"] for t in p.section()]
    assert whys[0].startswith("dropped: the ingress IP is not announced")
    assert whys[2] == "prober error: ZeroDivisionError: division by zero"


def test_without_kube_dns_the_notes_say_no_service_was_probed() -> None:
    p, plan = _prober(_rt(Ingress(), Network(), service=None))
    assert len(plan) == 2 and "no Service was probed" in p.notes[0]
