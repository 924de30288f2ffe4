"""Which VPP release is behind the app socket (pyvcl.vppversion): read from the peer process's
mapped libraries, checked against what the user expects.  The peer here is this process (a
socketpair), which maps a file named like VPP's core library."""

from __future__ import annotations

import mmap
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from pyvcl.errors import LocalError
from pyvcl.vppversion import (
    VppVersionMismatch,
    check_peer_version,
    detect_version,
    expected_version,
)


@contextmanager
def mapped_lib(tmp_path: Path, name: str) -> Iterator[None]:
    """Map a file called ``name`` into this process, as the dynamic loader maps VPP's libs."""
    path = tmp_path / name
    path.write_bytes(b"\0" * mmap.PAGESIZE)
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ):
        yield


@pytest.fixture
def pair() -> Iterator[socket.socket]:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with a, b:
        yield a


def test_detects_the_release_from_the_mapped_library(tmp_path: Path, pair: socket.socket) -> None:
    with mapped_lib(tmp_path, "libvlib.so.26.02.0"):
        assert check_peer_version(pair.fileno()) == "v26.02"
    assert pair.fileno() >= 0  # the fd stays ours


def test_an_unexpected_release_is_refused(
    tmp_path: Path, pair: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYVCL_VPP_VERSION", "26.06")
    with mapped_lib(tmp_path, "libvlib.so.26.02.0"):
        with pytest.raises(VppVersionMismatch, match=r"v26\.02, but v26\.06 was expected"):
            check_peer_version(pair.fileno())
        assert check_peer_version(pair.fileno(), "v26.02") == "v26.02"  # argument wins


def test_a_release_without_layouts_is_refused(tmp_path: Path, pair: socket.socket) -> None:
    with mapped_lib(tmp_path, "libvlib.so.25.10.0"), pytest.raises(VppVersionMismatch) as e:
        check_peer_version(pair.fileno())
    assert "v25.10" in str(e.value) and e.value.errno is not None


def test_unreadable_release_takes_the_expected_one(
    pair: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PYVCL_VPP_VERSION", raising=False)
    assert detect_version(2**22 + 12345) is None  # beyond pid_max: no such process
    # This process maps no libvlib: nothing to read, so the expectation (or the default) holds.
    assert check_peer_version(pair.fileno(), "v26.02") == "v26.02"
    assert check_peer_version(pair.fileno()) == "v26.06"


def test_an_unknown_expectation_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYVCL_VPP_VERSION", "v9.99")
    with pytest.raises(LocalError, match=r"\$PYVCL_VPP_VERSION='v9.99'"):
        expected_version()
    assert expected_version("v26.02-release") == "v26.02"


def test_real_vpp_release_is_read_and_the_other_one_refused(vpp: object) -> None:
    """Against the VPP under test (v26.06, or v26.02 with PYVCL_VPP_PREFIX pointing there):
    the attach reads its release, and a pyvcl told to expect the other one refuses before
    anything of VPP's is mapped."""
    from pyvcl.app import App
    from pyvcl.wire import SUPPORTED_VERSIONS

    sock = vpp.app_socket()  # type: ignore[attr-defined]
    release = detect_version(vpp.pid)  # type: ignore[attr-defined]
    assert release in SUPPORTED_VERSIONS
    with App.attach(sock, name="ver-ok", vpp_version=release) as app:
        assert app.vpp_version == release
    other = next(v for v in SUPPORTED_VERSIONS if v != release)
    with pytest.raises(VppVersionMismatch, match=f"is {release}, but {other} was expected"):
        App.attach(sock, name="ver-other", vpp_version=other)
