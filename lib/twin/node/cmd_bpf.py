"""``bpftool`` on a twin node: what is attached to the NICs and the cgroups, and the maps.

Subcommands (root only, as on a node where the bpf() syscall is closed to users):

- ``bpftool net [show|list] [dev IFACE]``: the ``tc:`` section lists programs on each
  device (``tcx/ingress`` links on kernels >= 6.6, ``clsact/...`` filters before);
- ``bpftool cgroup tree [CGROUP_ROOT]``: programs per cgroup (systemd's own on its
  slices, Cilium's socket LB on the root ``/sys/fs/cgroup``);
- ``bpftool map [show|list] [-f]``: the maps (``-f`` adds their pins);
- ``bpftool prog [show|list]``: the programs.
``-j``/``--json`` gives JSON for ``net``, ``cgroup tree`` and ``map``.

Example:
    >>> await bpftool(node, ["net", "show"], Ctx(root=True, stdin=b""))  # doctest: +SKIP
"""
from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING

from .bpf import CGROUP_ROOT
from .shell import Ctx, ExecResult, result

if TYPE_CHECKING:
    from .model import NodeModel

# systemd attaches these to its units on every boot (firewall and device programs).
SYSTEMD_CGROUP = (
    ("system.slice/systemd-udevd.service", (("cgroup_inet_ingress", "sd_fw_ingress"),
                                            ("cgroup_inet_egress", "sd_fw_egress"),
                                            ("cgroup_device", "sd_devices"))),
    ("system.slice/systemd-journald.service", (("cgroup_inet_ingress", "sd_fw_ingress"),
                                               ("cgroup_inet_egress", "sd_fw_egress"),
                                               ("cgroup_device", "sd_devices"))),
)
USAGE = ("Usage: bpftool [OPTIONS] OBJECT { COMMAND | help }\n"
         "       OBJECT := { prog | map | link | cgroup | perf | net | feature | btf | gen | struct_ops | iter }\n"
         "       OPTIONS := { {-j|--json} [{-p|--pretty}] | {-d|--debug} | {-f|--bpffs} }\n")


def _tag(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()[:16]


async def bpftool(node: NodeModel, args: list[str], ctx: Ctx) -> ExecResult:
    opts = {a for a in args if a.startswith("-")}
    words = [a for a in args if not a.startswith("-")]
    as_json = bool({"-j", "--json", "-p", "--pretty"} & opts)
    if not words or words[0] in ("help", "version"):
        if words and words[0] == "version" or "-V" in opts or "--version" in opts:
            return result(0, "bpftool v7.4.0\nusing libbpf v1.4\nfeatures: llvm, skeletons\n")
        return result(0 if words else 255, USAGE if words else "", "" if words else USAGE)
    obj, verb = words[0], (words[1] if len(words) > 1 else "show")
    if not ctx.root:
        what = {"net": "netlink", "cgroup": "cgroup", "map": "next map", "prog": "next program"}.get(obj, obj)
        return result(255, err=f"Error: can't get {what}: Operation not permitted\n")
    bpf = node.bpf
    if obj == "net" and verb in ("show", "list"):
        dev = words[3] if len(words) > 3 and words[2] == "dev" else None
        progs = [p for p in bpf.tc_programs() if dev is None or p.dev == dev]
        if as_json:
            tc = [{"devname": p.dev, "ifindex": p.ifindex, "kind": "tcx/" + p.direction if p.link_id is not None
                   else "clsact/" + p.direction, "name": p.name, "prog_id": p.prog_id,
                   **({"link_id": p.link_id} if p.link_id is not None else {})} for p in progs]
            return result(0, json.dumps([{"xdp": [], "tc": tc, "flow_dissector": [], "netfilter": []}]) + "\n")
        return result(0, "xdp:\n\ntc:\n" + "".join(p.net_line() + "\n" for p in progs)
                      + "\nflow_dissector:\n\nnetfilter:\n\n")
    if obj == "cgroup" and verb == "tree":
        root = (words[2] if len(words) > 2 else CGROUP_ROOT).rstrip("/") or "/"
        rows: list[tuple[str, list[tuple[int, str, str]]]] = []
        cil = [(p.prog_id, p.attach_type, p.name) for p in bpf.cgroup_programs()]
        if root in (CGROUP_ROOT, "/run/cilium/cgroupv2") and cil:
            rows.append((root, cil))
        for i, (unit, progs) in enumerate(SYSTEMD_CGROUP):
            path = f"{CGROUP_ROOT}/{unit}"
            if path.startswith(root):
                rows.append((path, [(20 + 3 * i + j, t, n) for j, (t, n) in enumerate(progs)]))
        if as_json:
            return result(0, json.dumps([{"cgroup": path, "programs": [
                {"id": pid, "attach_type": t, "attach_flags": "multi", "name": n} for pid, t, n in progs]}
                for path, progs in rows]) + "\n")
        text = "CgroupPath\nID       AttachType      AttachFlags     Name           \n"
        for path, progs in rows:
            text += path + "\n" + "".join(f"    {pid:<8} {t:<15} {'multi':<15} {n}\n" for pid, t, n in progs)
        return result(0, text)
    if obj == "map" and verb in ("show", "list"):
        maps = bpf.maps()
        if as_json:
            return result(0, json.dumps([{"id": m.map_id, "type": m.kind, "name": m.name[:15], "flags": 0,
                                          "bytes_key": m.key, "bytes_value": m.value,
                                          "max_entries": m.max_entries,
                                          **({"pinned": [m.path]} if "-f" in opts or "--bpffs" in opts else {})}
                                         for m in maps]) + "\n")
        out = ""
        for m in sorted(maps, key=lambda m: m.map_id):
            out += (f"{m.map_id}: {m.kind}  name {m.name[:15]}  flags 0x0\n"
                    f"\tkey {m.key}B  value {m.value}B  max_entries {m.max_entries}  memlock "
                    f"{(m.key + m.value) * m.max_entries}B\n")
            if "-f" in opts or "--bpffs" in opts:
                out += f"\tpinned {m.path}\n"
        return result(0, out)
    if obj == "prog" and verb in ("show", "list"):
        progs = [(p.prog_id, "sched_cls", p.name) for p in bpf.tc_programs()]
        progs += [(p.prog_id, "cgroup_sock_addr" if "sock_release" not in p.name else "cgroup_sock", p.name)
                  for p in bpf.cgroup_programs()]
        out = "".join(f"{pid}: {kind}  name {name}  tag {_tag(name)}  gpl\n\tloaded_at 2026-11-02T08:00:00+0000  "
                      f"uid 0\n\txlated 4096B  jited 2584B  memlock 8192B\n" for pid, kind, name in sorted(progs))
        return result(0, out)
    return result(255, err=f'Error: unknown command "{verb}" for {obj} (the twin supports net show, '
                           "cgroup tree, map show, prog show)\n")
