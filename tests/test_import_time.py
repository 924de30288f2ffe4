"""Importing pyvcl stays cheap: what each entry point pulls in, and the lazy construct objects.

No timings here (they depend on the machine): the tests check which modules an import loads,
in a fresh interpreter, and that the declarations built without construct at import agree
with construct once it is used.
"""

from __future__ import annotations

import json
import random
import struct
import subprocess
import sys
from typing import Any

import pytest

from pyvcl.wire import Decl, declarations
from pyvcl.wire._decl import _fill_defaults

HEAVY = ("construct", "numpy", "psutil")


def modules_after(code: str) -> set[str]:
    """The modules loaded by ``code`` in a fresh interpreter."""
    script = f"import json, sys\n{code}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout
    return set(json.loads(out.splitlines()[-1]))


def test_import_pyvcl_loads_only_the_errors() -> None:
    loaded = modules_after("import pyvcl")
    assert {m for m in loaded if m.startswith("pyvcl")} == {"pyvcl", "pyvcl.errors"}
    assert not loaded & set(HEAVY)


def test_import_pyvcl_socket_leaves_the_data_path_for_first_use() -> None:
    loaded = modules_after("import pyvcl.socket")
    assert {m for m in loaded if m.startswith("pyvcl")} == {
        "pyvcl",
        "pyvcl.errors",
        "pyvcl.socket",
    }
    assert not loaded & set(HEAVY)


def test_the_data_path_and_the_cli_do_not_import_construct() -> None:
    loaded = modules_after("import pyvcl.vclsocket, pyvcl.fallback, pyvcl.app, pyvcl.config")
    assert "pyvcl.wire.session" in loaded
    assert not loaded & set(HEAVY)
    cli = modules_after("import pyvcl.cli")
    assert "pyvcl.app" not in cli and "pyvcl.shmview" not in cli
    assert not cli & set(HEAVY)


def test_building_messages_does_not_import_construct() -> None:
    code = (
        "from pyvcl.api.messages import AttachOptions, encode_attach\n"
        "from pyvcl.mq.events import encode_ctrl\n"
        "from pyvcl.wire.enums import SessionEvent\n"
        "encode_attach(AttachOptions(name='x'))\n"
        "encode_ctrl(SessionEvent.CTRL_CONNECT, context=1, port=80, ip=bytes(16), is_ip4=1)"
    )
    assert "construct" not in modules_after(code)


def test_socket_module_still_names_vclapp() -> None:
    import pyvcl.socket
    from pyvcl.vclsocket import VclApp

    assert pyvcl.socket.VclApp is VclApp
    with pytest.raises(AttributeError):
        pyvcl.socket.no_such_name  # noqa: B018


ALL_DECLS = {
    f"{version}:{name}": decl
    for version in ("v26.06", "v26.02")
    for name, decl in declarations(version).items()
}


@pytest.mark.parametrize("key", sorted(ALL_DECLS))
def test_lazy_construct_agrees_with_the_derived_layout(key: str) -> None:
    decl = ALL_DECLS[key]
    built = decl.struct  # builds construct's Struct and checks it against the fields
    assert built.sizeof() == decl.size
    assert decl.struct is built


def _random_values(decl: Decl, rng: random.Random) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, field in decl.fields.items():
        if rng.random() < 0.2:
            continue  # left out: zero
        if field.fmt.endswith("s"):
            value: Any = rng.randbytes(field.size)
        else:
            count = int(field.fmt[:-1] or 1)
            item = field.fmt[-1]
            bits = 8 * struct.calcsize(item)
            lo, hi = (
                (-(1 << (bits - 1)), (1 << (bits - 1)) - 1)
                if item.islower()
                else (0, (1 << bits) - 1)
            )
            items = [rng.randint(lo, hi) for _ in range(count)]
            value = items if len(field.fmt) > 1 else items[0]
        *outer, leaf = name.split(".")
        target = values
        for part in outer:
            target = target.setdefault(part, {})
        target[leaf] = value
    return values


@pytest.mark.parametrize("key", sorted(ALL_DECLS))
def test_fast_build_gives_constructs_bytes(key: str) -> None:
    decl = ALL_DECLS[key]
    rng = random.Random(key)
    for _ in range(20):
        values = _random_values(decl, rng)
        expected = bytes(decl.struct.build(_fill_defaults(decl.struct, values)))
        assert decl.build(**values) == expected
    assert decl.build() == bytes(decl.size)


def test_build_leaves_odd_values_and_errors_to_construct() -> None:
    import construct

    decl = declarations()["session_accepted_msg_t"]
    # construct turns an int into a Bytes field's big-endian bytes; the result must not differ
    reference = decl.struct.build(_fill_defaults(decl.struct, {"lcl": {"ip": 1}}))
    assert decl.build(lcl={"ip": 1}) == reference
    with pytest.raises(construct.FormatFieldError):
        decl.build(context=1 << 32)
    with pytest.raises(construct.FormatFieldError):
        decl.build(context=1.5)
    with pytest.raises(construct.StreamError):
        decl.build(lcl={"ip": b"short"})
    with pytest.raises(KeyError):
        decl.build(no_such_field=1)
    with pytest.raises(KeyError):
        decl.build(lcl={"no_such_field": 1})
    attach = declarations()["app_sapi_attach_msg_t"]
    with pytest.raises(construct.RangeError):
        attach.build(options=[0] * 3)
