"""Host-stack setups on a private VPP: app namespaces, the two-VRF topology for TCP through
VPP's own stack, the two topologies the interop, robustness and benchmark code runs on, and
``vcl.conf`` files and environments for C VCL apps (also under LDP).

`VppInstance` offers the VPP-side functions as methods (``vpp.setup_two_vrf_tcp()``,
``vpp.vcl_conf(path)``, ...); `topology` describes where each side of a connection attaches::

    topo = topology(vpp, "tcp")         # or "ct": cut-through on the default namespace
    server = VclApp(topo.server.socket, name="srv", **topo.server.pyvcl_opts)
    conf = vpp.vcl_conf(tmp_path / "cli.conf", **topo.client.conf_opts)  # a C VCL client
    ...  # the server listens on, and the client connects to, topo.host
"""

from __future__ import annotations

import os
import re
import stat
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import VppCliError, VppError

if TYPE_CHECKING:
    from .vpp import VppInstance

__all__ = [
    "SCOPE_GLOBAL",
    "SCOPE_LOCAL",
    "TOPOLOGIES",
    "Side",
    "Topology",
    "TwoVrfTcp",
    "add_app_namespace",
    "cut_through",
    "setup_two_vrf_tcp",
    "topology",
    "two_vrf_topology",
    "vcl_conf",
    "vcl_env",
]

SUN_PATH_MAX = 107  # sizeof(sockaddr_un.sun_path) - 1 on Linux
_NS_ID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
# Keys of the `vcl { }` section that VCL (src/vcl/vcl_cfg.c, v26.06) understands.
_VCL_KEYS = frozenset(
    {
        "heapsize",
        "app-socket-api",
        "segment-size",
        "add-segment-size",
        "preallocated-fifo-pairs",
        "rx-fifo-size",
        "tx-fifo-size",
        "event-queue-size",
        "app-timeout",
        "session-timeout",
        "app-proxy-transport-tcp",
        "app-proxy-transport-udp",
        "app-scope-local",
        "app-scope-global",
        "huge_page",
        "use-mq-eventfd",
        "tls-engine",
        "multi-thread-workers",
        "app_original_dst",
        "namespace-secret",
        "namespace-id",
        "api-socket-name",
        "uid",
        "gid",
    }
)


@dataclass(frozen=True)
class TwoVrfTcp:
    """What `VppInstance.setup_two_vrf_tcp` built: two loopbacks in two VRFs, one app
    namespace per side.  The server attaches through `server_socket` and listens on
    `server_addr`; the client attaches through `client_socket` and connects to `server_addr`."""

    server_ns: str
    client_ns: str
    server_secret: int
    client_secret: int
    server_addr: str
    client_addr: str
    server_interface: str
    client_interface: str
    server_table: int
    client_table: int
    server_socket: Path
    client_socket: Path


# --------------------------------------------------------------------------------------------
# VPP-side setups


def _configure(vpp: VppInstance, cmd: str, *, expect: str | None = None) -> str:
    """A configuration command: its output must be empty (or match `expect`)."""
    out = vpp.cli(cmd).strip()
    ok = bool(re.fullmatch(expect, out)) if expect is not None else out == ""
    if not ok:
        raise VppCliError(f"`{cmd}` failed: {out!r}", cmd, out)
    return out


