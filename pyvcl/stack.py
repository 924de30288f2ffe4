"""Which network stack a program uses: the choice `pyvcl nc` and `pyvcl run` make from their
options, and opening the app it names.

A `StackChoice` holds plain values only, so that it fits in the environment as JSON: `pyvcl
run` hands it down to Python child processes that way (`pyvcl.interpose.boot`).  The rules of
`open_stack`: ``kernel`` means kernel sockets and no VPP; a VPP named by its app socket,
namespace or runtime dir, or by a vcl.conf, must be reachable; otherwise pyvcl attaches as C
VCL would (``$VCL_CONFIG``, the ``VCL_*`` variables, else /run/vpp) and, with ``fallback``,
uses kernel sockets when no VPP answers there (``on_fallback`` is told first).  It is
`pyvcl.fallback.open_app`, plus the choice of not following a VPP that was absent at start.
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from .api.messages import AttachOptions
    from .errors import VppUnreachable
    from .fallback import KernelApp, OpportunisticApp

SCOPES = ("local", "global", "both")

# `pyvcl.config.VCL_CONF_DEFAULT` and `pyvcl.app.DEFAULT_RUNTIME_DIR`, repeated so that
# `absent_default_vpp` imports neither (tests/test_run_cli.py checks they agree).
_VCL_CONF_DEFAULT = "/etc/vpp/vcl.conf"
_DEFAULT_RUNTIME_DIR = "/run/vpp"


class StackChoice(NamedTuple):  # (not a dataclass: `dataclasses` alone costs ~25 ms to import)
    kernel: bool = False  # kernel sockets, VPP not tried
    fallback: bool = True  # kernel sockets when the default VPP does not answer
    vcl_config: str | None = None
    app_socket: str | None = None  # a path, or abstract:NAME
    runtime_dir: str | None = None
    namespace_id: str = ""
    secret: int = 0
    name: str = ""
    use_mq_eventfd: bool | None = None  # None: True for a named VPP, else the config's
    segment_size: int | None = None
    fifo_size: int | None = None
    timeout: float = 5.0
    scope: str | None = None  # one of SCOPES; None: both, or the config's
    verbose: bool = False

    @property
    def named(self) -> bool:
        """A VPP named by its app socket (not through a vcl.conf or the defaults)."""
        return bool(self.app_socket or self.namespace_id or self.runtime_dir)

    def check(self) -> None:
        """ValueError for a combination that cannot be meant."""
        if self.vcl_config and self.named:
            raise ValueError(
                "--vcl-config names the VPP: no --app-socket, --ns or --runtime-dir with it"
            )
        if self.scope is not None and self.scope not in SCOPES:
            raise ValueError(f"scope must be one of {', '.join(SCOPES)}, not {self.scope!r}")

    def for_children(self) -> StackChoice:
        """The same choice with its paths absolute, for processes with another cwd."""

        def absolute(path: str | None) -> str | None:
            if path is None or path.startswith("abstract:"):
                return path
            return os.path.abspath(path)

        return self._replace(
            vcl_config=absolute(self.vcl_config),
            app_socket=absolute(self.app_socket),
            runtime_dir=absolute(self.runtime_dir),
        )

    def to_json(self) -> str:
        return json.dumps(self._asdict(), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> StackChoice:
        """The choice `to_json` wrote; ValueError (naming the field) for anything else."""
        try:
            data = json.loads(text)
        except ValueError as e:
            raise ValueError(f"not JSON: {e}") from None
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        for key, value in data.items():
            if key not in cls._fields:
                raise ValueError(f"unknown field {key!r}")
            if not _fits(value, cls.__annotations__[key]):
                raise ValueError(f"bad value for {key!r}: {value!r}")
        choice = cls(**data)
        choice.check()
        return choice

    # -- what the attach needs ------------------------------------------------------------
    def app_socket_path(self) -> Path | str:
        from .app import default_app_socket

        if self.app_socket:
            return self.app_socket
        return default_app_socket(self.namespace_id, self.runtime_dir)

    def attach_options(self) -> AttachOptions:
        from .api.messages import AttachOptions

        opts = AttachOptions(
            name=self.name,
            use_mq_eventfd=True if self.use_mq_eventfd is None else self.use_mq_eventfd,
            namespace_id=self.namespace_id,
            namespace_secret=self.secret,
        )
        if self.segment_size is not None:
            opts.segment_size = self.segment_size
        if self.fifo_size is not None:
            opts.rx_fifo_size = opts.tx_fifo_size = self.fifo_size
        return opts


def _fits(value: object, annotation: object) -> bool:
    """Whether a JSON value fits a field, by its annotation's text (the annotations are
    postponed: strings, or ForwardRefs once NamedTuple has seen them)."""
    text = str(getattr(annotation, "__forward_arg__", annotation))
    if value is None:
        return "None" in text
    if isinstance(value, bool):
        return text.startswith("bool")
    if isinstance(value, int):
        return "int" in text or "float" in text
    if isinstance(value, float):
        return "float" in text
    return isinstance(value, str) and "str" in text


def absent_default_vpp(choice: StackChoice) -> VppUnreachable | None:
    """When ``choice`` would fall back to the kernel because the default VPP's app socket does
    not exist, the `VppUnreachable` that attaching would raise; else None ("try").

    The cheap way to the fallback: a stat instead of importing the data path (which costs a
    few times an interpreter's start).  It only decides the plain case -- no vcl.conf (none
    given, no ``$VCL_CONFIG``, no default file), a socket path that is a file name -- the
    way `pyvcl.config` and `pyvcl.app` find the socket there; anything else is left to the
    attach."""
    if choice.kernel or choice.named or choice.vcl_config is not None or not choice.fallback:
        return None
    if "VCL_CONFIG" in os.environ or os.path.exists(_VCL_CONF_DEFAULT):
        return None
    path = default_app_socket_without_config()
    if path.startswith("abstract:") or os.path.exists(path):
        return None
    from .errors import VppUnreachable

    # pyvcl.api.sapi's words for it (the test checks they stay the same), without its imports
    return VppUnreachable(
        f"no VPP app socket at {path} (is VPP running with the session layer enabled,"
        " and is this the app namespace socket you meant?)",
        errno.ENOENT,
    )


def default_app_socket_without_config() -> str:
    """The app socket pyvcl attaches through when there is no vcl.conf: from the ``VCL_*``
    variables, else the default namespace's."""
    env = os.environ.get("VCL_VPP_SAPI_SOCKET")
    if env is not None:
        return env[len("unix:") :] if env.startswith("unix:") else env
    namespace = os.environ.get("VCL_APP_NAMESPACE_ID") or "default"
    return os.path.join(_DEFAULT_RUNTIME_DIR, "app_ns_sockets", namespace)


