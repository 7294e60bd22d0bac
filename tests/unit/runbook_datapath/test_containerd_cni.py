"""runbook.containerd: the CNI folders containerd reads, from config.toml and from a
config.toml.tmpl rendered without flannel (pure)."""
from __future__ import annotations

import pytest

from runbook import containerd

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]

CRI = 'plugins."io.containerd.grpc.v1.cri"'
K3S_DIR = "/var/lib/rancher/k3s/agent/etc/cni/net.d"
CILIUM = ("/etc/cni/net.d", "/opt/cni/bin")
# what people put beside config.toml for a GPU runtime: the generated file copied once
HARDCODED = f"""version = 2
[{CRI}]
  stream_server_address = "127.0.0.1"
[{CRI}.cni]
  bin_dir = "/var/lib/rancher/k3s/data/cni"
  conf_dir = "{K3S_DIR}"
[{CRI}.containerd.runtimes."nvidia"]
  runtime_type = "io.containerd.runc.v2"
"""


def test_generated_config_with_and_without_flannel() -> None:
    with_flannel = f'version = 2\n[{CRI}]\n  sandbox_image = "x"\n[{CRI}.cni]\n  bin_dir = "/b"\n  conf_dir = "{K3S_DIR}"\n'
    assert containerd.config_cni_dirs(with_flannel) == (K3S_DIR, "/b")
    assert containerd.config_cni_dirs(f'version = 2\n[{CRI}]\n  sandbox_image = "x"\n') == CILIUM
    v3 = '[plugins."io.containerd.cri.v1.runtime".cni]\n  conf_dir = "/c"\n'
    assert containerd.config_cni_dirs(v3) == ("/c", "/opt/cni/bin")
    with pytest.raises(ValueError):
        containerd.config_cni_dirs("[plugins\nnot toml")


def test_a_template_that_hard_codes_k3s_folders_keeps_containerd_there() -> None:
    v = containerd.template_cni_dirs(HARDCODED)
    assert (v.conf_dir, v.bin_dir, v.certain) == (K3S_DIR, "/var/lib/rancher/k3s/data/cni", True)
    diffs = containerd.mismatch((v.conf_dir, v.bin_dir), CILIUM)
    assert len(diffs) == 2 and "Cilium writes its CNI config to /etc/cni/net.d" in diffs[0]


@pytest.mark.parametrize("tmpl", [
    '{{ template "base" . }}\n[plugins."io.containerd.grpc.v1.cri".containerd.runtimes."nvidia"]\n',
    f'{{{{/* a comment */}}}}\n[{CRI}.cni]\n  conf_dir = "{{{{ .NodeConfig.AgentConfig.CNIConfDir }}}}"\n'
    f'  bin_dir = "{{{{ .NodeConfig.AgentConfig.CNIBinDir }}}}"\n',
    f'version = 2\n[{CRI}.cni]\n  conf_dir = "/etc/cni/net.d/"\n  bin_dir = "/opt/cni/bin"\n',
])
def test_templates_that_leave_the_folders_to_containerd_or_name_cilium_s(tmpl: str) -> None:
    v = containerd.template_cni_dirs(tmpl)
    assert containerd.mismatch((v.conf_dir, v.bin_dir), CILIUM) == [] and v.certain


def test_template_logic_is_not_guessed() -> None:
    v = containerd.template_cni_dirs('{{ if not .NodeConfig.NoFlannel }}\n' + HARDCODED + '{{ end }}\n')
    assert not v.certain


def test_only_the_cri_cni_section_counts() -> None:
    other = f'[plugins."io.containerd.other".cni]\n  conf_dir = "{K3S_DIR}"\n'
    assert containerd.template_cni_dirs(other).conf_dir == "/etc/cni/net.d"


def test_preflight_fails_only_the_node_whose_template_keeps_k3s_folder() -> None:
    v = containerd.template_cni_dirs(HARDCODED)
    facts = {"set-hog": None, "fast-skunk": None,
             "fast-heron": {"conf_dir": v.conf_dir, "bin_dir": v.bin_dir, "certain": v.certain}}
    rows = containerd.preflight_rows(facts, CILIUM)
    by = {c: (st, d) for c, st, d in rows}
    st, detail = by["containerd will read Cilium's CNI folder once flannel is off: fast-heron"]
    assert st == "fail"
    for needle in (containerd.CONFIG_TMPL, K3S_DIR, "NotReady", "cni plugin not initialized", "Fix:"):
        assert needle in detail
    st, detail = by["containerd will read Cilium's CNI folder once flannel is off"]
    assert st == "ok" and "set-hog, fast-skunk" in detail


def test_preflight_fails_every_node_when_the_values_move_cilium_off_containerd_s_defaults() -> None:
    rows = containerd.preflight_rows({"set-hog": None}, ("/etc/cni/custom", "/opt/cni/bin"))
    assert rows[0][1] == "fail" and "cni.confPath" in rows[0][2]


def test_a_missing_bpftool_is_a_warning() -> None:
    assert containerd.bpftool_row({"a": True})[1] == "ok"
    _, st, detail = containerd.bpftool_row({"a": True, "b": False})
    assert st == "warn" and "missing on b" in detail
