"""README's query example, step by step: a platform key pair from `keys platform`, the
printed block pasted into the demo plant, the demo running, `query oee` answering with the
running shift's figures (the demo calendar covers every hour of every day). Then the audit's
typo, `windw=today`: refused (`bad_request`, the key named, exit 1), not answered with the
running shift as if `window` were absent."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import structlog
import yaml
from conftest import Mosquitto
from e2e import GatewayProcess, demo_plant_on_free_ports, wait_for

from edge.cli import main


@pytest.mark.slow
async def test_readme_query_example(
    tmp_path: Path, mosquitto: Mosquitto, capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        assert await asyncio.to_thread(
            main, ["keys", "platform", "-o", str(tmp_path / "platform"), "--id", "demo-platform"]
        ) == 0
        block = capsys.readouterr().out
        broker = f"mqtt://127.0.0.1:{mosquitto.port}"
        plant = demo_plant_on_free_ports(tmp_path, broker)
        data = yaml.safe_load(plant.read_text())
        data.update(yaml.safe_load(block))  # "paste the block"
        plant.write_text(yaml.safe_dump(data, sort_keys=False))
        gw = GatewayProcess(plant).start()
        try:
            wait_for(lambda: bool(gw.events("gateway_started")), 30, "gateway started")
            argv = ["query", "--broker", broker, "--key",
                    str(tmp_path / "platform" / "demo-platform.key.pem"),
                    "--gateway", "edge/plant-a/gw-01", "oee", "asset=mill-01"]
            reply: dict[str, object] = {}

            def answered_with_figures() -> bool:
                rc = main(argv)
                out = capsys.readouterr().out
                reply.update(json.loads(out) if out.strip() else {})
                result = reply.get("result")
                return rc == 0 and isinstance(result, dict) and result.get("oee") is not None

            await asyncio.to_thread(wait_for, answered_with_figures, 60, "oee answered")
            result = reply["result"]
            assert isinstance(result, dict) and result["window"]["kind"] == "shift"

            typo = await asyncio.to_thread(main, [*argv, "windw=today"])
            refused = json.loads(capsys.readouterr().out)
            assert typo == 1 and refused["ok"] is False, refused
            assert refused["error"] == {
                "code": "bad_request",
                "message": "unknown params for oee: windw "
                           "(oee takes asset, window, start, end, hours)",
            }
            await asyncio.to_thread(
                wait_for, lambda: any("windw" in str(e.get("reason"))
                                      for e in gw.events("query_refused")),
                10, "the refusal logged")
        finally:
            gw.kill()
    finally:
        structlog.reset_defaults()
