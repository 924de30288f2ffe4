"""Two-way stream checks, held against what trio's ``check_two_way_stream`` and
``check_half_closeable_stream`` ask of a stream: both directions at once with random chunk
sizes, either side speaking first, a half-close answered, and a clogged stream pushing back.

Every payload is seeded (`pattern`), so a failure reproduces, and a mismatch names the
direction and the first byte offset that differs (`expect_same`).
"""

from __future__ import annotations

import errno
import random
import socket
import time
from collections.abc import Callable
from typing import Any

from ...config import VclConfig
from ..streams import CheckedThread, recv_exactly
from .stacks import Stack, pair

SEED = 20261205  # any fixed value: the same bytes and chunk sizes on every run
FIFO_SIZE = VclConfig().rx_fifo_size  # what pyvcl's apps get unless configured otherwise
EOF_WAIT = 3.0  # seconds to wait for an EOF that should come at once
THREAD_LIMIT = 60.0  # seconds any side of a check may take before it counts as hung


def pattern(seed: int, size: int) -> bytes:
    """``size`` pseudo-random bytes, the same for the same ``seed``."""
    return random.Random(seed).randbytes(size)


def expect_same(got: bytes, sent: bytes, what: str) -> None:
    """Fail, naming ``what`` (the direction) and the first differing offset, unless equal."""
    if got == sent:
        return
    common, step = min(len(got), len(sent)), 1 << 16
    block = next((b for b in range(0, common, step) if got[b : b + step] != sent[b : b + step]), 0)
    first = next((i for i in range(block, common) if got[i] != sent[i]), None)
    if first is not None:
        raise AssertionError(
            f"{what}: byte {first} of {len(sent)} differs "
            f"(received {got[first]:#04x}, sent {sent[first]:#04x})"
        )
    raise AssertionError(f"{what}: received {len(got)} bytes, sent {len(sent)} (prefix equal)")


