"""`edge-gateway query`'s NAME=VALUE words as the request's params."""

from __future__ import annotations

import pytest

from edge.platform_kit.client import params_from_words


def test_values_are_json_where_they_parse_and_ids_stay_text() -> None:
    """A numeric purchase order was sent as a number and refused by the gateway
    (`reference: Input should be a valid string`); a list needs JSON."""
    assert params_from_words(
        ["reference=4711", "asset=42", "duration_minutes=60", "window=today",
         'state=["accepted","released"]', "program=1000", "hours=0.5"]
    ) == {
        "reference": "4711", "asset": "42", "duration_minutes": 60, "window": "today",
        "state": ["accepted", "released"], "program": "1000", "hours": 0.5,
    }


@pytest.mark.parametrize("word", ["asset", "=mill-01"])
def test_a_word_that_is_not_name_value_is_named(word: str) -> None:
    with pytest.raises(ValueError, match=f"parameter '{word}' is not NAME=VALUE"):
        params_from_words([word])
