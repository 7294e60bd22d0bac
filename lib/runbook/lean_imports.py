"""Importing two heavy third-party packages without the optional parts the runbook never uses.

- ``import kubernetes`` imports its dynamic client, which imports ``kubernetes_validate``
  when it is installed (the twin ships it for its schemas), which imports ``jsonschema``.
- ``import jsonschema`` (papermill and nbformat import it) imports ``rfc3987_syntax`` when
  it is installed (JupyterLab's dependencies bring it), whose IRI checker compiles 38
  grammars with lark at import.

That grammar is 1.4 of the 1.7 CPU seconds ``import kubernetes`` costs, in every kernel
of a run and in the process that renders the report (``benchmarks/rehearse.py``). The
runbook calls the REST client only (``client``, ``config``, ``stream``), never the
dynamic client's validation, and validates no ``iri`` formats, so while those packages
are imported here the optional module is hidden (its import raises ImportError, which
both packages expect) and put back afterwards: whoever imports it later still gets it.

Example:
    >>> k8s = kubernetes()
    >>> k8s.dynamic.client.HAS_KUBERNETES_VALIDATE, hasattr(k8s.client, "ApiClient")
    (False, True)
"""
from __future__ import annotations

import importlib
import sys
import threading
from types import ModuleType

__all__ = ["kubernetes", "jsonschema", "first_use", "FIRST_USE"]

_lock = threading.RLock()


def _import_hiding(name: str, optional: str) -> ModuleType:
    """``import name`` with ``optional`` unimportable meanwhile (unless already imported)."""
    with _lock:
        if name not in sys.modules:
            hidden = optional not in sys.modules
            if hidden:
                sys.modules[optional] = None  # type: ignore[assignment]  # import raises ImportError
            try:
                importlib.import_module(name)
            finally:
                if hidden and sys.modules.get(optional, ...) is None:
                    del sys.modules[optional]
        return sys.modules[name]


def jsonschema() -> ModuleType:
    """``jsonschema``, without the IRI format checker's grammars (call before papermill
    or nbformat are imported)."""
    return _import_hiding("jsonschema", "rfc3987_syntax")


def kubernetes() -> ModuleType:
    """The ``kubernetes`` package, with ``client``, ``config`` and ``stream`` imported,
    without the dynamic client's optional validator."""
    with _lock:
        k8s = _import_hiding("kubernetes", "kubernetes_validate")
        for sub in ("client", "config", "stream"):
            importlib.import_module(f"kubernetes.{sub}")
        return k8s


#: what the library imports at first use rather than at import: the API of a Cluster's
#: first exec in a pod (``kubernetes.client`` loads its API classes lazily, ~0.5 s)
FIRST_USE = ("kubernetes.client.api.core_v1_api",)


def first_use() -> None:
    """Import now what the library would import at its first request and its first exec
    in a pod (a kernel started ahead of its phase does, while the previous phase runs)."""
    kubernetes()
    for name in FIRST_USE:
        importlib.import_module(name)
