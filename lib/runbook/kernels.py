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

import atexit
import os
import shutil
import tempfile
from typing import Any

from jupyter_client import AsyncKernelManager

__all__ = ["LocalKernelManager", "socket_dir"]

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
