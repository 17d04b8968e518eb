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
