"""The runbook's phases: their names, notebooks and order, and which way each one goes.

One list, read by the runner (what to execute), the session (which notebook a phase is)
and the report (in which order to show the pages). It imports nothing from the library,
so any module may import it without a cycle.

Example:
    >>> from runbook import phases
    >>> phases.MIGRATION
    ['preflight', 'reconfigure', 'install', 'verify']
    >>> phases.PHASES["rollback"]
    '05-rollback.ipynb'
    >>> phases.get("install").direction
    'migration'
    >>> phases.get("preflight").full_title
    'Phase 22 · 01 — Preflight'
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["Phase", "ALL", "PHASES", "MIGRATION", "ROLLBACK", "get"]


@dataclass(frozen=True)
class Phase:
    """One phase notebook.

    Attributes:
        name: the phase's name on the command line and in the report (``install``).
        notebook: the notebook file in ``notebooks/`` (``03-install.ipynb``).
        direction: ``migration`` (towards Cilium) or ``rollback`` (back to flannel).
    """

    name: str
    notebook: str
    direction: Literal["migration", "rollback"]
    title: str = ""

    @property
    def full_title(self) -> str:
        """The title every page, heading and table uses: ``Phase 22 · 01 — Preflight``."""
        return f"Phase 22 · {self.notebook[:2]} — {self.title}"


#: Every phase, in the order a run executes them and the report shows them.
ALL: tuple[Phase, ...] = (
    Phase("preflight", "01-preflight.ipynb", "migration", "Preflight"),
    Phase("reconfigure", "02-reconfigure.ipynb", "migration", "Reconfigure"),
    Phase("install", "03-install.ipynb", "migration", "Install"),
    Phase("verify", "04-verify.ipynb", "migration", "Verify"),
    Phase("rollback", "05-rollback.ipynb", "rollback", "Rollback"),
)

#: phase name -> notebook file, in run order.
PHASES: dict[str, str] = {p.name: p.notebook for p in ALL}
#: The phases of a migration, in order (what ``runbook run`` does without ``--phases``).
MIGRATION: list[str] = [p.name for p in ALL if p.direction == "migration"]
#: The phases that take the cluster back to flannel.
ROLLBACK: list[str] = [p.name for p in ALL if p.direction == "rollback"]


def get(name: str) -> Phase:
    """The phase called ``name``.

    Raises:
        KeyError: an unknown name; the message lists the known ones.
    """
    for p in ALL:
        if p.name == name:
            return p
    raise KeyError(f"unknown phase {name!r}; known: {', '.join(PHASES)}")
