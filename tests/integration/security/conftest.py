"""The bad-input tripwires (tests/integration/bad_input/conftest.py), shared here.

``net_tripwire`` (autouse): this process may connect to loopback only; every other
attempt is refused and fails the test. ``tripwire``: an environment for child processes
in which any connection at all is recorded and refused.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "_bad_input_tripwires", Path(__file__).resolve().parents[1] / "bad_input" / "conftest.py")
assert _spec is not None and _spec.loader is not None
_tripwires = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_tripwires)

net_tripwire = _tripwires.net_tripwire
tripwire = _tripwires.tripwire
Tripwire = _tripwires.Tripwire
