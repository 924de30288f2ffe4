"""C VCL's configuration -- ``vcl.conf`` plus the ``VCL_*`` environment -- read the way libvppcom
reads it (``src/vcl/vcl_cfg.c``: ``vppcom_cfg``, ``vppcom_cfg_read_file``), and turned into
`AttachOptions`, so a pyvcl app given a C app's ``VCL_CONFIG`` attaches with the same options.

The parser reproduces VCL's unformat matching (keys tried in VCL's order as line prefixes, ``0x``
hex before decimal where VCL allows hex, strings ending at white space unless ``{braced}`` or
``\\``-escaped, trailing text ignored).  On top of that it refuses, as `VclConfigError` (a
`ValueError` naming ``file:line``), what C VCL would accept but read as something other than
what is written, or silently skip:

* text after a value that is not a ``#`` comment: ``rx-fifo-size 4m`` is 4 bytes to VCL (size
  suffixes only work for ``heapsize``), ``app-scope-global no`` *enables* global scope;
* a key glued to more text that VCL still matches (``app-scope-localx``, ``rx-fifo-size5``);
* a known key whose value VCL cannot parse (VCL warns "Unknown vppcom config option" and keeps
  the default) or would truncate (u32 fields; ``tls-engine`` above 255);
* ``vcl`` and ``{`` on separate lines, or keys without any ``vcl {`` line (VCL then ignores the
  whole file); text after ``vcl {`` on its line; a second ``vcl {`` section (VCL stops reading
  at the first line starting with ``}``).

Other lines inside the section are unknown keys: VCL warns about them and goes on, so they are
collected in `VclConfig.unknown`.  Lines before ``vcl {`` and after ``}`` are ignored, as in VCL.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, TypeAlias

from .api.messages import AttachOptions
from .wire.enums import TlsEngine, TransportProto

__all__ = [
    "VCL_CONF_DEFAULT",
    "VclConfig",
    "VclConfigError",
    "apply_vcl_env",
    "load_vcl_config",
    "parse_vcl_conf",
]

VCL_CONF_DEFAULT = "/etc/vpp/vcl.conf"  # VPPCOM_CONF_DEFAULT
MiB = 1 << 20
_WS = " \t\r\n"  # vppinfra's is_white_space
_U32_MAX = 0xFFFFFFFF
_U64_MAX = (1 << 64) - 1


class VclConfigError(ValueError):
    """A vcl.conf line (or VCL_* variable) pyvcl will not read; ``str()`` starts with where."""

    def __init__(self, source: str, line: int | None, problem: str) -> None:
        super().__init__(f"{source if line is None else f'{source}:{line}'}: {problem}")
        self.source = source
        self.line = line
        self.problem = problem


@dataclass
class VclConfig:
    """What VCL's configuration holds; defaults are ``vppcom_cfg_init``'s.

    Field names are the vcl.conf keys with ``_`` for ``-``.  Sizes are bytes, timeouts seconds.
    ``session_timeout`` bounds VCL's blocking connect/listen waits; ``app_timeout``, ``heapsize``,
    ``api_socket_name``, ``uid`` and ``gid`` only matter to C VCL (heap, binary API).
    """

    app_socket_api: str | None = None
    namespace_id: str = ""
    namespace_secret: int = 0
    app_scope_local: bool = False
    app_scope_global: bool = False
    rx_fifo_size: int = 1 * MiB
    tx_fifo_size: int = 1 * MiB
    segment_size: int = 256 * MiB
    add_segment_size: int = 128 * MiB
    preallocated_fifo_pairs: int = 8
    event_queue_size: int = 2048
    use_mq_eventfd: bool = False
    huge_page: bool = False
    app_original_dst: bool = False
    app_proxy_transport_tcp: bool = False
    app_proxy_transport_udp: bool = False
    tls_engine: int = 0  # 0: VCL sends openssl (1)
    session_timeout: float = 600.0
    app_timeout: float = 600.0
    max_workers: int = 16
    multi_thread_workers: bool = False
    heapsize: int = 256 * MiB
    api_socket_name: str | None = None
    uid: int | None = None
    gid: int | None = None
    debug: int = 0  # VCL_DEBUG
    source: str | None = None  # the file read, if any
    unknown: list[str] = field(default_factory=list)  # section lines VCL warns about and skips

    def app_socket_path(self) -> str | None:
        """The app socket to attach through (``app-socket-api`` / ``$VCL_VPP_SAPI_SOCKET``).

        None when neither is set: C VCL then attaches over VPP's binary API, which pyvcl does
        not speak; the caller decides (e.g. ``default_app_socket(cfg.namespace_id)``, or an
        error).  VPP's socket syntax ``unix:PATH`` is returned as PATH; ``abstract:NAME`` is
        kept (pyvcl connects to those)."""
        path = self.app_socket_api
        if path is not None and path.startswith("unix:"):
            return path[len("unix:") :]
        return path

    def attach_options(self, name: str = "") -> AttachOptions:
        """The attach options C VCL would send (``vcl_api_send_attach``), plus the namespace id
        and secret, which VCL leaves out on the app-socket path and VPP ignores there."""
        tcp, udp = int(TransportProto.TCP), int(TransportProto.UDP)
        proxied = {tcp: self.app_proxy_transport_tcp, udp: self.app_proxy_transport_udp}
        return AttachOptions(
            name=name,
            scope_local=self.app_scope_local,
            scope_global=self.app_scope_global,
            use_mq_eventfd=self.use_mq_eventfd,
            evt_queue_size=self.event_queue_size,
            segment_size=self.segment_size,
            add_segment_size=self.add_segment_size,
            rx_fifo_size=self.rx_fifo_size,
            tx_fifo_size=self.tx_fifo_size,
            prealloc_fifo_pairs=self.preallocated_fifo_pairs,
            tls_engine=self.tls_engine or int(TlsEngine.OPENSSL),
            proxy_transports=frozenset(p for p, on in proxied.items() if on),
            huge_pages=self.huge_page,
            original_dst=self.app_original_dst,
            namespace_id=self.namespace_id,
            namespace_secret=self.namespace_secret,
        )


# ---- VCL's unformat, one value at a time ----------------------------------------------------

_Value: TypeAlias = "bool | int | float | str"


class _Key(NamedTuple):
    name: str
    kind: str  # flag, dec32, dec64, num32 / num64 (0x hex or decimal), int32, float, str, mem
    attr: str


# In vppcom_cfg_read_file's order: the first key that is a prefix of the line and whose value
# parses wins.  namespace-*, api-socket-name, uid and gid need VCL_BAPI_ENABLED (the default);
# namespace-id is "%v", which reads like "%s".
_KEYS = tuple(
    _Key(name, kind, name.replace("-", "_"))
    for name, kind in re.findall(
        r"(\S+):(\S+)",
        """
        heapsize:mem max-workers:dec32 app-socket-api:str segment-size:num64
        add-segment-size:num64 preallocated-fifo-pairs:dec32 rx-fifo-size:num32
        tx-fifo-size:num32 event-queue-size:num32 app-timeout:float session-timeout:float
        app-proxy-transport-tcp:flag app-proxy-transport-udp:flag app-scope-local:flag
        app-scope-global:flag huge_page:flag use-mq-eventfd:flag tls-engine:dec32
        multi-thread-workers:flag app_original_dst:flag namespace-secret:dec64
        namespace-id:str api-socket-name:str uid:int32 gid:int32
        """,
    )
)
_BY_NAME = {k.name: k for k in _KEYS}
_INTEGER_KINDS = ("dec32", "dec64", "num32", "num64", "int32", "mem")
_DIGITS = {10: "0123456789", 16: "0123456789abcdefABCDEF"}
_FLOAT = re.compile(r"([+-]?)([0-9]*)(?:\.([0-9]*))?(?:[eE]([+-]?)([0-9]*))?")
_VCL_OPEN = re.compile(r"vcl[ \t\r\n]*\{")
_VCL_WORD = re.compile(r"vcl(?:[ \t\r#]|$)")
_WORD_END = re.compile(r"[ \t\r\n#]")


def _skip_ws(s: str, i: int) -> int:
    while i < len(s) and s[i] in _WS:
        i += 1
    return i


def _integer(s: str, i: int, base: int, signed: bool) -> tuple[int, int] | None:
    """unformat_integer: a sign, then digits up to the first non-digit; 64-bit overflow fails."""
    neg = False
    if i < len(s) and s[i] in "+-":
        if s[i] == "-" and not signed:
            return None
        neg = s[i] == "-"
        i += 1
    j = i
    while j < len(s) and s[j] in _DIGITS[base]:
        j += 1
    value = _u64(s[i:j], base)
    if value is None:
        return None
    return (-value if neg else value), j


def _u64(digits: str, base: int = 10) -> int | None:
    """The digits' value, or None if there are none or VCL's 64-bit accumulator overflows."""
    significant = digits.lstrip("0") or "0"
    if not digits or len(significant) > 20:  # also keeps int() clear of its digit limit
        return None
    value = int(significant, base)
    return value if value <= _U64_MAX else None


def _float(s: str, i: int) -> tuple[float, int] | None:
    """unformat_float: [sign] digits [. digits] [e [sign] digits], whole or fraction needed."""
    m = _FLOAT.match(s, i)
    if m is None or not (m[2] or m[3]):
        return None
    if any(d and _u64(d) is None for d in (m[2], m[3], m[5])):
        return None  # VCL accumulates each part in a u64
    text = f"{m[1]}{m[2] or '0'}.{m[3] or '0'}e{m[4] or ''}{m[5] or '0'}"
    return float(text), m.end()


def _string(s: str, i: int) -> tuple[str, int] | None:
    """unformat_string for %s/%v: up to white space; ``\\`` escapes; a leading ``{`` reads to
    the balancing ``}`` (spaces included, outer braces dropped)."""
    out: list[str] = []
    paren, braced, escaped, at_end = 0, False, False, True
    while i < len(s):
        c = s[i]
        i += 1
        add = True
        if escaped:
            escaped = False
        elif c == "\\":
            escaped, add = True, False
        elif c == "{":
            if paren == 0 and not out:
                braced, add = True, False
            paren += 1
        elif c == "}":
            paren -= 1
            if braced and paren == 0:
                at_end = False
                break
        elif c in _WS and not braced:
            i -= 1
            at_end = False
            break
        if add:
            out.append(c)
    if at_end and not out:
        return ("{", i) if paren == 1 else None
    return "".join(out), i


def _value(kind: str, s: str, i: int) -> tuple[_Value, int] | None:
    """Parse the value after a key at ``s[i]``: (value, end) or None where VCL's format fails."""
    if kind == "flag":
        return True, i
    i = _skip_ws(s, i)
    if kind in ("num32", "num64") and s.startswith("0x", i):
        hexa = _integer(s, _skip_ws(s, i + 2), 16, False)  # "0x%lx" skips white space too
        if hexa is not None:
            return hexa
    if kind in ("dec32", "dec64", "num32", "num64"):
        return _integer(s, i, 10, False)
    if kind == "int32":
        return _integer(s, i, 10, True)
    if kind == "float":
        return _float(s, i)
    if kind == "mem":  # unformat_memory_size: "%wd" then k/m/g right after the digits
        amount = _integer(s, i, 10, True)
        if amount is None:
            return None
        value, end = amount
        shift = {"k": 10, "m": 20, "g": 30}.get(s[end : end + 1].lower(), 0)
        return value << shift, end + (shift > 0)
    return _string(s, i)


