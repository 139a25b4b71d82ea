"""Request bodies at the edges: the content codings a body may use, and the limit.

The decoding is a pure function, tested by table; then the same bodies go
over real HTTP to the API as the daemon serves it (``api.listener``).
"""

from __future__ import annotations

import gzip
import json
import zlib
from typing import Any

import pytest

from hookd.api.errors import ApiError
from hookd.api.inputs import decode_content
from tests.api.conftest import MAX_BODY_BYTES, Api

EVENT = json.dumps({"type": "edge.test", "data": {"n": 1}}).encode()


def _raw_deflate(data: bytes) -> bytes:
    packer = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return packer.compress(data) + packer.flush()


# -- the codings, as a pure function -----------------------------------------------------


@pytest.mark.parametrize(
    ("header", "body"),
    [
        ("", EVENT),
        ("identity", EVENT),
        ("gzip", gzip.compress(EVENT)),
        ("GZIP", gzip.compress(EVENT)),
        ("x-gzip", gzip.compress(EVENT)),
        ("identity, gzip", gzip.compress(EVENT)),
        # Two gzip members are one body, as gzip(1) reads them.
        ("gzip", gzip.compress(EVENT[:10]) + gzip.compress(EVENT[10:])),
        ("deflate", zlib.compress(EVENT)),
        # Some clients send deflate without its zlib wrapper.
        ("deflate", _raw_deflate(EVENT)),
    ],
)
def test_accepted_codings_decode_to_the_body(header: str, body: bytes) -> None:
    assert decode_content(body, header, MAX_BODY_BYTES) == EVENT


@pytest.mark.parametrize(
    ("header", "body", "status", "message"),
    [
        ("gzip", b"0123456789", 400, "Content-Encoding: the body is not valid gzip data"),
        ("deflate", b"0123456789", 400, "Content-Encoding: the body is not valid deflate data"),
        # Cut short, or followed by something that is not another member.
        ("gzip", gzip.compress(EVENT)[:-6], 400, "not valid gzip data"),
        ("gzip", gzip.compress(EVENT) + b"junk", 400, "not valid gzip data"),
        ("deflate", zlib.compress(EVENT) + b"junk", 400, "not valid deflate data"),
        ("br", b"\x0b\x02\x80", 415, "Content-Encoding: br is not supported"),
        ("zstd", b"\x28\xb5\x2f\xfd", 415, "Content-Encoding: zstd is not supported"),
        ("compress", b"x", 415, "Content-Encoding: compress is not supported"),
        ("gzip, gzip", gzip.compress(gzip.compress(EVENT)), 415, "gzip, gzip is not supported"),
    ],
)
def test_refused_codings_name_the_coding(
    header: str, body: bytes, status: int, message: str
) -> None:
    with pytest.raises(ApiError) as caught:
        decode_content(body, header, MAX_BODY_BYTES)
    assert caught.value.status == status
    assert message in caught.value.message


def test_the_limit_holds_for_the_decoded_bytes() -> None:
    exactly = b"x" * MAX_BODY_BYTES
    assert decode_content(gzip.compress(exactly), "gzip", MAX_BODY_BYTES) == exactly
    with pytest.raises(ApiError) as caught:
        decode_content(gzip.compress(exactly + b"x"), "gzip", MAX_BODY_BYTES)
    assert caught.value.status == 413 and "once decoded" in caught.value.message


# -- the same over HTTP ----------------------------------------------------------------


def _padded_event(size: int) -> bytes:
    """An event body of exactly ``size`` bytes."""
    shell = json.dumps({"type": "edge.test", "data": ""}).encode()
    body = json.dumps({"type": "edge.test", "data": "p" * (size - len(shell))}).encode()
    assert len(body) == size
    return body


async def test_compressed_bodies_are_accepted_or_refused_in_the_envelope(api: Api) -> None:
    key = await api.key("ws_edges")
    json_type = {"Content-Type": "application/json"}

    async def post(coding: str, body: bytes) -> Any:
        headers = {**json_type, "Content-Encoding": coding}
        return await api.call("POST", "/v1/events", key=key, data=body, headers=headers)

    accepted = await post("gzip", gzip.compress(EVENT))
    assert accepted.status == 202, accepted.body
    assert (await post("deflate", zlib.compress(EVENT))).status == 202
    # The whole limit, once decoded, and one byte more.
    assert (await post("gzip", gzip.compress(_padded_event(MAX_BODY_BYTES)))).status == 202
    bomb = await post("gzip", gzip.compress(_padded_event(MAX_BODY_BYTES + 1)))
    assert bomb.status == 413, bomb.body

    for coding, body, status in [
        ("gzip", b"0123456789", 400),
        ("deflate", b"0123456789", 400),
        ("br", b"0123456789", 415),
        ("zstd", b"0123456789", 415),
    ]:
        reply = await post(coding, body)
        assert reply.status == status, (coding, reply.raw)
        assert reply.headers["Content-Type"].startswith("application/json")
        assert set(reply.body) == {"error", "message", "code"}
        assert reply.body["code"] == status
        assert reply.body["message"].startswith("Content-Encoding: ")
        assert coding in reply.body["message"]
