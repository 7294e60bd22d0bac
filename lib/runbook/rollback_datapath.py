"""The rollback's removal of Cilium from the nodes: its files, its datapath, its CRDs, and
what ``k3s-killall.sh`` would remove.

``helm uninstall`` removes Cilium's pods and nothing they left on the nodes (docs/cilium-on-k3s.md
§4, :mod:`runbook.datapath`). These steps take the node back to what flannel left:

1. :func:`record_image` keeps the agent image of the release (journal fact
   ``cilium_image``) before the uninstall takes its DaemonSet away;
2. :func:`remove_crds` (only with ``rollback.remove_crds``) saves every cilium.io object in
   the run folder, journals the file, then deletes the CRDs;
3. :func:`cleanup_nodes`, on every node Cilium may have run on: reads what is left; moves
   Cilium's files to the backup folder (its CNI config, its CNI binary, its sysctl
   override; each path and backup journaled first), then re-applies the remaining sysctl
   files (``systemctl restart systemd-sysctl``, the unit Cilium's ``sysctlfix`` restarted
   to apply its own file); then, unless the node is rebooted, runs Cilium's own cleanup
   in a pod on the node (:mod:`runbook.cilium_cleanup`), only where something is left. The
   waits for the agents to go and for each cleanup pod wake on a pods watch; they poll
   only while no watch can be opened;
4. :func:`killall_cleanup`, with k3s stopped (not on a node-by-node node already on
   flannel, whose k3s keeps running and owns these): the ``CNI-*`` chains (the portmap plugin's
   hostPort rules, whose pods are gone) and kube-router's ipsets, as ``k3s-killall.sh``
   would. k3s's script removes the chains (``grep -v CNI-``); it destroys no ipset (read
   in k3s's ``install.sh``, which writes the script): the sets are kernel objects that
   only ``ipset destroy`` or a reboot clear, so they are destroyed here, after the
   KUBE-ROUTER chains that use them are gone and before kube-router starts again.

Every step skips what the journal records as done in this rollback, and what is absent.

Example:
    >>> rollback_datapath.cleanup_nodes(s, plan)       # doctest: +SKIP
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pandas as pd

from . import cilium_cleanup, datapath
from .errors import NodeError, WaitTimeout
from .leftovers import backup_name, move_aside
from .rollback_checks import nodes_named
from .rollback_plan import STEP_CRDS, STEP_FILES, STEP_KILLALL, RollbackPlan

if TYPE_CHECKING:
    from .nodes import Node
    from .session import Session

__all__ = ["CNI_CHAIN_PREFIXES", "IPSET_PREFIXES", "record_image", "cilium_image", "remove_crds",
           "cleanup_nodes", "killall_cleanup", "ipsets_to_destroy"]

#: chains of the CNI plugins (portmap's CNI-HOSTPORT-*, CNI-DN-*), as k3s-killall.sh removes them
CNI_CHAIN_PREFIXES = ("CNI-",)
#: kube-router's sets (network policy selectors, and its own address sets)
IPSET_PREFIXES = ("KUBE-SRC-", "KUBE-DST-", "KUBE-POD-FW-", "kube-router-")
SYSCTL_UNIT = "systemd-sysctl"



# =========================================================================== the image
def record_image(s: Session, rp: RollbackPlan) -> str | None:
    """Keep the agent image of the release (journal fact ``cilium_image``) while its
    DaemonSet still exists: the cleanup pods run that image, already on the nodes."""
    if not rp.helm_uninstall:
        return None
    ns = rp.helm_uninstall["namespace"]
    ds = s.cluster.get("daemonsets", "cilium", ns)
    containers = ((((ds or {}).get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers") or []
    img = next((c.get("image") for c in containers if c.get("name") == "cilium-agent"), None)
    if img and s.execute:
        s.journal.set("cilium_image", img)
    return img or s.journal.get("cilium_image")


def cilium_image(s: Session) -> str:
    """The agent image: the journal's (what the release ran), else the values'."""
    return s.journal.get("cilium_image") or cilium_cleanup.image_from_values(s.values, s.params.cilium.version)


# =========================================================================== CRDs
def remove_crds(s: Session, rp: RollbackPlan) -> pd.DataFrame | str:
    """Delete the cilium.io CRDs (and so their objects) when ``rollback.remove_crds``; every
    object is first saved in ``snapshots/rollback/cilium-objects.json`` and journaled."""
    if not rp.helm_uninstall:
        return "not needed: Cilium was never installed"
    if not rp.remove_crds:
        return ("kept: rollback.remove_crds is false (the cilium.io CRDs and their objects do "
                "nothing without Cilium; a later attempt reuses them)")
    if rp.crds_done:
        return "already done in this rollback"
    crds = [c for c in s.cluster.list("customresourcedefinitions")
            if (c.get("spec") or {}).get("group", "").endswith("cilium.io")]
    rows = []
    objects: dict[str, list[dict]] = {}
    for c in crds:
        spec = c["spec"]
        version = next((v["name"] for v in spec.get("versions") or () if v.get("storage")),
                       (spec.get("versions") or [{}])[0].get("name"))
        path = f"/apis/{spec['group']}/{version}/{spec['names']['plural']}"
        items = (s.cluster.request("GET", path, ok_missing=True) or {}).get("items") or []
        objects[c["metadata"]["name"]] = items
        rows.append({"crd": c["metadata"]["name"], "objects": len(items)})
    table = pd.DataFrame(rows, columns=["crd", "objects"])
    if not s.require_execute(f"deleting {len(crds)} cilium.io CRD(s)"):
        return table
    saved = s.save("cilium-objects", objects)

    def do() -> dict[str, Any]:
        for name in objects:
            s.cluster.delete("customresourcedefinitions", name)
        return {"deleted": sorted(objects)}

    s.journal.perform(STEP_CRDS, f"delete {len(objects)} cilium.io CRD(s) and their objects", do,
                      data={"crds": {k: len(v) for k, v in objects.items()}, "objects_file": str(saved)})
    return table


# =========================================================================== files + cleanup
def _sysctl_reapply(n: Node) -> str:
    r = n.run("systemctl restart %s", SYSCTL_UNIT, sudo=True)
    if r.ok:
        return "re-applied (systemctl restart systemd-sysctl)"
    return (f"NOT re-applied ({(r.stderr or r.stdout).strip()[:120]}): run `sudo sysctl --system` "
            "or reboot the node")


def _move_files(s: Session, n: Node, present: list[str]) -> dict[str, Any]:
    plan = [{"path": f, "backup": backup_name(f, s.params.paths.backup_dir, s.run_id) + ".rollback"}
            for f in present]

    def do() -> dict[str, Any]:
        moved = []
        for f in plan:
            if n.exists(f["path"]):
                moved.append({"path": f["path"], "backup": move_aside(n, f["path"], f["backup"])})
        out: dict[str, Any] = {"moved": moved}
        if any(m["path"] == datapath.SYSCTL_FILE for m in moved):
            out["sysctl"] = _sysctl_reapply(n)
        return out

    return s.journal.perform(STEP_FILES, "move Cilium's files to the backup folder", do, node=n.name,
                             data={"files": plan})


def _cleanup_one(s: Session, n: Node, rp: RollbackPlan) -> str:
    files = rp.cilium_files
    before = datapath.gather(n, files=files)
    said = []
    if before.files:
        res = _move_files(s, n, before.files)
        said.append(f"moved {len(res['moved'])} file(s) to {s.params.paths.backup_dir}"
                    + (f"; sysctl {res['sysctl']}" if res.get("sysctl") else ""))
    if rp.rebooted(rp.node(n.name)):
        said.append("kernel state left for the reboot" if before.kernel_state else "no kernel state")
        return "; ".join(said)
    # bpftool missing: the kernel state is unknown, so Cilium's cleanup runs anyway
    if before.needs_cleanup or before.bpftool is False:
        out = cilium_cleanup.run_on_node(s, n.name, image=cilium_image(s),
                                         namespace=rp.helm_uninstall["namespace"] if rp.helm_uninstall
                                         else s.params.cilium.namespace,
                                         cni_conf_dir=datapath.cni_dirs(s.values)[0],
                                         timeout=s.params.limits.timeouts.cleanup)
        said.append(str(out))
    else:
        said.append("Cilium's cleanup not needed: no BPF state, device or state folder left")
    return "; ".join(said)


def cleanup_nodes(s: Session, rp: RollbackPlan) -> Any:
    """On every node Cilium may have run on: its files to the backup folder, then (unless
    the node is rebooted) Cilium's own cleanup in a pod, where anything is left.

    A node where no agent ever ran has nothing left: nothing is done there. Leftover
    cleanup pods of a crashed attempt are deleted first.
    """
    names = [n.node for n in rp.nodes if n.remove_cilium_cni]
    if not names:
        return "not needed: Cilium was never installed"
    cleaned = [n for n in names if not rp.rebooted(rp.node(n))]
    if not s.require_execute("removing Cilium's files" + (" and running its cleanup on " + ", ".join(cleaned)
                                                         if cleaned else "")):
        return None
    ns = rp.helm_uninstall["namespace"] if rp.helm_uninstall else s.params.cilium.namespace
    def agents_gone() -> tuple[bool, list[str]]:
        left = [f"{p['metadata']['name']} on {(p.get('spec') or {}).get('nodeName')}"
                for p in s.cluster.list("pods", ns, label_selector="k8s-app=cilium")
                if (p.get("spec") or {}).get("nodeName") in names]
        return not left, left

    try:   # the agents' pods end after the uninstall (their grace period): wait for them
        s.cluster.wait_for(agents_gone, timeout=s.params.limits.timeouts.cleanup,
                           what="the Cilium agent pods gone", interval=cilium_cleanup.POLL,
                           progress=s.progress, watch=[("pods", ns)],
                           watched_interval=cilium_cleanup.RECHECK)
    except WaitTimeout as e:
        raise NodeError("Cilium agent pods still exist: " + ", ".join(e.pending), node=None,
                        hint="helm uninstall has not removed them (Cilium's cleanup refuses while an "
                             "agent runs): `kubectl -n kube-system get pods -l k8s-app=cilium -o wide`; "
                             "once they are gone run this notebook again") from e
    cilium_cleanup.sweep(s, ns)
    return s.fleet(nodes_named(s, names)).apply(lambda n: _cleanup_one(s, n, rp),
                                               description="Cilium's files and cleanup").raise_for_failures()


# =========================================================================== killall
def ipsets_to_destroy(names: list[str]) -> list[str]:
    """kube-router's sets among ``ipset list -n`` (pure).

    >>> ipsets_to_destroy(["KUBE-DST-3NZMGJNSV3DLUS5W", "my-firewall", "kube-router-local-ips"])
    ['KUBE-DST-3NZMGJNSV3DLUS5W', 'kube-router-local-ips']
    """
    return [n for n in names if n.startswith(IPSET_PREFIXES)]


def _killall_one(s: Session, n: Node) -> dict[str, Any]:
    summary = n.iptables_summary(prefixes=list(CNI_CHAIN_PREFIXES))
    r = n.run("ipset list -n", sudo=True)
    sets = ipsets_to_destroy(r.stdout.split()) if r.ok else []
    if not summary.chains.get("CNI-") and not summary.rules.get("CNI-") and not sets:
        return {"chains_removed": 0, "ipsets_destroyed": [], "note": "nothing to remove"}

    def do() -> dict[str, Any]:
        rm = n.remove_chains(list(CNI_CHAIN_PREFIXES))
        destroyed, kept = [], []
        for name in sets:
            d = n.run("ipset destroy %s", name, sudo=True)
            if d.ok or "does not exist" in d.stderr:
                destroyed.append(name)
            else:
                kept.append(f"{name}: {d.stderr.strip()}")
        if kept:
            raise NodeError("kube-router ipsets could not be destroyed: " + "; ".join(kept), node=n.name,
                            hint="an iptables rule still matches on them: list them with `sudo "
                                 "iptables-save | grep match-set`; a reboot clears them too")
        return {"chains_removed": rm.before.chains.get("CNI-", 0), "rules_removed": rm.removed_lines,
                "ipsets_destroyed": destroyed}

    return s.journal.perform(STEP_KILLALL, "remove CNI-* chains and kube-router ipsets", do, node=n.name,
                             data={"chains": dict(summary.chains), "ipsets": sets})


def killall_cleanup(s: Session, rp: RollbackPlan) -> Any:
    """With k3s stopped on them: on every node the rollback restarts, remove the ``CNI-*``
    chains (as ``k3s-killall.sh`` does) and destroy kube-router's ipsets (which it leaves)."""
    if rp.reboot_nodes:
        return "not needed: the reboot clears iptables and ipsets"
    names = [n.node for n in rp.nodes if n.restart and not {"start-k3s", STEP_KILLALL} & set(n.done)]
    if not names or not s.require_execute("removing the CNI-* chains and kube-router ipsets"):
        return None
    return s.fleet(nodes_named(s, names)).apply(lambda n: _killall_one(s, n),
                                               description="CNI-* chains and kube-router ipsets"
                                               ).raise_for_failures()

