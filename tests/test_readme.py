"""The README's commands are the ones CI runs."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _command_after(marker: str, text: str) -> str:
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if marker in line:
            return next(line for line in lines[i + 1 :] if line.strip()).strip()
    raise AssertionError(f"{marker!r} not found")


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text()
    ci_command = _command_after("# README test command:", ci)
    assert ci_command in readme, "README and .ci/run disagree on the test command"
    assert "pytest" in ci_command and "mypy src" in ci_command and "ruff check" in ci_command
