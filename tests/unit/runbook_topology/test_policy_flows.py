"""The flows preflight picks to compare NetworkPolicy behaviour before and after (pure)."""
from __future__ import annotations

from runbook.policy_flows import plan_flows


def _pod(ns, name, labels, ip, *, host=False):
    return {"metadata": {"namespace": ns, "name": name, "labels": labels},
            "spec": {"hostNetwork": host, "containers": [{"name": "c", "ports": [{"containerPort": 80}]}]},
            "status": {"phase": "Running", "podIP": ip}}


POLICIES = [
    {"metadata": {"name": "default-deny-ingress", "namespace": "whoami"},
     "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}},
    {"metadata": {"name": "allow-ingress-nginx", "namespace": "whoami"},
     "spec": {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "whoami"}}, "policyTypes": ["Ingress"],
              "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {
                  "kubernetes.io/metadata.name": "ingress-nginx"}}}], "ports": [{"protocol": "TCP", "port": 80}]}]}},
]
PODS = [
    _pod("kube-system", "coredns-1", {"k8s-app": "kube-dns", "pod-template-hash": "abc"}, "10.42.0.2"),
    _pod("metallb-system", "speaker-1", {"app": "speaker"}, "10.0.0.2", host=True),
    _pod("ingress-nginx", "ctrl-1", {"app.kubernetes.io/name": "ingress-nginx"}, "10.42.0.6"),
    _pod("whoami", "whoami-1", {"app.kubernetes.io/name": "whoami", "pod-template-hash": "x"}, "10.42.1.29"),
]
NAMESPACES = [{"metadata": {"name": n, "labels": {"kubernetes.io/metadata.name": n}}}
              for n in ("kube-system", "metallb-system", "ingress-nginx", "whoami")]


def test_one_allowed_and_one_denied_flow_to_the_protected_pod():
    flows = plan_flows(PODS, POLICIES, NAMESPACES)
    assert [(f.kind, f.src_ns, f.dst_ns, f.port, f.policy) for f in flows] == [
        ("allowed", "ingress-nginx", "whoami", 80, "whoami/allow-ingress-nginx"),
        ("denied", "kube-system", "whoami", 80, "whoami/allow-ingress-nginx")]
    # pods are found again by their labels after they restart: no per-generation label
    assert flows[1].src_labels == {"k8s-app": "kube-dns"}
    assert flows[0].dst_labels == {"app.kubernetes.io/name": "whoami"}


def test_no_flow_without_a_pod_on_each_side():
    assert plan_flows(PODS[3:], POLICIES, NAMESPACES) == []
    assert plan_flows(PODS, [], NAMESPACES) == []


class _Exec:
    def __init__(self, rc, out="", err=""):
        self.ok, self.rc, self.stdout, self.stderr = rc == 0, rc, out, err


class _Cluster:
    """Pods as listed, and wget answering per source namespace."""

    def __init__(self, answers):
        self.answers = answers

    def list(self, resource, **_):
        return PODS if resource == "pods" else []

    def exec(self, namespace, pod, argv, **_):
        return self.answers[namespace]


class _Session:
    def __init__(self, cluster, saved):
        self.cluster, self.saved, self.flags = cluster, saved, []
        self.journal = type("J", (), {"get": lambda _, key: saved})()

    def attention(self, kind, message):
        self.flags.append((kind, message))


def _saved(before_allowed, before_denied):
    from dataclasses import asdict
    flows = plan_flows(PODS, POLICIES, NAMESPACES)
    flows[0].before, flows[1].before = before_allowed, before_denied
    return [asdict(f) for f in flows]


def test_verify_fails_when_a_flow_changed_and_passes_when_both_behave_as_before():
    from runbook.policy_flows import check
    same = _Cluster({"ingress-nginx": _Exec(0, "ok"), "kube-system": _Exec(1, err="wget: download timed out")})
    got = check(_Session(same, _saved("allowed", "denied")))
    assert got.ok and list(got.table["after"]) == ["allowed", "denied"]
    opened = _Cluster({"ingress-nginx": _Exec(0, "ok"), "kube-system": _Exec(0, "ok")})
    got = check(_Session(opened, _saved("allowed", "denied")))
    assert not got.ok and got.details == ["denied flow kube-system -> whoami:80 (whoami/allow-ingress-nginx): "
                                          "before denied, now allowed"]


def test_a_flow_preflight_could_not_probe_is_not_called_compared():
    from runbook.policy_flows import check
    c = _Cluster({"ingress-nginx": _Exec(0, "ok"),
                  "kube-system": _Exec(126, err='exec: "wget": executable file not found in $PATH')})
    s = _Session(c, _saved("allowed", 'error: exec: "wget": executable file not found'))
    got = check(s)
    assert got.ok and got.message.startswith("NetworkPolicy flows: 1 of 2 compared")
    assert s.flags and s.flags[0][0] == "policy-flows-not-compared"


def test_a_pod_that_cannot_run_wget_is_never_a_source():
    """CoreDNS's image has no wget (a distroless image on a real cluster): the denied flow
    comes from the next pod the policy keeps out that can run the probe."""
    extra = _pod("default", "tools-1", {"app": "tools"}, "10.42.2.7")
    flows = plan_flows(PODS + [extra], POLICIES, NAMESPACES,
                       usable=lambda p: p["metadata"]["name"] != "coredns-1")
    assert [(f.kind, f.src_ns) for f in flows] == [("allowed", "ingress-nginx"), ("denied", "default")]
    nothing = plan_flows(PODS, POLICIES, NAMESPACES, usable=lambda p: False)
    assert nothing == []
