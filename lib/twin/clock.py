"""The twin's clock: every simulated delay goes through one speed factor.

A delay is written in *cluster seconds* (what it would take on a real k3s cluster:
300 s eviction toleration, a few seconds for a k3s restart ...). ``Clock.real(s)``
turns it into wall-clock seconds. With the default speed a whole migration on minicloud
takes well under a minute, yet no delay is zero (``MIN_DELAY``).
"""
from __future__ import annotations

import asyncio
import time

DEFAULT_SPEED = 0.05   # 1 cluster second = 50 ms
MIN_DELAY = 0.005      # no simulated delay collapses to zero


class Clock:
    """Scales cluster-time delays to wall-clock time.

    Example:
        >>> c = Clock(speed=0.1)
        >>> c.real(300)
        30.0
    """

    def __init__(self, speed: float = DEFAULT_SPEED) -> None:
        if speed <= 0:
            raise ValueError("speed must be > 0")
        self.speed = speed
        self._t0 = time.monotonic()

    def real(self, cluster_seconds: float) -> float:
        """Wall-clock seconds for a delay of ``cluster_seconds`` on a real cluster."""
        return max(MIN_DELAY, cluster_seconds * self.speed)

    async def sleep(self, cluster_seconds: float) -> None:
        """Sleep for a scaled delay (never zero)."""
        await asyncio.sleep(self.real(cluster_seconds))

    def cluster_now(self) -> float:
        """Cluster seconds elapsed since the clock was created."""
        return (time.monotonic() - self._t0) / self.speed