def _match(line: str) -> tuple[_Key, _Value, int] | None:
    for key in _KEYS:
        if line.startswith(key.name):
            got = _value(key.kind, line, len(key.name))
            if got is not None:
                return key, got[0], got[1]
    return None


# ---- the file ------------------------------------------------------------------------------


def parse_vcl_conf(text: str, source: str = "<string>") -> VclConfig:
    """Read vcl.conf text as VCL does (module docstring); `VclConfigError` for what VCL would
    misread or skip.  The environment is not consulted (see `apply_vcl_env`)."""
    cfg = VclConfig(source=source)
    state = "before"  # -> "in" at "vcl {", -> "after" at "}"
    stray: int | None = None  # first non-comment line outside a section
    for lineno, raw in enumerate(text.split("\n"), 1):
        line = raw.strip(_WS)
        opened = _VCL_OPEN.match(line)
        rest = line[opened.end() :].strip(_WS) if opened else ""
        if not line:
            continue
        if opened and state == "after":
            problem = "a second 'vcl {' section: C VCL stops reading at the first '}'"
        elif rest and not rest.startswith("#"):
            problem = f"{rest!r} after 'vcl {{': C VCL ignores it; put keys on lines of their own"
        elif not opened and state == "before" and _VCL_WORD.match(line):
            problem = "'{' must be on the same line as 'vcl': C VCL ignores the section otherwise"
        else:
            if opened:
                state = "in"
            elif state == "before" and not line.startswith("#"):
                stray = stray or lineno
            elif state == "in" and line.startswith("}"):
                state = "after"
            elif state == "in" and not line.startswith("#"):
                _parse_line(cfg, line, source, lineno)
            continue
        raise VclConfigError(source, lineno, problem)
    if state == "before" and stray is not None:
        problem = "no 'vcl {' line: C VCL ignores everything outside a 'vcl { ... }' section"
        raise VclConfigError(source, stray, problem)
    return cfg


