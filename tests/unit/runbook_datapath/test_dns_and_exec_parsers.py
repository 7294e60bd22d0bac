"""runbook.dns_probe and runbook.pod_exec: what the lookup tools and the exec stream say (pure)."""
from __future__ import annotations

import pytest

from runbook import dns_probe, pod_exec

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]

BIND = ("Server:\t\t10.43.0.10\nAddress:\t10.43.0.10#53\n\nName:\tkubernetes.default.svc.cluster.local\n"
        "Address: 10.43.0.1\n\n")
BUSYBOX = ("Server:    10.43.0.10\nAddress 1: 10.43.0.10 kube-dns.kube-system.svc.cluster.local\n\n"
           "Name:      kubernetes.default.svc.cluster.local\nAddress 1: 10.43.0.1 kubernetes.default.svc.cluster.local\n")
TIMEOUT = ";; connection timed out; no servers could be reached\n"


@pytest.mark.parametrize("text,expect", [(BIND, ["10.43.0.1"]), (BUSYBOX, ["10.43.0.1"]), (TIMEOUT, []),
                                         ("Server: 10.43.0.10\nAddress: 10.43.0.10#53\n\n** server "
                                          "can't find x: NXDOMAIN\n", [])])
def test_nslookup_answers_are_the_addresses_after_the_name(text: str, expect: list[str]) -> None:
    assert dns_probe.parse_nslookup(text) == expect


def test_dig_and_getent() -> None:
    assert dns_probe.parse_dig_short("10.43.0.1\n") == ["10.43.0.1"]
    assert dns_probe.parse_dig_short(TIMEOUT) == []
    assert dns_probe.parse_getent("10.43.0.1 kubernetes.default.svc.cluster.local\n") == ["10.43.0.1"]
    assert dns_probe.parse_getent("") == []


@pytest.mark.parametrize("text,rc", [
    ('{"metadata":{},"status":"Success"}', 0), ("", 0),
    ('{"status":"Failure","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"2"}]}}', 2),
    ('{"status":"Failure","message":"exec: \\"nslookup\\": executable file not found in $PATH"}', 127),
    ('{"status":"Failure","message":"permission denied"}', 126),
    ("not json", 1),
])
def test_exit_status_from_the_error_channel(text: str, rc: int) -> None:
    assert pod_exec.parse_status(text)[0] == rc


def test_handshake_status() -> None:
    assert pod_exec.handshake_status(Exception("Handshake status 400 Bad Request -+-+- {}")) == 400
    assert pod_exec.handshake_status(OSError("refused")) == 0


def test_exec_result_reads_like_kubectl() -> None:
    r = pod_exec.ExecResult("ns", "p", "c", ["env", "TOKEN=abc"], 0, "out", "")
    assert r.shown_command().startswith("kubectl exec -n ns p -c c -- env")
    assert r.ok and r.label() == "[ns/p] "
