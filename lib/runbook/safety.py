"""Safety guards shared by every transport module.

``require_loopback`` is called by the cluster, nodes and checks modules before they
open any connection. When the target kind is ``twin`` every address must be loopback
(127.0.0.0/8 or ::1, or the name ``localhost``); a twin params file that points anywhere
else is refused here, in the library, not only in tests.

Example:
    >>> require_loopback("127.0.0.1", kind="twin", what="API server")
    >>> require_loopback("10.0.0.2", kind="twin", what="SSH set-hog")
    Traceback (most recent call last):
    ...
    runbook.errors.LoopbackViolation: refusing to connect to 10.0.0.2 (SSH set-hog): ...
"""
from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from .errors import LoopbackViolation


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost`` (no DNS lookup is made)."""
    h = host.strip().strip("[]")
    if h.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def require_loopback(host: str, *, kind: str, what: str) -> None:
    """Refuse a non-loopback ``host`` when the target ``kind`` is ``twin``.

    Args:
        host: an IP address or host name (no port).
        kind: the target kind from the params (``twin`` or ``real``).
        what: what is being contacted, for the message.

    Raises:
        LoopbackViolation: kind is twin and host is not loopback.
    """
    if kind != "twin":
        return
    if not is_loopback(host):
        raise LoopbackViolation(
            f"refusing to connect to {host} ({what}): the target is a twin and a twin "
            "lives on loopback only",
            hint="a twin params file must point every endpoint at 127.0.0.1; "
                 "use the params.yaml that `runbook twin up` writes")


def require_loopback_url(url: str, *, kind: str, what: str) -> None:
    """Same as :func:`require_loopback` for a URL."""
    host = urlsplit(url).hostname or ""
    require_loopback(host, kind=kind, what=what)
