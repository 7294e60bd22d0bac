"""The ``pods/log`` subresource: ``kubectl logs`` (``-c``, ``--previous``, ``--tail``,
``--since``, ``--since-time``, ``--timestamps``, ``--limit-bytes``, ``-f``).

Lines come from the kubelet's :class:`~twin.controllers.logs.ContainerLogs`
(``rt.options["container_logs"]``). The errors are the real server's 400s: no container
named for a pod with several, a container the pod does not have, a container that has
not started ("is waiting to start: ContainerCreating", "trying and failing to pull
image"), no previous instance. ``follow=true`` streams the existing lines, then each new
one, until the container's pod is deleted or the client goes away; a container that has
finished for good ends the stream after its lines.
"""
from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import web

from ..controllers.logs import nano_time
from ..store import ResourceType
from ..tables.cells import parse_time
from .responses import HTTPError


def _bad(message: str) -> HTTPError:
    return HTTPError(400, "BadRequest", message)


def _int(q: Any, name: str) -> int | None:
    v = q.get(name)
    if v in (None, ""):
        return None
    try:
        return int(v)
    except ValueError as e:
        raise _bad(f"invalid {name}: {v!r}") from e


class PodLogRoutes:
    """The :class:`APIServer`'s ``pods/log`` requests (uses its ``rt``)."""

    rt: Any

    async def _pod_log(self, request: web.Request, t: ResourceType, ns: str | None,
                       name: str) -> web.StreamResponse:
        pod = self.rt.store.get(t, ns, name)
        q = request.query
        spec, status = pod.get("spec") or {}, pod.get("status") or {}
        names = [c.get("name") for c in spec.get("containers") or ()]
        inits = [c.get("name") for c in spec.get("initContainers") or ()]
        container = q.get("container") or ""
        if not container:
            if len(names) != 1:
                raise _bad(f"a container name must be specified for pod {name}, choose one of: "
                           f"[{' '.join(names)}]" + (f" or one of the init containers: [{' '.join(inits)}]"
                                                     if inits else ""))
            container = names[0]
        if container not in names and container not in inits:
            raise _bad(f"container {container} is not valid for pod {name}")
        previous = q.get("previous") in ("true", "1")
        logs = self.rt.options.get("container_logs")
        uid = pod["metadata"].get("uid", "")
        cs = next((c for c in (status.get("containerStatuses") or []) + (status.get("initContainerStatuses") or [])
                   if c.get("name") == container), {})
        if logs is None or not logs.has(uid, container, previous=previous):
            if previous:
                raise _bad(f'previous terminated container "{container}" in pod "{name}" not found')
            waiting = (cs.get("state") or {}).get("waiting") or {}
            reason = waiting.get("reason") or "ContainerCreating"
            if reason in ("ErrImagePull", "ImagePullBackOff"):
                raise _bad(f'container "{container}" in pod "{name}" is waiting to start: '
                           "trying and failing to pull image")
            raise _bad(f'container "{container}" in pod "{name}" is waiting to start: {reason}')
        tail = _int(q, "tailLines")
        since = None
        if q.get("sinceSeconds"):
            since = time.time() - (_int(q, "sinceSeconds") or 0)
        elif q.get("sinceTime"):
            since = parse_time(q["sinceTime"])
            if since is None:
                raise _bad(f"invalid sinceTime: {q['sinceTime']!r}")
        stamps = q.get("timestamps") in ("true", "1")
        limit = _int(q, "limitBytes")

        def fmt(line: tuple[float, str]) -> str:
            return (f"{nano_time(line[0])} {line[1]}\n" if stamps else f"{line[1]}\n")

        text = "".join(fmt(ln) for ln in logs.read(uid, container, previous=previous, tail=tail, since=since))
        follow = q.get("follow") in ("true", "1") and not previous
        if not follow:
            data = text.encode()
            return web.Response(body=data[:limit] if limit is not None else data,
                                content_type="text/plain", charset="utf-8")
        return await self._follow_log(request, logs, uid, container, text, fmt, limit, cs)

    async def _follow_log(self, request: web.Request, logs: Any, uid: str, container: str,
                          text: str, fmt: Any, limit: int | None, cs: dict) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8"})
        await resp.prepare(request)
        sent = 0

        async def send(chunk: str) -> bool:
            nonlocal sent
            data = chunk.encode()
            if limit is not None:
                data = data[: max(0, limit - sent)]
            if data:
                await resp.write(data)
                sent += len(data)
            return limit is None or sent < limit

        q = logs.follow(uid, container)
        try:
            if not await send(text):
                return resp
            if "terminated" in (cs.get("state") or {}):
                return resp            # finished for good: nothing more will come
            while True:
                try:
                    item = await asyncio.wait_for(q.get(), 30.0)
                except asyncio.TimeoutError:
                    if request.transport is None or request.transport.is_closing():
                        break
                    continue
                if item is None or not await send(fmt(item)):
                    break
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            logs.unfollow(uid, container, q)
        return resp
