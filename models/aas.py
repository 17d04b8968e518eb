"""The asset twin as an Asset Administration Shell (AAS V3, IDTA-01001-3-0 JSON).

Why AAS: a platform that has never seen this gateway can read a machine's identity, its live
state and its ISO 22400-2 figures by the semantic ids of published IDTA submodel templates,
with no gateway-specific schema. The model is built with `aas-core3.0` (the aas-core-works
reference SDK), never as hand-made JSON, and every environment passes
`aas_core3.verification.verify()` (`verify_environment` returns its findings).

    shell  urn:edge-gateway:{site}:{machine}:aas
           globalAssetId: the YAML's, else urn:edge-gateway:{site}:{machine}
    |- Nameplate              IDTA 02006-3-0  YAML + device identification
    |- ProcessVariablesFor... IDTA 02066 1.0  ISO 22400-2 elements from the OEE engine
    |- OperationalData        our own         live state, signals, ISO 22400-2 KPIs
    |- ProductionCalendar     IDTA 02067 1.1  the shift calendar as iCalendar (one per site)
    '- CarbonFootprint        IDTA 02023 1.0  measured PCF per good part and program, at the
                                              production stage (metered machines only)

Rules (each one is tested):

* A value that is None is left out, never written as an empty property; so is a value a
  device reported in a form its XSD type rejects (a date that is no date, control bytes).
* Identification: YAML wins where both give a value, the device fills the gaps.
* Times are `xs:duration` ("PT27000S"), counts `xs:decimal`, as IDTA 02066 types them.
* Ids are URNs built from the YAML's `[a-z0-9_-]` ids: stable across restarts, no spaces.

docs/aas.md lists every id, idShort and semantic id, and where the templates were unclear.
Pure: no I/O, no clock reads.
"""

from __future__ import annotations

import calendar as _monthcal
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from functools import lru_cache
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from aas_core3 import jsonization, verification
from aas_core3 import types as aas

from models.machine_state import MachineState
from models.plant import ALL_DAYS, Machine, Plant, Shift, ShiftCalendar, Weekday
from models.shift_calendar import ALWAYS

__all__ = [
    "CALENDAR_SEMANTIC_ID",
    "CARBON_SEMANTIC_ID",
    "ISO22400",
    "KPI_SEMANTIC_ID",
    "NAMEPLATE_KEYS",
    "NAMEPLATE_SEMANTIC_ID",
    "OPERATIONAL_SEMANTIC_ID",
    "AasIds",
    "KpiFigures",
    "LossFigures",
    "ProgramFootprint",
    "SignalValue",
    "aas_ids",
    "build_environment",
    "build_plant_environment",
    "calendar_ics",
    "environment_json",
    "resolve_nameplate",
    "verify_environment",
]

XSD = aas.DataTypeDefXSD
SignalValue = tuple[object, str | None, datetime | None]
"""(value, unit, timestamp) of one signal, as the twin last saw it."""

# -- semantic ids ---------------------------------------------------------------------------

NAMEPLATE_SEMANTIC_ID = "https://admin-shell.io/idta/nameplate/3/0/Nameplate"
KPI_SEMANTIC_ID = "https://admin-shell.io/idta/SubmodelTemplate/ProcessVariablesForManufacturingKPICalculation/1/0"
CALENDAR_SEMANTIC_ID = "https://admin-shell.io/idta/SubmodelTemplate/ProductionCalendar/1/0"
OPERATIONAL_SEMANTIC_ID = "urn:edge-gateway:semantics:OperationalData:1:0"
# IDTA 02023-1-0 Carbon Footprint (template JSON of the 1.0.2 bug-fix release): the
# submodel, its ProductCarbonFootprints list and its elements, the ECLASS IRDIs of the
# properties we fill, and the valueIds of the template's value lists for the values we give
# (docs/aas.md, "Carbon Footprint")
_CF = "https://admin-shell.io/idta/CarbonFootprint/"
CARBON_SEMANTIC_ID = _CF + "CarbonFootprint/1/0"
PCF_LIST_SEMANTIC_ID = _CF + "ProductCarbonFootprints/1/0"
PCF_SEMANTIC_ID = _CF + "ProductCarbonFootprint/1/0"
PCF_METHODS_SEMANTIC_ID = _CF + "PcfCalculationMethods/1/0"
PCF_PHASES_SEMANTIC_ID = _CF + "LifeCyclePhases/1/0"
PCF_PUBLICATION_DATE = _CF + "PublicationDate/1/0"
PCF_CALCULATION_METHOD = "0173-1#02-ABG854#003"
PCF_CO2EQ = "0173-1#02-ABG855#003"
PCF_REFERENCE_UNIT = "0173-1#02-ABG856#003"
PCF_QUANTITY = "0173-1#02-ABG857#003"
PCF_LIFE_CYCLE_PHASE = "0173-1#02-ABG858#003"
GHG_PROTOCOL = ("GHG Protocol", "0173-1#07-ABU221#003")
PIECE = ("piece", "0173-1#07-ABZ603#003")
A3_PRODUCTION = ("A3 - production", "0173-1#07-ABU210#003")
ISO22400 = "http://www.w3id.org/hsu-aut/ISO22400-2#"

_PV = "https://admin-shell.io/idta/ProcessVariablesForManufacturingKPICalculation/"
_PC = "https://admin-shell.io/idta/ProductionCalendar/"

