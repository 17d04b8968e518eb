"""What an SHDR stream sends that is not SHDR, and how much of it was refused.

Why: a TCP port speaks whatever is connected to it. Random bytes once became signals named
`k_e_1_h_s_5_la_1s_z_...` and NUL-padded numbers were signed as good data (issue 12 item
5). A line is refused whole when it is not UTF-8, holds control characters (a tab is
allowed), has no `|` field separator, ends on a key with no value field (`|x`: random
bytes made a few of those a minute), or its timestamp or a key is unreadable; a single key
is refused when the machine's keys are known (a device model, or `unlisted: drop`) and it is
not one of them. Refusals are counted per reason (`describe()["refused"]`) and logged once
per interval with the count since the last line, never once per line: a babbling device
must not flood the journal.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

__all__ = ["LOG_INTERVAL", "RefusedInput", "bad_key", "decode_line", "has_control"]

LOG_INTERVAL = 60.0  # seconds between two `shdr_input_refused` lines of one machine

_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")
_KEY = re.compile(r"[\w.:/\-]{1,128}")


def decode_line(raw: bytes) -> str | None:
    """A received line as text, or None when it is not UTF-8."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def has_control(line: str) -> bool:
    """True when the line (without its line end) holds a control character other than tab."""
    return _CONTROL.search(line) is not None


def bad_key(key: str) -> bool:
    """SHDR keys are data item names or ids: word characters and `.:/-`, at most 128."""
    return _KEY.fullmatch(key) is None


class RefusedInput:
    """Counts refused input by reason and reports it through `log` once per interval."""

    def __init__(self, log: Callable[..., None], interval: float = LOG_INTERVAL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._log = log
        self._interval = interval
        self._clock = clock
        self.by_reason: Counter[str] = Counter()
        self._since_log = 0
        self._logged_at: float | None = None

    @property
    def total(self) -> int:
        return sum(self.by_reason.values())

    def refuse(self, reason: str, example: str) -> None:
        self.by_reason[reason] += 1
        self._since_log += 1
        now = self._clock()
        if self._logged_at is None or now - self._logged_at >= self._interval:
            self._log("shdr_input_refused", reason=reason, example=repr(example[:80]),
                      refused=self._since_log, refused_total=self.total,
                      next_report_in_s=self._interval)
            self._logged_at = now
            self._since_log = 0

    def describe(self) -> dict[str, Any]:
        return dict(self.by_reason)
