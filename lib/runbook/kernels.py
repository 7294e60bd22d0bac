"""The Jupyter kernels the runner starts: over Unix sockets, not loopback TCP.

papermill starts one kernel per phase and talks to it over ZeroMQ. By default that is
TCP on 127.0.0.1 without encryption, and ipykernel warns about it at every start ("Kernel
is running over TCP without encryption"): any local user could connect to the ports. A
kernel on the ``ipc`` transport uses Unix sockets instead, in a folder only this user
can open, and the warning (rightly) goes away.

Unix socket paths are limited to about 100 bytes, and the default place (next to the
connection file, in the Jupyter runtime folder) is easily longer than that (a deep
project folder, a test's temporary folder); the sockets therefore live in one short
private folder per process (``/tmp/p22k-…``), removed at exit. Kernels sharing the
folder do not collide: each socket's name ends with a port number that is checked to
be unused. ``runbook lab`` gives JupyterLab's kernels the same kind of folder.

Example:
    >>> import papermill as pm                                     # doctest: +SKIP
    >>> pm.execute_notebook("in.ipynb", "out.ipynb",
    ...                     kernel_manager_class=LocalKernelManager)  # doctest: +SKIP
"""
from __future__ import annotations

import asyncio
import atexit
import json
import os
import re
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from jupyter_client import AsyncKernelManager

__all__ = ["LocalKernelManager", "PrestartedKernelManager", "WarmKernel", "modules_imported", "shutdown",
           "socket_dir"]

_SOCKETS: list[str] = []


def socket_dir() -> str:
    """This process's private folder for kernel sockets (0700, under the system temp)."""
    if not _SOCKETS:
        path = tempfile.mkdtemp(prefix="p22k-")
        os.chmod(path, 0o700)
        _SOCKETS.append(path)
        atexit.register(shutil.rmtree, path, True)
    return _SOCKETS[0]


class LocalKernelManager(AsyncKernelManager):
    """An :class:`AsyncKernelManager` whose kernels listen on Unix sockets (``ipc``)."""

    def __init__(self, **kw: Any) -> None:
        kw.setdefault("transport", "ipc")
        super().__init__(**kw)
        if self.transport == "ipc":
            self.ip = os.path.join(socket_dir(), f"k{id(self):x}")


class PrestartedKernelManager(LocalKernelManager):
    """A :class:`LocalKernelManager` that remembers the clients made from it, so whoever
    started its kernel can close them too (papermill's client does not close what it
    did not start)."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.clients_made: list[Any] = []

    def client(self, **kw: Any) -> Any:
        kc = super().client(**kw)
        self.clients_made.append(kc)
        return kc


#: the import lines of a notebook's code cells that a warm kernel runs ahead
_IMPORT = re.compile(r"^(?:from\s+([\w.]+)\s+import\s+([\w\s,]+?)|import\s+([\w.]+)(?:\s+as\s+\w+)?)\s*(?:#.*)?$")


def modules_imported(notebook: Path) -> list[str]:
    """The modules a notebook's code cells import at top level, in order: ``from runbook
    import a, b`` gives ``runbook.a`` and ``runbook.b`` (a name that is not a module is
    skipped by the warm-up), ``import pandas as pd`` gives ``pandas``.

    >>> import json, tempfile
    >>> nb = {"cells": [{"cell_type": "code", "source": "from runbook import session, verify\\nx = 1"},
    ...                 {"cell_type": "markdown", "source": "import nothing"},
    ...                 {"cell_type": "code", "source": ["import pandas as pd\\n", "  import indented"]}]}
    >>> with tempfile.NamedTemporaryFile("w", suffix=".ipynb", delete=False) as f:
    ...     json.dump(nb, f)
    >>> modules_imported(Path(f.name))
    ['runbook', 'runbook.session', 'runbook.verify', 'pandas']
    """
    mods: list[str] = []
    for cell in json.loads(notebook.read_text()).get("cells", []):
        if cell.get("cell_type") != "code":
            continue
        src = cell.get("source", "")
        for line in ("".join(src) if isinstance(src, list) else src).splitlines():
            m = _IMPORT.match(line)
            if not m:
                continue
            names = ([m.group(1)] + [f"{m.group(1)}.{n.strip()}" for n in m.group(2).split(",") if n.strip()]
                     if m.group(1) else [m.group(3)])
            mods += [n for n in names if n not in mods]
    return mods


# Runs in the warm kernel, silently (no history, no execution count, no output): it
# imports modules into sys.modules and binds no name in the notebook's namespace, so a
# cell that used a name before its own import line would still fail as it should.
_WARM_UP = """\
def __p22_warm_up(mods):
    import importlib
    for m in mods:
        try:
            importlib.import_module(m)
        except Exception:
            pass
    try:
        importlib.import_module("runbook.lean_imports").first_use()
    except Exception:
        pass
