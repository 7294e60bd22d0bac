"""The commands that run inside a pod's container (``kubectl exec``), as pure handlers.

Every handler has one signature, fixed for the team so that others can add modules::

    def handler(rt, pod: dict, container: str, argv: list[str], stdin: bytes) -> tuple[int, bytes, bytes]

returning ``(exit code, stdout, stderr)``. A module holding handlers exposes them in a
module-level dict ``COMMANDS`` (name -> handler); this package collects the dicts of its
modules into :data:`COMMANDS`, in the order below (a later module may override a name).

The runtime's rules, as containerd's runc applies them:

- ``argv[0]`` is looked up by its base name (``/usr/bin/cilium-dbg`` is ``cilium-dbg``);
  an unknown command fails to start with runc's message and exit code 127
  (:func:`not_found`), as a missing binary does in a real container.
- A handler may refuse a command its image would not have (``cilium-dbg`` outside a
  Cilium agent container) with the same :func:`not_found`.
- There is no shell: ``sh -c`` runs one simple command line and refuses pipes,
  redirections and variables (:mod:`.shell`).
- An image has only the programs its base ships (:mod:`.image_tools`): nothing in a
  distroless or scratch image (CoreDNS, Hubble Relay, the Cilium operator), busybox's
  applets in busybox (``nslookup`` and ``wget``, no ``curl``).

Example:
    >>> rc, out, err = run(None, {"metadata": {"name": "web-0"}, "spec": {}}, "main",
    ...                    ["echo", "hello"], b"")
    >>> (rc, out)
    (0, b'hello\\n')
"""
from __future__ import annotations

import importlib
from typing import Any, Callable

from . import image_tools

Handler = Callable[[Any, dict, str, list, bytes], "tuple[int, bytes, bytes]"]

#: the modules whose COMMANDS are collected (package-relative or absolute names)
MODULES = ["twin.podexec.shell", "twin.podexec.cilium_dbg", "twin.podexec.net"]


def not_found(name: str) -> tuple[int, bytes, bytes]:
    """What runc answers for a command that is not in the image."""
    return 127, b"", (f"OCI runtime exec failed: exec failed: unable to start container "
                      f'process: exec: "{name}": executable file not found in $PATH: '
                      "unknown\r\n").encode()


def _image(pod: dict, container: str) -> str:
    for c in (pod.get("spec") or {}).get("containers") or ():
        if c.get("name") == container:
            return str(c.get("image") or "")
    return ""


def _collect() -> dict[str, Handler]:
    commands: dict[str, Handler] = {}
    for name in MODULES:
        commands.update(getattr(importlib.import_module(name), "COMMANDS", {}))
    return commands


COMMANDS: dict[str, Handler] = _collect()


def run(rt: Any, pod: dict, container: str, argv: list[str], stdin: bytes = b"") -> tuple[int, bytes, bytes]:
    """Run ``argv`` in ``container`` of ``pod``: ``(exit code, stdout, stderr)``."""
    if not argv:
        return 126, b"", b"OCI runtime exec failed: exec failed: unable to start container process: exec: no command\r\n"
    name = argv[0].rsplit("/", 1)[-1]
    handler = COMMANDS.get(name)
    if handler is None or image_tools.missing(_image(pod, container), name):
        return not_found(argv[0])
    return handler(rt, pod, container, list(argv), stdin)


__all__ = ["COMMANDS", "Handler", "MODULES", "not_found", "run"]
