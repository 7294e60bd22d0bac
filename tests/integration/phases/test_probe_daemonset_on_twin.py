"""04-verify's probe DaemonSet on a twin, through the library calls the notebooks make.

Over real sockets (API, exec streams) against one twin of this module (flannel, as
before a migration; the checks are the same under Cilium, see test_verify_data_path):

* the probe is journaled before it is created, gets a Ready pod on every node (servers
  included), answers DNS, a Service ClusterIP and every other node's probe pod, and is
  gone afterwards, its removal journaled;
* with flannel's VXLAN port dropped by one node's firewall, the twin's network model
  (``NetworkModel.reach``) times the requests out, and the pod-to-pod check names each
  pair through that node, both ways; the probe is removed all the same;
* a probe a crashed verify left is listed by a dry-run rollback and removed by an
  executed one, from the journal;
* a dry run creates nothing and shows the probe's checks SKIPPED.
"""
from __future__ import annotations

import pytest

from runbook import probe_daemonset, rollback, session, verify, verify_probe

pytestmark = [pytest.mark.integration]

NODES = ("set-hog", "fast-skunk", "fast-heron")
SEL = f"app.kubernetes.io/name={probe_daemonset.APP_LABEL}"


@pytest.fixture(scope="module")
def probe_twin(tmp_path_factory):
    from twin.api import Twin
    t = Twin(tmp_path_factory.mktemp("twin")).start()
    yield t
    t.stop()


def start(twin, tmp_path, phase: str = "verify", *, execute: bool = True, run: str = "run"):
    # one run id for the module: an executed session takes the migration lock for its run
    return session.start(phase, str(twin.params_path), str(tmp_path / run), execute=execute)


def probe_gone(s) -> bool:
    ns = s.params.verify.probe_namespace
    return s.cluster.get("daemonsets", probe_daemonset.NAME, ns) is None and \
        not s.cluster.list("pods", ns, label_selector=SEL)


def by_name(checks) -> dict:
    return {c.name: c for c in checks}


@pytest.mark.timeout(180)
def test_probe_is_journaled_answers_from_every_node_and_is_removed(probe_twin, tmp_path):
    s = start(probe_twin, tmp_path)
    v = verify.Verification(s)
    got = by_name(verify_probe.run(s, v))
    assert list(got) == ["probe-ready", "pod-dns", "pod-service", "pod-to-pod", "probe-removed"]
    assert all(c.ok for c in got.values()), [repr(c) for c in got.values() if not c.ok]
    assert set(got["probe-ready"].table["node"]) == set(NODES)         # the server too
    assert len(got["pod-to-pod"].table) == 6                           # every ordered pair
    assert set(got["pod-service"].table["url"]) == {"http://10.43.0.10:9153/"}
    assert probe_gone(s)
    entries = [e for e in s.journal.entries() if e.step.startswith("probe-")]
    assert [(e.step, e.status) for e in entries] == [("probe-create", "done"), ("probe-delete", "done")]
    assert entries[0].data["image"] == s.params.verify.probe_image
    assert probe_daemonset.leftovers(s.journal.entries()) == []


@pytest.mark.timeout(180)
def test_blocked_vxlan_fails_naming_the_pairs_and_the_probe_is_still_removed(probe_twin, tmp_path):
    s = start(probe_twin, tmp_path)
    probe_twin.set_fault("firewall", [{"node": "fast-heron", "from": "*", "ports": ["udp/8472"]}])
    try:
        got = by_name(verify_probe.run(s, verify.Verification(s)))
    finally:
        probe_twin.set_fault("firewall", [])
    cross = got["pod-to-pod"]
    assert not cross.ok
    pairs = {"fast-heron -> set-hog", "fast-heron -> fast-skunk", "set-hog -> fast-heron",
             "fast-skunk -> fast-heron"}
    assert all(p in cross.message for p in pairs), cross.message
    assert "set-hog -> fast-skunk" not in cross.message and "fast-skunk -> set-hog" not in cross.message
    assert all("download timed out" in d for d in cross.details) and len(cross.details) == 4
    assert got["probe-ready"].ok and got["probe-removed"].ok and probe_gone(s)


@pytest.mark.timeout(180)
def test_rollback_removes_a_probe_a_crashed_verify_left(probe_twin, tmp_path):
    s = start(probe_twin, tmp_path)
    v = s.params.verify
    probe_daemonset.create(s, probe_daemonset.manifest(image=v.probe_image, namespace=v.probe_namespace,
                                                       run_id=s.run_id))
    # ... and the kernel died here: no probe-delete in the journal
    assert not probe_gone(s)
    dry = start(probe_twin, tmp_path, "rollback", execute=False)
    table = rollback.remove_probe(dry)
    assert list(table["action"]) == ["would delete"] and not probe_gone(s)
    rb = start(probe_twin, tmp_path, "rollback")
    table = rollback.remove_probe(rb)
    assert list(table["action"]) == ["delete"] and probe_gone(rb)
    deleted = rb.journal.entries(step=probe_daemonset.STEP_DELETE)
    assert [(e.status, e.phase) for e in deleted] == [("done", "rollback")]
    assert probe_daemonset.leftovers(rb.journal.entries()) == []
    assert list(rollback.remove_probe(rb)["action"]) == []             # nothing left to do


@pytest.mark.timeout(120)
def test_dry_run_creates_nothing_and_shows_the_probe_checks_skipped(probe_twin, tmp_path):
    s = start(probe_twin, tmp_path, execute=False)
    v = verify.Verification(s)
    got = by_name(verify_probe.run(s, v))
    assert got["pod-service"].skipped and got["pod-to-pod"].skipped
    assert got["pod-dns"].ok and not got["pod-dns"].skipped             # from pods that already run
    assert probe_gone(s) and not s.journal.entries()
    recorded = {g.name: g for g in s.gates}
    assert recorded["pod-to-pod"].skipped and recorded["pod-service"].skipped