def open_stack(
    choice: StackChoice,
    on_fallback: Callable[[VppUnreachable], None] | None = None,
    *,
    follow_absent_vpp: bool = True,
) -> OpportunisticApp | KernelApp:
    """The app ``choice`` names: a `KernelApp` for ``kernel``, else an `OpportunisticApp`
    that follows VPP (`pyvcl.fallback`), over the kernel when the default VPP did not answer
    and ``fallback`` allows it (``on_fallback`` is told first; check with
    `pyvcl.fallback.is_vpp`).  With ``follow_absent_vpp=False`` that fallback is a plain
    `KernelApp` instead, which never looks for VPP again (no thread, nothing left running).
    Raises `VppUnreachable` when a VPP that must be there is not, and the attach's errors as
    they are."""
    # the data path: imported only once a stack is wanted
    from .fallback import KernelApp, open_app
    from .vclsocket import VclApp

    choice.check()
    if choice.kernel:
        return KernelApp()
    overrides: dict[str, Any] = {"timeout": choice.timeout}
    if choice.scope is not None:
        overrides["scope_local"] = choice.scope in ("local", "both")
        overrides["scope_global"] = choice.scope in ("global", "both")
    if choice.named:
        app_socket: Path | str | None = choice.app_socket_path()
        overrides["options"] = choice.attach_options()
        config = None
        fallback = False
    else:
        from .config import load_vcl_config

        app_socket = None
        config = load_vcl_config(choice.vcl_config)
        for attr, value in (
            ("name", choice.name or None),
            ("use_mq_eventfd", choice.use_mq_eventfd),
            ("segment_size", choice.segment_size),
            ("rx_fifo_size", choice.fifo_size),
            ("tx_fifo_size", choice.fifo_size),
        ):
            if value is not None:
                overrides[attr] = value
        fallback = choice.vcl_config is None and choice.fallback

    def quiet(e: VppUnreachable) -> None:  # (open_app would log it: the caller is told)
        if on_fallback is not None:
            on_fallback(e)

    app = open_app(
        app_socket,
        config=config,
        fallback=fallback,
        on_fallback=quiet,
        follow_absent_vpp=follow_absent_vpp,
        **overrides,
    )
    assert not isinstance(app, VclApp)  # (open_app follows VPP: never a bare VclApp)
    return app
