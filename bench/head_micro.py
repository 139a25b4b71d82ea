"""CPU per read of the delivery client's response parser when a head dribbles in.

``python -m bench.head_micro [--size 61440] [--repeat 5]``

A receiver can send a large response head one byte per TCP segment.  This
feeds such a head straight into ``sender.h1.H1Connection.data_received`` (no
sockets, no event loop turns) and prints the parser's CPU per read: over the
whole head, and over the last 1,000 reads (where a parser that searches the
whole buffer again on every read is slowest), beside the cost of the same
head arriving in one read.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

from hookd.sender.h1 import H1Connection


class _Transport:
    """The few transport methods the parser calls."""

    def write(self, data: bytes) -> None:
        pass

    def abort(self) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0


def pad_lines(size: int) -> bytes:
    """``size`` bytes of ``X-Pad-N: ppp...`` header lines of at most 1,000 bytes each."""
    lines = []
    i = 0
    while size > 0:
        line = b"X-Pad-%03d: " % i
        line += b"p" * max(0, min(1000, size) - len(line) - 2) + b"\r\n"
        lines.append(line)
        size -= len(line)
        i += 1
    return b"".join(lines)


def make_head(size: int) -> bytes:
    """A complete response (no body) whose head is ``size`` bytes long."""
    top = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n"
    return top + pad_lines(size - len(top) - 2) + b"\r\n"


def feed(response: bytes, piece: int, loop: asyncio.AbstractEventLoop) -> tuple[float, list[float]]:
    """CPU seconds to parse ``response`` arriving ``piece`` bytes a read; per-read times too."""
    conn = H1Connection(loop, set(), ("http", "x", 80))
    conn.connection_made(_Transport())  # type: ignore[arg-type]
    waiter = conn.start(b"", 8192)
    times: list[float] = []
    clock = time.process_time
    t0 = clock()
    for i in range(0, len(response), piece):
        t = time.perf_counter()
        conn.data_received(response[i : i + piece])
        times.append(time.perf_counter() - t)
    cpu = clock() - t0
    if not waiter.done() or conn.status != 200 or conn.error is not None:
        raise RuntimeError(f"the response was not parsed: {conn.error}")
    return cpu, times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=60 * 1024)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    head = make_head(args.size)
    loop = asyncio.new_event_loop()
    rows = []
    for r in range(args.repeat):
        whole, _ = feed(head, len(head), loop)
        bytewise, times = feed(head, 1, loop)
        row = {
            "one_read_us": whole * 1e6,
            "byte_by_byte_ms": bytewise * 1e3,
            "us_per_read_mean": bytewise / len(head) * 1e6,
            "us_per_read_last_1000": statistics.mean(times[-1000:]) * 1e6,
            "ratio": bytewise / whole if whole else float("inf"),
        }
        rows.append(row)
        print(
            f"run {r + 1}: one read {row['one_read_us']:.0f} us; byte by byte "
            f"{row['byte_by_byte_ms']:.0f} ms = {row['us_per_read_mean']:.2f} us/read "
            f"(last 1,000: {row['us_per_read_last_1000']:.2f} us/read), "
            f"ratio {row['ratio']:.0f}",
            flush=True,
        )
    loop.close()
    print(json.dumps({"size": len(head), "runs": rows}))


if __name__ == "__main__":
    main()
