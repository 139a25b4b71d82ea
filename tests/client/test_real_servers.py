"""Both transports against real HTTP servers: Python's http.server, aiohttp's
web server, and Node's http module.

Each server echoes what it received, so a wrong body, a lost header or a
request split across two requests shows; the chunked and gzip answers come
from the servers' own code, not from canned bytes; Node closes idle
connections after 100 ms, so a request may meet a connection the server has
just closed, which must never lose the request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from aiohttp import web

from hookd.sender import CLIENTS, AddressPolicy, Sender
from tests.support.services import require_binary

LOOPBACK = AddressPolicy(["127.0.0.0/8"])
BODY = json.dumps({"id": "evt_1", "data": {"text": "caf\u00e9 " * 40}}).encode()
HEADERS = {"X-Webhook-Event": "real.server", "webhook-id": "msg_1"}


class _Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        body = self.rfile.read(length)
        answer = json.dumps(
            {"event": self.headers["X-Webhook-Event"], "length": len(body), "same": body == BODY}
        ).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def http_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    finally:
        server.shutdown()
        server.server_close()


async def _aiohttp_echo(request: web.Request) -> web.StreamResponse:
    body = await request.read()
    answer = {
        "event": request.headers["X-Webhook-Event"],
        "length": len(body),
        "same": body == BODY,
    }
    if request.path == "/chunked":
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        response.enable_compression(web.ContentCoding.gzip)
        await response.prepare(request)
        for piece in (
            b'{"event": "',
            answer["event"].encode(),
            b'", "length": ',
            str(len(body)).encode(),
        ):
            await response.write(piece)
        await response.write(b', "same": %s}' % (b"true" if answer["same"] else b"false"))
        await response.write_eof()
        return response
    return web.json_response(answer)


@contextlib.asynccontextmanager
async def aiohttp_server(path: str) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_post("/{tail:.*}", _aiohttp_echo)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}{path}"
    finally:
        await runner.cleanup()


NODE_SERVER = r"""
const http = require("http");
const server = http.createServer((req, res) => {
  const parts = [];
  req.on("data", (c) => parts.push(c));
  req.on("end", () => {
    const body = Buffer.concat(parts);
    // No Content-Length: Node answers chunked.
    res.writeHead(200, {"Content-Type": "application/json"});
    res.end(JSON.stringify({event: req.headers["x-webhook-event"], length: body.length,
                            same: body.toString("utf8") === process.env.EXPECTED}));
  });
});
server.keepAliveTimeout = 100;
server.listen(0, "127.0.0.1", () => console.log(server.address().port));
"""


@contextlib.asynccontextmanager
async def node_server() -> AsyncIterator[str]:
    node = require_binary("node", "nodejs")
    proc = await asyncio.create_subprocess_exec(
        node,
        "-e",
        NODE_SERVER,
        stdout=subprocess.PIPE,
        env={"EXPECTED": BODY.decode()},
    )
    try:
        assert proc.stdout is not None
        port = int(await asyncio.wait_for(proc.stdout.readline(), 10))
        yield f"http://127.0.0.1:{port}/hook"
    finally:
        proc.kill()
        await proc.wait()


@pytest.fixture(params=CLIENTS)
async def sender(request: pytest.FixtureRequest) -> AsyncIterator[Sender]:
    s = Sender(LOOPBACK, client=request.param)
    await s.start()
    yield s
    await s.close()


async def _deliver_thrice(sender: Sender, url: str, pause: float = 0.0) -> None:
    for _ in range(3):
        result = await sender.send(url, BODY, dict(HEADERS), 5000)
        assert (result.status_code, result.error) == (200, None), result
        assert result.body is not None
        assert json.loads(result.body) == {
            "event": "real.server",
            "length": len(BODY),
            "same": True,
        }, result.body
        await asyncio.sleep(pause)


async def test_python_http_server(sender: Sender) -> None:
    with http_server() as url:
        await _deliver_thrice(sender, url)


@pytest.mark.parametrize("path", ["/json", "/chunked"], ids=["content-length", "chunked-gzip"])
async def test_aiohttp_web_server(sender: Sender, path: str) -> None:
    async with aiohttp_server(path) as url:
        await _deliver_thrice(sender, url)


async def test_node_http_server_closing_idle_connections(sender: Sender) -> None:
    async with node_server() as url:
        # Some requests go out on connections Node is closing: none is lost.
        for pause in (0.0, 0.09, 0.11, 0.2):
            await _deliver_thrice(sender, url, pause)
