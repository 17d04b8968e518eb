"""Peak memory of the MTConnect agent client facing a hostile agent (issue 12 item 8).

A hostile (or broken) agent answers with a huge body. What one such agent costs the gateway
is the adapter's peak RSS while it reads and refuses the reply. Each case runs in a fresh
child process (so peaks do not mix) against an agent served by another child process (so the
server's own buffers are not counted): with `max_reply_bytes` at 64 MiB (the old fixed cap)
and at its default (2 MiB); with `--before DIR` (a checkout of the code before the change)
also the old code, which joined a list of chunks. Figures and ratios are printed side by side
and written to `bench/hostile_agent.md`.

Cases: 200 MB with a Content-Length; 200 MB chunked (no length: the cap must be counted);
a 40 MB well-formed /probe (many data items: under a 64 MiB cap it is parsed into a tree);
2 MB of `<a/>` (under the byte cap, but half a million elements: the element cap).

Run from the repository root: `.venv/bin/python bench/bench_hostile_agent.py [--before DIR]`.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MB = 1_000_000
OLD_CAP = 64 * 2**20
CASES = {
    "200 MB, Content-Length": ("length", 200 * MB),
    "200 MB, chunked": ("chunked", 200 * MB),
    "40 MB well-formed probe": ("probe", 40 * MB),
    "2 MB of tiny elements": ("tiny", 2 * 2**20 - 1000),
}


def _probe_chunks(size: int) -> list[bytes]:
    head = (b'<?xml version="1.0"?><MTConnectDevices><Header instanceId="1" version="2.0"/>'
            b'<Devices><Device id="d" name="d"><DataItems>')
    item = b'<DataItem id="x%09d" type="X" category="EVENT"/>'
    per = len(item % 0)
    n = (size - len(head) - 40) // per
    block = 10_000
    chunks = [head]
    for start in range(0, n, block):
        chunks.append(b"".join(item % i for i in range(start, min(n, start + block))))
    chunks.append(b"</DataItems></Device></Devices></MTConnectDevices>")
    return chunks


async def _serve(kind: str, size: int) -> None:
    """Child: a hostile agent on a free port; prints the port, serves until killed."""
    junk = b"<" + b"x" * (MB - 1)
    if kind == "tiny":  # just under the default cap, half a million elements
        chunks = [b"<MTConnectDevices>" + b"<a/>" * ((size - 40) // 4) + b"</MTConnectDevices>"]
    else:
        chunks = _probe_chunks(size) if kind == "probe" else [junk] * (size // MB)
    total = sum(len(c) for c in chunks)

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            await r.readuntil(b"\r\n\r\n")
            if kind == "chunked":
                w.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\n"
                        b"Transfer-Encoding: chunked\r\n\r\n")
                for c in chunks:
                    w.write(b"%x\r\n%s\r\n" % (len(c), c))
                    await w.drain()
                w.write(b"0\r\n\r\n")
            else:
                w.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\n"
                        b"Content-Length: %d\r\n\r\n" % total)
                for c in chunks:
                    w.write(c)
                    await w.drain()
            await w.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            w.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()


def _rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def _client(port: int, cap: int, code: str) -> dict[str, object]:
    """Child: connect the agent adapter once, report RSS before and the peak after."""
    sys.path.insert(0, code)  # the code under measurement: this tree or `--before DIR`
    base = importlib.import_module("adapters.base")
    agent = importlib.import_module("adapters.mtconnect.agent")
    settings_mod = importlib.import_module("adapters.mtconnect.settings")
    edge_error: type[Exception] = importlib.import_module("models.errors").EdgeError
    conn: dict[str, object] = {"url": f"http://127.0.0.1:{port}", "timeout": 60}
    if "max_reply_bytes" in settings_mod.AgentConnection.model_fields:  # not in the old code
        conn["max_reply_bytes"] = cap
    settings = settings_mod.MtconnectAgentSettings.model_validate({"connection": conn})
    a: Any = agent.MtconnectAgentAdapter(base.AdapterContext("hostile"), settings)
    before = _rss_kb()
    t = time.perf_counter()
    try:
        await a.connect()
        outcome = "accepted"
    except edge_error as exc:
        outcome = f"{type(exc).__name__}: {str(exc)[-60:]}"
    finally:
        await a.aclose()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"before_mb": before / 1024, "peak_mb": peak / 1024, "outcome": outcome,
            "seconds": time.perf_counter() - t}


def _measure(kind: str, size: int, cap: int, code: Path = ROOT) -> dict[str, object]:
    server = subprocess.Popen([sys.executable, __file__, "--serve", kind, str(size)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        done = subprocess.run([sys.executable, __file__, "--client", str(port), str(cap),
                               str(code)], capture_output=True, text=True, check=True,
                              timeout=300)
        result: dict[str, object] = json.loads(done.stdout)
        return result
    finally:
        server.kill()
        server.wait()


def _growth(r: dict[str, object]) -> float:
    return float(str(r["peak_mb"])) - float(str(r["before_mb"]))


def main(before: Path | None) -> None:
    from adapters.mtconnect.settings import AgentConnection  # noqa: PLC0415 (after sys.path)

    new_cap = AgentConnection.model_fields["max_reply_bytes"].default
    columns = [("64 MiB cap", ROOT, OLD_CAP), (f"default {new_cap // 2**20} MiB", ROOT, new_cap)]
    if before is not None:
        columns.insert(0, ("code before", before, OLD_CAP))
    lines = [
        "# MTConnect agent client against a hostile agent: peak RSS growth",
        "",
        "Measured by `bench/bench_hostile_agent.py` (one child process per cell: RSS before "
        "the connect, peak RSS `ru_maxrss` after; growth = peak - before). `code before` is "
        "the code before issue 12 item 8 (fixed 64 MiB cap, chunks joined); the others are "
        "the current code (body grown in place, a Content-Length over the cap refused unread, "
        "at most `20 * count + 20000` tags) with `max_reply_bytes` at 64 MiB and at its default.",
        "",
        "| case | RSS before, MB | " + " | ".join(f"growth, {c[0]}" for c in columns)
        + f" | ratio first / last | outcome, {columns[-1][0]} |",
        "|---|---|" + "---|" * len(columns) + "---|---|",
    ]
    for name, (kind, size) in CASES.items():
        cells = [_measure(kind, size, cap, code) for _, code, cap in columns]
        growth = [_growth(c) for c in cells]
        lines.append(
            f"| {name} | {float(str(cells[-1]['before_mb'])):.0f} | "
            + " | ".join(f"{g:.0f} MB" for g in growth)
            + f" | x{growth[0] / max(growth[-1], 1):.1f} | {cells[-1]['outcome']} |")
    text = "\n".join(lines) + "\n"
    print(text)
    (ROOT / "bench" / "hostile_agent.md").write_text(text)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        asyncio.run(_serve(sys.argv[2], int(sys.argv[3])))
    elif sys.argv[1:2] == ["--client"]:
        print(json.dumps(asyncio.run(_client(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]))))
    else:
        main(Path(sys.argv[2]) if sys.argv[1:2] == ["--before"] else None)
