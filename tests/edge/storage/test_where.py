"""The optional-filter WHERE builder against real SQLite: a filter left out narrows nothing,
and every placeholder gets its own value."""

from __future__ import annotations

import sqlite3

from edge.storage.where import Where


def rows(where: Where) -> list[str]:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (name TEXT, n INTEGER)")
    conn.executemany("INSERT INTO t VALUES (?, ?)", [("a", 1), ("b", 2), ("c", 3)])
    return [r[0] for r in conn.execute(f"SELECT name FROM t WHERE {where.sql} ORDER BY name",
                                       where.args)]


def test_no_filter_selects_every_row() -> None:
    where = Where()
    where.equals("name", None)
    where.compare("n", ">", None)
    where.any_of("name", [])
    assert (where.sql, where.args) == ("1", [])
    assert rows(where) == ["a", "b", "c"]


def test_filters_and_their_values_stay_in_order() -> None:
    where = Where()
    where.any_of("name", ["a", "b", "c"])
    where.compare("n", ">=", 2)
    where.add("(name > ? OR n = ?)", "b", 2)
    assert where.args == ["a", "b", "c", 2, "b", 2]
    assert rows(where) == ["b", "c"]
