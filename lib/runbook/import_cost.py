"""An import the runbook never uses, kept out of its processes.

``import kubernetes`` runs ``kubernetes.dynamic.client``, which imports
``kubernetes_validate`` (and ``kubernetes_validate.utils``) only to know whether its
``DynamicClient.validate`` could validate manifests. The runbook never uses the dynamic
client, yet that import pulls in ``jsonschema`` and, through its format checkers,
compiles a Lark grammar: 1–5 s of CPU per process on this two-core machine, paid by every
notebook kernel and every CLI call that talks to the API.

:func:`import_kubernetes` imports the client with ``kubernetes_validate`` hidden, so the
dynamic client records it as absent (its ``validate`` would raise
``KubernetesValidateMissing``; nothing here calls it). The package stays installed and
importable afterwards: the twin reads its schemas.
"""
from __future__ import annotations

import importlib
import sys

HIDDEN = "kubernetes_validate"


def import_kubernetes() -> None:
    """Import the ``kubernetes`` package once, without ``kubernetes_validate``; a no-op when
    ``kubernetes`` is already imported (then whoever imported it first decided).

    Example:
        >>> import_kubernetes()
        >>> import sys; "kubernetes.client" in sys.modules
        True
    """
    if "kubernetes" in sys.modules:
        return
    hide = HIDDEN not in sys.modules
    if hide:
        sys.modules[HIDDEN] = None      # type: ignore[assignment]  # "import" raises ImportError
    try:
        importlib.import_module("kubernetes.client")
    finally:
        if hide and sys.modules.get(HIDDEN, 0) is None:
            del sys.modules[HIDDEN]
