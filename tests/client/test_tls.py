"""TLS, and the own client on uvloop (whose transports are not asyncio's)."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from hookd.policy import ErrorKind
from hookd.sender import Sender
from tests.client.conftest import (
    DROP,
    LOOPBACK,
    Reply,
    Server,
    post,
)
from tests.hardening.conftest import ScriptedResolver

# -- TLS ------------------------------------------------------------------------------


def _self_signed(where: Path, *extra: str) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    cert, key = where / "cert.pem", where / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2",
            "-subj", "/CN=receiver.test", *extra,
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return _self_signed(
        tmp_path_factory.mktemp("tls"),
        "-addext",
        "subjectAltName=DNS:receiver.test,IP:127.0.0.1",
    )


@pytest.fixture(scope="module")
def cn_only_certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The name in the subject's CN alone, no subjectAltName."""
    cert, key = _self_signed(tmp_path_factory.mktemp("tls-cn"))
    text = subprocess.run(
        ["openssl", "x509", "-in", str(cert), "-noout", "-text"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert "Subject Alternative Name" not in text
    return cert, key


async def _tls_server(certificate: tuple[Path, Path]) -> tuple[Server, list[str]]:
    cert, key = certificate
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    names: list[str] = []

    def sni(sslobj: ssl.SSLObject, name: str | None, ctx: ssl.SSLContext) -> None:
        names.append(name or "")

    context.sni_callback = sni  # type: ignore[assignment]
    s = Server()
    await s.start(ssl=context)
    return s, names


@pytest.fixture
async def tls_server(certificate: tuple[Path, Path]) -> AsyncIterator[tuple[Server, list[str]]]:
    s, names = await _tls_server(certificate)
    yield s, names
    await s.close()


async def test_https_refuses_a_certificate_that_names_the_host_only_in_its_cn(
    cn_only_certificate: tuple[Path, Path], make_sender: Callable[..., Awaitable[Sender]]
) -> None:
    """As browsers do: the subject's CN is not where a certificate names its host."""
    server, _ = await _tls_server(cn_only_certificate)
    try:
        trusting = ssl.create_default_context(cafile=str(cn_only_certificate[0]))
        resolver = ScriptedResolver({"receiver.test": ["127.0.0.1"]})
        sender = await make_sender(resolver=resolver, ssl_context=trusting)
        result = await post(sender, f"https://receiver.test:{server.port}/hook")
        assert result.error is ErrorKind.CONNECT, result
        assert "certificate verify failed" in (result.error_text or ""), result
        assert server.requests == []
    finally:
        await server.close()


async def test_https_verifies_and_keeps_alive(
    tls_server: tuple[Server, list[str]],
    certificate: tuple[Path, Path],
    make_sender: Callable[..., Awaitable[Sender]],
) -> None:
    server, names = tls_server
    trusting = ssl.create_default_context(cafile=str(certificate[0]))
    resolver = ScriptedResolver({"receiver.test": ["127.0.0.1"]})
    sender = await make_sender(resolver=resolver, ssl_context=trusting)
    for _ in range(3):
        result = await post(sender, f"https://receiver.test:{server.port}/hook")
        assert (result.status_code, result.body) == (200, "ok"), result
    assert (server.connections, len(server.requests)) == (1, 3)
    assert names == ["receiver.test"], "SNI is the URL's host"
    assert b"\r\nHost: receiver.test:%d\r\n" % server.port in server.requests[0]


async def test_https_refuses_an_untrusted_certificate(
    tls_server: tuple[Server, list[str]], make_sender: Callable[..., Awaitable[Sender]]
) -> None:
    server, _ = tls_server
    sender = await make_sender()  # the default context: the system's CAs
    result = await post(sender, f"https://127.0.0.1:{server.port}/hook")
    assert result.error is ErrorKind.CONNECT, result
    assert "certificate verify failed" in (result.error_text or ""), result
    assert server.requests == []


async def test_https_refuses_a_certificate_for_another_name(
    tls_server: tuple[Server, list[str]],
    certificate: tuple[Path, Path],
    make_sender: Callable[..., Awaitable[Sender]],
) -> None:
    server, _ = tls_server
    trusting = ssl.create_default_context(cafile=str(certificate[0]))
    resolver = ScriptedResolver({"impostor.test": ["127.0.0.1"]})
    sender = await make_sender(resolver=resolver, ssl_context=trusting)
    result = await post(sender, f"https://impostor.test:{server.port}/hook")
    assert result.error is ErrorKind.CONNECT, result
    assert "certificate" in (result.error_text or "").lower() or "mismatch" in (
        result.error_text or ""
    ), result
    assert server.requests == []


# -- uvloop ---------------------------------------------------------------------------


def test_the_client_runs_on_uvloop(certificate: tuple[Path, Path]) -> None:
    """uvloop's transports are not asyncio.Transport subclasses; the client must not care."""
    uvloop = pytest.importorskip("uvloop")

    async def scenario() -> None:
        plain, tls = Server(), Server()
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*certificate)
        await plain.start()
        await tls.start(ssl=context)
        resolver = ScriptedResolver({"receiver.test": ["127.0.0.1"]})
        trusting = ssl.create_default_context(cafile=str(certificate[0]))
        sender = Sender(LOOPBACK, resolver=resolver, ssl_context=trusting)
        await sender.start()
        try:
            plain.script = [Reply(), Reply(), DROP]
            for _ in range(3):  # the third is dropped on a reused connection and retried
                assert (await post(sender, plain.url())).status_code == 200
            assert (plain.connections, len(plain.requests)) == (2, 4)
            plain.default = Reply(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\npar", hang=True)
            result = await post(sender, plain.url(), timeout_ms=150)
            assert (result.status_code, result.error, result.body) == (
                200,
                ErrorKind.TIMEOUT,
                "par",
            )
            result = await post(sender, "http://nowhere.example/", timeout_ms=100)
            assert result.error is ErrorKind.CONNECT
            for _ in range(2):
                result = await post(sender, f"https://receiver.test:{tls.port}/")
                assert result.status_code == 200, result
            assert tls.connections == 1
        finally:
            await sender.close()
            await plain.close()
            await tls.close()

    loop = uvloop.new_event_loop()
    try:
        loop.run_until_complete(scenario())
    finally:
        loop.close()
