"""The clock-driven CNC machine behind an OPC UA server shaped by OPC 40501-1 (Machine Tools).

Why the address space is built in code and not loaded from the OPC Foundation NodeSets: a
user's install has no `shared/material`, importing the six NodeSets takes seconds and trips
over asyncua issue #1869 (see that folder's README). Instead the types the gateway looks
for are created with the *real* NodeIds of their companion specs (Machinery
`i=1012` MachineIdentificationType, MachineTool `i=13` MachineToolType, ...), so an adapter
that discovers by type definition sees the same thing here as on a real machine, and the
browse names carry the namespaces the specs give them.

Layout of one machine (`s=` ids in namespace `urn:edge-gateway:simulator`)::

    Objects/Machines (Machinery i=1001)
      <asset>                      MachineToolType
        Identification             MachineToolIdentificationType (DI/Machinery properties)
        MachineryBuildingBlocks
          MachineryItemState       CurrentState: NotAvailable|OutOfService|Executing|NotExecuting
          MachineryOperationMode   CurrentState: None|Maintenance|Setup|Processing
        Monitoring                 MonitoringType
          MachineTool              MachineOperationMonitoringType: OperationMode, PowerOnDuration
          Stacklight               StacklightType (IA): Green/Yellow/Red lamps (SignalOn)
          Channel1                 ChannelMonitoringType: ChannelState, ChannelMode, FeedOverride
          Spindle                  SpindleMonitoringType: IsRotating, Override (+ sim extras)
        Production                 ProductionType
          ActiveProgram            ProductionActiveProgramType: Name, State/CurrentState
          ProductionPlan/Job       ProductionJobType: Identifier, PartsCompleted, PartsGood,
                                   State/CurrentState
        Notification               NotificationType (sim extras: AlarmCode, AlarmText)
          Messages                 event notifier: AlarmConditionType events of the model's alarm
        Process                    sim extras with stable `s=<asset>.<Name>` ids for plain points

Alarms: when the model's `alarm_code` turns non-zero, `Notification/Messages` emits an
AlarmConditionType event (ConditionName = the code, Message = the text, Severity 800 for
codes below 2000 else 500, ActiveState/Id true, Retain true, ConditionId
`s=<asset>.Alarm.<code>`); when it clears (or changes), the same condition is sent again
inactive with Retain false. The server binds ConditionRefresh, so a client that subscribes
later (or after a restart: the current alarm is raised again when the server starts) is
told of retained alarms; asyncua sends RefreshStart/RefreshEnd on the Server object.

Values are refreshed from `MachineModel.snapshot(now)` every `refresh_interval` and written
only when they change, so subscriptions see real data changes and nothing else.
Every server offers None, Basic256Sha256 and Aes256_Sha256_RsaPss (Sign, SignAndEncrypt)
with a self-signed certificate kept for the life of the handle (restarts keep it, so a
pinned certificate stays valid). Client certificates are accepted without a trust list,
unless `trusted_clients` (a set of DER certificates, changeable while running) is given: then
CreateSession of any other client certificate fails with BadCertificateUntrusted, as on a
server whose administrator has not trusted the gateway yet. `policies` (changeable, applied
at the next `start()`) plays a server that offers fewer endpoints for a while. `users=`
requires a user name and password; anonymous access is then off.

SINUMERIK face (`serve_opcua(..., sinumerik=[url])`, and `start_for_gateway` for machines
whose settings say `profile: sinumerik`): the endpoint then presents one machine the way the
SINUMERIK 840D sl / ONE OPC UA server does (adapters/opcua/README.md cites the manual):
namespace `SinumerikVarProvider`, an object `Sinumerik` below Objects, and the NC variables
the `sinumerik` profile reads, each with the variable path as its string NodeId
(`s=/Channel/State/progStatus`) and a browse path of the same segments:

    Objects/Sinumerik
      Channel/State         progStatus, actParts, reqParts, feedRateIpoOvr
      Channel/ProgramInfo   selectedWorkPProg (`/_N_MPF_DIR/_N_<program>_MPF`)
      Channel/Spindle       actSpeed, driveLoad, speedOvr
      Bag/State             opMode

progStatus from the model: active 3, interrupted / feed_hold / optional_stop 1 (feed_hold
with feedRateIpoOvr 0), program_stopped 2, wait 4, ready / program_completed / stopped 5;
opMode: manual / edit 0 (JOG), mdi 1 (MDA), automatic / semi_automatic 2 (AUTOMATIC).
reqParts is 0 (the model has no lot size). The model's alarm is an AlarmConditionType
event of the Server object, as SINUMERIK alarms are.

Run by hand: `python -m simulators.opcua_server --port 4841 --machines 2` (`--sinumerik`
for the SINUMERIK face, one machine).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlparse

from asyncua import ua
from asyncua.common.node import Node
from asyncua.common.utils import ServiceError
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.event_generator import EventGenerator
from asyncua.server.server import Server
from asyncua.server.user_managers import UserManager
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.status_codes import StatusCodes
from asyncua.ua.uaerrors import UaStatusCodeError
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from models.machine_state import Availability, ControllerMode, Execution
from simulators.lifecycle import SimulatorHandle
from simulators.machine import MachineModel, MachineSnapshot
from simulators.standalone import machine_models, serve_until_interrupted, standalone_parser

__all__ = [
    "DI_URI",
    "IA_URI",
    "MACHINERY_URI",
    "MACHINE_TOOL_URI",
    "SIM_URI",
    "SINUMERIK_URI",
    "OpcUaSimulator",
    "serve_opcua",
    "start_for_gateway",
]

log = logging.getLogger(__name__)

DI_URI = "http://opcfoundation.org/UA/DI/"
MACHINERY_URI = "http://opcfoundation.org/UA/Machinery/"
MACHINE_TOOL_URI = "http://opcfoundation.org/UA/MachineTool/"
IA_URI = "http://opcfoundation.org/UA/IA/"
SIM_URI = "urn:edge-gateway:simulator"
SINUMERIK_URI = "SinumerikVarProvider"

# (namespace uri, numeric id, browse name, supertype (uri, id) or None for BaseObjectType)
_TYPES: tuple[tuple[str, int, str, tuple[str, int] | None], ...] = (
    (MACHINERY_URI, 1012, "MachineIdentificationType", None),
    (MACHINERY_URI, 1002, "MachineryItemState_StateMachineType", ("", 2771)),
    (MACHINERY_URI, 1008, "MachineryOperationModeStateMachineType", ("", 2771)),
    (MACHINE_TOOL_URI, 11, "MachineToolIdentificationType", (MACHINERY_URI, 1012)),
    (MACHINE_TOOL_URI, 13, "MachineToolType", None),
    (MACHINE_TOOL_URI, 14, "MonitoringType", None),
    (MACHINE_TOOL_URI, 23, "ElementMonitoringType", None),
    (MACHINE_TOOL_URI, 16, "ChannelMonitoringType", (MACHINE_TOOL_URI, 23)),
    (MACHINE_TOOL_URI, 22, "SpindleMonitoringType", (MACHINE_TOOL_URI, 23)),
    (MACHINE_TOOL_URI, 26, "MachineOperationMonitoringType", (MACHINE_TOOL_URI, 23)),
    (MACHINE_TOOL_URI, 21, "ProductionType", None),
    (MACHINE_TOOL_URI, 32, "ProductionActiveProgramType", None),
    (MACHINE_TOOL_URI, 15, "ProductionProgramStateMachineType", ("", 2771)),
    (MACHINE_TOOL_URI, 30, "ProductionJobListType", None),
    (MACHINE_TOOL_URI, 29, "ProductionJobType", None),
    (MACHINE_TOOL_URI, 28, "ProductionJobStateMachineType", ("", 2771)),
    (MACHINE_TOOL_URI, 7, "NotificationType", None),
    (IA_URI, 1002, "BasicStacklightType", None),
    (IA_URI, 1010, "StacklightType", (IA_URI, 1002)),
)

# What the machine model's states look like in OPC 40501-1 terms (the adapter's inverse
# is documented in adapters/opcua/README.md).
_EXECUTING = frozenset({Execution.ACTIVE, Execution.FEED_HOLD, Execution.INTERRUPTED,
                        Execution.OPTIONAL_STOP})
_PROGRAM_STATE = {
    Execution.ACTIVE: "Running", Execution.FEED_HOLD: "Interrupted",
    Execution.INTERRUPTED: "Interrupted", Execution.OPTIONAL_STOP: "Interrupted",
    Execution.STOPPED: "Aborted", Execution.PROGRAM_STOPPED: "Aborted",
    Execution.PROGRAM_COMPLETED: "Ended", Execution.READY: "Initializing",
    Execution.WAIT: "Initializing",
}
_CHANNEL_STATE = {Execution.ACTIVE: 0, Execution.FEED_HOLD: 1, Execution.INTERRUPTED: 1,
                  Execution.OPTIONAL_STOP: 1}  # else Reset (2)
# ChannelMode: Automatic 0, MdaMdi 1, JogManual 2, Other 7
_CHANNEL_MODE = {ControllerMode.AUTOMATIC: 0, ControllerMode.SEMI_AUTOMATIC: 0,
                 ControllerMode.MDI: 1, ControllerMode.MANUAL: 2, ControllerMode.EDIT: 7}
# MachineOperationMode: Manual 0, Automatic 1, Setup 2, AutoWithManualIntervention 3
_OPERATION_MODE = {ControllerMode.AUTOMATIC: 1, ControllerMode.SEMI_AUTOMATIC: 3,
                   ControllerMode.MDI: 1, ControllerMode.MANUAL: 0, ControllerMode.EDIT: 2}
_OPERATION_MODE_SM = {ControllerMode.MANUAL: "Setup", ControllerMode.EDIT: "Setup"}
# SINUMERIK NC variables (see the module docstring)
_PROG_STATUS = {Execution.ACTIVE: 3, Execution.INTERRUPTED: 1, Execution.FEED_HOLD: 1,
                Execution.OPTIONAL_STOP: 1, Execution.PROGRAM_STOPPED: 2, Execution.WAIT: 4}
_OP_MODE = {ControllerMode.MANUAL: 0, ControllerMode.EDIT: 0, ControllerMode.MDI: 1,
            ControllerMode.AUTOMATIC: 2, ControllerMode.SEMI_AUTOMATIC: 2}
# NC variable path -> value key of `_values`
_SINUMERIK_VARIABLES = {
    "/Channel/State/progStatus": "ProgStatus",
    "/Channel/State/actParts": "PartCount",
    "/Channel/State/reqParts": "ReqParts",
    "/Channel/State/feedRateIpoOvr": "FeedOverride",
    "/Channel/ProgramInfo/selectedWorkPProg": "SelectedWorkPProg",
    "/Channel/Spindle/actSpeed": "SpindleSpeed",
    "/Channel/Spindle/driveLoad": "SpindleLoad",
    "/Channel/Spindle/speedOvr": "SpindleOverride",
    "/Bag/State/opMode": "OpMode",
}

_POLICIES = [
    ua.SecurityPolicyType.NoSecurity,
    ua.SecurityPolicyType.Basic256Sha256_Sign,
    ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
    ua.SecurityPolicyType.Aes256Sha256RsaPss_Sign,
    ua.SecurityPolicyType.Aes256Sha256RsaPss_SignAndEncrypt,
]


@functools.cache
def _server_certificate(host: str) -> tuple[bytes, bytes]:
    """A self-signed server certificate (DER, PEM key), made once per process and host.

    Cached because RSA key generation is the slow part of starting a simulator.
    """
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edge-gateway simulator")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now.replace(year=now.year - 1))
        .not_valid_after(now.replace(year=now.year + 10))
        .add_extension(x509.SubjectAlternativeName([
            x509.UniformResourceIdentifier("urn:edge-gateway:simulator:server"),
            x509.DNSName(host), x509.DNSName("localhost"),
            x509.DNSName(socket.gethostname())]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=True, key_encipherment=True,
            data_encipherment=True, key_agreement=False, key_cert_sign=False, crl_sign=False,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                              ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return (cert.public_bytes(serialization.Encoding.DER),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


@dataclass
class _Machine:
    """One machine's writable nodes and the last values written (write on change only)."""

    model: MachineModel
    nodes: dict[str, tuple[str, Node]] = field(default_factory=dict)
    """node id key -> (value key in `_values`, node)"""
    last: dict[str, Any] = field(default_factory=dict)
    messages: Node | None = None
    """Notification/Messages: where the alarm events come from."""
    source: ua.NodeId | None = None
    alarm_ns: int = 0
    alarm: tuple[int, EventGenerator] | None = None
    """The active alarm code and the generator holding its condition event."""


