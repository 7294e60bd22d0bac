"""The tripwires of ``helpers.tripwires``: ``net_tripwire`` (autouse) fails a test on any
non-loopback connection from this process; ``tripwire`` and ``kernel_tripwire`` are
child-process environments whose connection attempts are recorded and refused."""
from __future__ import annotations

from helpers.tripwires import kernel_tripwire, net_tripwire, tripwire  # noqa: F401  (fixtures)
