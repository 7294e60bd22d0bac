"""The twin's ingress endpoint: HTTPS on loopback, answering like ingress-nginx would.

It stands in for the cluster's ingress address (``cluster.ingress_ip`` of the fixture,
10.0.0.200 on minicloud, which is DATA: nothing connects to it). A client connects to
``rt.endpoints["ingress"]`` (``https://127.0.0.1:PORT``) and names the site with SNI and
the ``Host`` header, as ``curl --resolve HOST:443:127.0.0.1`` does. The serving
certificate comes from the twin's CA (``rt.pki``) and covers ``*.<ingress domain>``,
every Ingress host known at start and loopback; a host that appears later gets its
own certificate on first use (SNI callback).

Each request is answered from the store and the network model:

* the connection is dropped before TLS when the ingress IP is not announced: no
  Service holds it in its ``status.loadBalancer``, or no MetalLB speaker pod
  (``metallb-system``, ``app.kubernetes.io/component=speaker``) is Ready (on a real
  network the client would time out). Only checked when the fixture names an ingress IP;
* ``404`` when no Ingress (class ``nginx`` or none) has a rule for the host (nginx's
  default backend);
* ``503`` when no ingress-nginx controller pod (namespace ``ingress-nginx``, label
  ``app.kubernetes.io/component=controller`` or a name starting with
  ``ingress-nginx-controller``) is Ready and reachable by the CNI that runs;
* ``502`` when the controller is fine but no pod selected by the backend Service is
  Ready and reachable from it (the network model's ``reach(controller, pod IP, target
  port)``: a blocked tunnel between their nodes counts);
* ``200`` otherwise, with a small HTML page naming the backend service and pod.

Every answer carries ``X-Twin-Reason`` (why), and 200s ``X-Twin-Backend-Pod``.

Like ingress-nginx's status updater (``--publish-service``), the component also keeps
each nginx Ingress's ``status.loadBalancer`` equal to the addresses of the controller's
LoadBalancer Service in ``ingress-nginx``, while a controller pod is Ready and reachable.
"Reachable" is ``rt.component("network").pod_reachable(pod)`` when the twin runs a
network model, else "Ready".
"""
from __future__ import annotations

import asyncio
import html
import itertools
import logging
import ssl
from dataclasses import dataclass, field
from typing import Any

from .controllers.addons.common import find_type as _rtype, meta as _meta, pod_reachable
from .controllers.addons.metallb import lb_ips
from .selectors import from_label_selector
from .ticker import TaskSet

log = logging.getLogger("twin.ingress")

CONTROLLER_NAMESPACE = "ingress-nginx"
SPEAKER_NAMESPACE = "metallb-system"
INGRESS_CLASS = "nginx"
MAX_HEADER = 64 * 1024

REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Not Allowed",
           502: "Bad Gateway", 503: "Service Temporarily Unavailable"}


@dataclass
class Answer:
    """What the endpoint answers for one request."""

    status: int
    reason: str                      # why (also in the X-Twin-Reason header)
    ingress: str | None = None       # namespace/name of the Ingress
    service: str | None = None       # namespace/name:port of the backend Service
    pod: str | None = None           # namespace/name of the backend pod
    pod_ip: str | None = None
    controller: str | None = None    # the ingress-nginx controller pod
    headers: dict[str, str] = field(default_factory=dict)

    def body(self, host: str) -> bytes:
        if self.status == 200:
            text = (f"<!doctype html><html><head><title>{html.escape(host)}</title></head><body>"
                    f"<h1>{html.escape(host)}</h1>"
                    f"<p>Ingress {html.escape(self.ingress or '')} &rarr; service "
                    f"{html.escape(self.service or '')} &rarr; pod {html.escape(self.pod or '')} "
                    f"({html.escape(self.pod_ip or '')})</p>"
                    f"<p>served by ingress-nginx controller {html.escape(self.controller or '')}</p>"
                    "</body></html>\n")
        else:
            title = f"{self.status} {REASONS.get(self.status, '')}"
            text = (f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
                    f"<center><h1>{title}</h1></center>\r\n<hr><center>nginx</center>\r\n"
                    f"<!-- twin: {html.escape(self.reason)} -->\r\n</body>\r\n</html>\r\n")
        return text.encode()


