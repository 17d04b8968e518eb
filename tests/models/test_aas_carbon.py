"""The IDTA 02023 Carbon Footprint submodel, filled from measured part records, verifies."""

from __future__ import annotations

import json
from pathlib import Path

from aas_core3 import jsonization

from edge.config.loader import load_plant
from models.aas import (
    CARBON_SEMANTIC_ID,
    ProgramFootprint,
    build_environment,
    build_plant_environment,
    environment_json,
    verify_environment,
)
from models.parts import footprint_by_program

DEMO = Path(__file__).resolve().parents[2] / "config" / "demo-plant.yaml"


def record(program: str, kwh: float, verdict: str = "good") -> dict[str, object]:
    return {"program": program, "parts": 1, "energy_kwh": kwh, "co2e_kg": kwh * 0.4,
            "verdict": verdict}


def test_scrap_energy_is_carried_by_the_good_parts_of_its_program() -> None:
    rows = [record("O1000", 0.1), record("O1000", 0.1, "scrap"), record("O1000", 0.1),
            record("O2000", 0.5), {"program": "O3000", "energy_kwh": None, "verdict": "good"}]
    got = footprint_by_program(rows)
    assert got["O1000"]["good_parts"] == 2
    assert abs(got["O1000"]["kwh_per_part"] - 0.15) < 1e-9
    assert abs(got["O1000"]["co2e_kg_per_part"] - 0.06) < 1e-9
    assert set(got) == {"O1000", "O2000"}


def test_measured_footprint_submodel_verifies_with_no_errors() -> None:
    plant = load_plant(DEMO).plant
    footprints = [ProgramFootprint("O1000", 0.0123, 0.0324, 212, 30),
                  ProgramFootprint("O2000 / rev B", 0.02, 0.05, 3, 30)]
    env = build_environment(plant, plant.machine("mill-01"), carbon=footprints,
                            carbon_method="GHG Protocol Scope 2, location-based")
    assert verify_environment(env) == []
    data = environment_json(env)
    (sm,) = [s for s in data["submodels"] if s["idShort"] == "CarbonFootprint"]
    assert sm["semanticId"]["keys"][0]["value"] == CARBON_SEMANTIC_ID
    first = {e["idShort"]: e.get("value") for e in sm["submodelElements"][0]["value"]}
    assert first["PCFCO2eq"] == "0.0123" and first["PCFReferenceValueForCalculation"] == "piece"
    assert first["PCFLifeCyclePhase"] == "A3 - production" and first["Program"] == "O1000"
    again = jsonization.environment_from_jsonable(json.loads(json.dumps(data)))
    assert verify_environment(again) == []
    # every machine, an empty footprint where nothing was measured yet
    whole = build_plant_environment(plant, carbon={"mill-01": []})
    assert verify_environment(whole) == []
    assert "urn:edge-gateway:plant-a:mill-01:sm:carbon-footprint" in {
        s.id for s in whole.submodels or []}
