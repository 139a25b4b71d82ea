"""The user documentation in docs/: complete where it lists, and free of project history."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from hookd.config import defaults_as_dict

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted((ROOT / "docs").glob("*.md"))
CONFIGURATION = ROOT / "docs" / "configuration.md"

# History lives in CHANGELOG.md and the commit messages, not in what users read.
HISTORY = re.compile(r"[Rr]ound [0-9]|[Ii]ssue [0-9]")


def documented_keys() -> dict[str, dict[str, Any]]:
    """Section -> key -> default, from the tables under each ``### `[section]` `` heading."""
    out: dict[str, dict[str, Any]] = {}
    section: dict[str, Any] | None = None
    for line in CONFIGURATION.read_text(encoding="utf-8").splitlines():
        if m := re.match(r"^### `\[(\w+)\]`$", line):
            section = out.setdefault(m[1], {})
        elif line.startswith("#"):
            section = None
        elif section is not None and (m := re.match(r"^\| `(\w+)` \| `([^`]*)` \|", line)):
            assert m[1] not in section, f"[{m[1]}] documented twice"
            # The default is written in TOML, as in config.example.toml.
            section[m[1]] = tomllib.loads(f"v = {m[2]}")["v"]
    return out


def test_the_configuration_reference_lists_every_key_with_its_default() -> None:
    assert documented_keys() == defaults_as_dict()


def test_docs_has_every_page_the_readme_promises() -> None:
    pages = [
        "api",
        "architecture",
        "benchmarks",
        "configuration",
        "delivery",
        "operations",
        "security",
    ]
    assert {f"{p}.md" for p in pages} <= {p.name for p in DOCS}


@pytest.mark.parametrize("doc", [ROOT / "README.md", *DOCS], ids=lambda p: str(p.relative_to(ROOT)))
def test_no_round_or_issue_numbers(doc: Path) -> None:
    for number, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), 1):
        assert not HISTORY.search(line), f"{doc.name}:{number}: history belongs in CHANGELOG.md"
