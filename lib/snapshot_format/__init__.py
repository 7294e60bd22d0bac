"""The cluster snapshot archive: one format, written by ``runbook snapshot``, read by the twin.

A snapshot is a gzipped tar of JSON documents (``docs/snapshot-format.md`` describes
every field)::

    manifest.json          format name, version, when, from what, one entry per document
    cluster.json           cluster-wide facts (name, versions, CIDRs, flannel backend, add-ons)
    nodes.json             per node: roles, labels, taints, addresses, capacity, and what
                           SSH showed (k3s config files, ip -o link, iptables, CNI folders)
    secrets.json           every Secret by namespace, name and type: never its data
    params.json            the runbook params and Cilium values the snapshot was taken with
    objects/<g>_<v>_<plural>.json   the objects of one resource type, as the API served them

The same layout unpacked into a directory reads the same way. The topology fixtures
(``tests/fixtures/topologies/<name>.snapshot.tar.gz``) are written with :func:`write`
from edited minicloud data (``tests/fixtures/topologies/build.py``).

This package is pure data handling (no network, no Kubernetes client): the runbook's
``snapshot`` command writes with it, and the twin reads with it, so neither imports the
other. The version is ``MAJOR.MINOR``: a reader takes any minor of its major (newer
minors only add fields) and refuses another major with :class:`SnapshotVersionError`.

Example:
    >>> snap = Snapshot(cluster={"name": "c"}, nodes=[], objects={}, secrets=[])
    >>> snap.manifest_version()
    '1.0'
"""
from __future__ import annotations

from .archive import (DOCUMENTS, FORMAT, MAJOR, VERSION, Snapshot, objects_document,
                      read, read_manifest, write)
from .errors import SnapshotFormatError, SnapshotVersionError

__all__ = ["DOCUMENTS", "FORMAT", "MAJOR", "VERSION", "Snapshot", "SnapshotFormatError",
           "SnapshotVersionError", "objects_document", "read", "read_manifest", "write"]
