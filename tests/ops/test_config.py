"""config.example.toml is the defaults, every key has a working ``HOOKD_*`` override,
and a bad value stops ``hookd serve`` with one line naming the key."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path
from typing import Any

import pytest

from hookd.config import Config, defaults_as_dict, load_config
from tests.ops.support import ROOT, clean_env, run_hookd

EXAMPLE = ROOT / "config.example.toml"

# A valid value different from the default, for keys whose type alone does not give one.
SPECIAL: dict[str, tuple[str, Any]] = {
    "server.listen": ("127.0.0.1:9999", "127.0.0.1:9999"),
    "server.metrics_listen": ("127.0.0.1:9998", "127.0.0.1:9998"),
    "database.path": ("/tmp/elsewhere.db", "/tmp/elsewhere.db"),
    "delivery.allow_networks": ("10.0.0.0/8, fd00::/8", ("10.0.0.0/8", "fd00::/8")),
    "delivery.retry_schedule_seconds": ("[1, 30.5, 600]", (1.0, 30.5, 600.0)),
    # The largest allowed is the default: go down.
    "delivery.max_timeout_ms": ("30000", 30000),
    "logging.level": ("debug", "debug"),
    "logging.format": ("console", "console"),
    "server.event_loop": ("asyncio", "asyncio"),
    "delivery.client": ("aiohttp", "aiohttp"),
    "database.url": ("postgresql://hookd@db:5432/hookd", "postgresql://hookd@db:5432/hookd"),
    "database.password_file": ("/run/secrets/pg", "/run/secrets/pg"),
    # The largest allowed is the default: go down.
    "quotas.events_per_batch": ("100", 100),
}


def _all_keys() -> list[tuple[str, str, Any]]:
    out = []
    config = Config()
    for section in dataclasses.fields(Config):
        for f in dataclasses.fields(getattr(config, section.name)):
            out.append((section.name, f.name, getattr(getattr(config, section.name), f.name)))
    return out


def _types(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _types(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_types(v) for v in value]
    return type(value).__name__


def test_the_example_file_is_exactly_the_defaults() -> None:
    example = tomllib.loads(EXAMPLE.read_text())
    defaults = defaults_as_dict()
    assert example == defaults
    # 5 == 5.0 in Python; in the file an integer where a float belongs is a lie.
    assert _types(example) == _types(defaults)
    assert load_config(EXAMPLE, env={}) == Config()


def test_every_key_is_documented_by_a_comment_above_it() -> None:
    lines = EXAMPLE.read_text().splitlines()
    for section, key, _default in _all_keys():
        header = lines.index(f"[{section}]")
        index = next(
            i for i, line in enumerate(lines) if i > header and line.startswith(f"{key} = ")
        )
        # A comment directly above, or a group's comment above its first key.
        back = index - 1
        while lines[back] and not lines[back].startswith(("#", "[")):
            back -= 1
        assert lines[back].startswith("#"), f"{section}.{key} has no comment"


@pytest.mark.parametrize(
    ("section", "key", "default"), _all_keys(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_every_key_has_a_working_environment_override(section: str, key: str, default: Any) -> None:
    env_name = f"HOOKD_{section.upper()}_{key.upper()}"
    dotted = f"{section}.{key}"
    if dotted in SPECIAL:
        raw, expected = SPECIAL[dotted]
    elif isinstance(default, bool):
        raw, expected = str(not default).lower(), not default
    elif isinstance(default, int):
        raw, expected = str(default + 1), default + 1
    elif isinstance(default, float):
        expected = default + 1.5
        raw = repr(expected)
    else:  # pragma: no cover - a new key of a new type needs a SPECIAL entry
        raise AssertionError(f"no override value for {dotted}")
    config = load_config(env={env_name: raw})
    assert getattr(getattr(config, section), key) == expected != default


def _serve_fails(env: dict[str, str], *args: str) -> str:
    result = run_hookd(*args, "serve", env=env, timeout=30)
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_a_bad_environment_value_exits_2_with_one_line_naming_the_key(tmp_path: Path) -> None:
    base = {"HOOKD_DATABASE_PATH": str(tmp_path / "hookd.db")}
    line = _serve_fails(clean_env(**base, HOOKD_DELIVERY_CONCURRENCY="lots"))
    assert "HOOKD_DELIVERY_CONCURRENCY" in line and "lots" in line
    line = _serve_fails(clean_env(**base, HOOKD_RETENTION_BATCH_SIZE="0"))
    assert "retention.batch_size" in line
    line = _serve_fails(clean_env(**base, HOOKD_SERVER_EVENT_LOOP="trio"))
    assert "server.event_loop" in line and "trio" in line
    line = _serve_fails(clean_env(**base, HOOKD_DELIVERY_CLIENT="curl"))
    assert "delivery.client" in line and "curl" in line
    line = _serve_fails(clean_env(**base, HOOKD_DELIVERY_CONCURENCY="8"))
    assert "HOOKD_DELIVERY_CONCURENCY" in line
    assert not (tmp_path / "hookd.db").exists(), "nothing is created on a bad config"


def test_a_bad_file_value_exits_2_with_one_line_naming_the_key(tmp_path: Path) -> None:
    config = tmp_path / "hookd.toml"
    config.write_text('[delivery]\nlease_seconds = 10.0\n[server]\nlisten = "nowhere"\n')
    env = clean_env(HOOKD_DATABASE_PATH=str(tmp_path / "hookd.db"))
    line = _serve_fails(env, "--config", str(config))
    assert "server.listen" in line
    config.write_text("[delivery]\nlease_seconds = 10.0\n")
    line = _serve_fails(env, "--config", str(config))
    assert "delivery.lease_seconds" in line
    config.write_text('[logging]\nlevel = "loud"\ncolour = true\n')
    assert "logging.colour" in _serve_fails(env, "--config", str(config))
    # HOOKD_CONFIG names the file just as --config does.
    assert "logging.colour" in _serve_fails({**env, "HOOKD_CONFIG": str(config)})


def test_the_client_key_chooses_the_senders_transport() -> None:
    from hookd.sender import Sender
    from hookd.sender.aio import AiohttpClient
    from hookd.sender.h1client import H1Client

    default = Sender.for_delivery(load_config(env={}).delivery)
    assert isinstance(default.transport, H1Client)
    chosen = Sender.for_delivery(load_config(env={"HOOKD_DELIVERY_CLIENT": "aiohttp"}).delivery)
    assert isinstance(chosen.transport, AiohttpClient)
