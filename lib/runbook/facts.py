"""Pure parsers for the facts gathered on nodes (pyinfra-style ``facts/``).

A *fact* is a command run by :mod:`runbook.nodes` plus a pure ``parse(output) -> Model``
function defined here (the ``iptables-save`` parsers in :mod:`runbook.facts_iptables`,
re-exported here). Nothing in this module opens a connection, so every parser is
covered by golden files under ``tests/fixtures/facts/<parser>/<case>/`` (``output.txt``
is the captured command output, ``expected.json`` the model as :func:`to_jsonable`).

Example:
    >>> from runbook.facts import parse_kernel
    >>> k = parse_kernel("6.1.0-18-amd64\\n")
    >>> k.at_least(5, 10), k.version
    (True, (6, 1, 0))
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

from .facts_iptables import (  # noqa: F401 (re-exported: callers import them from here)
    DEFAULT_PREFIXES, FLANNEL_FORWARD_COMMENT, IptablesChains, IptablesSummary, filter_iptables,
    parse_iptables_chains, parse_iptables_save, rule_chain_and_target,
)


def to_jsonable(obj: Any) -> Any:
    """Turn a fact model (dataclasses, tuples) into plain JSON data (for golden files)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    return obj


# --------------------------------------------------------------------------- ip link
@dataclass
class Interface:
    """One line of ``ip -o link show``.

    Attributes:
        index: interface index; name: without the ``@peer`` suffix; parent: the part
        after ``@`` (``if5`` for a veth, the lower device for a vlan) or None;
        flags: e.g. ``["BROADCAST", "MULTICAST", "UP", "LOWER_UP"]``; mtu; state
        (``UP``, ``DOWN``, ``UNKNOWN``); link_type (``ether``, ``loopback``, ``none``);
        mac: the link address or None.
    """

    index: int
    name: str
    parent: str | None
    flags: list[str]
    mtu: int | None
    state: str | None
    link_type: str | None
    mac: str | None

    @property
    def up(self) -> bool:
        """True when the UP flag is set."""
        return "UP" in self.flags


_IP_LINK_RE = re.compile(r"^(?P<index>\d+):\s+(?P<name>[^:\s]+):\s+<(?P<flags>[^>]*)>(?P<rest>.*)$")


def parse_ip_link(text: str) -> list[Interface]:
    """Parse ``ip -o link show`` (one line per interface, ``\\`` joins the link line).

    Args:
        text: the command output.

    Returns:
        the interfaces in output order.

    Example:
        >>> parse_ip_link("5: flannel.1: <BROADCAST,UP> mtu 1450 state UNKNOWN\\\\"
        ...               "    link/ether 9a:1b:2c:3d:4e:5f brd ff:ff:ff:ff:ff:ff")[0].name
        'flannel.1'
    """
    out: list[Interface] = []
    for raw in text.splitlines():
        line = raw.strip()
        m = _IP_LINK_RE.match(line)
        if not m:
            continue
        name = m.group("name")
        parent = None
        if "@" in name:
            name, parent = name.split("@", 1)
        flags = [f for f in m.group("flags").split(",") if f]
        rest = m.group("rest").replace("\\", " ").split()
        mtu = state = link_type = mac = None
        for i, tok in enumerate(rest):
            nxt = rest[i + 1] if i + 1 < len(rest) else None
            if tok == "mtu" and nxt and nxt.isdigit():
                mtu = int(nxt)
            elif tok == "state" and nxt:
                state = nxt
            elif tok.startswith("link/") and link_type is None:
                link_type = tok.split("/", 1)[1]
                if nxt and nxt not in ("brd", "permaddr") and ":" in nxt:
                    mac = nxt
        out.append(Interface(int(m.group("index")), name, parent, flags, mtu, state,
                             link_type, mac))
    return out


