"""Issue #11, item 2: containerd reads the CNI folder that k3s's generated config names.

With flannel on, k3s's ``config.toml`` points containerd at k3s's own folder; with
``flannel-backend: none`` the section is gone and containerd reads ``/etc/cni/net.d``,
where Cilium writes its conflist. A ``config.toml.tmpl`` that hard-codes the k3s folder
(fault ``containerd_template``, set through the admin endpoint) keeps containerd there:
Cilium's conflist is never read and the node stays NotReady ("cni plugin not
initialized") although its agent is Ready. On rollback containerd reads the k3s folder
again, so the leftover ``05-cilium.conflist`` does nothing.
"""
from __future__ import annotations

import json

import pytest

from datapath_harness import AGENT1, AGENT2, NODES, SERVER, Ops, render_env
from twin.node.containerd import CONFIG_TMPL, CONFIG_TOML, K3S_CNI_CONF_DIR
from twin_network_helpers import deployment, pod_ready, sandbox

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

CNI_SECTION = '[plugins."io.containerd.grpc.v1.cri".cni]'


@pytest.fixture
def ops(tmp_path):
    o = Ops.start(tmp_path / "twin")
    yield o
    o.close()


@pytest.fixture
def env(tmp_path_factory):
    return render_env(tmp_path_factory.mktemp("helm-home"))


def test_template_keeps_containerd_on_the_k3s_folder_and_the_node_not_ready(ops, helm_bin, env):
    # With flannel: the generated file names k3s's folder (and is root-only).
    assert ops.ssh(AGENT1, f"cat {CONFIG_TOML}")[0] == 1
    text = ops.ssh_ok(AGENT1, f"sudo cat {CONFIG_TOML}")
    assert CNI_SECTION in text and f'conf_dir = "{K3S_CNI_CONF_DIR}"' in text

    status, body = ops.admin({"containerd_template": ["nowhere"]})
    assert status == 400 and "unknown node" in body["error"]
    status, body = ops.admin({"containerd_template": [AGENT1]})
    assert status == 200 and body["containerd_template"] == [AGENT1]
    assert f'conf_dir = "{K3S_CNI_CONF_DIR}"' in ops.ssh_ok(AGENT1, f"sudo cat {CONFIG_TMPL}")

    # The migration as the runbook does it: flannel's conflist moved aside, flannel off.
    for n in NODES:
        ops.ssh_ok(n, f"sudo mv {K3S_CNI_CONF_DIR}/10-flannel.conflist /tmp/10-flannel.conflist")
    docs = ops.migrate(helm_bin, env)
    assert CNI_SECTION not in ops.ssh_ok(AGENT2, f"sudo cat {CONFIG_TOML}")         # generated: defaults
    assert f'conf_dir = "{K3S_CNI_CONF_DIR}"' in ops.ssh_ok(AGENT1, f"sudo cat {CONFIG_TOML}")  # the template
    assert "Using containerd template" in ops.ssh_ok(AGENT1, "sudo journalctl -u k3s-agent --no-pager")
    assert ops.ssh(AGENT1, "test -f /etc/cni/net.d/05-cilium.conflist")[0] == 0     # written, never read
    assert ops.agent_ready(AGENT1)                                                 # the agent is fine
    ops.until(lambda: ops.api_node_ready(AGENT1)[0] == "False", timeout=30, what="agent-1 NotReady")
    status, message = ops.api_node_ready(AGENT1)
    assert "cni plugin not initialized" in message
    assert ops.api_node_ready(AGENT2)[0] == "True" and ops.api_node_ready(SERVER)[0] == "True"

    # A pod for that node waits for a sandbox.
    app = deployment("pinned", 1, node=AGENT1)
    app["spec"]["template"]["spec"]["tolerations"] = [{"operator": "Exists"}]
    ops.create(app)
    pod = ops.until(lambda: next(iter(ops.pods("default", "app=pinned")), None), what="pinned pod")
    ops.until(lambda: (ops.get("pods", "default", pod["metadata"]["name"]) or {}).get("status", {})
              .get("containerStatuses"), what="pod status")
    assert not pod_ready(ops.get("pods", "default", pod["metadata"]["name"]))

    # Taking the template away and restarting k3s brings the node onto Cilium.
    status, _ = ops.admin({"containerd_template": []})
    assert status == 200 and ops.ssh(AGENT1, f"test -e {CONFIG_TMPL}")[0] == 1
    ops.ssh_ok(AGENT1, "sudo systemctl restart k3s-agent")
    ops.until(lambda: ops.api_node_ready(AGENT1)[0] == "True", timeout=30, what="agent-1 Ready")
    ops.until(lambda: any(pod_ready(p) and sandbox(p) == "cilium" for p in ops.pods("default", "app=pinned")),
              what="pinned pod on cilium")
    assert docs


def test_rollback_reads_the_k3s_folder_again_whatever_is_left_in_etc_cni(ops, helm_bin, env):
    docs = ops.migrate(helm_bin, env)
    ops.rollback_without_cleanup(docs)
    text = ops.ssh_ok(AGENT1, f"sudo cat {CONFIG_TOML}")
    assert f'conf_dir = "{K3S_CNI_CONF_DIR}"' in text
    assert "05-cilium.conflist" in ops.ssh_ok(AGENT1, "ls /etc/cni/net.d")             # left, not "sorting first"
    ops.create(deployment("after", 1, node=AGENT1))
    pod = ops.until(lambda: next((p for p in ops.pods("default", "app=after") if pod_ready(p)), None),
                    what="new pod Ready")
    assert sandbox(pod) == "flannel"
    # crictl shows the sandbox and its network: flannel's bridge, the pod's address.
    assert ops.ssh(AGENT1, "crictl pods")[0] == 1                                    # root only
    listing = ops.ssh_ok(AGENT1, "sudo crictl pods --namespace default")
    assert pod["metadata"]["name"] in listing and "Ready" in listing
    sid = ops.ssh_ok(AGENT1, f"sudo crictl pods -q --name {pod['metadata']['name']}").split()[0]
    info = json.loads(ops.ssh_ok(AGENT1, f"sudo crictl inspectp {sid[:13]}"))
    assert info["status"]["network"]["ip"] == pod["status"]["podIP"]
    assert "cni0" in info["info"]["cniResult"]["Interfaces"]
    assert "main" in ops.ssh_ok(AGENT1, "sudo crictl ps --name main")
    host = [s for n in NODES for s in json.loads(ops.ssh_ok(n, "sudo crictl pods -o json"))["items"]
            if s["linux"]["namespaces"]["options"]["network"] == "NODE"]
    assert host and all(s["network"]["ip"] == "" for s in host)                   # hostNetwork: no sandbox IP
