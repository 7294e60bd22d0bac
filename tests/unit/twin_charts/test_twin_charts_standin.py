"""The stand-in cilium chart renders what cilium 1.19.3 renders (reference:
../shared/reference/cilium-chart-1.19.md), with the real helm, no archive needed."""
from __future__ import annotations

import base64

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from twin_charts_helpers import (FAILS, STANDIN, VARIANTS, env_of, fail_message,
                                 helm_template, objects)

pytestmark = [pytest.mark.unit, pytest.mark.timeout(60)]

NS = "kube-system"


def test_object_inventory(standin_phase22):
    keys = set(standin_phase22)
    expected = {
        ("Namespace", None, "cilium-secrets"),
        *(("ServiceAccount", NS, n) for n in
          ("cilium", "cilium-envoy", "cilium-operator", "hubble-relay", "hubble-ui")),
        *(("Secret", NS, n) for n in ("cilium-ca", "hubble-server-certs", "hubble-relay-client-certs")),
        *(("ConfigMap", NS, n) for n in
          ("cilium-config", "cilium-envoy-config", "hubble-relay-config", "hubble-ui-nginx")),
        *(("ClusterRole", None, n) for n in ("cilium", "cilium-operator", "hubble-ui")),
        *(("ClusterRoleBinding", None, n) for n in ("cilium", "cilium-operator", "hubble-ui")),
        *(("Role", NS, n) for n in ("cilium-config-agent", "cilium-operator-ztunnel")),
        *(("RoleBinding", NS, n) for n in ("cilium-config-agent", "cilium-operator-ztunnel")),
        *(("Role", "cilium-secrets", n) for n in
          ("cilium-tlsinterception-secrets", "cilium-operator-tlsinterception-secrets")),
        *(("RoleBinding", "cilium-secrets", n) for n in
          ("cilium-tlsinterception-secrets", "cilium-operator-tlsinterception-secrets")),
        *(("Service", NS, n) for n in ("cilium-envoy", "hubble-relay", "hubble-ui", "hubble-peer")),
        ("DaemonSet", NS, "cilium"), ("DaemonSet", NS, "cilium-envoy"),
        ("Deployment", NS, "cilium-operator"), ("Deployment", NS, "hubble-relay"),
        ("Deployment", NS, "hubble-ui"),
    }
    assert keys == expected
    assert len(keys) == 36
    assert not {k for k in keys if k[0] in ("Job", "CronJob", "CustomResourceDefinition")}


def test_cilium_config_keys(standin_phase22):
    data = standin_phase22[("ConfigMap", NS, "cilium-config")]["data"]
    assert all(isinstance(v, str) for v in data.values())
    expected = {
        "kube-proxy-replacement": "true", "routing-mode": "tunnel", "tunnel-protocol": "vxlan",
        "ipam": "kubernetes", "cluster-name": "default", "cluster-id": "0",
        "enable-hubble": "true", "hubble-listen-address": ":4244", "enable-ipv4": "true",
        "enable-ipv6": "false", "cni-exclusive": "true", "custom-cni-conf": "false",
        "write-cni-conf-when-ready": "/host/etc/cni/net.d/05-cilium.conflist",
        "enable-policy": "default", "unmanaged-pod-watcher-interval": "15s",
    }
    assert {k: data.get(k) for k in expected} == expected
    # the agent then uses 8472, flannel's port; and the API server is not a config key
    for absent in ("tunnel-port", "cluster-pool-ipv4-cidr", "k8s-service-host",
                   "k8s-service-port", "enable-host-legacy-routing", "cni-uninstall"):
        assert absent not in data


def test_api_server_env_on_the_right_containers(standin_phase22):
    want = {"KUBERNETES_SERVICE_HOST": "10.0.0.2", "KUBERNETES_SERVICE_PORT": "6443"}
    ds = standin_phase22[("DaemonSet", NS, "cilium")]
    for c in ("cilium-agent", "config", "clean-cilium-state"):
        env = env_of(ds, c)
        assert {k: env.get(k) for k in want} == want, c
    for c in ("mount-cgroup", "apply-sysctl-overwrites", "mount-bpf-fs", "install-cni-binaries"):
        assert "KUBERNETES_SERVICE_HOST" not in env_of(ds, c)
    envoy = env_of(standin_phase22[("DaemonSet", NS, "cilium-envoy")], "cilium-envoy")
    op = env_of(standin_phase22[("Deployment", NS, "cilium-operator")], "cilium-operator")
    for env in (envoy, op):
        assert {k: env.get(k) for k in want} == want


