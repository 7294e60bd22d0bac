"""Gates, data-path probes and before/after comparisons.

- :func:`gate` stops a phase in its own cell with :class:`GateFailed` when a condition
  does not hold, and records every gate (passed or not) in the evidence and in the
  caller's list of gates (the session's ``gates``: ``Session.gate`` passes it).
- :func:`probe_ingress` does an HTTPS GET verified with the cluster's CA, optionally
  connecting to a pinned ``resolve_to`` address while sending the URL's host as SNI and
  ``Host`` header (what ``curl --resolve`` does). The loopback guard applies to the
  address actually connected to.
- :func:`compare_snapshots` and :func:`compare_lb_ips` diff the pre/post snapshots of
  :mod:`runbook.cluster` (pods by workload, IP changes, restarts; LoadBalancer IPs).

Example:
    >>> from runbook.checks import gate
    >>> gate(True, "no KUBE-SVC chains left", name="kpr", record=False)   # doctest: +ELLIPSIS
    GateResult(name='kpr', passed=True, ...)
"""
from __future__ import annotations

import html
import http.client
import re
import socket
import ssl
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Sequence
from urllib.parse import urlsplit

from . import evidence
from .errors import GateFailed, LoopbackViolation
from .params import split_host_port
from .safety import require_loopback
from .presentation import frame_html

if TYPE_CHECKING:
    import pandas as pd

    from .evidence import EvidenceLost


# ------------------------------------------------------------------------- gates


@dataclass
class GateResult:
    """One gate: its name, whether it passed, the message and the offending details."""

    name: str
    passed: bool
    message: str
    details: list[str] = field(default_factory=list)
    hint: str | None = None
    at: float = field(default_factory=time.time)
    #: passed only because a person chose to go on (shown as OVERRIDDEN, not as a pass)
    overridden: bool = False
    #: not evaluated: the gate depends on changes a dry run does not make (shown as SKIPPED)
    skipped: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60] or "gate"


def gate(condition: bool, message: str, *, details: Sequence[str] | None = None,
         hint: str | None = None, name: str | None = None, record: bool = True,
         gates: list[GateResult] | None = None,
         lost: list[EvidenceLost] | None = None, overridden: bool = False) -> GateResult:
    """Require ``condition``; raise :class:`GateFailed` (the phase stops here) otherwise.

    In a notebook call it as ``s.gate(...)`` (:meth:`runbook.session.Session.gate`),
    which passes the session's ``gates`` and ``lost`` lists.

    Args:
        condition: what must hold.
        message: the requirement in words ("every cilium agent Ready").
        details: one line per offending item, shown under the message.
        hint: what the on-call engineer should do next.
        name: a short key for the summary (default: a slug of ``message``).
        record: also record the result as evidence (``gate/<name>``; only has a visible
            effect inside a notebook). A result that cannot be recorded is logged and
            shown as ``EVIDENCE LOST`` (:func:`runbook.evidence.record_or_warn`), and
            the gate still holds or fails as it should.
        gates: the list this result is appended to (the session's gates).
        lost: the list evidence that could not be recorded is appended to.
        overridden: the condition holds only because a person chose to go on.

    Returns:
        the passed :class:`GateResult`.

    Example:
        >>> s.gate(len(unmanaged) == 0, "every pod managed by Cilium",
        ...        details=[f"{p.namespace}/{p.name}" for p in unmanaged])   # doctest: +SKIP
    """
    result = GateResult(name or _slug(message), bool(condition), message,
                        [str(d) for d in (details or [])], hint, overridden=bool(overridden and condition))
    if gates is not None:
        gates.append(result)
    if record:
        evidence.record_gate_or_warn(result, lost=lost)
    if not result.passed:
        raise GateFailed(message, details=result.details, hint=hint, data=result)
    return result


