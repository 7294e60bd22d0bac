"""The commands every image has: ``echo true false hostname env cat sh``.

Files ``cat`` can read are the ones the kubelet and the image put in every container:
``/etc/resolv.conf`` (the cluster DNS for ``dnsPolicy: ClusterFirst``, the node's for
host-network pods), ``/etc/hostname``, ``/etc/hosts``; anything else is "No such file".
``env`` shows what the kubelet sets: ``PATH``, ``HOSTNAME``, the container's ``env``
(literal values and the downward API fields it can resolve) and the ``KUBERNETES_*``
variables of the in-cluster Service.

``sh -c LINE`` (and ``bash -c``) runs LINE when it is one simple command; pipes,
redirections, ``;``, ``&&`` and ``$VAR`` are refused with exit 2, as the twin does not
run a shell.

Example:
    >>> pod = {"metadata": {"name": "web-0", "namespace": "shop"}, "spec": {}}
    >>> resolv_conf(pod).splitlines()[0]
    'search shop.svc.cluster.local svc.cluster.local cluster.local'
"""
from __future__ import annotations

import shlex
from typing import Any

CLUSTER_DNS = "10.43.0.10"          # k3s' kube-dns Service
CLUSTER_DOMAIN = "cluster.local"
KUBERNETES_SERVICE = ("10.43.0.1", 443)
NODE_RESOLV_CONF = "nameserver 127.0.0.53\noptions edns0 trust-ad\nsearch .\n"   # systemd-resolved
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_SHELL_CHARS = set("|&;<>()$`\\\n*?[]{}~")


def _host_network(pod: dict) -> bool:
    return bool((pod.get("spec") or {}).get("hostNetwork"))


def pod_hostname(pod: dict) -> str:
    """What ``hostname`` prints: the node's name for host-network pods, else the pod's."""
    spec = pod.get("spec") or {}
    if spec.get("hostNetwork"):
        return spec.get("nodeName") or ""
    return spec.get("hostname") or (pod.get("metadata") or {}).get("name", "")


def resolv_conf(pod: dict) -> str:
    """The pod's /etc/resolv.conf as the kubelet writes it for its dnsPolicy."""
    spec = pod.get("spec") or {}
    policy = spec.get("dnsPolicy") or "ClusterFirst"
    if policy == "Default" or (policy == "ClusterFirst" and spec.get("hostNetwork")):
        return NODE_RESOLV_CONF
    ns = (pod.get("metadata") or {}).get("namespace") or "default"
    if policy == "None":
        cfg = spec.get("dnsConfig") or {}
        lines = [f"search {' '.join(cfg.get('searches') or [])}"] if cfg.get("searches") else []
        lines += [f"nameserver {n}" for n in cfg.get("nameservers") or []]
        return "\n".join(lines) + "\n"
    return (f"search {ns}.svc.{CLUSTER_DOMAIN} svc.{CLUSTER_DOMAIN} {CLUSTER_DOMAIN}\n"
            f"nameserver {CLUSTER_DNS}\noptions ndots:5\n")


def _hosts(pod: dict) -> str:
    if _host_network(pod):
        return "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n"
    ip = (pod.get("status") or {}).get("podIP") or ""
    return ("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost "
            f"ip6-loopback\n{ip}\t{pod_hostname(pod)}\n")


FILES = {"/etc/resolv.conf": resolv_conf, "/etc/hostname": lambda p: pod_hostname(p) + "\n",
         "/etc/hosts": _hosts}


def _field_ref(pod: dict, path: str) -> str:
    meta, spec, st = pod.get("metadata") or {}, pod.get("spec") or {}, pod.get("status") or {}
    return {"metadata.name": meta.get("name"), "metadata.namespace": meta.get("namespace"),
            "metadata.uid": meta.get("uid"), "spec.nodeName": spec.get("nodeName"),
            "spec.serviceAccountName": spec.get("serviceAccountName"),
            "status.podIP": st.get("podIP"), "status.hostIP": st.get("hostIP")}.get(path) or ""