def _parse_line(cfg: VclConfig, line: str, source: str, lineno: int) -> None:
    def fail(problem: str) -> VclConfigError:
        return VclConfigError(source, lineno, problem)

    first = _WORD_END.split(line, maxsplit=1)[0]
    token = line.split(None, 1)[0]
    found = _match(line)
    if found is None:
        if first in _BY_NAME:
            given = line[len(first) :].strip(_WS)
            what = "missing value" if given[:1] in ("", "#") else f"invalid value {given!r}"
            raise fail(f"{first}: {what} (C VCL warns and keeps its default)")
        cfg.unknown.append(line)
        return
    key, value, end = found
    after = line[len(key.name) : len(key.name) + 1]
    if after and after not in _WS and not (key.kind == "flag" and after == "#"):
        if key.kind == "flag":
            raise fail(f"{token!r}: C VCL reads this as the flag {key.name!r}; fix the spelling")
        raise fail(
            f"{token!r}: C VCL reads this as {key.name!r} with value {value!r};"
            " separate key and value with a space"
        )
    rest = line[end:].strip(_WS)
    if rest and not rest.startswith("#"):
        read = key.name if key.kind == "flag" else f"{key.name} {value!r}"
        hint = ""
        if key.kind in _INTEGER_KINDS and rest[0] in "kKmMgG":
            hint = " (size suffixes only work for heapsize)"
        elif key.kind in ("num32", "num64") and rest[0] in "xX":
            hint = " (hex is a lowercase '0x' then digits)"
        raise fail(f"{rest!r} after {key.name}: C VCL would read '{read}' and skip it{hint}")
    if isinstance(value, int) and not isinstance(value, bool):
        low, limit = 0, _U32_MAX if key.kind in ("dec32", "num32") else _U64_MAX
        if key.name == "tls-engine":
            limit = 255  # VCL copies it into a u8
        elif key.kind == "int32":
            low, limit = -(1 << 31), (1 << 31) - 1
        if not low <= value <= limit:
            raise fail(f"{key.name} {value} is out of range {low}..{limit}")
    if key.name == "app-socket-api" and not value:
        raise fail("app-socket-api: empty path")
    setattr(cfg, key.attr, value)


