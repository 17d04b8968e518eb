"""RFC 8785 (JCS) canonical JSON, fast for the gateway's own body shapes.

Why: canonicalizing envelope bodies with the pure-Python `rfc8785` package was ~20 % of the
gateway's CPU (bench/report.md). Bodies (models/envelope.py) are dicts with str keys and
str/int/float/bool/None/list/dict values; for exactly those shapes orjson (C, maintained)
writes the same bytes as JCS once three differences are taken care of here:

* **Numbers**: JCS writes floats as ECMAScript's Number.prototype.toString (shortest
  round-trip digits; fixed notation from 1e-7 to below 1e21, else `d.ddde+N`; `-0` is `0`;
  integral floats have no `.0`). orjson writes the same shortest digits, and the same
  layout for non-integral floats from 1e-4 to 2**53 (most readings); every other float is
  handed to it pre-formatted (`orjson.Fragment`) by `es6_number`. Only the containers on the
  way to such a float are copied. Integers beyond +-(2**53 - 1) are refused by orjson's
  OPT_STRICT_INTEGER, as JCS does.
* **Key order**: JCS sorts keys by UTF-16 code units, orjson (OPT_SORT_KEYS) by code points.
  They differ only when a key holds a character at or above U+E000 next to an astral one;
  such a document is re-walked with the keys sorted here by their UTF-16 encoding.
* **Strings**: orjson's escaping (`\\b \\t \\n \\f \\r`, other controls as lowercase
  `\\u00xx`, `"` and `\\`, everything else as raw UTF-8) is JCS's; lone surrogates make
  orjson refuse, and so does JCS.

Anything else (tuples, subclasses such as IntEnum/StrEnum, non-str keys, NaN, a value orjson
refuses) goes to `rfc8785.dumps`, which either serializes it or raises its own error, so the
result is always exactly what `rfc8785` gives. tests/edge/signing/test_jcs_fast.py proves the
equality with hypothesis over the body schema and the float edges; the JCS vectors run too.
The platform-side verifier keeps using `rfc8785` alone (it must not need orjson), and without
orjson installed (the platform kit on its own) this module is `rfc8785.dumps`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import rfc8785

try:
    import orjson
except ImportError:  # the platform kit installed alone (cryptography, rfc8785): same bytes
    orjson = None  # type: ignore[assignment]

__all__ = ["canonical_json", "es6_number"]

_STRICT = orjson.OPT_STRICT_INTEGER if orjson else 0
_SORTED = orjson.OPT_STRICT_INTEGER | orjson.OPT_SORT_KEYS if orjson else 0
_PLAIN = frozenset({str, int, bool, type(None)})  # orjson writes these as JCS does
_TWO_53 = float(2**53)


class _Outside(Exception):
    """The value is not one of the shapes this module has proven equal to `rfc8785`."""


class _NeedsUtf16Order(Exception):
    """A dict's keys sort differently by UTF-16 code units than by code points."""


def canonical_json(value: Any) -> bytes:
    """RFC 8785 bytes of `value`, identical to `rfc8785.dumps(value)` (which it falls back to
    for anything outside the proven shapes, so errors are `rfc8785`'s own too)."""
    if orjson is None:
        return rfc8785.dumps(value)
    try:
        try:
            return orjson.dumps(_prepare(value, None), option=_SORTED)
        except _NeedsUtf16Order:
            return orjson.dumps(_prepare(value, _utf16), option=_STRICT)
    except (_Outside, orjson.JSONEncodeError, TypeError, ValueError):
        return rfc8785.dumps(value)


def _utf16(item: tuple[str, Any]) -> bytes:
    return item[0].encode("utf-16-be", "surrogatepass")


def _prepare(value: Any, order: Callable[[tuple[str, Any]], bytes] | None) -> Any:
    """`value` itself if orjson already writes it as JCS, else a copy (of only the containers
    on the way to what differs) with those floats pre-formatted, and keys pre-sorted when
    `order` is given; raises _Outside for a shape not proven here."""
    t = type(value)
    if t in _PLAIN:
        return value
    if t is float:
        if 1e-4 <= abs(value) < _TWO_53 and not value.is_integer():
            return value  # orjson's shortest fixed notation is ECMAScript's here
        return orjson.Fragment(es6_number(value))
    if t is list:
        out = value
        for i, v in enumerate(value):
            if type(v) not in _PLAIN and (p := _prepare(v, order)) is not v:
                if out is value:
                    out = value.copy()
                out[i] = p
        return out
    if t is dict:
        keys = "".join(value)  # TypeError for a non-str key: rfc8785 decides
        if order is not None:
            return {k: v if type(v) in _PLAIN else _prepare(v, order)
                    for k, v in sorted(value.items(), key=order)}
        if not keys.isascii() and max(keys) >= "\ue000":
            raise _NeedsUtf16Order
        new = value
        for k, v in value.items():
            tv = type(v)
            if tv in _PLAIN or (
                tv is float and 1e-4 <= abs(v) < _TWO_53 and not v.is_integer()
            ):
                continue  # inlined: a record's reading is the hot path
            if (p := _prepare(v, order)) is not v:
                if new is value:
                    new = value.copy()
                new[k] = p
        return new
    raise _Outside


def es6_number(f: float) -> str:
    """ECMAScript Number.prototype.toString of a finite float (RFC 8785 section 3.2.2.3).

    Python's repr gives the same shortest round-trip digits; only the layout differs
    (repr switches to exponents below 1e-4 and from 1e16, writes `1e-05`, `1.0`, `-0.0`).
    """
    if f == 0.0:
        return "0"  # also -0.0
    a = abs(f)
    if a < _TWO_53 and f.is_integer():
        return str(int(f))  # exact below 2**53, and the shortest digits are the integer's
    if 1e-4 <= a < _TWO_53:
        return repr(f)  # fixed notation and non-integral here: the same as ECMAScript's
    if not math.isfinite(f):
        raise _Outside  # JCS refuses NaN and infinities: rfc8785 raises
    mantissa, _, exp = repr(a).partition("e")
    whole, _, frac = mantissa.partition(".")
    digits = (whole + frac).lstrip("0")
    n = len(whole) + int(exp or 0) - (len(whole + frac) - len(digits))  # point position
    digits = digits.rstrip("0")
    k = len(digits)
    sign = "-" if f < 0 else ""
    if k <= n <= 21:
        return f"{sign}{digits}{'0' * (n - k)}"
    if 0 < n <= 21:
        return f"{sign}{digits[:n]}.{digits[n:]}"
    if -6 < n <= 0:
        return f"{sign}0.{'0' * -n}{digits}"
    e = n - 1
    body = digits if k == 1 else f"{digits[0]}.{digits[1:]}"
    return f"{sign}{body}e{'+' if e >= 0 else '-'}{abs(e)}"
