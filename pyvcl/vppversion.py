"""Which VPP release is at the other end of the app socket, and whether pyvcl may talk to it.

The app-socket protocol carries no version: an ATTACH to a VPP whose structs differ would be
answered, and its memory misread.  So pyvcl asks the process instead.  ``SO_PEERCRED`` on the
app socket names VPP's pid, and ``/proc/PID/maps`` lists the VPP libraries that process mapped,
whose file names carry the release they belong to (``libvlib.so.26.06.0``, set by VPP's CMake as
the libraries' SOVERSION).  Reading the maps needs the same permission as ptrace-read (the same
user, or root); a VPP in another pid namespace shows up as pid 0.  When the release cannot be
read, pyvcl takes the one it was told to expect, else `DEFAULT_VERSION`, and says so at debug
level.

What the user can say: ``vpp_version=`` when attaching, or ``$PYVCL_VPP_VERSION``.  A release
that was read and differs from the expected one, or that pyvcl has no layouts for, is refused
with `VppVersionMismatch` before anything of VPP's is mapped.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import socket
import struct

from .errors import LocalError, VclError
from .wire import DEFAULT_VERSION, SUPPORTED_VERSIONS, normalise_version

__all__ = ["VppVersionMismatch", "check_peer_version", "detect_version", "expected_version"]

log = logging.getLogger(__name__)

ENV_VAR = "PYVCL_VPP_VERSION"
# A VPP core library mapped by the process: libvlib.so.26.06.0 (what ldd shows for bin/vpp).
_LIB = re.compile(rb"/libvlib\.so\.(\d+)\.(\d+)(?:\.\d+)*(?: \(deleted\))?$", re.MULTILINE)
_UCRED = struct.Struct("3i")  # struct ucred {pid_t pid; uid_t uid; gid_t gid;}


class VppVersionMismatch(VclError):
    """The VPP at the app socket is a release pyvcl was not told to expect, or has no layouts
    for.  Nothing of its memory was mapped."""

    default_errno = errno.EPROTONOSUPPORT


def expected_version(explicit: str | None = None) -> str | None:
    """The release the user expects: ``explicit``, else ``$PYVCL_VPP_VERSION``, else None.
    A value pyvcl does not know is a `LocalError` naming where it came from."""
    value, source = explicit, "vpp_version"
    if value is None:
        value, source = os.environ.get(ENV_VAR) or None, f"${ENV_VAR}"
    if value is None:
        return None
    try:
        return normalise_version(value)
    except ValueError:
        raise LocalError(
            f"{source}={value!r}: pyvcl knows VPP {', '.join(SUPPORTED_VERSIONS)}"
        ) from None


def peer_pid(fd: int) -> int | None:
    """The pid at the other end of the unix socket ``fd`` (None if the kernel names none)."""
    sock = socket.socket(fileno=fd)
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    except OSError:
        return None
    finally:
        sock.detach()  # the fd stays the caller's
    pid = _UCRED.unpack(raw)[0]
    return pid if pid > 0 else None


def detect_version(pid: int) -> str | None:
    """The release of the VPP process ``pid`` ("v26.06"), from the libraries it mapped; None
    when that cannot be read (no permission, process gone, not a VPP)."""
    try:
        with open(f"/proc/{pid}/maps", "rb") as f:
            maps = f.read()
    except OSError:
        return None
    m = _LIB.search(maps)
    if m is None:
        return None
    return f"v{int(m[1]):02d}.{int(m[2]):02d}"


def check_peer_version(fd: int, explicit: str | None = None) -> str:
    """The release pyvcl will speak on the app socket ``fd``: what VPP's process shows, checked
    against what the user expects (`expected_version`).  Raises `VppVersionMismatch`."""
    expected = expected_version(explicit)
    pid = peer_pid(fd)
    found = detect_version(pid) if pid is not None else None
    if found is None:
        chosen = expected or DEFAULT_VERSION
        log.debug("VPP's release could not be read (pid %s); assuming %s", pid, chosen)
        return chosen
    if found not in SUPPORTED_VERSIONS:
        raise VppVersionMismatch(
            f"VPP (pid {pid}) is {found}; pyvcl has layouts for {', '.join(SUPPORTED_VERSIONS)}"
        )
    if expected is not None and found != expected:
        raise VppVersionMismatch(f"VPP (pid {pid}) is {found}, but {expected} was expected")
    return found