# ---- the environment and the file's location -------------------------------------------------

_ENV_FLAGS = {
    "VCL_APP_PROXY_TRANSPORT_TCP": "app_proxy_transport_tcp",
    "VCL_APP_PROXY_TRANSPORT_UDP": "app_proxy_transport_udp",
    "VCL_APP_SCOPE_LOCAL": "app_scope_local",
    "VCL_APP_SCOPE_GLOBAL": "app_scope_global",
    "VCL_APP_USE_MQ_EVENTFD": "use_mq_eventfd",
}
_SSCANF_UINT = re.compile(r"[ \t\n\v\f\r]*([+-]?)([0-9]+)")


def _env_uint(name: str, text: str, bits: int) -> int:
    """sscanf "%u" / "%llu": leading space, a sign, decimal digits; the rest is ignored;
    strtoul semantics (negative wraps, overflow saturates)."""
    m = _SSCANF_UINT.match(text)
    if m is None:
        raise VclConfigError(f"${name}", None, f"{text!r} is not a number (C VCL ignores it)")
    value = _u64(m[2])  # None: too big, strtoul saturates
    value = _U64_MAX if value is None else -value % (1 << 64) if m[1] == "-" else value
    return value & ((1 << bits) - 1)


def apply_vcl_env(cfg: VclConfig, environ: Mapping[str, str]) -> None:
    """Apply the VCL_* variables as ``vppcom_cfg`` does after reading the file: they win over
    it.  The flag variables only enable, by being set (any value, even "" or "0")."""
    if "VCL_DEBUG" in environ:
        cfg.debug = _env_uint("VCL_DEBUG", environ["VCL_DEBUG"], 32)
    if "VCL_APP_NAMESPACE_ID" in environ:
        cfg.namespace_id = environ["VCL_APP_NAMESPACE_ID"]
    if "VCL_APP_NAMESPACE_SECRET" in environ:
        secret = environ["VCL_APP_NAMESPACE_SECRET"]
        cfg.namespace_secret = _env_uint("VCL_APP_NAMESPACE_SECRET", secret, 64)
    for var, attr in _ENV_FLAGS.items():
        if var in environ:
            setattr(cfg, attr, True)
    if "VCL_VPP_API_SOCKET" in environ:
        cfg.api_socket_name = environ["VCL_VPP_API_SOCKET"]
    if "VCL_VPP_SAPI_SOCKET" in environ:
        cfg.app_socket_api = environ["VCL_VPP_SAPI_SOCKET"]


