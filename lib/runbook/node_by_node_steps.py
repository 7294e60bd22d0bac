"""One node's move to Cilium (docs/node-by-node.md step 2), each step journaled first.

:func:`migrate_node` runs the steps of :data:`runbook.node_by_node_plan.NODE_STEPS` that
the journal does not record as done, in order, each as ``nbn-<step>`` with the node's
name. Every step is idempotent, so a step a killed run left as an intent is simply run
again:

* ``cordon``: ``spec.unschedulable``; whether the node was schedulable before the run is
  kept once (fact ``nbn_schedulable``), so ``uncordon`` leaves a node a person had
  cordoned as it was;
* ``drain``: :func:`runbook.drain.drain` (Eviction API, PDBs respected, timeout);
* ``label``: ``io.cilium.migration/cilium-default=true`` (the CiliumNodeConfig selects it);
* ``agent``: the node's Cilium agent pod deleted and its replacement waited Ready; it then
  has written ``05-cilium.conflist`` into the folder k3s's containerd reads (checked over
  SSH, with ``cilium-cni`` in the binary folder, I1);
* ``pods``: the node's remaining pods without a CiliumEndpoint (DaemonSet pods the drain
  left) deleted so their controllers re-create them on Cilium (I2: no reboot);
* ``validate``: a probe pod pinned to the node gets an address in the new CIDR, reaches a
  pod on a flannel node and one on a Cilium node, and resolves a name through the
  kube-dns ClusterIP (:func:`validate`);
* ``uncordon``.

Example:
    >>> migrate_node(s, nb, "fast-skunk")   # doctest: +SKIP
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Callable

from . import cilium, dns_probe, drain, pods
from . import node_by_node_plan as nbp
from .cluster import pod_ready
from .errors import ClusterError, NodeError

if TYPE_CHECKING:
    from .node_by_node import NodeByNodePlan
    from .session import Session

__all__ = ["migrate_node", "run_step", "recreate_agent", "restart_node_pods", "validate",
           "AGENT_SELECTOR", "FACT_SCHEDULABLE"]

AGENT_SELECTOR = "k8s-app=cilium"
FACT_SCHEDULABLE = "nbn_schedulable"


def run_step(s: Session, step: str, node: str, action: str, fn: Callable[[], Any],
             data: Any = None) -> Any:
    """Journal ``step`` for ``node`` (``nbn-<step>``) and run ``fn``; a step the journal
    records as done is skipped (returns None)."""
    name = step if step.startswith("nbn-") else nbp.journal_step(step)
    if s.journal.is_done(name, node=node):
        return None
    s.progress(f"{node}: {action}")
    return s.journal.perform(name, action, fn, node=node, data=data)


def _schedulable_before(s: Session, node: str) -> bool:
    """Whether ``node`` was schedulable before this run touched it (kept once)."""
    facts = s.journal.get(FACT_SCHEDULABLE) or {}
    if node not in facts:
        facts[node] = not drain.is_cordoned(s.cluster, node)
        s.journal.set(FACT_SCHEDULABLE, facts)
    return bool(facts[node])


def agent_pod(s: Session, node: str) -> dict | None:
    """The Cilium agent pod on ``node`` (not terminating), or None."""
    ns = s.params.cilium.namespace
    live = [p for p in s.cluster.list("pods", ns, label_selector=AGENT_SELECTOR,
                                      field_selector=f"spec.nodeName={node}")
            if not (p.get("metadata") or {}).get("deletionTimestamp")]
    return live[0] if live else None


def recreate_agent(s: Session, node: str, *, check_files: tuple[str, str] | None = None) -> dict[str, Any]:
    """Delete the agent pod on ``node`` and wait until its replacement is Ready (it reads
    the CiliumNodeConfigs only when it starts, F3). With ``check_files`` ``(conf_dir,
    bin_dir)``, also check over SSH that the agent wrote ``05-cilium.conflist`` and
    ``cilium-cni`` where containerd reads them (False/True in the result)."""
    old = agent_pod(s, node)
    ns = s.params.cilium.namespace
    old_uid = (old or {}).get("metadata", {}).get("uid")
    if old is not None:
        s.cluster.delete("pods", old["metadata"]["name"], ns)

    def check() -> tuple[bool, list[str]]:
        p = agent_pod(s, node)
        if p is None or p["metadata"].get("uid") == old_uid:
            return False, [f"a new Cilium agent pod on {node}"]
        return (True, []) if pod_ready(p) else (False, [f"{p['metadata']['name']} not Ready yet"])

    s.cluster.wait_for(check, timeout=s.params.limits.timeouts.agents_ready,
                       what=f"the Cilium agent on {node} Ready", interval=1.0, progress=s.progress,
                       watch=[("pods", ns)])
    new = agent_pod(s, node) or {}
    out: dict[str, Any] = {"old": (old or {}).get("metadata", {}).get("name"),
                           "new": new.get("metadata", {}).get("name")}
    if check_files is not None:
        n = s.node(node)
        conf, binary = f"{check_files[0]}/{nbp.CONFLIST}", f"{check_files[1]}/cilium-cni"
        out["conflist"] = n.run("test -e %s", conf, sudo=True).ok
        out["cilium_cni"] = n.run("test -e %s", binary, sudo=True).ok
        if not out["conflist"]:
            raise NodeError(f"the Cilium agent on {node} is Ready but {conf} is not there: containerd "
                            "would keep giving new pods flannel's network", node=node,
                            hint="check the CiliumNodeConfig (kubectl -n kube-system get ciliumnodeconfig "
                                 f"{nbp.CNC_NAME} -o yaml), the node's label {nbp.LABEL}, and the values' "
                                 "cni.confPath; then re-run (this step is repeated)")
        if not out["cilium_cni"]:
            raise NodeError(f"{binary} is missing on {node}: containerd could not run Cilium's plugin",
                            node=node, hint="check cni.binPath against the bin_dir of the node's "
                                            "containerd config.toml (F8 in docs/node-by-node.md)")
    return out


def restart_node_pods(s: Session, node: str, *, action: str) -> dict[str, Any]:
    """Delete the pods on ``node`` that Cilium does not manage (no CiliumEndpoint) so their
    owners re-create them on the CNI containerd now loads (F12, F13); waits for the
    replacements. Pods of a custom resource's operator are left (listed)."""
    cands = [p for p in cilium.restart_candidates(s.cluster) if (p.get("spec") or {}).get("nodeName") == node]
    rp = pods.plan_restart(cands, policy=pods.policy_for("install"))
    res = pods.restart(s.cluster, rp, action=action, batch_size=s.params.limits.pod_restart_batch,
                       execute=True, journal=s.journal, timeout=s.params.limits.timeouts.pods_ready,
                       timeout_scope="run", progress=s.progress)
    return {"deleted": len(res.deleted), "skipped": [str(sk) for sk in res.skipped]}


