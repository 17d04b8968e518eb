r"""SHDR, the line protocol between an MTConnect adapter (port 7878) and an agent.

A line is `timestamp|key|value|key|value...`; a CONDITION takes five fields
(`key|level|native_code|native_severity|qualifier|message`), a MESSAGE two
(`key|native_code|text`, the code may be empty: `ts|msg||Change inserts`); `@ASSET@|id|type|body`,
`@UPDATE_ASSET@`, `@REMOVE_ASSET@|id` and `@REMOVE_ALL_ASSETS@|type` carry assets, whose
body may span lines between two identical `--multiline--TAG` markers; lines starting with
`*` are commands (`* PONG 10000` answers our `* PING`, `* shdrVersion: 2`...). Fields are
split as cppagent splits them (`shdr_tokenizer`): trimmed, and a `"`-quoted field may hold
`\|` and `\"` (`ts|msg|E1|"Tool \| spindle"`); an asset body between `--multiline--`
markers is taken as sent, never split.

Why the condition heuristic: SHDR does not say which keys are conditions; the agent knows
from its device model. When no model is configured, a key is taken for a condition when
its value is a condition level and exactly five fields follow it, which is how every
condition line of the OKUMA recording looks (`system|NORMAL||||`). A MESSAGE has no such
tell (`msg|E1|text` reads as `msg=E1` and a stray key `text`), so only `is_message` (the
device model or a point with `type: MESSAGE`) makes a key one. Like cppagent's token mapper
(shdrVersion 2), the pairs after a message's two fields are read on: `ts|msg||hi|exec|ACTIVE`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .shdr_tokenizer import tokenize

__all__ = [
    "AssetEvent",
    "Command",
    "ConditionEvent",
    "DataEvent",
    "Event",
    "ShdrParser",
]

CONDITION_LEVELS = frozenset({"NORMAL", "WARNING", "FAULT", "UNAVAILABLE"})
MAX_ASSET_LINES = 100_000


@dataclass(frozen=True, slots=True)
class DataEvent:
    ts: str
    key: str
    value: str
    native_code: str = ""  # MESSAGE items only: `key|native_code|text`, value is the text


@dataclass(frozen=True, slots=True)
class ConditionEvent:
    ts: str
    key: str
    level: str
    native_code: str
    severity: str
    qualifier: str
    message: str


@dataclass(frozen=True, slots=True)
class AssetEvent:
    ts: str
    command: str  # ASSET, UPDATE_ASSET, REMOVE_ASSET, REMOVE_ALL_ASSETS
    asset_id: str
    asset_type: str
    body: str


@dataclass(frozen=True, slots=True)
class Command:
    text: str  # without the leading '*', stripped


Event = DataEvent | ConditionEvent | AssetEvent | Command


def _raw_rest(line: str, skip: int) -> str:
    """The line after its first `skip` fields, as sent: a one-line asset body that holds an
    unquoted `|` stays whole (cppagent keeps only up to that `|` and loses the rest)."""
    parts = line.split("|", skip)
    return parts[skip] if len(parts) > skip else ""


class ShdrParser:
    """Stateful line parser (multiline asset bodies span lines).

    `is_condition(key)` returns True/False when the device model knows the key, None when
    it does not (then the heuristic above decides); `is_message(key)` is True for a MESSAGE.
    """

    def __init__(self, is_condition: Callable[[str], bool | None] | None = None,
                 is_message: Callable[[str], bool] | None = None) -> None:
        self.is_condition = is_condition or (lambda _key: None)
        self.is_message = is_message or (lambda _key: False)
        self._multiline: tuple[str, AssetEvent, list[str]] | None = None
        self.lines = 0
        self.malformed = 0

    @property
    def in_asset_body(self) -> bool:
        """True between the two markers of a multiline asset (its lines are XML, not SHDR)."""
        return self._multiline is not None

    def feed(self, line: str) -> list[Event]:
        self.lines += 1
        line = line.rstrip("\r\n")
        if self._multiline is not None:
            marker, pending, body = self._multiline
            if line.strip() == marker:
                self._multiline = None
                e = pending
                return [AssetEvent(e.ts, e.command, e.asset_id, e.asset_type, "\n".join(body))]
            if len(body) >= MAX_ASSET_LINES:
                self._multiline = None
                self.malformed += 1
                return []
            body.append(line)
            return []
        if not line.strip():
            return []
        if line.startswith("*"):
            return [Command(line[1:].strip())]
        fields = tokenize(line)
        ts = fields[0]
        out: list[Event] = []
        i = 1
        n = len(fields)
        while i < n:
            key = fields[i]
            if key.startswith("@") and key.endswith("@") and len(key) > 2:
                command = key.strip("@")
                rest = fields[i + 1:]
                if command == "REMOVE_ALL_ASSETS":
                    out.append(AssetEvent(ts, command, "", rest[0] if rest else "", ""))
                elif command == "REMOVE_ASSET":
                    out.append(AssetEvent(ts, command, rest[0] if rest else "", "", ""))
                else:
                    asset_id = rest[0] if rest else ""
                    asset_type = rest[1] if len(rest) > 1 else ""
                    text = rest[2] if len(rest) == 3 else _raw_rest(line, i + 3)
                    event = AssetEvent(ts, command, asset_id, asset_type, text)
                    if text.startswith("--multiline--"):
                        self._multiline = (text.strip(), event, [])
                    else:
                        out.append(event)
                return out
            if not key:
                i += 1
                continue
            value = fields[i + 1] if i + 1 < n else ""
            remaining = n - i - 1
            if self.is_message(key):
                if remaining < 2:  # `ts|msg|text`: no native code field, or no text
                    self.malformed += 1
                    return out
                out.append(DataEvent(ts, key, fields[i + 2], native_code=value))
                i += 3
                continue
            known = self.is_condition(key)
            if known or (known is None and remaining == 5
                         and value.upper() in CONDITION_LEVELS):
                f = [*fields[i + 1:i + 6], "", "", "", "", ""][:5]
                out.append(ConditionEvent(ts, key, f[0].upper() or "UNAVAILABLE", f[1], f[2],
                                          f[3], f[4]))
                i += 6
                continue
            if i + 1 >= n:
                self.malformed += 1
            out.append(DataEvent(ts, key, value))
            i += 2
        return out