def load_vcl_config(
    path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None
) -> VclConfig:
    """VCL's configuration as a C VCL app would see it.

    The file is ``path``, else ``$VCL_CONFIG``, else `VCL_CONF_DEFAULT` if it exists; without
    one, VCL's defaults.  Then the VCL_* variables of ``environ`` (default ``os.environ``).
    A file named by ``path`` or ``$VCL_CONFIG`` must exist (`FileNotFoundError`; C VCL would
    silently use its defaults); ``VCL_CONFIG=""`` means no file, as in VCL."""
    env = os.environ if environ is None else environ
    origin = "the path argument"
    fname: str | None = os.fspath(path) if path is not None else None
    if fname is None and "VCL_CONFIG" in env:
        fname, origin = env["VCL_CONFIG"] or None, "$VCL_CONFIG"
    elif fname is None and os.path.exists(VCL_CONF_DEFAULT):
        fname = VCL_CONF_DEFAULT
    if fname is None:
        cfg = VclConfig()
    else:
        try:
            data = Path(fname).read_bytes()
        except FileNotFoundError:
            raise FileNotFoundError(
                errno.ENOENT,
                f"no VCL config file (named by {origin}; C VCL would use its defaults)",
                fname,
            ) from None
        cfg = parse_vcl_conf(data.decode("utf-8", "surrogateescape"), fname)
    apply_vcl_env(cfg, env)
    return cfg
