"""Unit tests of runbook.journal: atomic writes, provenance, resume, redaction."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from runbook import journal as J
from runbook.errors import JournalError, RunIdError
from runbook.journal import Journal
from runbook.redact import clear_registered, register_secret

pytestmark = [pytest.mark.unit, pytest.mark.timeout(60)]

PH = "a" * 64
UID = "5f0c1e2a-0000-4000-8000-000000000001"


def _open(run_dir: Path, **kw) -> Journal:
    args = dict(params_hash=PH, cluster_uid=UID, run_id="run-1")
    args.update(kw)
    return Journal.open(run_dir, **args)


def _on_disk(run_dir: Path) -> dict:
    return json.loads((run_dir / "journal.json").read_text())


def test_open_creates_owner_only_files(tmp_path: Path) -> None:
    rd = tmp_path / "reports" / "run-1"
    j = _open(rd)
    assert stat.S_IMODE(rd.stat().st_mode) == 0o700
    assert stat.S_IMODE(j.path.stat().st_mode) == 0o600
    doc = _on_disk(rd)
    assert (doc["run_id"], doc["cluster_uid"], doc["params_hash"]) == ("run-1", UID, PH)
    assert doc["created_at"].endswith("Z") and "T" in doc["created_at"]
    assert doc["entries"] == [] and doc["facts"] == {}


def test_existing_wide_run_dir_is_tightened(tmp_path: Path) -> None:
    rd = tmp_path / "run-1"
    rd.mkdir(mode=0o755)
    os.chmod(rd, 0o755)
    _open(rd)
    assert stat.S_IMODE(rd.stat().st_mode) == 0o700


def test_record_is_on_disk_before_the_change(tmp_path: Path) -> None:
    j = _open(tmp_path)
    e = j.record("write-config", "replace config.yaml", node="set-hog",
                 before={"sha256": "0" * 64}, data={"path": "/etc/rancher/k3s/config.yaml"})
    disk = _on_disk(tmp_path)["entries"]
    assert len(disk) == 1 and disk[0]["status"] == "intent" and disk[0]["node"] == "set-hog"
    assert disk[0]["before"] == {"sha256": "0" * 64}
    done = j.complete(e, result={"sha256": "1" * 64})
    assert done.status == "done" and done.completed_at
    disk = _on_disk(tmp_path)["entries"]
    assert disk[0]["status"] == "done" and disk[0]["result"] == {"sha256": "1" * 64}
    f = j.fail(j.record("restart", "restart k3s", node="set-hog"), RuntimeError("ssh down"))
    assert f.status == "failed" and "ssh down" in f.error
    assert [x.step for x in j.entries(status="failed")] == ["restart"]
    assert [x.seq for x in j.entries()] == [1, 2]


def test_perform_records_before_and_the_outcome_after(tmp_path: Path) -> None:
    j = _open(tmp_path)
    seen: list[str] = []

    def change() -> dict:
        seen.append(_on_disk(tmp_path)["entries"][-1]["status"])   # the intent is on disk first
        return {"active": False}

    assert j.perform("stop-k3s", "systemctl stop k3s", change, node="set-hog",
                     data={"unit": "k3s"}) == {"active": False}
    assert seen == ["intent"]
    [done] = j.entries(step="stop-k3s")
    assert (done.status, done.node, done.data, done.result) == ("done", "set-hog", {"unit": "k3s"},
                                                                {"active": False})

    def broken() -> None:
        raise RuntimeError("ssh down")

    with pytest.raises(RuntimeError, match="ssh down"):
        j.perform("start-k3s", "systemctl start k3s", broken, node="set-hog")
    assert j.entries(step="start-k3s")[0].status == "failed"

    def interrupted() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        j.perform("restart", "systemctl restart k3s", interrupted)
    assert j.entries(step="restart")[0].status == "intent"   # not known whether it happened


def test_provenance_refusal(tmp_path: Path) -> None:
    _open(tmp_path).record("x", "y")
    with pytest.raises(JournalError) as ei:
        _open(tmp_path, cluster_uid="other-uid")
    assert "cluster uid" in str(ei.value) and "another cluster" in str(ei.value)
    assert "--run-id" in str(ei.value)                        # what to do
    with pytest.raises(JournalError, match="params hash .* changed"):
        _open(tmp_path, params_hash="b" * 64)
    with pytest.raises(JournalError, match="run id"):
        _open(tmp_path, run_id="run-2")
    # the refused opens changed nothing
    assert len(_open(tmp_path).entries()) == 1


def test_bad_run_id_and_missing_provenance(tmp_path: Path) -> None:
    with pytest.raises(RunIdError):
        _open(tmp_path, run_id="../escape")
    with pytest.raises(JournalError):
        _open(tmp_path, cluster_uid="")


def test_resume_via_is_done(tmp_path: Path) -> None:
    """A run killed in the middle: the rerun redoes only what is not done."""
    nodes = ["set-hog", "fast-skunk", "fast-heron"]
    applied: list[str] = []

    def run(journal: Journal, crash_at: str | None = None) -> None:
        for n in nodes:
            if journal.is_done("write-config", node=n):
                continue
            e = journal.record("write-config", "write the new config.yaml", node=n)
            if n == crash_at:
                return          # killed after the intent, before the change completed
            applied.append(n)
            journal.complete(e)

    run(_open(tmp_path), crash_at="fast-skunk")
    assert applied == ["set-hog"]
    j2 = _open(tmp_path)                      # a new process reopens the same run
    assert j2.is_done("write-config", node="set-hog")
    assert not j2.is_done("write-config", node="fast-skunk")
    assert [e.node for e in j2.pending()] == ["fast-skunk"]   # may or may not have happened
    run(j2)
    assert applied == ["set-hog", "fast-skunk", "fast-heron"]
    assert all(j2.is_done("write-config", node=n) for n in nodes)
    assert j2.is_done("write-config") and not j2.is_done("restart")


def test_failed_rename_leaves_the_old_journal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    j = _open(tmp_path)
    j.record("one", "first")
    before = (tmp_path / "journal.json").read_bytes()

    def boom(src, dst):
        raise OSError("disk gone")

    monkeypatch.setattr(J.os, "replace", boom)
    with pytest.raises(OSError):
        j.record("two", "second")
    monkeypatch.undo()
    assert (tmp_path / "journal.json").read_bytes() == before
    assert not list(tmp_path.glob(".journal.*.tmp"))


def test_durable_journal_syncs_each_write_and_a_twins_does_not(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(J.os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
    durable = _open(tmp_path / "real")
    synced.clear()
    durable.record("write-config", "replace config.yaml", node="n1")
    assert len(synced) == 2            # the temp file, then the folder (the rename)
    twin = _open(tmp_path / "twin", durable=False)
    synced.clear()
    e = twin.record("write-config", "replace config.yaml", node="n1")
    assert synced == []
    # still written before the change, atomically, and read back by another instance
    assert [d["id"] for d in _on_disk(tmp_path / "twin")["entries"]] == [e.id]
    assert Journal.read(tmp_path / "twin").entries()[0].step == "write-config"


def test_crash_between_temp_write_and_rename(tmp_path: Path) -> None:
    """Kill a real process right before os.replace: the old journal is intact."""
    j = _open(tmp_path)
    j.record("one", "first")
    before = (tmp_path / "journal.json").read_bytes()
    child = textwrap.dedent(f"""
        import os
        from runbook import journal as J
        j = J.Journal.open({str(tmp_path)!r}, params_hash={PH!r}, cluster_uid={UID!r}, run_id="run-1")
        J.os.replace = lambda a, b: os._exit(9)     # the process dies here
        j.record("two", "second")
    """)
    rc = subprocess.run([sys.executable, "-c", child], timeout=30).returncode
    assert rc == 9
    assert (tmp_path / "journal.json").read_bytes() == before
    leftovers = list(tmp_path.glob(".journal.*.tmp"))
    assert leftovers, "the temp file was written before the crash"
    assert b"second" in leftovers[0].read_bytes()
    j2 = _open(tmp_path)                       # reopening cleans the garbage
    assert [e.step for e in j2.entries()] == ["one"]
    assert not list(tmp_path.glob(".journal.*.tmp"))


def test_second_instance_sees_latest_state(tmp_path: Path) -> None:
    a = _open(tmp_path)
    b = _open(tmp_path)
    a.record("pause-argocd", "pause")
    assert [e.step for e in b.entries()] == ["pause-argocd"]
    b.set("no_cni_window_opened_at", "2026-11-26T05:00:00.000Z")
    assert a.get("no_cni_window_opened_at") == "2026-11-26T05:00:00.000Z"
    a.record("x", "y")                        # a re-reads before writing: b's fact survives
    assert b.get("no_cni_window_opened_at") and len(b.entries()) == 2
    r = Journal.read(tmp_path)
    assert len(r.entries()) == 2


def test_phases_carry_provenance(tmp_path: Path) -> None:
    j = _open(tmp_path)
    j.begin_phase("01-preflight", notebook_hash="nb1")
    e = j.record("velero-backup", "create backup")
    assert e.phase == "01-preflight"
    j.end_phase("01-preflight", "failed")
    j.begin_phase("01-preflight", notebook_hash="nb2")
    j.end_phase("01-preflight", "passed")
    ph = j.phases()["01-preflight"]
    assert (ph["params_hash"], ph["cluster_uid"], ph["notebook_hash"]) == (PH, UID, "nb2")
    assert ph["status"] == "passed" and ph["attempts"] == 2 and ph["duration_s"] >= 0
    assert ph["history"][0]["status"] == "failed" and ph["history"][0]["notebook_hash"] == "nb1"
    assert ph["ended_at"].endswith("Z")


def test_facts_backups_and_first_value_wins(tmp_path: Path) -> None:
    j = _open(tmp_path)
    b1 = j.add_backup("set-hog", "/etc/rancher/k3s/config.yaml", "/var/backups/phase22/a", "1" * 64)
    b2 = j.add_backup("set-hog", "/etc/rancher/k3s/config.yaml", "/var/backups/phase22/b", "2" * 64)
    assert b2.backup_path == b1.backup_path == "/var/backups/phase22/a"   # the original wins
    j.add_backup("fast-skunk", "/etc/rancher/k3s/config.yaml", "/var/backups/phase22/c", "3" * 64)
    assert [(b.node, b.sha256[0]) for b in j.backups()] == [("set-hog", "1"), ("fast-skunk", "3")]
    assert [b.node for b in j.backups(node="fast-skunk")] == ["fast-skunk"]
    first = {"guestbook": {"prune": True, "selfHeal": False}}
    assert j.setdefault("argocd_previous_policies", first) == first
    assert j.setdefault("argocd_previous_policies", {"guestbook": None}) == first
    assert j.get("missing", 42) == 42


def test_secrets_never_reach_the_journal(tmp_path: Path) -> None:
    clear_registered()
    join = "K10c8f5a0b6e3d2a1f4b7c9e8d6a5::server:9f1c2e7a4b3d5c6e8f0a1b2c3d4e5f60"
    bearer = "eyJhbGciOiJSUzI1NiIsImtpZCI6InR3aW4ifQ.payload.sig"
    register_secret(bearer)
    j = _open(tmp_path)
    e = j.record("write-config", f"write token {join}", node="fast-skunk",
                 before={"text": f"server: https://10.0.0.2:6443\ntoken: {join}\n"},
                 data={"headers": {"Authorization": f"Bearer {bearer}"}, "list": [bearer]})
    j.complete(e, result=f"ok {bearer}")
    j.set("note", {"kubeconfig_token": bearer, "token": "plain-value-42", "password": 1234567})
    j.fail(j.record("x", "y"), RuntimeError(f"401 with {bearer}"))
    raw = (tmp_path / "journal.json").read_text()
    assert join not in raw and bearer not in raw and "9f1c2e7a4b3d" not in raw
    assert "plain-value-42" not in raw and "1234567" not in raw
    assert "********" in raw
    json.loads(raw)
    clear_registered()


def test_corrupt_or_missing_journal(tmp_path: Path) -> None:
    (tmp_path / "journal.json").write_text("{not json")
    with pytest.raises(JournalError, match="unreadable"):
        _open(tmp_path)
    with pytest.raises(JournalError, match="no journal"):
        Journal.read(tmp_path / "nowhere")
    (tmp_path / "journal.json").write_text("[]")
    with pytest.raises(JournalError, match="not a runbook journal"):
        Journal.read(tmp_path)


def test_step_context_manager(tmp_path: Path) -> None:
    j = _open(tmp_path)
    with j.step("restart-k3s", "restart k3s", node="set-hog") as e:
        assert j.entries(step="restart-k3s")[0].status == "intent"
    assert j.is_done("restart-k3s", node="set-hog") and e.step == "restart-k3s"
    with pytest.raises(RuntimeError, match="boom"):
        with j.step("restart-k3s", "restart k3s", node="fast-skunk"):
            raise RuntimeError("boom")
    failed = j.entries(node="fast-skunk")[0]
    assert failed.status == "failed" and "boom" in failed.error
    assert not j.is_done("restart-k3s", node="fast-skunk")


def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    """Threads of one process and two other processes append at the same time."""
    import threading
    j = _open(tmp_path)
    child = textwrap.dedent(f"""
        import sys
        from runbook.journal import Journal
        j = Journal.open({str(tmp_path)!r}, params_hash={PH!r}, cluster_uid={UID!r}, run_id="run-1")
        for i in range(15):
            j.record("proc", f"p{{sys.argv[1]}}-{{i}}")
    """)
    procs = [subprocess.Popen([sys.executable, "-c", child, str(k)]) for k in range(2)]

    def worker(k: int) -> None:
        for i in range(15):
            j.record("thread", f"t{k}-{i}")

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [p.wait(timeout=30) for p in procs] == [0, 0]
    entries = _open(tmp_path).entries()
    assert len(entries) == 3 * 15 + 2 * 15
    assert sorted(e.seq for e in entries) == list(range(1, 76))
    assert len({e.action for e in entries}) == 75


def test_docstring_examples() -> None:
    import doctest
    from runbook import k3sconfig, params, redact
    for mod in (params, k3sconfig, redact, J):
        assert doctest.testmod(mod).failed == 0, mod.__name__
