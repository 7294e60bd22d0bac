"""Mask secrets in any text before it reaches an output, a report or the journal.

Every choke point (node command output, API errors, helm output, diffs, evidence files)
passes its text through :func:`redact`. Two complementary mechanisms:

* patterns for secrets recognisable by shape: bearer headers, ``token:``-like keys in
  YAML/JSON/kubeconfigs, k3s join tokens (``K10<hash>::server:<password>``), PEM private
  key blocks (also base64-encoded, as in Secret data), and helm release payloads;
* exact strings registered at run time with :func:`register_secret`, e.g. the kubeconfig
  token the cluster module has just read. Their base64 forms are masked too, because
  Secret data shows values base64-encoded.

Example:
    >>> redact("Authorization: Bearer abc.def.ghi")
    'Authorization: Bearer ********'
    >>> register_secret("s3cr3t-passphrase")
    >>> redact("join with s3cr3t-passphrase")
    'join with ********'
"""
from __future__ import annotations

import base64
import re
import threading
from collections.abc import Iterable

__all__ = ["MASK", "redact", "register_secret", "registered_secrets", "clear_registered",
           "SECRET_KEYS"]

MASK = "********"

# Registered secrets shorter than this are ignored: masking "ab" everywhere would
# destroy the output without protecting anything.
_MIN_SECRET_LEN = 6

_lock = threading.Lock()
_registered: set[str] = set()

#: Keys whose value is a secret wherever they appear (YAML, JSON, key=value, headers).
SECRET_KEYS = (
    "token", "agent-token", "bearer_token", "bearer-token", "access_token", "access-token",
    "refresh_token", "refresh-token", "id-token", "id_token", "client-key-data",
    "password", "passwd", "secret", "secret-key", "secret_key", "etcd-s3-secret-key",
    "etcd-s3-access-key", "api-key", "api_key", "apikey", "auth",
    "tls.key", "ca.key", "ssh-privatekey",
)

_KEY_ALT = "|".join(sorted((re.escape(k) for k in SECRET_KEYS), key=len, reverse=True))
# key, optional quotes around it, ':' or '=', then a double-quoted, single-quoted or bare
# value. The look-behind keeps "agent-token" from being read as "token" with a prefix
# when we do not want it, and stops "serviceAccountToken"/"token_file" matching.
_KEY_VALUE = re.compile(
    r"""(?P<pre>(?<![A-Za-z0-9_.-])["']?(?:""" + _KEY_ALT + r""")["']?[ \t]*[:=][ \t]*)"""
    r"""(?P<val>"(?:[^"\\\n]|\\.)*"|'[^'\n]*'|[^\s,;}\]#'"]+)""",
    re.IGNORECASE)
_BEARER = re.compile(r"(?P<pre>\b(?:Bearer|Basic)[ \t]+)(?P<val>[A-Za-z0-9._~+/=:-]{6,})",
                     re.IGNORECASE)
# K10<sha256 of the CA>::<user>:<password> (the secure join token), and the short
# "<user>:<password>" form k3s also accepts, when the password is long hex.
_K3S_TOKEN = re.compile(r"K10[0-9a-fA-F]+::[A-Za-z0-9_-]+:[A-Za-z0-9]+")
_K3S_SHORT = re.compile(r"\b(?:server|node):[0-9a-f]{16,}\b")
_PEM_KEY = re.compile(
    r"(-----BEGIN (?P<kind>[A-Z0-9 ]*?)PRIVATE KEY-----)(?:.*?-----END (?P=kind)PRIVATE KEY-----"
    r"|.*\Z)", re.DOTALL)
# base64 of "-----BEGIN " starts with LS0tLS1CRUdJTi; double-encoded with TFMwdExTMUNSVWRKVG
_B64_PEM = re.compile(r"(?:LS0tLS1CRUdJT|TFMwdExTMUNSVWRKT)[A-Za-z0-9+/=\\n]{20,}")
# helm v3/v4 release payload: base64(gzip) starts "H4sI"; in Secret data it is encoded
# once more and starts "SDRzSU".
# command lines: k3s --token X / --agent-token=X, kubectl --token X, curl -u user:pass
_CLI_FLAG = re.compile(r"(?P<pre>(?<![\w-])--(?:agent-token|token|password)(?:=|[ \t]+))"
                       r"(?P<val>[^\s'\"]+)")
