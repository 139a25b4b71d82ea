"""Fixtures of the operations tests: daemons and receivers that are always cleaned up."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hookd import cli
from tests.ops.support import Receiver, Serve, serve_env

Cli = Callable[..., tuple[int, str, str]]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "var" / "hookd.db"


@pytest.fixture
def serve(db: Path) -> Iterator[Callable[..., Serve]]:
    """Start ``hookd serve`` on ``db`` with extra ``HOOKD_*`` (or other) variables."""
    started: list[Serve] = []

    def start(ready: str = "hookd.started", **env: str) -> Serve:
        process = Serve(serve_env(db, **env), ready=ready)
        started.append(process)
        return process

    yield start
    for process in started:
        process.kill()


@pytest.fixture
def threaded_receiver() -> Iterator[Receiver]:
    rec = Receiver().start()
    yield rec
    rec.close()


@pytest.fixture
def hookd(db: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Cli:
    """``hookd`` run in-process through ``hookd.cli.main`` on ``db``: (status, stdout, stderr).

    Keyword arguments are extra variables for that one run.  Logging setup is
    skipped: it is process-wide, and pytest's.
    """
    for name in list(os.environ):
        if name.startswith("HOOKD_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOOKD_DATABASE_PATH", str(db))
    monkeypatch.setattr(cli, "configure_logging", lambda *args, **kwargs: None)

    def run(*args: str, **env: str) -> tuple[int, str, str]:
        with monkeypatch.context() as m:
            for name, value in env.items():
                m.setenv(name, value)
            capsys.readouterr()
            try:
                code = cli.main(list(args))
            except SystemExit as exc:  # argparse's usage errors
                code = int(exc.code or 0)
            out, err = capsys.readouterr()
        return code, out, err

    return run
