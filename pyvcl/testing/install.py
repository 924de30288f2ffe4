"""Find a VPP install: ``PYVCL_VPP_PREFIX``, else the ``vpp`` on ``PATH``.

* ``PYVCL_VPP_PREFIX`` -- an install prefix (``$PREFIX/bin/vpp``); when set it is the only
  place looked at, so a broken value is reported rather than silently replaced by another VPP;
* otherwise ``vpp`` on ``PATH``; the prefix is derived from the binary's real path
  (``prefix/bin/vpp``), so a symlink to an installed VPP works.

`find_vpp` returns the `VppInstall` (or None, and `why_missing` says why).  `pyvcl.testing.vpp`
re-exports all of it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sysconfig
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .errors import VppError

__all__ = ["ENV_PREFIX", "HS_APPS", "VppInstall", "find_vpp", "why_missing"]

ENV_PREFIX = "PYVCL_VPP_PREFIX"
"""Environment variable naming a VPP install prefix (``$PYVCL_VPP_PREFIX/bin/vpp``)."""


HS_APPS: tuple[str, ...] = ("vcl_test_client", "vcl_test_server", "vpp_echo")
"""Host-stack test programs installed next to ``vpp``."""


@dataclass
class VppInstall:
    """A VPP install: ``prefix/bin/vpp``, ``prefix/bin/vppctl`` and ``lib_dir/vpp_plugins``."""

    prefix: Path
    vpp: Path
    vppctl: Path
    lib_dir: Path
    plugin_dir: Path
    _version: str | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def bin_dir(self) -> Path:
        return self.prefix / "bin"

    @property
    def ldpreload(self) -> Path:
        """``libvcl_ldpreload.so`` (LD_PRELOAD it to run a kernel-socket program over VCL)."""
        return self.lib_dir / "libvcl_ldpreload.so"

    def bin(self, name: str) -> Path:
        """Path of an installed program (e.g. one of `HS_APPS`); FileNotFoundError if absent."""
        path = self.bin_dir / name
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise FileNotFoundError(f"{name} is not installed in {self.bin_dir}")
        return path

    def plugins(self) -> list[str]:
        """Short names of the plugins in `plugin_dir` (``hs_apps`` for ``hs_apps_plugin.so``)."""
        return sorted(p.name[: -len("_plugin.so")] for p in self.plugin_dir.glob("*_plugin.so"))

    def env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """Environment for running this install's programs: `lib_dir` first on LD_LIBRARY_PATH."""
        env = dict(os.environ if base is None else base)
        old = env.get("LD_LIBRARY_PATH")
        env["LD_LIBRARY_PATH"] = f"{self.lib_dir}:{old}" if old else str(self.lib_dir)
        return env

    def version(self) -> str:
        """First line of ``vpp --version``, e.g. ``vpp v26.06-release built by ...`` (cached)."""
        if self._version is None:
            try:
                res = subprocess.run(
                    [str(self.vpp), "--version"],
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    text=True,
                    timeout=30,
                    env=self.env(),
                    check=False,
                )
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise VppError(f"`{self.vpp} --version` failed: {exc}") from exc
            out = res.stdout.strip()
            if res.returncode != 0 or not out:
                raise VppError(
                    f"`{self.vpp} --version` exited with {res.returncode}: "
                    f"{(res.stdout + res.stderr).strip()!r}"
                )
            self._version = out.splitlines()[0]
        return self._version


def _lib_dir_candidates(prefix: Path) -> list[Path]:
    multiarch = sysconfig.get_config_var("MULTIARCH") or f"{os.uname().machine}-linux-gnu"
    cands = [prefix / "lib" / str(multiarch), prefix / "lib64", prefix / "lib"]
    cands += sorted(p.parent for p in prefix.glob("lib*/*/vpp_plugins"))
    return list(dict.fromkeys(cands))


def _is_exe(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _install_at(prefix: Path) -> tuple[VppInstall | None, str]:
    """The install at `prefix`, or None and what is wrong with it."""
    vpp = prefix / "bin" / "vpp"
    vppctl = prefix / "bin" / "vppctl"
    if not _is_exe(vpp):
        return None, f"{vpp} does not exist or is not executable"
    if not _is_exe(vppctl):
        return None, f"{vppctl} does not exist or is not executable"
    cands = _lib_dir_candidates(prefix)
    for lib in cands:
        if (lib / "vpp_plugins").is_dir():
            return VppInstall(prefix, vpp, vppctl, lib, lib / "vpp_plugins"), ""
    tried = ", ".join(str(c / "vpp_plugins") for c in cands)
    return None, f"no plugin directory under {prefix} (tried {tried})"


def _locate() -> tuple[VppInstall | None, str]:
    env_prefix = os.environ.get(ENV_PREFIX)
    if env_prefix:
        prefix = Path(env_prefix).expanduser()
        inst, problem = _install_at(prefix.resolve())
        if inst is None:
            return None, f"{ENV_PREFIX}={env_prefix} is not a usable VPP install: {problem}"
        return inst, ""
    found = shutil.which("vpp")
    if found is None:
        return None, (
            f"no VPP found: {ENV_PREFIX} is not set and there is no `vpp` on PATH; "
            f"set {ENV_PREFIX} to a VPP install prefix (the directory holding bin/vpp)"
        )
    real = Path(found).resolve()
    if real.parent.name != "bin":
        return None, (
            f"`vpp` on PATH is {found} (real path {real}), which is not in a bin/ directory, "
            f"so no install prefix can be derived; set {ENV_PREFIX} instead"
        )
    inst, problem = _install_at(real.parent.parent)
    if inst is None:
        return None, f"`vpp` on PATH is {found} (real path {real}), but {problem}"
    return inst, ""


def find_vpp() -> VppInstall | None:
    """The VPP install named by ``PYVCL_VPP_PREFIX``, else the one ``vpp`` on PATH belongs to.

    None when there is none; `why_missing` then says what was looked for and where.
    """
    return _locate()[0]


def why_missing() -> str:
    """Why `find_vpp` finds nothing (a skip reason), or ``""`` when it does find an install."""
    return _locate()[1]
