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

from models.machine_state import (
    SIG_ALARM,
    SIG_BAD_PART_COUNT,
    SIG_ESTOP,
    SIG_EXECUTION,
    SIG_MODE,
    SIG_PART_COUNT,
    SIG_PROGRAM,
)
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


AAS_STATE: Mapping[str, tuple[str, ...]] = {
    "Execution": (SIG_EXECUTION,),
    "ControllerMode": (SIG_MODE,),
    "EmergencyStop": (SIG_ESTOP,),
    "Alarms": ALARM_SIGNALS,
    "Program": (SIG_PROGRAM,),
    "PartCount": (SIG_PART_COUNT,),
    "BadPartCount": (SIG_BAD_PART_COUNT,),
}
"""idShorts of the AAS OperationalData `State` collection (models/aas.py `_state`) -> the
signals each is made of; `Availability` and `Since` are kept, as in a state record."""


NAMEPLATE_SOURCE = "DeviceSignal"
"""The Qualifier `type` marking a Nameplate element the device filled; its value names the
signal (models/aas.py `DEVICE_SIGNAL_QUALIFIER`, kept equal by a test: models/aas.py
brings aas_core3, which the sealer's import should not)."""


def redact_result(method: str, result: Any, allowed: PatternFilter) -> Any:
    """A query `method`'s `result` (docs/protocol.md, "Methods") as a destination with
    filter `allowed` may see it: the same rules as the stream each method reads, so a
    platform learns nothing by asking that its stream withholds. `state` as state records
    (its `link` is the gateway's, kept), `parts` as part records, `capacity` and the
    booking methods as their streams' records, `aas` without the signals and state elements
    of denied signals and the Nameplate elements read from them. `parts` answers each
    record with the envelope it was first published in, the unfiltered one: where the filter
    narrows part records that envelope is null (the destination's own is on its broker's
    `part` topic). New dicts; the input is kept."""
    if allowed.everything or not isinstance(result, dict):
        return result
    if method in ("state", "capacity", "aas") and isinstance(result.get("machines"), dict):
        narrow = {"state": _state_answer, "capacity": _capacity_answer,
                  "aas": _aas_answer}[method]  # fmt: skip
        return {**result, "machines": {a: narrow(v, allowed)
                                       for a, v in result["machines"].items()}}
    if method == "parts" and isinstance(result.get("parts"), list):
        own = needs_own_envelope("part", allowed)
        return {**result, "parts": [
            {**p, "record": redact([p["record"]], "part", allowed)[0],
             **({"envelope": None} if own else {})}
            for p in result["parts"] if isinstance(p, dict) and isinstance(p.get("record"), dict)
        ]}
    if method == "bookings" and isinstance(result.get("bookings"), list):
        return {**result, "bookings": redact(result["bookings"], "bookings", allowed)}
    if method in ("reserve", "release"):  # one booking, as its platform sees it
        return redact([result], "bookings", allowed)[0]
    return result


def _state_answer(record: Any, allowed: PatternFilter) -> Any:
    if not isinstance(record, dict):
        return record
    kept = redact([record], "state", allowed)[0]
    if "link" in record:
        kept["link"] = record["link"]
    return kept


def _capacity_answer(record: Any, allowed: PatternFilter) -> Any:
    return redact([record], "capacity", allowed)[0] if isinstance(record, dict) else record


def _aas_answer(environment: Any, allowed: PatternFilter) -> Any:
    """An AAS environment (JSON, models/aas.py) without what denied signals made: the
    OperationalData `Signals` and `State` elements of denied signals; the Nameplate elements
    the device filled from a denied identification signal (`serial_number`, `model`,
    `identification_*`: each such element names its signal in a `NAMEPLATE_SOURCE`
    qualifier, set where the environment is built, so this stays the one place deciding;
    an element the YAML sets has none and stays, the plant's own declaration); and, when
    `program` is denied, the carbon footprints (one per program, named by it, as the
    capacity record's `energy_per_part`) and the comment of PlannedRuntimePerItem (it names
    the program)."""
    if not isinstance(environment, dict) or not isinstance(environment.get("submodels"), list):
        return environment
    return {**environment, "submodels": [_aas_submodel(sm, allowed)
                                         for sm in environment["submodels"]]}


def _aas_submodel(submodel: Any, allowed: PatternFilter) -> Any:
    if not isinstance(submodel, dict) or not isinstance(submodel.get("submodelElements"), list):
        return submodel
    name, elements = submodel.get("idShort"), submodel["submodelElements"]
    program = allowed.allows(SIG_PROGRAM)
    if name == "OperationalData":
        elements = [kept for e in elements if (kept := _aas_collection(e, allowed)) is not None]
    elif name == "Nameplate":
        elements = [e for e in elements
                    if (signal := _device_signal(e)) is None or allowed.allows(signal)]
    elif name == "CarbonFootprint" and not program:
        elements = []
    elif name == "ProcessVariablesForManufacturingKPICalculation" and not program:
        elements = [_without_comment(e) if isinstance(e, dict)
                    and e.get("idShort") == "PlannedRuntimePerItem" else e for e in elements]
    else:
        return submodel
    out = {k: v for k, v in submodel.items() if k != "submodelElements"}
    return {**out, "submodelElements": elements} if elements else out


def _without_comment(variable: dict[str, Any]) -> dict[str, Any]:
    value = variable.get("value")
    if not isinstance(value, list):
        return variable
    return {**variable, "value": [e for e in value
                                  if not (isinstance(e, dict) and e.get("idShort") == "comment")]}


def _aas_collection(element: Any, allowed: PatternFilter) -> Any:
    """The element narrowed; None for a collection left empty (an AAS has no empty ones)."""
    if not isinstance(element, dict) or not isinstance(element.get("value"), list):
        return element
    if element.get("idShort") == "Signals":  # one collection per signal, named in displayName
        keep = [e for e in element["value"] if allowed.allows(_display_name(e))]
    elif element.get("idShort") == "State":
        keep = [e for e in element["value"] if not isinstance(e, dict)
                or _all_allowed(allowed, AAS_STATE.get(str(e.get("idShort")), ()))]
    else:
        return element
    return {**element, "value": keep} if keep else None


def _device_signal(element: Any) -> str | None:
    """The signal a Nameplate element was read from; None for the YAML's own values."""
    qualifiers = element.get("qualifiers") if isinstance(element, dict) else None
    for q in qualifiers if isinstance(qualifiers, list) else ():
        if isinstance(q, dict) and q.get("type") == NAMEPLATE_SOURCE:
            return str(q.get("value", ""))
    return None


def _display_name(element: Any) -> str:
    names = element.get("displayName") if isinstance(element, dict) else None
    if isinstance(names, list) and names and isinstance(names[0], dict):
        return str(names[0].get("text", ""))
    return str(element.get("idShort", "")) if isinstance(element, dict) else ""


def _all_allowed(allowed: PatternFilter, names: Iterable[str]) -> bool:
    return all(allowed.allows(n) for n in names)
