"""runbook.argocd: golden app lists (parents, ApplicationSets, risks, pause order), the
exact-restore JSON patches, and a pause -> resume round trip that restores exactly."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from runbook import argocd
from runbook.errors import ArgoCDError
from runbook.journal import Journal

from argocd_fakestore import APPS, SETS, FakeArgo, json_patch

pytestmark = [pytest.mark.unit, pytest.mark.timeout(10)]

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "argocd"


def _cases(sub: str) -> list[str]:
    return sorted(p.name for p in (FIXTURES / sub).iterdir() if p.is_dir())


def _load(case: str) -> tuple[dict, dict]:
    d = FIXTURES / "apps" / case
    return json.loads((d / "apps.json").read_text()), json.loads((d / "expected.json").read_text())


@pytest.fixture
def journal(tmp_path):
    return Journal.open(tmp_path / "run", params_hash="p" * 8, cluster_uid="uid-1", run_id="unit-run")


@pytest.mark.parametrize("case", _cases("apps"))
def test_list_apps_golden(case):
    data, want = _load(case)
    apps = argocd.list_apps(FakeArgo(data["applications"], data.get("applicationsets")))
    got = [{"key": a.key, "automated": a.automated, "auto_sync": a.auto_sync, "policy": a.policy_words(),
            "parent": a.parent, "appset": a.appset, "children": sorted(a.children)} for a in apps]
    assert got == want["apps"]
    assert [[r.app, r.kind, r.detail] for r in argocd.risks(apps)] == want["risks"]


@pytest.mark.parametrize("case", _cases("apps"))
def test_pause_plan_golden_parents_first_and_dry_run_writes_nothing(case, journal):
    data, want = _load(case)
    fake = FakeArgo(data["applications"], data.get("applicationsets"))
    plan = argocd.pause(fake, journal, execute=False)
    assert plan.to_dict("records") == want["pause_plan"]
    assert fake.writes == []
    assert journal.get(argocd.JOURNAL_KEY) is None


def test_self_healing_parent_blocks_when_parents_may_not_be_paused(journal):
    data, _ = _load("app-of-apps-and-appset")
    with pytest.raises(ArgoCDError, match="argocd/root"):
        argocd.pause(FakeArgo(data["applications"]), journal, execute=True, pause_parents=False)
    assert journal.get(argocd.JOURNAL_KEY) is None


@pytest.mark.parametrize("case", _cases("set_automated"))
def test_set_automated_golden_patches(case):
    """tests/fixtures/argocd/set_automated/<case>/case.json: object, pointer, value, ops."""
    c = json.loads((FIXTURES / "set_automated" / case / "case.json").read_text())
    path = APPS.format(ns="argocd", name="x")
    fake = FakeArgo([{"metadata": {"namespace": "argocd", "name": "x"}, **c["object"]}])
    argocd._set_automated(fake, path, fake.objects[path], c["pointer"], c["value"])
    if c["ops"] is None:
        assert fake.writes == []
        return
    (method, p, body, ctype), = fake.writes
    assert (method, p, ctype) == ("PATCH", path, "application/json-patch+json")
    assert body == c["ops"]
    # applied, the value at the pointer is exactly the wanted one, with nothing merged in
    doc = json_patch(c["object"], body)
    node = doc
    parts = c["pointer"].strip("/").split("/")
    for part in parts[:-1]:
        node = node[part]
    if c["value"] is None:
        assert parts[-1] not in node
    else:
        assert node[parts[-1]] == c["value"]


def test_pause_then_resume_restores_exactly(journal):
    data, _ = _load("app-of-apps-and-appset")
    fake = FakeArgo(data["applications"], data["applicationsets"])
    originals = {a["metadata"]["name"]: a for a in data["applications"]}
    argocd.pause(fake, journal, execute=True)
    for name in originals:
        assert "automated" not in ((fake.app(name).get("spec") or {}).get("syncPolicy") or {})
    # other syncPolicy keys survive the pause
    assert fake.app("db")["spec"]["syncPolicy"] == {"syncOptions": ["CreateNamespace=true"]}
    assert fake.objects[SETS.format(ns="argocd", name="tenants")]["spec"]["template"]["spec"]["syncPolicy"] == {}
    # the journal holds the ORIGINAL policies, including `automated: {}` and disabled ones
    rec = journal.get(argocd.JOURNAL_KEY)
    assert rec["argocd/web"] == {} and rec["argocd/self"] == {"prune": False, "enabled": False}
    assert rec["argocd/db"] is None
    assert journal.get(argocd.APPSET_KEY) == {"tenants": {"selfHeal": True, "allowEmpty": True}}
    drift = argocd.drift(fake, journal)
    assert sorted(d.split(":")[0] for d in drift) == ["argocd/root", "argocd/self", "argocd/stray",
                                                       "argocd/tenant-a", "argocd/web"]
    # the parent was paused before any child
    paused = [w[1].rsplit("/", 1)[1] for w in fake.writes if "/applications/" in w[1]]
    assert paused[0] == "root"

    # a rerun of pause must not overwrite the recorded originals with "paused"
    argocd.pause(fake, journal, execute=True)
    assert journal.get(argocd.JOURNAL_KEY) == rec

    fake.writes.clear()
    table = argocd.resume(fake, journal, execute=True)
    assert table["matches"].all()
    for name, orig in originals.items():
        assert fake.app(name)["spec"] == orig["spec"], name
    assert fake.objects[SETS.format(ns="argocd", name="tenants")]["spec"]["template"]["spec"]["syncPolicy"] == \
        {"automated": {"selfHeal": True, "allowEmpty": True}}
    assert argocd.drift(fake, journal) == []
    # children first, the parent last
    restored = [w[1].rsplit("/", 1)[1] for w in fake.writes if "/applications/" in w[1]]
    assert restored[-1] == "root" and "root" not in restored[:-1]
    # manual apps are never written
    assert not {"db", "legacy"} & set(restored)


def test_resume_touches_only_recorded_apps(journal):
    fake = FakeArgo([{"metadata": {"namespace": "argocd", "name": "a"},
                      "spec": {"syncPolicy": {"automated": {"prune": True}}}},
                     {"metadata": {"namespace": "argocd", "name": "new"},
                      "spec": {"syncPolicy": {"automated": {"prune": True}}}}])
    journal.set(argocd.JOURNAL_KEY, {"argocd/a": {"selfHeal": True}, "argocd/gone": None})
    dry = argocd.resume(fake, journal, execute=False)
    assert fake.writes == []
    assert dict(zip(dry["app"], dry["restore"])) == {"argocd/a": "would set back to auto (selfHeal)",
                                                     "argocd/gone": "app no longer exists"}
    argocd.resume(fake, journal, execute=True)
    assert fake.app("a")["spec"]["syncPolicy"]["automated"] == {"selfHeal": True}
    assert fake.app("new")["spec"]["syncPolicy"]["automated"] == {"prune": True}


def test_policy_words_and_auto_sync():
    assert argocd.App("n", "a", {}).auto_sync is True
    assert argocd.App("n", "a", {"enabled": True}).auto_sync is True
    assert argocd.App("n", "a", {"enabled": False}).auto_sync is False
    assert argocd.App("n", "a", None).auto_sync is False
