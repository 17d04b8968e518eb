"""Alarms from OPC UA events (Alarms & Conditions, Part 9) as the normalized `alarm` signal.

Why events and not a variable: OPC 40501-1 gives a machine tool no "current alarm"
variable. Alarms are conditions (AlarmConditionType and its subtypes) reported as events
through the machine's `Notification/Messages` object or, on servers without it, through the
Server object. A condition event carries a snapshot of that condition: it is active while
`ActiveState/Id` is true and the server keeps sending it (`Retain`) until it no longer
matters. So the gateway keeps a *set* of active conditions, keyed by ConditionId, and
derives one value from it; several alarms at once, and the clearing of each, are tracked.

Why ConditionRefresh: events are not state. A client that subscribes after an alarm was
raised (first connect, or a reconnect after a server restart) would never hear of it. After
subscribing, the adapter calls ConditionRefresh; the server answers with RefreshStartEvent,
every retained condition, RefreshEndEvent. Until RefreshEnd (or a timeout, for servers that
bracket the refresh on another notifier or not at all), the adapter does not publish
`alarm`, so a reconnect does not flicker "no alarm" before the refreshed one arrives.
Conditions that were active before a refresh and not repeated during it are dropped at
RefreshEnd (Part 9, 5.5.7).

Derived signals:

- `alarm`: the code (ConditionName, else the message text) of the most severe active
  condition, the latest on a tie; `""` when none is active.
- `alarm_text`: that condition's Message.
- `alarm_count`: how many conditions are active.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from asyncua import ua
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.object_ids import ObjectIds

from models.machine_state import SIG_ALARM
from models.sample import Value

from .profile_signals import SIG_ALARM_COUNT, SIG_ALARM_TEXT


def _ns0(ident: int) -> ua.NodeId:
    """asyncua types NodeId's identifier with its own Int32 class; a plain int is what works."""
    return ua.NodeId(ident, 0)  # type: ignore[arg-type]



REFRESH_START = _ns0(ObjectIds.RefreshStartEventType)
REFRESH_END = _ns0(ObjectIds.RefreshEndEventType)
CONDITION_TYPE = _ns0(ObjectIds.ConditionType)
CONDITION_REFRESH = _ns0(ObjectIds.ConditionType_ConditionRefresh)

# Event fields selected, by browse path below BaseEventType / ConditionType. Selected
# explicitly (not "every property of AlarmConditionType") to keep each event small.
_FIELDS: tuple[tuple[str, ...], ...] = (
    ("EventId",),
    ("EventType",),
    ("SourceNode",),
    ("SourceName",),
    ("Time",),
    ("Message",),
    ("Severity",),
    ("ConditionName",),
    ("Retain",),
    ("ActiveState", "Id"),
)
CONDITION_ID = "NodeId"  # the name asyncua gives the ConditionId operand (no browse path)


def event_filter() -> ua.EventFilter:
    """The select clauses above plus ConditionId, and no where clause.

    No where clause on purpose: `OfType AlarmConditionType` is evaluated as an exact type
    match by some servers (asyncua's among them), which would hide every subtype
    (OffNormalAlarmType, vendor alarms). Events are classified on arrival instead.
    """
    flt = ua.EventFilter()
    for path in _FIELDS:
        op = ua.SimpleAttributeOperand()
        op.TypeDefinitionId = _ns0(ObjectIds.BaseEventType)
        op.BrowsePath = [ua.QualifiedName(name, 0) for name in path]
        op.AttributeId = AttributeIds.Value
        flt.SelectClauses.append(op)
    cid = ua.SimpleAttributeOperand()
    cid.TypeDefinitionId = CONDITION_TYPE
    cid.BrowsePath = []
    cid.AttributeId = AttributeIds.NodeId
    flt.SelectClauses.append(cid)
    return flt


def refresh_filter() -> ua.EventFilter:
    """`event_filter()` restricted to RefreshStart/RefreshEnd, for the Server object.

    The Server object sees every event of the server, other machines' alarms included; from
    there only the refresh bracket is wanted. Exact `OfType` is right here: neither type
    has subtypes.
    """
    flt = event_filter()
    ors = ua.ContentFilterElement(
        FilterOperator=ua.FilterOperator.Or,
        FilterOperands=[ua.ElementOperand(1), ua.ElementOperand(2)],
    )
    flt.WhereClause.Elements = [ors] + [
        ua.ContentFilterElement(
            FilterOperator=ua.FilterOperator.OfType,
            FilterOperands=[ua.LiteralOperand(ua.Variant(t))],
        )
        for t in (REFRESH_START, REFRESH_END)
    ]
    return flt


def fields_of(event: Any) -> dict[str, Any]:
    """An asyncua Event as {"EventType": ..., "ActiveState/Id": ..., "NodeId": ...}."""
    names = ["/".join(p) for p in _FIELDS] + [CONDITION_ID]
    return {name: getattr(event, name, None) for name in names}


def _text(value: Any) -> str:
    if isinstance(value, ua.LocalizedText):
        return value.Text or ""
    return "" if value is None else str(value)


@dataclass(frozen=True)
class ActiveAlarm:
    code: str
    text: str
    severity: int
    time: datetime | None


@dataclass
class AlarmSet:
    """Active conditions of one session, and the refresh bracket around them."""

    active: dict[str, ActiveAlarm] = field(default_factory=dict)
    refreshing: bool = False
    _stale: set[str] = field(default_factory=set)

    def apply(self, fields: Mapping[str, Any]) -> bool:
        """Take one event; True when it may have changed the derived signals."""
        etype = fields.get("EventType")
        if etype == REFRESH_START:
            self.refreshing = True
            self._stale = set(self.active)
            return False
        if etype == REFRESH_END:
            self.refreshing = False
            for key in self._stale:
                self.active.pop(key, None)
            self._stale = set()
            return True
        active_id = fields.get("ActiveState/Id")
        name = fields.get("ConditionName")
        if active_id is None and name is None:
            return False  # a plain message (BaseEventType), not a condition
        cid = fields.get(CONDITION_ID)
        source = fields.get("SourceNode")
        key = (
            cid.to_string()
            if isinstance(cid, ua.NodeId) and not cid.is_null()
            else f"{source.to_string() if isinstance(source, ua.NodeId) else source}|{name}"
        )
        self._stale.discard(key)
        is_active = bool(active_id) if active_id is not None else bool(fields.get("Retain"))
        if not is_active:
            return self.active.pop(key, None) is not None
        code = _text(name) or _text(fields.get("Message")) or key
        severity = fields.get("Severity")
        when = fields.get("Time")
        self.active[key] = ActiveAlarm(
            code,
            _text(fields.get("Message")),
            severity if isinstance(severity, int) else 0,
            when if isinstance(when, datetime) else None,
        )
        return True

    def clear(self) -> None:
        self.active.clear()
        self._stale = set()
        self.refreshing = False

    def signals(self) -> dict[str, tuple[Value, str | None]]:
        """`alarm`, `alarm_text`, `alarm_count` (see the module docstring)."""
        if not self.active:
            return {SIG_ALARM: ("", None), SIG_ALARM_TEXT: ("", None), SIG_ALARM_COUNT: (0, None)}
        top = max(
            self.active.values(), key=lambda a: (a.severity, a.time.timestamp() if a.time else 0.0)
        )
        return {
            SIG_ALARM: (top.code, None),
            SIG_ALARM_TEXT: (top.text, None),
            SIG_ALARM_COUNT: (len(self.active), None),
        }
