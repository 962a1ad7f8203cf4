"""Exponential backoff with jitter, for reconnecting to Temporal and restarting a crashed runner.

Stdlib only: the supervisor uses it too.
"""

from __future__ import annotations

import random


class Backoff:
    """Doubles from `initial` to `ceiling`; each delay is drawn from its upper half (no lockstep retries)."""

    def __init__(self, initial: float, ceiling: float) -> None:
        self.initial = initial
        self.ceiling = ceiling
        self._current = initial

    def next_delay(self) -> float:
        delay = self._current
        self._current = min(self._current * 2, self.ceiling)
        return random.uniform(delay / 2, delay)

    def reset(self) -> None:
        self._current = self.initial
