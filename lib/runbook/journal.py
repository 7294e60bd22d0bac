"""The run journal: what a run changed, written before each change, read by every phase.

One JSON file per run, ``<run_dir>/journal.json``. Each mutating step records its
*intent* (and flushes it to disk) before touching anything, then marks it done. After a
crash, a kernel death or a failed phase, the journal therefore lists everything that may
have been changed: the rollback reads the backups and the previous settings from it, and
a rerun skips the steps that are already done (:meth:`Journal.is_done`).

Writes are atomic (temp file in the same folder, fsync, ``os.replace``), so a crash
leaves either the old or the new journal, never half of one. A journal opened with
``durable=False`` (a rehearsal against a twin, whose cluster lives in the same machine's
temp folder and dies with it) skips the two fsyncs: the write and the rename stay
atomic for every process, only a power cut could lose the last record, and it would
take the twin along. On a real target each write waits for the disk (~15 ms here).

The run folder is created owner-only (0700) and the journal is 0600: they hold cluster state. String values are
passed through :func:`runbook.redact.redact` before they are stored, so a careless
caller cannot put a token into the evidence.

Provenance: the journal is bound to one cluster (kube-system namespace UID) and one
params hash; :meth:`Journal.open` refuses a journal from another cluster or other params,
and each phase records its notebook hash.

One writer per run is assumed (the runner executes phases one after another). A second
process that opens the same journal sees the latest state: every read checks the file's
identity and re-reads it when another process replaced it.

Example:
    >>> j = Journal.open(run_dir, params_hash=h, cluster_uid=uid, run_id="r1")  # doctest: +SKIP
    >>> j.begin_phase("02-reconfigure", notebook_hash=nb)                       # doctest: +SKIP
    >>> e = j.record("write-config", "replace config.yaml", node="set-hog")     # doctest: +SKIP
    >>> ...  # change the node                                                  # doctest: +SKIP
    >>> j.complete(e, result={"sha256": new_sha})                               # doctest: +SKIP
    >>> j.is_done("write-config", node="set-hog")                               # doctest: +SKIP
    True
"""
from __future__ import annotations

import contextlib
import copy
import fcntl
import json
import os
import tempfile
import threading
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

try:  # a dependency of the package; the standard library alone gives the same file
    import msgspec as _msgspec
except ImportError:  # pragma: no cover
    _msgspec = None

from .errors import JournalError
from .params import validate_run_id
from .redact import MASK, SECRET_KEYS, redact

__all__ = ["Journal", "JournalEntry", "BackupRecord", "JOURNAL_NAME", "utcnow"]

JOURNAL_NAME = "journal.json"
FORMAT_VERSION = 1
_TMP_PREFIX = ".journal."
_TMP_SUFFIX = ".tmp"
_LOCK_NAME = ".journal.lock"

# One lock per journal path inside this process (fleet helpers may record from threads);
# fcntl.flock on a lock file orders writers across processes.
_thread_locks: dict[str, threading.RLock] = {}
_thread_locks_guard = threading.Lock()


def _thread_lock(path: Path) -> threading.RLock:
    with _thread_locks_guard:
        return _thread_locks.setdefault(str(path), threading.RLock())