# ---------------------------------------------------------------------------- validate
def _reach(s: Session, probe: dict, ip: str, port: int) -> str:
    """"" when something at ``ip:port`` answered the probe pod, else why not."""
    md = probe["metadata"]
    r = s.cluster.exec(md["namespace"], md["name"], ["wget", "-q", "-O-", "-T", "3", f"http://{ip}:{port}/"],
                       timeout=25)
    text = f"{r.stdout}\n{r.stderr}"
    if r.ok or any(w in text for w in ("refused", "404", "Not Found", "400", "403", "401")):
        return ""
    return " ".join(text.split())[:160] or f"rc={getattr(r, 'rc', '?')}"


def _targets(pod_list: list[dict], cidr: str, probe_node: str) -> dict[str, tuple[dict, int] | None]:
    """A Ready pod with a TCP port on a flannel node (address outside ``cidr``) and one on
    Cilium (inside), another node's first when there is one."""
    found: dict[str, list[tuple[dict, int]]] = {"flannel": [], "cilium": []}
    for p in pod_list:
        spec, st = p.get("spec") or {}, p.get("status") or {}
        if spec.get("hostNetwork") or not pod_ready(p) or not st.get("podIP"):
            continue
        port = next((cp.get("containerPort") for c in spec.get("containers") or ()
                     for cp in c.get("ports") or () if cp.get("protocol", "TCP") == "TCP"), None)
        if port:
            found["cilium" if nbp.in_cidr(st["podIP"], cidr) else "flannel"].append((p, int(port)))
    return {k: min(v, key=lambda t: (t[0]["spec"].get("nodeName") == probe_node, t[0]["metadata"]["name"]),
                   default=None) for k, v in found.items()}


