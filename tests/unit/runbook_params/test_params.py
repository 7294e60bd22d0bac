"""Unit tests of runbook.params: schema errors, values checks, loopback guard, provenance."""
from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from runbook import params as P
from runbook.errors import (ConfirmationRequired, LoopbackViolation, ParamsError, RunIdError,
                            ValuesMismatch)

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]

REPO = Path(__file__).resolve().parents[3]
MINICLOUD = REPO / "params" / "minicloud.yaml"
TWIN = REPO / "params" / "twin.yaml"
VALUES = REPO / "params" / "cilium-values.yaml"

# The dry-run values exactly as the Phase 22 text has them (before our corrections).
PHASE22_VALUES = {
    "cluster": {"name": "default"},
    "hubble": {"relay": {"enabled": True}, "ui": {"enabled": True}},
    "ipam": {"mode": "kubernetes"},
    "k8sServiceHost": "10.0.0.2", "k8sServicePort": 6443,
    "kubeProxyReplacement": True,
    "operator": {"replicas": 1},
    "routingMode": "tunnel", "tunnelProtocol": "vxlan",
}


def _base() -> dict[str, Any]:
    return yaml.safe_load(MINICLOUD.read_text())


def _write(tmp_path: Path, data: dict[str, Any] | str, values: dict[str, Any] | None = None,
           name: str = "p.yaml") -> Path:
    """Write a params file (and its values file) into tmp_path."""
    if values is None:
        shutil.copy(VALUES, tmp_path / "cilium-values.yaml")
    else:
        (tmp_path / "cilium-values.yaml").write_text(yaml.safe_dump(values))
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


def _values() -> dict[str, Any]:
    return yaml.safe_load(VALUES.read_text())


# ----------------------------------------------------------------- shipped files
def test_minicloud_and_values_load_and_validate() -> None:
    p = P.validate(P.load(MINICLOUD))
    assert p.target.name == "minicloud" and p.target.kind == "real"
    assert [(n.name, n.role, n.address) for n in p.nodes] == [
        ("set-hog", "server", "10.0.0.2"), ("fast-skunk", "agent", "10.0.0.4"),
        ("fast-heron", "agent", "10.0.0.7")]
    hosts = [c.url.split("/")[2] for c in p.checks.ingress]
    assert len(hosts) == 10 and all(h.endswith(".10.0.0.200.nip.io") for h in hosts)
    for sub in ("homer", "podinfo", "whoami", "grafana", "argocd", "harbor", "backstage",
                "open-webui", "longhorn", "platform-demo"):
        assert f"{sub}.10.0.0.200.nip.io" in hosts
    assert {(lb.namespace, lb.name, lb.ip) for lb in p.checks.loadbalancer_ips} == {
        ("ingress-nginx", "ingress-nginx-controller", "10.0.0.200"), ("nats", "nats-lb", "10.0.0.201")}
    assert p.values_path == VALUES.resolve()
    findings = P.check_values(p, p.values())
    assert [f for f in findings if f.severity == "error"] == []
    assert p.disable_kube_proxy() is True


def test_corrected_values_fix_the_phase22_defects() -> None:
    p = P.load(MINICLOUD)
    v = p.values()
    assert v["k8sServiceHost"] == "127.0.0.1" and v["k8sServicePort"] == 6444   # defect 13
    assert v["tunnelPort"] == 8473                                              # defect 4
    assert v["hubble"]["enabled"] is True
    assert v["kubeProxyReplacement"] is True and v["ipam"]["mode"] == "kubernetes"
    # every correction carries its reason in a comment
    text = VALUES.read_text()
    assert text.count("CORRECTED") >= 3 and "defect 13" in text and "defect 4" in text
    # the uncorrected dry-run values draw warnings for exactly those defects
    fields = {f.field: f.severity for f in P.check_values(p, PHASE22_VALUES)}
    assert fields["tunnelPort"] == "warning" and fields["k8sServiceHost"] == "warning"
    assert not {f for f in P.check_values(p, v) if f.field in ("tunnelPort", "k8sServiceHost")}


