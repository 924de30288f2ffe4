"""Kernel TCP loopback baselines: the standalone scripts on plain Python sockets.

* ``bulk/kernel/<size>``: bench/bulk.py, client writes `size`-byte chunks for `duration` s to a
  server that reads (1 MiB buffer) and discards; the receiver's figure is reported.
* ``rtt/kernel/<size>B``: bench/pingpong.py, blocking echo ping-pong, `rtt_rounds` round trips.

Server and client are separate processes on 127.0.0.1.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from typing import Any

from bench.procs import run_pair
from bench.registry import BULK_SIZES, RTT_SIZE, Config, Record, bind_case, register, size_label


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


def run_script(
    cfg: Config,
    name: str,
    script: str,
    client_args: list[str],
    *,
    timeout: float,
    host: str = "127.0.0.1",
    port: int | None = None,
    bind: str | None = None,
    server_env: Mapping[str, str] | None = None,
    client_env: Mapping[str, str] | None = None,
    server_module: str | None = None,
    client_module: str | None = None,
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """``bench/SCRIPT server PORT BIND`` + ``bench/SCRIPT client HOST PORT CLIENT_ARGS...``
    (`procs.run_pair`): `bind` is the server's address (default `host`), `port` a free kernel
    port by default; the rest goes to `run_pair`.  Returns (client record, server record)."""
    port = free_port() if port is None else port
    return run_pair(
        name,
        script,
        server_args=[str(port), bind or host],
        client_args=[host, str(port), *client_args],
        workdir=cfg.workdir,
        timeout=timeout,
        server_env=server_env,
        client_env=client_env,
        server_module=server_module,
        client_module=client_module,
    )


def run_bulk(cfg: Config, name: str, size: int, **where: Any) -> Record:
    """bench/bulk.py server + client (`where`: `run_script`'s `host`, `port`, `bind`,
    `server_env`, ...); the receiver's figures are the result (`bulk_record`)."""
    args = [str(cfg.duration), str(size)]
    client, server = run_script(cfg, name, "bulk.py", args, timeout=cfg.bulk_timeout(), **where)
    return bulk_record(client, server)


def run_rtt(cfg: Config, name: str, *, size: int = RTT_SIZE, **where: Any) -> Record:
    """bench/pingpong.py server + client (`where` as for `run_bulk`); the client's
    percentiles are the result."""
    args = [str(cfg.rtt_rounds), str(size)]
    client, server = run_script(cfg, name, "pingpong.py", args, timeout=cfg.rtt_timeout(), **where)
    rec: Record = dict(client)
    if server is None:
        rec["server_killed"] = True
        rec["note"] = "the server printed no result and was killed (judged by the client)"
    elif server.get("killed"):
        rec["server_killed"] = True
    return rec


for _size in BULK_SIZES:
    register(
        f"bulk/kernel/{size_label(_size)}",
        bind_case(run_bulk, f"bulk-kernel-{size_label(_size)}", _size),
    )
register(f"rtt/kernel/{size_label(RTT_SIZE)}", bind_case(run_rtt, "rtt-kernel"))
