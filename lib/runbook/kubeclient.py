"""Importing the official Kubernetes client without what the runbook never uses.

``import kubernetes`` imports its dynamic client, which imports the optional
``kubernetes_validate`` when it is installed (the twin ships it for its schemas). That
imports ``jsonschema``, whose optional IRI format checker compiles a grammar with lark:
1.4 of the 1.7 CPU seconds the import costs, in every kernel of a run
(``benchmarks/rehearse.py``). The runbook calls the REST client only (``client``,
``config``, ``stream``), never the dynamic client's validation, so while ``kubernetes``
is imported here ``kubernetes_validate`` is hidden and the dynamic client records that
it is absent. Anything that later imports ``kubernetes_validate`` itself still gets it.

Example:
    >>> k8s = load()
    >>> k8s.dynamic.client.HAS_KUBERNETES_VALIDATE, hasattr(k8s.client, "ApiClient")
    (False, True)
"""
from __future__ import annotations

import importlib
import sys
import threading
from types import ModuleType

_OPTIONAL = "kubernetes_validate"
_lock = threading.Lock()


def load() -> ModuleType:
    """The ``kubernetes`` package, with ``client``, ``config`` and ``stream`` imported."""
    with _lock:
        if "kubernetes" not in sys.modules:
            hidden = _OPTIONAL not in sys.modules
            if hidden:
                sys.modules[_OPTIONAL] = None  # type: ignore[assignment]  # import raises ImportError
            try:
                importlib.import_module("kubernetes")
            finally:
                if hidden and sys.modules.get(_OPTIONAL, ...) is None:
                    del sys.modules[_OPTIONAL]
        for sub in ("client", "config", "stream"):
            importlib.import_module(f"kubernetes.{sub}")
        return sys.modules["kubernetes"]