def _values(snap: MachineSnapshot) -> dict[str, Any]:
    """Node key -> value for one snapshot."""
    ex = snap.execution
    unavailable = snap.availability is Availability.UNAVAILABLE
    item_state = ("NotAvailable" if unavailable else "OutOfService" if snap.emergency_stop
                  else "Executing" if ex in _EXECUTING else "NotExecuting")
    good = snap.part_count - snap.bad_part_count
    return {
        "ItemState": ua.LocalizedText(item_state, "en"),
        "OperationModeSM": ua.LocalizedText(
            _OPERATION_MODE_SM.get(snap.controller_mode, "Processing"), "en"),
        "OperationMode": _OPERATION_MODE[snap.controller_mode],
        "ChannelState": _CHANNEL_STATE.get(ex, 2),
        "ChannelMode": _CHANNEL_MODE[snap.controller_mode],
        "FeedOverride": 0.0 if ex is Execution.FEED_HOLD else 100.0,
        "IsRotating": snap.spindle_speed > 0,
        "SpindleOverride": 100.0,
        "ProgramName": snap.program,
        "ProgramState": ua.LocalizedText(_PROGRAM_STATE[ex], "en"),
        "JobIdentifier": f"{snap.program}-lot",
        "PartsCompleted": snap.part_count,
        "PartsGood": max(0, good),
        "JobState": ua.LocalizedText("Running" if ex in _EXECUTING else "Initializing", "en"),
        "Green": ex is Execution.ACTIVE,
        "Yellow": ex in _EXECUTING and ex is not Execution.ACTIVE,
        "Red": snap.alarm_code != 0 or snap.emergency_stop,
        "AlarmCode": snap.alarm_code,
        "AlarmText": snap.alarm_text,
        # plain process values for `points:` that do not use the profile
        "Execution": ex.value,
        "ControllerMode": snap.controller_mode.value,
        "EmergencyStop": snap.emergency_stop,
        "SpindleSpeed": snap.spindle_speed,
        "SpindleLoad": snap.spindle_load,
        "FeedRate": snap.feed_rate,
        "SpindleTemperature": snap.spindle_temperature,
        "CoolantTemperature": snap.coolant_temperature,
        "PartCount": snap.part_count,
        "BadPartCount": snap.bad_part_count,
        "Program": snap.program,
        "LastCycleTime": snap.last_cycle_time,
        # the SINUMERIK face
        "ProgStatus": _PROG_STATUS.get(ex, 5),
        "OpMode": _OP_MODE[snap.controller_mode],
        "SelectedWorkPProg": sinumerik_program_path(snap.program),
        "ReqParts": 0,
    }