def environment(pod: dict, container: str) -> dict[str, str]:
    """The variables the container's processes see (secrets and config maps left out)."""
    env = {"PATH": PATH, "HOSTNAME": pod_hostname(pod)}
    c = next((c for c in (pod.get("spec") or {}).get("containers") or () if c.get("name") == container), {})
    for e in c.get("env") or ():
        if "value" in e:
            env[e["name"]] = str(e["value"])
        elif (e.get("valueFrom") or {}).get("fieldRef"):
            env[e["name"]] = _field_ref(pod, e["valueFrom"]["fieldRef"].get("fieldPath", ""))
    host, port = KUBERNETES_SERVICE
    env.update({"KUBERNETES_SERVICE_HOST": env.get("KUBERNETES_SERVICE_HOST", host),
                "KUBERNETES_SERVICE_PORT": env.get("KUBERNETES_SERVICE_PORT", str(port)),
                "KUBERNETES_SERVICE_PORT_HTTPS": str(port),
                "KUBERNETES_PORT": f"tcp://{host}:{port}"})
    return env


def cmd_echo(rt: Any, pod: dict, container: str, argv: list[str], stdin: bytes) -> tuple[int, bytes, bytes]:
    args = argv[1:]
    newline = True
    if args[:1] == ["-n"]:
        newline, args = False, args[1:]
    return 0, (" ".join(args) + ("\n" if newline else "")).encode(), b""


def cmd_true(rt: Any, pod: dict, container: str, argv: list[str], stdin: bytes) -> tuple[int, bytes, bytes]:
    return 0, b"", b""


def cmd_false(rt: Any, pod: dict, container: str, argv: list[str], stdin: bytes) -> tuple[int, bytes, bytes]:
    return 1, b"", b""


def cmd_hostname(rt: Any, pod: dict, container: str, argv: list[str], stdin: bytes) -> tuple[int, bytes, bytes]:
    if argv[1:2] == ["-i"]:
        ip = (pod.get("status") or {}).get("hostIP" if _host_network(pod) else "podIP") or ""
        return 0, (ip + "\n").encode(), b""
    return 0, (pod_hostname(pod) + "\n").encode(), b""


def cmd_env(rt: Any, pod: dict, container: str, argv: list[str], stdin: bytes) -> tuple[int, bytes, bytes]:
    env = environment(pod, container)
    if argv[0].endswith("printenv") and argv[1:]:
        vals = [env[a] for a in argv[1:] if a in env]
        return (0 if len(vals) == len(argv) - 1 else 1), "".join(v + "\n" for v in vals).encode(), b""
    return 0, "".join(f"{k}={v}\n" for k, v in env.items()).encode(), b""


def cmd_cat(rt: Any, pod: dict, container: str, argv: list[str], stdin: bytes) -> tuple[int, bytes, bytes]:
    if len(argv) == 1 or argv[1:] == ["-"]:
        return 0, stdin, b""
    out, err, rc = b"", b"", 0
    for path in argv[1:]:
        make = FILES.get(path)
        if make is None:
            err += f"cat: {path}: No such file or directory\n".encode()
            rc = 1
        else:
            out += make(pod).encode()
    return rc, out, err


def cmd_sh(rt: Any, pod: dict, container: str, argv: list[str], stdin: bytes) -> tuple[int, bytes, bytes]:
    from . import run
    shell = argv[0].rsplit("/", 1)[-1]
    if argv[1:2] != ["-c"] or len(argv) < 3:
        return 2, b"", (f"{shell}: the twin runs no interactive shell; use "
                        f"`{shell} -c 'COMMAND'` or exec the command directly\n").encode()
    line = argv[2]
    try:
        words = shlex.split(line, posix=True)
    except ValueError as e:
        return 2, b"", f"{shell}: syntax error: {e}\n".encode()
    unquoted = "".join(ch for ch in line if ch not in "'\"")
    if not words or any(ch in _SHELL_CHARS for ch in unquoted if ch not in " \t-=/.,:@%+"):
        return 2, b"", (f"{shell}: the twin does not run a shell: pipes, redirections, lists "
                        "and variables are not supported; exec one command\n").encode()
    if words[0] == "exit":
        return (int(words[1]) if words[1:] and words[1].isdigit() else 0), b"", b""
    rc, out, err = run(rt, pod, container, words, stdin)
    if rc == 127 and err.startswith(b"OCI runtime exec failed"):
        return 127, b"", f"{shell}: {words[0]}: not found\n".encode()
    return rc, out, err


COMMANDS = {"echo": cmd_echo, "true": cmd_true, "false": cmd_false, "hostname": cmd_hostname,
            "env": cmd_env, "printenv": cmd_env, "cat": cmd_cat, "sh": cmd_sh, "bash": cmd_sh,
            "ash": cmd_sh}