def _host_matches(rule_host: str | None, host: str) -> bool:
    if not rule_host:
        return False
    if rule_host.startswith("*."):
        suffix = rule_host[1:]
        return host.endswith(suffix) and "." not in host[: -len(suffix)]
    return rule_host.lower() == host.lower()


def _path_matches(path_type: str, rule_path: str, path: str) -> bool:
    rule_path = rule_path or "/"
    if path_type == "Exact":
        return path == rule_path
    if rule_path == "/":
        return True
    rp = rule_path.rstrip("/")
    return path == rp or path.startswith(rp + "/")


def pick_backend(ingress: dict, host: str, path: str) -> dict | None:
    """The backend (``{"service": {...}}``) for ``host`` + ``path`` in one Ingress:
    the longest matching path of a rule for the host, else the default backend."""
    best: tuple[int, dict] | None = None
    for rule in (ingress.get("spec") or {}).get("rules") or ():
        if not _host_matches(rule.get("host"), host):
            continue
        for p in ((rule.get("http") or {}).get("paths") or ()):
            rp = p.get("path") or "/"
            if _path_matches(p.get("pathType") or "Prefix", rp, path):
                score = len(rp) + (1000 if (p.get("pathType") == "Exact") else 0)
                if best is None or score > best[0]:
                    best = (score, p.get("backend") or {})
    if best is not None:
        return best[1]
    return None


class _Gate(asyncio.Protocol):
    """The accepting protocol: hands each connection to TLS (or drops it) at once."""

    def __init__(self, endpoint: "IngressEndpoint") -> None:
        self.endpoint = endpoint

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.endpoint._accepted(transport)  # type: ignore[arg-type]


def _header_safe(text: str) -> str:
    return " ".join(text.encode("ascii", "replace").decode().split())[:400]


