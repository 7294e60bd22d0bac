"""runbook.helm: command lines, the single runner, errors, and real `helm template`."""
from __future__ import annotations

import json
import os
import shlex
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from runbook.errors import HelmError, LoopbackViolation
from runbook.helm import Helm

pytestmark = [pytest.mark.unit, pytest.mark.timeout(60)]


def fake_helm(tmp_path: Path, body: str) -> str:
    p = tmp_path / "fake-helm"
    p.write_text("#!/bin/sh\n" + body + "\n")
    p.chmod(0o755)
    return str(p)


def test_upgrade_install_command_line(tmp_path):
    h = Helm(binary=fake_helm(tmp_path, "exit 0"), kubeconfig="/k/cfg", context="twin",
             env_home=tmp_path / "home")
    line = h.command_line("upgrade_install", "cilium", "cilium/cilium", version="1.19.3",
                          values_file="/p/cilium values.yaml", wait="legacy", timeout="12m",
                          set_values={"hubble.ui.enabled": True})
    assert shlex.split(line) == [
        "helm", "upgrade", "--install", "cilium", "cilium/cilium", "--version", "1.19.3",
        "--namespace", "kube-system", "--values", "/p/cilium values.yaml",
        "--set", "hubble.ui.enabled=true", "--wait=legacy", "--timeout", "12m",
        "--kube-context", "twin"]
    assert h.command_line("uninstall", "cilium").startswith(
        "helm uninstall cilium --namespace kube-system --wait --timeout 5m --ignore-not-found")
    assert h.command_line("repo_add", "cilium", "https://127.0.0.1:9/") == \
        "helm repo add cilium https://127.0.0.1:9/ --force-update"
    with pytest.raises(ValueError):
        h.command_line("rm_rf")


def test_runner_passes_args_and_isolated_env(tmp_path):
    out = tmp_path / "seen.json"
    script = ("python3 -c 'import json,os,sys; json.dump({\"argv\": sys.argv[1:], \"env\": "
              "{k: v for k, v in os.environ.items() if k.startswith((\"HELM_\", \"KUBECONFIG\", \"XDG_\"))}}, "
              f"open(\"{out}\", \"w\"))' \"$@\"\necho '{{\"info\": {{\"status\": \"deployed\"}}}}'")
    h = Helm(binary=fake_helm(tmp_path, script), kubeconfig=tmp_path / "kc",
             env_home=tmp_path / "run" / "helm")
    os.environ["HELM_CONFIG_HOME"] = "/should/not/leak"
    try:
        st = h.status("cilium")
    finally:
        del os.environ["HELM_CONFIG_HOME"]
    assert st["info"]["status"] == "deployed"
    seen = json.loads(out.read_text())
    assert seen["argv"] == ["status", "cilium", "--namespace", "kube-system", "-o", "json"]
    env = seen["env"]
    assert env["KUBECONFIG"] == str(tmp_path / "kc")
    assert env["HELM_CONFIG_HOME"] == str(tmp_path / "run" / "helm" / "config")
    assert env["XDG_CACHE_HOME"].startswith(str(tmp_path / "run" / "helm"))
    assert h.results[-1].ok and h.results[-1].command[1:3] == ["status", "cilium"]


def test_default_home_is_private_temp_not_user_config(tmp_path):
    h = Helm(binary=fake_helm(tmp_path, "exit 0"))
    home = Path(h.env()["HELM_CONFIG_HOME"])
    assert "phase22-helm-" in str(home) and not str(home).startswith(os.path.expanduser("~/.config"))


def test_failure_raises_helm_error_with_stderr_redacted(tmp_path):
    h = Helm(binary=fake_helm(tmp_path, "echo 'Error: UPGRADE FAILED: Authorization: Bearer abc.def.ghi' >&2; exit 1"),
             env_home=tmp_path / "h")
    with pytest.raises(HelmError) as ei:
        h.upgrade_install("cilium", "cilium/cilium", version="1.19.3")
    e = ei.value
    assert e.rc == 1 and "UPGRADE FAILED" in e.stderr
    assert "abc.def.ghi" not in str(e) and "abc.def.ghi" not in e.stderr
    assert e.command[1:3] == ["upgrade", "--install"]
    assert not h.results[-1].ok and "abc.def.ghi" not in repr(h.results[-1])
    assert "abc.def.ghi" not in h.results[-1].summary()


def test_timeout_and_missing_binary(tmp_path):
    h = Helm(binary=fake_helm(tmp_path, "sleep 5"), env_home=tmp_path / "h", timeout=0.3)
    with pytest.raises(HelmError) as ei:
        h.history("cilium")
    assert "timed out" in str(ei.value) and isinstance(ei.value.__cause__, subprocess.TimeoutExpired)
    from runbook.errors import RunbookError
    with pytest.raises(RunbookError):
        Helm(binary=str(tmp_path / "nope"))


def test_get_values_null_is_empty_dict(tmp_path):
    h = Helm(binary=fake_helm(tmp_path, "echo null"), env_home=tmp_path / "h")
    assert h.get_values("cilium") == {}


def test_twin_refuses_non_loopback_repo(tmp_path):
    h = Helm(binary=fake_helm(tmp_path, "exit 0"), env_home=tmp_path / "h", kind="twin")
    with pytest.raises(LoopbackViolation):
        h.repo_add("cilium", "https://helm.cilium.io/")
    assert h.results == []
    h.repo_add("cilium", "https://127.0.0.1:8443/charts")
    assert h.results[-1].command[1:4] == ["repo", "add", "cilium"]
    with pytest.raises(LoopbackViolation):
        h.upgrade_install("cilium", "oci://registry.example/cilium", version="1")


def test_from_params(tmp_path):
    params = SimpleNamespace(
        target=SimpleNamespace(kind="twin", name="m", kubeconfig="/kc", context=None),
        kubeconfig_path=tmp_path / "kc",
        cilium=SimpleNamespace(namespace="kube-system", helm_path=fake_helm(tmp_path, "exit 0")),
        limits=SimpleNamespace(timeouts=SimpleNamespace(helm=120)))
    h = Helm.from_params(params, run_dir=tmp_path / "run")
    assert h.kind == "twin" and h.timeout == 180 and str(h.kubeconfig) == str(tmp_path / "kc")
    assert Path(h.env_home) == tmp_path / "run" / "helm"
    assert "--timeout 120s" in h.command_line("upgrade_install", "cilium", "c/cilium")


@pytest.mark.timeout(60)
def test_template_with_real_helm(tmp_path, helm_bin):
    chart = tmp_path / "demo"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: demo\nversion: 0.1.0\n")
    (chart / "values.yaml").write_text("tunnelPort: 8472\n")
    (chart / "templates" / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-config\n"
        "  namespace: {{ .Release.Namespace }}\ndata:\n  tunnel-port: {{ .Values.tunnelPort | quote }}\n")
    values = tmp_path / "values.yaml"
    values.write_text("tunnelPort: 8473\n")
    h = Helm(binary=helm_bin, env_home=tmp_path / "h")
    out = h.template("cilium", str(chart), values_file=values, set_values={"x": 1})
    assert "name: cilium-config" in out and "namespace: kube-system" in out
    assert 'tunnel-port: "8473"' in out
    with pytest.raises(HelmError) as ei:
        h.template("cilium", str(tmp_path / "missing-chart"))
    assert ei.value.rc != 0 and ei.value.stderr
