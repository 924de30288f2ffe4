"""The wire layer: every C struct that crosses the app socket or lives in shared memory,
declared once (construct) with derived fast accessors.  See `pyvcl.wire._decl.Decl`.

Layouts are those of VPP v26.06 on x86-64 (little-endian, 8-byte pointers, 64-byte cache
lines, glibc's 40-byte mutex; `pyvcl.wire.abi` says why aarch64 differs).  The few
structs that differ in another supported release come from `declarations(version)`.
"""

from __future__ import annotations

from . import enums, fifo, mq, sapi, segment, session
from ._decl import Decl, Field

SUPPORTED_VERSIONS = ("v26.06", "v26.02")
DEFAULT_VERSION = "v26.06"


def _collect() -> dict[str, Decl]:
    found: dict[str, Decl] = {}
    for module in (sapi, segment, fifo, mq, session):
        for value in vars(module).values():
            if isinstance(value, Decl) and value.c_name not in found:
                found[value.c_name] = value
    return found


_V2606 = _collect()


def declarations(version: str = DEFAULT_VERSION) -> dict[str, Decl]:
    """All declarations by C name, for VPP ``version`` ("v26.06" or "v26.02")."""
    version = normalise_version(version)
    decls = dict(_V2606)
    if version == "v26.02":
        # v26.02's crypto config has no tls_profile_index / owner_app_wrk_index.
        decls["transport_endpt_crypto_cfg_t"] = session.crypto_cfg_decl(with_tls_profile=False)
        decls["transport_endpt_ext_cfg_t"] = session.ext_cfg_decl(with_tls_profile=False)
    return decls


def normalise_version(version: str) -> str:
    """Map "26.06", "v26.06-release", "v26.06-rc2~3" ... to a supported key, or raise."""
    v = version.strip()
    if not v.startswith("v"):
        v = "v" + v
    v = v[:6]
    if v not in SUPPORTED_VERSIONS:
        raise ValueError(f"unsupported VPP version {version!r}; pyvcl knows {SUPPORTED_VERSIONS}")
    return v


__all__ = ["DEFAULT_VERSION", "SUPPORTED_VERSIONS", "Decl", "Field", "declarations", "enums"]