# IDTA 02006-3-0: (idShort, IEC CDD semanticId, ECLASS supplementalSemanticId, XSD type or
# None for a MultiLanguageProperty). The template's FirmwareVersion repeats HardwareVersion's
# ECLASS id (0173-1#02-AAN270#004), so it gets no supplemental id here.
_NAMEPLATE: tuple[tuple[str, str, str | None, aas.DataTypeDefXSD | None], ...] = (
    ("URIOfTheProduct", "0112/2///61987#ABN590#002", "0173-1#02-ABH173#003", XSD.ANY_URI),
    ("ManufacturerName", "0112/2///61987#ABA565#009", "0173-1#02-AAO677#004", None),
    ("ManufacturerProductDesignation", "0112/2///61987#ABA567#009", "0173-1#02-AAW338#003", None),
    ("ManufacturerProductRoot", "0112/2///61360_7#AAS011#001", "0173-1#02-AAU732#003", None),
    ("ManufacturerProductFamily", "0112/2///61987#ABP464#002", "0173-1#02-AAU731#003", None),
    ("ManufacturerProductType", "0112/2///61987#ABA300#008", "0173-1#02-AAO057#004", XSD.STRING),
    ("OrderCodeOfManufacturer", "0112/2///61987#ABA950#008", "0173-1#02-AAO227#004", XSD.STRING),
    (
        "ProductArticleNumberOfManufacturer",
        "0112/2///61987#ABA581#007",
        "0173-1#02-AAO676#005",
        XSD.STRING,
    ),
    ("SerialNumber", "0112/2///61987#ABA951#009", "0173-1#02-AAM556#004", XSD.STRING),
    ("YearOfConstruction", "0112/2///61987#ABP000#002", "0173-1#02-AAP906#003", XSD.STRING),
    ("DateOfManufacture", "0112/2///61987#ABB757#007", "0173-1#02-AAR972#004", XSD.DATE),
    ("HardwareVersion", "0112/2///61987#ABA926#008", "0173-1#02-AAN270#004", XSD.STRING),
    ("FirmwareVersion", "0112/2///61987#ABA302#006", None, XSD.STRING),
    ("SoftwareVersion", "0112/2///61987#ABA601#008", "0173-1#02-AAM737#004", XSD.STRING),
    ("CountryOfOrigin", "0112/2///61987#ABP462#001", "0173-1#02-AAO259#007", XSD.STRING),
    (
        "UniqueFacilityIdentifier",
        "https://admin-shell.io/idta/nameplate/3/0/UniqueFacilityIdentifier",
        None,
        XSD.STRING,
    ),
)
NAMEPLATE_KEYS = tuple(row[0] for row in _NAMEPLATE)
"""The keys `device_identification` takes (case and `_`/`-` do not matter; aliases below)."""

_ALIASES: dict[str, tuple[str, ...]] = {  # OPC UA DI / MTConnect Description / YAML words
    "manufacturer": ("ManufacturerName",),
    "model": ("ManufacturerProductDesignation", "ManufacturerProductType"),
    "productcode": ("OrderCodeOfManufacturer",),
    "productinstanceuri": ("URIOfTheProduct",),
    "hardwarerevision": ("HardwareVersion",),
    "softwarerevision": ("SoftwareVersion",),
    "firmwarerevision": ("FirmwareVersion",),
    "controlversion": ("SoftwareVersion",),  # Haas Q101, FANUC FOCAS system info
}
_DEVICE_KEYS = {k.lower(): (k,) for k in NAMEPLATE_KEYS} | _ALIASES
IDENTIFICATION_PREFIX = "identification_"
"""OPC UA DI Identification signals are named `identification_<BrowseName>`: a key of
`device_identification` may carry it (the signal's own name), matched without it."""
DEVICE_SIGNAL_QUALIFIER = "DeviceSignal"
"""The `type` of the Qualifier on a Nameplate element the device filled (the YAML left it
out); its `value` names the `device_identification` key, the signal the value was read from.
Why: a destination whose `signals` filter denies that signal must not see the value, and the
answer is narrowed after it is built (edge/egress/redaction.py, the one place deciding what
a `signals` filter hides): the mark says which elements to leave out there. The YAML's own
values carry none (they are the plant's declaration, never a signal's)."""

# Downtime reasons of edge/kpi/oee.py's loss tree that ISO 22400-2 names separately; every other
# reason (waiting, unavailable, no_data, ...) is ActualUnitDownTime.
SETUP_REASON = "setup"
DELAY_REASONS = ("alarm", "feed_hold")


class LossFigures(Protocol):
    @property
    def downtime(self) -> Mapping[str, float]: ...


class KpiFigures(Protocol):
    """What the AAS needs of one OEE window; `edge.kpi.oee.OeeResult` has it (models cannot import
    edge, so this is structural)."""

    @property
    def start(self) -> datetime: ...
    @property
    def end(self) -> datetime: ...
    @property
    def pbt(self) -> float: ...
    @property
    def apt(self) -> float: ...
    @property
    def pq(self) -> int: ...
    @property
    def gq(self) -> int: ...
    @property
    def scrap(self) -> int: ...
    @property
    def availability(self) -> float | None: ...
    @property
    def effectiveness(self) -> float | None: ...
    @property
    def quality(self) -> float | None: ...
    @property
    def oee(self) -> float | None: ...
    @property
    def losses(self) -> LossFigures: ...


@dataclass(frozen=True, slots=True)
class AasIds:
    """The identifiers of one machine's environment; the calendar's is per site."""

    global_asset_id: str
    shell: str
    nameplate: str
    kpi: str
    operational: str
    calendar: str
    carbon: str


def aas_ids(plant: Plant, machine: Machine) -> AasIds:
    """Every identifier of one machine's environment, derived from the YAML ids only."""
    base = f"urn:edge-gateway:{plant.gateway.site}:{machine.id}"
    return AasIds(
        global_asset_id=machine.nameplate.global_asset_id or base,
        shell=f"{base}:aas",
        nameplate=f"{base}:sm:nameplate",
        kpi=f"{base}:sm:kpi",
        operational=f"{base}:sm:operational",
        calendar=f"urn:edge-gateway:{plant.gateway.site}:sm:production-calendar",
        carbon=f"{base}:sm:carbon-footprint",
    )