__p22_warm_up({mods!r})
del __p22_warm_up
"""


class WarmKernel:
    """A phase's kernel started ahead, in a background thread, with its notebook's imports
    done: the runner starts the next phase's kernel while the current phase runs, so a
    phase begins with a ready kernel (kernel start and imports cost 1-3 s a phase on this
    machine, and overlap the current phase's waits instead).

    The kernel is the same as papermill would start (same manager class, folder, history
    setting); it has run nothing but imports. If it cannot be started, :meth:`take` says
    None and papermill starts one as usual.

    Example:
        >>> w = WarmKernel(Path("notebooks/04-verify.ipynb")).start()     # doctest: +SKIP
        >>> km = w.take()            # None when the warm-up failed           # doctest: +SKIP
        >>> ...                      # pm.execute_notebook(..., km=km)        # doctest: +SKIP
        >>> shutdown(km)                                                      # doctest: +SKIP
    """

    def __init__(self, notebook: Path, *, startup_timeout: float = 60.0) -> None:
        self.notebook = Path(notebook).resolve()
        self.startup_timeout = startup_timeout
        self.error: str | None = None
        self.seconds = 0.0
        self._km: PrestartedKernelManager | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> "WarmKernel":
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"warm-kernel-{self.notebook.stem}")
        self._thread.start()
        return self

    def _run(self) -> None:
        t0 = time.monotonic()
        try:
            self._km = asyncio.run(self._start())
        except Exception as e:  # noqa: BLE001 - papermill starts a kernel itself then
            self.error = f"{type(e).__name__}: {e}"
        self.seconds = time.monotonic() - t0

    async def _start(self) -> PrestartedKernelManager:
        km = PrestartedKernelManager(kernel_name="python3")
        # as nbclient starts papermill's kernels: the notebook's folder, history in memory
        await km.start_kernel(cwd=str(self.notebook.parent),
                              extra_arguments=["--HistoryManager.hist_file=:memory:"])
        kc = km.client()
        kc.start_channels()
        try:
            await kc.wait_for_ready(timeout=self.startup_timeout)
            msg_id = kc.execute(_WARM_UP.format(mods=modules_imported(self.notebook)),
                                silent=True, store_history=False)
            deadline = time.monotonic() + self.startup_timeout
            while True:
                reply = await kc.get_shell_msg(timeout=max(0.1, deadline - time.monotonic()))
                if reply.get("parent_header", {}).get("msg_id") == msg_id:
                    break
        except BaseException:
            kc.stop_channels()
            await km.shutdown_kernel(now=True)
            raise
        kc.stop_channels()
        km.clients_made.clear()
        return km

    def take(self) -> PrestartedKernelManager | None:
        """The warm kernel's manager (waits for the warm-up), or None if it failed or died."""
        if self._thread is not None:
            self._thread.join(self.startup_timeout * 2 + 10)
        km, self._km = self._km, None
        if km is None:
            return None
        if not asyncio.run(km.is_alive()):
            self.error = "the warm kernel died before its phase"
            shutdown(km)
            return None
        return km

    def discard(self) -> None:
        """Stop the warm kernel if nobody took it."""
        shutdown(self.take())


def shutdown(km: Any, *, wait: bool = True) -> None:
    """Close a prestarted kernel's clients and kill it at once (papermill's "immediate"
    shutdown: every output is in by then). None is ignored.

    With ``wait=False`` the kill runs in a background thread (the next phase need not
    wait for it); :func:`join_shutdowns` waits for those, and runs at exit anyway.
    """
    if km is None:
        return
    for kc in getattr(km, "clients_made", []):
        try:
            kc.stop_channels()
        except Exception:  # noqa: BLE001 - already closed
            pass
    if wait:
        asyncio.run(km.shutdown_kernel(now=True))
        return
    th = threading.Thread(target=lambda: asyncio.run(km.shutdown_kernel(now=True)), daemon=True,
                          name="kernel-shutdown")
    with _SHUTDOWNS_LOCK:
        if not _SHUTDOWNS:
            atexit.register(join_shutdowns)
        _SHUTDOWNS.append(th)
    th.start()


_SHUTDOWNS: list[threading.Thread] = []
_SHUTDOWNS_LOCK = threading.Lock()


def join_shutdowns(timeout: float = 30.0) -> None:
    """Wait for the kernels being stopped in the background (:func:`shutdown`)."""
    with _SHUTDOWNS_LOCK:
        pending = list(_SHUTDOWNS)
        _SHUTDOWNS.clear()
    for th in pending:
        th.join(timeout)
