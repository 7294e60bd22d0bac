"""SSH host keys: a mismatched key is refused, an unknown one unless trusted on first use.

One twin serves the module (the preflight dry runs here change nothing in the cluster);
each test edits the twin's known_hosts for one agent and restores it afterwards.

* mismatch: the entry for fast-skunk holds another key. Preflight stops at the node
  facts, no command ever runs on fast-skunk (``commands.jsonl``), and both the index
  and the phase page explain how to update known_hosts (``ssh-keygen -R`` ...).
* unknown: the entry is removed. Refused the same way, with a hint naming
  ``ssh.trust_on_first_use``; known_hosts is not touched.
* unknown + ``ssh.trust_on_first_use: true``: the run goes on, the key is appended to
  known_hosts, and the journal records the accepted key's fingerprint (which is the
  twin's real key for that node).
"""
from __future__ import annotations

import base64
import html
import json
import re
from pathlib import Path

import paramiko
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from runbook import runner
from runbook.errors import HostKeyError
from runbook.nodes import Node, fingerprint

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

NODE = "fast-skunk"


@pytest.fixture
def twin(shared_twin):
    """The module's twin, its known_hosts restored after each test."""
    kh = shared_twin.state_dir / "ssh" / "known_hosts"
    original = kh.read_bytes()
    yield shared_twin
    kh.write_bytes(original)


def _entry_prefix(twin) -> str:
    return f"[127.0.0.1]:{twin.endpoints['ssh'][NODE]} "


def _real_key(twin) -> paramiko.PKey:
    line = next(ln for ln in (twin.state_dir / "ssh" / "known_hosts").read_text().splitlines()
                if ln.startswith(_entry_prefix(twin)))
    _, ktype, b64 = line.split()[:3]
    return paramiko.PKey.from_type_string(ktype, base64.b64decode(b64))


def _edit_known_hosts(twin, replacement: str | None) -> None:
    kh = twin.state_dir / "ssh" / "known_hosts"
    lines = kh.read_text().splitlines()
    out = [(replacement if ln.startswith(_entry_prefix(twin)) else ln) for ln in lines]
    kh.write_text("\n".join(ln for ln in out if ln is not None) + "\n")


def _preflight(params: Path, reports: Path, run_id: str):
    return runner.run(params, phases=["preflight"], execute=False, run_id=run_id,
                      reports_dir=reports, extra={"proceed_despite_deferral": True},
                      progress=lambda m: None)


def _text(path: Path) -> str:
    """Visible text of an HTML page (tags dropped, entities decoded, spaces collapsed)."""
    t = path.read_text()
    t = re.sub(r"<(style|script)\b.*?</\1>", " ", t, flags=re.S)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", t)).split())


def _commands_on(run_dir: Path, node: str) -> list[str]:
    log = run_dir / "commands.jsonl"
    if not log.exists():
        return []
    return [e["command"] for e in map(json.loads, log.read_text().splitlines()) if e["node"] == node]


