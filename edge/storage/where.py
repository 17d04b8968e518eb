"""The WHERE clause of a listing whose filters are each optional, with its parameters.

Why: the part records' `page` and the bookings' listing both narrow one table by whichever
filters the caller gave; building the clause and its `?` parameters side by side, in one
place, keeps a filter and its argument from drifting apart (a missing `?` or argument is a
wrong answer, not an error, when the counts happen to match).
"""

from __future__ import annotations

from collections.abc import Iterable


class Where:
    """Conditions joined by AND; `sql` is "1" (every row) while there is none."""

    def __init__(self) -> None:
        self._terms: list[str] = []
        self.args: list[object] = []

    def add(self, condition: str, *args: object) -> None:
        """A condition with its `?` placeholders, and their values in order."""
        self._terms.append(condition)
        self.args.extend(args)

    def compare(self, column: str, op: str, value: object) -> None:
        """`column op ?`, unless `value` is None (no filter)."""
        if value is not None:
            self.add(f"{column} {op} ?", value)

    def equals(self, column: str, value: object) -> None:
        self.compare(column, "=", value)

    def any_of(self, column: str, values: Iterable[object]) -> None:
        """`column IN (...)`, unless `values` is empty (no filter)."""
        wanted = list(values)
        if wanted:
            self.add(f"{column} IN ({', '.join('?' * len(wanted))})", *wanted)

    @property
    def sql(self) -> str:
        return " AND ".join(self._terms) or "1"