def sinumerik_program_path(program: str) -> str:
    """The NC path of a plant `programs:` key: `O1000.MPF` -> `/_N_MPF_DIR/_N_O1000_MPF`, so
    the adapter reads back the very key (a name without a type is a main program: `O1000`
    -> `_N_O1000_MPF`, read back as `O1000.MPF`)."""
    stem, dot, kind = program.rpartition(".")
    if dot and stem and kind.upper() in ("MPF", "SPF"):
        return f"/_N_{kind.upper()}_DIR/_N_{stem}_{kind.upper()}"
    return f"/_N_MPF_DIR/_N_{program}_MPF"

_VARIANTS: dict[type, ua.VariantType] = {
    bool: ua.VariantType.Boolean, int: ua.VariantType.Int32, float: ua.VariantType.Double,
    str: ua.VariantType.String, ua.LocalizedText: ua.VariantType.LocalizedText,
}
_UNSIGNED = {"PartsCompleted", "PartsGood", "PartCount", "BadPartCount"}


def _variant(key: str, value: Any) -> ua.Variant:
    vt = ua.VariantType.UInt32 if key in _UNSIGNED else _VARIANTS[type(value)]
    return ua.Variant(value, vt)


class _Builder:
    """Creates the companion-spec types once per server and one machine at a time."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.ns: dict[str, int] = {}

    async def namespaces(self, sinumerik: bool = False) -> None:
        for uri in (DI_URI, MACHINERY_URI, IA_URI, MACHINE_TOOL_URI, SIM_URI):
            self.ns[uri] = await self.server.register_namespace(uri)
        if sinumerik:
            self.ns[SINUMERIK_URI] = await self.server.register_namespace(SINUMERIK_URI)
        self.ns[""] = 0

    def nid(self, uri: str, ident: int | str) -> ua.NodeId:
        return ua.NodeId(ident, self.ns[uri])  # type: ignore[arg-type]  # plain int/str work

    def qn(self, uri: str, name: str) -> ua.QualifiedName:
        return ua.QualifiedName(name, self.ns[uri])

    async def types(self) -> Node:
        base = self.server.nodes.base_object_type
        for uri, ident, name, parent in _TYPES:
            sup = base if parent is None else self.server.get_node(self.nid(*parent))
            await sup.add_object_type(self.nid(uri, ident), self.qn(uri, name))
        return await self.server.nodes.objects.add_folder(
            self.nid(MACHINERY_URI, 1001), self.qn(MACHINERY_URI, "Machines"))

    async def machine(self, machines: Node, m: _Machine) -> None:
        a = m.model.asset
        sim = SIM_URI

        async def obj(parent: Node, key: str, uri: str, name: str,
                      typ: tuple[str, int] | None = None) -> Node:
            tid = self.nid(*typ) if typ else self.nid("", ObjectIds.BaseObjectType)
            return await parent.add_object(self.nid(sim, f"{a}.{key}"), self.qn(uri, name), tid)

        async def var(parent: Node, key: str, uri: str, name: str, value: Any, *,
                      id_key: str | None = None) -> Node:
            id_key = id_key or key
            qn = self.qn(uri, name)
            try:  # a state machine type instantiates its mandatory CurrentState itself
                node = await parent.get_child(qn)
                await node.write_value(_variant(key, value))
            except UaStatusCodeError:
                node = await parent.add_variable(self.nid(sim, f"{a}.{id_key}"), qn,
                                                 _variant(key, value))
            m.nodes[id_key] = (key, node)
            return node

        snap = _values(m.model.snapshot(datetime.now(UTC)))
        root = await obj(machines, "Machine", sim, a, (MACHINE_TOOL_URI, 13))
        ident = await obj(root, "Identification", DI_URI, "Identification",
                          (MACHINE_TOOL_URI, 11))
        plate = {
            (DI_URI, "Manufacturer"): ua.LocalizedText("Edge Gateway Simulated Machines", "en"),
            (DI_URI, "Model"): ua.LocalizedText("SIM-CNC 500", "en"),
            (DI_URI, "SerialNumber"): f"SIM-{a}",
            (DI_URI, "ProductCode"): "SIM-CNC-500",
            (DI_URI, "SoftwareRevision"): "1.0.0",
            (DI_URI, "HardwareRevision"): "A",
            (DI_URI, "ProductInstanceUri"): f"urn:edge-gateway:simulator:{a}",
            (MACHINERY_URI, "YearOfConstruction"): ua.Variant(2024, ua.VariantType.UInt16),
            (MACHINERY_URI, "MonthOfConstruction"): ua.Variant(6, ua.VariantType.Byte),
            (MACHINERY_URI, "Location"): "hall-1",
        }
        for (uri, name), value in plate.items():
            val = value if isinstance(value, ua.Variant) else _variant(name, value)
            await ident.add_property(self.nid(sim, f"{a}.Identification.{name}"),
                                     self.qn(uri, name), val)
        bb = await obj(root, "BuildingBlocks", MACHINERY_URI, "MachineryBuildingBlocks")
        state = await obj(bb, "MachineryItemState", MACHINERY_URI, "MachineryItemState",
                          (MACHINERY_URI, 1002))
        await var(state, "ItemState", "", "CurrentState", snap["ItemState"])
        mode = await obj(bb, "MachineryOperationMode", MACHINERY_URI, "MachineryOperationMode",
                         (MACHINERY_URI, 1008))
        await var(mode, "OperationModeSM", "", "CurrentState", snap["OperationModeSM"])

        mon = await obj(root, "Monitoring", MACHINE_TOOL_URI, "Monitoring", (MACHINE_TOOL_URI, 14))
        mt = await obj(mon, "MachineTool", MACHINE_TOOL_URI, "MachineTool",
                       (MACHINE_TOOL_URI, 26))
        await var(mt, "OperationMode", MACHINE_TOOL_URI, "OperationMode", snap["OperationMode"])
        light = await obj(mon, "Stacklight", MACHINE_TOOL_URI, "Stacklight", (IA_URI, 1010))
        for colour in ("Green", "Yellow", "Red"):
            lamp = await obj(light, f"Stacklight.{colour}", sim, f"Lamp{colour}")
            await var(lamp, colour, IA_URI, "SignalOn", snap[colour])
        ch = await obj(mon, "Channel1", sim, "Channel1", (MACHINE_TOOL_URI, 16))
        for key in ("ChannelState", "ChannelMode", "FeedOverride"):
            await var(ch, key, MACHINE_TOOL_URI, key, snap[key])
        sp = await obj(mon, "Spindle", sim, "Spindle", (MACHINE_TOOL_URI, 22))
        await var(sp, "IsRotating", MACHINE_TOOL_URI, "IsRotating", snap["IsRotating"])
        await var(sp, "SpindleOverride", MACHINE_TOOL_URI, "Override", snap["SpindleOverride"])
        await var(sp, "SpindleSpeed", sim, "ActualSpeed", snap["SpindleSpeed"],
                  id_key="Spindle.ActualSpeed")
        await var(sp, "SpindleLoad", sim, "Load", snap["SpindleLoad"],
                  id_key="Spindle.Load")

        prod = await obj(root, "Production", MACHINE_TOOL_URI, "Production",
                         (MACHINE_TOOL_URI, 21))
        ap = await obj(prod, "ActiveProgram", MACHINE_TOOL_URI, "ActiveProgram",
                       (MACHINE_TOOL_URI, 32))
        await var(ap, "ProgramName", MACHINE_TOOL_URI, "Name", snap["ProgramName"])
        aps = await obj(ap, "ActiveProgram.State", MACHINE_TOOL_URI, "State",
                        (MACHINE_TOOL_URI, 15))
        await var(aps, "ProgramState", "", "CurrentState", snap["ProgramState"])
        plan = await obj(prod, "ProductionPlan", MACHINE_TOOL_URI, "ProductionPlan",
                         (MACHINE_TOOL_URI, 30))
        job = await obj(plan, "Job", sim, "Job", (MACHINE_TOOL_URI, 29))
        await var(job, "JobIdentifier", MACHINE_TOOL_URI, "Identifier", snap["JobIdentifier"])
        await var(job, "PartsCompleted", MACHINE_TOOL_URI, "PartsCompleted",
                  snap["PartsCompleted"])
        await var(job, "PartsGood", MACHINE_TOOL_URI, "PartsGood", snap["PartsGood"])
        js = await obj(job, "Job.State", MACHINE_TOOL_URI, "State", (MACHINE_TOOL_URI, 28))
        await var(js, "JobState", "", "CurrentState", snap["JobState"])

        note = await obj(root, "Notification", MACHINE_TOOL_URI, "Notification",
                         (MACHINE_TOOL_URI, 7))
        await var(note, "AlarmCode", sim, "AlarmCode", snap["AlarmCode"])
        await var(note, "AlarmText", sim, "AlarmText", snap["AlarmText"])
        m.messages = await obj(note, "Messages", MACHINE_TOOL_URI, "Messages")
        await m.messages.set_event_notifier([ua.EventNotifier.SubscribeToEvents])
        m.source = root.nodeid
        m.alarm_ns = self.ns[sim]
        m.alarm = None

        proc = await obj(root, "Process", sim, "Process")
        for key in ("Execution", "ControllerMode", "EmergencyStop", "SpindleSpeed",
                    "SpindleLoad", "FeedRate", "SpindleTemperature", "CoolantTemperature",
                    "PartCount", "BadPartCount", "Program", "LastCycleTime"):
            await var(proc, key, sim, key, snap[key])
        # `s=<asset>.<Key>` for the Process variables (documented in adapters/opcua/README.md)
        m.last = {id_key: snap[key] for id_key, (key, _node) in m.nodes.items()}


    async def sinumerik(self, m: _Machine) -> None:
        """The SINUMERIK face: NC variables by path below Objects/Sinumerik (one machine)."""
        snap = _values(m.model.snapshot(datetime.now(UTC)))
        uri = SINUMERIK_URI
        root = await self.server.nodes.objects.add_object(self.nid(uri, "/Sinumerik"),
                                                          self.qn(uri, "Sinumerik"))
        folders: dict[str, Node] = {"": root}
        for path, key in _SINUMERIK_VARIABLES.items():
            *parents, name = path.strip("/").split("/")
            parent = root
            for depth in range(1, len(parents) + 1):
                sub = "/".join(parents[:depth])
                if sub not in folders:
                    folders[sub] = await parent.add_object(self.nid(uri, f"/{sub}"),
                                                           self.qn(uri, parents[depth - 1]))
                parent = folders[sub]
            node = await parent.add_variable(self.nid(uri, path), self.qn(uri, name),
                                             _variant(key, snap[key]))
            m.nodes[path] = (key, node)
        m.messages = self.server.nodes.server  # SINUMERIK alarms: events of the Server object
        m.source = root.nodeid
        m.alarm_ns = self.ns[SIM_URI]
        m.alarm = None
        m.last = {id_key: snap[key] for id_key, (key, _node) in m.nodes.items()}


def _ns0(ident: int) -> ua.NodeId:
    """A namespace-0 NodeId (asyncua types Identifier with its own Int32 class)."""
    return ua.NodeId(ident, 0)  # type: ignore[arg-type]


class _PasswordUsers(UserManager):
    """asyncua user manager: these users and passwords only, no anonymous access."""

    def __init__(self, users: Mapping[str, str]) -> None:
        self.users = dict(users)

    def get_user(self, iserver: Any, username: str | None = None, password: str | None = None,
                 certificate: Any = None) -> User | None:
        if username is not None and self.users.get(username) == password:
            return User(role=UserRole.User, name=username)
        return None


@dataclass
class _Endpoint:
    url: str
    machines: list[_Machine]
    sinumerik: bool = False
    server: Server | None = None
    task: asyncio.Task[None] | None = None


def _utc_now() -> datetime:
    return datetime.now(UTC)


class OpcUaSimulator(SimulatorHandle):
    """Running OPC UA servers, one per endpoint. `stop()`/`start()` play a server restart."""

    def __init__(self, endpoints: list[_Endpoint], cert: bytes, key: bytes,
                 refresh_interval: float, clock: Callable[[], datetime], *,
                 users: Mapping[str, str] | None = None, item_limit: int = 0) -> None:
        self._endpoints = endpoints
        self._item_limit = item_limit
        self.policies: list[ua.SecurityPolicyType] = list(_POLICIES)
        self.trusted_clients: set[bytes] | None = None
        self._users = dict(users) if users else None
        self.certificate = cert
        self._key = key
        self._refresh = refresh_interval
        self._clock = clock

    @property
    def endpoints(self) -> list[str]:
        return [e.url for e in self._endpoints]

    @property
    def servers(self) -> list[Server]:
        """The running asyncua servers: tests inject server-side faults through them."""
        return [e.server for e in self._endpoints if e.server is not None]

    async def start(self) -> None:
        """Start every server that is not running (same port, same certificate)."""
        try:
            for ep in self._endpoints:
                if ep.server is None:
                    await self._start_one(ep)
        except BaseException:
            await self.aclose()
            raise

    async def _validate_client(self, cert: x509.Certificate, _app: Any) -> None:
        trusted = self.trusted_clients
        if trusted is not None and cert.public_bytes(serialization.Encoding.DER) not in trusted:
            raise ServiceError(StatusCodes.BadCertificateUntrusted)

    async def _start_one(self, ep: _Endpoint) -> None:
        server = Server(user_manager=_PasswordUsers(self._users) if self._users else None)
        server.iserver.bind_condition_methods = True  # ConditionRefresh, Refresh events
        await server.init()
        server.set_endpoint(ep.url)
        server.set_server_name("edge-gateway OPC UA simulator")
        await server.set_application_uri("urn:edge-gateway:simulator:server")
        server.set_security_policy(self.policies)
        server.set_certificate_validator(self._validate_client)
        await server.load_certificate(self.certificate, format="der")
        await server.load_private_key(self._key, format="pem")
        if self._item_limit:  # advertised only: asyncua does not enforce it
            await server.write_attribute_value(
                _ns0(24104), ua.DataValue(ua.Variant(self._item_limit, ua.VariantType.UInt32)))
        b = _Builder(server)
        await b.namespaces(ep.sinumerik)
        machines = await b.types()
        for m in ep.machines:
            m.nodes.clear()
            await (b.sinumerik(m) if ep.sinumerik else b.machine(machines, m))
        try:
            await server.start()
        except OSError as exc:
            raise OSError(f"cannot listen for OPC UA on {ep.url}: {exc}") from exc
        except Exception as exc:  # asyncua wraps bind errors in its own types
            raise OSError(f"cannot listen for OPC UA on {ep.url}: {exc}") from exc
        ep.server = server
        ep.task = asyncio.create_task(self._update_loop(ep), name=f"opcua-sim {ep.url}")
        for m in ep.machines:
            log.info("simulated machine %s on %s", m.model.asset, ep.url)

    async def _update_loop(self, ep: _Endpoint) -> None:
        server = ep.server
        assert server is not None
        while True:
            now = self._clock()
            for m in ep.machines:
                snap = m.model.snapshot(now)
                await self._alarm(server, m, snap.alarm_code, snap.alarm_text)
                values = _values(snap)
                for id_key, (key, node) in m.nodes.items():
                    value = values[key]
                    if m.last.get(id_key) != value:
                        m.last[id_key] = value
                        stamp: Any = now  # asyncua types it as its DateTime subclass
                        await server.write_attribute_value(
                            node.nodeid, ua.DataValue(_variant(key, value),
                                                      SourceTimestamp=stamp,
                                                      ServerTimestamp=stamp))
            await asyncio.sleep(self._refresh)

    @staticmethod
    async def _alarm(server: Server, m: _Machine, code: int, text: str) -> None:
        """Raise or clear the model's alarm as an AlarmConditionType event.

        One generator (one event object) per raised condition: asyncua keeps a reference
        to the retained event for ConditionRefresh, so reusing one object for the next
        alarm would rewrite the retained one too.
        """
        current = m.alarm[0] if m.alarm else 0
        if code == current or m.messages is None:
            return
        if m.alarm is not None:
            _code, old = m.alarm
            m.alarm = None
            old.event.Retain = False
            setattr(old.event, "ActiveState/Id", False)
            old.event.ActiveState = ua.LocalizedText("Inactive", "en")
            await old.trigger()
        if code:
            gen = EventGenerator(server.iserver.isession)
            await gen.init(_ns0(ObjectIds.AlarmConditionType), m.messages,
                           add_generates_event=False)
            ev = gen.event
            ev.NodeId = ua.NodeId(f"{m.model.asset}.Alarm.{code}", m.alarm_ns)  # type: ignore[arg-type]
            ev.SourceNode = m.source
            ev.SourceName = m.model.asset
            ev.ConditionName = str(code)
            ev.Message = ua.LocalizedText(text, "en")
            ev.Severity = 800 if code < 2000 else 500
            ev.Retain = True
            setattr(ev, "ActiveState/Id", True)
            ev.ActiveState = ua.LocalizedText("Active", "en")
            setattr(ev, "EnabledState/Id", True)
            ev.EnabledState = ua.LocalizedText("Enabled", "en")
            m.alarm = (code, gen)
            await gen.trigger()

    async def stop(self) -> None:
        """Stop every server: sockets close, sessions and subscriptions are gone."""
        await asyncio.gather(*(self._stop_endpoint(ep) for ep in self._endpoints))

    @staticmethod
    async def _stop_endpoint(ep: _Endpoint) -> None:
        task, ep.task = ep.task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        server, ep.server = ep.server, None
        if server is None:
            return
        # asyncua's stop() waits for its ServerStatus clock's next 1 s tick: up to a second
        # per endpoint; the clock is done once the server stops, so end it now
        clock, server.iserver.time_task = server.iserver.time_task, None
        if clock is not None:
            clock.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await clock
        with contextlib.suppress(Exception):
            await server.stop()

    async def aclose(self) -> None:
        await self.stop()


async def serve_opcua(
    machines: Iterable[tuple[MachineModel, str]], *, refresh_interval: float = 0.1,
    clock: Callable[[], datetime] = _utc_now, users: Mapping[str, str] | None = None,
    max_monitored_items_per_subscription: int = 0, sinumerik: Iterable[str] = (),
) -> OpcUaSimulator:
    """Serve (model, endpoint URL) pairs; machines sharing an endpoint share one server.

    Endpoints listed in `sinumerik` present their (single) machine as a SINUMERIK.

    `users` (name -> password) turns anonymous access off and requires one of them.
    `max_monitored_items_per_subscription` is advertised in ServerCapabilities (not
    enforced), to test clients that read it.
    """
    groups: dict[str, list[_Machine]] = {}
    for model, url in machines:
        parsed = urlparse(url)
        if parsed.scheme != "opc.tcp" or not parsed.port:
            raise ValueError(f"{model.asset}: endpoint {url!r} needs opc.tcp://host:port/")
        group = groups.setdefault(url, [])
        if any(m.model.asset == model.asset for m in group):
            raise ValueError(f"machine {model.asset!r} twice on {url}")
        group.append(_Machine(model))
    faces = set(sinumerik)
    for url in faces & set(groups):
        if len(groups[url]) > 1:
            raise ValueError(f"{url}: a SINUMERIK endpoint serves one machine (one NC)")
    hosts = {urlparse(u).hostname or "127.0.0.1" for u in groups}
    cert, key = _server_certificate(next(iter(hosts), "127.0.0.1"))
    sim = OpcUaSimulator([_Endpoint(u, ms, u in faces) for u, ms in groups.items()], cert, key,
                         refresh_interval, clock, users=users,
                         item_limit=max_monitored_items_per_subscription)
    await sim.start()
    return sim


async def start_for_gateway(machines: list[tuple[str, Any, MachineModel]]) -> OpcUaSimulator:
    """STARTERS["opcua"]: serve each machine where its adapter settings will connect, as a
    SINUMERIK when its settings say `profile: sinumerik`."""
    return await serve_opcua(
        [(model, settings.connection.endpoint) for _asset, settings, model in machines],
        sinumerik=[settings.connection.endpoint for _asset, settings, _model in machines
                   if settings.connection.profile == "sinumerik"])


def main(argv: list[str] | None = None) -> None:
    """`python -m simulators.opcua_server`: browse the simulator with UaExpert or similar."""
    parser = standalone_parser(
        prog="python -m simulators.opcua_server",
        description="Simulated CNC machines over OPC UA (Machinery / Machine Tools layout)",
        port=4841, asset="sim", fleet="N machines below Machines on the one endpoint")
    parser.add_argument("--sinumerik", action="store_true",
                        help="present the machine as a SINUMERIK OPC UA server (one machine)")
    args = parser.parse_args(argv)
    url = f"opc.tcp://{args.host}:{args.port}/"
    serve_until_interrupted(lambda: serve_opcua([(m, url) for m in machine_models(args)],
                                                sinumerik=[url] if args.sinumerik else []))


if __name__ == "__main__":
    main()