def test_mismatched_host_key_refuses_the_node_and_says_how_to_update(twin, tmp_path: Path) -> None:
    pub = ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    _edit_known_hosts(twin, _entry_prefix(twin) + pub)

    res = _preflight(twin.params_path, tmp_path / "reports", "hk-mismatch")

    assert not res.ok and res.failed is not None and res.failed.phase == "preflight"
    run_dir = res.run_dir
    assert _commands_on(run_dir, NODE) == [], "a command ran on the node with the wrong key"
    real = fingerprint(_real_key_from_server(twin))
    for page in (run_dir / "index.html", run_dir / "html" / "01-preflight.html"):
        text = _text(page)
        assert f"[{NODE}] SSH host key MISMATCH" in text, page.name
        assert real in text, f"{page.name}: the presented key's fingerprint is shown"
        assert "ssh-keygen -R" in text and "known_hosts" in text, f"{page.name}: no update hint"
        assert "refusing to touch this node" in text
    nb = json.loads((run_dir / "01-preflight.ipynb").read_text())
    errors = [o for c in nb["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert len(errors) == 1 and "HostKeyError" in errors[0]["evalue"]


def _real_key_from_server(twin) -> paramiko.PKey:
    """The key the node's SSH server really presents (read over loopback, no auth)."""
    port = twin.endpoints["ssh"][NODE]
    t = paramiko.Transport(("127.0.0.1", port))
    try:
        t.start_client(timeout=10)
        return t.get_remote_server_key()
    finally:
        t.close()


def test_unknown_host_key_is_refused_without_trust_on_first_use(twin, tmp_path: Path) -> None:
    _edit_known_hosts(twin, None)
    kh = twin.state_dir / "ssh" / "known_hosts"
    before = kh.read_text()

    res = _preflight(twin.params_path, tmp_path / "reports", "hk-unknown")

    assert not res.ok and res.failed.phase == "preflight"
    assert _commands_on(res.run_dir, NODE) == []
    text = _text(res.run_dir / "index.html")
    assert f"[{NODE}] unknown SSH host key" in text and "ssh.trust_on_first_use: true" in text
    assert "ssh-keyscan" in text
    assert kh.read_text() == before, "an unknown key was written to known_hosts"
    journal = json.loads((res.run_dir / "journal.json").read_text())
    assert "trust-on-first-use" not in json.dumps(journal)


def test_trust_on_first_use_accepts_and_journals_the_fingerprint(twin, tmp_path: Path) -> None:
    expected = fingerprint(_real_key(twin))
    _edit_known_hosts(twin, None)
    data = yaml.safe_load(twin.params_path.read_text())
    data["ssh"]["trust_on_first_use"] = True
    params = tmp_path / "params-tofu.yaml"
    params.write_text(yaml.safe_dump(data, sort_keys=False))

    res = _preflight(params, tmp_path / "reports", "hk-tofu")

    assert res.ok, res.failed
    assert _commands_on(res.run_dir, NODE), "the node was used once its key was accepted"
    journal = json.loads((res.run_dir / "journal.json").read_text())
    tofu = [e for e in journal["entries"] if e.get("action") == "trust-on-first-use"]
    assert [e["node"] for e in tofu] == [NODE], tofu
    assert tofu[0]["data"]["fingerprint"] == expected
    assert tofu[0]["data"]["key_type"] == "ssh-ed25519"
    kh = (twin.state_dir / "ssh" / "known_hosts").read_text()
    assert _entry_prefix(twin) + "ssh-ed25519 " in kh, "the accepted key is now known"


@pytest.mark.parametrize("key_type", ["ssh-ed25519", "ecdsa-sha2-nistp256"])
def test_node_refuses_a_mismatched_key_before_any_command(twin, tmp_path: Path,
                                                          key_type: str) -> None:
    """The library entry point itself: Node.run raises HostKeyError (exit code 12).

    Also when known_hosts holds a key of ANOTHER type for the node: trust-on-first-use
    must not read "no ed25519 key known" as "unknown host" (a key-type switch).
    """
    private = (ed25519.Ed25519PrivateKey.generate() if key_type == "ssh-ed25519"
               else ec.generate_private_key(ec.SECP256R1()))
    pub = private.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    assert pub.startswith(key_type)
    _edit_known_hosts(twin, _entry_prefix(twin) + pub)
    p = yaml.safe_load(twin.params_path.read_text())
    log = tmp_path / "commands.jsonl"
    node = Node(NODE, "agent", "127.0.0.1", twin.endpoints["ssh"][NODE], p["ssh"]["user"],
                p["ssh"]["key_path"], p["ssh"]["known_hosts"], kind="twin", command_log=log,
                trust_on_first_use=True)   # TOFU never accepts a CHANGED key
    with pytest.raises(HostKeyError, match="MISMATCH") as ei:
        node.run("true")
    assert ei.value.exit_code == 12 and ei.value.node == NODE
    assert "ssh-keygen -R" in (ei.value.hint or "")
    assert not log.exists()