@dataclass(frozen=True, slots=True)
class ProgramFootprint:
    """Measured CO2e per good part of one program over a period (from part records)."""

    program: str
    co2e_kg_per_part: float
    kwh_per_part: float
    good_parts: int
    period_days: int
    as_of: datetime
    """End of the measured period: when the figure was made (the PCF's PublicationDate)."""


# -- small builders -------------------------------------------------------------------------


def _ref(iri: str) -> aas.Reference:
    return aas.Reference(
        aas.ReferenceTypes.EXTERNAL_REFERENCE, [aas.Key(aas.KeyTypes.GLOBAL_REFERENCE, iri)]
    )


def _en(text: str) -> list[aas.LangStringTextType]:
    return [aas.LangStringTextType("en", text[:1023])]


def _op(name: str) -> aas.Reference:
    return _ref(f"{OPERATIONAL_SEMANTIC_ID}#{name}")


def _prop(
    id_short: str | None, value: str | None, xsd: aas.DataTypeDefXSD, semantic: aas.Reference
) -> aas.Property | None:
    return (
        None
        if value is None
        else aas.Property(xsd, id_short=id_short, semantic_id=semantic, value=value)
    )


def _smc(
    id_short: str | None,
    semantic: aas.Reference,
    elements: Iterable[aas.SubmodelElement | None],
    display_name: str | None = None,
) -> aas.SubmodelElementCollection | None:
    value = [e for e in elements if e is not None]
    if not value:
        return None
    shown = _text(display_name[:128]) if display_name else None
    names = [aas.LangStringNameType("en", shown)] if shown else None
    return aas.SubmodelElementCollection(
        id_short=id_short, display_name=names, semantic_id=semantic, value=value
    )


def _text(value: object, max_len: int | None = None) -> str | None:
    """A string fit for an AAS value, or None (empty, too long, or not XML-serializable)."""
    if value is None:
        return None
    s = str(value).strip()
    if not s or not verification.matches_xml_serializable_string(s):
        return None
    return s if max_len is None or len(s) <= max_len else None


def _double(x: float) -> str:
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "INF" if x > 0 else "-INF"
    return repr(float(x))


def _decimal(x: float) -> str | None:
    """xs:decimal: the float's shortest repr without an exponent (1e-05 -> 0.00001)."""
    if not math.isfinite(x):
        return None
    return format(Decimal(repr(float(x))), "f")


def _optional_double(x: float | None) -> str | None:
    return None if x is None else _double(x)


def _duration(seconds: float | None) -> str | None:
    """xs:duration in seconds only ("PT27000.5S"): exact, and trivial to parse back."""
    if seconds is None or not math.isfinite(seconds):
        return None
    digits = f"{abs(seconds):.6f}".rstrip("0").rstrip(".")
    return f"{'-' if seconds < 0 else ''}PT{digits}S"


def _datetime(t: datetime | None) -> str | None:
    """xs:dateTime in UTC; a naive datetime is taken as UTC (the gateway's clock is UTC)."""
    if t is None:
        return None
    t = t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)
    return t.isoformat().replace("+00:00", "Z")


def _typed(value: object) -> tuple[aas.DataTypeDefXSD, str] | None:
    """The XSD type and lexical form of a signal value (bool before int: bool is an int)."""
    if isinstance(value, bool):
        return XSD.BOOLEAN, "true" if value else "false"
    if isinstance(value, int):
        return (XSD.LONG if -(2**63) <= value < 2**63 else XSD.INTEGER), str(value)
    if isinstance(value, float):
        return XSD.DOUBLE, _double(value)
    if isinstance(value, datetime):
        return XSD.DATE_TIME, _datetime(value) or ""
    text = _text(value)
    return None if text is None else (XSD.STRING, text)


def _id_short(name: str, used: set[str]) -> str:
    """A valid, unique idShort (`^[a-zA-Z][a-zA-Z0-9_]*$`) for a free-form signal name."""
    s = re.sub(r"[^A-Za-z0-9_]", "_", name)[:120]
    if not re.match(r"[A-Za-z]", s):
        s = f"S_{s}"
    candidate, n = s, 1
    while candidate in used:
        n += 1
        candidate = f"{s}_{n}"
    used.add(candidate)
    return candidate


# -- Digital Nameplate (IDTA 02006-3-0) -----------------------------------------------------


def _norm_key(key: str) -> str:
    return re.sub(r"[^a-z0-9]", "", key.lower())


def _nameplate_value(value: object, xsd: aas.DataTypeDefXSD | None) -> str | None:
    if xsd is None:  # MultiLanguageProperty: LangStringTextType holds at most 1023 chars
        return _text(value, 1023)
    text = _text(value)
    if text is None or not verification.value_consistent_with_xsd_type(text, xsd):
        return None
    return text


