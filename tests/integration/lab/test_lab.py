"""``runbook lab`` as a person starts it: the URL it prints is the one JupyterLab serves, a
busy port is refused, the token never shows in ``ps``, and kernels run on Unix sockets.

JupyterLab is the ``lab`` extra; ``make venv`` (and so ``make test``) installs it, so
these tests need nothing else and do not skip.
"""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from runbook import lab

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def _env(tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNBOOK_", "JUPYTER", "KUBE"))}
    env.update(HOME=str(home), JUPYTER_CONFIG_DIR=str(home / ".jupyter"),
               JUPYTER_DATA_DIR=str(home / ".local/share/jupyter"), PYTHONUNBUFFERED="1")
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cmdlines() -> list[str]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                out.append((d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
            except OSError:
                continue
    return out


def test_jupyterlab_is_installed_by_make_venv() -> None:
    assert lab.jupyter_binary(), "JupyterLab missing: `make venv` installs the [lab] extra"


def test_a_busy_port_is_refused_before_a_twin_or_jupyter_starts(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        p = subprocess.run([sys.executable, "-m", "runbook.cli", "lab", "--state-dir", str(tmp_path / "st"),
                            "--port", str(port)], env=_env(tmp_path), capture_output=True, text=True,
                           timeout=120)
    assert p.returncode == 2, p.stdout + p.stderr
    assert f"port {port} on 127.0.0.1 is already in use" in p.stderr
    assert f"--port {port + 1}" in p.stderr and "LAB_PORT" in p.stderr
    assert "serving" not in p.stdout and not (tmp_path / "st" / "params.yaml").exists()


def test_the_printed_url_is_served_the_token_is_not_in_ps_and_kernels_use_unix_sockets(tmp_path: Path) -> None:
    from jupyter_client import BlockingKernelClient

    port = _free_port()
    state = tmp_path / "st"
    proc = subprocess.Popen([sys.executable, "-m", "runbook.cli", "lab", "--state-dir", str(state),
                             "--port", str(port)], env=_env(tmp_path), stdout=subprocess.PIPE,
                            stderr=open(tmp_path / "lab.log", "w"), text=True, start_new_session=True)
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 180
        url = None
        while url is None and time.monotonic() < deadline and proc.poll() is None:
            line = proc.stdout.readline()
            lines.append(line)
            m = re.search(r"JupyterLab is serving: (\S+)", line)
            url = m.group(1) if m else None
        assert url, "".join(lines)
        m = re.fullmatch(rf"http://127\.0\.0\.1:{port}/lab\?token=([\w-]+)", url)
        assert m, url
        token = m.group(1)
        try:
            with urllib.request.urlopen(url, timeout=30) as r:              # the URL as printed
                assert r.status == 200
        except urllib.error.HTTPError as e:
            pytest.fail(f"{url} answered {e.code}; the lab's log ends:\n"
                        + (tmp_path / "lab.log").read_text()[-3000:])
        with pytest.raises(urllib.error.HTTPError) as denied:              # no token, no entry
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/sessions", timeout=10)
        assert denied.value.code == 403
        # the token is in a private config file, in no process's command line
        assert not [c for c in _cmdlines() if token in c]
        cfg = state / "lab" / "jupyter_lab_config.json"
        assert cfg.stat().st_mode & 0o777 == 0o600 and token in cfg.read_text()
        assert any(f"--config={cfg}" in c for c in _cmdlines())
        # a kernel started through the server answers, over ipc
        req = urllib.request.Request(f"http://127.0.0.1:{port}/api/kernels", data=b"{}", method="POST",
                                     headers={"Authorization": f"token {token}"})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                kernel_id = json.loads(r.read())["id"]
        except urllib.error.HTTPError as e:
            pytest.fail(f"starting a kernel answered {e.code}; the lab's log ends:\n"
                        + (tmp_path / "lab.log").read_text()[-3000:])
        conn = next((state / "lab" / "rt").glob(f"kernel-{kernel_id}.json"))
        info = json.loads(conn.read_text())
        assert info["transport"] == "ipc" and len(info["ip"]) < 60     # a short socket path, whatever the state folder
        kc = BlockingKernelClient(connection_file=str(conn))
        kc.load_connection_file()
        kc.start_channels()
        try:
            kc.wait_for_ready(timeout=60)
            reply = kc.execute_interactive("import os; print(os.environ['RUNBOOK_PARAMS'])", timeout=60)
            assert reply["content"]["status"] == "ok"
        finally:
            kc.stop_channels()
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    # Ctrl-C stopped JupyterLab too: nothing answers on the port any more
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
