"""JupyterLab for stepping through the notebooks by hand (``runbook lab`` / ``make lab``).

What a person expects from it, and what this module makes sure of:

* **the URL printed is the one Jupyter serves.** A busy port is refused before anything
  starts (:func:`port_free`), Jupyter is told never to move to another port
  (``port_retries = 0``), and the URL is printed only once the server answers on it;
* **the token is not on the command line**, where ``ps`` would show it to every local
  user: it goes into a config file readable only by its owner (:func:`write_config`);
* the kernels talk to the server over Unix sockets (``ipc``), not unencrypted loopback
  TCP, as the runner's kernels do (:mod:`runbook.kernels`);
* the notebooks find the cluster and one shared run folder in ``RUNBOOK_PARAMS`` and
  ``RUNBOOK_RUN_DIR``, so the five phases of a session share one journal.

This module knows nothing of the twin; :func:`runbook.rehearse.lab` starts one and
calls :func:`serve`.

Example:
    >>> port_free(0)
    True
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from . import kernels

__all__ = ["port_free", "LabConfig", "write_config", "serve", "jupyter_binary", "PortBusy"]


class PortBusy(Exception):
    """The port asked for is taken; ``str()`` says what to do."""


def jupyter_binary() -> str | None:
    """The ``jupyter`` of this environment (None when the ``lab`` extra is not installed)."""
    return shutil.which("jupyter", path=str(Path(sys.executable).parent))


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when ``host:port`` can be bound now (port 0: the system picks one, always free)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


@dataclass
class LabConfig:
    """Where one JupyterLab session keeps its files (all in ``state_dir/lab``, 0700)."""

    config_file: Path
    runtime_dir: Path
    token: str
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/lab?token={self.token}"


def write_config(state_dir: Path, *, port: int, root_dir: Path, sockets: str | None = None) -> LabConfig:
    """A JupyterLab config file (0600) holding the token, the address and the kernels' transport.

    ``sockets``: the path prefix of the kernels' Unix sockets (default: a short private
    folder, :func:`runbook.kernels.socket_dir`). A socket path must stay under about 100
    bytes, which a prefix in a deep state folder would not."""
    folder = Path(state_dir) / "lab"
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    runtime = folder / "rt"
    runtime.mkdir(mode=0o700, exist_ok=True)
    token = secrets.token_urlsafe(24)
    config = {
        "IdentityProvider": {"token": token},
        "ServerApp": {"ip": "127.0.0.1", "port": port, "port_retries": 0, "open_browser": False,
                      "root_dir": str(root_dir), "allow_root": hasattr(os, "geteuid") and os.geteuid() == 0},
        "KernelManager": {"transport": "ipc",
                          "ip": sockets or os.path.join(kernels.socket_dir(), "lab")},
    }
    path = folder / "jupyter_lab_config.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(config, f, indent=1)
    return LabConfig(path, runtime, token, port)


def _answers(cfg: LabConfig) -> bool:
    req = urllib.request.Request(f"http://127.0.0.1:{cfg.port}/api/status",
                                 headers={"Authorization": f"token {cfg.token}"})
    try:
        with urllib.request.urlopen(req, timeout=2) as r:   # noqa: S310 - loopback only
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


def serve(state_dir: Path, *, port: int, root_dir: Path, env: dict[str, str],
          out: Callable[[str], None] = print, ready_timeout: float = 120.0) -> int:
    """Run JupyterLab in the foreground until it exits or Ctrl-C; returns its exit code.

    Raises:
        PortBusy: ``port`` is taken (nothing was started).
    """
    if not port_free(port):
        raise PortBusy(f"port {port} on 127.0.0.1 is already in use (another JupyterLab?): choose a "
                       f"free one, e.g. `runbook lab --port {port + 1}` or `make lab LAB_PORT={port + 1}`")
    jupyter = jupyter_binary()
    if jupyter is None:
        raise FileNotFoundError("JupyterLab is not installed: run `make lab` (installs the [lab] extra)")
    cfg = write_config(state_dir, port=port, root_dir=root_dir)
    child_env = dict(env, JUPYTER_RUNTIME_DIR=str(cfg.runtime_dir))
    child_env.pop("JUPYTER_TOKEN", None)
    # the token is in the config file (0600), never in argv: `ps` shows only the file's path
    proc = subprocess.Popen([jupyter, "lab", f"--config={cfg.config_file}"], env=child_env,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + ready_timeout
        while not _answers(cfg):
            if proc.poll() is not None:
                out(f"JupyterLab exited ({proc.returncode}) before it served on port {port}: see its log above")
                return proc.returncode or 1
            if time.monotonic() > deadline:
                out(f"JupyterLab did not answer on port {port} within {ready_timeout:.0f}s: stopping it")
                return 1
            time.sleep(0.3)
        out(f"JupyterLab is serving: {cfg.url}")
        out("(Ctrl-C stops JupyterLab and the twin)")
        return proc.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
