"""``runbook rehearse --strategy``: node-by-node is refused before a twin starts while the twin does not
model both overlays (``cli.NODE_BY_NODE_REHEARSABLE``; in-process, offline)."""
from __future__ import annotations

from pathlib import Path

import pytest

from runbook import cli
from twin import api as twin_api

pytestmark = [pytest.mark.unit, pytest.mark.timeout(60)]


@pytest.fixture
def started(monkeypatch) -> list[object]:
    calls: list[object] = []
    monkeypatch.setattr(twin_api.Twin, "start", lambda self, *a, **kw: calls.append(self))
    return calls


def test_node_by_node_exits_2_pointing_at_its_procedure(tmp_path: Path, started, capsys) -> None:
    code = cli.main(["rehearse", "--strategy", "node-by-node", "--state-dir", str(tmp_path / "twin")])
    _, err = capsys.readouterr()
    assert code == 2 and started == [] and not (tmp_path / "twin").exists()
    assert err.splitlines()[0] == ("error: field '--strategy': strategy 'node-by-node' has not passed a rehearsal "
                                   "yet: the twin does not model both overlays side by side, so nothing has "
                                   "proven it; see docs/node-by-node.md (status); use 'big-bang'")
    assert (Path(__file__).resolve().parents[3] / "docs" / "node-by-node.md").is_file()


def test_an_unknown_strategy_is_an_argument_error(capsys) -> None:
    with pytest.raises(SystemExit) as e:
        cli.main(["rehearse", "--strategy", "rolling"])
    assert e.value.code == 2 and "invalid choice: 'rolling'" in capsys.readouterr().err