_HELM_BLOB = re.compile(r"(?:H4sI|SDRzSU)[A-Za-z0-9+/=]{24,}")
# a JSON Web Token on its own (`kubectl create token` prints one bare): header.payload.sig,
# each base64url, header and payload JSON objects ("eyJ" is base64 of '{"').
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")
# any long base64 value of a "release" key (helm's Secret/ConfigMap storage), whatever
# its prefix; "release: cilium" (a name) is left alone.
_RELEASE_FIELD = re.compile(
    r"""(?P<pre>["']?\brelease["']?[ \t]*:[ \t]*["']?)(?P<val>[A-Za-z0-9+/]{40,}={0,2})""")


def register_secret(value: str | bytes | None) -> None:
    """Add ``value`` (and its base64 form) to the process-wide set masked by :func:`redact`.

    Called by the modules that read credentials (kubeconfig token, k3s join token,
    SSH key passphrase). Values shorter than 6 characters are ignored.
    """
    if value is None:
        return
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    value = value.strip()
    if len(value) < _MIN_SECRET_LEN:
        return
    forms = {value, base64.b64encode(value.encode()).decode().rstrip("=")}
    with _lock:
        _registered.update(f for f in forms if len(f) >= _MIN_SECRET_LEN)


def registered_secrets() -> frozenset[str]:
    """The registered secrets (for tests that search outputs for them)."""
    with _lock:
        return frozenset(_registered)


def clear_registered() -> None:
    """Forget every registered secret (tests only)."""
    with _lock:
        _registered.clear()


def _mask_value(m: re.Match[str]) -> str:
    val = m.group("val")
    bare = val.strip("\"'")
    # keep empty/null values and already-masked ones readable
    if bare in ("", "null", "~", "None", "true", "false", "[]", "{}", "|", ">", "|-", ">-") \
            or set(bare) <= {"*"}:
        return m.group(0)
    quote = val[0] if val[:1] in ("'", '"') and len(val) > 1 else ""
    return m.group("pre") + quote + MASK + quote


def _mask_pem(m: re.Match[str]) -> str:
    kind = m.group("kind")
    return f"{m.group(1)}\n{MASK}\n-----END {kind}PRIVATE KEY-----"


def _mask_b64_pem(m: re.Match[str]) -> str:
    blob = m.group(0).replace("\\n", "")
    try:
        decoded = base64.b64decode(blob + "=" * (-len(blob) % 4), validate=False)
        if decoded.startswith(b"LS0t"):
            decoded = base64.b64decode(decoded + b"=" * (-len(decoded) % 4))
    except (ValueError, TypeError):
        return MASK  # unreadable but PEM-shaped: safer masked
    return MASK if b"PRIVATE KEY" in decoded else m.group(0)


def redact(text: str, extra_secrets: Iterable[str] = ()) -> str:
    """Return ``text`` with every recognisable or registered secret replaced by ``********``.

    Args:
        text: any output (command output, YAML, JSON, a diff, an error message).
        extra_secrets: more exact strings to mask for this call only.

    Example:
        >>> redact("token: K10abc123::server:deadbeefdeadbeef")
        'token: ********'
        >>> redact('{"token": "eyJhbGciOi"}')
        '{"token": "********"}'
    """
    if not text:
        return text
    with _lock:
        secrets = set(_registered)
    for s in extra_secrets:
        if s and len(s.strip()) >= _MIN_SECRET_LEN:
            secrets.add(s.strip())
    # longest first, so a secret that contains another is masked whole
    for s in sorted(secrets, key=len, reverse=True):
        if s in text:
            text = text.replace(s, MASK)
    text = _PEM_KEY.sub(_mask_pem, text)
    text = _B64_PEM.sub(_mask_b64_pem, text)
    text = _K3S_TOKEN.sub(MASK, text)
    text = _K3S_SHORT.sub(MASK, text)
    text = _HELM_BLOB.sub(MASK, text)
    text = _JWT.sub(MASK, text)
    text = _RELEASE_FIELD.sub(lambda m: m.group("pre") + MASK, text)
    text = _CLI_FLAG.sub(lambda m: m.group("pre") + MASK, text)
    text = _BEARER.sub(lambda m: m.group("pre") + MASK, text)
    text = _KEY_VALUE.sub(_mask_value, text)
    return text
