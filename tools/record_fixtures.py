"""Record the project's own fixtures: shared-memory snapshots and live traces of real apps.

    PYTHONPATH=. python3 tools/record_fixtures.py [--out DIR] [--topology ct|tcp] [NAME...]

(as root, or a user allowed to run VPP: it creates VPP loopbacks for the TCP topology; the
default DIR is tests/fixtures/vpp-v26.06).

Starts a private VPP (`pyvcl.testing.vpp.VppInstance`: found through ``PYVCL_VPP_PREFIX`` or
``vpp`` on PATH), runs small apps against it (VCL's ``event-queue-size 64``, so that the app's
queue takes 6 KB) and records, for cut-through (``ct-*``) and for VPP's TCP stack between two
app namespaces (``tcp-*``, `pyvcl.testing.hoststack.topology`):

- ``snapshots/NAME.{json,bin.gz}`` with `pyvcl.snapshot_record` (what ``pyvcl inspect PID
  --snapshot PATH`` writes) of a server that holds a connection without reading it, stopped
  by SIGSTOP so that nothing moves while it is copied: pyvcl or C VCL (a Python program under
  LDP), listening, with unread bytes, with a full rx fifo (and the pyvcl client blocked on the
  other end: the same cut-through fifo seen as its tx fifo), and after the peer closed;
- ``traces/NAME.jsonl``: live traces (``PYVCL_TRACE``, docs/traces.md) of ``pyvcl nc`` as
  client and server, with and without the mq eventfd, moving 4 KiB.

A snapshot's ``.bin`` is ~350 KB, nearly all of it VPP's worker queue (VPP refuses one shorter
than 2048 slots), zeros: the recorder stores it gzipped (``.bin.gz``, ~2 KB), which
`pyvcl.snapshot` reads as it reads a plain ``.bin``.  Names given on the command line (and
``--topology``) record only those fixtures.  Every run writes each file
anew: the sessions' handles, offsets and timings change from run to run, so the tests check
properties (tests/test_snapshots.py, tests/test_traces.py), never exact values.  Recorded
with VPP v26.06; the VPP version found is stored in each snapshot.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from pyvcl.procview import ProcessView, describe_process
from pyvcl.snapshot_record import record_snapshot
from pyvcl.testing.held import HOLDER  # the server that never reads
from pyvcl.testing.hoststack import topology
from pyvcl.testing.ldp import PYTHON, LdpPython, script
from pyvcl.testing.vpp import VppInstance

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "tests" / "fixtures" / "vpp-v26.06"
READY_S = 20.0
PORT = 18790
UNREAD = 123_457
FIFO_SIZE = 4_000_000  # vcl_conf's default rx and tx fifo size
EVENT_QUEUE_SIZE = 64  # the app's mq: 64 IO slots (18 B) and 16 ctrl slots (256 B)

PUSHER = """
import sys, time
import pyvcl.socket as socket
host, then = sys.argv[1], sys.argv[4]
port, n, piece = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[5])
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.connect((host, port))
print("connected", flush=True)
time.sleep(1.0)  # the holder is stopped meanwhile
data = bytes(range(256)) * (n // 256 + 1)
print("sending", flush=True)
for at in range(0, n, piece):  # small pieces grow the fifo chunk by chunk, as a stream does
    s.sendall(data[at : min(at + piece, n)])
print("sent", flush=True)
if then == "close":
    s.close()
    print("closed", flush=True)
time.sleep(300)
"""


class Recorder:
    """Runs the apps of one topology against ``vpp`` (``ct``: cut-through; ``tcp``: VPP's TCP
    stack between two app namespaces; `pyvcl.testing.hoststack.topology`)."""

    def __init__(self, vpp: VppInstance, out: Path, work: Path, topo: str) -> None:
        self.vpp, self.out, self.name = vpp, out, topo
        self.port = PORT + (100 if topo == "tcp" else 0)
        self.topo = topology(vpp, topo)
        self.host = self.topo.host
        self.conf = {
            (end, evfd): vpp.vcl_conf(
                work / f"{topo}-{end}-{evfd}.conf",
                **side.conf_opts,
                event_queue_size=EVENT_QUEUE_SIZE,
                use_mq_eventfd=evfd,
            )
            for end, side in (("server", self.topo.server), ("client", self.topo.client))
            for evfd in (True, False)
        }
        self.hold = script(work, "hold.py", HOLDER)
        self.push = script(work, "push.py", PUSHER)
        self.version = vpp.install.version().split(" built")[0]

    def snapshot(self, pid: int, name: str, note: str) -> None:
        with ProcessView(pid) as view:
            stem = record_snapshot(
                view,
                self.out / "snapshots" / f"{self.name}-{name}",
                note=f"{self.name}: {note}",
                vpp_version=self.version,
            )
        size = sum(f.stat().st_size for f in stem.parent.glob(stem.name + ".*"))
        print(f"  {stem.name}: {size} bytes", file=sys.stderr)

    def server(self, holder: str) -> LdpPython:
        self.port += 1
        module = "pyvcl.socket" if holder == "pyvcl" else "socket"
        return LdpPython(
            self.vpp,
            self.conf["server", True],
            self.hold,
            module,
            self.host,
            str(self.port),
            ldpreload=holder == "ldp",
        )

    @contextmanager
    def pair(
        self, holder: str, n: int, then: str, piece: int = 1 << 20
    ) -> Iterator[tuple[LdpPython, LdpPython]]:
        """A holder (pyvcl or ldp) listening, and a pyvcl pusher connected to it that sends
        ``n`` bytes once the holder is stopped, then closes (``then`` = "close") or waits."""
        with self.server(holder) as server:
            server.wait_line("listening", timeout=READY_S)
            args = (self.host, str(self.port), str(n), then, str(piece))
            with LdpPython(
                self.vpp, self.conf["client", True], self.push, *args, ldpreload=False
            ) as client:
                client.wait_line("connected", timeout=READY_S)
                server.wait_line("accepted", timeout=READY_S)
                os.kill(server.pid, signal.SIGSTOP)  # nothing takes its events from now on
                try:
                    yield server, client
                finally:
                    os.kill(server.pid, signal.SIGCONT)


def _settled(pid: int, unread: int) -> None:
    """Wait until VPP has moved the bytes sent into the holder's rx fifo."""
    deadline = time.monotonic() + READY_S
    while time.monotonic() < deadline:
        fifos = [f for f in describe_process(pid)["fifos"] if f["role"] == "server_rx_fifo"]
        if fifos and fifos[0]["unread"] >= unread:
            return
        time.sleep(0.05)
    raise TimeoutError(f"{unread} bytes never reached the rx fifo of process {pid}")


# -- the snapshots ------------------------------------------------------------------------------
def listening(r: Recorder) -> None:
    with r.server("pyvcl") as s:
        s.wait_line("listening", timeout=READY_S)
        os.kill(s.pid, signal.SIGSTOP)
        try:
            r.snapshot(s.pid, "pyvcl-server-listening", "pyvcl server listening, no session")
        finally:
            os.kill(s.pid, signal.SIGCONT)


def unread(holder: str) -> Callable[[Recorder], None]:
    def record(r: Recorder) -> None:
        with r.pair(holder, UNREAD, "wait") as (server, client):
            client.wait_line("sent", timeout=READY_S)
            _settled(server.pid, UNREAD)
            r.snapshot(
                server.pid,
                f"{holder}-server-unread",
                f"{holder} server stopped after accepting; {UNREAD} bytes unread in its rx "
                "fifo, their IO_RX event pending in its mq",
            )

    return record


def full(r: Recorder) -> None:
    with r.pair("pyvcl", FIFO_SIZE + 100_000, "wait", piece=16384) as (server, client):
        client.wait_line("sending", timeout=READY_S)
        _settled(server.pid, FIFO_SIZE)
        time.sleep(0.5)  # the client is blocked on the full fifo
        os.kill(client.pid, signal.SIGSTOP)
        try:
            r.snapshot(
                server.pid,
                "pyvcl-server-full",
                f"pyvcl server stopped after accepting; its rx fifo full ({FIFO_SIZE} bytes)",
            )
            r.snapshot(
                client.pid,
                "pyvcl-client-blocked",
                "pyvcl client blocked in sendall on a full fifo (in cut-through its tx fifo "
                "is the server's rx fifo)",
            )
        finally:
            os.kill(client.pid, signal.SIGCONT)


def closing(r: Recorder) -> None:
    with r.pair("pyvcl", 1000, "close") as (server, client):
        client.wait_line("closed", timeout=READY_S)
        _settled(server.pid, 1000)
        time.sleep(0.5)  # the DISCONNECTED event follows the bytes
        r.snapshot(
            server.pid,
            "pyvcl-server-closing",
            "pyvcl server stopped after accepting; the peer sent 1000 bytes and closed",
        )


# -- the traces ---------------------------------------------------------------------------------
def nc_pair(evfd: bool) -> Callable[[Recorder], None]:
    """``pyvcl nc -l`` and ``pyvcl nc`` moving 4 KiB, both traced."""

    def record(r: Recorder) -> None:
        r.port += 1
        traces = r.out / "traces"
        traces.mkdir(parents=True, exist_ok=True)
        stem = f"{r.name}-nc-{{}}{'' if evfd else '-noevfd'}.jsonl"
        srv_trace, cli_trace = traces / stem.format("server"), traces / stem.format("client")
        nc = [PYTHON, "-m", "pyvcl", "nc", "--no-fallback"]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        for t in (srv_trace, cli_trace):
            t.unlink(missing_ok=True)
        server = subprocess.Popen(
            [
                *nc,
                "--vcl-config",
                str(r.conf["server", evfd]),
                "--trace",
                str(srv_trace),
                "-l",
                r.host,
                str(r.port),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            env=env,
        )
        try:
            time.sleep(2.0)  # listening (nc says nothing until a peer comes)
            data = bytes(range(256)) * 16
            subprocess.run(
                [
                    *nc,
                    "--vcl-config",
                    str(r.conf["client", evfd]),
                    "--trace",
                    str(cli_trace),
                    "--close-on-eof",
                    r.host,
                    str(r.port),
                ],
                input=data,
                capture_output=True,
                env=env,
                timeout=READY_S,
                check=True,
            )
            got, _ = server.communicate(timeout=READY_S)
            if got != data:
                raise RuntimeError(f"nc moved {len(got)} bytes, not {len(data)}")
        finally:
            server.kill()
            server.wait()
        for t in (srv_trace, cli_trace):
            _anonymise(t)
            print(f"  {t.name}: {t.stat().st_size} bytes", file=sys.stderr)

    return record


def _anonymise(trace: Path) -> None:
    """The header's argv without this machine's paths (the config, the trace): file names."""
    lines = trace.read_text().splitlines(keepends=True)
    header = json.loads(lines[0])
    header["argv"] = ["pyvcl", *(Path(a).name if "/" in a else a for a in header["argv"][1:])]
    trace.write_text(json.dumps(header) + "\n" + "".join(lines[1:]))
    trace.chmod(0o644)


FIXTURES: dict[str, Callable[[Recorder], None]] = {
    "listening": listening,
    "unread-pyvcl": unread("pyvcl"),
    "unread-ldp": unread("ldp"),
    "full": full,
    "closing": closing,
    "nc": nc_pair(True),
    "nc-noevfd": nc_pair(False),
}
# What is recorded in each topology (TCP: the states where it differs from cut-through).
PLAN = {
    "ct": list(FIXTURES),
    "tcp": ["unread-pyvcl", "unread-ldp", "closing", "nc"],
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="default: %(default)s")
    ap.add_argument("--topology", choices=list(PLAN), action="append", help="default: all")
    ap.add_argument("names", nargs="*", metavar="NAME", help=f"some of {', '.join(FIXTURES)}")
    args = ap.parse_args(argv)
    unknown = set(args.names) - set(FIXTURES)
    if unknown:
        ap.error(f"unknown fixtures {sorted(unknown)} (known: {', '.join(FIXTURES)})")
    with (
        tempfile.TemporaryDirectory() as work,
        VppInstance() as vpp,
    ):
        for topo in args.topology or list(PLAN):
            r = Recorder(vpp, args.out, Path(work), topo)
            for name in PLAN[topo]:
                if not args.names or name in args.names:
                    print(f"{topo} {name}:", file=sys.stderr)
                    FIXTURES[name](r)
    return 0


if __name__ == "__main__":
    sys.exit(main())
