"""The packaged minicloud fixture: the Phase 22 cluster as data."""
from __future__ import annotations

import ipaddress
from collections import Counter

import pytest

from twin.fixtures import build_minicloud, load, node_objects, ordered_objects

pytestmark = [pytest.mark.unit, pytest.mark.timeout(60)]


@pytest.fixture(scope="module")
def fx():
    return load("minicloud")


def kinds(fx, kind, ns=None):
    return fx.objects_of(kind, ns)


def test_packaged_file_matches_its_builder(fx):
    # minicloud.yaml is generated; a hand edit without the builder (or the reverse) drifts.
    built = build_minicloud()
    assert fx.cluster == built.cluster
    assert [n.__dict__ for n in fx.nodes] == [n.__dict__ for n in built.nodes]
    assert fx.objects == built.objects, (
        "minicloud.yaml is stale: python -m twin.fixtures.generate minicloud "
        "-o lib/twin/fixtures/minicloud.yaml")


def test_nodes_and_cluster(fx):
    assert fx.cluster["name"] == "minicloud"
    assert fx.cluster["server_url"] == "https://10.0.0.2:6443"
    assert fx.cluster["cluster_dns"] == "10.43.0.10"
    assert [(n.name, n.role, n.ip) for n in fx.nodes] == [
        ("set-hog", "server", "10.0.0.2"), ("fast-skunk", "agent", "10.0.0.4"),
        ("fast-heron", "agent", "10.0.0.7")]
    cluster_net = ipaddress.ip_network(fx.cluster["cluster_cidr"])
    cidrs = [ipaddress.ip_network(n.pod_cidr) for n in fx.nodes]
    assert all(c.subnet_of(cluster_net) and c.prefixlen == 24 for c in cidrs)
    assert len(set(cidrs)) == 3
    assert fx.server.name == "set-hog"


def test_structural_invariants(fx, invariants):
    counts = invariants(fx)
    # by kind: the 3 Kubernetes nodes and their 3 nodes.longhorn.io
    assert counts["Node"] == 3 + 3
    assert sorted(o["metadata"]["name"] for o in fx.objects if o["kind"] == "Node") == sorted(n.name for n in fx.nodes)


def test_counts(fx):
    pods = kinds(fx, "Pod")
    assert 105 <= len(pods) <= 115
    assert len(kinds(fx, "Ingress")) == 10
    assert len(kinds(fx, "PersistentVolumeClaim")) >= 30
    assert kinds(fx, "NetworkPolicy") == []
    per_ns = Counter(p["metadata"]["namespace"] for p in pods)
    for ns in ("kube-system", "argocd", "harbor", "longhorn-system", "monitoring", "backstage",
               "nats", "loki", "open-webui", "ollama", "velero", "metallb-system",
               "ingress-nginx", "podinfo", "whoami", "platform-demo", "homer"):
        assert per_ns[ns] >= 1, ns
    # Pods are spread over all three nodes, none of them idle.
    per_node = Counter(p["spec"]["nodeName"] for p in pods)
    assert set(per_node) == {"set-hog", "fast-skunk", "fast-heron"}
    assert min(per_node.values()) >= 25


def test_k3s_system_pods(fx):
    names = [p["metadata"]["name"] for p in kinds(fx, "Pod", "kube-system")]
    assert len(names) == 3
    assert any(n.startswith("coredns-") for n in names)
    assert any(n.startswith("local-path-provisioner-") for n in names)
    assert any(n.startswith("metrics-server-") for n in names)
    # k3s runs kube-proxy in-process; traefik and servicelb are disabled.
    every = [p["metadata"]["name"] for p in kinds(fx, "Pod")]
    assert not any("kube-proxy" in n or "traefik" in n or n.startswith("svclb") for n in every)
    assert not any(d["metadata"]["name"] == "kube-proxy" for d in kinds(fx, "DaemonSet"))
    dns = next(s for s in kinds(fx, "Service", "kube-system") if s["metadata"]["name"] == "kube-dns")
    assert dns["spec"]["clusterIP"] == "10.43.0.10"


def test_host_network_pods(fx):
    host = [p for p in kinds(fx, "Pod") if p["spec"].get("hostNetwork")]
    owners = Counter(p["metadata"]["ownerReferences"][0]["name"] for p in host)
    assert owners == {"kube-prometheus-stack-prometheus-node-exporter": 3, "metallb-speaker": 3}
    for p in host:
        assert p["spec"]["dnsPolicy"] == "ClusterFirstWithHostNet"


