"""What a worker process imports: not the web server, nor the AAS library.

Why: every worker of `run --workers N` is a fresh interpreter, and each module it imports
costs each worker its RSS (issue 17's < 150 MB per worker; bench/report-issue17.md, 2k):
aiohttp with prometheus_client ~10 MB for a page a worker never serves, aas_core3 ~3 MB for
a submodel asked of the parent. A top-level import added to the gateway's modules would
bring them back silently; this runs the import in a fresh interpreter and says which.
"""

from __future__ import annotations

import json
import subprocess
import sys

NOT_IN_A_WORKER = ("aiohttp", "prometheus_client", "aas_core3")


def test_the_gateway_module_imports_no_web_server_nor_aas_library() -> None:
    code = ("import json, sys\nimport edge.daemon.gateway\n"
            f"print(json.dumps([m for m in {NOT_IN_A_WORKER!r} if m in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert json.loads(out) == []
