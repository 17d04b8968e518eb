"""The IDTA 02023 Carbon Footprint submodel, filled from measured part records, verifies."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

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


def key(reference: dict[str, Any]) -> str:
    (only,) = reference["keys"]
    return str(only["value"])


def test_measured_footprint_submodel_verifies_with_no_errors() -> None:
    plant = load_plant(DEMO).plant
    as_of = datetime(2026, 12, 6, 9, 30, tzinfo=UTC)
    footprints = [ProgramFootprint("O1000", 0.0123, 0.0324, 212, 30, as_of),
                  ProgramFootprint("O2000 / rev B", 2e-05, 0.05, 3, 30, as_of)]
    env = build_environment(plant, plant.machine("mill-01"), carbon=footprints,
                            carbon_method="GHG Protocol Scope 2, location-based")
    assert verify_environment(env) == []
    data = environment_json(env)
    (sm,) = [s for s in data["submodels"] if s["idShort"] == "CarbonFootprint"]
    assert sm["semanticId"]["keys"][0]["value"] == CARBON_SEMANTIC_ID
    assert CARBON_SEMANTIC_ID == "https://admin-shell.io/idta/CarbonFootprint/CarbonFootprint/1/0"
    (pcfs,) = sm["submodelElements"]  # IDTA 02023-1-0: one list, an element per program
    assert (pcfs["idShort"], pcfs["modelType"]) == ("ProductCarbonFootprints",
                                                    "SubmodelElementList")
    assert [key(e["semanticId"]) for e in pcfs["value"]] == [key(pcfs["semanticIdListElement"])] * 2
    assert all("idShort" not in e for e in pcfs["value"])  # AASd-120
    first = {e["idShort"]: e for e in pcfs["value"][0]["value"]}
    assert first["Program"]["value"] == "O1000"
    assert (first["PcfCO2eq"]["value"], first["PcfCO2eq"]["valueType"]) == ("0.0123", "xs:decimal")
    assert key(first["PcfCO2eq"]["semanticId"]) == "0173-1#02-ABG855#003"
    unit = first["ReferenceImpactUnitForCalculation"]
    assert (unit["value"], key(unit["valueId"])) == ("piece", "0173-1#07-ABZ603#003")
    assert first["QuantityOfMeasureForCalculation"]["value"] == "1.0"
    (method,) = first["PcfCalculationMethods"]["value"]
    assert (method["value"], key(method["valueId"])) == ("GHG Protocol", "0173-1#07-ABU221#003")
    (phase,) = first["LifeCyclePhases"]["value"]
    assert (phase["value"], key(phase["valueId"])) == ("A3 - production", "0173-1#07-ABU210#003")
    assert first["PublicationDate"]["value"] == "2026-12-06T09:30:00Z"
    second = {e["idShort"]: e.get("value") for e in pcfs["value"][1]["value"]}
    assert second["PcfCO2eq"] == "0.00002"  # xs:decimal has no exponent
    again = jsonization.environment_from_jsonable(json.loads(json.dumps(data)))
    assert verify_environment(again) == []
    # every machine, an empty footprint where nothing was measured yet
    whole = build_plant_environment(plant, carbon={"mill-01": []})
    assert verify_environment(whole) == []
    assert "urn:edge-gateway:plant-a:mill-01:sm:carbon-footprint" in {
        s.id for s in whole.submodels or []}
