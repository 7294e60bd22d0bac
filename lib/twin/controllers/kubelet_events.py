"""What the kubelet reports when a pod's status changes: events and container logs (pure).

:func:`status_changes` compares a pod's status before and after a kubelet write and
lists what a kubelet records at that moment, in its words:

=====================================  =====================================================
change of a container                   events (reason: message) and logs
=====================================  =====================================================
starts (first run or a restart)         Pulled (``already present on machine``, or Pulling +
                                        Pulled ``Successfully pulled image``), Created,
                                        Started; a restart makes the current log the previous
ErrImagePull                            Pulling, Failed ``Failed to pull image ...``,
                                        Failed ``Error: ErrImagePull``
ImagePullBackOff                        BackOff ``Back-off pulling image``, Failed
                                        ``Error: ImagePullBackOff``
CrashLoopBackOff (after an exit)        the crash's lines logged; BackOff ``Back-off
                                        restarting failed container ...``
exits for good                          its output logged
pod waits for a sandbox                 NetworkNotReady (no CNI) or FailedCreatePodSandBox
=====================================  =====================================================
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .pod_status import NETWORK_NOT_READY_MESSAGE


@dataclass
class Report:
    """One thing to record: an event (``reason`` set) and/or log lines of ``container``.

    ``restart_log``: the container starts a new instance (its log becomes the previous).
    """

    container: str | None
    etype: str = "Normal"
    reason: str = ""
    message: str = ""
    restart_log: bool = False
    log_lines: tuple[str, ...] = field(default_factory=tuple)
    ended: bool = False           # the instance exited: log followers' streams end


def _state(cs: dict | None) -> tuple[str | None, dict]:
    state = (cs or {}).get("state") or {}
    kind = next(iter(state), None)
    return kind, state.get(kind) or {}


def status_changes(pod: dict, new_status: dict, *, image_present: bool,
                   start_lines: dict[str, tuple[str, ...]], exit_lines: dict[str, tuple[str, ...]],
                   crash_lines: tuple[str, ...] = ()) -> list[Report]:
    """What to record for the change of ``pod``'s status to ``new_status`` (see module doc).

    Args:
        image_present: the node already has the images (``IfNotPresent``).
        start_lines: container -> lines its program writes when it starts.
        exit_lines: container -> lines its program wrote before it exited by itself.
        crash_lines: what a crash-looping container (of a policy) says before it dies.
    """
    md = pod.get("metadata") or {}
    old = {c.get("name"): c for c in (pod.get("status") or {}).get("containerStatuses") or ()}
    images = {c.get("name"): c.get("image", "") for c in (pod.get("spec") or {}).get("containers") or ()}
    pull_policy = {c.get("name"): c.get("imagePullPolicy") or "IfNotPresent"
                   for c in (pod.get("spec") or {}).get("containers") or ()}
    out: list[Report] = []
    for cs in new_status.get("containerStatuses") or ():
        name = cs.get("name", "")
        prev = old.get(name)
        okind, odetail = _state(prev)
        nkind, ndetail = _state(cs)
        restarts = int(cs.get("restartCount") or 0)
        orestarts = int((prev or {}).get("restartCount") or 0)
        image = images.get(name, cs.get("image", ""))
        if nkind == "running" and (okind != "running" or restarts != orestarts):
            if image_present and pull_policy.get(name) != "Always":
                out.append(Report(name, "Normal", "Pulled",
                                  f'Container image "{image}" already present on machine'))
            else:
                out.append(Report(name, "Normal", "Pulling", f'Pulling image "{image}"'))
                out.append(Report(name, "Normal", "Pulled",
                                  f'Successfully pulled image "{image}" in 1.2s (1.2s including waiting)'))
            out.append(Report(name, "Normal", "Created", f"Created container: {name}",
                              restart_log=bool(restarts or okind == "terminated" or
                                               (okind == "waiting" and odetail.get("reason") == "CrashLoopBackOff")),
                              log_lines=start_lines.get(name, ())))
            out.append(Report(name, "Normal", "Started", f"Started container {name}"))
        elif nkind == "waiting":
            reason = ndetail.get("reason")
            if reason == odetail.get("reason") and restarts == orestarts:
                continue
            if reason == "ErrImagePull":
                out.append(Report(name, "Normal", "Pulling", f'Pulling image "{image}"'))
                out.append(Report(name, "Warning", "Failed",
                                  f'Failed to pull image "{image}": {ndetail.get("message", "")}'))
                out.append(Report(name, "Warning", "Failed", "Error: ErrImagePull"))
            elif reason == "ImagePullBackOff":
                out.append(Report(name, "Normal", "BackOff", f'Back-off pulling image "{image}"'))
                out.append(Report(name, "Warning", "Failed", "Error: ImagePullBackOff"))
            elif reason == "CrashLoopBackOff" and restarts != orestarts:
                lines = crash_lines or exit_lines.get(name, ())
                out.append(Report(name, "Warning", "BackOff",
                                  f"Back-off restarting failed container {name} in pod "
                                  f"{md.get('name', '')}_{md.get('namespace', '')}({md.get('uid', '')})",
                                  restart_log=okind != "running" and orestarts > 0 and okind is not None,
                                  log_lines=lines, ended=True))
        elif nkind == "terminated" and okind == "running":
            out.append(Report(name, log_lines=exit_lines.get(name, ()), ended=True))
    waiting_msgs = [(_state(c)[1].get("reason"), _state(c)[1].get("message"))
                    for c in new_status.get("containerStatuses") or () if _state(c)[0] == "waiting"]
    old_msgs = [(_state(c)[1].get("reason"), _state(c)[1].get("message")) for c in old.values()
                if _state(c)[0] == "waiting"]
    if waiting_msgs and waiting_msgs[0] != (old_msgs[0] if old_msgs else None):
        reason, message = waiting_msgs[0]
        if reason == "ContainerCreating" and message == NETWORK_NOT_READY_MESSAGE:
            out.append(Report(None, "Warning", "NetworkNotReady", message))
        elif reason == "ContainerCreating" and message and message.startswith("Failed to create pod sandbox"):
            out.append(Report(None, "Warning", "FailedCreatePodSandBox", message))
    return out
