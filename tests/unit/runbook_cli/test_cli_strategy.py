"""``runbook rehearse --strategy``: the strategy reaches the rehearsal; an unknown one is an argument
error (in-process, offline: no twin starts)."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from runbook import cli
from runbook import rehearse as rehearse_mod

pytestmark = [pytest.mark.unit, pytest.mark.timeout(60)]


@pytest.fixture
def calls(monkeypatch) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []

    def fake(**kw: Any) -> Any:
        seen.append(kw)
        return SimpleNamespace(ok=True, index_html=Path("/nowhere/index.html"))

    monkeypatch.setattr(rehearse_mod, "rehearse", fake)
    return seen


@pytest.mark.parametrize("strategy", ["big-bang", "node-by-node"])
def test_the_strategy_reaches_the_rehearsal(tmp_path: Path, calls, capsys, strategy: str) -> None:
    code = cli.main(["rehearse", "--strategy", strategy, "--with-rollback", "--state-dir", str(tmp_path / "t")])
    assert code == 0 and len(calls) == 1
    assert calls[0]["strategy"] == strategy and calls[0]["with_rollback"] is True
    assert "report: /nowhere/index.html" in capsys.readouterr().out


def test_big_bang_stays_the_default(calls) -> None:
    assert cli.main(["rehearse"]) == 0 and calls[0]["strategy"] == "big-bang"


def test_an_unknown_strategy_is_an_argument_error(capsys) -> None:
    with pytest.raises(SystemExit) as e:
        cli.main(["rehearse", "--strategy", "rolling"])
    assert e.value.code == 2 and "invalid choice: 'rolling'" in capsys.readouterr().err
