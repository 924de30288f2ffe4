"""Kernel TCP loopback baselines: the standalone scripts on plain Python sockets.

* ``bulk/kernel/<size>``: bench/bulk.py, client writes `size`-byte chunks for `duration` s to a
  server that reads (1 MiB buffer) and discards; the receiver's figure is reported.
* ``rtt/kernel/<size>B``: bench/pingpong.py, blocking echo ping-pong, `rtt_rounds` round trips.

Server and client are separate processes on 127.0.0.1.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator, Mapping
from typing import Any

from bench.procs import run_pair
from bench.registry import BULK_SIZES, RTT_SIZE, Config, Record, register, size_label


def free_port() -> int:
    """A kernel TCP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bulk_record(client: Mapping[str, Any], server: Mapping[str, Any] | None) -> Record:
    """The record of a bench/bulk.py run: the receiver's bytes/seconds/gbps when the server
    reported them, else the sender's (``measured_at`` says which)."""
    src = server if server is not None and server.get("bytes") else client
    rec: Record = {
        "gbps": src["gbps"],
        "bytes": src["bytes"],
        "seconds": src["seconds"],
        "chunk": client["chunk"],
        "writes": client["writes"],
        "measured_at": "receiver" if src is server else "sender",
        "sender_gbps": client["gbps"],
    }
    if server is not None and server.get("bytes") != client["bytes"]:
        rec["warning"] = f"server got {server.get('bytes')} bytes, client sent {client['bytes']}"
    if server is None:
        rec["warning"] = "the server printed no result (killed); sender-side figures"
    elif server.get("killed"):
        rec["server_killed"] = True
    return rec


def run_bulk(
    cfg: Config,
    name: str,
    size: int,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    bind: str | None = None,
    server_env: Mapping[str, str] | None = None,
    client_env: Mapping[str, str] | None = None,
    server_module: str | None = None,
    client_module: str | None = None,
) -> Record:
    """bench/bulk.py server + client; `bind` is the server's address (default `host`)."""
    port = free_port() if port is None else port
    client, server = run_pair(
        name,
        "bulk.py",
        server_args=[str(port), bind or host],
        client_args=[host, str(port), str(cfg.duration), str(size)],
        workdir=cfg.workdir,
        timeout=cfg.bulk_timeout(),
        server_env=server_env,
        client_env=client_env,
        server_module=server_module,
        client_module=client_module,
    )
    return bulk_record(client, server)


def run_rtt(
    cfg: Config,
    name: str,
    *,
    size: int = RTT_SIZE,
    host: str = "127.0.0.1",
    port: int | None = None,
    bind: str | None = None,
    server_env: Mapping[str, str] | None = None,
    client_env: Mapping[str, str] | None = None,
    server_module: str | None = None,
    client_module: str | None = None,
) -> Record:
    """bench/pingpong.py server + client; the client's percentiles are the result."""
    port = free_port() if port is None else port
    client, server = run_pair(
        name,
        "pingpong.py",
        server_args=[str(port), bind or host],
        client_args=[host, str(port), str(cfg.rtt_rounds), str(size)],
        workdir=cfg.workdir,
        timeout=cfg.rtt_timeout(),
        server_env=server_env,
        client_env=client_env,
        server_module=server_module,
        client_module=client_module,
    )
    rec: Record = dict(client)
    if server is None:
        rec["server_killed"] = True
        rec["note"] = "the server printed no result and was killed (judged by the client)"
    elif server.get("killed"):
        rec["server_killed"] = True
    return rec


def _bulk_case(size: int) -> Any:
    def fn(cfg: Config) -> Iterator[Record]:
        yield run_bulk(cfg, f"bulk-kernel-{size_label(size)}", size)

    return fn


def rtt_kernel(cfg: Config) -> Iterator[Record]:
    yield run_rtt(cfg, "rtt-kernel")


for _size in BULK_SIZES:
    register(f"bulk/kernel/{size_label(_size)}", _bulk_case(_size))
register(f"rtt/kernel/{size_label(RTT_SIZE)}", rtt_kernel)
