"""What a destination's `signals` filter leaves out of each stream's records.

Why one module: data sovereignty across company borders must not depend on which stream a
value travels in. A plant that denies `program` to a platform hides it in `state`, and also
in the records the gateway derives from that signal (a part's `program`, a booking's, the
capacity offer's energy per program). The sealer applies these rules before signing, so a
left-out key is never signed, stored or sent for that destination (docs/protocol.md,
"Egress policies"). Leaving out means the key is absent, never null: null already says
"not known" in every stream.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from models.machine_state import SIG_ALARM, SIG_BAD_PART_COUNT, SIG_PART_COUNT, SIG_PROGRAM
from models.parts import ALARM_DETAILS
from models.plant import PatternFilter

ALARM_SIGNALS = (SIG_ALARM, *sorted(ALARM_DETAILS))
"""The signals an alarm list is made of: the code and, when read, its text and severity."""

DERIVED: Mapping[str, Mapping[str, tuple[str, ...]]] = {
    "part": {
        "program": (SIG_PROGRAM,),
        "alarms": ALARM_SIGNALS,
        "machine_count": (SIG_PART_COUNT,),
        # names the counter's value; the verdict stays, as the oee stream's scrap counts do
        "verdict_basis": (SIG_BAD_PART_COUNT,),
    },
    "bookings": {"program": (SIG_PROGRAM,)},
    "capacity": {"energy_per_part": (SIG_PROGRAM,)},  # keyed by program
}
"""Per derived stream: record key -> the signals it is made of. The key is left out when the
filter denies any of them (part records' `signals` summaries are per signal besides)."""
STATE_FIELDS: Mapping[str, tuple[str, ...]] = {"alarms": ALARM_SIGNALS}
"""State fields named otherwise than their signals (the rest are named by their signal)."""
_ALWAYS_KEPT = frozenset({"ts", "availability"})  # what a state record means without the rest
FILTERED_STREAMS = frozenset({"telemetry", "state", *DERIVED})


def needs_own_envelope(stream: str, allowed: PatternFilter) -> bool:
    """Whether a destination with filter `allowed` may need other records of `stream` than
    an unfiltered one, so gets its own envelopes and chain on the topic. Decided per stream,
    never per record: a destination's chain on a topic must not switch back and forth."""
    if allowed.everything or stream not in FILTERED_STREAMS:
        return False
    if stream in ("bookings", "capacity"):
        return not _all_allowed(allowed, (SIG_PROGRAM,))
    return True  # telemetry, state, part: any signal may be summarised or named


def redact(records: list[dict[str, Any]], stream: str, allowed: PatternFilter
           ) -> list[dict[str, Any]]:
    """`records` of `stream` as a destination with filter `allowed` may see them: new
    dicts (the input is the unfiltered destinations' and is not changed); telemetry records
    of a denied signal are dropped, every other record keeps its place."""
    if stream == "telemetry":
        return [r for r in records if allowed.allows(str(r.get("signal")))]
    if stream == "state":
        return [{k: v for k, v in r.items() if k in _ALWAYS_KEPT or (
            allowed.allows(k) and _all_allowed(allowed, STATE_FIELDS.get(k, ())))}
            for r in records]
    derived = DERIVED.get(stream)
    if derived is None:
        return records
    denied = {k for k, names in derived.items() if not _all_allowed(allowed, names)}
    out = []
    for r in records:
        kept = {k: v for k, v in r.items() if k not in denied}
        if stream == "part" and isinstance(kept.get("signals"), dict):
            kept["signals"] = {k: v for k, v in kept["signals"].items() if allowed.allows(k)}
        out.append(kept)
    return out


def _all_allowed(allowed: PatternFilter, names: Iterable[str]) -> bool:
    return all(allowed.allows(n) for n in names)
