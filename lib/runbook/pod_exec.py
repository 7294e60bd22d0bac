"""Commands in pods (``kubectl exec``): the one choke point of the exec transport.

A command in a pod runs through the API server's ``pods/exec`` subresource over a
WebSocket (the official client's stream API, ``kubernetes.stream``), the same transport
``kubectl exec`` uses. :func:`exec_in_pod` returns an :class:`ExecResult` with the exit
status the API server reports on the stream's error channel, stdout and stderr; it never
raises on a non-zero exit status, as :meth:`runbook.nodes.Node.run` does not.

What it adds to the client:

* the loopback guard of a twin target (the connection is the session's
  :class:`runbook.cluster.Cluster`'s, which refuses a non-loopback server);
* a separate client per call: the stream API swaps the client's ``call_api`` while it
  runs, which must not race the other threads of a phase using the session's client;
* retries of the handshake only (connection refused, 5xx, 429) for as long as the
  cluster's ``retry_for``: a command that started is never run a second time;
* errors with the HTTP status of a refused handshake (404: no such pod; 400: the
  container is not running), and a deadline (``timeout``) after which the stream is
  closed and :class:`~runbook.errors.ClusterError` names the command.

Example:
    >>> r = exec_in_pod(s.cluster, "kube-system", "coredns-6799fbcd5-x2x9q",
    ...                 ["nslookup", "kubernetes.default"])          # doctest: +SKIP
    >>> r.ok, "10.43.0.1" in r.stdout                                 # doctest: +SKIP
    (True, True)
"""
from __future__ import annotations

import json
import re
import shlex
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

from . import lean_imports
from .errors import ClusterError
from .evidence import redact_text
from .results import ProcessResult

if TYPE_CHECKING:
    from .cluster import Cluster

__all__ = ["ExecResult", "exec_in_pod", "parse_status", "handshake_status"]

_RETRY_STATUS = {0, 429, 500, 502, 503, 504}
_HANDSHAKE = re.compile(r"Handshake status (\d{3})")


@dataclass
class ExecResult(ProcessResult):
    """The outcome of one command in one container.

    ``stdout``/``stderr`` are kept raw; every display is redacted (as for
    :class:`runbook.results.CommandResult`).

    Attributes:
        namespace, pod, container: where it ran (container None: the pod's first);
        argv: the command; rc: exit status; stdout, stderr; duration: seconds.
    """

    namespace: str
    pod: str
    container: str | None
    argv: list[str]
    rc: int
    stdout: str
    stderr: str
    duration: float = 0.0

    def shown_command(self) -> str:
        where = f"-n {self.namespace} {self.pod}" + (f" -c {self.container}" if self.container else "")
        return redact_text(f"kubectl exec {where} -- {shlex.join(self.argv)}")

    def label(self) -> str:
        return f"[{self.namespace}/{self.pod}] "

    def __repr__(self) -> str:
        return (f"ExecResult(pod={self.namespace}/{self.pod!s}, argv={redact_text(shlex.join(self.argv))!r}, "
                f"rc={self.rc}, stdout={redact_text(self.stdout)[:200]!r}, "
                f"stderr={redact_text(self.stderr)[:200]!r})")


def parse_status(text: str) -> tuple[int, str]:
    """The exit status and message from the exec stream's error channel (pure).

    The API server sends one ``Status``: ``Success``, or ``Failure`` with reason
    ``NonZeroExitCode`` and the code in a cause ``ExitCode``; a command that could not
    start (the runtime's "executable file not found") is a Failure without that cause.

    >>> parse_status('{"status": "Success"}')
    (0, '')
    >>> parse_status('{"status": "Failure", "reason": "NonZeroExitCode", "message": "command '
    ...              'terminated with non-zero exit code: exit status 3", "details": {"causes": '
    ...              '[{"reason": "ExitCode", "message": "3"}]}}')[0]
    3
    >>> parse_status('{"status": "Failure", "message": "exec: \\\\"nope\\\\": executable file not found in $PATH"}')[0]
    127
    """
    if not text.strip():
        return 0, ""
    try:
        doc = json.loads(text)
    except ValueError:
        return 1, text.strip()
    if not isinstance(doc, dict) or doc.get("status") == "Success":
        return 0, ""
    msg = str(doc.get("message") or "")
    for cause in (doc.get("details") or {}).get("causes") or ():
        if cause.get("reason") == "ExitCode":
            try:
                return int(cause.get("message")), msg
            except (TypeError, ValueError):
                break
    return (127 if "not found" in msg else 126 if "permission denied" in msg else 1), msg