def test_load_balancers_and_ingresses(fx):
    lbs = {s["metadata"]["name"]: s for s in kinds(fx, "Service") if s["spec"]["type"] == "LoadBalancer"}
    assert set(lbs) == {"ingress-nginx-controller", "nats-lb"}
    nginx = lbs["ingress-nginx-controller"]
    assert nginx["status"]["loadBalancer"]["ingress"] == [{"ip": "10.0.0.200", "ipMode": "VIP"}]
    assert nginx["metadata"]["annotations"]["metallb.universe.tf/ip-allocated-from-pool"] == "default"
    assert nginx["metadata"]["annotations"]["metallb.universe.tf/loadBalancerIPs"] == "10.0.0.200"
    assert lbs["nats-lb"]["status"]["loadBalancer"]["ingress"][0]["ip"] == "10.0.0.201"
    (pool,) = kinds(fx, "IPAddressPool")
    lo, hi = (ipaddress.ip_address(x) for x in pool["spec"]["addresses"][0].split("-"))
    for s in lbs.values():
        assert lo <= ipaddress.ip_address(s["status"]["loadBalancer"]["ingress"][0]["ip"]) <= hi
    assert len(kinds(fx, "L2Advertisement")) == 1
    hosts = {r["host"] for i in kinds(fx, "Ingress") for r in i["spec"]["rules"]}
    assert {f"{h}.10.0.0.200.nip.io" for h in (
        "homer", "podinfo", "whoami", "grafana", "argocd", "harbor", "backstage",
        "open-webui", "longhorn", "platform-demo")} == hosts
    for i in kinds(fx, "Ingress"):
        assert i["status"]["loadBalancer"]["ingress"] == [{"ip": "10.0.0.200"}]


def test_storage(fx):
    claims = kinds(fx, "PersistentVolumeClaim")
    by_ns = Counter(c["metadata"]["namespace"] for c in claims)
    assert by_ns["harbor"] == 5 and by_ns["nats"] == 3 and by_ns["monitoring"] == 3
    names = {(c["metadata"]["namespace"], c["metadata"]["name"]) for c in claims}
    for expected in (("backstage", "data-backstage-postgresql-0"), ("loki", "storage-loki-0"),
                     ("open-webui", "open-webui"), ("ollama", "ollama"),
                     ("argocd", "argocd-redis-data")):
        assert expected in names
    classes = Counter(c["spec"]["storageClassName"] for c in claims)
    assert set(classes) == {"longhorn", "local-path"} and classes["longhorn"] >= 16
    assert {s["metadata"]["name"] for s in kinds(fx, "StorageClass")} == {"longhorn", "local-path"}
    # Longhorn records a Volume for each of its PVs.
    lh_pvs = {p["metadata"]["name"] for p in kinds(fx, "PersistentVolume")
              if p["spec"]["storageClassName"] == "longhorn"}
    assert {v["metadata"]["name"] for v in kinds(fx, "Volume")} == lh_pvs


def test_crds(fx):
    crds = {c["metadata"]["name"]: c for c in kinds(fx, "CustomResourceDefinition")}
    for name in ("backups.velero.io", "restores.velero.io", "schedules.velero.io",
                 "backupstoragelocations.velero.io", "applications.argoproj.io",
                 "applicationsets.argoproj.io", "appprojects.argoproj.io",
                 "ipaddresspools.metallb.io", "l2advertisements.metallb.io"):
        assert name in crds, name
    assert not any(c["spec"]["group"].endswith("cilium.io") for c in crds.values())
    app = crds["applications.argoproj.io"]["spec"]
    assert app["names"]["shortNames"] == ["app", "apps"]
    (v,) = app["versions"]
    assert v["name"] == "v1alpha1" and v["served"] and v["storage"]
    assert v["schema"]["openAPIV3Schema"]["x-kubernetes-preserve-unknown-fields"] is True
    assert [c["name"] for c in v["additionalPrinterColumns"]][:2] == ["Sync Status", "Health Status"]
    assert crds["applicationsets.argoproj.io"]["spec"]["names"]["shortNames"][0] == "appset"
    assert crds["ipaddresspools.metallb.io"]["spec"]["versions"][0]["name"] == "v1beta1"
    for c in crds.values():
        assert c["metadata"]["name"] == f"{c['spec']['names']['plural']}.{c['spec']['group']}"
        assert sum(v["storage"] for v in c["spec"]["versions"]) == 1
        assert {x["type"] for x in c["status"]["conditions"]} == {"Established", "NamesAccepted"}


