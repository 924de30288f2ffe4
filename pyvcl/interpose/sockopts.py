"""Socket options of interposed sockets: what each maps to in VPP, or why it is a no-op.

VPP's session layer has no per-socket options for most of what programs set; C VCL accepts
and stores several of them (vppcom_session_attr) without effect.  A program must not break
because it asks, so every option in `OPTIONS` is accepted and reads back what was set, and
the few that VPP does have a meaning for are computed (`computed`).  Anything else raises
ENOPROTOOPT, as a kernel socket does for an option it does not know.
"""

from __future__ import annotations

import errno
import socket
import struct

_SOL, _TCP = socket.SOL_SOCKET, socket.IPPROTO_TCP
_IPV6 = socket.IPPROTO_IPV6


def _opt(level: int, name: str) -> tuple[int, int] | None:
    value = getattr(socket, name, None)
    return None if value is None else (level, value)


# (level, option) -> (name, default, what happens); docs/run.md has the same table.
OPTIONS: dict[tuple[int, int], tuple[str, int, str]] = {}
for _lvl, _name, _default, _why in [
    (_SOL, "SO_REUSEADDR", 0, "accepted: VPP lets a port be listened on again at once"),
    (_SOL, "SO_REUSEPORT", 0, "accepted: one VPP listener per port and app"),
    (_SOL, "SO_KEEPALIVE", 0, "stored: VPP's TCP has no keepalive timer per session"),
    (_SOL, "SO_LINGER", 0, "stored: close always hands the rest of the tx fifo to VPP"),
    (_SOL, "SO_RCVBUF", 0, "read: the rx fifo's size; set: stored (fifo sizes are per app)"),
    (_SOL, "SO_SNDBUF", 0, "read: the tx fifo's size; set: stored (fifo sizes are per app)"),
    (_SOL, "SO_RCVLOWAT", 1, "stored"),
    (_SOL, "SO_SNDLOWAT", 1, "stored"),
    (_SOL, "SO_BROADCAST", 0, "stored"),
    (_SOL, "SO_OOBINLINE", 0, "stored"),
    (_TCP, "TCP_NODELAY", 0, "accepted: VPP's TCP sends what the tx fifo has at once"),
    (_TCP, "TCP_KEEPIDLE", 7200, "stored"),
    (_TCP, "TCP_KEEPINTVL", 75, "stored"),
    (_TCP, "TCP_KEEPCNT", 9, "stored"),
    (_TCP, "TCP_QUICKACK", 1, "stored"),
    (_TCP, "TCP_USER_TIMEOUT", 0, "stored"),
    (_TCP, "TCP_MAXSEG", 1460, "stored"),
    (_TCP, "TCP_FASTOPEN", 0, "stored"),
    (_TCP, "TCP_CORK", 0, "stored"),
    (_IPV6, "IPV6_V6ONLY", 0, "used: a listener on :: also listens on 0.0.0.0 unless set"),
    (socket.IPPROTO_IP, "IP_TOS", 0, "stored"),
]:
    _key = _opt(_lvl, _name)
    if _key is not None:
        OPTIONS[_key] = (_name, _default, _why)

SO_ERROR = (_SOL, socket.SO_ERROR)
SO_TYPE = (_SOL, socket.SO_TYPE)
SO_ACCEPTCONN = (_SOL, socket.SO_ACCEPTCONN)
SO_DOMAIN = _opt(_SOL, "SO_DOMAIN")
SO_PROTOCOL = _opt(_SOL, "SO_PROTOCOL")
SO_LINGER = (_SOL, socket.SO_LINGER)
IPV6_V6ONLY = _opt(_IPV6, "IPV6_V6ONLY")
BUFFER_SIZES = {(_SOL, socket.SO_RCVBUF): 0, (_SOL, socket.SO_SNDBUF): 1}
_LINGER = struct.Struct("ii")  # struct linger {int l_onoff; int l_linger;}
_INT = struct.Struct("i")


def no_such_option() -> OSError:
    return OSError(errno.ENOPROTOOPT, "Protocol not available")


def to_int(key: tuple[int, int], value: int | bytes | None, optlen: int | None) -> int:
    """The integer a setsockopt stores (a bytes value for SO_LINGER: its l_onoff)."""
    if value is None:
        if optlen is None:
            raise TypeError("setsockopt: value None needs an optlen")
        return 0
    if isinstance(value, int):
        return value
    data = bytes(value)
    if key == SO_LINGER and len(data) >= _LINGER.size:
        return int(_LINGER.unpack_from(data)[0])
    if len(data) >= _INT.size:
        return int(_INT.unpack_from(data)[0])
    raise OSError(errno.EINVAL, "Invalid argument")


def as_requested(key: tuple[int, int], value: int, buflen: int | None) -> int | bytes:
    """getsockopt's answer: the integer, or bytes when a buffer length was given."""
    if buflen is None:
        return value
    packed = _LINGER.pack(value, 0) if key == SO_LINGER else _INT.pack(value)
    return packed[:buflen]
