"""Which programs an image ships: ``kubectl exec`` of a program the image lacks fails as
runc makes it fail ("executable file not found in $PATH", exit 127).

Facts, by the base each image is built from (its Dockerfile upstream):

- **scratch or distroless** (no shell, no network tool): CoreDNS (``FROM`` a distroless
  static image), Cilium's operator and Hubble Relay (distroless static), metrics-server
  and kube-state-metrics (distroless static), the pause image (a static binary);
- **busybox**: busybox's applets ``nslookup``, ``wget``, ``httpd``, ``sh``, ``cat``, ``echo``,
  ``hostname``, ``env``; no ``curl``, ``dig`` or ``getent``.

Any other image is assumed to have the tools the twin knows (the images of the fixture are
mostly Debian- or Alpine-based applications); a snapshot's unknown images too.

Example:
    >>> missing("rancher/mirrored-coredns-coredns:1.12.0", "nslookup")
    True
    >>> missing("docker.io/library/busybox:1.37", "curl"), missing("busybox", "wget")
    (True, False)
    >>> missing("ghcr.io/stefanprodan/podinfo:6.7.1", "curl")
    False
"""
from __future__ import annotations

__all__ = ["DISTROLESS", "BUSYBOX", "BUSYBOX_APPLETS", "repository", "missing"]

#: repositories (registry removed, tag and digest removed) with no program at all
DISTROLESS = ("coredns/coredns", "rancher/mirrored-coredns-coredns", "cilium/operator-generic",
              "cilium/operator", "cilium/hubble-relay", "metrics-server/metrics-server",
              "rancher/mirrored-metrics-server", "kube-state-metrics/kube-state-metrics", "pause",
              "rancher/mirrored-pause")
BUSYBOX = ("library/busybox", "busybox")
BUSYBOX_APPLETS = frozenset({"nslookup", "wget", "httpd", "sh", "cat", "echo", "hostname", "env", "true",
                             "false"})
_REGISTRIES = ("docker.io/", "quay.io/", "registry.k8s.io/", "ghcr.io/", "gcr.io/", "index.docker.io/")


def repository(image: str) -> str:
    """``quay.io/cilium/hubble-relay:v1.19.3@sha256:…`` -> ``cilium/hubble-relay``."""
    ref = image.split("@", 1)[0]
    last = ref.rsplit("/", 1)
    if ":" in last[-1]:
        ref = ref[: len(ref) - len(last[-1])] + last[-1].split(":", 1)[0]
    for reg in _REGISTRIES:
        if ref.startswith(reg):
            return ref[len(reg):]
    return ref


def missing(image: str, program: str) -> bool:
    """Whether ``image`` lacks ``program`` (so an exec of it fails with exit 127)."""
    repo = repository(image)
    if repo in DISTROLESS:
        return True
    if repo in BUSYBOX:
        return program not in BUSYBOX_APPLETS
    return False
