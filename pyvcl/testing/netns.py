"""A Linux network namespace of the test's own, joined to a private VPP by a veth pair and
VPP's af_packet ``host-interface``: a peer that reaches VPP only through VPP's own data path.

::

    with VethNamespace(vpp) as ns:                 # or the ``vpp_netns`` fixture
        ns.run(["curl", f"http://{ns.vpp_addr}:8080/"])   # runs inside the namespace
        # ns.vpp_interface is VPP's "host-<veth>", ns.peer_addr the namespace's address

What it builds, all named uniquely per instance (``pvc<pid><n>``): the namespace (``ip netns
add``), a veth pair whose peer end is moved into it with ``peer_addr/24`` and brought up (with
its loopback), and on the VPP side ``create host-interface name <veth>``, ``set int state
host-<veth> up``, ``set int ip address host-<veth> vpp_addr/24`` in VPP's default table, where
apps of the default app namespace with global scope listen.  The /24 is chosen from
10.200.0.0/16-10.254.255.0/24 so as not to overlap any address or route the host already has.
Checksum offloads are turned off on the veth so af_packet hands VPP complete packets.

`close` (and ``__exit__``) undoes everything that was made, in reverse order, also when
building failed half-way; it never touches a namespace or link it did not create.
`why_unavailable` says why this cannot work here (not root, no ``ip``, no af_packet plugin).
"""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import os
import random
import shutil
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from .errors import VppError

if TYPE_CHECKING:
    from .vpp import VppInstance

__all__ = ["VethNamespace", "why_unavailable"]

AF_PACKET_PLUGIN = "af_packet_plugin.so"
PREFIX_LEN = 24
_SUBNET_TRIES = 64
_IP_TIMEOUT_S = 10.0
_counter = itertools.count()