class IngressEndpoint:
    """Runtime component ``"ingress"``: the HTTPS endpoint (see the module docstring)."""

    name = "ingress"

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self.rt: Any = None
        self._server: asyncio.AbstractServer | None = None
        self._ctx: ssl.SSLContext | None = None
        self._names: set[str] = set()
        self._extra_ctx: dict[str, ssl.SSLContext] = {}
        self._rr = itertools.count()
        self._conns = TaskSet("ingress-connections")
        self.requests = 0
        self.dropped = 0
        self.status_writes = 0
        self._unsubscribe: Any = None
        self._status_task: asyncio.Task | None = None
        self._status_due = False

    # -- lifecycle --------------------------------------------------------------------
    async def start(self, rt: Any) -> None:
        from .pki import PKI
        self.rt = rt
        if rt.pki is None:
            rt.pki = PKI(rt.state_dir / "pki")
        names = sorted(self._known_hosts())
        domain = self._domain()
        if domain:
            names.insert(0, f"*.{domain}")
        self._names = set(names)
        pair = rt.pki.issue("ingress", dns_names=names)
        self._ctx = pair.ssl_context()
        self._ctx.sni_callback = self._sni
        self._server = await asyncio.get_running_loop().create_server(
            lambda: _Gate(self), self.host, self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]
        rt.endpoints["ingress"] = f"https://{self.host}:{self.port}"
        rt.endpoints["ingress_port"] = self.port
        rt.endpoints["ingress_hosts"] = sorted(n for n in self._names if not n.startswith("*."))
        self._unsubscribe = rt.store.subscribe(self._on_event)
        self._schedule_status()

    async def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._status_task is not None:
            self._status_task.cancel()
        if self._server is not None:
            self._server.close()
            self._conns.cancel()
            await self._server.wait_closed()
            self._server = None

    def describe(self) -> str:
        return (f"ingress at https://{self.host}:{self.port} (stands in for "
                f"{self._ingress_ip() or 'the ingress IP'}, {len(self._names)} certificate names)")

    # -- data -------------------------------------------------------------------------
    def _cluster(self) -> dict:
        fx = getattr(self.rt, "fixture", None)
        return getattr(fx, "cluster", None) or {}

    def _domain(self) -> str | None:
        return self._cluster().get("ingress_domain")

    def _ingress_ip(self) -> str | None:
        return self._cluster().get("ingress_ip")

    def _ingresses(self) -> list[dict]:
        t = _rtype(self.rt.store, "networking.k8s.io", "ingresses")
        return list(self.rt.store.iter_objects(t)) if t else []

    def _known_hosts(self) -> set[str]:
        out = set()
        for ing in self._ingresses():
            for rule in (ing.get("spec") or {}).get("rules") or ():
                if rule.get("host"):
                    out.add(rule["host"])
        return out

    def announced(self) -> bool:
        """Whether the ingress IP is announced: some Service holds it (MetalLB assigned
        it) and, when the cluster has MetalLB speakers, one of them is Ready (in L2 mode
        a speaker answers ARP for the address; speakers are hostNetwork pods)."""
        ip = self._ingress_ip()
        if not ip:
            return True
        t = _rtype(self.rt.store, "", "services")
        if not any(ip in lb_ips(s) for s in self.rt.store.iter_objects(t)):
            return False
        def speaker(o: dict) -> bool:
            return (_meta(o).get("labels") or {}).get("app.kubernetes.io/component") == "speaker"
        pods = _rtype(self.rt.store, "", "pods")
        ds = _rtype(self.rt.store, "apps", "daemonsets")
        speakers = [p for p in self.rt.store.iter_objects(pods, SPEAKER_NAMESPACE) if speaker(p)]
        has_speakers = bool(speakers) or any(speaker(d) for d in self.rt.store.iter_objects(ds, SPEAKER_NAMESPACE))
        return not has_speakers or any(pod_reachable(self.rt, p)[0] for p in speakers)

    # -- Ingress status (what ingress-nginx's status updater does) -------------------------
    def publish_service(self) -> dict | None:
        """The controller's LoadBalancer Service (``--publish-service``)."""
        t = _rtype(self.rt.store, "", "services")
        lbs = [s for s in self.rt.store.iter_objects(t, CONTROLLER_NAMESPACE)
               if (s.get("spec") or {}).get("type") == "LoadBalancer"]
        lbs.sort(key=lambda s: (_meta(s).get("name") != "ingress-nginx-controller", _meta(s).get("name")))
        return lbs[0] if lbs else None

    def _on_event(self, etype: str, rtype: Any, obj: dict, old: dict | None) -> None:
        ns = _meta(obj).get("namespace")
        if rtype.key == ("networking.k8s.io", "ingresses") and etype != "DELETED":
            self._schedule_status()
        elif ns == CONTROLLER_NAMESPACE and rtype.key in (("", "services"), ("", "pods")):
            self._schedule_status()

    def _schedule_status(self) -> None:
        # Coalesce bursts of events into one pass, a moment later (never from inside the
        # store's callback).
        self._status_due = True
        if self._status_task is None or self._status_task.done():
            self._status_task = asyncio.get_running_loop().create_task(self._status_loop())

    async def _status_loop(self) -> None:
        while self._status_due:
            self._status_due = False
            await self.rt.clock.sleep(0.5)
            try:
                self.sync_status()
            except Exception:  # never let the updater die
                log.exception("ingress: status update failed")

    def sync_status(self) -> None:
        """Every nginx Ingress's ``status.loadBalancer`` mirrors the publish Service's
        addresses, while a controller pod is Ready and reachable (a controller that is
        down writes nothing: the last status stays)."""
        ctrl, _ = self.controller()
        if ctrl is None:
            return
        svc = self.publish_service()
        ips = lb_ips(svc) if svc is not None else []
        want = {"ingress": [{"ip": ip} for ip in ips]} if ips else {}
        t = _rtype(self.rt.store, "networking.k8s.io", "ingresses")
        for ing in list(self._ingresses()):
            cls = (ing.get("spec") or {}).get("ingressClassName") or \
                (_meta(ing).get("annotations") or {}).get("kubernetes.io/ingress.class")
            if cls not in (None, INGRESS_CLASS):
                continue
            if ((ing.get("status") or {}).get("loadBalancer") or {}) == want:
                continue
            md = _meta(ing)
            self.rt.store.mutate(t, md.get("namespace"), md.get("name"),
                                 lambda o: o.setdefault("status", {}).__setitem__("loadBalancer", dict(want)),
                                 subresource="status")
            self.status_writes += 1

    # -- TLS ----------------------------------------------------------------------------
    def _covered(self, name: str) -> bool:
        if name in self._names:
            return True
        head, _, rest = name.partition(".")
        return bool(rest) and f"*.{rest}" in self._names

    def _sni(self, sslobj: ssl.SSLObject, server_name: str | None, _ctx: ssl.SSLContext) -> None:
        if not server_name or self._covered(server_name) or server_name.replace(".", "").isdigit():
            return None
        ctx = self._extra_ctx.get(server_name)
        if ctx is None:
            # A host added after start: issue a certificate for it (cheap: EC P-256).
            pair = self.rt.pki.issue(f"ingress-{len(self._extra_ctx) + 1}", dns_names=[server_name])
            ctx = pair.ssl_context()
            self._extra_ctx[server_name] = ctx
        sslobj.context = ctx
        return None

    # -- routing ------------------------------------------------------------------------
    def controller(self) -> tuple[dict | None, str]:
        """A Ready+reachable ingress-nginx controller pod, or None and why not."""
        pods = _rtype(self.rt.store, "", "pods")
        why = []
        for p in self.rt.store.iter_objects(pods, CONTROLLER_NAMESPACE):
            md = _meta(p)
            labels = md.get("labels") or {}
            if labels.get("app.kubernetes.io/component") != "controller" and \
                    not (md.get("name") or "").startswith("ingress-nginx-controller"):
                continue
            ok, reason = pod_reachable(self.rt, p)
            if ok:
                return p, reason
            why.append(reason)
        return None, ("no ingress-nginx controller pod is Ready and reachable: " + "; ".join(why)
                      if why else "no ingress-nginx controller pod")

    def route(self, host: str, path: str = "/") -> Answer:
        """The answer for ``host`` + ``path`` (what a request would get)."""
        host = host.split(":", 1)[0].lower().rstrip(".")
        match = None
        for ing in sorted(self._ingresses(), key=lambda i: (_meta(i).get("creationTimestamp") or "",
                                                           _meta(i).get("namespace"), _meta(i).get("name"))):
            cls = (ing.get("spec") or {}).get("ingressClassName") or \
                (_meta(ing).get("annotations") or {}).get("kubernetes.io/ingress.class")
            if cls not in (None, INGRESS_CLASS):
                continue
            backend = pick_backend(ing, host, path)
            if backend is None and any(_host_matches(r.get("host"), host)
                                       for r in (ing.get("spec") or {}).get("rules") or ()):
                backend = (ing.get("spec") or {}).get("defaultBackend")
            if backend is not None:
                match = (ing, backend)
                break
        if match is None:
            return Answer(404, f"no Ingress has a rule for host {host!r}")
        ing, backend = match
        ing_name = f"{_meta(ing).get('namespace')}/{_meta(ing).get('name')}"
        ctrl, why = self.controller()
        if ctrl is None:
            return Answer(503, why, ingress=ing_name)
        ctrl_name = f"{_meta(ctrl).get('namespace')}/{_meta(ctrl).get('name')}"
        svc_ref = backend.get("service") or {}
        ns = _meta(ing).get("namespace")
        port = (svc_ref.get("port") or {})
        svc_label = f"{ns}/{svc_ref.get('name')}:{port.get('number') or port.get('name') or ''}"
        st = _rtype(self.rt.store, "", "services")
        svc = self.rt.store.peek(st, ns, svc_ref.get("name") or "") if svc_ref.get("name") else None
        if svc is None:
            return Answer(502, f"backend service {svc_label} does not exist", ingress=ing_name,
                          service=svc_label, controller=ctrl_name)
        sel = from_label_selector({"matchLabels": (svc.get("spec") or {}).get("selector")}) \
            if (svc.get("spec") or {}).get("selector") else None
        if sel is None:
            return Answer(502, f"backend service {svc_label} has no selector", ingress=ing_name,
                          service=svc_label, controller=ctrl_name)
        pods = _rtype(self.rt.store, "", "pods")
        good, why_not = [], []
        for p in self.rt.store.iter_objects(pods, ns):
            if not sel.matches_object(p):
                continue
            ok, reason = self.backend_reachable(ctrl, p, svc, port)
            (good if ok else why_not).append(p if ok else reason)
        if not good:
            detail = "; ".join(why_not[:5]) if why_not else "no pod matches its selector"
            return Answer(502, f"no Ready and reachable pod behind {svc_label}: {detail}",
                          ingress=ing_name, service=svc_label, controller=ctrl_name)
        good.sort(key=lambda p: _meta(p).get("name") or "")
        pod = good[next(self._rr) % len(good)]
        return Answer(200, f"served by {_meta(pod).get('namespace')}/{_meta(pod).get('name')}",
                      ingress=ing_name, service=svc_label,
                      pod=f"{_meta(pod).get('namespace')}/{_meta(pod).get('name')}",
                      pod_ip=(pod.get("status") or {}).get("podIP"), controller=ctrl_name)

    def backend_reachable(self, ctrl: dict, pod: dict, svc: dict, port: dict) -> tuple[bool, str]:
        """Whether the controller pod reaches a backend pod: nginx proxies to the pod's
        address and target port, across nodes over the overlay (the network model's
        ``reach``); without a network model, whether the pod is Ready."""
        ok, reason = pod_reachable(self.rt, pod)
        if not ok:
            return ok, reason
        try:
            net = self.rt.component("network")
        except (KeyError, AttributeError):
            return ok, reason
        reach = getattr(net, "reach", None)
        ip = (pod.get("status") or {}).get("podIP")
        if reach is None or not ip or (pod.get("spec") or {}).get("hostNetwork"):
            return ok, reason
        sport = next((p for p in (svc.get("spec") or {}).get("ports") or ()
                      if p.get("port") == port.get("number") or (port.get("name") and p.get("name") == port.get("name"))),
                     None) or {}
        target = sport.get("targetPort", sport.get("port", 80))
        if isinstance(target, str):
            target = next((cp.get("containerPort") for c in (pod.get("spec") or {}).get("containers") or ()
                           for cp in c.get("ports") or () if cp.get("name") == target), 80)
        return reach(ctrl, ip, int(target or 80))

    # -- HTTP -----------------------------------------------------------------------------
    def _accepted(self, transport: asyncio.Transport) -> None:
        # Reading is paused from the first moment: nothing of the ClientHello may be
        # consumed before TLS takes the connection over.
        transport.pause_reading()
        self._conns.spawn(self._serve(transport))

    async def _serve(self, transport: asyncio.Transport) -> None:
        loop = asyncio.get_running_loop()
        writer: asyncio.StreamWriter | None = None
        try:
            if not self.announced():
                self.dropped += 1
                transport.abort()
                return
            reader = asyncio.StreamReader(limit=MAX_HEADER)
            proto = asyncio.StreamReaderProtocol(reader)
            try:
                tls = await asyncio.wait_for(
                    loop.start_tls(transport, proto, self._ctx, server_side=True), timeout=10)
            except (ssl.SSLError, ConnectionError, asyncio.TimeoutError, OSError) as e:
                log.debug("ingress: TLS handshake failed: %r", e)
                transport.abort()
                return
            if tls is None:
                return
            proto.connection_made(tls)
            writer = asyncio.StreamWriter(tls, proto, reader, loop)
            while True:
                try:
                    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=30)
                except (asyncio.IncompleteReadError, asyncio.TimeoutError, ConnectionError,
                        asyncio.LimitOverrunError, ssl.SSLError):
                    break
                if not await self._respond(head, reader, writer):
                    break
        except asyncio.CancelledError:
            pass
        finally:
            try:
                if writer is not None:
                    writer.close()
                else:
                    transport.abort()
            except Exception:  # pragma: no cover - best effort
                pass

    async def _respond(self, head: bytes, reader: asyncio.StreamReader,
                       writer: asyncio.StreamWriter) -> bool:
        self.requests += 1
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            ans, host, method = Answer(400, "malformed request line"), "", "GET"
        else:
            method, target = parts[0], parts[1]
            length = int(headers.get("content-length") or 0)
            if length:
                await reader.readexactly(min(length, 1 << 20))
            host = headers.get("host", "")
            if not host:
                ssl_obj = writer.get_extra_info("ssl_object")
                host = (getattr(ssl_obj, "server_hostname", None) or "") if ssl_obj else ""
            path = target.split("?", 1)[0] or "/"
            ans = self.route(host, path) if host else Answer(400, "no Host header")
        body = ans.body(host) if method != "HEAD" else b""
        keep = headers.get("connection", "").lower() != "close" and parts[-1] == "HTTP/1.1"
        out = [f"HTTP/1.1 {ans.status} {REASONS.get(ans.status, '')}",
               "Server: nginx", "Content-Type: text/html",
               f"Content-Length: {len(ans.body(host))}",
               f"X-Twin-Reason: {_header_safe(ans.reason)}",
               f"Connection: {'keep-alive' if keep else 'close'}"]
        if ans.pod:
            out.append(f"X-Twin-Backend-Pod: {ans.pod}")
        writer.write(("\r\n".join(out) + "\r\n\r\n").encode("latin-1") + body)
        await writer.drain()
        return keep