def _wait_socket(vpp: VppInstance, path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not (path.exists() and stat.S_ISSOCK(path.stat().st_mode)):
        if not vpp.is_running():
            raise VppError(f"VPP exited while waiting for {path}\n{vpp.log_tail()}")
        if time.monotonic() >= deadline:
            raise VppError(f"{path} did not appear within {timeout} s\n{vpp.log_tail()}")
        time.sleep(0.02)


def add_app_namespace(
    vpp: VppInstance,
    ns_id: str,
    secret: int,
    interface: str | None = None,
    *,
    ip4_fib_id: int | None = None,
    timeout: float = 10.0,
) -> Path:
    """``app ns add id NS secret N`` bound to `interface` (else to IPv4 table `ip4_fib_id`,
    default 0: VPP requires one or the other); waits for and returns its app socket."""
    if not _NS_ID_RE.match(ns_id):
        raise ValueError(f"namespace id {ns_id!r} must match {_NS_ID_RE.pattern}")
    sock = vpp.app_socket(ns_id)
    if len(os.fsencode(sock)) > SUN_PATH_MAX:
        raise ValueError(f"app socket path {sock} exceeds {SUN_PATH_MAX} bytes")
    cmd = f"app ns add id {ns_id} secret {int(secret)}"
    if interface is not None:
        cmd += f" if {interface}"
    else:
        cmd += f" ip4-fib-id {0 if ip4_fib_id is None else int(ip4_fib_id)}"
    _configure(vpp, cmd)
    _wait_socket(vpp, sock, timeout)
    return sock


def setup_two_vrf_tcp(
    vpp: VppInstance,
    *,
    server_ns: str = "srv",
    client_ns: str = "cli",
    server_secret: int = 1234,
    client_secret: int = 5678,
    server_table: int = 1,
    client_table: int = 2,
    server_addr: str = "127.0.10.1",
    client_addr: str = "127.0.20.1",
    prefix_len: int = 24,
) -> TwoVrfTcp:
    """Topology 2 of docs (TCP through VPP's stack on one VPP): two loopbacks in two VRFs
    joined by cross-table routes, app namespace `server_ns` on the first and `client_ns`
    on the second.  Returns the names, addresses and app sockets."""
    srv_if = _configure(vpp, "create loopback interface", expect=r"loop\d+")
    cli_if = _configure(vpp, "create loopback interface", expect=r"loop\d+")
    for table in (server_table, client_table):
        _configure(vpp, f"ip table add {table}")
    _configure(vpp, f"set interface ip table {srv_if} {server_table}")
    _configure(vpp, f"set interface ip table {cli_if} {client_table}")
    for ifname in (srv_if, cli_if):
        _configure(vpp, f"set interface state {ifname} up")
    _configure(vpp, f"set interface ip address {srv_if} {server_addr}/{prefix_len}")
    _configure(vpp, f"set interface ip address {cli_if} {client_addr}/{prefix_len}")
    _configure(
        vpp,
        f"ip route add {client_addr}/32 table {server_table} via lookup in table {client_table}",
    )
    _configure(
        vpp,
        f"ip route add {server_addr}/32 table {client_table} via lookup in table {server_table}",
    )
    srv_sock = add_app_namespace(vpp, server_ns, server_secret, srv_if)
    cli_sock = add_app_namespace(vpp, client_ns, client_secret, cli_if)
    return TwoVrfTcp(
        server_ns=server_ns,
        client_ns=client_ns,
        server_secret=server_secret,
        client_secret=client_secret,
        server_addr=server_addr,
        client_addr=client_addr,
        server_interface=srv_if,
        client_interface=cli_if,
        server_table=server_table,
        client_table=client_table,
        server_socket=srv_sock,
        client_socket=cli_sock,
    )


def vcl_conf(vpp: VppInstance, path: str | os.PathLike[str], **opts: object) -> Path:
    """Write a ``vcl { }`` config for C VCL apps (and pyvcl's compatible reader).

    Keyword names are VCL keys with ``_`` for ``-`` (``rx_fifo_size=...``; ``huge_page``
    and ``app_original_dst`` keep their underscore).  True writes a bare flag, False/None
    drops the key.  Defaults: ``app-socket-api`` = `vpp`'s app socket for
    ``namespace_id`` (else ``default``), ``app-scope-local``, ``app-scope-global``,
    ``rx-fifo-size``/``tx-fifo-size`` 4000000, ``use-mq-eventfd``."""
    given: dict[str, object] = {}
    for name, value in opts.items():
        key = name if name in _VCL_KEYS else name.replace("_", "-")
        if key not in _VCL_KEYS:
            raise ValueError(f"unknown VCL option {name!r} (known: {sorted(_VCL_KEYS)})")
        given[key] = value
    ns = given.get("namespace-id")
    conf: dict[str, object] = {
        "app-socket-api": vpp.app_socket(str(ns) if ns else "default"),
        "app-scope-local": True,
        "app-scope-global": True,
        "rx-fifo-size": 4000000,
        "tx-fifo-size": 4000000,
        "use-mq-eventfd": True,
    }
    conf.update(given)
    lines = ["vcl {"]
    for key, value in conf.items():
        if value is None or value is False:
            continue
        lines.append(f"  {key}" if value is True else f"  {key} {value}")
    lines.append("}")
    out = Path(path)
    out.write_text("\n".join(lines) + "\n")
    return out


def vcl_env(
    vpp: VppInstance,
    vcl_conf: str | os.PathLike[str],
    *,
    ldpreload: bool = False,
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Environment for a C VCL app (``VCL_CONFIG``, LD_LIBRARY_PATH) or, with `ldpreload`,
    for an ordinary program run over VCL through ``libvcl_ldpreload.so``."""
    env = vpp.install.env(base)
    env["VCL_CONFIG"] = str(Path(vcl_conf).absolute())
    if ldpreload:
        lib = vpp.install.ldpreload
        if not lib.is_file():
            raise FileNotFoundError(f"{lib} does not exist")
        env["LD_PRELOAD"] = str(lib)
    return env


# --------------------------------------------------------------------------------------------
# The two topologies: where each side attaches


SCOPE_LOCAL: Mapping[str, bool] = {"scope_local": True, "scope_global": False}
"""pyvcl attach options for cut-through (app-scope-local only)."""

SCOPE_GLOBAL: Mapping[str, bool] = {"scope_local": False, "scope_global": True}
"""pyvcl attach options for sessions through VPP's TCP stack (app-scope-global only)."""

TOPOLOGIES: tuple[str, ...] = ("ct", "tcp")
"""The names `topology` knows."""


@dataclass(frozen=True)
class Side:
    """How one side of a connection attaches: its app socket, the scope options of a pyvcl
    app (``VclApp(side.socket, **side.pyvcl_opts)``) and the `vcl_conf` keywords of a C VCL
    app (``vpp.vcl_conf(path, **side.conf_opts)``)."""

    socket: Path
    pyvcl_opts: Mapping[str, Any] = field(default_factory=dict)
    conf_opts: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Topology:
    """Where a server and a client attach; the server listens on, and the client connects to,
    `host`.  `name` is ``"ct"`` or ``"tcp"``; `two_vrf` is set for ``"tcp"``."""

    name: str
    host: str
    server: Side
    client: Side
    two_vrf: TwoVrfTcp | None = None


def cut_through(vpp: VppInstance) -> Topology:
    """``ct``: both apps on the default namespace, app-scope-local, 127.0.0.1."""
    side = Side(vpp.app_socket(), SCOPE_LOCAL, {"app_scope_global": False})
    return Topology("ct", "127.0.0.1", side, side)


_two_vrf_of: weakref.WeakKeyDictionary[VppInstance, TwoVrfTcp] = weakref.WeakKeyDictionary()


def two_vrf_topology(vpp: VppInstance, two: TwoVrfTcp | None = None) -> Topology:
    """``tcp``: through VPP's TCP stack on `two` (default: a fresh `setup_two_vrf_tcp`, which
    can be done once per VPP), the server in its namespace, the client in its own, both
    app-scope-global."""
    if two is None:  # (the setup can be done once per VPP: share it between callers)
        two = _two_vrf_of.get(vpp)
        if two is None:
            two = _two_vrf_of[vpp] = setup_two_vrf_tcp(vpp)
    t = two

    def side(sock: Path, ns: str, secret: int) -> Side:
        conf = {"namespace_id": ns, "namespace_secret": secret, "app_scope_local": False}
        return Side(sock, SCOPE_GLOBAL, conf)

    return Topology(
        "tcp",
        t.server_addr,
        side(t.server_socket, t.server_ns, t.server_secret),
        side(t.client_socket, t.client_ns, t.client_secret),
        t,
    )


def topology(vpp: VppInstance, name: str) -> Topology:
    """`cut_through` for ``"ct"``, `two_vrf_topology` (set up now) for ``"tcp"``."""
    if name == "ct":
        return cut_through(vpp)
    if name == "tcp":
        return two_vrf_topology(vpp)
    raise ValueError(f"unknown topology {name!r} (known: {', '.join(TOPOLOGIES)})")
