"""The twin's object store: the one source of truth of the rehearsal cluster.

CONTRACT (shared by the API server, every controller, the fixtures and the node model).
Everything runs on the twin's single asyncio event-loop thread; the store itself is
synchronous and not thread-safe. Objects are plain JSON-like dicts exactly as the
Kubernetes API would serialise them (``apiVersion``, ``kind``, ``metadata``, ``spec``,
``status``).

Resource types
    ``ResourceType`` describes one served (group, version, plural). Storage is keyed by
    ``(group, plural)`` so a CRD served at several versions shares one set of objects;
    ``apiVersion`` in returned objects is rewritten to the version asked for.
    Built-in types are registered by ``builtin_types()``; CRDs are registered when a
    CustomResourceDefinition object is created (and unregistered when it is deleted).

Identity and versions
    ``create`` sets ``metadata.uid``, ``resourceVersion`` (a global, monotonically
    increasing integer rendered as a string), ``generation`` (1) and
    ``creationTimestamp`` (RFC 3339, UTC, seconds). Every write bumps
    ``resourceVersion``; a change to anything but ``status``/``metadata`` bumps
    ``generation``. ``metadata.generateName`` is honoured.

Reads
    ``get`` and ``list`` return deep copies: callers may mutate what they receive.
    ``list`` supports label selectors (``=``, ``==``, ``!=``, ``in``, ``notin``, exists,
    ``!key``), field selectors (``metadata.name``, ``metadata.namespace``,
    ``status.phase``, ``spec.nodeName``; ``=``, ``==``, ``!=``), and ``limit``/``continue``
    pagination. Cost is proportional to the objects of that resource (and namespace),
    never to the whole store; ``spec.nodeName`` selections use an index.

Deletion
    ``delete`` on an object with finalizers sets ``deletionTimestamp`` (and
    ``deletionGracePeriodSeconds``) and keeps it until an ``update`` empties the
    finalizers. Removing an object garbage-collects its dependents (objects whose
    ``metadata.ownerReferences`` name its uid), recursively ("Background" propagation);
    ``propagation="Orphan"`` strips the owner reference instead.

Watches and subscribers
    Every change produces an event ``(type, obj)`` with type ADDED, MODIFIED or DELETED.
    ``watch()`` returns a ``Watch`` whose ``next()`` yields events after a given
    resourceVersion; a bounded history ring (per resource) serves resumes and raises
    ``Gone`` (410) when the version is older than the ring. ``subscribe(fn)`` registers a
    synchronous callback ``fn(event_type, rtype, obj, old)`` called after every change:
    controllers use it to schedule work (they must not block).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

DEFAULT_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")


class StoreError(Exception):
    """Base of store errors; maps onto a Kubernetes ``Status`` (code, reason)."""

    code = 500
    reason = "InternalError"

    def __init__(self, message: str, *, details: dict | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}


class NotFound(StoreError):
    code = 404
    reason = "NotFound"


class AlreadyExists(StoreError):
    code = 409
    reason = "AlreadyExists"


class Conflict(StoreError):
    code = 409
    reason = "Conflict"


class Invalid(StoreError):
    code = 422
    reason = "Invalid"


class BadRequest(StoreError):
    code = 400
    reason = "BadRequest"


class Gone(StoreError):
    code = 410
    reason = "Expired"


@dataclass(frozen=True)
class ResourceType:
    """One served resource, as discovery reports it."""

    group: str            # "" for the core group
    version: str
    plural: str
    kind: str
    namespaced: bool
    singular: str = ""
    short_names: tuple[str, ...] = ()
    verbs: tuple[str, ...] = DEFAULT_VERBS
    categories: tuple[str, ...] = ()
    list_kind: str = ""   # defaults to kind + "List"
    status_subresource: bool = True
    scale_subresource: bool = False
    table_columns: tuple[dict, ...] = ()   # additionalPrinterColumns for CRDs (Table output)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> tuple[str, str]:
        """Storage key: shared by every version of the resource."""
        return (self.group, self.plural)


@dataclass
class ListResult:
    items: list[dict]
    resource_version: str
    continue_token: str | None = None
    remaining: int | None = None


@dataclass
class WatchEvent:
    type: str              # ADDED | MODIFIED | DELETED | BOOKMARK
    object: dict
    resource_version: int = 0


class Watch:
    """An open watch. Created by :meth:`Store.watch`; events arrive via :meth:`next`."""

    async def next(self, timeout: float | None = None) -> WatchEvent | None:  # pragma: no cover
        """The next matching event, or None on timeout."""
        raise NotImplementedError

    def close(self) -> None:  # pragma: no cover
        raise NotImplementedError


Subscriber = Callable[[str, ResourceType, dict, "dict | None"], None]


class Store:
    """In-memory object store (see module docstring for the contract)."""

    def __init__(self, *, history_per_resource: int = 5000) -> None:
        raise NotImplementedError

    # -- types ------------------------------------------------------------------
    def register(self, rtype: ResourceType) -> None: ...
    def unregister(self, group: str, version: str, plural: str) -> None: ...
    def resource_types(self) -> list[ResourceType]: ...
    def lookup(self, group: str, version: str, plural: str) -> ResourceType | None: ...
    def lookup_kind(self, api_version: str, kind: str) -> ResourceType | None: ...

    # -- reads --------------------------------------------------------------------
    @property
    def resource_version(self) -> int: ...
    def get(self, rtype: ResourceType, namespace: str | None, name: str) -> dict:
        """A copy of the object; raises NotFound."""
    def try_get(self, rtype: ResourceType, namespace: str | None, name: str) -> dict | None: ...
    def list(self, rtype: ResourceType, namespace: str | None = None, *,
             label_selector: str | None = None, field_selector: str | None = None,
             limit: int = 0, continue_token: str | None = None) -> ListResult: ...
    def count(self, rtype: ResourceType, namespace: str | None = None) -> int: ...
    def iter_objects(self, rtype: ResourceType, namespace: str | None = None) -> Iterable[dict]:
        """Read-only iteration over the stored objects (no copies: do not mutate)."""

    # -- writes -------------------------------------------------------------------
    def create(self, obj: dict, *, rtype: ResourceType | None = None) -> dict: ...
    def update(self, obj: dict, *, rtype: ResourceType | None = None,
               subresource: str | None = None, check_version: bool = True) -> dict:
        """Replace an object. With ``check_version`` and a resourceVersion in ``obj``
        that differs from the stored one, raises Conflict. ``subresource="status"``
        only takes ``status`` from ``obj``."""
    def mutate(self, rtype: ResourceType, namespace: str | None, name: str,
               fn: Callable[[dict], Any], *, subresource: str | None = None) -> dict:
        """get + fn(obj) in place + update, for controllers (no version check)."""
    def delete(self, rtype: ResourceType, namespace: str | None, name: str, *,
               propagation: str = "Background", grace_period: int | None = None) -> dict: ...

    # -- events -------------------------------------------------------------------
    def watch(self, rtype: ResourceType, namespace: str | None = None, *,
              label_selector: str | None = None, field_selector: str | None = None,
              resource_version: str | None = None) -> Watch: ...
    def subscribe(self, fn: Subscriber) -> Callable[[], None]:
        """Register a change callback; returns an unsubscribe function."""


def builtin_types() -> list[ResourceType]:
    """Every built-in resource the twin serves (core, apps, networking, rbac, policy,
    apiextensions, coordination, events, discovery ...)."""
    raise NotImplementedError
