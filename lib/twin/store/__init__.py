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

Twin-specific choices (beyond the contract)
    * Namespaces: a namespaced ``create`` into a namespace that does not exist raises
      NotFound, into one that is terminating raises Forbidden. ``delete`` of a
      namespace sets ``deletionTimestamp`` and ``status.phase: Terminating``, deletes
      everything inside at once, and removes the namespace as soon as nothing is left
      (objects holding finalizers keep it Terminating until they go).
    * ``update(..., preserve_status=True)`` keeps the stored ``status`` when the type has
      a status subresource: this is what a real server does on a main-resource PUT or
      PATCH, so the API server passes it; ``mutate()`` (controllers) writes everything.
    * An update that changes nothing is a no-op: no new resourceVersion, no event (as
      on a real server; it also keeps controllers from looping on their own writes).
    * Watch objects and list items are copies; the ``obj``/``old`` handed to subscribers
      are the stored dicts and must be treated as read-only.
    * ``propagation="Foreground"`` deletes the dependents first, then the owner.
    * ``events.k8s.io`` events are the core ``events``, served converted
      (:mod:`.conversion`), as a real server stores them once.
    * Field selectors accept any dotted path (a missing field is ``""``).

Layout
    ``core`` (the ``Store``: types, identity, creates and updates, indexes), ``reads``
    (get, list, paging), ``watch`` (watches, bookmarks, subscribers),
    ``garbage_collection`` (deletion, finalizers, owner references, namespaces),
    ``crds`` (custom resource registration), ``validation`` (names, labels, defaults),
    ``buckets`` (per-resource storage), ``resource_types`` (``ResourceType``, built-ins),
    ``objects`` (dict helpers), ``errors`` (``StoreError`` and its ``Status`` codes).
"""
from __future__ import annotations

from .core import Store
from .errors import (
    AlreadyExists,
    BadRequest,
    Conflict,
    Forbidden,
    Gone,
    Invalid,
    NotFound,
    StoreError,
)
from .objects import json_copy
from .reads import ListResult
from .resource_types import (
    CRD_KEY,
    DEFAULT_VERBS,
    NAMESPACE_KEY,
    POD_KEY,
    ResourceType,
    builtin_types,
)
from .watch import MAX_WATCH_QUEUE, Subscriber, Watch, WatchEvent

__all__ = [
    "AlreadyExists", "BadRequest", "CRD_KEY", "Conflict", "DEFAULT_VERBS", "Forbidden", "Gone",
    "Invalid", "ListResult", "MAX_WATCH_QUEUE", "NAMESPACE_KEY", "NotFound", "POD_KEY",
    "ResourceType", "Store", "StoreError", "Subscriber", "Watch", "WatchEvent", "builtin_types",
    "json_copy",
]