def chunk_sizes(seed: int, count: int = 200) -> list[int]:
    """Sizes for sends or receives: 1 byte and more than a fifo first, then a seeded mix of
    tiny, small, medium and (rarely) larger-than-a-fifo sizes."""
    rng = random.Random(seed)
    ranges = [(1, 16), (17, 4096), (4097, 1 << 16), (FIFO_SIZE + 1, FIFO_SIZE * 3 // 2)]
    weights = [40, 30, 27, 3]
    sizes = [1, FIFO_SIZE + FIFO_SIZE // 4]
    for low, high in rng.choices(ranges, weights, k=count - len(sizes)):
        sizes.append(rng.randint(low, high))
    return sizes


def send_in_chunks(sock: Any, data: bytes, sizes: list[int]) -> None:
    """``sendall`` ``data`` in pieces of ``sizes`` (cycled), so each size is one call."""
    view, offset, i = memoryview(data), 0, 0
    while offset < len(data):
        size = sizes[i % len(sizes)]
        sock.sendall(view[offset : offset + size])
        offset, i = offset + size, i + 1


def recv_in_chunks(sock: Any, total: int, sizes: list[int], what: str) -> bytes:
    """``total`` bytes read with ``recv(n)`` for each ``n`` of ``sizes`` (cycled)."""
    buf, i = bytearray(), 0
    while len(buf) < total:
        got = sock.recv(min(sizes[i % len(sizes)], total - len(buf)))
        if not got:
            raise AssertionError(f"{what}: EOF after {len(buf)} of {total} bytes")
        buf += got
        i += 1
    return bytes(buf)


def recv_to_eof(sock: Any, what: str) -> bytes:
    """Everything until EOF, which must come within `EOF_WAIT` seconds of the last byte."""
    sock.settimeout(EOF_WAIT)
    buf = bytearray()
    try:
        while chunk := sock.recv(1 << 16):
            buf += chunk
    except TimeoutError:
        raise AssertionError(
            f"{what}: no EOF within {EOF_WAIT:g} s ({len(buf)} bytes came before)"
        ) from None
    return bytes(buf)


def results_of(threads: list[CheckedThread], limit: float = THREAD_LIMIT) -> list[Any]:
    """Each thread's result, raising the first error as soon as it happens (a side that
    failed leaves the others waiting on it: its error is the cause to show)."""
    deadline = time.monotonic() + limit
    while any(t.is_alive() for t in threads) and time.monotonic() < deadline:
        for t in threads:
            if not t.is_alive():
                t.result(0)  # raises what it raised
        time.sleep(0.02)
    return [t.result(0) for t in threads]


def check_duplex_random_chunks(stack: Stack) -> None:
    """Both sides send and receive at once, with seeded random sizes on every call (1 byte,
    larger than a fifo, and between); each direction arrives intact."""
    with pair(stack) as (_, cli, conn):
        for s in (cli, conn):
            s.settimeout(THREAD_LIMIT)
        directions = [
            ("connecting -> accepting", cli, conn),
            ("accepting -> connecting", conn, cli),
        ]
        sent, threads = [], []
        for n, (what, src, dst) in enumerate(directions):
            sizes = chunk_sizes(SEED + 10 * n)
            data = pattern(SEED + 10 * n + 1, sum(sizes))
            sent.append(data)
            # The receive sizes differ from the send sizes, so reads straddle sends.
            threads.append(CheckedThread(send_in_chunks, src, data, sizes, name=f"{what}: send"))
            recv_sizes = chunk_sizes(SEED + 10 * n + 2)
            threads.append(
                CheckedThread(
                    recv_in_chunks, dst, len(data), recv_sizes, what, name=f"{what}: recv"
                )
            )
        results = results_of(threads)
        for (what, _, _), data, got in zip(directions, sent, results[1::2], strict=True):
            expect_same(got, data, what)


def _request_reply(speaker: Any, answerer: Any, roles: str) -> None:
    """``speaker`` sends more than a fifo; ``answerer`` reads it all and replies; the
    speaker reads the reply and closes; the answerer then reads EOF."""
    request, reply = pattern(SEED + 20, FIFO_SIZE + 4321), pattern(SEED + 21, 777)
    with CheckedThread(speaker.sendall, request, name=f"{roles}: request", timeout=THREAD_LIMIT):
        expect_same(recv_exactly(answerer, len(request)), request, f"{roles}: the request")
    answerer.sendall(reply)
    expect_same(recv_exactly(speaker, len(reply)), reply, f"{roles}: the reply")
    speaker.close()
    assert recv_to_eof(answerer, f"{roles}: after the speaker's close") == b"", (
        f"{roles}: bytes after the reply"
    )


def check_flipped_roles(stack: Stack) -> None:
    """The protocol's roles need not follow the connection's: the accepting side speaks
    first and closes, the connecting side answers and sees EOF."""
    with pair(stack) as (_, cli, conn):
        _request_reply(conn, cli, "the accepting side speaks, the connecting side answers")
    with pair(stack) as (_, cli, conn):  # and the usual way, for comparison
        _request_reply(cli, conn, "the connecting side speaks, the accepting side answers")


def _half_close_then_reply(closer: Any, replier: Any, roles: str) -> None:
    request, reply = pattern(SEED + 30, 100_000), pattern(SEED + 31, FIFO_SIZE + 999)
    closer.sendall(request)
    closer.shutdown(socket.SHUT_WR)
    expect_same(recv_to_eof(replier, f"{roles}: the half-close"), request, f"{roles}: request")
    assert replier.recv(10) == b"", f"{roles}: EOF did not stay EOF"
    with CheckedThread(replier.sendall, reply, name=f"{roles}: reply", timeout=THREAD_LIMIT):
        expect_same(recv_exactly(closer, len(reply)), reply, f"{roles}: reply")
    replier.close()
    assert recv_to_eof(closer, f"{roles}: after the reply") == b"", f"{roles}: bytes after"


def check_half_close_then_reply(stack: Stack) -> None:
    """``shutdown(SHUT_WR)`` ends one direction only: the peer reads the data, then EOF,
    then replies over the direction still open -- from either side."""
    with pair(stack) as (_, cli, conn):
        _half_close_then_reply(cli, conn, "the connecting side half-closes")
    with pair(stack) as (_, cli, conn):
        _half_close_then_reply(conn, cli, "the accepting side half-closes")


CLOG_PIECE = 1 << 16
CLOG_LIMIT = 64 << 20  # no stack buffers this much: more accepted means no back-pressure
CLOG_QUIET = 0.5  # seconds of EAGAIN (no room at all) that make a stream clogged
CLOG_BLOCKED = 0.5  # seconds a blocking send must stay blocked while nobody reads


def _fill(writer: Any, view: memoryview, what: str) -> int:
    """Send from ``view`` without blocking until the stream stays full (EAGAIN for
    `CLOG_QUIET` seconds); how many bytes it took."""
    writer.setblocking(False)
    sent, quiet_since = 0, None
    deadline = time.monotonic() + 30
    while True:
        assert time.monotonic() < deadline, f"{what}: still filling after 30 s ({sent} bytes)"
        assert sent < CLOG_LIMIT, f"{what}: {sent} bytes accepted without EAGAIN"
        try:
            sent += writer.send(view[sent : sent + CLOG_PIECE])
            quiet_since = None
        except BlockingIOError as e:
            assert e.errno in (errno.EAGAIN, errno.EWOULDBLOCK), f"{what}: {e}"
            now = time.monotonic()
            if quiet_since is None:
                quiet_since = now
            elif now - quiet_since > CLOG_QUIET:
                return sent
            time.sleep(0.02)  # (VPP's TCP frees room in small steps for a while)


def _clog(writer: Any, reader: Any, what: str, seed: int) -> None:
    data = pattern(seed, CLOG_LIMIT + CLOG_PIECE * 8)
    view = memoryview(data)
    sent = _fill(writer, view, what)
    assert sent > 0, f"{what}: not one byte could be sent"
    more = CLOG_PIECE * 4
    writer.settimeout(THREAD_LIMIT)
    reader.settimeout(THREAD_LIMIT)
    blocked = CheckedThread(writer.sendall, view[sent : sent + more], name=f"{what}: sendall")
    with blocked:
        time.sleep(CLOG_BLOCKED)
        assert blocked.is_alive(), (
            f"{what}: a blocking sendall of {more} bytes returned while the reader read "
            f"none of the {sent} already queued"
        )
        got = recv_exactly(reader, sent + more)
    expect_same(got, data[: sent + more], f"{what}, after the clog ({sent} bytes queued)")


def check_clogged_stream(stack: Stack) -> None:
    """Back-pressure, each way: while the reader reads nothing, a non-blocking writer ends
    with EAGAIN and a blocking one blocks; once the reader drains, every byte arrives
    intact."""
    with pair(stack) as (_, cli, conn):
        _clog(cli, conn, "connecting -> accepting", SEED + 40)
    with pair(stack) as (_, cli, conn):
        _clog(conn, cli, "accepting -> connecting", SEED + 41)


STREAM_CHECKS: list[Callable[[Stack], None]] = [
    check_duplex_random_chunks,
    check_flipped_roles,
    check_half_close_then_reply,
    check_clogged_stream,
]
