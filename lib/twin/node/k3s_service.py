"""The k3s unit of a node (``k3s`` on servers, ``k3s-agent`` on agents).

k3s reads its config each time the unit starts (``systemctl start|restart``, boot); nothing
changes before. A start that fails (a config that does not parse, an unknown flannel
backend, UDP 8472 held by another VXLAN device) leaves the unit ``activating`` and systemd
retries it every ``RestartSec`` (5 s). While a server's k3s is down the node's hooks tell
the API server (see :class:`twin.node.component.NodesComponent`). The commands are in
:mod:`twin.node.cmd_service`.

Example:
    >>> await node.k3s.restart()  # doctest: +SKIP
    True
    >>> node.k3s.unit_state, node.k3s.running["flannel_backend"]  # doctest: +SKIP
    ('active', 'vxlan')
"""
from __future__ import annotations

import hashlib
import inspect
import logging
import math
import secrets
import time
from typing import TYPE_CHECKING, Any

from . import containerd, k3s_config
from .containerd import ContainerdConfigError
from .k3s_config import FLANNEL_BACKENDS, NETWORK_KEYS
from .kubeconfig import write_admin_kubeconfig
from .k3s_network import FLANNEL_VXLAN_PORT, start_flannel, sync_flannel_rules, sync_kube_router, sync_kubelet

if TYPE_CHECKING:
    from .model import NodeModel

log = logging.getLogger("twin.node")

# Cluster seconds (scaled by the clock): how long things take on a real node.
SERVER_RESTART_SECONDS = 5.0    # systemctl restart k3s until the unit reports ready
AGENT_RESTART_SECONDS = 3.0
RESYNC_SECONDS = 5.0            # flannel/kube-router/kube-proxy notice deleted rules
FAILED_START_RETRY_SECONDS = 5.0  # systemd RestartSec=5s of the k3s units


