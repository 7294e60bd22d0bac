"""Harness: a twin made of the nodes and SSH components only, its loop in a background thread.

(A module with a unique name, so tests can import it whatever other conftest.py exist. The
cluster is the one of the unit tests, from ``tests/unit/twin_nodes/twin_nodes_cases.py``.)
"""
from __future__ import annotations

import asyncio
import copy
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import paramiko

from twin.clock import Clock
from twin.faults import Faults
from twin.node import NodesComponent
from twin.runtime import Runtime
from twin.ssh import SSHServers

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "unit" / "twin_nodes"))
from twin_nodes_cases import CLUSTER, SPECS  # noqa: E402


class NodesTwin:
    """Runtime with NodesComponent + SSHServers on a loop in a daemon thread."""

    def __init__(self, state_dir: Path) -> None:
        # server-1 and agent-1 (a twin of its own may change its specs).
        fixture = SimpleNamespace(cluster=dict(CLUSTER), nodes=copy.deepcopy(SPECS[:2]))
        self.rt = Runtime(state_dir=state_dir, clock=Clock(speed=0.01), faults=Faults(),
                          fixture=fixture)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.call(self.rt.start_all([NodesComponent(), SSHServers()]))
        self.ssh: SSHServers = self.rt.component("ssh")

    def call(self, coro, timeout: float = 30):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def connect(self, node: str, **kw) -> paramiko.SSHClient:
        """A paramiko client as the runbook builds it: known_hosts + RejectPolicy."""
        c = paramiko.SSHClient()
        c.load_host_keys(str(self.ssh.known_hosts))
        c.set_missing_host_key_policy(paramiko.RejectPolicy())
        args = dict(username="ubuntu", key_filename=str(self.ssh.client_key),
                    look_for_keys=False, allow_agent=False, timeout=10, banner_timeout=10,
                    auth_timeout=10)
        args.update(kw)
        c.connect("127.0.0.1", port=self.rt.endpoints["ssh"][node], **args)
        return c

    def close(self) -> None:
        self.call(self.rt.stop_all())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def run_cmd(client: paramiko.SSHClient, command: str, stdin: bytes | None = None,
            timeout: float = 20) -> tuple[int, bytes, bytes]:
    """exec_command with optional stdin (closed after writing), as the runbook does."""
    i, o, e = client.exec_command(command, timeout=timeout)
    if stdin is not None:
        i.write(stdin)
        i.channel.shutdown_write()
    out, err = o.read(), e.read()
    return o.channel.recv_exit_status(), out, err