def validate(s: Session, node: str, *, cidr: str, image: str, timeout: float) -> dict[str, Any]:
    """Step 2.6: a probe pod on ``node`` gets an address in ``cidr``, reaches a pod on each
    overlay, and resolves ``kubernetes.default`` through the kube-dns ClusterIP. The probe
    pod is deleted afterwards, whatever the outcome.

    Raises:
        NodeError: one line per check that failed (the node stays cordoned).
    """
    ns = s.params.cilium.namespace
    man = nbp.probe_pod_manifest(node, image=image, namespace=ns, run_id=s.run_id)
    name = man["metadata"]["name"]
    s.cluster.delete("pods", name, ns)
    s.cluster.wait_for(lambda: (s.cluster.get("pods", name, ns) is None, [f"old {name} gone"]),
                       timeout=60, what=f"a leftover {name} gone", interval=0.5)
    s.cluster.create("pods", man, ns)
    out: dict[str, Any] = {"pod": f"{ns}/{name}"}
    problems: list[str] = []
    try:
        def up() -> tuple[bool, list[str]]:
            p = s.cluster.get("pods", name, ns) or {}
            return pod_ready(p) and bool((p.get("status") or {}).get("podIP")), [f"{name} Running with an address"]
        s.cluster.wait_for(up, timeout=timeout, what=f"the probe pod on {node}", interval=1.0,
                           progress=s.progress, watch=[("pods", ns)])
        probe = s.cluster.get("pods", name, ns) or {}
        ip = probe["status"]["podIP"]
        out["address"] = ip
        if not nbp.in_cidr(ip, cidr):
            problems.append(f"the probe pod got {ip}, outside the new pod CIDR {cidr}: containerd on {node} "
                            "still loads flannel's CNI config")
        for overlay, target in _targets(s.cluster.list("pods"), cidr, node).items():
            if target is None:
                out[f"reach_{overlay}"] = f"no Ready pod with a TCP port on {overlay} to probe"
                continue
            p, port = target
            why = _reach(s, probe, p["status"]["podIP"], port)
            out[f"reach_{overlay}"] = (f"{p['metadata']['namespace']}/{p['metadata']['name']} "
                                       f"({p['status']['podIP']}:{port} on {p['spec'].get('nodeName')}): "
                                       + (why or "answered"))
            if why:
                problems.append(f"no answer from a pod on {overlay}: {out[f'reach_{overlay}']}")
        dns = dns_probe.service_ip(s.cluster, "kube-system", "kube-dns")
        api = dns_probe.service_ip(s.cluster, "default", "kubernetes")
        if dns and api:
            got = dns_probe.from_pod(s.cluster, probe, server=dns, expect=api)
            out["dns"] = f"{got.tool} via {dns}: {got.answer}" if got else "no nslookup in the probe image"
            if got is None or not got.ok:
                problems.append(f"DNS through the kube-dns ClusterIP {dns}: {out['dns']}")
        else:
            out["dns"] = "no kube-dns or kubernetes Service: not probed"
    except (ClusterError, NodeError) as e:
        problems.append(f"{type(e).__name__}: {e}")
    finally:
        s.cluster.delete("pods", name, ns)
    if problems:
        raise NodeError(f"{node} is not validated on Cilium: " + "; ".join(problems), node=node,
                        hint=f"the node stays cordoned; look at the Cilium agent on {node} "
                             "(cilium-dbg status) and re-run (validation is repeated), or run 05-rollback")
    return out


# ---------------------------------------------------------------------------- one node
def migrate_node(s: Session, nb: NodeByNodePlan, node: str) -> None:
    """Every step of ``node`` the journal does not record as done (see the module)."""
    t0 = time.monotonic()
    nbn = s.params.node_by_node
    schedulable = _schedulable_before(s, node)
    run_step(s, "cordon", node, f"cordon {node}", lambda: drain.cordon(s.cluster, node) and None,
             data={"schedulable_before": schedulable})
    run_step(s, "drain", node, f"drain {node} through the Eviction API (PDBs respected, "
             f"{nbn.drain_timeout:.0f}s at most)",
             lambda: drain.drain(s.cluster, node, timeout=nbn.drain_timeout, retry=nbn.eviction_retry,
                                 delete_pdbs=nbn.delete_instead_of_evict, journal=s.journal,
                                 progress=s.progress).to_dict())
    run_step(s, "label", node, f"label {node} {nbp.LABEL}=true",
             lambda: s.cluster.patch("nodes", node, {"metadata": {"labels": {nbp.LABEL: "true"}}}) and None)
    run_step(s, "agent", node, f"re-create the Cilium agent pod on {node} (it reads the CiliumNodeConfig)",
             lambda: recreate_agent(s, node, check_files=(nb.conf_dir, nb.bin_dir)))
    run_step(s, "pods", node, f"re-create the pods left on {node} so they get Cilium's network",
             lambda: restart_node_pods(s, node, action=f"delete {{n}} pod(s) left on {node} so they "
                                                        "are re-created on Cilium"))
    run_step(s, "validate", node, f"validate {node} with a probe pod pinned to it",
             lambda: validate(s, node, cidr=nb.cidr, image=nbn.probe_image, timeout=nbn.probe_timeout))
    run_step(s, "uncordon", node, f"uncordon {node}" if schedulable else
             f"leave {node} cordoned (it was before the run)",
             lambda: (drain.uncordon(s.cluster, node) if schedulable else None) or {"uncordoned": schedulable})
    s.progress(f"{node}: on Cilium ({time.monotonic() - t0:.0f}s)")
