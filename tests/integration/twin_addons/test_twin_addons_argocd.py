"""Argo CD on the twin: self-heal of drift, paused apps, the app-of-apps parent fault."""
from __future__ import annotations

import pytest

from runbook import argocd

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


def _app(at, name: str) -> dict:
    return at.cluster.get("applications", name, "argocd")


def _history_ids(app: dict) -> list[int]:
    return [h["id"] for h in (app.get("status") or {}).get("history") or []]


def test_self_heal_reverts_drift_and_counts_each_sync(addon_twin) -> None:
    at = addon_twin
    c = at.cluster
    before = _app(at, "podinfo")
    assert before["spec"]["syncPolicy"]["automated"]["selfHeal"] is True
    replicas = c.get("deployments", "podinfo", "podinfo")["spec"]["replicas"]
    c.patch("deployments", "podinfo", {"spec": {"replicas": replicas + 3}}, "podinfo")
    at.until(lambda: c.get("deployments", "podinfo", "podinfo")["spec"]["replicas"] == replicas,
             what="replicas reverted by self-heal")
    app = at.until(lambda: (a := _app(at, "podinfo")) and len(_history_ids(a)) == 2 and a,
                   what="a sync recorded in history")
    assert _history_ids(app) == [0, 1]
    st = app["status"]
    assert st["sync"]["status"] == "Synced"
    assert st["operationState"]["phase"] == "Succeeded"
    assert st["operationState"]["operation"]["initiatedBy"] == {"automated": True}
    synced = st["operationState"]["syncResult"]["resources"]
    assert [(r["kind"], r["name"], r["status"]) for r in synced] == [("Deployment", "podinfo", "Synced")]
    assert st["reconciledAt"] >= before["status"]["reconciledAt"]

    # A deleted object comes back, and that is a second sync.
    c.delete("services", "podinfo", "podinfo")
    svc = at.until(lambda: c.get("services", "podinfo", "podinfo"), what="service recreated")
    assert svc["spec"]["clusterIP"].startswith("10.43.")
    app = at.until(lambda: (a := _app(at, "podinfo")) and len(_history_ids(a)) == 3 and a,
                   what="second sync")
    assert at.twin.call(lambda: at.addons.argocd.sync_count("argocd", "podinfo")) == 2
    assert app["status"]["history"][-1]["revision"] == before["status"]["sync"]["revision"]

    # Drift in fields Argo CD does not set (a rollout restart annotation) is left alone.
    c.patch("deployments", "podinfo", {"spec": {"template": {"metadata": {"annotations": {
        "kubectl.kubernetes.io/restartedAt": "2026-11-26T00:00:00Z"}}}}}, "podinfo")
    at.cluster_sleep(15)
    d = c.get("deployments", "podinfo", "podinfo")
    assert d["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"]
    assert len(_history_ids(_app(at, "podinfo"))) == 3


def test_paused_and_manual_apps_do_nothing_but_report_out_of_sync(addon_twin) -> None:
    at = addon_twin
    c = at.cluster
    at.pause_app("podinfo")
    replicas = c.get("deployments", "podinfo", "podinfo")["spec"]["replicas"]
    c.patch("deployments", "podinfo", {"spec": {"replicas": replicas + 1}}, "podinfo")
    at.until(lambda: _app(at, "podinfo")["status"]["sync"]["status"] == "OutOfSync",
             what="paused app OutOfSync")
    at.cluster_sleep(15)          # three self-heal timeouts
    assert c.get("deployments", "podinfo", "podinfo")["spec"]["replicas"] == replicas + 1
    app = _app(at, "podinfo")
    assert _history_ids(app) == [0]
    drifted = [r for r in app["status"]["resources"] if r["status"] == "OutOfSync"]
    assert [(r["kind"], r["name"]) for r in drifted] == [("Deployment", "podinfo")]

    # ollama is a manual app (no automated at all) in the fixture
    assert "automated" not in _app(at, "ollama")["spec"]["syncPolicy"]
    c.delete("services", "ollama", "ollama")
    at.until(lambda: _app(at, "ollama")["status"]["sync"]["status"] == "OutOfSync", what="ollama OutOfSync")
    at.cluster_sleep(15)
    assert c.get("services", "ollama", "ollama") is None

    # automated without selfHeal (whoami: prune only) does not revert live drift either
    c.patch("deployments", "whoami", {"spec": {"replicas": 5}}, "whoami")
    at.until(lambda: _app(at, "whoami")["status"]["sync"]["status"] == "OutOfSync", what="whoami OutOfSync")
    at.cluster_sleep(15)
    assert c.get("deployments", "whoami", "whoami")["spec"]["replicas"] == 5

    # Resuming selfHeal heals the drift that built up meanwhile; back to Synced.
    c.patch("applications", "podinfo", {"spec": {"syncPolicy": {"automated": {
        "prune": True, "selfHeal": True, "allowEmpty": True}}}}, "argocd")
    at.until(lambda: c.get("deployments", "podinfo", "podinfo")["spec"]["replicas"] == replicas,
             what="healed after resume")
    at.until(lambda: _app(at, "podinfo")["status"]["sync"]["status"] == "Synced", what="Synced")


def test_parent_does_not_revert_child_policy_by_default(addon_twin) -> None:
    at = addon_twin
    at.pause_app("podinfo")
    at.cluster_sleep(20)
    assert "automated" not in _app(at, "podinfo")["spec"]["syncPolicy"]
    assert len(_history_ids(_app(at, "platform-root"))) == 1


