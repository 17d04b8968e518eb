"""README's command line table names every subcommand and every long option `edge-gateway`
accepts: a flag added to edge/cli.py without a word in the README is a feature nobody finds.
The parser itself is read, so the test follows edge/cli.py as it changes."""

from __future__ import annotations

import argparse
from pathlib import Path

from edge.cli import _parser

README = Path(__file__).resolve().parents[2] / "README.md"


def _commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(actions[0].choices) if actions else {}


def _options(parser: argparse.ArgumentParser) -> list[tuple[str, ...]]:
    """Each option's spellings (`-c`, `--config`): the README may use either. Internal
    options (help suppressed: `run --worker I/N`, the parent's argument to its workers)
    are not for people."""
    return [tuple(a.option_strings) for a in parser._actions
            if a.option_strings and a.help != argparse.SUPPRESS
            and not {"--help", "--version"} & set(a.option_strings)]


def _named(spellings: tuple[str, ...], rows: list[str]) -> bool:
    return any(f"{o} " in r or f"{o}]" in r or f"{o}`" in r or f"{o}\\|" in r
               for o in spellings for r in rows)


def _section() -> str:
    text = README.read_text(encoding="utf-8")
    return text.split("\n## Command line\n", 1)[1].split("\n## ", 1)[0]


def test_every_subcommand_and_long_option_is_in_the_readme() -> None:
    section = _section()
    rows = [line for line in section.splitlines() if line.startswith("| `edge-gateway ")]
    missing: list[str] = []
    for name, sub in _commands(_parser()).items():
        mine = [r for r in rows if r.startswith((f"| `edge-gateway {name} ",
                                                 f"| `edge-gateway {name}`"))]
        if not mine:
            missing.append(name)
            continue
        missing += [f"{name} {o[-1]}" for o in _options(sub) if not _named(o, mine)]
    missing += [o[-1] for o in _options(_parser()) if not _named(o, [section])]
    assert missing == [], f"edge-gateway commands/options missing from README: {missing}"