def resolve_nameplate(
    plant: Plant, machine: Machine, device_identification: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Nameplate values by idShort: YAML first, then the device, for each element.

    The YAML wins because a person wrote it on purpose (a retrofitted control may report the
    retrofitter, not the machine builder); the device fills what the YAML leaves out.
    URIOfTheProduct falls back to the shell's globalAssetId, since the template requires it.
    """
    return _resolve_nameplate(plant, machine, device_identification)[0]


def _resolve_nameplate(
    plant: Plant, machine: Machine, device_identification: Mapping[str, str] | None
) -> tuple[dict[str, str], dict[str, str]]:
    """`resolve_nameplate`'s values, and for those the device gave, the key they came from."""
    np = machine.nameplate
    year = None if np.year_of_construction is None else str(np.year_of_construction)
    yaml = {
        "URIOfTheProduct": np.global_asset_id,
        "ManufacturerName": np.manufacturer,
        "ManufacturerProductDesignation": np.model,
        "ManufacturerProductType": np.model,
        "SerialNumber": np.serial_number,
        "YearOfConstruction": year,
    }
    device: dict[str, object] = {}
    signal: dict[str, str] = {}
    for key, value in (device_identification or {}).items():
        for id_short in _DEVICE_KEYS.get(_norm_key(key.removeprefix(IDENTIFICATION_PREFIX)), ()):
            if id_short not in device:
                device[id_short], signal[id_short] = value, key
    fallback = {"URIOfTheProduct": aas_ids(plant, machine).global_asset_id}
    out: dict[str, str] = {}
    from_device: dict[str, str] = {}
    for id_short, _, _, xsd in _NAMEPLATE:
        for source in (yaml, device, fallback):
            text = _nameplate_value(source.get(id_short), xsd)
            if text is not None:
                out[id_short] = text
                if source is device:
                    from_device[id_short] = signal[id_short]
                break
    return out, from_device


def _nameplate(
    ids: AasIds, values: Mapping[str, str], from_device: Mapping[str, str]
) -> aas.Submodel:
    """`from_device`: idShort -> the signal it was read from (`DEVICE_SIGNAL_QUALIFIER`)."""
    elements: list[aas.SubmodelElement] = []
    for id_short, semantic, supplemental, xsd in _NAMEPLATE:
        value = values.get(id_short)
        if value is None:
            continue
        extra = [_ref(supplemental)] if supplemental else None
        signal = from_device.get(id_short)
        qualifiers = None if signal is None else [aas.Qualifier(
            DEVICE_SIGNAL_QUALIFIER, XSD.STRING, kind=aas.QualifierKind.VALUE_QUALIFIER,
            value=signal)]
        if xsd is None:
            elements.append(
                aas.MultiLanguageProperty(
                    id_short=id_short,
                    semantic_id=_ref(semantic),
                    supplemental_semantic_ids=extra,
                    value=_en(value),
                    qualifiers=qualifiers,
                )
            )
        else:
            elements.append(
                aas.Property(
                    xsd,
                    id_short=id_short,
                    semantic_id=_ref(semantic),
                    supplemental_semantic_ids=extra,
                    value=value,
                    qualifiers=qualifiers,
                )
            )
    return aas.Submodel(
        ids.nameplate,
        id_short="Nameplate",
        kind=aas.ModellingKind.INSTANCE,
        semantic_id=_ref(NAMEPLATE_SEMANTIC_ID),
        submodel_elements=elements or None,
    )


# -- Process Variables for Manufacturing KPI Calculation (IDTA 02066) -----------------------


def _variable(
    id_short: str, concept: str, key: str, *, value: str | None, xsd: aas.DataTypeDefXSD, note: str
) -> aas.SubmodelElementCollection | None:
    """One template variable: key (ISO 22400-2 acronym), currentValue and comment."""
    if value is None:
        return None
    return _smc(
        id_short,
        _ref(ISO22400 + concept),
        [
            aas.Property(XSD.STRING, id_short="key", semantic_id=_ref(_PV + "key/1/0"), value=key),
            aas.Property(
                xsd,
                id_short="currentValue",
                semantic_id=_ref(_PV + "currentValue/1/0"),
                value=value,
            ),
            aas.MultiLanguageProperty(
                id_short="comment", semantic_id=_ref(_PV + "comment/1/0"), value=_en(note)
            ),
        ],
    )


def _pru(machine: Machine, state: MachineState | None) -> tuple[float | None, str]:
    """PRU in wall-clock seconds (`Machine.cycle_times`), like the measured times beside it,
    and the comment that says where it comes from."""
    program = state.program if state else None
    ct = machine.cycle_times
    of = f"program {program}" if program in ct.programs else "the machine"
    note = f"Ideal cycle time of {of} from the plant configuration"
    if machine.time_scale != 1:
        note += f", divided by its simulator's time_scale {machine.time_scale:g} (wall seconds)"
    return ct.of(program), note


def _kpi(
    ids: AasIds, machine: Machine, state: MachineState | None, oee: KpiFigures | None
) -> aas.Submodel:
    pru, pru_note = _pru(machine, state)
    elements: list[aas.SubmodelElementCollection | None] = []
    if oee is not None:
        window = f"{_datetime(oee.start)}/{_datetime(oee.end)}"
        down = dict(oee.losses.downtime)
        aust = down.get(SETUP_REASON, 0.0)
        adet = sum(down.get(r, 0.0) for r in DELAY_REASONS)
        adot = sum(v for r, v in down.items() if r != SETUP_REASON and r not in DELAY_REASONS)
        aupt = oee.apt + aust
        times = (
            ("PlannedBusyTime", "PlannedBusyTime", "PBT", oee.pbt),
            ("ActualProductionTime", "ActualProductionTime", "APT", oee.apt),
            ("ActualUnitSetupTime", "ActualSetupTime", "AUST", aust),
            ("ActualUnitProcessingTime", "ActualUnitProcessingTime", "AUPT", aupt),
            ("ActualUnitDelayTime", "ActualUnitDelayTime", "ADET", adet),
            ("ActualUnitBusyTime", "ActualUnitBusyTime", "AUBT", aupt + adet),
            ("ActualUnitDownTime", "ActualUnitDownTime", "ADOT", adot),
        )
        for id_short, concept, key, seconds in times:
            elements.append(
                _variable(
                    id_short,
                    concept,
                    key,
                    value=_duration(seconds),
                    xsd=XSD.DURATION,
                    note=f"ISO 22400-2 {key} over {window}, measured at the gateway",
                )
            )
        for id_short, key, count in (
            ("ProducedQuantity", "PQ", oee.pq),
            ("GoodQuantity", "GQ", oee.gq),
            ("ScrapQuantity", "SQ", oee.scrap),
        ):
            elements.append(
                _variable(
                    id_short,
                    id_short,
                    key,
                    value=str(count),
                    xsd=XSD.DECIMAL,
                    note=f"ISO 22400-2 {key} over {window}, from the part counters",
                )
            )
    elements.append(
        _variable(
            "PlannedRuntimePerItem",
            "PlannedRuntimePerUnit",
            "PRU",
            value=_duration(pru),
            xsd=XSD.DURATION,
            note=pru_note,
        )
    )
    value: list[aas.SubmodelElement] = [e for e in elements if e is not None]
    return aas.Submodel(
        ids.kpi,
        id_short="ProcessVariablesForManufacturingKPICalculation",
        kind=aas.ModellingKind.INSTANCE,
        semantic_id=_ref(KPI_SEMANTIC_ID),
        submodel_elements=value or None,
    )


# -- Operational data (our own semantics, docs/aas.md) --------------------------------------


def _state(state: MachineState) -> aas.SubmodelElementCollection | None:
    alarms = [a for a in (_text(x) for x in state.alarms) if a is not None]
    alarm_list = (
        aas.SubmodelElementList(
            aas.AASSubmodelElements.PROPERTY,
            id_short="Alarms",
            semantic_id=_op("Alarms"),
            semantic_id_list_element=_op("Alarm"),
            value_type_list_element=XSD.STRING,
            value=[aas.Property(XSD.STRING, semantic_id=_op("Alarm"), value=a) for a in alarms],
        )
        if alarms
        else None
    )

    def count(n: int | None) -> str | None:
        return None if n is None else str(n)

    return _smc(
        "State",
        _op("State"),
        [
            _prop("Availability", state.availability.value, XSD.STRING, _op("Availability")),
            _prop(
                "Execution",
                state.execution.value if state.execution else None,
                XSD.STRING,
                _op("Execution"),
            ),
            _prop(
                "ControllerMode",
                state.controller_mode.value if state.controller_mode else None,
                XSD.STRING,
                _op("ControllerMode"),
            ),
            _prop(
                "EmergencyStop",
                "true" if state.emergency_stop else "false",
                XSD.BOOLEAN,
                _op("EmergencyStop"),
            ),
            alarm_list,
            _prop("Program", _text(state.program), XSD.STRING, _op("Program")),
            _prop("PartCount", count(state.part_count), XSD.LONG, _op("PartCount")),
            _prop("BadPartCount", count(state.bad_part_count), XSD.LONG, _op("BadPartCount")),
            _prop("Since", _datetime(state.since), XSD.DATE_TIME, _op("Since")),
        ],
    )


def _signals(signals: Mapping[str, SignalValue]) -> aas.SubmodelElementCollection | None:
    used: set[str] = set()
    items: list[aas.SubmodelElement | None] = []
    for name in sorted(signals):
        value, unit, ts = signals[name]
        typed = _typed(value)
        if typed is None:
            continue
        items.append(
            _smc(
                _id_short(name, used),
                _op("Signal"),
                [
                    aas.Property(
                        typed[0], id_short="value", semantic_id=_op("SignalValue"), value=typed[1]
                    ),
                    _prop("unit", _text(unit), XSD.STRING, _op("SignalUnit")),
                    _prop("timestamp", _datetime(ts), XSD.DATE_TIME, _op("SignalTimestamp")),
                ],
                display_name=name,
            )
        )
    return _smc("Signals", _op("Signals"), items)


def _kpis(oee: KpiFigures) -> aas.SubmodelElementCollection | None:
    def iso(id_short: str, value: str | None, xsd: aas.DataTypeDefXSD) -> aas.Property | None:
        return _prop(id_short, value, xsd, _ref(ISO22400 + id_short))

    return _smc(
        "Kpis",
        _op("Kpis"),
        [
            iso("CalculativeStartDate", _datetime(oee.start), XSD.DATE_TIME),
            iso("CalculativeEndDate", _datetime(oee.end), XSD.DATE_TIME),
            iso("Availability", _optional_double(oee.availability), XSD.DOUBLE),
            iso("Effectiveness", _optional_double(oee.effectiveness), XSD.DOUBLE),
            iso("QualityRatio", _optional_double(oee.quality), XSD.DOUBLE),
            iso("OverallEquipmentEffectiveness", _optional_double(oee.oee), XSD.DOUBLE),
        ],
    )


def _operational(
    ids: AasIds,
    state: MachineState | None,
    signals: Mapping[str, SignalValue] | None,
    oee: KpiFigures | None,
) -> aas.Submodel:
    elements = [
        _state(state) if state is not None else None,
        _signals(signals) if signals else None,
        _kpis(oee) if oee is not None else None,
    ]
    value: list[aas.SubmodelElement] = [e for e in elements if e is not None]
    return aas.Submodel(
        ids.operational,
        id_short="OperationalData",
        kind=aas.ModellingKind.INSTANCE,
        semantic_id=_ref(OPERATIONAL_SEMANTIC_ID),
        submodel_elements=value or None,
    )


# -- Production Calendar (IDTA 02067) -------------------------------------------------------

_ICS_ANCHOR = date(2024, 1, 1)
"""First day the recurring events may start on, and the fixed DTSTAMP: the calendar is a
function of the YAML alone, so equal YAML gives byte-equal iCalendar (and signatures)."""
_ICS_DAYS = ("MO", "TU", "WE", "TH", "FR", "SA", "SU")
PRODUCTION = "X_PRODUCTION_DAY"
BREAK = "X_BREAK"


def _ics_offset(delta: timedelta) -> str:
    total = int(delta.total_seconds())
    sign, total = ("-" if total < 0 else "+"), abs(total)
    h, rest = divmod(total, 3600)
    m, s = divmod(rest, 60)
    return f"{sign}{h:02d}{m:02d}" + (f"{s:02d}" if s else "")


@lru_cache(maxsize=32)
def _vtimezone(name: str, year: int) -> tuple[str, ...]:
    """VTIMEZONE for `name`, its rules read off the transitions of `year`.

    Each transition becomes a yearly rule on the n-th (or last) weekday of its month, which is
    how DST rules are written everywhere in Europe and the Americas; zones with other rules get
    that year's dates as an approximation (the TZID is the IANA name, which clients know).
    """
    tz = ZoneInfo(name)

    def offset(t: datetime) -> timedelta:
        return t.astimezone(tz).utcoffset() or timedelta(0)

    t, end = datetime(year, 1, 1, tzinfo=UTC), datetime(year + 1, 1, 1, tzinfo=UTC)
    before = offset(t)
    lines = ["BEGIN:VTIMEZONE", f"TZID:{name}"]
    while t < end:
        nxt = t + timedelta(hours=1)
        if offset(nxt) != before:
            lo, hi = t, nxt  # bisect to the minute
            while hi - lo > timedelta(minutes=1):
                mid = lo + timedelta(minutes=(hi - lo) // timedelta(minutes=1) // 2)
                lo, hi = (mid, hi) if offset(mid) == before else (lo, mid)
            after, local = offset(hi), (hi + before).replace(tzinfo=None)
            last = _monthcal.monthrange(local.year, local.month)[1]
            nth = -1 if local.day + 7 > last else (local.day - 1) // 7 + 1
            kind = "DAYLIGHT" if hi.astimezone(tz).dst() else "STANDARD"
            lines += [
                f"BEGIN:{kind}",
                f"DTSTART:{local:%Y%m%dT%H%M%S}",
                f"RRULE:FREQ=YEARLY;BYMONTH={local.month};BYDAY={nth}{_ICS_DAYS[local.weekday()]}",
                f"TZOFFSETFROM:{_ics_offset(before)}",
                f"TZOFFSETTO:{_ics_offset(after)}",
                f"TZNAME:{hi.astimezone(tz).tzname()}",
                f"END:{kind}",
            ]
            before = after
        t = nxt
    if len(lines) == 2:  # no DST
        lines += [
            "BEGIN:STANDARD",
            "DTSTART:19700101T000000",
            f"TZOFFSETFROM:{_ics_offset(before)}",
            f"TZOFFSETTO:{_ics_offset(before)}",
            f"TZNAME:{t.astimezone(tz).tzname()}",
            "END:STANDARD",
        ]
    return (*lines, "END:VTIMEZONE")


def _ics_dt(d: date, t: time) -> str:
    return f"{d:%Y%m%d}T{t:%H%M%S}"


def _vevent(  # noqa: PLR0917 (one event's fields)
    uid: str,
    summary: str,
    category: str,
    tzid: str,
    start: time,
    end: time,
    days: list[Weekday],
    holidays: Iterable[date],
) -> list[str]:
    """A weekly recurring event on `days`; occurrences starting on `holidays` are excluded."""
    first = next(
        _ICS_ANCHOR + timedelta(days=i)
        for i in range(7)
        if ALL_DAYS[(_ICS_ANCHOR + timedelta(days=i)).weekday()] in days
    )
    end_day = first if end > start else first + timedelta(days=1)  # end == start: 24 h
    lines = [
        "BEGIN:VEVENT",
        f"UID:{uid}",
        f"DTSTAMP:{_ICS_ANCHOR:%Y%m%d}T000000Z",
        f"DTSTART;TZID={tzid}:{_ics_dt(first, start)}",
        f"DTEND;TZID={tzid}:{_ics_dt(end_day, end)}",
        f"RRULE:FREQ=WEEKLY;BYDAY={','.join(_ICS_DAYS[ALL_DAYS.index(d)] for d in days)}",
        f"SUMMARY:{summary}",
        f"CATEGORIES:{category}",
    ]
    skipped = sorted({h for h in holidays if h >= first and ALL_DAYS[h.weekday()] in days})
    if skipped:
        lines.append(f"EXDATE;TZID={tzid}:" + ",".join(_ics_dt(h, start) for h in skipped))
    return [*lines, "END:VEVENT"]


def _break_events(site: str, tzid: str, shift: Shift, holidays: list[date]) -> list[str]:
    """A break before the shift's start time in an overnight (or 24 h) shift falls on the next
    day: it belongs to the shift of the previous evening, as in models/shift_calendar.py."""
    lines: list[str] = []
    for i, b in enumerate(shift.breaks, 1):
        if b.start == b.end:
            continue
        shift_days = 1 if shift.end <= shift.start and b.start < shift.start else 0
        days = [ALL_DAYS[(ALL_DAYS.index(d) + shift_days) % 7] for d in shift.days]
        moved = [h + timedelta(days=shift_days) for h in holidays]
        lines += _vevent(
            f"{site}-{shift.name}-break{i}@edge-gateway",
            f"{shift.name} break",
            BREAK,
            tzid,
            b.start,
            b.end,
            days,
            moved,
        )
    return lines


def calendar_ics(site: str, cal: ShiftCalendar) -> str:
    """The shift calendar as RFC 5545 iCalendar (CRLF, lines folded at 75 octets).

    One weekly event per shift (category X_PRODUCTION_DAY) and per break (X_BREAK), in the
    calendar's time zone; a holiday removes the shift that starts on it (EXDATE) and appears
    as an all-day event. No shifts means the plant runs 24/7, as in models/shift_calendar.py.
    """
    tzid, holidays = cal.timezone, sorted(set(cal.holidays))
    lines = [
        "BEGIN:VCALENDAR",
        "VERSION:2.0",
        "PRODID:-//edge-gateway//production calendar//EN",
        "CALSCALE:GREGORIAN",
        *_vtimezone(tzid, _ICS_ANCHOR.year),
    ]
    for shift in cal.shifts or [ALWAYS]:
        if not shift.days:
            continue
        lines += _vevent(
            f"{site}-{shift.name}-shift@edge-gateway",
            shift.name,
            PRODUCTION,
            tzid,
            shift.start,
            shift.end,
            shift.days,
            holidays,
        )
        lines += _break_events(site, tzid, shift, holidays)
    for h in holidays:
        lines += [
            "BEGIN:VEVENT",
            f"UID:{site}-holiday-{h:%Y%m%d}@edge-gateway",
            f"DTSTAMP:{_ICS_ANCHOR:%Y%m%d}T000000Z",
            f"DTSTART;VALUE=DATE:{h:%Y%m%d}",
            f"DTEND;VALUE=DATE:{h + timedelta(days=1):%Y%m%d}",
            "SUMMARY:holiday",
            "TRANSP:TRANSPARENT",
            "END:VEVENT",
        ]
    lines.append("END:VCALENDAR")
    return "".join(_fold(line) + "\r\n" for line in lines)


def _fold(line: str) -> str:
    """RFC 5545 3.1 folding; the content is ASCII (ids, IANA names, digits), so chars = octets."""
    parts, rest = [line[:75]], line[75:]
    while rest:
        parts.append(" " + rest[:74])
        rest = rest[74:]
    return "\r\n".join(parts)


def _production_calendar(plant: Plant, ids: AasIds) -> aas.Submodel:
    """IDTA 02067, with one deviation: the template's `calendar` is a File (a path inside an
    AASX package); an environment sent over MQTT has no package, so it is a Blob of the same
    idShort and semanticId that carries the iCalendar itself."""
    cal, site = plant.shifts, plant.gateway.site
    variables = (
        (
            PRODUCTION,
            "Events of this category are planned production time (one per shift); "
            "occurrences on holidays are excluded with EXDATE.",
        ),
        (
            BREAK,
            "Events of this category are planned breaks: planned downtime inside a shift, "
            "not part of the planned busy time.",
        ),
    )
    var_id = _ref(_PC + "specificationExtensionVariables/1/0")
    return aas.Submodel(
        ids.calendar,
        id_short="ProductionCalendar",
        kind=aas.ModellingKind.INSTANCE,
        semantic_id=_ref(CALENDAR_SEMANTIC_ID),
        description=_en(f"Shift calendar of site {site} ({cal.timezone}) as RFC 5545 iCalendar"),
        submodel_elements=[
            aas.Blob(
                "text/calendar",
                id_short="calendar",
                semantic_id=_ref(_PC + "calendar/1/0"),
                value=calendar_ics(site, cal).encode("ascii"),
            ),
            aas.SubmodelElementList(
                aas.AASSubmodelElements.SUBMODEL_ELEMENT_COLLECTION,
                id_short="specificationExtensionVariables",
                semantic_id=var_id,
                semantic_id_list_element=var_id,
                value=[
                    aas.SubmodelElementCollection(
                        semantic_id=var_id,
                        description=_en(text),
                        value=[
                            aas.Property(
                                XSD.STRING,
                                id_short="variableName",
                                semantic_id=_ref(_PC + "variableName/1/0"),
                                value=name,
                            )
                        ],
                    )
                    for name, text in variables
                ],
            ),
        ],
    )


# -- Carbon footprint (IDTA 02023-1-0) ------------------------------------------------------


def _listed(pair: tuple[str, str], semantic: str) -> aas.Property:
    """A value of a template value list, with its valueId, as an element of a list."""
    value, value_id = pair
    return aas.Property(XSD.STRING, semantic_id=_ref(semantic), value=value,
                        value_id=_ref(value_id))


def _string_list(id_short: str, semantic: str, element: str,
                 values: Iterable[aas.Property]) -> aas.SubmodelElementList:
    return aas.SubmodelElementList(
        aas.AASSubmodelElements.PROPERTY, id_short=id_short, semantic_id=_ref(semantic),
        semantic_id_list_element=_ref(element), value_type_list_element=XSD.STRING,
        value=list(values))


def _product_footprint(f: ProgramFootprint, method: str) -> aas.SubmodelElementCollection:
    """One program's measured footprint. A list's elements have no idShort (AASd-120), so
    the program is named by its own property and the display name."""
    statement = (
        f"Measured at the machine: {f.kwh_per_part:.6f} kWh per good part, "
        f"{f.good_parts} good parts over {f.period_days} days; {method}"
    )
    shown = _text(f"program {f.program}"[:128])
    elements = [
        _string_list("PcfCalculationMethods", PCF_METHODS_SEMANTIC_ID, PCF_CALCULATION_METHOD,
                     [_listed(GHG_PROTOCOL, PCF_CALCULATION_METHOD)]),
        _prop("PcfCO2eq", _decimal(f.co2e_kg_per_part), XSD.DECIMAL, _ref(PCF_CO2EQ)),
        aas.Property(XSD.STRING, id_short="ReferenceImpactUnitForCalculation",
                     semantic_id=_ref(PCF_REFERENCE_UNIT), value=PIECE[0],
                     value_id=_ref(PIECE[1])),
        _prop("QuantityOfMeasureForCalculation", "1.0", XSD.DOUBLE, _ref(PCF_QUANTITY)),
        _string_list("LifeCyclePhases", PCF_PHASES_SEMANTIC_ID, PCF_LIFE_CYCLE_PHASE,
                     [_listed(A3_PRODUCTION, PCF_LIFE_CYCLE_PHASE)]),
        _prop("PublicationDate", _datetime(f.as_of), XSD.DATE_TIME,
              _ref(PCF_PUBLICATION_DATE)),
        _prop("Program", _text(f.program, 128), XSD.STRING, _op("Program")),
    ]
    return aas.SubmodelElementCollection(
        display_name=[aas.LangStringNameType("en", shown)] if shown else None,
        description=_en(_text(statement, 1023) or "measured at the machine"),
        semantic_id=_ref(PCF_SEMANTIC_ID),
        value=[e for e in elements if e is not None],
    )


def _carbon_footprint(
    ids: AasIds, footprints: Iterable[ProgramFootprint], method: str
) -> aas.Submodel:
    """One ProductCarbonFootprint per program: measured kg CO2e per good part at the
    production stage (A3), the machine's metered electricity only (gate-to-gate)."""
    pcfs: list[aas.SubmodelElement] = [_product_footprint(f, method) for f in footprints]
    elements: list[aas.SubmodelElement] = [
        aas.SubmodelElementList(
            aas.AASSubmodelElements.SUBMODEL_ELEMENT_COLLECTION,
            id_short="ProductCarbonFootprints", semantic_id=_ref(PCF_LIST_SEMANTIC_ID),
            semantic_id_list_element=_ref(PCF_SEMANTIC_ID), value=pcfs)
    ] if pcfs else []
    return aas.Submodel(
        ids.carbon,
        id_short="CarbonFootprint",
        semantic_id=_ref(CARBON_SEMANTIC_ID),
        description=_en("Product carbon footprint per good part, measured by the gateway"),
        submodel_elements=elements or None,
    )


# -- environments ---------------------------------------------------------------------------


def build_environment(
    plant: Plant,
    machine: Machine,
    *,
    state: MachineState | None = None,
    signals: Mapping[str, SignalValue] | None = None,
    oee: KpiFigures | None = None,
    device_identification: Mapping[str, str] | None = None,
    carbon: Iterable[ProgramFootprint] | None = None,
    carbon_method: str = "",
) -> aas.Environment:
    """The AAS V3 environment of one machine: its shell and four submodels, and a fifth,
    the carbon footprint, when `carbon` is given (a metered machine).

    Without state, signals or OEE the submodels still exist (a consumer sees a stable shape),
    holding what the YAML knows: the nameplate, the ideal cycle time, the calendar.
    """
    ids = aas_ids(plant, machine)
    submodels = [
        _nameplate(ids, *_resolve_nameplate(plant, machine, device_identification)),
        _kpi(ids, machine, state, oee),
        _operational(ids, state, signals, oee),
        _production_calendar(plant, ids),
    ]
    if carbon is not None:
        submodels.append(_carbon_footprint(ids, carbon, carbon_method))
    refs = [
        aas.Reference(aas.ReferenceTypes.MODEL_REFERENCE, [aas.Key(aas.KeyTypes.SUBMODEL, sm.id)])
        for sm in submodels
    ]
    place, name = f"{plant.gateway.site}/{machine.area}/{machine.line}", _text(machine.name)
    shell = aas.AssetAdministrationShell(
        ids.shell,
        aas.AssetInformation(aas.AssetKind.INSTANCE, global_asset_id=ids.global_asset_id),
        id_short=_id_short(machine.id, set()),
        display_name=[aas.LangStringNameType("en", name[:128])] if name else None,
        description=_en(f"Machine {machine.id} at {place}, served by gateway {plant.gateway.id}"),
        submodels=refs,
    )
    return aas.Environment(asset_administration_shells=[shell], submodels=submodels)


def build_plant_environment(
    plant: Plant,
    *,
    states: Mapping[str, MachineState] | None = None,
    signals: Mapping[str, Mapping[str, SignalValue]] | None = None,
    oee: Mapping[str, KpiFigures] | None = None,
    device_identification: Mapping[str, Mapping[str, str]] | None = None,
    carbon: Mapping[str, Iterable[ProgramFootprint]] | None = None,
    carbon_method: str = "",
) -> aas.Environment:
    """All machines of the plant in one environment (the `aas` query for all assets); the
    mappings are keyed by machine id. The site's calendar submodel appears once."""
    shells: list[aas.AssetAdministrationShell] = []
    submodels: dict[str, aas.Submodel] = {}
    for m in plant.machines:
        env = build_environment(
            plant,
            m,
            state=(states or {}).get(m.id),
            signals=(signals or {}).get(m.id),
            oee=(oee or {}).get(m.id),
            device_identification=(device_identification or {}).get(m.id),
            carbon=(carbon or {}).get(m.id),
            carbon_method=carbon_method,
        )
        shells += env.asset_administration_shells or []
        for sm in env.submodels or []:
            submodels.setdefault(sm.id, sm)
    return aas.Environment(asset_administration_shells=shells, submodels=list(submodels.values()))


def environment_json(env: aas.Environment) -> dict[str, Any]:
    """IDTA-01001-3-0 JSON (the `aas` query result), via aas-core3.0's jsonization."""
    result = jsonization.to_jsonable(env)
    if not isinstance(result, dict):  # an Environment always serializes to an object
        raise TypeError(f"unexpected JSON form {type(result).__name__}")
    return result


def verify_environment(env: aas.Environment) -> list[str]:
    """Every metamodel constraint the environment breaks, as `path: cause`; empty when valid."""
    return [f"{error.path}: {error.cause}" for error in verification.verify(env)]