def test_twin_template_loads_validates_and_is_loopback_only() -> None:
    p = P.validate(P.load(TWIN))
    assert p.target.kind == "twin"
    assert {n.address for n in p.nodes} == {"127.0.0.1"}
    assert [n.port for n in p.nodes] == [2201, 2202, 2203]
    assert ".twin" in p.kubeconfig_path.parts
    assert p.twin is not None and p.twin.state_dir
    assert all(P.split_host_port(c.resolve_to)[0] == "127.0.0.1" for c in p.checks.ingress)
    # the twin params are as strict as the real ones: no confirmation needed, though
    P.require_confirmation(p, True, "")


def test_relative_paths_resolve_against_the_params_folder(tmp_path: Path) -> None:
    d = _base()
    d["target"]["kubeconfig"] = "kube/config"
    p = P.load(_write(tmp_path, d))
    assert p.kubeconfig_path == (tmp_path / "kube" / "config").resolve()
    assert p.values_path == (tmp_path / "cilium-values.yaml").resolve()
    d["target"]["kubeconfig"] = "~/x"
    assert P.load(_write(tmp_path, d)).kubeconfig_path == Path("~/x").expanduser()


# ----------------------------------------------------------------- field errors
def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(d: dict[str, Any]) -> None:
        cur: Any = d
        parts = path.split(".")
        for part in parts[:-1]:
            cur = cur[int(part)] if isinstance(cur, list) else cur.setdefault(part, {})
        last = parts[-1]
        if isinstance(cur, list):
            cur[int(last)] = value
        else:
            cur[last] = value
    return mutate


def _delete(path: str) -> Callable[[dict[str, Any]], None]:
    def mutate(d: dict[str, Any]) -> None:
        *head, last = path.split(".")
        cur: Any = d
        for part in head:
            cur = cur[int(part)] if isinstance(cur, list) else cur[part]
        del cur[last]
    return mutate


FIELD_CASES = [
    # (id, mutation, expected field, words expected in the message)
    ("unknown-top", _set("foo", 1), "foo", "unknown key"),
    ("unknown-nested", _set("ssh.sudoo", True), "ssh.sudoo", "unknown key"),
    ("unknown-in-list", _set("nodes.1.zone", "a"), "nodes.1.zone", "unknown key"),
    ("unknown-deep", _set("limits.timeouts.apiready", 3), "limits.timeouts.apiready", "unknown key"),
    ("role-literal", _set("nodes.1.role", "master"), "nodes.1.role", "'server' or 'agent'"),
    ("kind-literal", _set("target.kind", "prod"), "target.kind", "'real' or 'twin'"),
    ("port-string", _set("nodes.2.port", "22"), "nodes.2.port", "valid integer"),
    ("port-range", _set("nodes.0.port", 70000), "nodes.0.port", "65535"),
    ("bool-string", _set("ssh.trust_on_first_use", "yes"), "ssh.trust_on_first_use", "boolean"),
    ("timeout-word", _set("limits.timeouts.api_ready", "fast"), "limits.timeouts.api_ready", "number"),
    ("timeout-negative", _set("limits.timeouts.helm", -1), "limits.timeouts.helm", "greater than 0"),
    ("batch-zero", _set("limits.agent_batch_size", 0), "limits.agent_batch_size", "greater than or equal to 1"),
    ("nodes-not-list", _set("nodes", {"a": 1}), "nodes", "valid list"),
    ("missing-name", _delete("target.name"), "target.name", "missing"),
    ("missing-role", _delete("nodes.0.role"), "nodes.0.role", "missing"),
    ("check-status-type", _set("checks.ingress.3.expect_status", "ok"),
     "checks.ingress.3.expect_status", "integer"),
    ("kpr-switch-type", _set("k3s.disable_kube_proxy", "sometimes"), "k3s.disable_kube_proxy", "auto"),
    ("regression-http-without-url", _set("checks.regression", [{"name": "x", "kind": "http"}]),
     "checks.regression.0", "needs 'url'"),
    ("regression-command-without-node",
     _set("checks.regression", [{"name": "x", "kind": "command", "command": ["true"]}]),
     "checks.regression.0", "needs 'node'"),
    ("regression-unknown-node",
     _set("checks.regression", [{"name": "x", "kind": "command", "node": "nope", "command": ["true"]}]),
     "(top level)", "unknown node 'nope'"),
    ("duplicate-node", _set("nodes.2.name", "set-hog"), "(top level)", "duplicate node names: set-hog"),
    ("no-server", _set("nodes.0.role", "agent"), "(top level)", "no node has role 'server'"),
    ("twin-section-on-real", _set("twin", {"state_dir": "/tmp/x"}), "(top level)", "target.kind: twin"),
    ("strategy-node-by-node-refused-on-real", _set("strategy", "node-by-node"), "(top level)",
     "strategy 'node-by-node' is refused on a real target: it has passed"),
    ("migration-cidr-host-bits", _set("cilium.migration_cidr", "10.44.0.1/16"), "cilium.migration_cidr",
     "is not a network address"),
    ("migration-cidr-ipv6", _set("cilium.migration_cidr", "fd00:44::/64"), "cilium.migration_cidr",
     "must be IPv4"),
    ("migration-mask-too-big", _set("cilium.migration_mask_size", 31), "cilium.migration_mask_size",
     "less than or equal to 30"),
    ("nbn-pdb-name", _set("node_by_node.delete_instead_of_evict", ["homer"]), "node_by_node.delete_instead_of_evict",
     "write each PDB as namespace/name"),
    ("strategy-literal", _set("strategy", "rolling"), "strategy", "'big-bang' or 'node-by-node'"),
]


