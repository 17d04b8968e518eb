"""Rate limits of the query handler and the log discipline of its refusals.

Both take their clock as a parameter (`time.monotonic` by default) so tests drive time
instead of sleeping.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from models.logger import Logger


class TokenBucket:
    """`rate` tokens per second, at most `burst` saved up; `take()` spends one if there is one.

    Used per platform (its `rate_limit`/`burst`) and once for all unauthenticated requests,
    whose refusals are answered only while this bucket has tokens: answering costs a signature
    and a publish, which an anonymous flood must not be able to buy without limit.
    """

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"a token bucket needs rate > 0 and burst >= 1, got {rate}, {burst}")
        self.rate = rate
        self.burst = float(burst)
        self._clock = clock
        self._tokens = float(burst)
        self._stamp = clock()

    def take(self) -> bool:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + max(0.0, now - self._stamp) * self.rate)
        self._stamp = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True


class RefusalLog:
    """One warning per `interval` for a refusal that repeats, with the count, never one per
    request: the first refusal after a quiet interval is logged at once, later ones are
    counted and summarised by the next `note` or `flush` after the interval has passed."""

    def __init__(
        self,
        logger: Logger,
        event: str,
        interval: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        **fields: Any,
    ) -> None:
        self._log = logger
        self.event = event
        self.interval = interval
        self._clock = clock
        self._fields = fields
        self._codes: Counter[str] = Counter()
        self._unanswered = 0
        self._last: float | None = None
        self.total = 0

    def note(self, code: str, *, answered: bool, **detail: Any) -> None:
        self.total += 1
        self._codes[code] += 1
        self._unanswered += 0 if answered else 1
        now = self._clock()
        if self._last is None or now - self._last >= self.interval:
            self._emit(now, **detail)

    def flush(self) -> None:
        """Log what was counted once the interval is over (the caller's idle tick)."""
        now = self._clock()
        if self._codes and self._last is not None and now - self._last >= self.interval:
            self._emit(now)

    def _emit(self, now: float, **detail: Any) -> None:
        count = sum(self._codes.values())
        self._log.warning(
            self.event,
            count=count,
            unanswered=self._unanswered,
            codes=dict(self._codes),
            interval_s=self.interval,
            **self._fields,
            **(detail if count == 1 else {}),
        )
        self._codes.clear()
        self._unanswered = 0
        self._last = now
