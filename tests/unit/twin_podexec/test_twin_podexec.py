"""The commands that run inside pods (twin.podexec): registry, runtime rules, shell basics."""
from __future__ import annotations

import pytest

from twin import podexec
from twin.podexec import cilium_dbg, ports, shell

pytestmark = pytest.mark.unit

POD = {"metadata": {"name": "web-0", "namespace": "shop", "uid": "u-1"},
       "spec": {"nodeName": "n1", "containers": [
           {"name": "app", "image": "nginx:1.27", "ports": [{"containerPort": 80}],
            "env": [{"name": "MODE", "value": "prod"},
                    {"name": "MY_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}]}]},
       "status": {"phase": "Running", "podIP": "10.42.1.9",
                  "containerStatuses": [{"name": "app", "state": {"running": {}}}]}}


def test_registry_collects_every_module_including_the_network_commands():
    assert {"echo", "cat", "env", "hostname", "sh", "true", "false", "cilium-dbg", "cilium",
            "nslookup", "getent", "curl", "wget", "cilium-health"} <= set(podexec.COMMANDS)


def test_unknown_command_is_runc_not_found():
    rc, out, err = podexec.run(None, POD, "app", ["/usr/bin/nslookupp", "x"])
    assert (rc, out) == (127, b"")
    assert err.decode().startswith('OCI runtime exec failed: exec failed: unable to start container '
                                   'process: exec: "/usr/bin/nslookupp": executable file not found in $PATH')


def test_basics():
    assert podexec.run(None, POD, "app", ["/bin/echo", "-n", "a", "b"]) == (0, b"a b", b"")
    assert podexec.run(None, POD, "app", ["hostname"]) == (0, b"web-0\n", b"")
    env = podexec.run(None, POD, "app", ["env"])[1].decode().splitlines()
    assert "MODE=prod" in env and "MY_IP=10.42.1.9" in env and "KUBERNETES_SERVICE_HOST=10.43.0.1" in env
    rc, out, err = podexec.run(None, POD, "app", ["cat", "/etc/resolv.conf", "/etc/shadow"])
    assert rc == 1 and b"nameserver 10.43.0.10" in out and err == b"cat: /etc/shadow: No such file or directory\n"
    assert podexec.run(None, POD, "app", ["cat"], b"in") == (0, b"in", b"")


def test_host_network_pods_see_the_node():
    pod = {**POD, "spec": {**POD["spec"], "hostNetwork": True}}
    assert shell.pod_hostname(pod) == "n1"
    assert shell.resolv_conf(pod) == shell.NODE_RESOLV_CONF
    pod["spec"]["dnsPolicy"] = "ClusterFirstWithHostNet"
    assert "nameserver 10.43.0.10" in shell.resolv_conf(pod)


def test_sh_runs_one_simple_command_only():
    assert podexec.run(None, POD, "app", ["sh", "-c", "echo 'hello world'"]) == (0, b"hello world\n", b"")
    assert podexec.run(None, POD, "app", ["sh", "-c", "exit 7"])[0] == 7
    rc, _out, err = podexec.run(None, POD, "app", ["sh", "-c", "cat /etc/hosts | grep web"])
    assert rc == 2 and b"does not run a shell" in err
    assert podexec.run(None, POD, "app", ["sh", "-c", "curlx http://x"]) == (127, b"", b"sh: curlx: not found\n")


def test_cilium_dbg_exists_only_in_agent_containers():
    rc, _out, err = podexec.run(None, POD, "app", ["cilium-dbg", "status"])
    assert rc == 127 and b'exec: "cilium-dbg": executable file not found' in err
    agent = {"metadata": {"name": "cilium-x", "labels": {"k8s-app": "cilium"}}, "spec": {}}
    assert cilium_dbg.is_agent_container(agent, "cilium-agent")
    assert not cilium_dbg.is_agent_container(agent, "mount-cgroup")


def test_ports_listen_where_declared():
    assert ports.listener(None, POD, 80) == ("app", "")
    who, why = ports.listener(None, POD, 8080)
    assert who is None and "dial tcp4 127.0.0.1:8080: connect: connection refused" in why
    pending = {**POD, "status": {"phase": "Pending"}}
    assert ports.listener(None, pending, 80) == (None, "pod is not running (phase Pending)")
    no_ip = {**POD, "status": {**POD["status"], "podIP": ""}}
    assert ports.listener(None, no_ip, 80) == (None, "pod has no network sandbox")
    resp = ports.answer_http("app", POD, b"GET /x HTTP/1.1\r\n\r\n")
    assert resp.startswith(b"HTTP/1.1 200 OK\r\n") and resp.endswith(b"\r\n\r\nweb-0/app: /x\n")