def test_node_by_node_on_a_twin_needs_a_migration_cidr(tmp_path: Path) -> None:
    d = yaml.safe_load(TWIN.read_text())
    d["strategy"] = "node-by-node"
    d["cilium"] = dict(d.get("cilium") or {}, values_file=str(VALUES))
    with pytest.raises(ParamsError, match=r"needs cilium.migration_cidr"):
        P.load(_write(tmp_path, d))
    d["cilium"]["migration_cidr"] = "10.44.0.0/16"
    p = P.load(_write(tmp_path, d))
    assert (p.strategy, p.cilium.migration_cidr, p.cilium.migration_mask_size) == ("node-by-node", "10.44.0.0/16", 24)
    assert p.node_by_node.drain_timeout == 300 and p.node_by_node.delete_instead_of_evict == []


def test_node_by_node_on_a_real_target_needs_a_named_acceptance(tmp_path: Path) -> None:
    d = _base()
    d["strategy"] = "node-by-node"
    d["cilium"] = dict(d.get("cilium") or {}, migration_cidr="10.44.0.0/16")
    d["node_by_node"] = {"accepted_on_real_target_by": "   "}
    with pytest.raises(ParamsError, match=r"set node_by_node.accepted_on_real_target_by to your name"):
        P.load(_write(tmp_path, d))
    d["node_by_node"] = {"accepted_on_real_target_by": "Jo Operator"}
    p = P.load(_write(tmp_path, d))
    assert (p.target.kind, p.strategy, p.node_by_node.accepted_on_real_target_by) == ("real", "node-by-node",
                                                                                      "Jo Operator")


def test_big_bang_ignores_the_node_by_node_settings(tmp_path: Path) -> None:
    d = _base()
    d["node_by_node"] = {"drain_timeout": 60, "delete_instead_of_evict": ["homer/homer"]}
    p = P.load(_write(tmp_path, d))
    assert p.strategy == "big-bang" and p.cilium.migration_cidr is None
    assert p.node_by_node.delete_instead_of_evict == ["homer/homer"]


@pytest.mark.parametrize("case", FIELD_CASES, ids=[c[0] for c in FIELD_CASES])
def test_field_errors_name_file_field_and_problem(tmp_path: Path, case: tuple) -> None:
    _, mutate, field, words = case
    d = _base()
    mutate(d)
    path = _write(tmp_path, d, name="bad-params.yaml")
    with pytest.raises(ParamsError) as ei:
        P.load(path)
    e = ei.value
    assert not isinstance(e, ValuesMismatch)
    assert e.field == field
    assert e.file is not None and Path(e.file).name == "bad-params.yaml"
    first_line = str(e).splitlines()[0]
    assert "bad-params.yaml" in first_line and f"field '{field}'" in first_line
    assert words in first_line
    assert e.exit_code == (8 if words == "unknown key" else 2)  # UnknownKeyError: 8


