"""Defaults the API server fills on create: Service IPs and ports, apps/v1 strategies."""
from __future__ import annotations

from typing import Any

from ..store import ResourceType


class CreateDefaults:
    """The :class:`APIServer`'s create-time defaults (uses its ``rt``).

    ``allocate_service`` is public: controllers that create Services call it through
    ``rt.component("apiserver")``, as their POST would.
    """

    rt: Any

    def apply_defaults(self, t: ResourceType, obj: dict) -> None:
        """Defaults a real API server fills on create: Service IPs/ports, apps/v1 strategies."""
        if (t.group, t.plural) == ("", "services"):
            self.allocate_service(obj)
        elif t.group == "apps":
            from ..controllers.workloads import workload_defaults

            workload_defaults(t.kind, obj)

    def allocate_service(self, svc: dict) -> None:
        """Allocate a cluster IP (k3s' 10.43.0.0/16) and node ports, as the real service
        registry does on create; values the client chose are kept."""
        spec = svc.setdefault("spec", {})
        stype = spec.setdefault("type", "ClusterIP")
        if stype == "ExternalName":
            return
        t = self.rt.store.lookup("", "v1", "services")
        used_ips: set[str] = set()
        used_ports: set[int] = set()
        for o in self.rt.store.iter_objects(t):
            ospec = o.get("spec") or {}
            used_ips.add(ospec.get("clusterIP", ""))
            used_ports.update(int(p.get("nodePort") or 0) for p in ospec.get("ports") or [])
        if not spec.get("clusterIP"):
            n = 10 + len(used_ips)
            while True:
                ip = f"10.43.{(n >> 8) & 0xFF}.{n & 0xFF or 1}"
                if ip not in used_ips and ip != "10.43.0.1":
                    break
                n += 7
            spec["clusterIP"] = ip
        if spec["clusterIP"] != "None":
            spec.setdefault("clusterIPs", [spec["clusterIP"]])
        spec.setdefault("ipFamilies", ["IPv4"])
        spec.setdefault("ipFamilyPolicy", "SingleStack")
        spec.setdefault("sessionAffinity", "None")
        for port in spec.get("ports") or []:
            port.setdefault("protocol", "TCP")
            port.setdefault("targetPort", port.get("port"))
            if stype in ("NodePort", "LoadBalancer") and not port.get("nodePort"):
                np = 30000 + (len(used_ports) * 37) % 2768
                while np in used_ports:
                    np = 30000 + (np - 30000 + 1) % 2768
                port["nodePort"] = np
                used_ports.add(np)
