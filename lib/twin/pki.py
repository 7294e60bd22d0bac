"""The twin's small PKI: one CA and the serving certificates signed by it.

The API server, the ingress endpoint and anything else that speaks TLS on loopback use
certificates from one CA, so a client only needs ``ca.crt`` (the kubeconfig embeds it).
Keys are ECDSA P-256: fast to generate, accepted by Go (kubectl, helm) and OpenSSL.

Example:
    >>> from pathlib import Path
    >>> import tempfile
    >>> pki = PKI(Path(tempfile.mkdtemp()))
    >>> pair = pki.issue("apiserver", dns_names=["localhost"])
    >>> pair.cert_path.name
    'apiserver.crt'
"""
from __future__ import annotations

import datetime as _dt
import ipaddress
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

#: Names every serving certificate carries: the twin only ever listens on loopback.
LOOPBACK_IPS = ("127.0.0.1", "::1")
LOOPBACK_DNS = ("localhost",)


@dataclass
class CertPair:
    """A certificate and its private key on disk (key mode 0600)."""

    name: str
    cert_path: Path
    key_path: Path
    cert_pem: bytes

    def ssl_context(self) -> ssl.SSLContext:
        """A server-side TLS context serving this certificate."""
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(str(self.cert_path), str(self.key_path))
        return ctx


def _write_private(path: Path, data: bytes) -> None:
    # Create with 0600 from the start so the key is never world-readable, not even briefly.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.chmod(path, 0o600)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


class PKI:
    """A CA in ``directory`` (``ca.crt``, ``ca.key``) that issues serving certificates.

    Args:
        directory: where the CA and issued certificates are written (created if needed).
        common_name: the CA's subject CN.
    """

    def __init__(self, directory: Path, common_name: str = "twin-ca") -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        os.chmod(self.directory, 0o700)
        self._ca_key = ec.generate_private_key(ec.SECP256R1())
        now = _dt.datetime.now(_dt.timezone.utc)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        self._ca_name = name
        self._ca_cert = (
            x509.CertificateBuilder()
            .subject_name(name).issuer_name(name)
            .public_key(self._ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _dt.timedelta(hours=1))
            .not_valid_after(now + _dt.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self._ca_key.public_key()),
                           critical=False)
            .sign(self._ca_key, hashes.SHA256())
        )
        self.ca_pem: bytes = self._ca_cert.public_bytes(serialization.Encoding.PEM)
        self.ca_cert_path = self.directory / "ca.crt"
        self.ca_cert_path.write_bytes(self.ca_pem)
        _write_private(self.directory / "ca.key", _key_pem(self._ca_key))
        self.issued: dict[str, CertPair] = {}

    def issue(self, name: str, *, dns_names: list[str] | tuple[str, ...] = (),
              ip_addresses: list[str] | tuple[str, ...] = (), days: int = 365) -> CertPair:
        """Issue a serving certificate for loopback plus the given extra names.

        Args:
            name: file stem (``<name>.crt`` / ``<name>.key``) and subject CN.
            dns_names: extra DNS SANs; wildcards such as ``*.10.0.0.200.nip.io`` work.
            ip_addresses: extra IP SANs (data only: the twin never listens on them).
            days: validity.

        Returns:
            The written :class:`CertPair`.
        """
        key = ec.generate_private_key(ec.SECP256R1())
        now = _dt.datetime.now(_dt.timezone.utc)
        dns = list(dict.fromkeys([*LOOPBACK_DNS, *dns_names]))
        ips = list(dict.fromkeys([*LOOPBACK_IPS, *ip_addresses]))
        sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(self._ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _dt.timedelta(hours=1))
            .not_valid_after(now + _dt.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self._ca_key.public_key()),
                           critical=False)
            .sign(self._ca_key, hashes.SHA256())
        )
        pem = cert.public_bytes(serialization.Encoding.PEM)
        cert_path = self.directory / f"{name}.crt"
        key_path = self.directory / f"{name}.key"
        # The chain (leaf + CA) lets clients that only trust the CA verify without AIA.
        cert_path.write_bytes(pem + self.ca_pem)
        _write_private(key_path, _key_pem(key))
        pair = CertPair(name, cert_path, key_path, pem)
        self.issued[name] = pair
        return pair