def test_unknown_key_lists_the_allowed_keys(tmp_path: Path) -> None:
    d = _base()
    d["ssh"]["sudoo"] = True
    with pytest.raises(ParamsError, match=r"allowed: user, key_path, known_hosts"):
        P.load(_write(tmp_path, d))


def test_several_errors_stay_on_one_line(tmp_path: Path) -> None:
    d = _base()
    d["nodes"][0]["role"] = "boss"
    d["nodes"][1]["port"] = "x"
    with pytest.raises(ParamsError) as ei:
        P.load(_write(tmp_path, d))
    line = str(ei.value).splitlines()[0]
    assert ei.value.field == "nodes.0.role" and "nodes.1.port" in line


@pytest.mark.parametrize("text,words", [
    ("target: {name: x\nnodes: []\n", "not valid YAML: line"),
    ("target:\n  name: a\n  name: b\n", "duplicate key"),
    ("", "empty"),
    ("- just\n- a list\n", "mapping"),
    ("target:\n\tname: x\n", "not valid YAML"),
])
def test_yaml_level_errors(tmp_path: Path, text: str, words: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ParamsError) as ei:
        P.load(path)
    assert str(path) in str(ei.value) and words in str(ei.value)


def test_missing_params_file(tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match="does not exist"):
        P.load(tmp_path / "nope.yaml")


def test_missing_values_file_names_the_field(tmp_path: Path) -> None:
    d = _base()
    d["cilium"]["values_file"] = "missing-values.yaml"
    p = P.load(_write(tmp_path, d, name="pp.yaml"))      # loading does not read values
    for call in (p.values, lambda: P.validate(p), lambda: P.params_hash(p)):
        with pytest.raises(ParamsError) as ei:
            call()
        assert ei.value.field == "cilium.values_file"
        assert "pp.yaml" in str(ei.value) and "missing-values.yaml" in str(ei.value)


@pytest.mark.parametrize("text,words", [("- a\n", "mapping"), ("a: [\n", "not valid YAML")])
def test_malformed_values_file(tmp_path: Path, text: str, words: str) -> None:
    p = P.load(_write(tmp_path, _base()))
    (tmp_path / "cilium-values.yaml").write_text(text)
    with pytest.raises(ParamsError, match=words) as ei:
        p.values()
    assert ei.value.field == "cilium.values_file"


# ----------------------------------------------------------------- values mismatches
def _mismatch(tmp_path: Path, values_patch: dict[str, Any], params_patch: Callable | None = None,
              drop: tuple[str, ...] = ()) -> P.Params:
    d = _base()
    if params_patch:
        params_patch(d)
    v = _values()
    for k in drop:
        v.pop(k, None)
    v.update(values_patch)
    return P.load(_write(tmp_path, d, values=v))


MISMATCH_CASES = [
    ("kpr-on-but-kube-proxy-kept", {}, _set("k3s.disable_kube_proxy", False), (),
     "k3s.disable_kube_proxy", "both would program services"),
    ("kube-proxy-disabled-but-kpr-off", {"kubeProxyReplacement": False},
     _set("k3s.disable_kube_proxy", True), (), "k3s.disable_kube_proxy", "nothing would implement"),
    ("kpr-strict", {"kubeProxyReplacement": "strict"}, None, (), "kubeProxyReplacement", "strict"),
    ("kpr-without-service-host", {}, None, ("k8sServiceHost", "k8sServicePort"),
     "k8sServiceHost", "needs k8sServiceHost"),
    ("service-host-not-a-server", {"k8sServiceHost": "10.0.0.4", "k8sServicePort": 6443}, None, (),
     "k8sServiceHost", "neither a server"),
    ("service-host-auto", {"k8sServiceHost": "auto"}, None, (), "k8sServiceHost", "kubeadm"),
    ("loopback-without-6444", {"k8sServicePort": 6443}, None, (), "k8sServicePort", "6444"),
    ("tunnel-8472-with-flannel-on", {"tunnelPort": 8472}, _set("k3s.flannel_backend", "vxlan"), (),
     "tunnelPort", "8472"),
    ("tunnel-default-with-flannel-on", {}, _set("k3s.flannel_backend", "vxlan"), ("tunnelPort",),
     "tunnelPort", "8472"),
    ("old-tunnel-key", {"tunnel": "vxlan"}, None, (), "tunnel", "rejected"),
    ("relay-without-hubble", {"hubble": {"enabled": False, "relay": {"enabled": True}}}, None, (),
     "hubble.enabled", "relay"),
    ("bad-cluster-name", {"cluster": {"name": "Not_DNS"}}, None, (), "cluster.name", "DNS"),
]


