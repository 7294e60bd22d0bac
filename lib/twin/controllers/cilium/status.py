"""What ``cilium status`` would say about one node's agent: :class:`AgentStatus`."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from .config import K8S_SERVICE, container_env


@dataclass
class AgentStatus:
    """What the Cilium model knows about one node's agent (for tests and checks).

    Attributes:
        node: node name.
        pod: the agent pod's name, None when there is none.
        ready: the agent is Ready (for the current boot of the node).
        reason: why it is not Ready (None when Ready or without a pod).
        waiting: the container's waiting reason (CrashLoopBackOff, ImagePullBackOff ...).
        restarts: the cilium-agent container's restartCount.
        kpr_active: kube-proxy replacement runs (Ready agent and the config asks for it).
        tunnel_port: the VXLAN/Geneve port in use (None in native routing).
        api: the API server address the agent uses.
    """

    node: str
    pod: str | None
    ready: bool
    reason: str | None
    waiting: str | None
    restarts: int
    kpr_active: bool
    tunnel_port: int | None
    api: str | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class AgentStatusFacts:
    """Part of :class:`~.model.CiliumModel`: the status facts of an agent."""

    rt: Any

    def agent_status(self, node: str) -> AgentStatus:
        """Facts about the agent of ``node`` (see :class:`AgentStatus`)."""
        cfg = self.config()
        pod = self._agent_pod(node)
        ready = self.agent_ready(node)
        reason = waiting = api = None
        restarts = 0
        if pod is not None:
            for cs in (pod.get("status") or {}).get("containerStatuses") or ():
                if cs.get("name") == "cilium-agent":
                    restarts = int(cs.get("restartCount") or 0)
                    waiting = ((cs.get("state") or {}).get("waiting") or {}).get("reason")
            nm = self.rt.nodes.get(node)
            host = container_env(pod, "cilium-agent", "KUBERNETES_SERVICE_HOST", self._configmap)
            port = container_env(pod, "cilium-agent", "KUBERNETES_SERVICE_PORT", self._configmap)
            api = f"{host}:{port}" if host else f"{K8S_SERVICE[0]}:{K8S_SERVICE[1]}"
            if not ready and nm is not None:
                reason = self._problem(pod, nm, cfg, "cilium-agent", agent=True) or \
                    "agent starting (readiness probe not passed yet)"
        return AgentStatus(node=node, pod=pod["metadata"]["name"] if pod else None, ready=ready,
                           reason=reason, waiting=waiting, restarts=restarts,
                           kpr_active=ready and cfg.kpr,
                           tunnel_port=cfg.tunnel_port if cfg.tunnel else None, api=api)
