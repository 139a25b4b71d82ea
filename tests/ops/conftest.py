"""Fixtures of the operations tests: daemons and receivers that are always cleaned up."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.ops.support import Receiver, Serve, serve_env


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