@pytest.mark.parametrize("case", MISMATCH_CASES, ids=[c[0] for c in MISMATCH_CASES])
def test_values_mismatch_cases(tmp_path: Path, case: tuple) -> None:
    _, vpatch, ppatch, drop, field, words = case
    p = _mismatch(tmp_path, vpatch, ppatch, drop)
    errors = [f for f in P.check_values(p, p.values()) if f.severity == "error"]
    assert field in [f.field for f in errors]
    with pytest.raises(ValuesMismatch) as ei:
        P.validate(p)
    e = ei.value
    assert e.exit_code == 3
    assert e.file == str(p.values_path)
    assert words in str(e).splitlines()[0]
    assert isinstance(e, ParamsError)


def test_tunnel_8472_is_only_a_warning_when_flannel_goes_away(tmp_path: Path) -> None:
    p = _mismatch(tmp_path, {}, None, ("tunnelPort",))
    f = [x for x in P.check_values(p, p.values()) if x.field == "tunnelPort"]
    assert [x.severity for x in f] == ["warning"] and "flannel.1" in f[0].message
    assert P.validate(p) is p


def test_service_host_against_node_ip_and_host_names(tmp_path: Path) -> None:
    d = _base()
    d["nodes"][0]["address"] = "set-hog.lan"              # SSH by name
    p = _mismatch(tmp_path, {"k8sServiceHost": "10.0.0.2", "k8sServicePort": 6443},
                  lambda x: x.update(nodes=d["nodes"]))
    f = [x for x in P.check_values(p, p.values()) if x.field == "k8sServiceHost"]
    assert [x.severity for x in f] == ["warning"] and "addressed by name" in f[0].message
    d["nodes"][0]["node_ip"] = "10.0.0.2"
    p = _mismatch(tmp_path, {"k8sServiceHost": "10.0.0.2", "k8sServicePort": 6443},
                  lambda x: x.update(nodes=d["nodes"]))
    f = [x for x in P.check_values(p, p.values()) if x.field == "k8sServiceHost"]
    assert [x.severity for x in f] == ["warning"] and "single server" in f[0].message
    p = _mismatch(tmp_path, {"k8sServiceHost": "10.0.0.3", "k8sServicePort": 6443},
                  lambda x: x.update(nodes=d["nodes"]))
    with pytest.raises(ValuesMismatch, match="neither a server"):
        P.validate(p)


SERVICE_HOST_CASES = [
    # (values patch, field expected among the findings or None, severity, words)
    ({"k8sServiceHost": "127.0.0.1", "k8sServicePort": 6444}, None, None, ""),
    ({"k8sServiceHost": "127.0.0.1", "k8sServicePort": 6443}, "k8sServicePort", "error", "6444"),
    ({"k8sServiceHost": "10.0.0.2", "k8sServicePort": 6443}, "k8sServiceHost", "warning",
     "single server"),
    ({"k8sServiceHost": "10.0.0.4", "k8sServicePort": 6443}, "k8sServiceHost", "error",
     "neither a server node's InternalIP (10.0.0.2)"),
]


@pytest.mark.parametrize("case", SERVICE_HOST_CASES, ids=["local-proxy", "loopback-6443",
                                                           "one-server", "an-agent"])
def test_values_check_is_the_same_for_a_real_cluster_and_its_twin(tmp_path: Path,
                                                                   case: tuple) -> None:
    """The twin's params carry its nodes' InternalIPs, so the check needs no target.kind."""
    vpatch, field, severity, words = case
    real = _mismatch(tmp_path, vpatch)
    twin_dir = tmp_path / "twin"
    twin_dir.mkdir()
    d = _twin()
    d["target"]["kubeconfig"] = "absent-kubeconfig"
    v = _values()
    v.update(vpatch)
    twin = P.load(_write(twin_dir, d, values=v))
    assert [(n.address, n.node_ip) for n in twin.nodes][0] == ("127.0.0.1", "10.0.0.2")

    def seen(p: P.Params) -> list[tuple[str, str, str]]:
        return [(f.severity, f.field, f.message) for f in P.check_values(p, p.values())
                if f.field.startswith("k8sService")]

    assert seen(real) == seen(twin)
    if field is None:
        assert seen(twin) == []
    else:
        assert [(sev, f) for sev, f, _ in seen(twin)] == [(severity, field)]
        assert words in seen(twin)[0][2]


