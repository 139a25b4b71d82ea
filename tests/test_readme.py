"""The README: its commands are the ones CI runs, it stays short, and its links stay inside."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks.webhooks import WebhookVerificationError

from hookd.sender.signing import signature_headers

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
README_MAX_BYTES = 12 * 1024

# Everything a user reads: each of these files must link only inside the repository.
USER_DOCS = [
    README,
    ROOT / "CHANGELOG.md",
    ROOT / "bench" / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
]

FENCE = re.compile(r"^(```|~~~)")
INLINE_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_LINK = re.compile(r"^\s*\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$")
INLINE_CODE = re.compile(r"`+[^`]*`+")
SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)


def _command_after(marker: str, text: str) -> str:
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if marker in line:
            return next(line for line in lines[i + 1 :] if line.strip()).strip()
    raise AssertionError(f"{marker!r} not found")


def _prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks, with inline code removed."""
    out: list[str] = []
    in_fence = False
    for line in text.splitlines():
        if FENCE.match(line.strip()):
            in_fence = not in_fence
            continue
        if not in_fence:
            out.append(INLINE_CODE.sub("", line))
    return out


def links(path: Path) -> list[str]:
    found: list[str] = []
    for line in _prose_lines(path.read_text(encoding="utf-8")):
        found += INLINE_LINK.findall(line)
        if m := REFERENCE_LINK.match(line):
            found.append(m[1])
    return found


def anchors(path: Path) -> set[str]:
    """GitHub's ids for the headings of a Markdown file."""
    ids: set[str] = set()
    for line in _prose_lines(path.read_text(encoding="utf-8").replace("`", "")):
        if m := re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line):
            slug = re.sub(r"[^\w\- ]", "", m[1].strip().lower()).replace(" ", "-")
            ids.add(slug)
    return ids


def sections(text: str) -> dict[str, list[str]]:
    """Heading line -> the lines under it, up to the next heading (code blocks included)."""
    out: dict[str, list[str]] = {}
    current: list[str] | None = None
    in_fence = False
    for line in text.splitlines():
        if FENCE.match(line.strip()):
            in_fence = not in_fence
        elif not in_fence and line.startswith("#"):
            current = out.setdefault(line.strip(), [])
            continue
        if current is not None:
            current.append(line)
    return out


def code_blocks(lines: list[str]) -> list[tuple[str, str]]:
    """(info string, body) of each fenced block in ``lines``."""
    blocks: list[tuple[str, str]] = []
    info: str | None = None
    body: list[str] = []
    for line in lines:
        stripped = line.strip()
        if FENCE.match(stripped):
            if info is None:
                info, body = stripped[3:].strip(), []
            else:
                blocks.append((info, "\n".join(body)))
                info = None
            continue
        if info is not None:
            body.append(line)
    return blocks


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    readme = README.read_text()
    ci_command = _command_after("# README test command:", ci)
    assert ci_command in readme, "README and .ci/run disagree on the test command"
    assert "pytest" in ci_command and "mypy src" in ci_command and "ruff check" in ci_command


def test_readme_stays_within_12_kib() -> None:
    size = len(README.read_bytes())
    assert size <= README_MAX_BYTES, f"README.md is {size} bytes; details belong in docs/"


@pytest.mark.parametrize("doc", USER_DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_resolves_inside_the_repository(doc: Path) -> None:
    found = links(doc)
    assert found or doc.name == "CHANGELOG.md", f"{doc}: no links found: is the parser blind?"
    for target in found:
        leaves = bool(SCHEME.match(target)) or target.startswith("//")
        assert not leaves, f"{doc.name}: {target} leaves the repository (the docs stand alone)"
        path_part, _, fragment = target.partition("#")
        resolved = (doc.parent / path_part).resolve() if path_part else doc
        assert resolved.is_relative_to(ROOT), f"{doc.name}: {target} points outside the repository"
        assert resolved.exists(), f"{doc.name}: {target} does not exist"
        if fragment and resolved.suffix == ".md":
            assert fragment in anchors(resolved), f"{doc.name}: {target}: no such heading"


def test_the_readme_links_every_docs_page() -> None:
    linked = {(ROOT / t.partition("#")[0]).resolve() for t in links(README)}
    for page in sorted((ROOT / "docs").glob("*.md")):
        assert page.resolve() in linked, f"README does not link {page.relative_to(ROOT)}"


@pytest.mark.parametrize("heading", ["### Docker", "### systemd"])
def test_service_sections_hold_exactly_one_sh_block(heading: str) -> None:
    # Other tests extract and run these blocks: keep one `sh` block under each heading.
    section = sections(README.read_text())
    assert heading in section, f"README lost its {heading!r} heading"
    blocks = code_blocks(section[heading])
    assert [info for info, _ in blocks] == ["sh"], f"{heading}: expected one ```sh block"
    assert blocks[0][1].strip(), f"{heading}: the sh block is empty"


def _readme_verifier() -> dict[str, Any]:
    (block,) = [
        body
        for info, body in code_blocks(sections(README.read_text())["## Verifying signatures"])
        if info == "python"
    ]
    namespace: dict[str, Any] = {}
    exec(compile(block, "README.md: Verifying signatures", "exec"), namespace)
    return namespace


@pytest.mark.parametrize(
    "secrets",
    [
        ["a-plain-secret-0001"],
        ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"],
        ["new-secret-after-rotation", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"],
    ],
    ids=["plain", "whsec", "rotation"],
)
def test_the_readme_snippet_verifies_what_hookd_signs(secrets: list[str]) -> None:
    verifier = _readme_verifier()
    body = b'{"id":"6b0efe48570a186ff5b076d3","type":"email.replied","data":{"to":"a@b.c"}}'
    headers = signature_headers("6b0efe48570a186ff5b076d3", int(time.time()), body, secrets)
    for secret in secrets:  # during a rotation, a receiver holding either secret verifies
        assert verifier["verify_hex"](secret, body, headers["X-Webhook-Signature"])
        verifier["verify_standard"](secret, body, headers)
    tampered = body.replace(b"a@b.c", b"x@b.c")
    assert not verifier["verify_hex"](secrets[0], tampered, headers["X-Webhook-Signature"])
    assert not verifier["verify_hex"]("another-secret", body, headers["X-Webhook-Signature"])
    with pytest.raises(WebhookVerificationError):
        verifier["verify_standard"](secrets[0], tampered, headers)
    stale = signature_headers("6b0efe48570a186ff5b076d3", int(time.time()) - 3600, body, secrets)
    with pytest.raises(WebhookVerificationError):
        verifier["verify_standard"](secrets[0], body, stale)