def test_agent_daemonset(standin_phase22):
    ds = standin_phase22[("DaemonSet", NS, "cilium")]
    pod = ds["spec"]["template"]["spec"]
    assert ds["spec"]["selector"] == {"matchLabels": {"k8s-app": "cilium"}}
    assert ds["spec"]["template"]["metadata"]["labels"]["k8s-app"] == "cilium"
    assert ds["metadata"]["labels"]["app.kubernetes.io/part-of"] == "cilium"
    assert pod["hostNetwork"] is True
    assert pod["tolerations"] == [{"operator": "Exists"}]
    assert [c["name"] for c in pod["initContainers"]] == [
        "config", "mount-cgroup", "apply-sysctl-overwrites", "mount-bpf-fs",
        "clean-cilium-state", "install-cni-binaries"]
    assert [c["name"] for c in pod["containers"]] == ["cilium-agent"]
    agent = pod["containers"][0]
    probe = agent["readinessProbe"]["httpGet"]
    ports = {p["name"]: p["containerPort"] for p in agent["ports"]}
    assert (probe["host"], ports[probe["port"]], probe["path"]) == ("127.0.0.1", 9879, "/healthz")
    assert ds["spec"]["updateStrategy"] == {"type": "RollingUpdate",
                                           "rollingUpdate": {"maxUnavailable": 2}}
    assert agent["image"].startswith("quay.io/cilium/cilium:v1.19.3")
    etc_cni = next(v for v in pod["volumes"] if v["name"] == "etc-cni-netd")
    assert etc_cni["hostPath"]["path"] == "/etc/cni/net.d"


def test_envoy_operator_and_hubble_workloads(standin_phase22):
    envoy = standin_phase22[("DaemonSet", NS, "cilium-envoy")]
    assert envoy["spec"]["template"]["spec"]["hostNetwork"] is True
    assert envoy["spec"]["template"]["spec"]["tolerations"] == [{"operator": "Exists"}]
    op = standin_phase22[("Deployment", NS, "cilium-operator")]
    assert op["spec"]["replicas"] == 1
    assert op["spec"]["selector"]["matchLabels"] == {"io.cilium/app": "operator",
                                                     "name": "cilium-operator"}
    op_pod = op["spec"]["template"]["spec"]
    assert op_pod["hostNetwork"] is True
    tol_keys = {t["key"] for t in op_pod["tolerations"]}
    assert {"node-role.kubernetes.io/control-plane", "node.kubernetes.io/not-ready",
            "node.cilium.io/agent-not-ready"} <= tol_keys
    relay = standin_phase22[("Deployment", NS, "hubble-relay")]
    ui = standin_phase22[("Deployment", NS, "hubble-ui")]
    for d, app in ((relay, "hubble-relay"), (ui, "hubble-ui")):
        assert not d["spec"]["template"]["spec"].get("hostNetwork")
        assert d["spec"]["selector"] == {"matchLabels": {"k8s-app": app}}
        assert d["spec"]["replicas"] == 1
    assert [c["name"] for c in ui["spec"]["template"]["spec"]["containers"]] == ["frontend", "backend"]
    peer = standin_phase22[("Service", NS, "hubble-peer")]["spec"]
    assert peer["selector"] == {"k8s-app": "cilium"}
    assert peer["internalTrafficPolicy"] == "Local"
    assert (peer["ports"][0]["port"], peer["ports"][0]["targetPort"]) == (443, 4244)
    relay_svc = standin_phase22[("Service", NS, "hubble-relay")]["spec"]
    assert relay_svc["selector"] == {"k8s-app": "hubble-relay"}
    assert (relay_svc["ports"][0]["port"], relay_svc["ports"][0]["targetPort"]) == (80, "grpc")