@pytest.mark.parametrize("key,section,value,words", [
    ("decision.proceed_despite_deferral", "decision", {"proceed_despite_deferral": True},
     "--proceed-despite-deferral"),
    ("twin.ingress_ca_file", "twin", {"ingress_ca_file": "ca.crt"}, "ca_file"),
])
def test_a_retired_key_says_what_replaced_it(tmp_path: Path, key: str, section: str,
                                             value: dict, words: str) -> None:
    d = _twin()
    d.setdefault(section, {}).update(value)
    with pytest.raises(ParamsError) as ei:
        P.load(_write(tmp_path, d, name="old.yaml"))
    assert ei.value.field == key and ei.value.exit_code == 8       # UnknownKeyError
    line = str(ei.value).splitlines()[0]
    assert "old.yaml" in line and "unknown key" in line and "removed" in line and words in line


def test_disable_kube_proxy_follows_kpr_when_auto(tmp_path: Path) -> None:
    p = _mismatch(tmp_path, {"kubeProxyReplacement": "false"})
    assert p.disable_kube_proxy() is False
    assert p.disable_kube_proxy({"kubeProxyReplacement": "true"}) is True
    P.validate(p)   # KPR off and auto: consistent


# ----------------------------------------------------------------- twin loopback guard
def _twin() -> dict[str, Any]:
    return yaml.safe_load(TWIN.read_text())


@pytest.mark.parametrize("mutate,field", [
    (_set("nodes.1.address", "10.0.0.4"), "nodes.1.address"),
    (_set("cilium.chart_repo_url", "https://helm.cilium.io/"), "cilium.chart_repo_url"),
    (_set("twin.admin_url", "http://192.168.1.5:8880/"), "twin.admin_url"),
    (_set("checks.ingress.0.resolve_to", "10.0.0.200:443"), "checks.ingress.0.resolve_to"),
    (_set("checks.ingress.1.resolve_to", None), "checks.ingress.1.url"),
    (_set("checks.regression", [{"name": "r", "kind": "http", "url": "http://example.org/"}]),
     "checks.regression.0.url"),
])
def test_twin_refuses_non_loopback_endpoints(tmp_path: Path, mutate: Callable, field: str) -> None:
    d = _twin()
    mutate(d)
    path = _write(tmp_path, d, name="twin-bad.yaml")
    with pytest.raises(LoopbackViolation) as ei:
        P.load(path)
    assert field in str(ei.value) and "twin-bad.yaml" in str(ei.value)


def test_twin_chart_repo_override_and_local_charts(tmp_path: Path) -> None:
    d = _twin()
    d["cilium"]["chart_repo_url"] = "https://helm.cilium.io/"
    d["twin"]["chart_repo_url"] = "http://127.0.0.1:9999/"
    p = P.load(_write(tmp_path, d))
    assert p.chart_repo_url == "http://127.0.0.1:9999/"
    d["twin"]["chart_repo_url"] = "http://10.1.1.1:9999/"
    with pytest.raises(LoopbackViolation, match="twin.chart_repo_url"):
        P.load(_write(tmp_path, d))
    for local in ("file:///srv/charts", "../shared/charts"):
        d["twin"]["chart_repo_url"] = local
        assert P.load(_write(tmp_path, d)).chart_repo_url == local


def _kubeconfig(server: str) -> str:
    return yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "twin",
        "clusters": [{"name": "twin", "cluster": {"server": server}},
                     {"name": "other", "cluster": {"server": "https://10.9.9.9:6443"}}],
        "contexts": [{"name": "twin", "context": {"cluster": "twin", "user": "u"}},
                     {"name": "elsewhere", "context": {"cluster": "other", "user": "u"}}],
        "users": [{"name": "u", "user": {"token": "not-a-real-token"}}]})