def skip_gate(message: str, *, name: str | None = None, record: bool = True,
              gates: list[GateResult] | None = None, lost: list[EvidenceLost] | None = None,
              **_: Any) -> GateResult:
    """Record a gate that was not evaluated (a dry run did not make the changes it checks).

    It is kept like any gate (``s.gates``, evidence ``gate/<name>``) with ``skipped=True``,
    so the page and the index show SKIPPED, never PASSED.

    >>> skip_gate("every pod managed by Cilium", name="all-managed", record=False).skipped
    True
    """
    result = GateResult(name or _slug(message), True, message, [], None, skipped=True)
    if gates is not None:
        gates.append(result)
    if record:
        evidence.record_gate_or_warn(result, lost=lost)
    return result


def flag(s: Any, kind: str, message: str) -> None:
    """``s.attention(kind, message)`` when ``s`` is a session that has it (a phase helper
    called with a stand-in session in a unit test just goes on)."""
    attention = getattr(s, "attention", None)
    if callable(attention):
        attention(kind, message)


def gate_summary(gates: Iterable[GateResult]) -> pd.DataFrame:
    """The gates (e.g. ``s.gates``) as a DataFrame: ``name``, ``passed``, ``skipped`` (not
    evaluated in a dry run), ``message``, ``details``."""
    import pandas as pd  # noqa: PLC0415
    rows = [{"name": g.name, "passed": g.passed and not g.skipped, "skipped": g.skipped,
             "message": g.message, "details": "; ".join(g.details)} for g in gates]
    return pd.DataFrame(rows, columns=["name", "passed", "skipped", "message", "details"])


