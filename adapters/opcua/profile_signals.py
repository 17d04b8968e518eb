"""The signals each OPC UA profile publishes by itself, without a point list.

Here, apart from machine_tool.py, sinumerik.py and alarms.py (which use these tables), because
the settings need them and a process that only validates the plant imports the settings, not
asyncua: a configured point named like one of these would put two records of one signal, of
different types, in one envelope (a Sparkplug host re-births on every type flip, InfluxDB
refuses the field), so `validate` refuses it (settings.py, `point_clashes`).
"""

from __future__ import annotations

from models.machine_state import (
    SIG_ALARM,
    SIG_AVAILABILITY,
    SIG_BAD_PART_COUNT,
    SIG_EXECUTION,
    SIG_MODE,
    SIG_PART_COUNT,
    SIG_PROGRAM,
)

SIG_ALARM_TEXT = "alarm_text"
SIG_ALARM_COUNT = "alarm_count"
ALARM_SIGNALS = (SIG_ALARM, SIG_ALARM_TEXT, SIG_ALARM_COUNT)
"""What alarms.py derives from condition events, for every profile."""

# machine_tool.py: inputs that become telemetry signals of their own (besides the derived state)
MACHINE_TOOL_PASS_THROUGH: dict[str, tuple[str, str | None]] = {
    "feed_override": ("feed_override", "%"),
    "spindle_rotating": ("spindle_rotating", None),
    "spindle_override": ("spindle_override", "%"),
    "job": ("production_job", None),
}
# sinumerik.py: inputs published as signals of their own: key -> (signal, unit)
SINUMERIK_PASS_THROUGH: dict[str, tuple[str, str | None]] = {
    "req_parts": ("required_parts", None),
    "spindle_speed": ("spindle_speed", "1/min"),
    "spindle_load": ("spindle_load", "%"),
    "spindle_override": ("spindle_override", "%"),
    "feed_override": ("feed_override", "%"),
}
SINUMERIK_PROGRAM_PATH = "program_path"

# DI / Machinery identification property -> signal suffix (aliases of models/aas.py)
IDENTIFICATION = (
    "Manufacturer",
    "ManufacturerUri",
    "Model",
    "ProductCode",
    "SerialNumber",
    "HardwareRevision",
    "SoftwareRevision",
    "DeviceClass",
    "ProductInstanceUri",
    "YearOfConstruction",
    "MonthOfConstruction",
    "InitialOperationDate",
    "AssetId",
    "ComponentName",
    "Location",
)


def identification_signal(browse_name: str) -> str:
    """`SerialNumber` -> `identification_serial_number` (models/aas.py aliases the suffix)."""
    snake = "".join("_" + c.lower() if c.isupper() else c for c in browse_name).lstrip("_")
    return f"identification_{snake}"


_MACHINERY = frozenset({
    SIG_AVAILABILITY, SIG_EXECUTION, SIG_MODE, *ALARM_SIGNALS,
    *(identification_signal(n) for n in IDENTIFICATION),
})
PROFILE_SIGNALS: dict[str, frozenset[str]] = {
    "none": frozenset({SIG_AVAILABILITY}),  # the adapter's own, on connect and on loss
    "machinery": _MACHINERY,
    "machine_tool": _MACHINERY | {SIG_PROGRAM, SIG_PART_COUNT, SIG_BAD_PART_COUNT} | {
        signal for signal, _unit in MACHINE_TOOL_PASS_THROUGH.values()
    },
    "sinumerik": frozenset({
        SIG_AVAILABILITY, SIG_EXECUTION, SIG_MODE, SIG_PROGRAM, SINUMERIK_PROGRAM_PATH,
        SIG_PART_COUNT, *ALARM_SIGNALS,
        *(signal for signal, _unit in SINUMERIK_PASS_THROUGH.values()),
    }),
}
"""Profile -> every signal name the adapter publishes for it whatever the points say."""

# Which inputs (the `derive()` keys of machine_tool.py / sinumerik.py) feed which signal, so
# the status page and `probe` can name the nodes behind a derived value: a wrong mapping
# (the wrong channel, a vendor's look-alike variable) shows there before it skews OEE.
_MACHINE_TOOL_INPUTS: dict[str, tuple[str, ...]] = {
    SIG_AVAILABILITY: ("item_state",),
    SIG_EXECUTION: ("item_state", "program_state", "feed_override"),
    SIG_MODE: ("operation_mode", "channel_mode", "operation_mode_sm"),
    SIG_PROGRAM: ("program",),
    SIG_PART_COUNT: ("parts_completed", "parts_lifetime"),  # the first found only
    SIG_BAD_PART_COUNT: ("parts_completed", "parts_good"),
    **{signal: (key,) for key, (signal, _unit) in MACHINE_TOOL_PASS_THROUGH.items()},
}
_SINUMERIK_INPUTS: dict[str, tuple[str, ...]] = {
    SIG_EXECUTION: ("prog_status", "feed_override"),
    SIG_MODE: ("op_mode",),
    SIG_PROGRAM: ("program",),
    SINUMERIK_PROGRAM_PATH: ("program",),
    SIG_PART_COUNT: ("act_parts",),
    **{signal: (key,) for key, (signal, _unit) in SINUMERIK_PASS_THROUGH.items()},
}
_FIRST_FOUND = frozenset({SIG_PART_COUNT})
RESOLVING = "(resolving)"
CONNECTION = "(session)"


def signal_sources(
    profile: str,
    nodes: dict[str, str] | None,
    identification: dict[str, str],
    alarms: str | None,
) -> dict[str, str]:
    """Where each profile signal comes from: the node ids of its inputs, joined by " + ".

    `nodes` (input key -> node id text) is None until discovery ran: every signal is then
    `(resolving)`. A signal none of whose inputs the server has is left out (it publishes
    nothing); `alarms` names the event notifier, None when events are unavailable."""
    wanted = PROFILE_SIGNALS.get(profile, frozenset())
    if nodes is None:
        return {signal: CONNECTION if signal == SIG_AVAILABILITY else RESOLVING
                for signal in wanted}
    table = _SINUMERIK_INPUTS if profile == "sinumerik" else _MACHINE_TOOL_INPUTS
    out = {SIG_AVAILABILITY: CONNECTION}
    for signal, keys in table.items():
        found = [nodes[k] for k in keys if k in nodes]
        if signal in _FIRST_FOUND:
            found = found[:1]
        if signal == SIG_AVAILABILITY:
            found.insert(0, CONNECTION)
        if found and signal in wanted:
            out[signal] = " + ".join(dict.fromkeys(found))
    for browse_name, node in identification.items():
        out[identification_signal(browse_name)] = node
    if alarms is not None:
        for signal in ALARM_SIGNALS:
            out[signal] = f"events of {alarms}"
    return out
