"""The API server's clock against this machine's: when a pod's ``creationTimestamp`` may
be compared with a time in the journal.

The journal records times on the clock of the machine that runs the runbook (to the
millisecond). A pod's ``creationTimestamp`` is set by the API server, on its own clock,
and serialized to the whole second (Kubernetes' ``metav1.Time`` is RFC 3339 without a
fraction), so a pod created at 12:00:00.9 reads 12:00:00. Deciding "was this pod created
after the CNI was switched off?" from the two therefore has two uncertainties:

- **truncation**: the pod's real creation time lies in ``[C, C + 1 s)`` for a timestamp C;
- **skew**: the server's clock minus this machine's, which NTP keeps small on a healthy
  cluster but nothing guarantees (a laptop without NTP, a VM resumed from suspend).

:class:`ClockBounds` holds the skew as an interval ``[lo, hi]`` seconds, measured from the
``Date`` header of an API response (HTTP dates are whole seconds too, so even a perfect
clock gives an interval about a second wide). The two predicates below answer "possibly":
a rollback restarts a pod it cannot prove is on flannel, because restarting one pod too
many costs a restart while missing one leaves it without a network.

Example:
    >>> from datetime import datetime, timezone
    >>> switch = datetime(2026, 12, 4, 12, 0, 0, 700000, tzinfo=timezone.utc)  # journal time
    >>> pod = datetime(2026, 12, 4, 12, 0, 0, tzinfo=timezone.utc)  # created at 12:00:00.9
    >>> pod >= switch, possibly_at_or_after(pod, switch, ClockBounds.unmeasured())
    (False, True)
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any

__all__ = ["ClockBounds", "measure", "possibly_at_or_after", "possibly_before"]

#: a skew beyond this many seconds is worth a person's attention: the evidence's
#: timestamps (journal, events, logs) then disagree by that much
SKEW_WORTH_A_NOTE = 30.0


@dataclass(frozen=True)
class ClockBounds:
    """The API server's clock minus this machine's, in seconds: somewhere in ``[lo, hi]``.

    Attributes:
        lo, hi: the bounds of the skew (``hi - lo`` is at least the ``Date`` header's
            one-second resolution plus the request's round trip).
        measured: False when no measurement was possible (then ``lo = hi = 0``: the
            clocks are assumed to agree, and only the truncation is allowed for).
    """

    lo: float
    hi: float
    measured: bool = True

    @classmethod
    def unmeasured(cls) -> "ClockBounds":
        """Skew unknown: assume the clocks agree (what NTP gives a healthy cluster)."""
        return cls(0.0, 0.0, measured=False)

    @classmethod
    def from_date_header(cls, date: str, sent: float, received: float) -> "ClockBounds":
        """From an HTTP ``Date`` header (whole seconds, the server's clock when it answered)
        and this machine's epoch seconds when the request was sent and the answer received.

        Example:
            >>> b = ClockBounds.from_date_header("Fri, 04 Dec 2026 12:00:05 GMT", 1796385600.2, 1796385600.3)
            >>> round(b.lo, 1), round(b.hi, 1)
            (4.7, 5.8)
        """
        server = parsedate_to_datetime(date).timestamp()   # raises ValueError/TypeError if malformed
        return cls(server - received, server + 1.0 - sent)

    @property
    def skew(self) -> float:
        """The middle of the interval (server minus this machine), for display."""
        return (self.lo + self.hi) / 2

    def describe(self) -> str:
        """One line for the notebook: what was assumed and why it matters."""
        if not self.measured:
            return ("the API server's clock could not be read (no Date header): assumed to agree with "
                    "this machine's; pods created within a second of a journal time count as after it")
        side = "ahead of" if self.skew >= 0 else "behind"
        return (f"the API server's clock is {abs(self.skew):.1f} s {side} this machine's "
                f"(between {self.lo:+.1f} and {self.hi:+.1f} s): pods' creation times are compared with "
                "journal times allowing for that and for their whole seconds, a pod in doubt counted "
                "on the side that restarts it")

    @property
    def worth_a_note(self) -> bool:
        """True when the clocks disagree by more than :data:`SKEW_WORTH_A_NOTE` seconds."""
        return self.measured and max(abs(self.lo), abs(self.hi)) > SKEW_WORTH_A_NOTE


def possibly_at_or_after(created: datetime, journal_time: datetime, clock: ClockBounds) -> bool:
    """Whether a pod whose ``creationTimestamp`` is ``created`` may have been created at or
    after ``journal_time`` (this machine's clock): False only when it certainly was not.

    The pod was created before ``C + 1 s``; the journal's moment was, on the server's clock,
    at ``journal_time + lo`` at the earliest.
    """
    return created.timestamp() + 1.0 > journal_time.timestamp() + clock.lo


def possibly_before(created: datetime, journal_time: datetime, clock: ClockBounds) -> bool:
    """Whether a pod whose ``creationTimestamp`` is ``created`` may have been created before
    ``journal_time`` (this machine's clock): False only when it certainly was not.

    The pod was created at ``C`` at the earliest; the journal's moment was, on the server's
    clock, at ``journal_time + hi`` at the latest.
    """
    return created.timestamp() < journal_time.timestamp() + clock.hi


def measure(cluster: Any, *, retry_for: float = 10.0) -> ClockBounds:
    """The skew of ``cluster``'s API server (a :class:`runbook.cluster.Cluster`), from the
    ``Date`` header of ``GET /version``: best effort, unmeasured when the server cannot be
    asked within ``retry_for`` seconds or sends no usable date (a rollback must not wait on
    a clock it can do without).

    Example:
        >>> measure(cluster).describe()                      # doctest: +SKIP
        "the API server's clock is 0.4 s ahead of this machine's (between -0.1 and +1.0 s) ..."
    """
    from .errors import ClusterError

    headers: dict[str, str] = {}
    sent = time.time()
    try:
        cluster.request_raw("GET", "/version", retry_for=retry_for, answer_headers=headers)
    except ClusterError:
        return ClockBounds.unmeasured()
    received = time.time()
    date = next((v for k, v in headers.items() if k.lower() == "date"), None)
    try:
        return ClockBounds.from_date_header(date, sent, received) if date else ClockBounds.unmeasured()
    except (TypeError, ValueError):
        return ClockBounds.unmeasured()
