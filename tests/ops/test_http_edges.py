"""What ``hookd serve`` answers and logs when HTTP itself goes wrong.

Raw sockets against the real daemon process, whose stderr is the log under
test: malformed requests get the API's JSON envelope and one log line that
quotes nothing of them (a webhook secret in such a request's body must appear
nowhere), and a client that hangs up mid-body is one quiet debug line.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from typing import Any

from hookd.api.listener import MALFORMED_MESSAGE
from tests.ops.support import SECRET, Serve, create_key, wait_until

MARKER = "X-Quoted-Marker"
BODY = json.dumps(
    {"name": "n", "url": "https://a.example.com/", "events": ["*"], "secret": SECRET}
).encode()


def _exchange(port: int, request: bytes, *, close_after_send: bool = False) -> bytes:
    """Send ``request``; everything the server writes until it closes (or 5 s of silence)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        if close_after_send:
            return b""
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except TimeoutError:
            pass
        return received


def _with_body(head: bytes) -> bytes:
    return head.replace(b"{n}", str(len(BODY)).encode()) + BODY


# Each refused by aiohttp's parser before any hookd code runs, each carrying the secret.
MALFORMED = {
    "bare LF line ends": _with_body(
        b"POST /v1/webhooks HTTP/1.1\nHost: h\nX-Quoted-Marker: 1\nContent-Length: {n}\n\n"
    ),
    "control byte in a header": _with_body(
        b"POST /v1/webhooks HTTP/1.1\r\nHost: h\r\nX-Quoted-Marker: a\x01b\r\n"
        b"Content-Length: {n}\r\n\r\n"
    ),
    "Content-Length with Transfer-Encoding": _with_body(
        b"POST /v1/webhooks HTTP/1.1\r\nHost: h\r\nX-Quoted-Marker: 1\r\nContent-Length: {n}\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    ),
    "bad chunk size": b"POST /v1/webhooks HTTP/1.1\r\nHost: h\r\nX-Quoted-Marker: 1\r\n"
    b"Transfer-Encoding: chunked\r\n\r\nZZ\r\n" + BODY + b"\r\n0\r\n\r\n",
    "not HTTP at all": b"\x16\x03\x01" + BODY,
    "a method with a space": b"PO ST /v1/webhooks HTTP/1.1\r\nHost: h\r\n\r\n" + BODY,
    "a header line over 8 KiB": b"POST /v1/webhooks HTTP/1.1\r\nHost: h\r\nX-Quoted-Marker: "
    + b"m" * 9000
    + b"\r\n\r\n"
    + BODY,
}


def _port(daemon: Serve) -> int:
    return int(daemon.listen[0].rsplit(":", 1)[1])


def _quiet(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Records about the requests under test (the daemon's own lifecycle lines aside)."""
    lifecycle = ("hookd.", "scheduler.", "metrics.", "retention.")
    return [r for r in records if not str(r.get("event", "")).startswith(lifecycle)]


def test_malformed_requests_get_the_envelope_and_one_line_that_quotes_nothing(
    serve: Callable[..., Serve],
) -> None:
    daemon = serve(HOOKD_LOGGING_LEVEL="debug")
    for name, request in MALFORMED.items():
        answer = _exchange(_port(daemon), request)
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.split(b" ", 2)[1] == b"400", (name, answer)
        assert b"content-type: application/json" in head.lower(), (name, head)
        assert json.loads(body) == {
            "error": "Bad Request",
            "message": MALFORMED_MESSAGE,
            "code": 400,
        }, name
        assert SECRET.encode() not in answer and MARKER.encode() not in answer, name

    wait_until(lambda: len(daemon.events("api.malformed_request")) >= len(MALFORMED))
    time.sleep(0.3)  # anything logged late about those connections
    assert daemon.stop() == 0
    records = _quiet(daemon.records())
    assert [r["event"] for r in records] == ["api.malformed_request"] * len(MALFORMED), records
    for record in records:
        assert record["level"] == "info" and record["status"] == 400
        assert set(record) == {"event", "level", "timestamp", "status", "error", "peer"}
    assert SECRET not in daemon.output and MARKER not in daemon.output


def test_undecodable_bodies_and_vanished_clients_are_quiet(
    serve: Callable[..., Serve], db: Any
) -> None:
    daemon = serve(HOOKD_LOGGING_LEVEL="debug")
    key = create_key(db)
    port = _port(daemon)
    head = (
        "POST /v1/events HTTP/1.1\r\nHost: h\r\nConnection: close\r\nX-Api-Key: {key}\r\n"
        "Content-Type: application/json\r\n{extra}Content-Length: {n}\r\n\r\n"
    )
    for coding in ("gzip", "deflate"):
        garbage = b"0123456789"
        answer = _exchange(
            port,
            head.format(key=key, extra=f"Content-Encoding: {coding}\r\n", n=len(garbage)).encode()
            + garbage,
        )
        assert answer.startswith(b"HTTP/1.1 400 "), answer
        body = json.loads(answer.partition(b"\r\n\r\n")[2])
        assert body["message"] == f"Content-Encoding: the body is not valid {coding} data"

    # Headers and half a body, then the client hangs up.
    _exchange(
        port,
        head.format(key=key, extra="", n=1000).encode() + b'{"type": "t", "data": ',
        close_after_send=True,
    )
    wait_until(lambda: bool(daemon.events("api.client_disconnected")))
    time.sleep(0.3)
    assert daemon.stop() == 0
    records = _quiet(daemon.records())
    assert [(r["event"], r["level"]) for r in records] == [("api.client_disconnected", "debug")]
