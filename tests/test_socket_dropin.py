"""The `pyvcl.socket` drop-in uses the process-wide opportunistic app (`pyvcl.fallback`):
kernel sockets without VPP, an error with PYVCL_NO_FALLBACK, and the same app as
`pyvcl.create_connection`, so it follows VPP across restarts."""

from __future__ import annotations

import socket as std
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyvcl import fallback
from pyvcl import socket as pvsocket
from pyvcl.errors import VppUnreachable


@pytest.fixture
def no_vpp(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    monkeypatch.setenv("VCL_CONFIG", "")
    monkeypatch.setenv("VCL_VPP_SAPI_SOCKET", str(tmp_path / "no-vpp"))
    fallback.close_default_app()
    yield
    fallback.close_default_app()


def test_dropin_is_the_default_app_on_kernel_sockets(no_vpp: None) -> None:
    assert pvsocket.default_app() is fallback.default_app()
    with pvsocket.create_server(("127.0.0.1", 0)) as srv:
        assert isinstance(srv, std.socket)
        with pvsocket.create_connection(srv.getsockname(), timeout=5) as c:
            conn, _ = srv.accept()
            with conn:
                c.sendall(b"drop-in")
                assert conn.recv(16) == b"drop-in"
    with pvsocket.socket(std.AF_INET, std.SOCK_DGRAM) as u:  # not carried by VPP: the kernel's
        assert u.type == std.SOCK_DGRAM


def test_no_fallback_raises(no_vpp: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYVCL_NO_FALLBACK", "1")
    with pytest.raises(VppUnreachable):
        pvsocket.create_connection(("127.0.0.1", 9))