def test_argocd_policies(fx):
    apps = {a["metadata"]["name"]: a for a in kinds(fx, "Application", "argocd")}
    policies = {n: a["spec"]["syncPolicy"].get("automated") for n, a in apps.items()}
    variants = set()
    for p in policies.values():
        if p is None:
            variants.add("manual")
        elif p.get("prune") and p.get("selfHeal"):
            variants.add("prune+selfHeal")
        elif p.get("selfHeal"):
            variants.add("selfHeal")
        if p and p.get("allowEmpty"):
            variants.add("allowEmpty")
    assert variants >= {"manual", "prune+selfHeal", "selfHeal", "allowEmpty"}
    # The app of apps and its children.
    root = apps["platform-root"]
    assert root["spec"]["source"]["path"] == "apps/"
    children = [n for n, a in apps.items()
                if a["metadata"].get("labels", {}).get("app.kubernetes.io/instance") == "platform-root"]
    assert len(children) >= 10
    for n in children:
        assert apps[n]["metadata"]["annotations"]["argocd.argoproj.io/tracking-id"] == \
            f"platform-root:argoproj.io/Application:argocd/{n}"
    listed = {r["name"] for r in root["status"]["resources"] if r["kind"] == "Application"}
    assert listed == set(children)
    # One app generated by an ApplicationSet.
    generated = [a for a in apps.values() if any(
        r["kind"] == "ApplicationSet" for r in a["metadata"].get("ownerReferences") or ())]
    assert [a["metadata"]["name"] for a in generated] == ["platform-demo"]
    # Every app lists the objects it owns (the Argo CD model's self-heal scope).
    podinfo = {(r["kind"], r["name"]) for r in apps["podinfo"]["status"]["resources"]}
    assert {("Deployment", "podinfo"), ("Service", "podinfo"), ("Ingress", "podinfo")} <= podinfo
    for a in apps.values():
        assert a["status"]["resources"], a["metadata"]["name"]
    assert [p["metadata"]["name"] for p in kinds(fx, "AppProject")] == ["default"]


def test_velero_and_metallb_installed(fx):
    (bsl,) = kinds(fx, "BackupStorageLocation", "velero")
    assert bsl["metadata"]["name"] == "default" and bsl["status"]["phase"] == "Available"
    assert [d["metadata"]["name"] for d in kinds(fx, "Deployment", "velero")] == ["velero"]
    assert [d["metadata"]["name"] for d in kinds(fx, "DaemonSet", "velero")] == ["node-agent"]
    (pool,) = kinds(fx, "IPAddressPool", "metallb-system")
    assert pool["metadata"]["name"] == "default"
    assert pool["spec"]["addresses"] == ["10.0.0.200-10.0.0.220"]


def test_node_objects(fx):
    nodes = {n["metadata"]["name"]: n for n in node_objects(fx)}
    server, agent = nodes["set-hog"], nodes["fast-heron"]
    assert server["metadata"]["labels"]["node-role.kubernetes.io/control-plane"] == "true"
    assert server["metadata"]["labels"]["node-role.kubernetes.io/master"] == "true"
    assert "node-role.kubernetes.io/control-plane" not in agent["metadata"]["labels"]
    assert agent["metadata"]["labels"]["kubernetes.io/hostname"] == "fast-heron"
    ann = agent["metadata"]["annotations"]
    assert ann["flannel.alpha.coreos.com/backend-type"] == "vxlan"
    assert ann["flannel.alpha.coreos.com/public-ip"] == "10.0.0.7"
    assert ann["k3s.io/internal-ip"] == "10.0.0.7"
    assert "K3S_TOKEN" in ann["k3s.io/node-env"] and "********" in ann["k3s.io/node-env"]
    assert agent["spec"] == {"podCIDR": "10.42.2.0/24", "podCIDRs": ["10.42.2.0/24"],
                             "providerID": "k3s://fast-heron"}
    st = agent["status"]
    assert {a["type"]: a["address"] for a in st["addresses"]} == {"InternalIP": "10.0.0.7",
                                                                 "Hostname": "fast-heron"}
    info = st["nodeInfo"]
    assert info["kubeletVersion"] == "v1.31.4+k3s1" and info["kernelVersion"] == "6.8.0-49-generic"
    assert info["containerRuntimeVersion"].startswith("containerd://1.7.")
    assert info["osImage"] == "Ubuntu 24.04.1 LTS"
    conds = {c["type"]: c for c in st["conditions"]}
    assert conds["Ready"]["status"] == "True" and conds["Ready"]["reason"] == "KubeletReady"
    assert all(conds[t]["status"] == "False" for t in ("MemoryPressure", "DiskPressure", "PIDPressure"))
    assert st["capacity"]["memory"] == "67108864Ki" and st["daemonEndpoints"]["kubeletEndpoint"]["Port"] == 10250


