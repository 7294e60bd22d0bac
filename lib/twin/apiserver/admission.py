"""What every write passes before it is stored: the mutating admission plugins the twin
models, then unknown fields and the kind's validation.

Called by create, update, patch and server-side apply (:mod:`.resources`,
:mod:`.patching`) on the object as it would be stored. Mutating first, as a real server
orders them: DefaultTolerationSeconds gives a pod that does not tolerate
``node.kubernetes.io/not-ready`` or ``node.kubernetes.io/unreachable`` (NoExecute) a
toleration for each with ``tolerationSeconds: 300`` (kube-apiserver's
``--default-not-ready-toleration-seconds`` / ``--default-unreachable-toleration-seconds``
defaults); subresources are left alone. ``fieldValidation`` decides what
happens to fields the kind's schema does not declare (see :mod:`.validation`); a
``Warn`` leaves its warnings on the request, and the server sends them as ``Warning``
headers, as a real server does.
"""
from __future__ import annotations

from typing import Any

from aiohttp import web

from ..managed_fields import manager_from_user_agent, record_update
from ..store import ResourceType
from .responses import HTTPError, now_rfc3339
from .validation import invalid, semantic_causes, unknown_fields

FIELD_VALIDATION = ("Strict", "Warn", "Ignore")
#: where a request keeps the warnings its response sends (aiohttp >= 3.11 types the key)
WARNINGS: Any = web.RequestKey("warnings", list) if hasattr(web, "RequestKey") else "warnings"


class AdmissionChecks:
    """The :class:`APIServer`'s write checks (uses :class:`OpenAPIRoutes`' cached schemas)."""

    rt: Any

    def _schema_of(self, t: ResourceType) -> tuple[dict, dict] | None:
        defs, by_gv = self._openapi_defs()   # type: ignore[attr-defined]
        for rt_, name in by_gv.get((t.group, t.version), ()):
            if rt_.plural == t.plural:
                return defs, defs[name]
        return None

    def _admit(self, request: web.Request, t: ResourceType, obj: dict, *,
               subresource: str | None = None, apply: bool = False) -> None:
        """Check ``obj`` (and drop its unknown fields unless Strict); raise the real errors.

        Args:
            request: the write (its ``fieldValidation`` query parameter).
            t: the resource written.
            obj: the object as it would be stored (modified in place when pruned).
            subresource: ``status`` skips the spec checks, as the status strategy does.
            apply: the body was a server-side apply configuration (its error wording).
        """
        if subresource is None and (t.group, t.plural) == ("", "pods"):
            default_toleration_seconds(obj)
        mode = request.query.get("fieldValidation") or "Warn"
        if mode not in FIELD_VALIDATION:
            raise HTTPError(400, "BadRequest", f'fieldValidation must be one of "Ignore", '
                                               f'"Warn", or "Strict", got "{mode}"')
        found = self._schema_of(t)
        if found is not None:
            defs, node = found
            unknown = unknown_fields(defs, node, obj, prune=mode != "Strict")
            if unknown and mode == "Strict":
                if apply:
                    raise HTTPError(400, "BadRequest",
                                    f"failed to create typed patch object ({t.api_version}, "
                                    f"Kind={t.kind}): .{unknown[0]}: field not declared in schema")
                fields = ", ".join(f'unknown field "{u}"' for u in unknown)
                raise HTTPError(400, "BadRequest",
                                f'{t.kind} in version "{t.version}" cannot be handled as a '
                                f"{t.kind}: strict decoding error: {fields}")
            if unknown and mode == "Warn":
                request.setdefault(WARNINGS, []).extend(f'unknown field "{u}"' for u in unknown)
        if subresource is None:
            causes = semantic_causes(t, obj)
            if causes:
                raise invalid(t, (obj.get("metadata") or {}).get("name", ""), causes)

    def _record_manager(self, request: web.Request, t: ResourceType, old: dict | None,
                        new: dict) -> None:
        """Give the write's field manager (``fieldManager`` or the User-Agent's first word)
        the fields it changed in ``new.metadata.managedFields`` (operation ``Update``)."""
        manager = request.query.get("fieldManager") or \
            manager_from_user_agent(request.headers.get("User-Agent", ""))
        record_update(old, new, manager=manager, api_version=t.api_version, now=now_rfc3339())


def default_toleration_seconds(pod: dict) -> None:
    """The DefaultTolerationSeconds admission plugin on a pod written through the API.

    A toleration of the taint already there (its key or an empty key, effect NoExecute or
    empty) is kept as it is; a missing one is added with 300 s.

    Example:
        >>> pod = {"spec": {"tolerations": [{"key": "node.kubernetes.io/unreachable",
        ...                                  "operator": "Exists", "effect": "NoExecute"}]}}
        >>> default_toleration_seconds(pod)
        >>> [(t["key"], t.get("tolerationSeconds")) for t in pod["spec"]["tolerations"]]
        [('node.kubernetes.io/unreachable', None), ('node.kubernetes.io/not-ready', 300)]
    """
    from ..controllers.workloads import default_tolerations

    spec = pod.get("spec")
    if isinstance(spec, dict):
        tols = spec.get("tolerations")
        added = default_tolerations(tols if isinstance(tols, list) else None)
        if added != (tols or []):
            spec["tolerations"] = added


def warning_headers(request: web.Request, resp: web.StreamResponse) -> None:
    """Send the request's warnings as ``Warning: 299 - "..."`` headers."""
    for w in request.get(WARNINGS, ()):
        escaped = w.replace("\\", "\\\\").replace('"', '\\"')
        resp.headers.add("Warning", f'299 - "{escaped}"')


__all__ = ["AdmissionChecks", "FIELD_VALIDATION", "default_toleration_seconds", "warning_headers"]
