"""kubectl port-forward (WebSocket-tunnelled SPDY, and plain SPDY) and exec over SPDY.

What answers a forwarded port is the twin's model of the pod: a running container that
declares the port answers HTTP; any other port refuses, as the kubelet reports it; a pod
without a network sandbox cannot be forwarded to.
"""
from __future__ import annotations

import socket
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from test_twin_api_kubectl import kubectl

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
POD = ("kube-system", "coredns-7b98449c4-abcde")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module", autouse=True)
def _declared_port(api):
    store = api.rt.store
    api.call(lambda: store.mutate(store.lookup("", "v1", "pods"), *POD,
                                  lambda o: o["spec"]["containers"][0].__setitem__(
                                      "ports", [{"containerPort": 8080, "name": "http"}])))


def _forward(kubectl_bin, api, env, *ports: str) -> subprocess.Popen:
    p = subprocess.Popen([kubectl_bin, "--kubeconfig", str(api.kubeconfig), "port-forward",
                          "-n", POD[0], f"pod/{POD[1]}", *ports], env=env, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 20
    lines = []
    while time.monotonic() < deadline:
        line = p.stdout.readline()
        lines.append(line)
        if line.startswith("Forwarding from [::1]") or line.startswith("Forwarding from 127.0.0.1") \
                and len([x for x in lines if x.startswith("Forwarding")]) >= len(ports):
            return p
        if p.poll() is not None:
            break
    p.kill()
    raise AssertionError(f"port-forward did not start: {lines} {p.stderr.read()}")


@pytest.mark.parametrize("websockets", ["true", "false"])
def test_port_forward_reaches_the_declared_port(kubectl_bin, api, kube_env, websockets):
    env = dict(kube_env, KUBECTL_PORT_FORWARD_WEBSOCKETS=websockets)
    local, refused = _free_port(), _free_port()
    p = _forward(kubectl_bin, api, env, f"{local}:8080", f"{refused}:9999")
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{local}/healthz", timeout=10).read()
        assert body == b"ok\n"
        page = urllib.request.urlopen(f"http://127.0.0.1:{local}/index.html", timeout=10).read()
        assert page == f"{POD[1]}/main: /index.html\n".encode()
        with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
            urllib.request.urlopen(f"http://127.0.0.1:{refused}/", timeout=10).read()
    finally:
        p.terminate()
        _out, err = p.communicate(timeout=20)
    assert "dial tcp4 127.0.0.1:9999: connect: connection refused" in err


def test_port_forward_to_a_pod_without_sandbox_fails(kubectl_bin, api, kube_env):
    p = kubectl(kubectl_bin, api, kube_env, "port-forward", "-n", "default", "pod/stuck-0",
                f"{_free_port()}:80", check=False)
    assert p.returncode == 1 and "pod is not running" in p.stderr


def test_exec_over_spdy(kubectl_bin, api, kube_env):
    env = dict(kube_env, KUBECTL_REMOTE_COMMAND_WEBSOCKETS="false")
    out = kubectl(kubectl_bin, api, env, "exec", "-n", POD[0], POD[1], "--", "echo", "over", "spdy")
    assert out.stdout == "over spdy\n"
    p = kubectl(kubectl_bin, api, env, "exec", "-n", POD[0], POD[1], "--", "sh", "-c", "exit 4",
                check=False)
    assert p.returncode == 4
    p = subprocess.run([kubectl_bin, "--kubeconfig", str(api.kubeconfig), "exec", "-i", "-n", POD[0],
                        POD[1], "--", "cat"], env=env, input="via stdin\n", capture_output=True,
                       text=True, timeout=60)
    assert (p.returncode, p.stdout) == (0, "via stdin\n"), p.stderr