def _load_cert(b64: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(base64.b64decode(b64))


def test_tls_secrets_are_generated_and_signed_by_the_ca(standin_phase22):
    ca_secret = standin_phase22[("Secret", NS, "cilium-ca")]
    assert set(ca_secret["data"]) == {"ca.crt", "ca.key"}
    ca = _load_cert(ca_secret["data"]["ca.crt"])
    assert ca.subject.rfc4514_string() == "CN=Cilium CA"
    for name, cn in (("hubble-server-certs", "*.default.hubble-grpc.cilium.io"),
                     ("hubble-relay-client-certs", "*.hubble-relay.cilium.io")):
        s = standin_phase22[("Secret", NS, name)]
        assert s["type"] == "kubernetes.io/tls"
        assert s["metadata"]["labels"]["cilium.io/helm-template-non-idempotent"] == "true"
        assert set(s["data"]) == {"ca.crt", "tls.crt", "tls.key"}
        assert s["data"]["ca.crt"] == ca_secret["data"]["ca.crt"]
        leaf = _load_cert(s["data"]["tls.crt"])
        assert leaf.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == cn
        assert leaf.issuer == ca.subject
        pub = ca.public_key()
        if isinstance(pub, rsa.RSAPublicKey):
            pub.verify(leaf.signature, leaf.tbs_certificate_bytes, padding.PKCS1v15(),
                       leaf.signature_hash_algorithm)
        else:  # pragma: no cover - helm's genCA makes RSA keys today
            assert isinstance(pub, ec.EllipticCurvePublicKey)
            pub.verify(leaf.signature, leaf.tbs_certificate_bytes,
                       ec.ECDSA(leaf.signature_hash_algorithm))
    assert standin_phase22[("Secret", NS, "cilium-ca")]["metadata"]["labels"] == {
        "cilium.io/helm-template-non-idempotent": "true"}


def test_tunnel_port_variant(helm_bin, module_env):
    data = objects(helm_template(helm_bin, module_env, STANDIN, VARIANTS["tunnel-port-8473"]).stdout)[
        ("ConfigMap", NS, "cilium-config")]["data"]
    assert data["tunnel-port"] == "8473"


def test_cluster_pool_variant(helm_bin, module_env):
    data = objects(helm_template(helm_bin, module_env, STANDIN, VARIANTS["cluster-pool"]).stdout)[
        ("ConfigMap", NS, "cilium-config")]["data"]
    assert data["ipam"] == "cluster-pool"
    assert data["cluster-pool-ipv4-cidr"] == "10.245.0.0/16"
    assert data["cluster-pool-ipv4-mask-size"] == "24"


def test_migration_guide_values(helm_bin, module_env):
    objs = objects(helm_template(helm_bin, module_env, STANDIN, VARIANTS["migration"]).stdout)
    data = objs[("ConfigMap", NS, "cilium-config")]["data"]
    assert data["custom-cni-conf"] == "true"
    # with a custom CNI conf the agent must not write 05-cilium.conflist itself
    assert "write-cni-conf-when-ready" not in data and "cni-exclusive" not in data
    assert data["enable-policy"] == "never"
    assert data["enable-host-legacy-routing"] == "true"
    assert data["unmanaged-pod-watcher-interval"] == "0"
    assert data["tunnel-port"] == "8473"
    pod_rule = objs[("ClusterRole", None, "cilium-operator")]["rules"][0]
    assert pod_rule["resources"] == ["pods"] and "delete" not in pod_rule["verbs"]


def test_hubble_off_and_kpr_false(helm_bin, module_env):
    objs = objects(helm_template(helm_bin, module_env, STANDIN, VARIANTS["no-hubble-no-kpr"]).stdout)
    data = objs[("ConfigMap", NS, "cilium-config")]["data"]
    assert data["kube-proxy-replacement"] == "false"
    assert data["enable-hubble"] == "false" and "hubble-listen-address" not in data
    assert not [k for k in objs if "hubble" in k[2] or k[0] == "Secret"]


@pytest.mark.parametrize("kpr", ["true", "false"])
def test_kube_proxy_replacement_accepts_string_or_bool(helm_bin, module_env, kpr):
    for flag in ("--set", "--set-string"):
        p = helm_template(helm_bin, module_env, STANDIN, extra=[flag, f"kubeProxyReplacement={kpr}"])
        data = objects(p.stdout)[("ConfigMap", NS, "cilium-config")]["data"]
        assert data["kube-proxy-replacement"] == kpr


@pytest.mark.parametrize("case", sorted(FAILS))
def test_template_fails(helm_bin, module_env, case):
    sets, message = FAILS[case]
    p = helm_template(helm_bin, module_env, STANDIN, sets, check=False)
    assert p.returncode != 0
    assert message in fail_message(p.stderr)


def test_k8s_service_host_auto_fails_without_cluster_info(helm_bin, module_env):
    p = helm_template(helm_bin, module_env, STANDIN, ["k8sServiceHost=auto"], check=False)
    assert p.returncode != 0
    assert "ConfigMap kube-public/cluster-info not found" in p.stderr


def test_schema_rejects_wrong_types(helm_bin, module_env):
    p = helm_template(helm_bin, module_env, STANDIN, extra=["--set-json", "k8sServicePort=[1]"],
                      check=False)
    assert p.returncode != 0 and "k8sServicePort" in p.stderr


def test_helm_lint_passes(helm_bin, module_env):
    import subprocess

    from twin_charts_helpers import PHASE22_VALUES

    p = subprocess.run([helm_bin, "lint", str(STANDIN), "-f", str(PHASE22_VALUES)], env=module_env,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "0 chart(s) failed" in p.stdout
