"""pyvcl.config: vcl.conf and VCL_* variables read as C VCL (src/vcl/vcl_cfg.c) reads them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from pyvcl import config as config_mod
from pyvcl.api.messages import AttachOptions
from pyvcl.app import App
from pyvcl.config import VclConfig, VclConfigError, apply_vcl_env, load_vcl_config, parse_vcl_conf
from pyvcl.wire.enums import AppOptionsFlags, AttachOption, TlsEngine, TransportProto
from pyvcl.wire.sapi import ATTACH_N_OPTIONS

MiB = 1 << 20
F = AppOptionsFlags


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in [v for v in os.environ if v.startswith("VCL_")]:
        monkeypatch.delenv(var)
    monkeypatch.setattr(config_mod, "VCL_CONF_DEFAULT", str(tmp_path / "no-etc-vcl.conf"))


def conf(*lines: str) -> VclConfig:
    return parse_vcl_conf("\n".join(["vcl {", *lines, "}"]) + "\n")


def bad(text: str, *needles: str) -> VclConfigError:
    with pytest.raises(VclConfigError) as info:
        parse_vcl_conf(text, "/x/vcl.conf")
    for needle in needles:
        assert needle in str(info.value)
    return info.value


# ---- defaults --------------------------------------------------------------------------------


def test_defaults_are_vppcom_cfg_init() -> None:
    for cfg in (VclConfig(), parse_vcl_conf(""), parse_vcl_conf("# only\n\n  # comments\n")):
        assert (cfg.segment_size, cfg.add_segment_size) == (256 * MiB, 128 * MiB)
        assert (cfg.rx_fifo_size, cfg.tx_fifo_size) == (MiB, MiB)
        assert (cfg.preallocated_fifo_pairs, cfg.event_queue_size) == (8, 2048)
        assert (cfg.app_timeout, cfg.session_timeout) == (600.0, 600.0)
        assert (cfg.max_workers, cfg.heapsize, cfg.tls_engine) == (16, 256 * MiB, 0)
        assert not (cfg.app_scope_local or cfg.app_scope_global or cfg.use_mq_eventfd)
        assert not (cfg.huge_page or cfg.app_original_dst or cfg.multi_thread_workers)
        assert not (cfg.app_proxy_transport_tcp or cfg.app_proxy_transport_udp)
        assert cfg.app_socket_api is None and cfg.app_socket_path() is None
        assert (cfg.namespace_id, cfg.namespace_secret, cfg.unknown) == ("", 0, [])


def test_default_attach_options_are_what_vcl_sends() -> None:
    """vcl_api_send_attach with an empty vcl.conf: only the two legacy flags, no scope bits."""
    expected = [0] * ATTACH_N_OPTIONS
    expected[AttachOption.FLAGS] = int(F.ACCEPT_REDIRECT | F.ADD_SEGMENT)
    expected[AttachOption.EVT_QUEUE_SIZE] = 2048
    expected[AttachOption.SEGMENT_SIZE] = 256 * MiB
    expected[AttachOption.ADD_SEGMENT_SIZE] = 128 * MiB
    expected[AttachOption.RX_FIFO_SIZE] = expected[AttachOption.TX_FIFO_SIZE] = MiB
    expected[AttachOption.PREALLOC_FIFO_PAIRS] = 8
    expected[AttachOption.TLS_ENGINE] = TlsEngine.OPENSSL
    opts = VclConfig().attach_options("me")
    assert opts.options() == expected
    assert opts.name == "me" and opts.proxy_transports == frozenset()
    opts.validate()


# ---- the conf people use ---------------------------------------------------------------------


def test_conf_from_vpp_setups_doc() -> None:
    cfg = parse_vcl_conf(
        """vcl {
  app-socket-api /tmp/d/app_ns_sockets/srv
  app-scope-local            # cut-through between apps on this VPP
  app-scope-global           # sessions through VPP's transports
  rx-fifo-size 4000000
  tx-fifo-size 4000000
  use-mq-eventfd
  namespace-id srv           # with app-socket-api pointing at DIR/app_ns_sockets/NAME
  namespace-secret 1234
}
""",
        "vcl.conf",
    )
    assert cfg.source == "vcl.conf" and cfg.unknown == []
    assert cfg.app_socket_path() == "/tmp/d/app_ns_sockets/srv"
    assert cfg.app_scope_local and cfg.app_scope_global and cfg.use_mq_eventfd
    assert (cfg.rx_fifo_size, cfg.tx_fifo_size) == (4000000, 4000000)
    assert (cfg.namespace_id, cfg.namespace_secret) == ("srv", 1234)
    opts = cfg.attach_options()
    want = F.ACCEPT_REDIRECT | F.ADD_SEGMENT | F.USE_LOCAL_SCOPE | F.USE_GLOBAL_SCOPE
    assert opts.flags() == want | F.EVT_MQ_USE_EVENTFD
    assert (opts.rx_fifo_size, opts.tx_fifo_size) == (4000000, 4000000)
    assert (opts.namespace_id, opts.namespace_secret) == ("srv", 1234)


@pytest.mark.parametrize(
    ("line", "attr", "value"),
    [
        ("heapsize 64m", "heapsize", 64 * MiB),
        ("heapsize 1G", "heapsize", 1 << 30),
        ("heapsize 4096", "heapsize", 4096),
        ("max-workers 4", "max_workers", 4),
        ("app-socket-api /run/vpp/app_ns_sockets/default", "app_socket_api", None),
        ("segment-size 1073741824", "segment_size", 1 << 30),
        ("segment-size 0x100000000", "segment_size", 1 << 32),
        ("add-segment-size 0x8000000", "add_segment_size", 128 * MiB),
        ("preallocated-fifo-pairs 0", "preallocated_fifo_pairs", 0),
        ("rx-fifo-size 0x10000", "rx_fifo_size", 65536),
        ("tx-fifo-size 65536", "tx_fifo_size", 65536),
        ("event-queue-size 0x1000", "event_queue_size", 4096),
        ("app-timeout 2.5", "app_timeout", 2.5),
        ("session-timeout 1.5e1", "session_timeout", 15.0),
        ("session-timeout .5", "session_timeout", 0.5),
        ("session-timeout 3", "session_timeout", 3.0),
        ("app-proxy-transport-tcp", "app_proxy_transport_tcp", True),
        ("app-proxy-transport-udp", "app_proxy_transport_udp", True),
        ("app-scope-local", "app_scope_local", True),
        ("app-scope-global", "app_scope_global", True),
        ("huge_page", "huge_page", True),
        ("use-mq-eventfd", "use_mq_eventfd", True),
        ("tls-engine 2", "tls_engine", 2),
        ("multi-thread-workers", "multi_thread_workers", True),
        ("app_original_dst", "app_original_dst", True),
        ("namespace-secret 18446744073709551615", "namespace_secret", (1 << 64) - 1),
        ("namespace-id abcdef", "namespace_id", "abcdef"),  # VCL's bapi cuts it to 3 chars
        ("api-socket-name /run/vpp/api.sock", "api_socket_name", "/run/vpp/api.sock"),
        ("uid 1000", "uid", 1000),
        ("gid -1", "gid", -1),
    ],
)
def test_every_key(line: str, attr: str, value: object) -> None:
    cfg = conf(line)
    expected = line.split(None, 1)[1] if value is None else value
    assert getattr(cfg, attr) == expected
    assert cfg.unknown == []


def test_flags_and_options_round_trip() -> None:
    opts = conf("app-scope-local").attach_options()
    assert F.USE_LOCAL_SCOPE in opts.flags() and F.USE_GLOBAL_SCOPE not in opts.flags()
    assert F.EVT_MQ_USE_EVENTFD not in opts.flags()
    opts = conf("app-scope-global", "huge_page", "app_original_dst").attach_options()
    assert (
        opts.flags()
        == (F.ACCEPT_REDIRECT | F.ADD_SEGMENT | F.USE_GLOBAL_SCOPE | F.USE_HUGE_PAGE)
        | F.GET_ORIGINAL_DST
    )
    opts = conf("app-proxy-transport-udp", "tls-engine 0").attach_options()
    assert F.IS_PROXY in opts.flags()
    assert opts.options()[AttachOption.PROXY_TRANSPORT] == 1 << TransportProto.UDP
    assert opts.tls_engine == TlsEngine.OPENSSL  # VCL: 0 means openssl
    cfg = conf(
        "segment-size 0x1000000",
        "add-segment-size 8388608",
        "rx-fifo-size 8192",
        "tx-fifo-size 0x4000",
        "preallocated-fifo-pairs 2",
        "event-queue-size 512",
        "tls-engine 3",
        "app-proxy-transport-tcp",
        "app-proxy-transport-udp",
    )
    o = cfg.attach_options("x").options()
    assert o[AttachOption.SEGMENT_SIZE] == 16 * MiB and o[AttachOption.ADD_SEGMENT_SIZE] == 8 * MiB
    assert (o[AttachOption.RX_FIFO_SIZE], o[AttachOption.TX_FIFO_SIZE]) == (8192, 16384)
    assert (o[AttachOption.PREALLOC_FIFO_PAIRS], o[AttachOption.EVT_QUEUE_SIZE]) == (2, 512)
    assert o[AttachOption.TLS_ENGINE] == 3 and o[AttachOption.PROXY_TRANSPORT] == 0b11
    assert isinstance(cfg.attach_options(), AttachOptions)


# ---- syntax ----------------------------------------------------------------------------------


def test_comments_and_odd_whitespace() -> None:
    text = (
        "# a VPP-style comment\r\n"
        "unix { nodaemon }\n"  # outside the section: ignored, as VCL does
        "\n"
        "   vcl{   # brace glued, comment after\r\n"
        "\t\tapp-scope-local#glued comment\r\n"
        "  # comment inside\n"
        "\n"
        "rx-fifo-size\t \t0x20000   # trailing comment\r\n"
        "  app-socket-api   /tmp/x\\ y/sock\t# escaped space\n"
        "  vcl {\n"  # VCL re-matches "vcl {" inside the section: harmless
        "   }   trailing text after the brace\n"
        "use-mq-eventfd\n"  # after '}': VCL has stopped reading
    )
    cfg = parse_vcl_conf(text)
    assert cfg.app_scope_local and not cfg.use_mq_eventfd
    assert cfg.rx_fifo_size == 0x20000
    assert cfg.app_socket_path() == "/tmp/x y/sock"
    assert cfg.unknown == []


def test_unterminated_section_is_fine() -> None:
    assert parse_vcl_conf("vcl {\n  app-scope-global").app_scope_global


def test_brace_on_its_own_line_is_refused() -> None:
    """VCL only opens the section on a line matching "vcl {": it would ignore everything."""
    err = bad("vcl\n{\n  rx-fifo-size 5\n}\n", "/x/vcl.conf:1:", "same line")
    assert err.line == 1 and err.source == "/x/vcl.conf"
    bad("# c\nvcl   # comment\n{\n}\n", "/x/vcl.conf:2:")


def test_structure_errors() -> None:
    bad("rx-fifo-size 5\n", "/x/vcl.conf:1:", "no 'vcl {' line")
    bad("vcl { rx-fifo-size 5 }\n", ":1:", "'rx-fifo-size 5 }' after 'vcl {'")
    bad("vcl {\n}\nvcl {\n  app-scope-local\n}\n", ":3:", "second 'vcl {'")


def test_hex_and_decimal_numbers() -> None:
    assert conf("rx-fifo-size 0xFF").rx_fifo_size == 255
    assert conf("segment-size 0x 20").segment_size == 32  # VCL's "0x%lx" skips space too
    assert conf("tx-fifo-size +7").tx_fifo_size == 7
    assert conf("rx-fifo-size 00000000000000000000000042").rx_fifo_size == 42
    assert conf("namespace-secret 0012").namespace_secret == 12


@pytest.mark.parametrize(
    ("line", "needles"),
    [
        ("rx-fifo-size 4m", ("'m' after rx-fifo-size", "read 'rx-fifo-size 4'", "suffix")),
        ("segment-size 1g", ("suffix",)),
        ("event-queue-size 0X10", ("'X10'", "lowercase")),
        ("preallocated-fifo-pairs 0x10", ("'x10'", "read 'preallocated-fifo-pairs 0'")),
        ("tls-engine 0x1", ("'x1'",)),
        ("app-scope-global no", ("'no' after app-scope-global",)),
        ("rx-fifo-size 4000000 extra", ("'extra'",)),
        ("app-socket-api {/a b}c", ("'c' after app-socket-api",)),
        ("app-scope-localx", ("'app-scope-localx'", "flag 'app-scope-local'")),
        ("rx-fifo-size5", ("'rx-fifo-size5'", "value 5", "space")),
        ("tx-fifo-size0x10", ("value 16",)),
        ("rx-fifo-size", ("rx-fifo-size: missing value",)),
        ("rx-fifo-size#5", ("missing value",)),
        ("rx-fifo-size abc", ("invalid value 'abc'",)),
        ("rx-fifo-size -1", ("invalid value '-1'",)),
        ("segment-size 99999999999999999999999", ("invalid value",)),
        ("session-timeout soon", ("session-timeout: invalid value 'soon'",)),
        ("session-timeout 1.2.3", ("'.3'",)),
        ("rx-fifo-size 0x100000000", ("out of range 0..4294967295",)),
        ("max-workers 4294967297", ("out of range",)),
        ("tls-engine 257", ("out of range 0..255",)),
        ("uid 4294967295", ("out of range",)),
        ("heapsize -1", ("out of range",)),
        ("app-socket-api {}", ("empty path",)),
        ("app-socket-api", ("missing value",)),
    ],
)
def test_values_vcl_would_misread_are_refused(line: str, needles: tuple[str, ...]) -> None:
    err = bad(f"vcl {{\n  # c\n  {line}\n}}\n", "/x/vcl.conf:3:", *needles)
    assert err.line == 3


def test_unknown_keys_are_collected_not_fatal() -> None:
    cfg = conf("bogus-key 1", "app-scope-local", "segment-sizes 5", "vcl", "{")
    assert cfg.unknown == ["bogus-key 1", "segment-sizes 5", "vcl", "{"]
    assert cfg.app_scope_local and cfg.segment_size == 256 * MiB


def test_string_values_follow_unformat() -> None:
    assert conf("app-socket-api {/a b}").app_socket_api == "/a b"
    assert conf("app-socket-api {/a {b}}").app_socket_api == "/a {b}"
    assert conf("app-socket-api /a#b").app_socket_api == "/a#b"
    assert conf("app-socket-api unix:/run/s").app_socket_path() == "/run/s"
    assert conf("app-socket-api abstract:vpp-ns").app_socket_path() == "abstract:vpp-ns"


# ---- environment -----------------------------------------------------------------------------


def test_env_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "vcl.conf"
    path.write_text("vcl {\n app-socket-api /from/file\n namespace-id filens\n}\n")
    for var in ("SCOPE_LOCAL", "SCOPE_GLOBAL", "PROXY_TRANSPORT_TCP", "PROXY_TRANSPORT_UDP"):
        monkeypatch.setenv(f"VCL_APP_{var}", "0")  # presence enables, whatever the value
    monkeypatch.setenv("VCL_APP_USE_MQ_EVENTFD", "")
    monkeypatch.setenv("VCL_VPP_SAPI_SOCKET", "/from/env")
    monkeypatch.setenv("VCL_VPP_API_SOCKET", "/api/env")
    monkeypatch.setenv("VCL_APP_NAMESPACE_ID", "envns-longer-than-three")
    monkeypatch.setenv("VCL_APP_NAMESPACE_SECRET", " 42xyz")  # sscanf: prefix number
    monkeypatch.setenv("VCL_DEBUG", "2")
    cfg = load_vcl_config(path)
    assert cfg.source == str(path) and cfg.app_socket_path() == "/from/env"
    assert cfg.app_scope_local and cfg.app_scope_global and cfg.use_mq_eventfd
    assert cfg.app_proxy_transport_tcp and cfg.app_proxy_transport_udp
    assert (cfg.namespace_id, cfg.namespace_secret, cfg.debug) == ("envns-longer-than-three", 42, 2)
    assert cfg.api_socket_name == "/api/env"
    flags = cfg.attach_options().flags()
    assert F.IS_PROXY | F.USE_LOCAL_SCOPE | F.USE_GLOBAL_SCOPE | F.EVT_MQ_USE_EVENTFD in flags


def test_env_numbers_follow_sscanf() -> None:
    cfg = VclConfig()
    apply_vcl_env(cfg, {"VCL_APP_NAMESPACE_SECRET": "-1", "VCL_DEBUG": "+3"})
    assert (cfg.namespace_secret, cfg.debug) == ((1 << 64) - 1, 3)
    apply_vcl_env(cfg, {"VCL_APP_NAMESPACE_SECRET": "9" * 30})
    assert cfg.namespace_secret == (1 << 64) - 1  # strtoull saturates
    for var in ("VCL_DEBUG", "VCL_APP_NAMESPACE_SECRET"):
        with pytest.raises(VclConfigError, match=rf"^\${var}: 'x1' is not a number"):
            apply_vcl_env(cfg, {var: "x1"})


def test_env_unset_leaves_file_values(tmp_path: Path) -> None:
    path = tmp_path / "vcl.conf"
    path.write_text("vcl {\n use-mq-eventfd\n}\n")
    cfg = load_vcl_config(path, environ={})
    assert cfg.use_mq_eventfd and not cfg.app_scope_local and cfg.app_socket_path() is None


# ---- finding the file ------------------------------------------------------------------------


def test_vcl_config_env_and_default_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_conf, etc_conf = tmp_path / "env.conf", tmp_path / "etc.conf"
    env_conf.write_text("vcl {\n rx-fifo-size 1000\n}\n")
    etc_conf.write_text("vcl {\n rx-fifo-size 2000\n}\n")
    assert load_vcl_config().source is None  # nothing anywhere: VCL's defaults
    monkeypatch.setattr(config_mod, "VCL_CONF_DEFAULT", str(etc_conf))
    assert load_vcl_config().rx_fifo_size == 2000
    monkeypatch.setenv("VCL_CONFIG", str(env_conf))
    assert load_vcl_config().rx_fifo_size == 1000
    assert load_vcl_config(etc_conf).rx_fifo_size == 2000  # the argument wins
    assert load_vcl_config(environ={"VCL_CONFIG": ""}).source is None  # as VCL: no file


def test_missing_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "nope.conf"
    with pytest.raises(FileNotFoundError, match="path argument") as info:
        load_vcl_config(missing)
    assert info.value.filename == str(missing)
    monkeypatch.setenv("VCL_CONFIG", str(missing))
    with pytest.raises(FileNotFoundError, match=r"\$VCL_CONFIG"):
        load_vcl_config()


def test_malformed_file_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "vcl.conf"
    path.write_text("vcl {\n  app-scope-local\n  rx-fifo-size 4m\n}\n")
    with pytest.raises(ValueError, match=rf"^{path}:3: 'm' after rx-fifo-size"):
        load_vcl_config(path)


# ---- against VPP -----------------------------------------------------------------------------


def test_attach_with_a_conf_written_for_c_vcl(vpp: Any, tmp_path: Path) -> None:
    path = vpp.vcl_conf(tmp_path / "vcl.conf", rx_fifo_size=65536, tx_fifo_size=0x10000)
    cfg = load_vcl_config(path, environ={})
    assert cfg.app_socket_path() == str(vpp.app_socket())
    opts = cfg.attach_options("pyvcl-config-test")
    opts.segment_size = opts.add_segment_size = 4 * MiB  # keep the test light
    opts.prealloc_fifo_pairs = 0
    socket_path = cfg.app_socket_path()
    assert socket_path is not None
    with App.attach(socket_path, opts) as app:
        assert app.reply is not None and app.reply.retval == 0
        assert app.mq_eventfd is not None  # use-mq-eventfd from the conf
        assert "pyvcl-config-test" in vpp.cli("show app")
