"""Records the signer cannot represent: replaced by a `bad` record, never a lost batch.

Why: RFC 8785 canonical JSON (what every envelope is signed as) refuses NaN and infinities,
integers beyond 2**53 - 1, text that is not valid Unicode (lone surrogates) and any type
that is not JSON (a `Decimal`, `bytes`, a numpy scalar from a third-party adapter). One
such value used to make the sealer refuse the whole batch it was in, and again on every
poll, so every other signal of that machine went dark. The adapter contract suite
(adapters/contract.py) still flags adapters that emit such values; this is the gateway's
defence when one does anyway.

The sealer signs as usual and calls `UnsignableRecords.screen` only when signing failed,
so the hot path pays nothing. A telemetry record is replaced by
`{"signal", "value": null, "unit": null, "ts", "quality": "bad", "reason"}` (reason e.g.
`value: integer beyond 2**53 - 1`); a record that cannot be replaced (its signal name or
timestamp are unsignable themselves, or it belongs to another stream, whose records the
gateway builds itself) is dropped and counted. Each (machine, signal) is logged once per
interval with the count since its previous line, never once per poll.

The counts (in all and per machine, `snapshot()`) go into the retained status, the `health`
reply and the Prometheus metric `edge_gateway_records_unsignable_total`, so a platform or a
dashboard sees a machine sending such values without reading the log. The gateway owns one
instance for the life of the process, so a reload does not reset them.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from edge.signing.jws import canonical_json

__all__ = ["LOG_INTERVAL", "UnsignableRecords", "why_unsignable"]

LOG_INTERVAL = 300.0  # seconds between two `record_not_signable` lines of one machine/signal
_MAX_SAFE_INTEGER = 2**53 - 1


def why_unsignable(value: Any) -> str | None:
    """Why canonical JSON cannot carry `value` (None when it can), in a few words."""
    try:
        canonical_json(value)
    except ValueError:
        pass
    else:
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return "not a finite number"
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > _MAX_SAFE_INTEGER:
        return "integer beyond 2**53 - 1"
    if isinstance(value, str):
        return "text that is not valid Unicode"
    if isinstance(value, (list, dict)):
        return "a list or object holding a value canonical JSON cannot carry"
    return f"type {type(value).__name__} is not JSON"


class UnsignableRecords:
    """Replaces (or drops) the records of a batch that cannot be signed; counts and logs
    them per (machine, signal) once per `interval`."""

    def __init__(self, log: Callable[..., Any], interval: float = LOG_INTERVAL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._log = log
        self._interval = interval
        self._clock = clock
        self.replaced = 0
        self.dropped = 0
        self._by_machine: Counter[tuple[str, str]] = Counter()  # (machine, action) -> records
        self._since_log: Counter[tuple[str | None, str]] = Counter()
        self._logged_at: dict[tuple[str | None, str], float] = {}

    def screen(self, asset: str | None, stream: str,
               records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """`records` with every unsignable record replaced or left out, in order."""
        out: list[dict[str, Any]] = []
        for record in records:
            reason = _record_problem(record)
            if reason is None:
                out.append(record)
                continue
            spare = _replacement(record, reason) if stream == "telemetry" else None
            if spare is not None:
                out.append(spare)
                self.replaced += 1
            else:
                self.dropped += 1
            action = "dropped" if spare is None else "replaced"
            if asset is not None:
                self._by_machine[asset, action] += 1
            self._note(asset, record, stream, reason, action)
        return out

    def by_machine(self) -> dict[str, dict[str, int]]:
        """`{machine: {"replaced": n, "dropped": n}}` for the machines that sent any."""
        out: dict[str, dict[str, int]] = {}
        for (asset, action), n in sorted(self._by_machine.items()):
            out.setdefault(asset, {"replaced": 0, "dropped": 0})[action] = n
        return out

    def snapshot(self) -> dict[str, Any]:
        """Records replaced (published as `bad` with a `reason`) and dropped (not published)
        since the process started; `by_machine` leaves out the gateway's own streams."""
        return {"replaced": self.replaced, "dropped": self.dropped,
                "by_machine": self.by_machine()}

    def _note(self, asset: str | None, record: dict[str, Any], stream: str, reason: str,
              action: str) -> None:
        signal = record.get("signal")
        name = signal if isinstance(signal, str) and signal.isprintable() else repr(signal)[:80]
        key = (asset, name)
        self._since_log[key] += 1
        now = self._clock()
        last = self._logged_at.get(key)
        if last is not None and now - last < self._interval:
            return
        self._log("record_not_signable", asset=asset, signal=name, stream=stream,
                  reason=reason, action=action, records=self._since_log.pop(key),
                  replaced_total=self.replaced, dropped_total=self.dropped,
                  next_report_in_s=self._interval)
        self._logged_at[key] = now


def _record_problem(record: Any) -> str | None:
    if not isinstance(record, dict):
        return why_unsignable(record)
    for field, value in record.items():
        if not isinstance(field, str):
            return f"field name {field!r}: not text"
        reason = why_unsignable(value)
        if reason is not None:
            return f"{field}: {reason}"
    return None


def _replacement(record: dict[str, Any], reason: str) -> dict[str, Any] | None:
    spare = {"signal": record.get("signal"), "value": None, "unit": None,
             "ts": record.get("ts"), "quality": "bad", "reason": reason}
    if not isinstance(spare["signal"], str) or not isinstance(spare["ts"], str):
        return None
    try:
        canonical_json(spare)
    except ValueError:
        return None
    return spare