class K3sService:
    """The unit's state, what the running k3s runs with, and its journal.

    Attributes:
        unit: ``k3s`` or ``k3s-agent``.
        unit_state: ``active``, ``inactive``, ``activating`` or ``failed``.
        running: the settings of the running k3s (see :meth:`effective_settings`);
            ``{}`` while it is stopped.
        journal_lines: what ``journalctl -u UNIT`` shows.
    """

    def __init__(self, node: NodeModel) -> None:
        self.node = node
        self.unit = "k3s" if node.role == "server" else "k3s-agent"
        self.unit_state = "inactive"
        self.running: dict[str, Any] = {}
        self.journal_lines: list[str] = []
        self.pid = 1000 + secrets.randbelow(8000)
        # containerd's CNI (conf_dir, bin_dir) from the config.toml k3s wrote when it last
        # started. containerd outlives a stopped k3s (KillMode=process), not a reboot.
        self.cni_dirs: tuple[str, str] | None = None
        self._job = 0   # the unit's current systemd job: a start continues only while it is current

    @property
    def start_seconds(self) -> float:
        """Cluster seconds from ``systemctl start`` until the unit is ready."""
        return SERVER_RESTART_SECONDS if self.node.role == "server" else AGENT_RESTART_SECONDS

    def log(self, level: str, msg: str) -> None:
        """Append a k3s log line, in k3s's logrus format, to the unit's journal."""
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        day = time.strftime("%b %d %H:%M:%S", time.gmtime())
        self.journal_lines.append(f'{day} {self.node.name} {self.unit}[{self.pid}]: time="{stamp}" '
                                  f'level={level} msg="{msg}"')

    def is_active(self, name: str) -> bool:
        """Whether unit ``name`` (``k3s`` or ``k3s.service``) is this node's and active."""
        return name.removesuffix(".service") == self.unit and self.unit_state == "active"

    # ------------------------------------------------------------- settings
    def server(self) -> NodeModel | None:
        """The server this agent joins (from its config's ``server:``), else any server."""
        node = self.node
        if node.role == "server":
            return node
        url = str(k3s_config.read_config(node.files)[0].get("server", node.cluster.get("server_url", "")))
        servers = [n for n in node.peers.values() if n.role == "server"]
        for s in servers:
            if f"//{s.spec.ip}:" in url:
                return s
        return servers[0] if servers else None

    def effective_settings(self) -> dict[str, Any]:
        """What k3s would run with if its unit started now.

        On a server from its own config; on an agent the network options come from the
        server (its running settings, or its config when it is stopped), and the server
        options in the agent's own config are listed under ``ignored_keys``.
        """
        node = self.node
        cfg, error = k3s_config.read_config(node.files)
        ignored = k3s_config.unknown_keys(node.role, cfg)
        if node.role == "server":
            net = k3s_config.server_settings(cfg, node.cluster, node.name)
        else:
            server = self.server()
            if server is None:
                base = k3s_config.default_settings(node.cluster)
            elif server.running:
                base = dict(server.running)
            else:
                base = server.effective_settings()
            net = {k: base[k] for k in NETWORK_KEYS}
            net["source"] = server.name if server else "defaults"
        return k3s_config.node_settings(net, cfg, node.spec.ip, ignored, error)

    def cni_config(self) -> str | None:
        """The CNI config file the container runtime uses now, like containerd: the
        first ``*.conflist``/``*.conf`` (by name) in the conf dir of the ``config.toml``
        k3s wrote when it started (:mod:`twin.node.containerd`). None when k3s is
        stopped or the directory holds none ("cni plugin not initialized"). containerd
        keeps running (with its pods) when k3s stops; a reboot ends it."""
        d = self.cni_dirs[0] if self.cni_dirs else None
        files = self.node.files
        if not d or not files.is_dir(d):
            return None
        names = [n for n in files.listdir(d) if n.endswith((".conflist", ".conf", ".json"))]
        return f"{d}/{names[0]}" if names else None

    # ------------------------------------------------------------- starting
    def _fail(self, msg: str) -> str:
        self.log("fatal", msg)
        self.unit_state = "activating"
        return msg

    def start_now(self, emit: bool = True) -> str | None:
        """Start k3s now; returns an error message when it fails (the unit stays
        ``activating``; the caller schedules systemd's retries)."""
        node = self.node
        version = node.k3s_version
        self.pid = 1000 + secrets.randbelow(30000)
        self.log("info", f"Starting k3s {'' if node.role == 'server' else 'agent '}"
                         f"{version} ({hashlib.sha1(version.encode()).hexdigest()[:8]})")
        cfg, error = k3s_config.read_config(node.files)
        if error:
            return self._fail(error)
        for k in k3s_config.unknown_keys(node.role, cfg):
            self.log("warning", f"Unknown flag --{k} found in config.yaml, skipping")
        s = self.effective_settings()
        if s["flannel_backend"] not in FLANNEL_BACKENDS:
            # k3s compares the value exactly: "None" or "vxlan " are not backends.
            return self._fail(f"invalid flannel backend {s['flannel_backend']!r}: must be one of "
                              f"{', '.join(FLANNEL_BACKENDS)}")
        if s["flannel"] and s["flannel_backend"] == "vxlan":
            holder = node.links.vxlan_port_holder(FLANNEL_VXLAN_PORT, besides="flannel.1")
            if holder:
                return self._fail(f"flannel exited: failed to create VXLAN device flannel.1: address "
                                  f"already in use (UDP {FLANNEL_VXLAN_PORT} is held by {holder})")
        if node.role == "server":
            error = self._validate_join(cfg, s)
            if error:
                return self._fail(error)
        if node.role == "agent":
            self.log("info", f"Retrieved agent configuration from server {s['source']}: "
                             f"flannel-backend={s['flannel_backend']} "
                             f"disable-network-policy={str(not s['network_policy']).lower()} "
                             f"disable-kube-proxy={str(not s['kube_proxy']).lower()}")
        try:
            # k3s writes containerd's config (or renders config.toml.tmpl) and starts it:
            # the CNI folders containerd reads come from that file.
            s["cni_conf_dir"], s["cni_bin_dir"] = containerd.generate(node, bool(s["flannel"]))
            self.cni_dirs = (s["cni_conf_dir"], s["cni_bin_dir"])
        except ContainerdConfigError as e:
            return self._fail(f"failed to generate containerd config: {e}")
        if node.role == "server":
            write_admin_kubeconfig(node, s.get("write_kubeconfig_mode") or "")
        before_if = set(node.interfaces)
        sync_kubelet(node.iptables, node.ip6tables)
        if s["flannel"]:
            start_flannel(node, s)
        else:
            self.log("info", "Flannel is disabled (flannel-backend: none): no CNI is configured by k3s")
        if s["network_policy"]:
            sync_kube_router(node.iptables, node.ip6tables, s["service_cidr"])
            self.log("info", "Starting network policy controller")
        if s["kube_proxy"]:
            self.running = s   # kube-proxy reads the service CIDR from here
            self.sync_kube_proxy(full=True)
            self.log("info", "Running kube-proxy --cluster-cidr=" + s["cluster_cidr"])
        self.running = s
        self.unit_state = "active"
        if node.role == "server" and k3s_config.embedded_etcd(cfg) and not node.files.is_dir(k3s_config.ETCD_DIR):
            node.files.mkdir(k3s_config.ETCD_DIR, 0o700)   # its etcd member is initialised now
        self.log("info", f"k3s {'server' if node.role == 'server' else 'agent'} is up and running")
        if emit:
            self.notify_up()
            added = sorted(set(node.interfaces) - before_if)
            if added:
                node.emit("interfaces-changed", added=added, removed=[])
            node.emit("iptables-changed", family=4, tables=node.iptables.table_names())
            node.emit("k3s-started", unit=self.unit, settings=dict(s))
        return None

    def _validate_join(self, cfg: dict[str, Any], s: dict[str, Any]) -> str | None:
        """k3s's ``compareConfig`` (pkg/cluster/bootstrap.go): a server with a join URL
        whose etcd member is not initialised yet (``server/db/etcd`` absent: its first
        start, or its data was removed) fetches ``/v1-k3s/config`` from the server it
        joins and refuses a different critical value. An initialised member restarts
        without that comparison, so the servers may differ for a while."""
        url = str(cfg.get("server") or "")
        if not url or self.node.files.is_dir(k3s_config.ETCD_DIR):
            return None
        target = next((p for p in self.node.peers.values()
                       if p.role == "server" and p.name != self.node.name and f"//{p.spec.ip}:" in url), None)
        host = url.split("//")[-1].rstrip("/")
        if target is None or not target.up or target.unit_state != "active" or not target.running:
            return (f"failed to validate server configuration: Get \"https://{host}/v1-k3s/config\": "
                    f"dial tcp {host}: connect: connection refused")
        diff = k3s_config.critical_mismatch(s, target.running)
        if diff:
            self.log("debug", f"critical configuration differs from {target.name}'s: {', '.join(diff)}")
            return "failed to validate server configuration: critical configuration value mismatch"
        return None

    def kube_proxy_cidr(self) -> str:
        """The ``--cluster-cidr`` k3s runs its kube-proxy with (the running settings')."""
        return self.running.get("cluster_cidr") or self.node.cluster.get("cluster_cidr", "10.42.0.0/16")

    def sync_kube_proxy(self, full: bool) -> None:
        """Program the embedded kube-proxy's chains with the running cluster CIDR."""
        self.node.kube_proxy.sync(self.kube_proxy_cidr(), full)

    def resync(self) -> None:
        """What the running k3s re-creates when its rules were deleted under it."""
        node, s = self.node, self.running
        if not s or self.unit_state != "active":
            return
        before = node.iptables.save() + node.ip6tables.save()
        sync_kubelet(node.iptables, node.ip6tables)
        if s.get("flannel"):
            sync_flannel_rules(node.iptables, s["cluster_cidr"], node.spec.pod_cidr)
        if s.get("network_policy"):
            sync_kube_router(node.iptables, node.ip6tables, s["service_cidr"])
        if s.get("kube_proxy"):
            self.sync_kube_proxy(full=True)
        if node.iptables.save() + node.ip6tables.save() != before:
            node.emit("iptables-changed", family=4, tables=node.iptables.table_names())

    async def resync_later(self) -> None:
        """flannel, kube-router and kube-proxy notice deleted rules and put theirs back."""
        await self.node.clock.sleep(RESYNC_SECONDS)
        self.resync()

    # ------------------------------------------------------------- API server hooks
    def _call_hook(self, name: str, *args: Any) -> None:
        node = self.node
        hook = getattr(node, name)
        if node.role != "server" or hook is None:
            return
        try:
            res = hook(*args)
            if inspect.isawaitable(res):
                node.spawn(res)
        except Exception:
            log.exception("%s: %s hook failed", node.name, name)

    def notify_down(self, seconds: float) -> None:
        """Call the node's ``on_server_restart`` hook (servers only): k3s goes down for
        about ``seconds`` cluster seconds."""
        self._call_hook("on_server_restart", seconds)

    def notify_up(self) -> None:
        """Call the node's ``on_server_started`` hook (servers only): k3s is up."""
        self._call_hook("on_server_started")

    # ------------------------------------------------------------- stopping, systemctl
    def _new_job(self) -> int:
        """A new systemd job on the unit: it replaces any start still under way."""
        self._job += 1
        return self._job

    def stop_now(self) -> None:
        """The k3s processes end: interfaces, chains and files stay."""
        self._new_job()
        was = self.unit_state
        self.unit_state = "inactive"
        self.running = {}
        if was != "inactive":
            self.log("info", "Received SIGTERM, shutting down")
            self.node.emit("k3s-stopped", unit=self.unit)

    async def stop(self, expected_down: float = math.inf) -> None:
        """``systemctl stop``: processes end; interfaces, chains and files stay."""
        if self.unit_state != "inactive":
            self.notify_down(expected_down)
        self.stop_now()
        await self.node.clock.sleep(0.5)

    async def start(self) -> bool:
        """``systemctl start``: True once active; False if it keeps failing (retries run)
        or was replaced before it completed (a stop, a reboot, another start)."""
        if self.unit_state == "active":
            return True
        self.unit_state = "activating"
        job = self._new_job()
        await self.node.clock.sleep(self.start_seconds)
        if self.unit_state == "active":
            return True
        if job != self._job or not await self.wait_etcd_quorum(job):
            return False
        err = self.start_now()
        if err:
            self.node.spawn(self.retry_start())
            return False
        return True

    def etcd_quorum(self) -> tuple[int, int]:
        """(servers whose k3s runs or is starting, the quorum) of this server's embedded
        etcd; (1, 1) for a lone server or an agent."""
        node = self.node
        servers = [p for p in node.peers.values() if p.role == "server"]
        if node.role != "server" or len(servers) < 2:
            return 1, 1
        running = sum(1 for p in servers if p.up and p.k3s.unit_state in ("activating", "active"))
        return running, len(servers) // 2 + 1

    async def wait_etcd_quorum(self, job: int | None = None) -> bool:
        """A server of several (embedded etcd) starts its etcd member and waits for a quorum
        of members before its API and the systemd notification: the unit stays
        ``activating`` (k3s' unit sets TimeoutStartSec=0: ``systemctl start`` waits). False
        when the start was abandoned (stopped, node down, replaced by the job ``job``
        is no longer)."""
        logged = False
        while True:
            if self.unit_state != "activating" or not self.node.up or job not in (None, self._job):
                return False
            up, quorum = self.etcd_quorum()
            if up >= quorum:
                return True
            if not logged:
                self.log("info", f"Waiting for etcd quorum: {up} of the {quorum} members needed are running")
                logged = True
            await self.node.clock.sleep(1.0)

    async def restart(self) -> bool:
        """``systemctl restart``: stop, then start with the config as it is now."""
        await self.stop(SERVER_RESTART_SECONDS)
        return await self.start()

    async def retry_start(self) -> None:
        """systemd's Restart=always: keep trying every RestartSec while the unit is
        activating and no other job (a stop, a new start) replaced this one."""
        node, job = self.node, self._job
        while self.unit_state == "activating" and node.up:
            await node.clock.sleep(FAILED_START_RETRY_SECONDS)
            if self.unit_state != "activating" or not node.up or job != self._job:
                return
            if not self.start_now():
                return

    def status_text(self) -> str:
        """What ``systemctl status UNIT`` prints."""
        state = {"active": "active (running)", "inactive": "inactive (dead)",
                 "activating": "activating (auto-restart) (Result: exit-code)",
                 "failed": "failed (Result: exit-code)"}[self.unit_state]
        dot = "●" if self.unit_state == "active" else "○"
        kind = "server" if self.node.role == "server" else "agent"
        tail = "\n".join(self.journal_lines[-5:])
        return (f"{dot} {self.unit}.service - Lightweight Kubernetes\n"
                f"     Loaded: loaded (/etc/systemd/system/{self.unit}.service; enabled; vendor preset: enabled)\n"
                f"     Active: {state}\n       Docs: https://k3s.io\n"
                + (f"   Main PID: {self.pid} (k3s-{kind})\n" if self.unit_state == "active" else "")
                + f"\n{tail}\n")