def test_parent_reverts_children_policy_with_the_fault(addon_twin) -> None:
    at = addon_twin
    c = at.cluster
    original = _app(at, "podinfo")["spec"]["syncPolicy"]["automated"]
    status, faults = at.admin("POST", "/faults", {"argocd_parent_reverts": True})
    assert status == 200 and faults["argocd_parent_reverts"] is True
    # The runbook's risk report sees the self-healing parent.
    risks = argocd.risks(argocd.list_apps(c))
    assert any(r.app == "argocd/platform-root" and "selfHeal" in r.detail for r in risks)
    at.pause_app("podinfo")
    at.until(lambda: _app(at, "podinfo")["spec"]["syncPolicy"].get("automated") == original,
             what="the parent reverted the child's pause")
    root = _app(at, "platform-root")
    assert len(_history_ids(root)) == 2
    assert [r["name"] for r in root["status"]["operationState"]["syncResult"]["resources"]] == ["podinfo"]
    # Pausing the parent first makes the child's pause stick.
    at.pause_app("platform-root")
    at.pause_app("podinfo")
    at.cluster_sleep(20)
    assert "automated" not in _app(at, "podinfo")["spec"]["syncPolicy"]
    assert _app(at, "platform-root")["status"]["sync"]["status"] == "OutOfSync"


def test_applicationset_regenerates_its_app_until_the_template_is_paused(addon_twin) -> None:
    at = addon_twin
    c = at.cluster
    original = _app(at, "platform-demo")["spec"]["syncPolicy"]["automated"]
    at.cluster_sleep(5)
    assert at.twin.call(lambda: at.addons.appsets.regenerated) == 0     # converged at start
    # Pausing the generated app alone does not stick: the template puts it back.
    at.pause_app("platform-demo")
    at.until(lambda: _app(at, "platform-demo")["spec"]["syncPolicy"].get("automated") == original,
             what="ApplicationSet regenerated the app")
    # The runbook's way: pause the template first, then the app.
    path = "/apis/argoproj.io/v1alpha1/namespaces/argocd/applicationsets/platform-demo"
    c.request("PATCH", path, body={"spec": {"template": {"spec": {"syncPolicy": {"automated": None}}}}},
              content_type="application/merge-patch+json")
    at.until(lambda: "automated" not in _app(at, "platform-demo")["spec"]["syncPolicy"],
             what="app follows the paused template")
    at.cluster_sleep(10)
    assert "automated" not in _app(at, "platform-demo")["spec"]["syncPolicy"]
    # Restoring the template restores the app's policy exactly.
    c.request("PATCH", path, body={"spec": {"template": {"spec": {"syncPolicy": {"automated": original}}}}},
              content_type="application/merge-patch+json")
    at.until(lambda: _app(at, "platform-demo")["spec"]["syncPolicy"].get("automated") == original,
             what="app follows the restored template")


def test_runbook_pause_and_resume_are_exact_even_with_the_parent_fault(addon_twin, tmp_path) -> None:
    """The runbook's argocd.pause (parents first, ApplicationSet template first) sticks on
    a twin whose parent reverts children, and argocd.resume puts back exactly what was."""
    from runbook.journal import Journal

    at = addon_twin
    c = at.cluster
    at.admin("POST", "/faults", {"argocd_parent_reverts": True})
    before = {a.key: a.automated for a in argocd.list_apps(c)}
    journal = Journal.open(tmp_path / "run", params_hash="h", cluster_uid="u", run_id="run")
    plan = argocd.pause(c, journal, execute=True)
    paused = set(plan[plan["action"] == "paused"]["app"])
    assert {"argocd/platform-root", "argocd/podinfo", "argocd/platform-demo"} <= paused
    at.cluster_sleep(20)                       # 4 self-heal timeouts, appset delays
    now = {a.key: a.automated for a in argocd.list_apps(c)}
    assert {k: now[k] for k in paused} == {k: None for k in paused}
    argocd.resume(c, journal, execute=True)
    at.cluster_sleep(20)
    assert argocd.drift(c, journal) == []
    assert {a.key: a.automated for a in argocd.list_apps(c)} == before


def test_self_heal_recreates_a_deleted_namespace_with_create_namespace(addon_twin) -> None:
    at = addon_twin
    c = at.cluster
    assert "CreateNamespace=true" in _app(at, "podinfo")["spec"]["syncPolicy"]["syncOptions"]
    c.delete("namespaces", "podinfo")
    at.until(lambda: c.get("namespaces", "podinfo") is None, what="namespace gone")
    at.until(lambda: c.get("deployments", "podinfo", "podinfo") is not None, what="deployment back")
    at.until(lambda: c.get("services", "podinfo", "podinfo") is not None, what="service back")
    at.until(lambda: at.https("podinfo.10.0.0.200.nip.io").status == 200, what="site back")
    at.until(lambda: _app(at, "podinfo")["status"]["health"]["status"] == "Healthy", what="Healthy")


def test_server_allocated_fields_are_not_drift(addon_twin) -> None:
    """A Service recreated with a new cluster IP (e.g. by a Velero restore) is not drift:
    git never holds the cluster IP or node ports."""
    at = addon_twin
    c = at.cluster
    at.pause_app("podinfo")
    svc = c.get("services", "podinfo", "podinfo")
    c.delete("services", "podinfo", "podinfo")
    body = {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "podinfo", "namespace": "podinfo", "labels": svc["metadata"].get("labels")},
            "spec": {k: v for k, v in svc["spec"].items() if k not in ("clusterIP", "clusterIPs")}}
    c.create("services", body, "podinfo")
    assert c.get("services", "podinfo", "podinfo")["spec"]["clusterIP"] != svc["spec"]["clusterIP"]
    c.patch("applications", "podinfo", {"spec": {"syncPolicy": {"automated": {"selfHeal": True}}}}, "argocd")
    at.cluster_sleep(15)
    app = _app(at, "podinfo")
    assert app["status"]["sync"]["status"] == "Synced" and _history_ids(app) == [0]