def handshake_status(error: BaseException) -> int:
    """The HTTP status of a refused WebSocket handshake, 0 when the connection itself failed.

    >>> handshake_status(Exception("Handshake status 404 Not Found -+-+- {} -+-+- b''"))
    404
    >>> handshake_status(ConnectionRefusedError(111, "Connection refused"))
    0
    """
    status = getattr(error, "status_code", None)
    if isinstance(status, int) and status:
        return status
    m = _HANDSHAKE.search(f"{getattr(error, 'reason', '')} {error}")
    return int(m.group(1)) if m else 0


def _body_message(error: BaseException) -> str:
    text = f"{getattr(error, 'reason', '') or error}"
    m = re.search(r'"message"\s*:\s*"((?:[^"\\]|\\.)*)"', text)
    if not m:
        return text.strip()[:300]
    try:
        return json.loads(f'"{m.group(1)}"')
    except ValueError:
        return m.group(1)


def exec_in_pod(cluster: Cluster, namespace: str, pod: str, argv: Sequence[str], *,
                container: str | None = None, stdin: str | bytes | None = None,
                timeout: float = 60.0) -> ExecResult:
    """Run ``argv`` in a container of a running pod and wait for it to exit.

    Args:
        cluster: the session's cluster (its kubeconfig, credentials and loopback guard).
        namespace, pod: the pod; container: its container (None: the pod's only or
            first container, as kubectl's default).
        argv: the program and its arguments, each one word: no shell runs them.
        stdin: sent to the command, then closed (the v5 protocol's close signal; with an
            older server the command sees no end of input).
        timeout: seconds the command may run.

    Raises:
        ClusterError: the handshake was refused (its status and message: 404 the pod is
            gone, 400 the container is not running, 403 RBAC), the API did not answer
            within the cluster's ``retry_for``, or the command outlived ``timeout``.
    """
    lean_imports.kubernetes()
    from kubernetes.client import ApiClient, CoreV1Api
    from kubernetes.stream import stream

    argv = [str(a) for a in argv]
    shown = f"kubectl exec -n {namespace} {pod} -- {shlex.join(argv)}"
    base = cluster.api  # connects once: kubeconfig, loopback guard, token registered
    deadline = time.monotonic() + cluster.retry_for
    delay = 0.2
    start = time.monotonic()
    while True:
        api = CoreV1Api(ApiClient(base.configuration))
        kw = {"container": container} if container else {}
        try:
            ws = stream(api.connect_get_namespaced_pod_exec, pod, namespace, command=argv,
                        stderr=True, stdout=True, stdin=stdin is not None, tty=False,
                        _preload_content=False, _request_timeout=timeout, **kw)
            break
        except Exception as e:  # noqa: BLE001 - the client wraps every handshake error in ApiException
            status = handshake_status(e)
            if status not in _RETRY_STATUS or time.monotonic() >= deadline:
                hint = {404: "the pod is gone: list the pods again",
                        400: "the container is not running (yet): check the pod's status",
                        403: "the credentials may not create pods/exec in this namespace"}.get(status)
                raise ClusterError(f"{shown} failed: {status or 'no connection'} {_body_message(e)}",
                                   status=status or None, hint=hint) from e
            time.sleep(delay)
            delay = min(delay * 1.6, 2.0)
    try:
        if stdin is not None:
            # binary frames: the channel byte then the data (a text frame means base64 to
            # servers that speak the base64 protocols)
            ws.write_stdin(stdin.encode() if isinstance(stdin, str) else bytes(stdin))
            ws.close_channel(0)
        end = time.monotonic() + timeout
        while ws.is_open() and time.monotonic() < end:
            ws.update(timeout=min(1.0, max(0.0, end - time.monotonic())))
        if ws.is_open():
            raise ClusterError(f"{shown} did not finish within {timeout:.0f}s",
                               hint="the command hangs in the pod: run it by hand with kubectl exec")
        out, err = ws.read_stdout() or "", ws.read_stderr() or ""
        rc, msg = parse_status(ws.read_channel(3) or "")
    finally:
        ws.close()
    if rc and msg and msg not in err:
        err = (err + ("\n" if err and not err.endswith("\n") else "") + msg + "\n")
    return ExecResult(namespace, pod, container, argv, rc, out, err, time.monotonic() - start)