def test_ordered_objects_creates_owners_first(fx):
    order = ordered_objects(fx)
    assert len(order) == len(fx.objects) + len(fx.nodes)
    kinds_seq = [o["kind"] for o in order]
    n_crd = kinds_seq.count("CustomResourceDefinition")
    assert set(kinds_seq[:n_crd]) == {"CustomResourceDefinition"}
    n_ns = kinds_seq.count("Namespace")
    assert set(kinds_seq[n_crd:n_crd + n_ns]) == {"Namespace"}
    first_namespaced = next(i for i, o in enumerate(order)
                            if "namespace" in o["metadata"] and o["kind"] != "Namespace")
    assert all("namespace" not in o["metadata"] for o in order[:first_namespaced])
    pos = {(o["metadata"].get("namespace"), o["kind"], o["metadata"]["name"]): i
           for i, o in enumerate(order)}
    for i, o in enumerate(order):
        for ref in o["metadata"].get("ownerReferences") or ():
            assert pos[(o["metadata"].get("namespace"), ref["kind"], ref["name"])] < i
    # Pods that mount claims come after the claims.
    for o in order:
        if o["kind"] == "Pod":
            for v in o["spec"].get("volumes") or ():
                if "persistentVolumeClaim" in v:
                    key = (o["metadata"]["namespace"], "PersistentVolumeClaim",
                           v["persistentVolumeClaim"]["claimName"])
                    assert pos[key] < pos[(o["metadata"]["namespace"], "Pod", o["metadata"]["name"])]


def test_no_shared_substructures():
    # Objects must not alias each other's dicts/lists (a controller editing one object,
    # or status, would silently edit another); checked on the builder's own output.
    seen: dict[int, str] = {}

    def walk(x, path):
        if isinstance(x, (dict, list)):
            assert id(x) not in seen, f"{path} aliases {seen[id(x)]}"
            seen[id(x)] = path
            for k, v in (x.items() if isinstance(x, dict) else enumerate(x)):
                walk(v, f"{path}/{k}")

    for o in build_minicloud().objects:
        walk(o, f"{o['kind']} {o['metadata'].get('namespace', '')}/{o['metadata']['name']}")


def test_agrees_with_the_real_clusters_params(fx):
    # The twin stands in for the cluster params/minicloud.yaml describes: same nodes,
    # every checked ingress host and LoadBalancer address exists in the fixture.
    import yaml
    from pathlib import Path

    path = Path(__file__).resolve().parents[3] / "params" / "minicloud.yaml"
    params = yaml.safe_load(path.read_text())
    assert [(n["name"], n["role"], n["address"]) for n in params["nodes"]] == [
        (n.name, n.role, n.ip) for n in fx.nodes]
    hosts = {r["host"] for i in kinds(fx, "Ingress") for r in i["spec"]["rules"]}
    for check in params["checks"]["ingress"]:
        assert check["url"].split("/")[2] in hosts, check
    lbs = {(s["metadata"]["namespace"], s["metadata"]["name"]):
           s["status"]["loadBalancer"]["ingress"][0]["ip"]
           for s in kinds(fx, "Service") if s["spec"]["type"] == "LoadBalancer"}
    for lb in params["checks"]["loadbalancer_ips"]:
        assert lbs.get((lb["namespace"], lb["name"])) == lb["ip"], lb