# --------------------------------------------------------------------------- versions
@dataclass(order=True)
class K3sVersion:
    """``k3s --version``: ``k3s version v1.30.4+k3s1 (98262b5d)``.

    Attributes:
        version: (major, minor, patch); k3s_release: the N of ``+k3sN``; raw: the
        version string (``v1.30.4+k3s1``); commit; go: the Go version line, if any.
    """

    version: tuple[int, int, int]
    k3s_release: int
    raw: str = field(compare=False)
    commit: str | None = field(default=None, compare=False)
    go: str | None = field(default=None, compare=False)

    def at_least(self, major: int, minor: int, patch: int = 0) -> bool:
        """True when this version is >= major.minor.patch."""
        return self.version >= (major, minor, patch)


_K3S_RE = re.compile(r"k3s version (?P<raw>v(?P<ma>\d+)\.(?P<mi>\d+)\.(?P<pa>\d+)"
                     r"(?:\+k3s(?P<rel>\d+))?\S*)(?:\s+\((?P<commit>[0-9a-f]+)\))?")


def parse_k3s_version(text: str) -> K3sVersion:
    """Parse ``k3s --version``.

    Raises:
        ValueError: no ``k3s version vX.Y.Z`` line in the output.
    """
    m = _K3S_RE.search(text)
    if not m:
        raise ValueError(f"not a k3s --version output: {text.strip()[:200]!r}")
    go = None
    gm = re.search(r"go version (\S+)", text)
    if gm:
        go = gm.group(1)
    return K3sVersion(version=(int(m["ma"]), int(m["mi"]), int(m["pa"])),
                      k3s_release=int(m["rel"] or 0), raw=m["raw"], commit=m["commit"], go=go)


@dataclass
class KernelVersion:
    """``uname -r``: ``6.1.0-18-amd64`` -> version (6, 1, 0), raw kept.

    Compare with :meth:`at_least` or directly with a tuple: ``k >= (5, 10)``.
    """

    version: tuple[int, int, int]
    raw: str = field(compare=False)

    def at_least(self, major: int, minor: int, patch: int = 0) -> bool:
        """True when the kernel is >= major.minor.patch (Cilium wants >= 5.10 for KPR)."""
        return self.version >= (major, minor, patch)

    def _tuple(self, other: Any) -> tuple[int, ...]:
        if isinstance(other, KernelVersion):
            return other.version
        t = tuple(other)
        return t + (0,) * (3 - len(t))

    def __ge__(self, other: Any) -> bool:  # type: ignore[override]
        return self.version >= self._tuple(other)

    def __gt__(self, other: Any) -> bool:  # type: ignore[override]
        return self.version > self._tuple(other)

    def __le__(self, other: Any) -> bool:  # type: ignore[override]
        return self.version <= self._tuple(other)

    def __lt__(self, other: Any) -> bool:  # type: ignore[override]
        return self.version < self._tuple(other)


def parse_kernel(text: str) -> KernelVersion:
    """Parse ``uname -r`` (``5.15.0-91-generic``, ``6.6.31+rpt-rpi-v8``, ``4.19.0``).

    Raises:
        ValueError: the output does not start with a version number.
    """
    raw = text.strip().splitlines()[0].strip() if text.strip() else ""
    m = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", raw)
    if not m:
        raise ValueError(f"not a kernel release: {raw[:200]!r}")
    return KernelVersion((int(m[1]), int(m[2]), int(m[3] or 0)), raw)


# --------------------------------------------------------------------------- systemd
@dataclass
class UnitState:
    """``systemctl is-active UNIT``: state is ``active``, ``inactive``, ``failed``,
    ``activating``, ``deactivating``, ``reloading`` or ``unknown``."""

    state: str
    active: bool


def parse_systemctl_is_active(text: str) -> UnitState:
    """Parse ``systemctl is-active`` (the exit status is not needed: the word is enough)."""
    word = text.strip().splitlines()[0].strip() if text.strip() else "unknown"
    return UnitState(state=word, active=word in ("active", "reloading"))
