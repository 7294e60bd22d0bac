"""kubectl exec over WebSocket (v5.channel.k8s.io) and SPDY: commands, stdin, exit codes,
the runtime's and the API server's refusals."""
from __future__ import annotations

import subprocess

import pytest

from test_twin_api_kubectl import kubectl

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
POD = ["-n", "kube-system", "coredns-7b98449c4-abcde"]


def test_exec_output_and_exit_codes(kubectl_bin, api, kube_env):
    assert kubectl(kubectl_bin, api, kube_env, "exec", *POD, "--", "echo", "hi", "there").stdout == "hi there\n"
    resolv = kubectl(kubectl_bin, api, kube_env, "exec", *POD, "--", "cat", "/etc/resolv.conf").stdout
    assert "nameserver 10.43.0.10" in resolv and "search kube-system.svc.cluster.local" in resolv
    p = kubectl(kubectl_bin, api, kube_env, "exec", *POD, "--", "sh", "-c", "exit 3", check=False)
    assert p.returncode == 3 and "command terminated with exit code 3" in p.stderr
    p = kubectl(kubectl_bin, api, kube_env, "exec", *POD, "--", "nslookupp", "x", check=False)
    assert p.returncode == 1
    assert ('OCI runtime exec failed: exec failed: unable to start container process: '
            'exec: "nslookupp": executable file not found in $PATH') in p.stderr


def test_exec_stdin(kubectl_bin, api, kube_env):
    p = subprocess.run([kubectl_bin, "--kubeconfig", str(api.kubeconfig), "exec", "-i", *POD, "--", "cat"],
                       env=kube_env, input="line one\nline two\n", capture_output=True, text=True, timeout=60)
    assert (p.returncode, p.stdout) == (0, "line one\nline two\n"), p.stderr


def test_exec_refusals(kubectl_bin, api, kube_env):
    p = kubectl(kubectl_bin, api, kube_env, "exec", "-n", "default", "stuck-0", "--", "echo", check=False)
    assert p.returncode == 1 and 'container not found ("main")' in p.stderr
    p = kubectl(kubectl_bin, api, kube_env, "exec", *POD, "-c", "sidecar", "--", "echo", check=False)
    assert p.returncode == 1 and "container sidecar is not valid for pod coredns-7b98449c4-abcde" in p.stderr
    store = api.rt.store
    pods = store.lookup("", "v1", "pods")
    api.call(lambda: store.mutate(pods, "demo", "web-00",
                                  lambda o: o["status"].__setitem__("phase", "Succeeded")))
    p = kubectl(kubectl_bin, api, kube_env, "exec", "-n", "demo", "web-00", "--", "echo", check=False)
    assert p.returncode == 1
    assert "cannot exec into a container in a completed pod; current phase is Succeeded" in p.stderr
