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
from models.parts import ProgramEnergy, per_good_part

DEMO = Path(__file__).resolve().parents[2] / "config" / "demo-plant.yaml"


def test_scrap_energy_is_carried_by_the_good_parts_of_its_program() -> None:
    got = per_good_part([ProgramEnergy("O2000", 1, 0.5, None), ProgramEnergy("O1000", 2, 0.3, 0.12),
                         ProgramEnergy("O3000", 0, 0.2, 0.08)])
    assert list(got) == ["O1000", "O2000"]  # a program without a good part has no figure
    assert got["O1000"] == {"good_parts": 2, "kwh_per_part": 0.15, "co2e_kg_per_part": 0.06}
    assert got["O2000"]["co2e_kg_per_part"] is None


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
