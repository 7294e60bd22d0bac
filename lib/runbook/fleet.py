"""The fan-out over nodes: changes batch by batch, reads all at once.

:meth:`Fleet.apply` (changes) applies one operation to servers one at a time, then to
agents in batches, and stops after the first batch with a failure, so a broken step
never spreads over the whole cluster; the nodes it did not reach are reported as such.
:meth:`Fleet.read` (facts and checks, nothing changed) reads every node at once from a
bounded pool (``limits.parallel_reads``) and reports each node's outcome. It only needs objects with ``name`` and ``role``
(normally :class:`runbook.nodes.Node`), so it is tested without SSH.

Example:
    >>> from types import SimpleNamespace as N
    >>> f = Fleet([N(name="a1", role="agent"), N(name="s1", role="server")], batch_size=2)
    >>> [[n.name for n in b] for b in f.batches()]
    [['s1'], ['a1']]
    >>> f.apply(lambda n: n.name.upper(), description="shout").values()
    {'s1': 'S1', 'a1': 'A1'}
    >>> f.read(lambda n: len(n.name), description="name length").values()
    {'s1': 2, 'a1': 2}
"""
from __future__ import annotations

import concurrent.futures as cf
import html
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Sequence, TypeVar

from .errors import NodeError
from .evidence import redact_text

__all__ = ["Fleet", "FleetResult", "NodeOutcome"]

T = TypeVar("T")


@dataclass
class NodeOutcome(Generic[T]):
    """One node's outcome in a :class:`FleetResult`.

    Attributes:
        node, role; status: ``ok``, ``failed`` or ``skipped``; value: what the
        operation returned; error: the exception (failed) or reason (skipped);
        batch: 0-based batch number (None when not reached, or for a read); duration: seconds.
    """

    node: str
    role: str
    status: str
    value: T | None = None
    error: str | None = None
    batch: int | None = None
    duration: float = 0.0
    exception: BaseException | None = field(default=None, repr=False)


@dataclass
class FleetResult(Generic[T]):
    """Per-node outcomes of :meth:`Fleet.apply`, in the order nodes were planned.

    ``frame()`` columns: ``node``, ``role``, ``batch`` (counted from 1 within the node's
    role, as the restart order shows it: servers 1, 2 ... one at a time, then agents
    1, 2 ...), ``status`` (ok/failed/skipped), ``error``, ``duration_s``, ``value`` (in
    words, see :func:`runbook.presentation.plain`).
    """

    description: str
    outcomes: list[NodeOutcome[T]]

    @property
    def ok(self) -> bool:
        """True when every node succeeded."""
        return all(o.status == "ok" for o in self.outcomes)

    @property
    def failed(self) -> list[NodeOutcome[T]]:
        return [o for o in self.outcomes if o.status == "failed"]

    @property
    def skipped(self) -> list[NodeOutcome[T]]:
        return [o for o in self.outcomes if o.status == "skipped"]

    def values(self) -> dict[str, T | None]:
        """node -> value for the nodes that succeeded."""
        return {o.node: o.value for o in self.outcomes if o.status == "ok"}

    @property
    def df(self):  # -> pandas.DataFrame
        """Alias of :meth:`frame`."""
        return self.frame()

    def frame(self):  # -> pandas.DataFrame
        """The outcomes as a pandas DataFrame (columns documented on the class)."""
        import pandas as pd  # noqa: PLC0415

        from .presentation import plain  # noqa: PLC0415
        return pd.DataFrame([{
            "node": o.node, "role": o.role, "batch": self._batch_in_role(o),
            "status": o.status,
            "error": redact_text(o.error) if o.error else "",
            "duration_s": round(o.duration, 2),
            "value": redact_text(plain(o.value)) if o.value is not None else "",
        } for o in self.outcomes], columns=["node", "role", "batch", "status", "error",
                                            "duration_s", "value"])

    def _batch_in_role(self, o: NodeOutcome[T]) -> int | None:
        """``o``'s batch counted from 1 among its role's batches (servers come first)."""
        if o.batch is None:
            return None
        if o.role == "server":
            return o.batch + 1
        servers = {x.batch for x in self.outcomes if x.role == "server" and x.batch is not None}
        return o.batch - len(servers) + 1

    def raise_for_failures(self) -> "FleetResult[T]":
        """Raise :class:`NodeError` naming failed and untouched nodes, if any failed."""
        if self.failed:
            lines = [f"{o.node}: {o.error}" for o in self.failed]
            untouched = [o.node for o in self.skipped]
            msg = f"{self.description}: failed on {len(self.failed)} node(s)"
            causes = {(o.error or "").splitlines()[0].replace(f"[{o.node}] ", "")
                      for o in self.failed}
            if len(causes) == 1:  # the same cause everywhere: say it on the first line
                msg += f" ({next(iter(causes))})"
            msg += "\n  " + "\n  ".join(lines)
            if untouched:
                msg += "\n  not reached (left untouched): " + ", ".join(untouched)
            first = self.failed[0].exception
            err = NodeError(msg, node=None)
            if first is not None:
                raise err from first
            raise err
        return self

    def _repr_html_(self) -> str:
        head = (f"<p><b>{html.escape(self.description)}</b>: "
                f"{'all ok' if self.ok else 'FAILED'}</p>")
        from .presentation import frame_html  # noqa: PLC0415

        return head + frame_html(self.frame())


