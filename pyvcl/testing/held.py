"""A server holding an accepted connection it never reads, stopped: for looking from outside.

`pyvcl inspect PID` and its snapshots are tested (and its fixtures recorded) on a VCL server
that accepted a connection, got bytes it has not read, and is stopped (SIGSTOP) so that
nothing takes its events: the unread bytes stay in its rx fifo and VPP's IO event in its
queue.  `held_connection` sets that up against a `pyvcl.testing.vpp.VppInstance`, with the
server on pyvcl (``pyvcl.socket``) or on C VCL (the same script under LDP)::

    with held_connection(vpp, tmp_path, "ldp", port=18772, unread=54_321) as server:
        state = settled(server.pid, 54_321)   # pyvcl.procview's view, once the bytes are in
        ...

The client is a pyvcl app that connects, waits while the server is stopped, sends ``unread``
bytes of ``b"u"`` and stays connected.  Everything is killed on leaving the block.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .ldp import LdpPython, script

__all__ = ["HOLDER", "PUSHER", "held_connection", "settled"]

READY_S = 20.0

HOLDER = """
import sys, time
socket = __import__(sys.argv[1], fromlist=["socket"])
ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
ls.bind((sys.argv[2], int(sys.argv[3])))
ls.listen(4)
print("listening", flush=True)
conn, _ = ls.accept()
print("accepted", flush=True)
time.sleep(300)  # never reads
"""
"""The server: ``python hold.py MODULE HOST PORT`` (MODULE ``socket`` or ``pyvcl.socket``)."""

PUSHER = """
import sys, time
import pyvcl.socket as socket
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.connect((sys.argv[1], int(sys.argv[2])))
print("connected", flush=True)
time.sleep(1.0)  # the holder is stopped meanwhile
s.sendall(b"u" * int(sys.argv[3]))
print("sent", flush=True)
time.sleep(300)
"""
"""The client: ``python push.py HOST PORT N``."""


@contextmanager
def held_connection(
    vpp: Any,
    workdir: str | os.PathLike[str],
    holder: str,
    *,
    port: int,
    unread: int,
    host: str = "127.0.0.1",
    vcl_opts: dict[str, Any] | None = None,
) -> Iterator[LdpPython]:
    """The stopped server (``holder`` ``"pyvcl"`` or ``"ldp"``) once the client has sent
    ``unread`` bytes; cut-through unless ``vcl_opts`` (`VppInstance.vcl_conf` keywords) say
    otherwise.  The server is continued and killed on leaving."""
    if holder not in ("pyvcl", "ldp"):
        raise ValueError(f"holder must be 'pyvcl' or 'ldp', not {holder!r}")
    work = Path(workdir)
    conf = vpp.vcl_conf(work / "vcl.conf", **(vcl_opts or {"app_scope_global": False}))
    hold = script(work, "hold.py", HOLDER)
    push = script(work, "push.py", PUSHER)
    module = "pyvcl.socket" if holder == "pyvcl" else "socket"
    with LdpPython(vpp, conf, hold, module, host, str(port), ldpreload=holder == "ldp") as srv:
        srv.wait_line("listening", timeout=READY_S)
        with LdpPython(vpp, conf, push, host, str(port), str(unread), ldpreload=False) as cli:
            cli.wait_line("connected", timeout=READY_S)
            srv.wait_line("accepted", timeout=READY_S)
            os.kill(srv.pid, signal.SIGSTOP)  # nothing takes its events from now on
            try:
                cli.wait_line("sent", timeout=READY_S)
                yield srv
            finally:
                os.kill(srv.pid, signal.SIGCONT)


def settled(pid: int, unread: int, timeout: float = READY_S) -> dict[str, Any]:
    """`pyvcl.procview.describe_process` of ``pid`` once its rx fifo holds ``unread`` bytes
    (VPP moves them after the client's sendall returned: a few ms in cut-through), or the
    last look after ``timeout`` seconds."""
    from ..procview import describe_process

    deadline = time.monotonic() + timeout
    while True:
        state = describe_process(pid)
        rx = [f for f in state["fifos"] if f["role"] == "server_rx_fifo"]
        if (rx and rx[0]["unread"] == unread) or time.monotonic() > deadline:
            return state
        time.sleep(0.05)