# ------------------------------------------------------------------------- probes
@dataclass
class ProbeResult:
    """One ingress probe.

    Attributes:
        url; host: the URL's host (SNI and Host header); connected_to: ``addr:port`` the
        socket went to; expect_status; status: the HTTP status (None when no answer);
        ok: status == expect_status; reason: why not ok (TLS error, timeout ...);
        elapsed_s.
    """

    url: str
    host: str
    connected_to: str
    expect_status: int
    status: int | None
    ok: bool
    reason: str
    elapsed_s: float

    def _repr_html_(self) -> str:
        mark = "OK" if self.ok else "FAIL"
        return (f"<p>{mark} {html.escape(self.url)} via {html.escape(self.connected_to)}: "
                f"{self.status} ({html.escape(self.reason)})</p>")


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to ``connect_host:port`` with SNI and certificate check for ``sni_host``."""

    def __init__(self, connect_host: str, port: int, *, sni_host: str,
                 context: ssl.SSLContext, timeout: float) -> None:
        super().__init__(connect_host, port, timeout=timeout, context=context)
        self._sni_host = sni_host
        self._ctx = context

    def connect(self) -> None:
        sock = socket.create_connection((self.host, self.port), self.timeout)
        self.sock = self._ctx.wrap_socket(sock, server_hostname=self._sni_host)


def probe_ingress(url: str, *, expect_status: int = 200, ca_file: str | None = None,
                  resolve_to: str | None = None, timeout: float = 5, kind: str = "real",
                  path_override: str | None = None) -> ProbeResult:
    """GET ``url`` over HTTPS verified with ``ca_file``; never raises for a bad answer.

    Args:
        url: ``https://homer.10.0.0.200.nip.io/`` (``http://`` is accepted too).
        expect_status: the status that counts as success.
        ca_file: CA bundle for the server certificate (None = system CAs).
        resolve_to: ``addr`` or ``addr:port`` to connect to instead of resolving the
            URL's host (the host is still sent as SNI and ``Host``).
        timeout: seconds for connect and answer.
        kind: target kind; ``twin`` refuses a non-loopback address.

    Returns:
        a :class:`ProbeResult`; ``ok`` False with a ``reason`` on TLS, connection or
        status problems.

    Raises:
        LoopbackViolation: a twin target and the address connected to is not loopback.
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    https = parts.scheme == "https"
    port = parts.port or (443 if https else 80)
    addr = host
    if resolve_to:
        addr, rport = split_host_port(resolve_to)
        port = rport or port
    require_loopback(addr, kind=kind, what=f"ingress check {url}")
    connected = f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"
    path = path_override or (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host_header = host if parts.port is None else f"{host}:{parts.port}"
    start = time.monotonic()

    def result(status: int | None, ok: bool, reason: str) -> ProbeResult:
        return ProbeResult(url, host, connected, expect_status, status, ok, reason,
                           round(time.monotonic() - start, 3))

    try:
        if https:
            ctx = ssl.create_default_context(cafile=ca_file)
            conn: http.client.HTTPConnection = _PinnedHTTPSConnection(
                addr, port, sni_host=host, context=ctx, timeout=timeout)
        else:
            conn = http.client.HTTPConnection(addr, port, timeout=timeout)
        try:
            conn.request("GET", path, headers={"Host": host_header, "User-Agent": "phase22-runbook",
                                               "Connection": "close"})
            resp = conn.getresponse()
            resp.read(65536)
            status = resp.status
        finally:
            conn.close()
    except LoopbackViolation:
        raise
    except ssl.SSLCertVerificationError as e:
        return result(None, False, f"TLS verification failed: {e.verify_message or e}")
    except ssl.SSLError as e:
        return result(None, False, f"TLS error: {e}")
    except (socket.timeout, TimeoutError):
        return result(None, False, f"timed out after {timeout}s")
    except (OSError, http.client.HTTPException) as e:
        return result(None, False, f"{type(e).__name__}: {e}")
    if status == expect_status:
        return result(status, True, "ok")
    return result(status, False, f"status {status}, expected {expect_status}")


def _get(obj: Any, key: str, default: Any = None) -> Any:
    if isinstance(obj, dict):
        return obj.get(key, default)
    return getattr(obj, key, default)


def probe_all(checks: Iterable[Any], *, kind: str = "real", timeout: float = 5,
              default_ca_file: str | None = None):  # -> pandas.DataFrame
    """Probe every ingress check (objects or dicts with url, expect_status, ca_file,
    resolve_to).

    Returns:
        a DataFrame with columns ``url``, ``host``, ``connected_to``, ``expect_status``,
        ``status``, ``ok``, ``reason``, ``elapsed_s`` (one row per check, in order).
    """
    import pandas as pd  # noqa: PLC0415
    rows = []
    for c in checks:
        r = probe_ingress(_get(c, "url"), expect_status=_get(c, "expect_status", 200) or 200,
                          ca_file=_get(c, "ca_file") or default_ca_file,
                          resolve_to=_get(c, "resolve_to"), timeout=timeout, kind=kind)
        rows.append(asdict(r))
    return pd.DataFrame(rows, columns=["url", "host", "connected_to", "expect_status", "status",
                                       "ok", "reason", "elapsed_s"])


# ------------------------------------------------------------------------- snapshots
_RS_HASH = re.compile(r"-[a-z0-9]{5,10}$")


def _frame(data: Any):
    import pandas as pd  # noqa: PLC0415
    if isinstance(data, pd.DataFrame):
        return data.copy()
    return pd.DataFrame(list(data or []))


def _workload(row: Any) -> str:
    w = row.get("workload") if hasattr(row, "get") else None
    if isinstance(w, str) and w:
        return w
    kind = row.get("owner_kind") or ""
    name = row.get("owner_name") or ""
    if not kind:
        return f"Pod/{row.get('name', '')}"
    if kind == "ReplicaSet":  # a Deployment's ReplicaSet: the hash changes on rollout
        return f"Deployment/{_RS_HASH.sub('', name)}"
    return f"{kind}/{name}"


@dataclass
class SnapshotDiff:
    """Pods before vs after.

    Attributes (DataFrames):
        by_workload: ``namespace``, ``workload`` (``Kind/name``), ``before``, ``after``,
            ``delta`` (after - before), pods counted per workload (hostNetwork included).
        missing: rows of ``by_workload`` with pods before and none after.
        new: rows with none before and pods after.
        ip_changes: ``namespace``, ``name``, ``ip_before``, ``ip_after`` for pods present
            (same name) in both snapshots whose IP changed.
        restarts: ``namespace``, ``name``, ``restarts_before``, ``restarts_after``,
            ``delta`` for same-name pods whose restart count went up.
        fewer: workloads with fewer pods after than before (but not gone).
    """

    by_workload: Any
    missing: Any
    new: Any
    ip_changes: Any
    restarts: Any
    fewer: Any

    @property
    def ok(self) -> bool:
        """Same workloads, none with fewer pods."""
        return self.missing.empty and self.fewer.empty

    def problems(self) -> list[str]:
        """One line per missing or shrunk workload (for :func:`gate` details)."""
        out = [f"{r.namespace}/{r.workload}: {r.before} pod(s) before, none after"
               for r in self.missing.itertuples()]
        out += [f"{r.namespace}/{r.workload}: {r.before} pod(s) before, {r.after} after"
                for r in self.fewer.itertuples()]
        return out

    def _repr_html_(self) -> str:
        head = (f"<p>workloads: {len(self.by_workload)}, missing: {len(self.missing)}, "
                f"fewer pods: {len(self.fewer)}, new: {len(self.new)}, "
                f"IP changes: {len(self.ip_changes)}, restarted: {len(self.restarts)}</p>")
        bad = self.by_workload[self.by_workload["delta"] != 0]
        return head + (frame_html(bad) if not bad.empty else "<p>no count changes</p>")


def compare_snapshots(before_pods: Any, after_pods: Any) -> SnapshotDiff:
    """Diff two pod snapshots (DataFrames from ``cluster.snapshot('pods')`` or records).

    Expected columns: ``namespace``, ``name``, and ``workload`` or ``owner_kind`` /
    ``owner_name``; optional ``ip``, ``restarts``.

    Example:
        >>> d = compare_snapshots(pre["pods"], post["pods"])   # doctest: +SKIP
        >>> gate(d.ok, "same workloads after the migration", details=d.problems())  # doctest: +SKIP
    """
    import pandas as pd  # noqa: PLC0415
    b, a = _frame(before_pods), _frame(after_pods)
    for df in (b, a):
        if df.empty:
            for c in ("namespace", "name"):
                df[c] = pd.Series(dtype=str)
        df["workload"] = [_workload(r) for r in df.to_dict("records")] if len(df) else pd.Series(dtype=str)
    cb = b.groupby(["namespace", "workload"]).size().rename("before")
    ca = a.groupby(["namespace", "workload"]).size().rename("after")
    byw = pd.concat([cb, ca], axis=1).fillna(0).astype(int).reset_index()
    if byw.empty:
        byw = pd.DataFrame(columns=["namespace", "workload", "before", "after"])
    byw["delta"] = byw["after"] - byw["before"]
    byw = byw.sort_values(["namespace", "workload"]).reset_index(drop=True)
    missing = byw[(byw["before"] > 0) & (byw["after"] == 0)].reset_index(drop=True)
    new = byw[(byw["before"] == 0) & (byw["after"] > 0)].reset_index(drop=True)
    fewer = byw[(byw["after"] > 0) & (byw["after"] < byw["before"])].reset_index(drop=True)

    ipcol = "ip" if "ip" in b.columns else ("pod_ip" if "pod_ip" in b.columns else None)
    rcol = "restarts" if "restarts" in b.columns else None
    keep = ["namespace", "name"] + [c for c in (ipcol, rcol) if c]
    both = b[keep].merge(a[[c for c in keep if c in a.columns]], on=["namespace", "name"],
                         suffixes=("_before", "_after"))
    if ipcol and f"{ipcol}_after" in both.columns:
        ipc = both[both[f"{ipcol}_before"].fillna("") != both[f"{ipcol}_after"].fillna("")]
        ip_changes = ipc[["namespace", "name", f"{ipcol}_before", f"{ipcol}_after"]].rename(
            columns={f"{ipcol}_before": "ip_before", f"{ipcol}_after": "ip_after"})
    else:
        ip_changes = pd.DataFrame(columns=["namespace", "name", "ip_before", "ip_after"])
    if rcol and f"{rcol}_after" in both.columns:
        rs = both[both[f"{rcol}_after"].fillna(0) > both[f"{rcol}_before"].fillna(0)]
        restarts = rs[["namespace", "name", f"{rcol}_before", f"{rcol}_after"]].rename(
            columns={f"{rcol}_before": "restarts_before", f"{rcol}_after": "restarts_after"})
        restarts["delta"] = restarts["restarts_after"] - restarts["restarts_before"]
    else:
        restarts = pd.DataFrame(columns=["namespace", "name", "restarts_before",
                                         "restarts_after", "delta"])
    return SnapshotDiff(byw, missing, new, ip_changes.reset_index(drop=True),
                        restarts.reset_index(drop=True), fewer)


@dataclass
class LbIpDiff:
    """LoadBalancer IPs before vs after.

    Attributes:
        table: DataFrame ``namespace``, ``name``, ``ips_before``, ``ips_after``, ``status``
            (``unchanged``, ``changed``, ``lost`` (no IP after), ``service-gone``,
            ``new`` (service not there before), ``gained`` (had no IP before)); one row per LoadBalancer service seen in either snapshot.
    """

    table: Any

    def _rows(self, *statuses: str) -> list[str]:
        t = self.table[self.table["status"].isin(statuses)]
        return [f"{r.namespace}/{r.name}: {r.ips_before or '-'} -> {r.ips_after or '-'} ({r.status})"
                for r in t.itertuples()]

    @property
    def lost(self) -> list[str]:
        """Services with an IP before and none after (or gone)."""
        return self._rows("lost", "service-gone")

    @property
    def changed(self) -> list[str]:
        """Services whose IP set changed."""
        return self._rows("changed")

    @property
    def ok(self) -> bool:
        """Every LoadBalancer IP present before is present and unchanged."""
        return not self.lost and not self.changed

    def problems(self) -> list[str]:
        return self.lost + self.changed

    def _repr_html_(self) -> str:
        return frame_html(self.table)


def _ips(value: Any) -> tuple[str, ...]:
    if value is None or (isinstance(value, float) and value != value):
        return ()
    if isinstance(value, str):
        items = value.split(",")
    else:
        items = list(value)
    return tuple(sorted(str(i).strip() for i in items if str(i).strip()))


def _lb_map(services: Any) -> dict[tuple[str, str], tuple[str, ...]]:
    df = _frame(services)
    out: dict[tuple[str, str], tuple[str, ...]] = {}
    if df.empty:
        return out
    col = next((c for c in ("lb_ips", "load_balancer_ips", "external_ips") if c in df.columns), None)
    for r in df.to_dict("records"):
        if "type" in r and r["type"] != "LoadBalancer":
            continue
        out[(r["namespace"], r["name"])] = _ips(r.get(col)) if col else ()
    return out


def compare_lb_ips(before_services: Any, after_services: Any) -> LbIpDiff:
    """Compare the LoadBalancer IPs of two service snapshots.

    Accepts DataFrames from ``cluster.snapshot('services')`` (``lb_ips`` comma-joined) or
    records with a list. Only ``type == LoadBalancer`` rows count.

    Example:
        >>> d = compare_lb_ips(pre["services"], post["services"])   # doctest: +SKIP
        >>> gate(d.ok, "LoadBalancer IPs unchanged", details=d.problems())  # doctest: +SKIP
    """
    import pandas as pd  # noqa: PLC0415
    b, a = _lb_map(before_services), _lb_map(after_services)
    rows = []
    for key in sorted(set(b) | set(a)):
        ib, ia = b.get(key), a.get(key)
        if ib is None:
            status = "new"
        elif ia is None:
            status = "service-gone" if ib else "unchanged"
        elif not ib and ia:
            status = "gained"
        elif ib and not ia:
            status = "lost"
        elif ib != ia:
            status = "changed"
        else:
            status = "unchanged"
        rows.append({"namespace": key[0], "name": key[1], "ips_before": ",".join(ib or ()),
                     "ips_after": ",".join(ia or ()), "status": status})
    return LbIpDiff(pd.DataFrame(rows, columns=["namespace", "name", "ips_before", "ips_after",
                                                "status"]))