class Fleet:
    """Apply an operation to nodes: servers one at a time, then agents in batches.

    Args:
        nodes: objects with ``name`` and ``role`` (normally :class:`Node`).
        batch_size: agents changed concurrently (``limits.agent_batch_size``).
        parallel_reads: nodes read concurrently by :meth:`read` (``limits.parallel_reads``).

    Example:
        >>> Fleet(nodes, 2).apply(lambda n: n.systemctl("restart", "k3s-agent"),
        ...                       description="restart agents").raise_for_failures()  # doctest: +SKIP
    """

    def __init__(self, nodes: Sequence[Any], batch_size: int = 1, parallel_reads: int = 20) -> None:
        self.nodes = list(nodes)
        self.batch_size = max(1, int(batch_size))
        self.parallel_reads = max(1, int(parallel_reads))

    def batches(self) -> list[list[Any]]:
        """The plan: one batch per server (in order), then agents by ``batch_size``."""
        servers = [n for n in self.nodes if n.role == "server"]
        agents = [n for n in self.nodes if n.role != "server"]
        plan = [[s] for s in servers]
        for i in range(0, len(agents), self.batch_size):
            plan.append(agents[i:i + self.batch_size])
        return plan

    def apply(self, op: Callable[[Any], T], *, description: str) -> FleetResult[T]:
        """Run ``op(node)`` batch by batch; stop after the first batch with a failure.

        Nodes of later batches are not touched and are reported as
        ``skipped: not reached``. Exceptions are caught per node and recorded.
        """
        plan = self.batches()
        outcomes: dict[str, NodeOutcome[T]] = {}
        stopped = False
        for b, batch in enumerate(plan):
            if stopped:
                for n in batch:
                    outcomes[n.name] = NodeOutcome(n.name, n.role, "skipped",
                                                   error="skipped: not reached")
                continue
            if len(batch) == 1:
                results = [self._one(op, batch[0], b)]
            else:
                with cf.ThreadPoolExecutor(max_workers=len(batch)) as ex:
                    results = list(ex.map(lambda n: self._one(op, n, b), batch))
            for o in results:
                outcomes[o.node] = o
            if any(o.status == "failed" for o in results):
                stopped = True
        order = [n.name for batch in plan for n in batch]
        return FleetResult(description, [outcomes[name] for name in order])

    def read(self, op: Callable[[Any], T], *, description: str) -> FleetResult[T]:
        """Run a read-only ``op(node)`` on every node at once, ``parallel_reads`` at a time.

        For facts and checks only: nothing is skipped after a failure (a read changes
        nothing, so there is nothing to contain) and every node's outcome is reported,
        in the order of ``nodes``. Never use it for a change: changes go through
        :meth:`apply`, batch by batch.

        Example:
            >>> Fleet(nodes, parallel_reads=20).read(lambda n: n.kernel(),
            ...                                      description="kernel").raise_for_failures()  # doctest: +SKIP
        """
        order = self.nodes
        workers = min(self.parallel_reads, len(order))
        if workers <= 1:
            results = [self._one(op, n, None) for n in order]
        else:
            with cf.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fleet-read") as ex:
                results = list(ex.map(lambda n: self._one(op, n, None), order))  # a read has no batches)
        return FleetResult(description, results)

    @staticmethod
    def _one(op: Callable[[Any], T], node: Any, batch: int | None) -> NodeOutcome[T]:
        start = time.monotonic()
        try:
            value = op(node)
        except Exception as e:  # noqa: BLE001 - recorded per node, re-raised by the caller
            return NodeOutcome(node.name, getattr(node, "role", ""), "failed",
                               error=f"{type(e).__name__}: {e}", batch=batch,
                               duration=time.monotonic() - start, exception=e)
        return NodeOutcome(node.name, getattr(node, "role", ""), "ok", value=value, batch=batch,
                           duration=time.monotonic() - start)

