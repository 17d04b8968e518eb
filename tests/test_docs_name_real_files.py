"""The docs and docstrings a developer new to the project reads name files that exist, and
docs/architecture.md names every module of `edge/` (the newcomer walk-through found a
docstring pointing at a module merged into another, and modules the table never named)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("edge", "adapters", "models", "simulators", "bench", "examples")
DOCS = ("README.md", "docs", "systemd", "adapters", "examples", "bench")
NAMED = re.compile(
    r"(?<![\w./-])((?:edge|adapters|models|simulators|bench|tests|config|docs|systemd|examples)"
    r"/[\w./-]*?\.(?:py|md|yaml|json|service))\b"
)
GENERATED = "sparkplug_proto"
WRITTEN_BY_RUNS = ("bench/results/",)  # a bench run's outputs, not in the tree (.gitignore)


def _texts() -> list[Path]:
    files = [p for top in SOURCES for p in (ROOT / top).rglob("*.py")]
    files += [ROOT / "README.md", *(p for top in DOCS[1:] for p in (ROOT / top).rglob("*.md"))]
    # not what runs leave in the tree: bench's peer venv (bench/.peer-venv), caches, npm's
    return [p for p in files if "node_modules" not in p.parts
            and not any(part.startswith(".") for part in p.relative_to(ROOT).parts)]


def test_files_named_in_docs_and_docstrings_exist() -> None:
    missing = []
    for path in _texts():
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for name in NAMED.findall(line):
                if name.startswith(WRITTEN_BY_RUNS):
                    continue
                # from the root, or (an example package's README) from the file's folder
                if not (ROOT / name).exists() and not (path.parent / name).exists():
                    missing.append(f"{path.relative_to(ROOT)}:{lineno}: {name}")
    assert not missing, "\n".join(missing)


def _modules() -> list[Path]:
    return sorted(
        p for p in (ROOT / "edge").rglob("*.py")
        if p.name != "__init__.py" and GENERATED not in p.parts
    )


@pytest.mark.parametrize("module", _modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_the_architecture_table_names_every_module(module: Path) -> None:
    """Each module by its name in its package's row of the packages table (a module of a
    sub-package, e.g. edge/egress/formats/, in the row of its top package)."""
    relative = module.relative_to(ROOT)
    rows = [line for line in (ROOT / "docs" / "architecture.md").read_text().splitlines()
            if line.startswith("| `edge/")]
    top = f"edge/{relative.parts[1]}" + ("/" if len(relative.parts) > 2 else "")
    row = next((r for r in rows if r.startswith(f"| `{top}`")), "")
    assert re.search(rf"\b{re.escape(module.stem)}\b", row), (
        f"docs/architecture.md: the `{top}` row does not name {relative}"
    )