def utcnow() -> str:
    """UTC timestamp, ISO 8601 with milliseconds and a ``Z``."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _scrub(obj: Any) -> Any:
    """Deep copy of ``obj`` with every string redacted (JSON stays valid)."""
    if isinstance(obj, str):
        return redact(obj)
    if isinstance(obj, dict):
        # a value stored under a secret-looking key is masked whatever it looks like
        return {str(k): (MASK if str(k).lower() in SECRET_KEYS and v not in (None, "")
                         else _scrub(v)) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_scrub(v) for v in obj]
    if obj is None or isinstance(obj, (bool, int, float)):
        return obj
    return redact(str(obj))


def _pretty_json(doc: Any) -> str:
    """``json.dumps(doc, indent=2, ensure_ascii=False) + "\\n"``, the same text in half
    the time: the standard library indents only with its Python encoder, so the
    document is encoded compactly in C and indented by msgspec. The journal is written
    whole on every record (150 KB by a rehearsal's end), a fifth of a kernel's CPU.
    A document with NaN or Infinity (which only the standard library writes) is
    indented by the standard library.

    Example:
        >>> _pretty_json({"a": [1, {}], "b": "é"})
        '{\\n  "a": [\\n    1,\\n    {}\\n  ],\\n  "b": "é"\\n}\\n'
    """
    if _msgspec is not None:
        compact = json.dumps(doc, ensure_ascii=False, separators=(",", ":"))
        try:
            return _msgspec.json.format(compact.encode(), indent=2).decode() + "\n"
        except _msgspec.DecodeError:
            pass
    return json.dumps(doc, indent=2, sort_keys=False, ensure_ascii=False) + "\n"


def _fsync_dir(path: Path) -> None:
    """Flush a folder's entries (a rename in it) to disk; best effort."""
    try:
        dfd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:  # pragma: no cover - some filesystems refuse fsync on dirs
        pass


@dataclass
class JournalEntry:
    """One recorded change.

    Attributes:
        id: unique id. seq: order in the run. step: the runbook step (e.g. ``write-config``).
        action: what is done, in words. node: node name, if per node. phase: the phase
            that recorded it. status: ``intent`` (recorded, maybe done), ``done`` or
            ``failed``. before/after/data: facts the caller chose (redacted). result:
            set by :meth:`Journal.complete`. error: set by :meth:`Journal.fail`.
    """

    id: str
    seq: int
    step: str
    action: str
    node: str | None = None
    phase: str | None = None
    status: str = "intent"
    before: Any = None
    after: Any = None
    data: Any = None
    result: Any = None
    error: str | None = None
    recorded_at: str = ""
    completed_at: str | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> JournalEntry:
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        return cls(**known)


@dataclass
class BackupRecord:
    """A file backed up on a node before it was changed."""

    node: str
    path: str
    backup_path: str
    sha256: str
    recorded_at: str = ""
    run_step: str | None = None


@dataclass
class _State:
    doc: dict[str, Any] = field(default_factory=dict)
    ident: tuple[int, int, int] | None = None   # (inode, mtime_ns, size) of what we read


class Journal:
    """The journal of one run. Create or reopen it with :meth:`open`."""

    def __init__(self, run_dir: Path, state: _State, *, durable: bool = True) -> None:
        self.run_dir = run_dir
        self.durable = durable
        self.path = run_dir / JOURNAL_NAME
        self._state = state
        self._tlock = _thread_lock(self.path)
        self._depth = 0
        self._lock_fd: int | None = None

    # ------------------------------------------------------------------ open / load
    @classmethod
    def open(cls, run_dir: str | os.PathLike[str], *, params_hash: str, cluster_uid: str,
             run_id: str, durable: bool = True) -> Journal:
        """Create the journal of a run, or reopen it after checking its provenance.

        Args:
            run_dir: the run folder (``reports/<run-id>``); created 0700.
            params_hash: :func:`runbook.params.params_hash` of this run's params+values.
            cluster_uid: the kube-system namespace UID of the target cluster.
            run_id: the run id (a plain folder name).
            durable: fsync each write and its rename (default). False only for a
                cluster that cannot outlive this machine (a twin): see the module doc.

        Raises:
            RunIdError: the run id is not a plain folder name.
            JournalError: the existing journal belongs to another cluster, other params
                or another run id, or it is unreadable.
        """
        validate_run_id(run_id)
        if not params_hash or not cluster_uid:
            raise JournalError("Journal.open needs a params hash and a cluster uid")
        rd = Path(run_dir)
        rd.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(rd, 0o700)  # also tighten a folder made earlier with a wider umask
        j = cls(rd, _State(), durable=durable)
        # under the lock: a writer in another process may be between its temp write and
        # its rename, and two first opens must not both create the journal
        with j._locked():
            j._clean_temp_files()
            if j.path.exists():
                j._reload()
                doc = j._state.doc
                problems = []
                if doc.get("cluster_uid") != cluster_uid:
                    problems.append(f"cluster uid {doc.get('cluster_uid')!r} (journal) != "
                                    f"{cluster_uid!r} (this cluster): it records another cluster")
                if doc.get("params_hash") != params_hash:
                    problems.append(f"params hash {str(doc.get('params_hash'))[:12]}... (journal) "
                                    f"!= {params_hash[:12]}... (now): the params or the values "
                                    "file changed since the run started")
                if doc.get("run_id") != run_id:
                    problems.append(f"run id {doc.get('run_id')!r} (journal) != {run_id!r}")
                if problems:
                    raise JournalError(
                        f"refusing the journal {j.path}: " + "; ".join(problems),
                        hint="continue this run with the params and cluster it started with, "
                             "or start a new run with a new --run-id (roll back the old run "
                             "first if it changed anything)")
                os.chmod(j.path, 0o600)
            else:
                now = utcnow()
                j._state.doc = {
                    "format": FORMAT_VERSION, "run_id": run_id, "cluster_uid": cluster_uid,
                    "params_hash": params_hash, "created_at": now, "updated_at": now,
                    "phases": {}, "entries": [], "facts": {},
                }
                j._save()
        return j

    @classmethod
    def read(cls, run_dir: str | os.PathLike[str]) -> Journal:
        """Open an existing journal read-only, without provenance checks (reports)."""
        rd = Path(run_dir)
        j = cls(rd, _State())
        if not j.path.exists():
            raise JournalError(f"no journal at {j.path}",
                               hint="the run never started a phase, or the run id is wrong")
        j._reload()
        return j

    def _clean_temp_files(self) -> None:
        # leftovers of a crash between the temp write and the rename; the journal itself
        # is intact, the temp file is garbage
        for p in self.run_dir.glob(_TMP_PREFIX + "*" + _TMP_SUFFIX):
            try:
                p.unlink()
            except OSError:
                pass

    def _ident(self) -> tuple[int, int, int] | None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _reload(self) -> None:
        ident = self._ident()
        try:
            text = self.path.read_text(encoding="utf-8")
            doc = json.loads(text)
        except FileNotFoundError:
            raise JournalError(f"the journal {self.path} disappeared") from None
        except (OSError, ValueError) as e:
            raise JournalError(f"the journal {self.path} is unreadable: {e}",
                               hint="it is written atomically, so this is outside damage; "
                                    "restore it from a copy before any rollback") from e
        if not isinstance(doc, dict) or "entries" not in doc:
            raise JournalError(f"{self.path} is not a runbook journal")
        self._state = _State(doc, ident)

    def _refresh(self) -> None:
        """Re-read the file if another process replaced it since we last saw it."""
        if self._ident() != self._state.ident:
            self._reload()

    def _save(self) -> None:
        doc = self._state.doc
        doc["updated_at"] = utcnow()
        data = _pretty_json(doc)
        fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX, suffix=_TMP_SUFFIX, dir=self.run_dir)
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(data)
                f.flush()
                if self.durable:
                    os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        if self.durable:
            _fsync_dir(self.run_dir)   # make the rename itself durable
        self._state.ident = self._ident()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Exclusive access to the journal file (threads and processes); re-entrant."""
        with self._tlock:
            if self._depth == 0:
                fd = os.open(self.run_dir / _LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
                fcntl.flock(fd, fcntl.LOCK_EX)
                self._lock_fd = fd
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0 and self._lock_fd is not None:
                    fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
                    os.close(self._lock_fd)
                    self._lock_fd = None

    @contextlib.contextmanager
    def _write(self) -> Iterator[dict[str, Any]]:
        """Read-modify-write under the lock; saved atomically when the block succeeds."""
        with self._locked():
            self._refresh()
            yield self._state.doc
            self._save()

    # ------------------------------------------------------------------ provenance
    @property
    def run_id(self) -> str:
        self._refresh()
        return self._state.doc["run_id"]

    @property
    def cluster_uid(self) -> str:
        self._refresh()
        return self._state.doc["cluster_uid"]

    @property
    def params_hash(self) -> str:
        self._refresh()
        return self._state.doc["params_hash"]

    def begin_phase(self, name: str, notebook_hash: str | None = None) -> None:
        """Record that phase ``name`` starts, with its provenance (a rerun keeps history)."""
        with self._write() as doc:
            ph = doc["phases"].get(name)
            if ph is None:
                ph = doc["phases"][name] = {"attempts": 0, "history": []}
            elif ph.get("started_at"):
                ph.setdefault("history", []).append(
                    {k: ph.get(k) for k in ("started_at", "ended_at", "status", "notebook_hash")})
            ph.update({"started_at": utcnow(), "ended_at": None, "status": "running",
                       "notebook_hash": notebook_hash, "params_hash": doc["params_hash"],
                       "cluster_uid": doc["cluster_uid"], "attempts": ph.get("attempts", 0) + 1})
            doc["current_phase"] = name

    def end_phase(self, name: str, status: str) -> None:
        """Record the end of phase ``name`` (``passed``, ``failed``, ``skipped`` ...)."""
        with self._write() as doc:
            ph = doc["phases"].setdefault(name, {"attempts": 0, "history": []})
            ph["ended_at"] = utcnow()
            ph["status"] = status
            if ph.get("started_at"):
                start = datetime.fromisoformat(ph["started_at"].replace("Z", "+00:00"))
                ph["duration_s"] = round((datetime.now(timezone.utc) - start).total_seconds(), 3)
            if doc.get("current_phase") == name:
                doc["current_phase"] = None

    def phases(self) -> dict[str, dict[str, Any]]:
        """Each phase's record: started_at, ended_at, status, hashes, attempts, history."""
        self._refresh()
        return copy.deepcopy(self._state.doc["phases"])

    # ------------------------------------------------------------------ entries
    def record(self, step: str, action: str, *, node: str | None = None, before: Any = None,
               after: Any = None, data: Any = None) -> JournalEntry:
        """Append an intent and write it to disk BEFORE the caller changes anything.

        Args:
            step: a stable step name used by :meth:`is_done` (e.g. ``write-config``).
            action: what is about to be done, in words.
            node: the node concerned, if any.
            before/after/data: JSON-able facts (strings are redacted).

        Returns:
            The entry; pass it to :meth:`complete` (or :meth:`fail`) afterwards.
        """
        with self._write() as doc:
            entries = doc["entries"]
            e = JournalEntry(id=uuid.uuid4().hex[:12], seq=len(entries) + 1, step=step,
                             action=redact(action), node=node, phase=doc.get("current_phase"),
                             before=_scrub(before), after=_scrub(after), data=_scrub(data),
                             recorded_at=utcnow())
            entries.append(asdict(e))
        return e

    def _find(self, doc: dict[str, Any], entry: JournalEntry | str) -> dict[str, Any]:
        eid = entry.id if isinstance(entry, JournalEntry) else entry
        for d in doc["entries"]:
            if d["id"] == eid:
                return d
        raise JournalError(f"no journal entry {eid!r} in {self.path}")

    def complete(self, entry: JournalEntry | str, result: Any = None) -> JournalEntry:
        """Mark ``entry`` done, with an optional ``result`` (redacted)."""
        with self._write() as doc:
            d = self._find(doc, entry)
            d.update(status="done", result=_scrub(result), completed_at=utcnow(), error=None)
        return JournalEntry.from_dict(copy.deepcopy(d))

    def fail(self, entry: JournalEntry | str, error: str | BaseException) -> JournalEntry:
        """Mark ``entry`` failed with the error text (redacted)."""
        with self._write() as doc:
            d = self._find(doc, entry)
            d.update(status="failed", error=redact(str(error)), completed_at=utcnow())
        return JournalEntry.from_dict(copy.deepcopy(d))

    @contextlib.contextmanager
    def step(self, step: str, action: str, *, node: str | None = None, before: Any = None,
             data: Any = None) -> Iterator[JournalEntry]:
        """Record an intent, run the block, then mark it done (or failed, re-raising).

        Example:
            >>> with journal.step("restart-k3s", "restart k3s", node="set-hog"):  # doctest: +SKIP
            ...     node.systemctl("restart", "k3s")
        """
        e = self.record(step, action, node=node, before=before, data=data)
        try:
            yield e
        except BaseException as exc:
            self.fail(e, exc)
            raise
        self.complete(e)

    def perform(self, step: str, action: str, fn: Callable[[], Any], *, node: str | None = None,
                data: Any = None) -> Any:
        """Record an intent, call ``fn()``, then mark the entry done with its result (or
        failed with the error, re-raised); returns the result.

        An interrupt (``KeyboardInterrupt``) leaves the entry pending: whether the change
        happened is not known, and a rerun checks before it repeats it.

        Example:
            >>> journal.perform("restart-k3s", "systemctl restart k3s",  # doctest: +SKIP
            ...                 lambda: node.systemctl("restart", "k3s"), node="set-hog")
        """
        entry = self.record(step, action, node=node, data=data)
        try:
            result = fn()
        except Exception as e:
            self.fail(entry, e)
            raise
        self.complete(entry, result=result)
        return result

    def entries(self, step: str | None = None, node: str | None = None,
                status: str | None = None) -> list[JournalEntry]:
        """Entries in order, filtered by step, node and status when given."""
        self._refresh()
        out = []
        for d in self._state.doc["entries"]:
            if step is not None and d["step"] != step:
                continue
            if node is not None and d.get("node") != node:
                continue
            if status is not None and d.get("status") != status:
                continue
            out.append(JournalEntry.from_dict(copy.deepcopy(d)))
        return out

    def is_done(self, step: str, node: str | None = None) -> bool:
        """True when ``step`` (on ``node``, if given) has a ``done`` entry: skip it on resume."""
        return bool(self.entries(step=step, node=node, status="done"))

    def pending(self) -> list[JournalEntry]:
        """Intents never completed: changes that may or may not have happened."""
        return self.entries(status="intent")

    # ------------------------------------------------------------------ facts
    def set(self, key: str, value: Any) -> None:
        """Store a fact (JSON-able; strings redacted), e.g. ``no_cni_window_opened_at``."""
        with self._write() as doc:
            doc["facts"][key] = _scrub(value)

    def get(self, key: str, default: Any = None) -> Any:
        """A stored fact, or ``default``."""
        self._refresh()
        return copy.deepcopy(self._state.doc["facts"].get(key, default))

    def setdefault(self, key: str, value: Any) -> Any:
        """Store ``value`` only if ``key`` has none yet; return the stored value.

        Use it for facts that must keep their FIRST value across reruns, such as each
        Argo CD app's policy before the first pause.
        """
        with self._locked():
            self._refresh()
            facts = self._state.doc["facts"]
            if key not in facts:
                facts[key] = _scrub(value)
                self._save()
            return copy.deepcopy(facts[key])

    def add_backup(self, node: str, path: str, backup_path: str, sha256: str, *,
                   step: str | None = None) -> BackupRecord:
        """Record a file backup. The FIRST backup of (node, path) wins: on a rerun the
        file already holds the new content, and the rollback must restore the original."""
        with self._locked():
            self._refresh()
            backups = self._state.doc["facts"].setdefault("backups", [])
            for b in backups:
                if b["node"] == node and b["path"] == path:
                    return BackupRecord(**b)
            rec = BackupRecord(node=node, path=path, backup_path=backup_path, sha256=sha256,
                               recorded_at=utcnow(), run_step=step)
            backups.append(asdict(rec))
            self._save()
            return rec

    def backups(self, node: str | None = None) -> list[BackupRecord]:
        """The file backups (node, path, backup_path, sha256), in the order taken."""
        self._refresh()
        out = [BackupRecord(**b) for b in self._state.doc["facts"].get("backups", [])]
        return [b for b in out if node is None or b.node == node]

    def to_dict(self) -> dict[str, Any]:
        """A copy of the whole journal document."""
        self._refresh()
        return copy.deepcopy(self._state.doc)

    def __repr__(self) -> str:
        doc = self._state.doc
        return (f"Journal(run_id={doc.get('run_id')!r}, entries={len(doc.get('entries', []))}, "
                f"path={str(self.path)!r})")
