"""The tripwires of ``helpers.tripwires``, as in ``tests/integration/bad_input``.

``net_tripwire`` (autouse): this process may connect to loopback only; every other
attempt is refused and fails the test. ``tripwire``: an environment for child processes
in which any connection at all is recorded and refused.
"""
from __future__ import annotations

from helpers.tripwires import net_tripwire, tripwire  # noqa: F401  (fixtures)
