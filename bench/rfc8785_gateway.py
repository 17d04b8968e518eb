"""`python -m bench.rfc8785_gateway ...`: the gateway CLI with envelope bodies canonicalized
by the pure-Python `rfc8785` package, as before issue 17.

Why: the sealing figures (bench/sealing.py) compare before and after in one run, on the same
simulator, broker and machine load; a switch for this in the production code would be a knob
nobody should turn, so the bench swaps the function here instead.
"""

from __future__ import annotations

import sys

import rfc8785

from edge.signing import jcs

jcs.canonical_json = rfc8785.dumps  # edge.signing.jws looks it up on every call

from edge.cli import main  # noqa: E402 - after the swap, on purpose

if __name__ == "__main__":
    sys.exit(main())
