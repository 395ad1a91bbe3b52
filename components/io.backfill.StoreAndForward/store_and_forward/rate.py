"""The rate plan for publishing to IoT Core: our share of the core's one connection. Pure
(times in ms from an injected monotonic clock).

    plan = RatePlan(publishes_per_s=20, bytes_per_s=450_560, burst_bytes=131_072)
    wait = plan.wait_ms(now, len(payload) + len(topic))   # 0: go; plan.take(...) when sent
"""

from __future__ import annotations

from typing import Optional


class TokenBucket:
    """`rate` tokens per second, at most `burst` saved; a take larger than what is saved is
    allowed when the bucket is full and leaves a debt, so the long-run rate holds."""

    def __init__(self, rate: float, burst: float) -> None:
        if rate <= 0 or burst <= 0:
            raise ValueError("rate and burst must be positive")
        self.rate, self.burst = float(rate), float(burst)
        self.tokens = self.burst
        self._at: Optional[int] = None

    def _refill(self, now_ms: int) -> None:
        if self._at is not None and now_ms > self._at:
            self.tokens = min(self.burst, self.tokens + (now_ms - self._at) * self.rate / 1000.0)
        if self._at is None or now_ms > self._at:
            self._at = now_ms

    def wait_ms(self, now_ms: int, amount: float = 1.0) -> int:
        self._refill(now_ms)
        need = min(float(amount), self.burst)
        if self.tokens >= need:
            return 0
        return max(1, int(-(-(need - self.tokens) * 1000.0 // self.rate)))

    def take(self, now_ms: int, amount: float = 1.0) -> None:
        self._refill(now_ms)
        self.tokens -= amount


class RatePlan:
    """Publishes per second and bytes (payload + topic) per second for our share of the
    core's one connection to IoT Core (its quotas: 100/s and 512 KiB/s)."""

    def __init__(self, publishes_per_s: float, bytes_per_s: float, burst_bytes: float = 0) -> None:
        self.publishes = TokenBucket(publishes_per_s, max(1.0, publishes_per_s))
        self.bytes = TokenBucket(bytes_per_s, max(bytes_per_s, burst_bytes))

    def wait_ms(self, now_ms: int, nbytes: int) -> int:
        return max(self.publishes.wait_ms(now_ms, 1), self.bytes.wait_ms(now_ms, nbytes))

    def take(self, now_ms: int, nbytes: int) -> None:
        self.publishes.take(now_ms, 1)
        self.bytes.take(now_ms, nbytes)
