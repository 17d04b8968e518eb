"""The example plugin package, installed the way a third party's package would be.

pip builds and installs examples/edge-gateway-example-adapter into a temporary directory
(`--target`, so the project's venv is left untouched), and a fresh interpreter with that
directory on its path asks the gateway's registry for it. Two more generated packages
prove the failure modes: one registers the same adapter name (the registry must refuse and
name both packages), one fails to import (the error must name the package).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "edge-gateway-example-adapter"

pytestmark = pytest.mark.slow


def pip_install(target: Path, *projects: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target",
         str(target), *map(str, projects)],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 0, f"pip install failed:\n{proc.stdout}\n{proc.stderr}"


def make_project(where: Path, name: str, module: str, entry: str, code: str) -> Path:
    where.mkdir(parents=True)
    (where / "pyproject.toml").write_text(textwrap.dedent(f"""\
        [build-system]
        requires = ["setuptools>=69"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "{name}"
        version = "0.0.1"

        [project.entry-points."edge_gateway.adapters"]
        {entry}

        [tool.setuptools]
        py-modules = ["{module}"]
        """))
    (where / f"{module}.py").write_text(code)
    return where


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("plugins")
    example, others = base / "example", base / "others"
    pip_install(example, EXAMPLE)
    dup = make_project(
        base / "src-dup", "edge-gateway-duplicate-adapter", "dup_adapter",
        'linemeter = "dup_adapter:Other"',
        "from adapters.base import PollingAdapter\n\n\nclass Other(PollingAdapter):\n    pass\n",
    )
    broken = make_project(
        base / "src-broken", "edge-gateway-broken-adapter", "broken_adapter",
        'brokenthing = "broken_adapter:Broken"',
        "import a_module_that_does_not_exist  # noqa: F401\n",
    )
    pip_install(others, dup, broken)
    return {"example": example, "others": others}


def gateway_python(code: str, *paths: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, paths))}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=60, check=False)


def test_registry_finds_the_installed_plugin(installed: dict[str, Path]) -> None:
    proc = gateway_python(textwrap.dedent("""
        from importlib.metadata import entry_points
        from edge.config import registry
        print(registry.available())
        cls = registry.load("linemeter")
        (ep,) = [e for e in entry_points(group="edge_gateway.adapters") if e.name == "linemeter"]
        print(cls.__module__, cls.__name__, ep.dist.name)
    """), installed["example"])
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "linemeter" in lines[0] and "modbus" in lines[0]
    assert lines[1] == ("edge_gateway_example_adapter.adapter LineMeterAdapter "
                        "edge-gateway-example-adapter")


def test_a_plugin_without_a_settings_entry_point_validates_through_its_adapter(
    installed: dict[str, Path],
) -> None:
    """`edge_gateway.adapter_settings` is optional: the adapter's `settings_model` serves."""
    proc = gateway_python(textwrap.dedent("""
        from edge.config import registry
        print(registry.settings_loader()("linemeter") is
              registry.load("linemeter").settings_model)
    """), installed["example"])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "True"


def test_plugin_not_loaded_when_not_installed() -> None:
    proc = gateway_python("from edge.config import registry; print(registry.available())")
    assert proc.returncode == 0, proc.stderr
    assert "linemeter" not in proc.stdout


def test_duplicate_name_is_an_error_naming_both_packages(installed: dict[str, Path]) -> None:
    proc = gateway_python(textwrap.dedent("""
        from edge.config import registry
        from models.errors import PluginError
        try:
            registry.available()
        except PluginError as exc:
            print("PluginError:", exc)
    """), installed["example"], installed["others"])
    assert proc.returncode == 0, proc.stderr
    assert "PluginError:" in proc.stdout
    assert "'linemeter'" in proc.stdout
    assert "edge-gateway-example-adapter" in proc.stdout
    assert "edge-gateway-duplicate-adapter" in proc.stdout


def test_plugin_failing_to_import_is_an_error_naming_the_package(
    installed: dict[str, Path],
) -> None:
    proc = gateway_python(textwrap.dedent("""
        from edge.config import registry
        from models.errors import PluginError
        print(registry.load("linemeter").__name__)  # the other plugins still load
        try:
            registry.load("brokenthing")
        except PluginError as exc:
            print("PluginError:", exc)
    """), installed["others"])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == "Other"
    assert "edge-gateway-broken-adapter" in proc.stdout
    assert "a_module_that_does_not_exist" in proc.stdout


def test_the_plugin_passes_its_own_contract_tests(installed: dict[str, Path]) -> None:
    env = {**os.environ, "PYTHONPATH": str(installed["example"])}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir",
         str(EXAMPLE), str(EXAMPLE / "tests")],
        capture_output=True, text=True, env=env, cwd=EXAMPLE, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "5 passed" in proc.stdout