def why_unavailable(vpp: VppInstance | None = None) -> str | None:
    """Why a `VethNamespace` cannot be built here (None: it can)."""
    if os.geteuid() != 0:
        return "network namespaces and veth pairs need root"
    ip = shutil.which("ip")
    if ip is None:
        return "no `ip` command (iproute2) on PATH"
    try:
        probe = subprocess.run(
            [ip, "netns", "list"], capture_output=True, text=True, timeout=_IP_TIMEOUT_S
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"`ip netns list` failed: {exc}"
    if probe.returncode != 0:
        return f"`ip netns` is not available: {probe.stderr.strip()}"
    if vpp is not None:
        if AF_PACKET_PLUGIN not in vpp.plugins:
            return f"this VPP instance was started without {AF_PACKET_PLUGIN}"
        if not (vpp.install.plugin_dir / AF_PACKET_PLUGIN).is_file():
            return f"VPP's {AF_PACKET_PLUGIN} is missing from {vpp.install.plugin_dir}"
    return None


def _ip(*args: str, check: bool = True) -> str:
    """Run ``ip ARGS``; RuntimeError with its stderr when it fails (and `check`)."""
    res = subprocess.run(
        ["ip", *args], capture_output=True, text=True, timeout=_IP_TIMEOUT_S, check=False
    )
    if check and res.returncode != 0:
        raise RuntimeError(f"`ip {' '.join(args)}` failed: {res.stderr.strip()}")
    return res.stdout


def _networks_in_use() -> list[ipaddress.IPv4Network]:
    """Every IPv4 network the host has an address or a route in (default route excepted)."""
    used: list[ipaddress.IPv4Network] = []
    for line in _ip("-4", "-o", "addr", "show").splitlines():
        words = line.split()
        if "inet" in words:
            used.append(ipaddress.IPv4Interface(words[words.index("inet") + 1]).network)
    for line in _ip("-4", "route", "show", "table", "all").splitlines():
        words = line.split()
        if words and words[0] not in ("default", "broadcast", "local", "unreachable"):
            with contextlib.suppress(ValueError):
                used.append(ipaddress.IPv4Network(words[0], strict=False))
    return used


def _free_subnet(rng: random.Random) -> ipaddress.IPv4Network:
    used = _networks_in_use()
    for _ in range(_SUBNET_TRIES):
        net = ipaddress.IPv4Network(f"10.{rng.randint(200, 254)}.{rng.randint(0, 255)}.0/24")
        if not any(net.overlaps(u) for u in used):
            return net
    raise RuntimeError("no free /24 in 10.200.0.0-10.254.255.255 for a test namespace")


class VethNamespace:
    """A network namespace reaching `vpp` through veth + af_packet (see the module notes)."""

    def __init__(self, vpp: VppInstance, *, subnet: str | None = None) -> None:
        self.vpp = vpp
        tag = f"pvc{os.getpid()}x{next(_counter)}"
        self.name = tag  # the namespace: ``ip netns exec NAME ...``
        self.host_veth = f"{tag}h"[:15]  # the end VPP's af_packet opens (IFNAMSIZ - 1)
        self.peer_veth = f"{tag}p"[:15]  # the end inside the namespace
        net = (
            ipaddress.IPv4Network(subnet)
            if subnet is not None
            else _free_subnet(random.Random(os.urandom(8)))
        )
        hosts = net.hosts()
        self.network = net
        self.vpp_addr = str(next(hosts))
        self.peer_addr = str(next(hosts))
        self.vpp_interface = f"host-{self.host_veth}"
        self._undo: list[Callable[[], Any]] = []

    def __repr__(self) -> str:
        return f"<VethNamespace {self.name} {self.peer_addr} <-> VPP {self.vpp_addr}>"

    # -- build / tear down ----------------------------------------------------------------
    def open(self) -> VethNamespace:
        """Build the namespace, the veth pair and VPP's interface; on any failure, undo what
        was built and raise."""
        reason = why_unavailable(self.vpp)
        if reason is not None:
            raise RuntimeError(reason)
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def _build(self) -> None:
        plen = self.network.prefixlen
        _ip("netns", "add", self.name)
        self._undo.append(lambda: _ip("netns", "delete", self.name, check=False))
        _ip("link", "add", self.host_veth, "type", "veth", "peer", "name", self.peer_veth)
        # deleting one end deletes both (and the end in the namespace goes with it anyway)
        self._undo.append(lambda: _ip("link", "delete", self.host_veth, check=False))
        _ip("link", "set", self.peer_veth, "netns", self.name)
        self._ns_ip("link", "set", "lo", "up")
        self._ns_ip("addr", "add", f"{self.peer_addr}/{plen}", "dev", self.peer_veth)
        self._ns_ip("link", "set", self.peer_veth, "up")
        _ip("link", "set", self.host_veth, "up")
        self._no_offloads()
        self._vpp(f"create host-interface name {self.host_veth}", expect=self.vpp_interface)
        self._undo.append(
            lambda: self._vpp(f"delete host-interface name {self.host_veth}", quiet=True)
        )
        self._vpp(f"set interface state {self.vpp_interface} up")
        self._vpp(f"set interface ip address {self.vpp_interface} {self.vpp_addr}/{plen}")

    def _no_offloads(self) -> None:
        """Checksum offload on a veth leaves TCP checksums to be filled in later, which never
        happens for af_packet's copy: turn it off on both ends (when ethtool is there)."""
        ethtool = shutil.which("ethtool")
        if ethtool is None:
            return
        for argv in (
            [ethtool, "-K", self.host_veth, "rx", "off", "tx", "off"],
            ["ip", "netns", "exec", self.name, ethtool, "-K", self.peer_veth, "rx", "off",
             "tx", "off"],
        ):  # fmt: skip
            subprocess.run(argv, capture_output=True, timeout=_IP_TIMEOUT_S, check=False)

    def _ns_ip(self, *args: str) -> str:
        return _ip("-n", self.name, *args)

    def _vpp(self, cmd: str, *, expect: str | None = None, quiet: bool = False) -> None:
        if quiet:
            with contextlib.suppress(VppError):
                self.vpp.cli(cmd, check=False)
            return
        out = self.vpp.cli(cmd).strip()
        if out != (expect or ""):
            raise VppError(f"`{cmd}` failed: {out!r}")

    def close(self) -> None:
        """Undo everything built, last first; idempotent, never raises for what is gone."""
        while self._undo:
            undo = self._undo.pop()
            with contextlib.suppress(Exception):
                undo()

    def __enter__(self) -> VethNamespace:
        return self.open()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- running things inside ------------------------------------------------------------
    def command(self, argv: Sequence[str | os.PathLike[str]]) -> list[str]:
        """`argv` prefixed so that it runs inside the namespace."""
        return ["ip", "netns", "exec", self.name, *(str(a) for a in argv)]

    def run(
        self, argv: Sequence[str | os.PathLike[str]], *, timeout: float = 30.0, **kwargs: Any
    ) -> subprocess.CompletedProcess[bytes]:
        """Run `argv` inside the namespace to its end (at most `timeout` s, killed then)."""
        return subprocess.run(self.command(argv), timeout=timeout, check=False, **kwargs)

    def exists(self) -> bool:
        """Whether the namespace is there (``ip netns`` lists it)."""
        return Path("/run/netns", self.name).exists()
