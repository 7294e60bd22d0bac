"""The admin kubeconfig a k3s server writes when it starts: ``/etc/rancher/k3s/k3s.yaml``.

k3s (``pkg/cli/server``) writes it on every start with the mode of
``write-kubeconfig-mode`` (0600 without it), pointing at ``https://127.0.0.1:6443`` with
the cluster CA and the admin's client certificate and key (embedded, base64). The key is
a secret: whatever reads the file must keep it out of evidence (the runbook's redaction
masks ``client-key-data``).

The twin's file is shaped like the real one, with a key and a certificate of its own; it
is not a credential of the twin's API server (that is ``<state_dir>/kubeconfig``).

Example:
    >>> write_admin_kubeconfig(node, "0644")  # doctest: +SKIP
    >>> node.files.read_text(K3S_KUBECONFIG).splitlines()[0]  # doctest: +SKIP
    'apiVersion: v1'
"""
from __future__ import annotations

import base64
import datetime as _dt
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

if TYPE_CHECKING:
    from .model import NodeModel

K3S_KUBECONFIG = "/etc/rancher/k3s/k3s.yaml"
DEFAULT_MODE = 0o600


def _pem_pair(common_name: str, org: str | None) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if org:
        attrs.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    name = x509.Name(attrs)
    now = _dt.datetime.now(_dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - _dt.timedelta(days=1))
            .not_valid_after(now + _dt.timedelta(days=365)).sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                              serialization.NoEncryption()))


def parse_mode(text: str) -> int:
    """The file mode of ``write-kubeconfig-mode`` (octal text); 0600 when unset or bad.

    >>> oct(parse_mode("0644")), oct(parse_mode("")), oct(parse_mode("rw"))
    ('0o644', '0o600', '0o600')
    """
    try:
        return int(str(text).strip(), 8) & 0o777 if str(text).strip() else DEFAULT_MODE
    except ValueError:
        return DEFAULT_MODE


def write_admin_kubeconfig(node: NodeModel, mode_text: str) -> None:
    """Write (first start) or re-mode (later starts) the server's admin kubeconfig."""
    files, mode = node.files, parse_mode(mode_text)
    if files.exists(K3S_KUBECONFIG):
        files.chmod(K3S_KUBECONFIG, mode)
        return
    ca, _ = _pem_pair(f"k3s-server-ca@{node.boot_count}", None)
    cert, key = _pem_pair("system:admin", "system:masters")

    def b64(b: bytes) -> str:
        return base64.b64encode(b).decode()
    files.write(K3S_KUBECONFIG, (
        "apiVersion: v1\nclusters:\n- cluster:\n"
        f"    certificate-authority-data: {b64(ca)}\n"
        "    server: https://127.0.0.1:6443\n  name: default\n"
        "contexts:\n- context:\n    cluster: default\n    user: default\n  name: default\n"
        "current-context: default\nkind: Config\npreferences: {}\nusers:\n- name: default\n"
        "  user:\n"
        f"    client-certificate-data: {b64(cert)}\n"
        f"    client-key-data: {b64(key)}\n"), mode)
