"""Splitting an SHDR line into fields exactly as the MTConnect reference agent does.

Why not `line.split("|")`: adapters in the field (and cppagent's own) quote a message or
condition text that holds a `|`: `ts|msg|E1|"Tool \\| spindle"`. cppagent's tokenizer
(`src/mtconnect/pipeline/shdr_tokenizer.hpp`, Apache-2.0) reads that as one field
`Tool | spindle`; a plain split cut it in two and the rest of the line slid one field over.
An agent's reading is what a machine builder tests against, so this module gives the same
fields for every line, its odd corners included. The rules, restated:

* Fields are separated by `|`. Whitespace (space, tab, CR, LF, VT, FF) before a field is
  skipped and whitespace at its end is dropped. A line that ends on `|` has an empty last
  field; a line ending in `| ` has one too (the skipped whitespace leaves an empty field).
* A field that starts with `"` is quoted. Inside it a backslash makes the next character
  literal (`\\|`, `\\"`, `\\\\`) and is itself dropped. A `"` that is followed only by
  whitespace and then `|` or the end of the line closes the field; the quotes are not part
  of the value (whitespace inside before the closing quote is dropped too).
* A quoted field that is not closed that way ends at the first unescaped `|`, the end of
  the line, or a `"` followed by something else (that `"` then starts the next field's
  text: `"ab"cd|x` gives `ab`, `cd`, `x`). Without a backslash so far, its value is the text
  after the opening quote. Once a backslash was read, the field is taken again, from the
  opening quote as sent up to the next `|` (`"a\\|b` gives `"a\\` and `b`).
* "Once a backslash was read" holds for the rest of the line, not per field: cppagent
  removes escape backslashes in place from the first one on, so a later unclosed quoted
  field also keeps its opening quote, and its own escape backslashes are already gone
  (`"a\\|b"|"c\\d|x` gives `a|b`, `"cd`, `x`). Rare, but reproduced, not improved on.
* A NUL ends the line (cppagent reads C strings). Lines holding one are refused before they
  get here (`shdr_junk`); the rule only keeps this function total.
"""

from __future__ import annotations

__all__ = ["tokenize"]

_SPACES = " \t\n\v\f\r"  # C isspace() in the "C" locale
_SPACE = frozenset(_SPACES)


def _skip_space(text: list[str], i: int) -> int:
    while i < len(text) and text[i] in _SPACE:
        i += 1
    return i


def _field_end(text: list[str], i: int) -> int:
    """The index of the `|` that ends the plain field at `i`, or the end of the text."""
    try:
        return text.index("|", i)
    except ValueError:
        return len(text)


def tokenize(line: str) -> list[str]:
    """The fields of one SHDR line (without its line end), as cppagent's agent reads them.

    Linear in the line's length: an edit in place marks the dropped backslash `""` in a list
    of characters instead of cutting the string (which made a 1 MB line of backslashes, one
    a hostile device may send, take 28 s); a field is the join of its characters."""
    sent = line.split("\0", 1)[0]
    if '"' not in sent:  # no quoted field: the rules above come down to split and trim
        return [field.strip(_SPACES) for field in sent.split("|")] if sent else []
    text = list(sent)  # "" where a backslash was dropped: the edited text is the join
    edited = False  # a backslash was consumed: from then on `text` is edited in place
    tokens: list[str] = []
    i = 0
    while i < len(text):
        i = _skip_space(text, i)
        start = i
        close: int | None = None  # index of the closing quote of a quoted field
        if i < len(text) and text[i] == '"':
            quote = i
            undo_edits = not edited  # re-read the field as sent when its quote is not closed
            start = i = quote + 1
            while i < len(text):
                c = text[i]
                if c == "\\":
                    text[i] = ""  # drop it; the next character is literal
                    i += 1
                    edited = True
                elif c == "|":
                    break
                elif c == '"':
                    after = _skip_space(text, i + 1)
                    if after < len(text) and text[after] != "|":
                        break
                    close = i
                if i < len(text):
                    i += 1
            if close is None and edited:
                if undo_edits:
                    text[quote:i] = sent[quote:i]
                start = quote
                i = _field_end(text, quote)
        else:
            i = _field_end(text, i)
        end = i if close is None else close
        while end > start and (text[end - 1] in _SPACE or not text[end - 1]):
            end -= 1
        tokens.append("".join(text[start:end]))
        if i == len(text) - 1 and text[i] == "|":
            tokens.append("")
        if i < len(text):
            i += 1
    return tokens