def test_twin_kubeconfig_server_checked_when_the_file_exists(tmp_path: Path) -> None:
    d = _twin()
    d["target"]["kubeconfig"] = "kubeconfig"
    path = _write(tmp_path, d)
    P.load(path)                                  # absent: checked later, at connect time
    (tmp_path / "kubeconfig").write_text(_kubeconfig("https://127.0.0.1:6443"))
    assert P.load(path).kubeconfig_path == tmp_path / "kubeconfig"
    (tmp_path / "kubeconfig").write_text(_kubeconfig("https://10.0.0.2:6443"))
    with pytest.raises(LoopbackViolation, match="target.kubeconfig"):
        P.load(path)
    (tmp_path / "kubeconfig").write_text(_kubeconfig("https://127.0.0.1:6443"))
    d["target"]["context"] = "elsewhere"
    with pytest.raises(LoopbackViolation, match="10.9.9.9"):
        P.load(_write(tmp_path, d))


def test_real_target_is_not_loopback_checked(tmp_path: Path) -> None:
    d = _base()
    d["target"]["kubeconfig"] = "kubeconfig"
    (tmp_path / "kubeconfig").write_text(_kubeconfig("https://10.0.0.2:6443"))
    P.load(_write(tmp_path, d))


# ----------------------------------------------------------------- provenance, run id, confirm
def test_params_hash_ignores_formatting_and_tracks_values(tmp_path: Path) -> None:
    h0 = P.params_hash(P.load(MINICLOUD))
    assert len(h0) == 64
    reformatted = _write(tmp_path, _base())       # same data, other formatting, no comments
    assert P.params_hash(P.load(reformatted)) == h0
    v = _values()
    v["operator"]["replicas"] = 2
    (tmp_path / "cilium-values.yaml").write_text(yaml.safe_dump(v))
    assert P.params_hash(P.load(reformatted)) != h0
    d = _base()
    d["limits"]["agent_batch_size"] = 2
    assert P.params_hash(P.load(_write(tmp_path, d))) not in (h0,)


@pytest.mark.parametrize("run_id", ["2026-11-26", "run_1.a", "R-01", "x"])
def test_good_run_ids(run_id: str) -> None:
    assert P.validate_run_id(run_id) == run_id


@pytest.mark.parametrize("run_id,words", [
    ("", "empty"), ("a/b", "path separator"), ("../x", "path separator"), ("a\\b", "path separator"),
    ("..", ".."), ("x..y", ".."), ("a b", "outside"), ("rün", "outside"), ("a;rm", "outside"),
])
def test_bad_run_ids(run_id: str, words: str) -> None:
    with pytest.raises(RunIdError, match=words) as ei:
        P.validate_run_id(run_id)
    assert ei.value.exit_code == 4 and ei.value.field == "run_id"


def test_require_confirmation() -> None:
    p = P.load(MINICLOUD)
    P.require_confirmation(p, False, "")              # dry run: nothing to confirm
    P.require_confirmation(p, True, "minicloud")
    for wrong in ("", None, "Minicloud", "twin"):
        with pytest.raises(ConfirmationRequired, match="--confirm minicloud") as ei:
            P.require_confirmation(p, True, wrong)
        assert ei.value.exit_code == 5


def test_every_field_has_a_description() -> None:
    seen = set()

    def walk(model: type) -> None:
        if model in seen:
            return
        seen.add(model)
        for name, f in model.model_fields.items():
            assert f.description, f"{model.__name__}.{name} has no description"
            for a in [f.annotation, *getattr(f.annotation, "__args__", ())]:
                for b in [a, *getattr(a, "__args__", ())]:
                    if isinstance(b, type) and issubclass(b, P.BaseModel):
                        walk(b)
        assert model.model_config.get("extra") == "forbid"

    walk(P.Params)
    assert len(seen) >= 12


def test_defaults_are_safe() -> None:
    p = P.Params.model_validate({"target": {"name": "c"},
                                 "nodes": [{"name": "n", "role": "server", "address": "h"}]})
    assert p.target.kind == "real"                     # confirmation required by default
    assert p.ssh.trust_on_first_use is False
    assert p.limits.agent_batch_size == 1
    assert p.k3s.disable_kube_proxy == "auto"
